//! A container's standard streams: pseudo-terminals, and the one loop that copies
//! output to the log (and the terminal) and input from our stdin or from `start -i`
//! clients to the process.
//!
//! Used by the monitor (a container's main process) and by `exec` (a process the
//! CLI starts in a running container, which has no log).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::termios::{OptionalActions, Winsize, isatty, tcgetattr, tcgetwinsize, tcsetattr};

/// A new pty pair: (master, slave), sized like our own terminal if we have one.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?
        .into();
    size_like_ours(&master);
    Ok((master, slave))
}

/// Our terminal's size as (rows, columns), or 24x80 when we have none: the size a
/// new pty starts with, set before the process runs so it never sees 0x0.
pub fn our_size() -> (u16, u16) {
    match tcgetwinsize(io::stdin()).or_else(|_| tcgetwinsize(io::stdout())) {
        Ok(ws) if ws.ws_row > 0 && ws.ws_col > 0 => (ws.ws_row, ws.ws_col),
        _ => (24, 80),
    }
}

/// Sizes a pty like our own terminal, or 24x80 when we have none.
pub fn size_like_ours(master: impl AsFd) {
    if !copy_winsize(&master) {
        let ws = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(master, ws);
    }
}

/// Copies our terminal's window size (stdin's or stdout's) to the pty; false when we
/// have no terminal.
fn copy_winsize(master: impl AsFd) -> bool {
    match tcgetwinsize(io::stdin()).or_else(|_| tcgetwinsize(io::stdout())) {
        Ok(ws) => {
            let _ = rustix::termios::tcsetwinsize(master, ws);
            true
        }
        Err(_) => false,
    }
}

static WINCH: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::Relaxed);
}

/// Puts our stdin terminal into raw mode until dropped, so that keys (^C, ^D, arrows)
/// reach the container's terminal instead of being handled by ours.
pub struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    /// Raw mode if stdin is a terminal; otherwise nothing changes.
    pub fn enter() -> RawMode {
        if !isatty(io::stdin()) {
            return RawMode(None);
        }
        let Ok(orig) = tcgetattr(io::stdin()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        raw.make_raw();
        let _ = tcsetattr(io::stdin(), OptionalActions::Now, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = tcsetattr(io::stdin(), OptionalActions::Now, t);
        }
    }
}

/// Where the process's output goes besides the terminal.
pub trait Sink {
    /// `stream` 0 is stdout, 1 stderr.
    fn write(&mut self, stream: usize, data: &[u8]);
}

/// No log (exec).
pub struct NoLog;

impl Sink for NoLog {
    fn write(&mut self, _: usize, _: &[u8]) {}
}

/// Where the process's input comes from.
pub enum Input {
    /// Nothing (the process has /dev/null, or inherited our stdin itself).
    None,
    /// Our own stdin, copied to `to` (a pty master or a pipe).
    Stdin { to: File },
    /// Clients of the container's attach socket (`start -i`), one at a time, copied to
    /// `to`. With `once` (Docker's StdinOnce) the process's stdin is closed when the
    /// first client hangs up.
    Attach {
        listener: UnixListener,
        to: Option<File>,
        once: bool,
    },
}

/// The process's output: a pty master (one stream) or stdout and stderr pipes.
pub enum Output {
    Tty(File),
    Pipes(File, File),
}

