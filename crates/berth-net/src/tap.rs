//! A VM on a container network: its tap device and the namespace's CNI
//! interface joined back to back with tc's mirred action (what Kata
//! Containers calls "tcfilter"), so every frame the network sends to eth0
//! reaches the guest and every frame the guest sends leaves through eth0.
//! The bridge, IPAM, portmap and DNS set-up stay exactly as for a container.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::NetError;

/// Runs `cmd` inside the network namespace at `netns`; returns its stderr
/// as the error when it fails.
fn run_in(netns: &Path, cmd: &mut Command, stdin: &[u8]) -> Result<(), String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    let fd = ns.as_raw_fd();
    // SAFETY: runs in the forked child before exec; setns is async-signal-safe
    // and acts on a descriptor the parent keeps open across the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Joins `tap` and `ifname` in `netns` both ways. The tap is made by the
/// hypervisor as it starts; it is waited for briefly, while `alive` says the
/// hypervisor still runs. A non-zero `mtu` (the network's) is set on the tap
/// too, so frames as large as the network's pass to the guest.
pub fn connect(
    netns: &Path,
    ifname: &str,
    tap: &str,
    mtu: u32,
    alive: &mut dyn FnMut() -> bool,
) -> Result<(), NetError> {
    let fail = |what: &str, e: String| NetError::Io {
        path: netns.to_path_buf(),
        source: std::io::Error::other(format!("{what}: {e}")),
    };
    let until = Instant::now() + Duration::from_secs(10);
    let mut up = Command::new("ip");
    up.args(["link", "set", tap]);
    if mtu != 0 {
        up.args(["mtu", &mtu.to_string()]);
    }
    up.arg("up");
    loop {
        match run_in(netns, &mut up, b"") {
            Ok(()) => break,
            Err(e) if Instant::now() < until && e.contains(tap) && alive() => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(fail(&format!("ip link set {tap} up"), e)),
        }
    }
    let redirect = |from: &str, to: &str| {
        format!(
            "qdisc add dev {from} ingress\n\
             filter add dev {from} parent ffff: protocol all u32 match u8 0 0 \
             action mirred egress redirect dev {to}\n"
        )
    };
    let batch = redirect(ifname, tap) + &redirect(tap, ifname);
    run_in(
        netns,
        Command::new("tc").args(["-batch", "-"]),
        batch.as_bytes(),
    )
    .map_err(|e| fail(&format!("tc redirect between {ifname} and {tap}"), e))
}
