//! The engine side of name resolution on user networks: one responder
//! process per network (`berth --root R __dns NETWORK`), listening on the
//! network's gateway address, UDP and TCP port 53.
//!
//! * [`ensure`] starts it (from the monitor when a container attaches, and
//!   from `network connect`) unless it runs; whether it runs is a lock it
//!   holds for its whole life (`<network>/dns.lock`), so a crashed one is
//!   found dead and replaced at the next attach, and two never run.
//! * It answers from the store on every query (containers' net.json), so
//!   containers started later resolve with no invalidation to get wrong.
//! * It ends itself when no container is attached any more or the network
//!   is gone (checked every 2 s). It serves from a forked worker and
//!   restarts it if it dies (a watchdog), keeping lock and sockets. The check and [`ensure`] both hold
//!   `<network>/dns.ctl`, so a container attaching while the responder
//!   decides to leave either is seen by it or starts a new one.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_net::dns as proto;
use rustix::fs::{FlockOperation, flock};

use super::NetState;
use crate::Engine;
use crate::containers::Containers;

fn open_lock(p: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Every attached container's names on `network` (name, short ID, aliases;
/// lower case) and its address there.
pub fn names(root: &Path, network: &str) -> HashMap<String, Vec<Ipv4Addr>> {
    let cs = Containers::new(root);
    let mut out: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    for c in cs.list().unwrap_or_default() {
        let Some(st) = fs::read(cs.dir(&c.id).join("net.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<NetState>(&b).ok())
        else {
            continue;
        };
        for l in st.links(&c.options.network_alias) {
            let Ok(ip) = l.ip.parse::<Ipv4Addr>() else {
                continue;
            };
            if l.network != network {
                continue;
            }
            let short = c.id.get(..12).unwrap_or(&c.id).to_string();
            for n in [c.name.clone(), short].into_iter().chain(l.aliases) {
                let v = out.entry(n.to_ascii_lowercase()).or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
    }
    out
}

/// Whether any container is attached to `network` (its net.json names it).
fn in_use(root: &Path, network: &str) -> bool {
    let cs = Containers::new(root);
    cs.list().unwrap_or_default().iter().any(|c| {
        fs::read(cs.dir(&c.id).join("net.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<NetState>(&b).ok())
            .is_some_and(|s| s.links(&[]).iter().any(|l| l.network == network))
    })
}

/// Starts `network`'s responder unless it runs; returns once it listens.
pub fn ensure(engine: &Engine, network: &str) -> Result<(), String> {
    let dir = engine.networks().dir(network);
    let ctl = open_lock(&dir.join("dns.ctl"))?;
    flock(&ctl, FlockOperation::LockExclusive).map_err(|e| format!("dns.ctl: {e}"))?;
    let run = open_lock(&dir.join("dns.lock"))?;
    if flock(&run, FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(());
    }
    drop(run);
    let exe = std::env::current_exe().map_err(|e| format!("/proc/self/exe: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(engine.root())
        .arg("__dns")
        .arg(network)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid in the forked child is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let st = cmd
        .status()
        .map_err(|e| format!("starting the DNS responder: {e}"))?;
    drop(ctl);
    if st.success() {
        Ok(())
    } else {
        let why = fs::read_to_string(dir.join("dns.err")).unwrap_or_default();
        Err(format!(
            "the DNS responder of network {network} did not start: {}",
            why.trim()
        ))
    }
}

/// Stops `network`'s responder (on `network rm`): SIGTERM to the PID it
/// recorded, if that process still is a responder.
pub fn stop(engine: &Engine, network: &str) {
    let dir = engine.networks().dir(network);
    let Some(pid) = fs::read_to_string(dir.join("dns.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline.split(|b| *b == 0).any(|a| a == b"__dns") {
        // SAFETY: kill takes integers; the PID is a responder's (checked above).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => return r,
        }
    }
}

/// Where to forward: `BERTH_DNS_UPSTREAM` (`ip:port,…`, loopback allowed:
/// tests run a fake one) or the host's /etc/resolv.conf.
fn upstreams() -> proto::Upstreams {
    if let Ok(v) = std::env::var("BERTH_DNS_UPSTREAM") {
        return proto::Upstreams {
            servers: v
                .split(',')
                .filter_map(|s| s.trim().parse::<SocketAddr>().ok())
                .collect(),
            allow_loopback: true,
        };
    }
    proto::Upstreams {
        servers: proto::upstreams(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
        allow_loopback: false,
    }
}

/// A responder's lifetime lock and sockets.
type Listening = (File, UdpSocket, Option<TcpListener>);

/// The responder's body (`__dns`): `ready` is told once it listens (or why
/// it cannot); returns when the network has no container left or is gone.
pub fn serve(root: &Path, network: &str, ready: impl FnOnce(Result<(), String>)) {
    let nets = berth_net::Networks::new(root);
    let setup = || -> Result<Option<Listening>, String> {
        let n = nets.get(network).map_err(|e| e.to_string())?;
        let dir = nets.dir(&n.name);
        let run = open_lock(&dir.join("dns.lock"))?;
        if flock(&run, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(None);
        }
        let gw: Ipv4Addr = n
            .gateway
            .parse()
            .map_err(|_| format!("bad gateway {}", n.gateway))?;
        let udp = retry(|| UdpSocket::bind((gw, 53))).map_err(|e| format!("udp {gw}:53: {e}"))?;
        let tcp = retry(|| TcpListener::bind((gw, 53))).ok();
        let pid = dir.join("dns.pid");
        fs::write(&pid, std::process::id().to_string())
            .map_err(|e| format!("{}: {e}", pid.display()))?;
        Ok(Some((run, udp, tcp)))
    };
    let (run, udp, tcp) = match setup() {
        Ok(Some(s)) => s,
        Ok(None) => return ready(Ok(())),
        Err(e) => {
            let _ = fs::write(nets.dir(network).join("dns.err"), &e);
            return ready(Err(e));
        }
    };
    ready(Ok(()));
    let dir: PathBuf = nets.dir(network);
    // A watchdog: this process keeps the lock and the sockets and serves
    // from a forked worker, which a crash or a kill does not take the
    // network's names with it: the next worker answers on the same sockets.
    let mut backoff = Duration::from_millis(100);
    loop {
        // SAFETY: this process is single-threaded here (the worker's threads
        // start after the fork), so the child may run any code.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: prctl with integer arguments; the worker ends with us.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            worker(root, network, &dir, &run, udp, tcp);
        }
        if pid < 0 {
            let _ = fs::write(
                dir.join("dns.err"),
                "fork: the responder cannot start a worker",
            );
            break;
        }
        let mut status = 0;
        // SAFETY: waits for our own child; status is a valid out-pointer.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            // The worker ended because nothing uses the network any more.
            break;
        }
        let _ = fs::write(
            dir.join("dns.err"),
            format!("worker {pid} died (wait status {status}); restarted"),
        );
        if !(dir.join("network.json").exists() && in_use(root, network)) {
            break;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    let _ = fs::remove_file(dir.join("dns.pid"));
    drop(run);
    std::process::exit(0);
}

/// A responder's worker: answers until the network is unused or gone, then
/// releases the lifetime lock itself before its `dns.ctl` (so a container
/// attaching meanwhile either kept it alive or starts a new responder).
fn worker(
    root: &Path,
    network: &str,
    dir: &Path,
    run: &File,
    udp: UdpSocket,
    tcp: Option<TcpListener>,
) -> ! {
    let (r, n) = (root.to_path_buf(), network.to_string());
    let lookup: Arc<proto::Lookup> = Arc::new(move |name: &str| names(&r, &n).remove(name));
    // The lock held when deciding to end, kept until the lifetime lock is let go.
    let held = std::cell::RefCell::new(None);
    proto::serve(udp, tcp, lookup, upstreams(), &|| {
        let Ok(ctl) = open_lock(&dir.join("dns.ctl")) else {
            return false;
        };
        if flock(&ctl, FlockOperation::LockExclusive).is_err() {
            return true;
        }
        let keep = dir.join("network.json").exists() && in_use(root, network);
        if !keep {
            *held.borrow_mut() = Some(ctl);
        }
        keep
    });
    // Shared with the watchdog (one open file description): unlocking here
    // unlocks it for both, while `held` still keeps `ensure` waiting.
    let _ = flock(run, FlockOperation::Unlock);
    let _ = fs::remove_file(dir.join("dns.pid"));
    std::process::exit(0);
}
