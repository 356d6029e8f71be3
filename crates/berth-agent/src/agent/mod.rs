//! The agent: PID 1 of a berth microVM. It sets up the machine, then runs
//! the container's processes as the host asks over the virtio-serial port
//! (the protocol is in the library, `berth_agent`).

mod channel;
mod mounts;
mod net;
mod paths;
mod process;
pub mod sys;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use berth_agent::{
    Boot, Exited, FIRST_EXEC, Frame, Hello, Kind, MAIN, Process, Signal, Started, VM, WindowSize,
};

use channel::Port;
use process::Stdio;
use sys::log;

/// How long the agent waits for `Shutdown` after the main process's exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Once a process has exited, its output is over after this long without
/// any (a background child that keeps the pipe open must not hold `Exit`).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Bytes per `Stdout`/`Stderr` frame at most.
const CHUNK: usize = 32 * 1024;

/// Entry point; never returns (PID 1 exiting panics the kernel).
pub fn main() -> ! {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        eprintln!("berth-agent is PID 1 (/init) of a berth microVM, it is not meant to run here");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        log!("{info}");
        power_off("the agent panicked");
    }));
    let why = match std::panic::catch_unwind(run) {
        Ok(Err(e)) => e,
        Ok(Ok(never)) => match never {},
        Err(_) => "the agent panicked".to_string(),
    };
    power_off(&why)
}

/// Boots, then serves the host until it goes away.
fn run() -> Result<Infallible, String> {
    // SAFETY: umask has no preconditions; processes inherit this one.
    unsafe { libc::umask(0o022) };
    // Before any thread starts, so all inherit it: only the reaper takes
    // SIGCHLD, with sigtimedwait.
    sys::block_sigchld().map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    mounts::early().map_err(|e| format!("early mounts: {e}"))?;
    ensure_stdio();
    spawn_thread("reaper", || process::reap_forever()).ok_or("cannot start the reaper thread")?;

    let port = channel::open_port().map_err(|e| e.to_string())?;
    let reader = port
        .try_clone()
        .map_err(|e| format!("dup of the port: {e}"))?;
    let port = Arc::new(Port::new(port));
    sys::trace("agent: port open");
    let hello = Hello {
        kernel: sys::kernel_release(),
        agent: env!("CARGO_PKG_VERSION").to_string(),
    };
    // Blocks until the host is connected, so reads after it see the host.
    port.send(&Frame::json(Kind::Ready, VM, &hello));

    let mut agent = Agent {
        port,
        booted: false,
        sessions: Arc::new(Mutex::new(HashMap::new())),
    };
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    loop {
        match channel::read_frame(&mut r) {
            Ok(Some(f)) => agent.handle(f),
            Ok(None) => return Err("the host closed the agent port".into()),
            Err(e) => return Err(format!("reading from the host: {e}")),
        }
    }
}

/// What the agent keeps of a running process.
struct Session {
    pid: i32,
    /// Feeds the stdin writer thread; `None` data is end of input.
    stdin: Option<Sender<Option<Vec<u8>>>>,
    /// The pty master, for resizes.
    pty: Option<OwnedFd>,
}

type Sessions = Arc<Mutex<HashMap<u32, Session>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Agent {
    port: Arc<Port>,
    booted: bool,
    sessions: Sessions,
}

impl Agent {
    fn handle(&mut self, f: Frame) {
        match f.kind {
            Kind::Boot => self.boot(&f),
            Kind::Shutdown => power_off("the host asked for it"),
            Kind::Start => self.start(&f),
            Kind::Stdin | Kind::StdinEof => {
                let data = (f.kind == Kind::Stdin).then_some(f.payload);
                if let Some(tx) = lock(&self.sessions)
                    .get(&f.session)
                    .and_then(|s| s.stdin.as_ref())
                {
                    let _ = tx.send(data);
                }
            }
            Kind::Signal => match f.parse::<Signal>() {
                Ok(s) => self.signal(f.session, s.signal),
                Err(e) => log!("{e}"),
            },
            Kind::Resize => match f.parse::<WindowSize>() {
                Ok(ws) => {
                    if let Some(m) = lock(&self.sessions)
                        .get(&f.session)
                        .and_then(|s| s.pty.as_ref())
                        && let Err(e) = process::set_size(m, ws)
                    {
                        log!("resizing session {}'s terminal: {e}", f.session);
                    }
                }
                Err(e) => log!("{e}"),
            },
            other => log!("ignoring a {other:?} frame from the host"),
        }
    }

