//! Warm starts: a VM resumed from the saved state of a guest that has
//! already booted.
//!
//! Booting the guest kernel is most of a VM's start (about a second under
//! TCG), and every VM of one *shape* — hypervisor, kernel, agent, vCPUs,
//! memory, the kinds and sizes of its devices — boots to the same state: the
//! agent waiting for its `Boot`. So berth boots each shape once, as a
//! template VM with blank disks of the same sizes and empty shares behind
//! the same devices, saves its state once the agent has greeted, and starts
//! every later VM of that shape by loading that state with the VM's own
//! disks, shares, tap device and sockets behind those devices. Firecracker
//! users do the same with its snapshots.
//!
//! What a clone inherits from its template, and how `Boot` undoes it (the
//! agent does each step on every boot, cold or warm):
//! - the kernel's random state: reseeded from host entropy (`Boot.seed`);
//! - the wall clock: set from the host's (`Boot.clock_ns`);
//! - the blank disks' blocks in the page cache: dropped before mounting;
//! - the NIC's MAC address: set to the VM's own.
//!
//! The agent's own address-space layout stays the template's; the
//! container's processes get their own.
//!
//! Snapshots live in the store (`vm/snapshots/<key>/`) and are a cache:
//! `system prune` removes them and the next start makes them again.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::{Frame, Hello, Kind};
use sha2::{Digest, Sha256};

use super::{Hypervisor, RunningVm, VmConfig, VmError, io_at};

/// Bumped whenever what a snapshot holds or assumes changes.
const FORMAT: &str = "berth-vm-snapshot-1";
/// How long a template VM may take to boot to its agent's greeting.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A saved guest, ready to be resumed.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The hypervisor's saved state ([`VmConfig::restore`]).
    pub state: PathBuf,
    /// What the template's agent said when it came up.
    pub hello: Hello,
}

/// Warm starts are on unless `BERTH_VM_SNAPSHOT=0` (then every VM boots).
pub fn enabled() -> bool {
    std::env::var("BERTH_VM_SNAPSHOT").map_or(true, |v| v != "0")
}