/// Copies output to `sink` (and to our stdout/stderr with `echo`) and input to the
/// process, until every output is closed (the process and whatever inherited its
/// streams are gone). With a pty and `echo`, our terminal is raw while input is ours
/// and window size changes follow ours.
pub fn relay(output: Output, mut input: Input, sink: &mut dyn Sink, echo: bool) {
    let tty = matches!(output, Output::Tty(_));
    let mut outs: [Option<File>; 2] = match output {
        Output::Tty(m) => [Some(m), None],
        Output::Pipes(o, e) => [Some(o), Some(e)],
    };
    let _raw = (tty && echo && matches!(input, Input::Stdin { .. })).then(RawMode::enter);
    if tty && echo {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t) };
    }
    let mut client: Option<UnixStream> = None;
    // Small: a detached monitor keeps this for the container's whole life.
    let mut buf = vec![0u8; 16 << 10];
    while outs.iter().any(Option::is_some) {
        if WINCH.swap(false, Ordering::Relaxed)
            && let Some(m) = &outs[0]
        {
            copy_winsize(m);
        }
        // Poll set: outputs, then the input source (stdin, a client, or the listener).
        let stdin = io::stdin();
        let mut fds: Vec<(Slot, BorrowedFd<'_>)> = Vec::new();
        for (i, f) in outs.iter().enumerate() {
            if let Some(f) = f {
                fds.push((Slot::Out(i), f.as_fd()));
            }
        }
        match &input {
            Input::Stdin { .. } => fds.push((Slot::Stdin, stdin.as_fd())),
            Input::Attach { listener, to, .. } => match &client {
                Some(c) => fds.push((Slot::Client, c.as_fd())),
                None if to.is_some() => fds.push((Slot::Listener, listener.as_fd())),
                None => {}
            },
            Input::None => {}
        }
        let mut polls: Vec<PollFd<'_>> = fds
            .iter()
            .map(|(_, fd)| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
            .collect();
        // A timeout only so that a window-size change is noticed promptly.
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        match poll(&mut polls, (tty && echo).then_some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
        let ready: Vec<Slot> = polls
            .iter()
            .zip(&fds)
            .filter(|(p, _)| !p.revents().is_empty())
            .map(|(_, (s, _))| *s)
            .collect();
        drop(polls);
        drop(fds);
        for slot in ready {
            match slot {
                Slot::Out(i) => {
                    let f = outs[i].as_mut().expect("polled output is open");
                    match f.read(&mut buf) {
                        // A pty master reads EIO once every slave descriptor is closed.
                        Ok(0) | Err(_) => outs[i] = None,
                        Ok(n) => {
                            sink.write(i, &buf[..n]);
                            if echo {
                                echo_out(i, &buf[..n]);
                            }
                        }
                    }
                }
                Slot::Stdin => {
                    let Input::Stdin { to } = &mut input else {
                        unreachable!("stdin is polled only as input")
                    };
                    match io::stdin().lock().read(&mut buf) {
                        Ok(n) if n > 0 && to.write_all(&buf[..n]).is_ok() => {}
                        // Our stdin ended: so does the process's (a pipe closes; a pty
                        // is left alone, as a terminal has no end of input).
                        _ => input = Input::None,
                    }
                }
                Slot::Listener => {
                    if let Input::Attach { listener, .. } = &input
                        && let Ok((c, _)) = listener.accept()
                    {
                        client = Some(c);
                    }
                }
                Slot::Client => {
                    let Input::Attach { to, once, .. } = &mut input else {
                        unreachable!("clients exist only with an attach socket")
                    };
                    let c = client.as_mut().expect("polled client is connected");
                    let n = c.read(&mut buf).unwrap_or(0);
                    let written =
                        n > 0 && to.as_mut().is_some_and(|t| t.write_all(&buf[..n]).is_ok());
                    if !written {
                        client = None;
                        if *once && !tty {
                            *to = None;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Out(usize),
    Stdin,
    Listener,
    Client,
}

fn echo_out(stream: usize, data: &[u8]) {
    let _ = if stream == 0 {
        let mut out = io::stdout().lock();
        out.write_all(data).and_then(|_| out.flush())
    } else {
        io::stderr().write_all(data)
    };
}

/// The attach socket's path relative to the container's directory. It is bound and
/// connected through `/proc/self/fd/N/`, because the full path can be longer than a
/// socket address allows (108 bytes).
pub const ATTACH_SOCKET: &str = "attach.sock";

/// Binds the attach socket in `dir` (replacing a stale one).
pub fn bind_attach(dir: &std::path::Path) -> io::Result<UnixListener> {
    bind_in(dir, ATTACH_SOCKET)
}

/// Connects to the attach socket in `dir`.
pub fn connect_attach(dir: &std::path::Path) -> io::Result<UnixStream> {
    connect_in(dir, ATTACH_SOCKET)
}

/// Binds the socket `name` in `dir` (replacing a stale one), through
/// `/proc/self/fd/N/` so that a long `dir` does not matter.
pub fn bind_in(dir: &std::path::Path, name: &str) -> io::Result<UnixListener> {
    let d = File::open(dir)?;
    let path = via_fd(&d, name);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(path)
}

/// Connects to the socket `name` in `dir`.
pub fn connect_in(dir: &std::path::Path, name: &str) -> io::Result<UnixStream> {
    let d = File::open(dir)?;
    UnixStream::connect(via_fd(&d, name))
}

fn via_fd(dir: &File, name: &str) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()).into()
}
