//! Starting a container process: fork, set up in the child with raw system
//! calls only (the agent has other threads, so the child must not allocate
//! or take locks), chroot into the root, exec.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

use berth_agent::{Failure, Process, Rlimit, WindowSize};

use super::mounts::ROOT;
use super::paths::join_bytes;
use super::sys::{check, cpath, cstr, errno_text, log, pipe};

/// PATH when the process's environment has none (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `tty` group, owner group of pty slaves.
const TTY_GID: libc::gid_t = 5;

/// Exit statuses waited for, by PID. A spawner holds the lock from before
/// fork until its PID is in, so the reaper, which looks up under the same
/// lock, always finds it.
static WAITING: Mutex<BTreeMap<i32, Sender<i32>>> = Mutex::new(BTreeMap::new());

fn waiting() -> std::sync::MutexGuard<'static, BTreeMap<i32, Sender<i32>>> {
    WAITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reaps every child (PID 1 inherits all orphans) and hands exit statuses
/// of processes the agent started to their sessions. Runs forever; SIGCHLD
/// must be blocked in every thread.
pub fn reap_forever() -> ! {
    // SAFETY: sigset_t is plain data initialised by sigemptyset/sigaddset
    // before use; siginfo_t is plain data sigtimedwait fills in.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    };
    let timeout = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: set and timeout are valid; a null siginfo is allowed.
        unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if let Some(tx) = waiting().remove(&pid) {
                let _ = tx.send(exit_code(status));
            }
        }
    }
}

/// A wait status as a shell reports it: the exit code, or 128 + signal.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// An OCI rlimit name's resource.
pub fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// A limit made settable: soft at most hard, and RLIMIT_NOFILE at most
/// `nr_open` (the kernel refuses more even to root).
pub fn clamp_rlimit(r: &Rlimit, nofile: bool, nr_open: u64) -> (u64, u64) {
    let mut hard = r.hard;
    if nofile {
        hard = hard.min(nr_open);
    }
    (r.soft.min(hard), hard)
}

/// What `args[0]` may be, in order: itself when it holds a slash, else each
/// directory of the last PATH in `env` (or [`DEFAULT_PATH`]) joined with it.
pub fn candidates(name: &str, env: &[String]) -> Vec<Vec<u8>> {
    if name.contains('/') {
        return vec![name.as_bytes().to_vec()];
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':').map(|d| join_bytes(d, name)).collect()
}

// What the child reports before exec: [stage, errno, index] as i32s.
// Warnings go on; any other stage is the child's last word.
const WARN_RLIMIT: i32 = 1;
const SETSID: i32 = 2;
const SETCTTY: i32 = 3;
const DUP: i32 = 4;
const CHROOT: i32 = 5;
const CHDIR: i32 = 6;
const SETGROUPS: i32 = 7;
const SETGID: i32 = 8;
const SETUID: i32 = 9;
const STAT: i32 = 10;
const NOT_EXECUTABLE: i32 = 11;
const NOT_FOUND: i32 = 12;
const EXEC: i32 = 13;

/// The `Error` for what the child reported, worded like runc so docker-style
/// tools recognise it (127 not found, 126 cannot run, 125 the rest).
pub fn failure(stage: i32, errno: i32, p: &Process, path: &str) -> Failure {
    let name = p.args.first().map(String::as_str).unwrap_or("");
    let err = errno_text(errno);
    let (code, message) = match stage {
        NOT_FOUND => (
            127,
            format!("exec: {name:?}: executable file not found in $PATH"),
        ),
        STAT if errno == libc::ENOENT || errno == libc::ENOTDIR => {
            (127, format!("exec: {name:?}: stat {name}: {err}"))
        }
        STAT if errno == libc::EACCES => (126, format!("exec: {name:?}: stat {name}: {err}")),
        NOT_EXECUTABLE => (126, format!("exec: {name:?}: permission denied")),
        EXEC => match errno {
            libc::ENOENT | libc::ENOTDIR => (127, format!("exec {path}: {err}")),
            libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM | libc::ETXTBSY => {
                (126, format!("exec {path}: {err}"))
            }
            _ => (125, format!("exec {path}: {err}")),
        },
        SETSID => (125, format!("setsid: {err}")),
        SETCTTY => (125, format!("set controlling terminal: {err}")),
        DUP => (125, format!("set up stdio: {err}")),
        CHROOT => (125, format!("chroot {ROOT}: {err}")),
        CHDIR => (125, format!("chdir to cwd ({:?}): {err}", p.cwd)),
        SETGROUPS => (125, format!("setgroups {:?}: {err}", p.additional_gids)),
        SETGID => (125, format!("setgid {}: {err}", p.gid)),
        SETUID => (125, format!("setuid {}: {err}", p.uid)),
        _ => (125, format!("starting the process: {err}")),
    };
    Failure { code, message }
}