    fn boot(&mut self, f: &Frame) {
        if f.session != VM {
            return self
                .port
                .error(f.session, 125, "Boot is for session 0".into());
        }
        if self.booted {
            return self.port.error(VM, 125, "already booted".into());
        }
        let b: Boot = match f.parse() {
            Ok(b) => b,
            Err(e) => return self.port.error(VM, 125, e.to_string()),
        };
        match mounts::boot(&b) {
            Ok(()) => {
                self.booted = true;
                self.port.send(&Frame::empty(Kind::Ready, VM));
            }
            Err(e) => {
                log!("boot: {e}");
                self.port.error(VM, 125, e);
            }
        }
    }

    fn signal(&self, session: u32, sig: i32) {
        let Some(pid) = lock(&self.sessions).get(&session).map(|s| s.pid) else {
            return;
        };
        // SAFETY: kill has no memory preconditions; pid is our child's.
        if unsafe { libc::kill(pid, sig) } < 0 {
            log!(
                "signal {sig} to session {session} (pid {pid}): {}",
                io::Error::last_os_error()
            );
        }
    }

    fn start(&mut self, f: &Frame) {
        let session = f.session;
        if session != MAIN && session < FIRST_EXEC {
            return self.port.error(
                session,
                125,
                format!("session {session} cannot run a process"),
            );
        }
        if !self.booted {
            return self
                .port
                .error(session, 125, "Start before the machine was booted".into());
        }
        if lock(&self.sessions).contains_key(&session) {
            return self.port.error(
                session,
                125,
                format!("session {session} already runs a process"),
            );
        }
        let p: Process = match f.parse() {
            Ok(p) => p,
            Err(e) => return self.port.error(session, 125, e.to_string()),
        };
        sys::trace("start: received");
        let child = match process::spawn(&p) {
            Ok(c) => c,
            Err(fail) => {
                return self.port.error(session, fail.code, fail.message);
            }
        };
        sys::trace("start: exec'd");
        self.port.send(&Frame::json(
            Kind::Started,
            session,
            &Started { pid: child.pid },
        ));

        let exited = Arc::new(Mutex::new(None));
        let mut readers = Vec::new();
        let mut pump_of = |fd: OwnedFd, kind: Kind| {
            let (port, exited) = (self.port.clone(), exited.clone());
            readers.extend(spawn_thread("output", move || {
                pump(fd, kind, session, &port, &exited)
            }));
        };
        let (stdin, pty) = match child.stdio {
            Stdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                pump_of(stdout, Kind::Stdout);
                pump_of(stderr, Kind::Stderr);
                (stdin.map(|w| stdin_writer(w, false)), None)
            }
            Stdio::Pty(master) => {
                let dup = |m: &OwnedFd| {
                    m.try_clone()
                        .map_err(|e| log!("dup of session {session}'s pty: {e}"))
                        .ok()
                };
                let writer = if p.stdin { dup(&master) } else { None };
                let resize = dup(&master);
                pump_of(master, Kind::Stdout);
                (writer.map(|w| stdin_writer(w, true)), resize)
            }
        };
        lock(&self.sessions).insert(
            session,
            Session {
                pid: child.pid,
                stdin,
                pty,
            },
        );
        let (port, sessions) = (self.port.clone(), self.sessions.clone());
        let exit = child.exit;
        let started = spawn_thread("waiter", move || {
            wait(session, exit, readers, &exited, &port, &sessions)
        });
        if started.is_none() {
            log!("session {session} will never report its exit");
        }
    }
}