/// Everything that shapes the booted guest, hashed: VMs with one key can
/// be resumed from one snapshot. Backing files, sockets, logs and the MAC
/// address are not in it (they are the hypervisor's side of a device, or
/// set by the agent).
pub fn key(hv: &dyn Hypervisor, cfg: &VmConfig) -> Result<String, VmError> {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    put(FORMAT);
    put(&hv.name());
    put(&hv.identity());
    put(&host_cpu());
    put(&identity(&cfg.kernel)?);
    put(&identity(&cfg.initramfs)?);
    put(&cfg.cmdline);
    put(&format!("{} vcpus, {} MiB", cfg.vcpus, cfg.memory_mib));
    for d in &cfg.disks {
        put(&format!("disk {} {} ro={}", d.size, d.format, d.read_only));
    }
    for s in &cfg.shares {
        put(&format!("share {} ro={}", s.tag, s.read_only));
    }
    if let Some(n) = &cfg.nic {
        put(&format!("nic {}", n.tap));
    }
    Ok(h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The host CPU's model and flags: with KVM the guest sees the host's CPU,
/// and a state saved on one CPU may not resume on another (a store copied
/// to another machine).
fn host_cpu() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    format!("{} | {}", field("model name"), field("flags"))
}

/// A file's identity: path, inode, size, modification time.
fn identity(p: &Path) -> Result<String, VmError> {
    let m = fs::metadata(p).map_err(io_at(p))?;
    Ok(format!(
        "{} {} {} {}.{}",
        p.display(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

/// What [`prepare`] found.
#[derive(Debug)]
pub enum Warm {
    /// Resume this.
    Ready(Snapshot),
    /// The template booted but its state could not be saved: boot instead.
    Unavailable(String),
}

/// The snapshot for `cfg`'s shape, made in `dir` on first use (one maker
/// at a time; the others wait for it and use it). An error is a template
/// VM that did not boot, which a VM booted instead would not either.
pub fn prepare(hv: &dyn Hypervisor, cfg: &VmConfig, dir: &Path) -> Result<Warm, VmError> {
    let key = key(hv, cfg)?;
    let out = dir.join(&key);
    if let Some(s) = load(&out) {
        return Ok(Warm::Ready(s));
    }
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = File::create(&lock_path).map_err(io_at(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_at(&lock_path)(e.into()))?;
    if let Some(s) = load(&out) {
        return Ok(Warm::Ready(s));
    }
    let made = make(hv, cfg, dir, &out);
    let _ = fs::remove_file(&lock_path);
    made
}

fn load(out: &Path) -> Option<Snapshot> {
    let hello = serde_json::from_slice(&fs::read(out.join("hello.json")).ok()?).ok()?;
    let state = out.join("state");
    state.is_file().then_some(Snapshot { state, hello })
}

/// Boots a template VM of `cfg`'s shape and saves it into `out`.
fn make(hv: &dyn Hypervisor, cfg: &VmConfig, dir: &Path, out: &Path) -> Result<Warm, VmError> {
    let scratch = tempfile::Builder::new()
        .prefix(".make-")
        .tempdir_in(dir)
        .map_err(io_at(dir))?;
    let s = scratch.path();
    // Socket paths through a descriptor of the scratch directory: short,
    // however deep the store is.
    let sdir = File::open(s).map_err(io_at(s))?;
    let short = |name: &str| {
        PathBuf::from(format!(
            "/proc/{}/fd/{}/{name}",
            std::process::id(),
            sdir.as_raw_fd()
        ))
    };
    let mut t = cfg.clone();
    for (i, d) in t.disks.iter_mut().enumerate() {
        let blank = s.join(format!("disk{i}.qcow2"));
        super::disk::blank(&blank, d.size)?;
        d.path = blank;
        d.format = "qcow2";
    }
    let empty = s.join("share");
    fs::create_dir_all(&empty).map_err(io_at(&empty))?;
    for sh in &mut t.shares {
        sh.path = empty.clone();
    }
    if let Some(n) = &mut t.nic {
        n.mac = "02:00:00:00:00:01".into();
    }
    let listener = UnixListener::bind(short("agent.sock")).map_err(io_at(s.join("agent.sock")))?;
    t.agent_socket = short("agent.sock");
    t.control_socket = Some(short("control.sock"));
    t.console_log = s.join("console.log");
    t.hypervisor_log = s.join("hypervisor.log");
    t.restore = None;

    let mut vm = hv.launch(&t)?;
    // The connection stays open while the state is saved: the agent powers
    // the VM off when its host goes away.
    let (hello, _conn) = match greeting(&listener, vm.as_mut()) {
        Ok(h) => h,
        Err(why) => {
            let status = vm.wait_or_kill(Duration::from_secs(1));
            return Err(VmError::Hypervisor {
                hypervisor: hv.name(),
                detail: format!(
                    "the template VM for warm starts {why} (status {status}){}",
                    log_tail(&t)
                ),
            });
        }
    };
    let state = s.join("state");
    if let Err(e) = hv.save(vm.as_mut(), &t, &state) {
        vm.kill();
        return Ok(Warm::Unavailable(format!("{e}{}", log_tail(&t))));
    }
    vm.kill();
    let hello_path = s.join("hello.json");
    fs::write(
        &hello_path,
        serde_json::to_vec(&hello).expect("Hello serializes"),
    )
    .map_err(io_at(&hello_path))?;
    // Only the state and the greeting are kept.
    let keep = s.join("keep");
    fs::create_dir(&keep).map_err(io_at(&keep))?;
    for f in ["state", "hello.json"] {
        fs::rename(s.join(f), keep.join(f)).map_err(io_at(s.join(f)))?;
    }
    fs::rename(&keep, out).map_err(io_at(out))?;
    Ok(match load(out) {
        Some(s) => Warm::Ready(s),
        None => Warm::Unavailable(format!("{}: unreadable", out.display())),
    })
}

/// Waits for the template's agent to connect and greet; the greeting and
/// the connection.
fn greeting(
    listener: &UnixListener,
    vm: &mut dyn RunningVm,
) -> Result<(Hello, UnixStream), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let until = Instant::now() + BOOT_TIMEOUT;
    let mut stream: UnixStream = loop {
        match listener.accept() {
            Ok((st, _)) => break st,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("agent socket: {e}")),
        }
        if !matches!(vm.try_wait(), Ok(None)) {
            return Err("stopped before connecting its agent".into());
        }
        if Instant::now() > until {
            return Err("did not connect its agent".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(250)))
        .map_err(|e| e.to_string())?;
    loop {
        match Frame::read_from(&mut stream) {
            Ok(Some(f)) if f.kind == Kind::Ready => {
                let hello = f.parse().map_err(|e| format!("sent a bad greeting: {e}"))?;
                return Ok((hello, stream));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("stopped before its agent came up".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !matches!(vm.try_wait(), Ok(None)) {
                    return Err("stopped before its agent came up".into());
                }
                if Instant::now() > until {
                    return Err(format!(
                        "did not come up within {} s",
                        BOOT_TIMEOUT.as_secs()
                    ));
                }
            }
            Err(e) => return Err(format!("agent socket: {e}")),
        }
    }
}

/// The template's hypervisor stderr or, failing that, its console.
fn log_tail(t: &VmConfig) -> String {
    let stderr = super::log_tail(&t.hypervisor_log);
    if stderr.is_empty() {
        super::log_tail(&t.console_log)
    } else {
        stderr
    }
}

/// Removes the snapshots in `dir` (they are a cache; a running VM no
/// longer needs its file) and what an interrupted maker left; a snapshot
/// being made now is left alone. What it freed, in bytes.
pub fn prune(dir: &Path) -> u64 {
    let mut freed = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let busy = |lock: &Path| {
        File::open(lock).is_ok_and(|f| {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
        })
    };
    let making: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lock") && busy(p))
        .collect();
    if !making.is_empty() {
        // Its scratch directory is not named after its key: leave every
        // scratch directory while one is being made.
        return 0;
    }
    for e in entries.flatten() {
        let p = e.path();
        freed += du(&p);
        let _ = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
    }
    freed
}

fn du(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(p)
            .map(|d| d.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        m.blocks() * 512
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::microvm::{Disk, Nic, Share};

    struct Fake;
    impl Hypervisor for Fake {
        fn name(&self) -> String {
            "fake".into()
        }
        fn identity(&self) -> String {
            "fake 1".into()
        }
        fn launch(&self, _: &VmConfig) -> Result<Box<dyn RunningVm>, VmError> {
            unreachable!()
        }
        fn save(&self, _: &mut dyn RunningVm, _: &VmConfig, _: &Path) -> Result<(), VmError> {
            unreachable!()
        }
    }

    fn cfg(dir: &Path) -> VmConfig {
        for f in ["vmlinux", "init.cpio"] {
            fs::write(dir.join(f), f).unwrap();
        }
        VmConfig {
            kernel: dir.join("vmlinux"),
            initramfs: dir.join("init.cpio"),
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: 256,
            disks: vec![Disk {
                path: "/a/image.qcow2".into(),
                format: "qcow2",
                read_only: true,
                size: 16 << 30,
            }],
            shares: vec![Share {
                tag: "s0".into(),
                path: "/data".into(),
                read_only: false,
            }],
            nic: Some(Nic {
                tap: "tap0".into(),
                mac: "02:00:00:00:00:09".into(),
            }),
            agent_socket: "/a/agent.sock".into(),
            console_log: "/a/console.log".into(),
            hypervisor_log: "/a/qemu.log".into(),
            control_socket: None,
            restore: None,
        }
    }

    /// What the guest sees makes a new shape; what only the hypervisor's
    /// side of a device or the agent sets does not.
    #[test]
    fn the_key_is_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        let base = cfg(dir.path());
        let k = key(&Fake, &base).unwrap();
        let mut same = base.clone();
        same.disks[0].path = "/b/other.qcow2".into();
        same.shares[0].path = "/elsewhere".into();
        same.nic.as_mut().unwrap().mac = "02:00:00:00:00:0a".into();
        same.agent_socket = "/b/agent.sock".into();
        same.console_log = "/b/console.log".into();
        assert_eq!(key(&Fake, &same).unwrap(), k);
        let changes: Vec<fn(&mut VmConfig)> = vec![
            |c| c.vcpus = 2,
            |c| c.memory_mib = 512,
            |c| c.disks[0].size = 32 << 30,
            |c| c.disks[0].read_only = false,
            |c| c.disks.clear(),
            |c| c.shares.clear(),
            |c| c.nic = None,
            |c| c.cmdline = "berth.trace".into(),
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let mut c = base.clone();
            change(&mut c);
            assert_ne!(key(&Fake, &c).unwrap(), k, "change {i}");
        }
        // A rebuilt kernel is another shape.
        fs::write(dir.path().join("vmlinux"), "a rebuilt kernel").unwrap();
        assert_ne!(key(&Fake, &base).unwrap(), k);
    }

    #[test]
    fn a_snapshot_is_loaded_only_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("k");
        fs::create_dir(&out).unwrap();
        assert!(load(&out).is_none());
        fs::write(out.join("state"), b"x").unwrap();
        assert!(load(&out).is_none(), "no greeting");
        fs::write(out.join("hello.json"), b"{not json").unwrap();
        assert!(load(&out).is_none(), "a bad greeting");
        fs::write(
            out.join("hello.json"),
            br#"{"kernel":"6.1.192-berth","agent":"0.1.0"}"#,
        )
        .unwrap();
        assert_eq!(load(&out).unwrap().hello.kernel, "6.1.192-berth");
    }
}