fn fail125(message: String) -> Failure {
    Failure { code: 125, message }
}

/// The process's stdio on the agent's side.
pub enum Stdio {
    /// Pipes: stdin's write end (when fed), stdout's and stderr's read ends.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A pty's master.
    Pty(OwnedFd),
}

/// A started process.
pub struct Child {
    /// PID in the guest.
    pub pid: i32,
    /// Its stdio.
    pub stdio: Stdio,
    /// Gets its exit code.
    pub exit: Receiver<i32>,
}

/// Everything the child needs, made before fork.
struct Prepared {
    argv: Vec<CString>,
    envp: Vec<CString>,
    candidates: Vec<CString>,
    slash: bool,
    root: CString,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    gids: Vec<libc::gid_t>,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    terminal: bool,
    /// Descriptors to become 0, 1, 2.
    stdio: [RawFd; 3],
}

/// Starts `p` chrooted into [`ROOT`].
pub fn spawn(p: &Process) -> Result<Child, Failure> {
    let Some(name) = p.args.first() else {
        return Err(fail125("no command given (args is empty)".into()));
    };
    let c = |s: &str| cstr(s).map_err(|e| fail125(e.to_string()));
    let argv = p.args.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let envp = p.env.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let candidates = candidates(name, &p.env)
        .into_iter()
        .map(|b| CString::new(b).map_err(|_| fail125(format!("{name:?} contains a NUL byte"))))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = if p.cwd.is_empty() { "/" } else { &p.cwd };
    make_cwd(cwd);

    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let mut rlimits = Vec::new();
    for r in &p.rlimits {
        let Some(res) = rlimit_resource(&r.typ) else {
            log!("ignoring unknown rlimit {:?}", r.typ);
            continue;
        };
        let (soft, hard) = clamp_rlimit(r, r.typ == "RLIMIT_NOFILE", nr_open);
        if (soft, hard) != (r.soft, r.hard) {
            log!("{}: {}/{} lowered to {soft}/{hard}", r.typ, r.soft, r.hard);
        }
        rlimits.push((
            res,
            libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            },
        ));
    }

    // The child's ends are closed in the agent when these drop after fork.
    let (stdio, child_ends): (Stdio, Vec<OwnedFd>) = if p.terminal {
        let (master, slave) = pty(p.size, p.uid).map_err(|e| fail125(format!("pty: {e}")))?;
        (Stdio::Pty(master), vec![slave])
    } else {
        let io = |e: io::Error| fail125(format!("stdio pipes: {e}"));
        let (out_r, out_w) = pipe().map_err(io)?;
        let (err_r, err_w) = pipe().map_err(io)?;
        let (stdin, in_r) = if p.stdin {
            let (r, w) = pipe().map_err(io)?;
            (Some(w), r)
        } else {
            (None, dev_null().map_err(io)?)
        };
        (
            Stdio::Pipes {
                stdin,
                stdout: out_r,
                stderr: err_r,
            },
            vec![in_r, out_w, err_w],
        )
    };
    let fds: [RawFd; 3] = match child_ends.as_slice() {
        [one] => [one.as_raw_fd(); 3],
        [a, b, c] => [a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd()],
        _ => unreachable!("one pty slave or three pipe ends"),
    };
    let prep = Prepared {
        argv,
        envp,
        candidates,
        slash: name.contains('/'),
        root: c(ROOT)?,
        cwd: c(cwd)?,
        uid: p.uid,
        gid: p.gid,
        gids: p.additional_gids.clone(),
        rlimits,
        terminal: p.terminal,
        stdio: fds,
    };
    let argv_ptrs = null_terminated(&prep.argv);
    let envp_ptrs = null_terminated(&prep.envp);
    let (report_r, report_w) = pipe().map_err(|e| fail125(format!("pipe: {e}")))?;
    let (tx, rx) = mpsc::channel();

    let pid = {
        let mut table = waiting();
        // SAFETY: the child only makes async-signal-safe system calls on
        // data prepared above (see `child`) and ends in exec or _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            child(&prep, &argv_ptrs, &envp_ptrs, report_w.as_raw_fd());
        }
        if pid < 0 {
            return Err(fail125(format!("fork: {}", io::Error::last_os_error())));
        }
        table.insert(pid, tx);
        pid
    };
    drop(report_w);
    drop(child_ends);

    // Until exec closes the pipe: warnings, then maybe a failure.
    let mut file = std::fs::File::from(report_r);
    loop {
        let mut rec = [0u8; 12];
        match io::Read::read_exact(&mut file, &mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(fail125(format!("reading the child's report: {e}"))),
        }
        let word =
            |i: usize| i32::from_ne_bytes(rec[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
        let (stage, errno, index) = (word(0), word(1), word(2) as usize);
        if stage == WARN_RLIMIT {
            let typ = p
                .rlimits
                .iter()
                .filter(|r| rlimit_resource(&r.typ).is_some())
                .nth(index);
            log!(
                "setrlimit {}: {} (left as it was)",
                typ.map(|r| r.typ.as_str()).unwrap_or("?"),
                errno_text(errno)
            );
            continue;
        }
        let path = prep
            .candidates
            .get(index)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(failure(stage, errno, p, &path));
    }
    Ok(Child {
        pid,
        stdio,
        exit: rx,
    })
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Makes the working directory if missing (runc does), as root; a failure
/// shows up as the child's chdir error.
fn make_cwd(cwd: &str) {
    if let Ok(p) = super::paths::resolve_in_root(std::path::Path::new(ROOT), cwd)
        && !p.exists()
        && let Err(e) = super::paths::mkdir_all(&p)
    {
        log!("cwd {cwd}: {e}");
    }
}

/// /dev/null of the container (the agent's if that is missing).
fn dev_null() -> io::Result<OwnedFd> {
    let open = |p: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .open(p)
            .map(OwnedFd::from)
    };
    open(&format!("{ROOT}/dev/null")).or_else(|_| open("/dev/null"))
}

/// A pty from the container's devpts (so `tty` names /dev/pts/N there):
/// (master, slave), the slave owned by `uid` and group tty.
fn pty(size: Option<WindowSize>, uid: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    let ptmx = cpath(std::path::Path::new(&format!("{ROOT}/dev/pts/ptmx")))?;
    // SAFETY: ptmx is a NUL-terminated path.
    let m = check(unsafe {
        libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: m is a fresh descriptor nobody else owns.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through the pointer.
    check(unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) })?;
    if let Some(ws) = size {
        set_size(&master, ws)?;
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let s = check(unsafe {
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: s is a fresh descriptor nobody else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: plain fchown on a descriptor we own.
    check(unsafe { libc::fchown(s, uid, TTY_GID) })?;
    Ok((master, slave))
}

/// TIOCSWINSZ on a pty master.
pub fn set_size(master: &OwnedFd, ws: WindowSize) -> io::Result<()> {
    let w = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through the pointer.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &w) }).map(drop)
}

/// Sends one report record; nothing to do if that fails.
fn report(fd: RawFd, stage: i32, errno: i32, index: usize) {
    let mut rec = [0u8; 12];
    rec[..4].copy_from_slice(&stage.to_ne_bytes());
    rec[4..8].copy_from_slice(&errno.to_ne_bytes());
    rec[8..].copy_from_slice(&(index as i32).to_ne_bytes());
    // SAFETY: rec is 12 readable bytes.
    unsafe { libc::write(fd, rec.as_ptr().cast(), rec.len()) };
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reports a fatal stage and exits the child.
fn die(fd: RawFd, stage: i32, errno: i32, index: usize) -> ! {
    report(fd, stage, errno, index);
    // SAFETY: _exit ends the child without running the agent's atexit
    // handlers or touching its locks.
    unsafe { libc::_exit(127) }
}

/// The forked child. Only async-signal-safe calls on prepared data: no
/// allocation, no locks (another agent thread may hold them).
fn child(
    p: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    rep: RawFd,
) -> ! {
    // SAFETY: every call below is a plain system call (async-signal-safe)
    // on memory prepared before fork, which the child's copy still owns.
    unsafe {
        // The agent blocks SIGCHLD and Rust ignores SIGPIPE; both would be
        // inherited through exec.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // Its own session: out of the agent's, and able to own a terminal.
        if libc::setsid() < 0 {
            die(rep, SETSID, errno(), 0);
        }
        if p.terminal && libc::ioctl(p.stdio[0], libc::TIOCSCTTY, 0) < 0 {
            die(rep, SETCTTY, errno(), 0);
        }
        for (target, &fd) in p.stdio.iter().enumerate() {
            let target = target as RawFd;
            let r = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if r < 0 {
                die(rep, DUP, errno(), 0);
            }
        }
        // Before setuid: raising a hard limit needs root.
        for (i, (res, lim)) in p.rlimits.iter().enumerate() {
            if libc::setrlimit(*res, lim) < 0 {
                report(rep, WARN_RLIMIT, errno(), i);
            }
        }
        if libc::chroot(p.root.as_ptr()) < 0 || libc::chdir(c"/".as_ptr()) < 0 {
            die(rep, CHROOT, errno(), 0);
        }
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            die(rep, CHDIR, errno(), 0);
        }
        if libc::setgroups(p.gids.len(), p.gids.as_ptr()) < 0 {
            die(rep, SETGROUPS, errno(), 0);
        }
        if libc::setgid(p.gid) < 0 {
            die(rep, SETGID, errno(), 0);
        }
        if libc::setuid(p.uid) < 0 {
            die(rep, SETUID, errno(), 0);
        }
        // exec.LookPath's rules: the first regular file with an execute bit.
        for (i, c) in p.candidates.iter().enumerate() {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(c.as_ptr(), &mut st) < 0 {
                if p.slash {
                    die(rep, STAT, errno(), i);
                }
                continue;
            }
            let runnable = st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0;
            if !runnable {
                if p.slash {
                    die(rep, NOT_EXECUTABLE, libc::EACCES, i);
                }
                continue;
            }
            libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            die(rep, EXEC, errno(), i);
        }
        die(rep, NOT_FOUND, libc::ENOENT, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        // Raw wait statuses: exited with 3; killed by 15; killed by 9 with
        // a core dump bit.
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(15), 143);
        assert_eq!(exit_code(9 | 0x80), 137);
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_NPROC"), Some(libc::RLIMIT_NPROC));
        assert_eq!(rlimit_resource("RLIMIT_RTTIME"), Some(libc::RLIMIT_RTTIME));
        assert_eq!(rlimit_resource("NOFILE"), None);
        let r = |soft, hard| Rlimit {
            typ: "RLIMIT_NOFILE".into(),
            soft,
            hard,
        };
        assert_eq!(clamp_rlimit(&r(1024, 4096), true, 1 << 20), (1024, 4096));
        assert_eq!(
            clamp_rlimit(&r(u64::MAX, u64::MAX), true, 1 << 20),
            (1 << 20, 1 << 20)
        );
        assert_eq!(
            clamp_rlimit(&r(u64::MAX, u64::MAX), false, 1 << 20),
            (u64::MAX, u64::MAX)
        );
        assert_eq!(clamp_rlimit(&r(10, 5), false, 1 << 20), (5, 5));
    }

    #[test]
    fn path_lookup_candidates() {
        let env = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = |v: Vec<Vec<u8>>| {
            v.into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            s(candidates(
                "sh",
                &env(&["A=1", "PATH=/x:/y/", "PATH=/bin:/usr/bin"])
            )),
            ["/bin/sh", "/usr/bin/sh"]
        );
        assert_eq!(s(candidates("./run", &env(&["PATH=/bin"]))), ["./run"]);
        assert_eq!(s(candidates("/bin/ls", &env(&[]))), ["/bin/ls"]);
        assert_eq!(s(candidates("ls", &env(&[]))).len(), 6);
        assert_eq!(
            s(candidates("ls", &env(&["PATH=:/bin"]))),
            ["./ls", "/bin/ls"]
        );
    }

    #[test]
    fn failures_read_like_runc() {
        let p = |name: &str| Process {
            args: vec![name.into()],
            ..Process::default()
        };
        let f = failure(NOT_FOUND, libc::ENOENT, &p("foo"), "");
        assert_eq!(f.code, 127);
        assert_eq!(
            f.message,
            "exec: \"foo\": executable file not found in $PATH"
        );
        let f = failure(STAT, libc::ENOENT, &p("/nope"), "/nope");
        assert_eq!(f.code, 127);
        assert_eq!(
            f.message,
            "exec: \"/nope\": stat /nope: no such file or directory"
        );
        assert_eq!(
            failure(NOT_EXECUTABLE, libc::EACCES, &p("/etc"), "/etc").code,
            126
        );
        let f = failure(EXEC, libc::EACCES, &p("x"), "/bin/x");
        assert_eq!(
            (f.code, f.message.as_str()),
            (126, "exec /bin/x: permission denied")
        );
        assert_eq!(failure(EXEC, libc::ENOEXEC, &p("x"), "/bin/x").code, 126);
        assert_eq!(failure(EXEC, libc::ENOENT, &p("x"), "/bin/x").code, 127);
        assert_eq!(failure(EXEC, libc::E2BIG, &p("x"), "/bin/x").code, 125);
        let f = failure(SETUID, libc::EPERM, &p("x"), "");
        assert_eq!(
            (f.code, f.message.as_str()),
            (125, "setuid 0: operation not permitted")
        );
    }
}