/// Waits for a process's exit, lets its output drain, sends `Exit`. After
/// the main process that is the container's end: everything else is
/// killed (as in a PID namespace whose init died) and, with no `Shutdown`
/// soon, the machine powers off by itself.
fn wait(
    session: u32,
    exit: Receiver<i32>,
    readers: Vec<JoinHandle<()>>,
    exited: &Mutex<Option<Instant>>,
    port: &Port,
    sessions: &Sessions,
) {
    let code = exit.recv().unwrap_or(255);
    sys::trace("process exited");
    *lock(exited) = Some(Instant::now());
    if session == MAIN {
        kill_all();
    }
    for r in readers {
        let _ = r.join();
    }
    // Out of the table first, so the host may reuse the session number as
    // soon as it sees `Exit`.
    lock(sessions).remove(&session);
    sys::trace("output drained");
    port.send(&Frame::json(Kind::Exit, session, &Exited { code }));
    if session == MAIN {
        thread::sleep(SHUTDOWN_GRACE);
        power_off("no Shutdown came after the main process's exit");
    }
}

/// Copies a process's output to the host until end of file (or, once the
/// process has exited, until it has been quiet for [`DRAIN_GRACE`]).
fn pump(fd: OwnedFd, kind: Kind, session: u32, port: &Port, exited: &Mutex<Option<Instant>>) {
    let mut file = File::from(fd);
    let mut buf = vec![0u8; CHUNK];
    let mut last = Instant::now();
    loop {
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if n == 0 {
            if let Some(t) = *lock(exited)
                && t.max(last).elapsed() >= DRAIN_GRACE
            {
                break;
            }
            continue;
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last = Instant::now();
                port.send(&Frame {
                    kind,
                    session,
                    payload: buf[..n].to_vec(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: a pty whose other side is closed, i.e. end of output.
            Err(_) => break,
        }
    }
}

/// A thread writing `Stdin` data to the process (so a process that does
/// not read never stalls the agent); `None` closes a pipe (a pty stays:
/// its input has no end of file of its own).
fn stdin_writer(fd: OwnedFd, pty: bool) -> Sender<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
    spawn_thread("stdin", move || {
        let mut out = Some(File::from(fd));
        for msg in rx {
            match msg {
                Some(data) => {
                    if let Some(f) = out.as_mut()
                        && f.write_all(&data).is_err()
                    {
                        // The reader is gone; the rest goes nowhere.
                        out = None;
                    }
                }
                None if !pty => out = None,
                None => {}
            }
        }
    });
    tx
}

/// A named thread, or `None` (logged) if the system has no room for one.
fn spawn_thread<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Option<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| log!("starting a thread: {e}"))
        .ok()
}

/// Makes sure fds 0-2 are open (the console, else /dev/null), so nothing
/// the agent opens lands there and its stderr reaches the console.
fn ensure_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        for dev in [c"/dev/console", c"/dev/null"] {
            // SAFETY: dev is a NUL-terminated path.
            let got = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
            if got < 0 {
                continue;
            }
            if got != fd {
                // SAFETY: both are descriptors this process holds.
                unsafe {
                    libc::dup2(got, fd);
                    libc::close(got);
                }
            }
            break;
        }
    }
}

/// SIGKILL to every process but the agent.
fn kill_all() {
    // SAFETY: kill(-1) from PID 1 signals everything except PID 1 itself.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

/// Whether any child (running or not yet reaped) is left.
fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data waitid fills in; WNOWAIT leaves any
    // zombie for the reaper.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

/// Ends the machine: kills every process, syncs, and reboots, which with
/// `reboot=t` and QEMU's `-no-reboot` ends the VM. The first caller wins;
/// any other thread that gets here waits for the end.
pub fn power_off(why: &str) -> ! {
    static DOWN: AtomicBool = AtomicBool::new(false);
    if !DOWN.swap(true, Ordering::SeqCst) {
        log!("powering off: {why}");
        sys::trace("power off");
        kill_all();
        // Every process is the agent's descendant, orphans its children:
        // wait (up to 2 s) until the reaper has collected the last one.
        let until = Instant::now() + Duration::from_secs(2);
        while has_children() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: sync and reboot have no memory preconditions; this is
        // PID 1 in a VM (checked in `main`).
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_AUTOBOOT);
        }
        log!("reboot: {}", io::Error::last_os_error());
    }
    loop {
        thread::park();
    }
}
