//! Running another process inside a running container (`exec`): join its
//! namespaces and root, then apply the same capabilities, seccomp filter,
//! user and environment a container process gets.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use oci_spec::runtime::Process;

use super::{StartError, caps};

const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// Starts `process` inside the container whose init is `pid`; returns the new
/// process's PID (as seen from here). The caller must be single-threaded.
/// `before_start` runs in the parent with that PID (cgroup placement) before
/// the process may continue.
pub fn exec(
    pid: i32,
    process: &Process,
    seccomp: Option<&crate::seccomp::Program>,
    before_start: &mut dyn FnMut(i32) -> Result<(), String>,
    stdio: [Option<OwnedFd>; 3],
) -> Result<i32, StartError> {
    let setup = |what: &str, e: io::Error| StartError::Setup(format!("{what}: {e}"));
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads != 1 {
        return Err(StartError::Setup(format!(
            "internal error: exec from a process with {threads} threads"
        )));
    }
    // Open everything we join while we still see the host's /proc.
    let mut nsfds: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let p = format!("/proc/{pid}/ns/{name}");
        let f = std::fs::File::open(&p).map_err(|e| setup(&p, e))?;
        nsfds.push((f.into(), *flag));
    }
    // Orphans of the intermediate (the process we start) come back to us, so
    // we can wait for it and report its exit code.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let root: OwnedFd = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|e| setup("container root", e))?
        .into();
    let (go_r, go_w) = std::io::pipe().map_err(|e| setup("pipe", e))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| setup("pipe", e))?;
    let (pid_r, pid_w) = std::io::pipe().map_err(|e| setup("pipe", e))?;
    // SAFETY: fork in a single-threaded process (checked above).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(setup("fork", io::Error::last_os_error()));
    }
    if child == 0 {
        drop((go_w, err_r, pid_r));
        for (target, fd) in stdio.iter().enumerate() {
            if let Some(fd) = fd {
                // SAFETY: dup2 between descriptors this process owns.
                if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(125) };
                }
            }
        }
        intermediate(&nsfds, &root, process, seccomp, go_r, err_w, pid_w);
    }
    drop((go_r, err_w, pid_w));
    drop(stdio);
    // The intermediate reports the PID of the process it forked into the
    // container's PID namespace.
    let mut buf = String::new();
    let mut pid_r = pid_r;
    let _ = pid_r.read_to_string(&mut buf);
    // SAFETY: reaping our own child, which exits right after forking.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    let grandchild: i32 = buf.trim().parse().map_err(|_| {
        StartError::Setup(format!("joining the container's namespaces failed: {buf}"))
    })?;
    if let Err(e) = before_start(grandchild) {
        // SAFETY: killing the process we just created.
        unsafe { libc::kill(grandchild, libc::SIGKILL) };
        return Err(StartError::Setup(e));
    }
    let mut go_w = go_w;
    let _ = go_w.write_all(b"g");
    drop(go_w);
    let mut msg = String::new();
    let mut err_r = err_r;
    let _ = err_r.read_to_string(&mut msg);
    if msg.is_empty() {
        return Ok(grandchild);
    }
    let (code, text) = msg.split_once(':').unwrap_or(("125", &msg));
    Err(match code {
        "127" => StartError::NotFound(text.to_string()),
        "126" => StartError::NotExecutable(text.to_string()),
        _ => StartError::Setup(text.to_string()),
    })
}

/// Joins the namespaces, forks the real process into the PID namespace,
/// reports its PID and exits. Never returns.
fn intermediate(
    nsfds: &[(OwnedFd, libc::c_int)],
    root: &OwnedFd,
    process: &Process,
    seccomp: Option<&crate::seccomp::Program>,
    go: std::io::PipeReader,
    err: std::io::PipeWriter,
    mut pid_w: std::io::PipeWriter,
) -> ! {
    for (fd, flag) in nsfds {
        // SAFETY: setns on a namespace descriptor we opened.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            let _ = pid_w.write_all(format!("setns: {}", io::Error::last_os_error()).as_bytes());
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(125) };
        }
    }
    // SAFETY: fork; this process is single-threaded (a child of one).
    let p = unsafe { libc::fork() };
    if p != 0 {
        let _ = pid_w.write_all(p.to_string().as_bytes());
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(0) };
    }
    drop(pid_w);
    let mut go = go;
    let mut b = [0u8; 1];
    if go.read_exact(&mut b).is_err() {
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(125) };
    }
    let mut err = err;
    let (code, msg) = match enter(root, process, seccomp, &err) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = err.write_all(format!("{code}:{msg}").as_bytes());
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(code) };
}

enum Never {}

fn enter(
    root: &OwnedFd,
    process: &Process,
    seccomp: Option<&crate::seccomp::Program>,
    err_pipe: &std::io::PipeWriter,
) -> Result<Never, (i32, String)> {
    let fail = |what: &str, e: io::Error| (125, format!("{what}: {e}"));
    rustix::io::fcntl_setfd(err_pipe, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| fail("cloexec", e.into()))?;
    // SAFETY: fchdir/chroot on a directory descriptor we own.
    unsafe {
        if libc::fchdir(root.as_raw_fd()) != 0 || libc::chroot(c".".as_ptr()) != 0 {
            return Err(fail(
                "entering the container's root",
                io::Error::last_os_error(),
            ));
        }
    }
    super::reset_signals();
    if process.terminal().unwrap_or(false) {
        // The pty slave on stdin becomes the controlling terminal of a new session,
        // so that ^C and job control reach this process, not the container's.
        // SAFETY: setsid takes no arguments; we are not a group leader (forked).
        unsafe { libc::setsid() };
        // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is ours.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(fail("TIOCSCTTY", io::Error::last_os_error()));
        }
    }
    let caps = process.capabilities().clone().unwrap_or_default();
    let nnp = process.no_new_privileges().unwrap_or(false);
    if let (Some(p), false) = (seccomp, nnp) {
        crate::seccomp::install(p).map_err(|e| (125, format!("seccomp: {e}")))?;
    }
    caps::apply_bounding(&caps).map_err(|e| fail("capability bounding set", e))?;
    rustix::thread::set_keep_capabilities(true).map_err(|e| fail("keepcaps", e.into()))?;
    let user = process.user();
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: setgroups reads `groups.len()` gids from a live slice; the rest
    // take integers.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setresgid(user.gid(), user.gid(), user.gid()) != 0
            || libc::setresuid(user.uid(), user.uid(), user.uid()) != 0
        {
            return Err(fail("switching user", io::Error::last_os_error()));
        }
    }
    caps::apply_sets(&caps).map_err(|e| fail("capabilities", e))?;
    if nnp {
        rustix::thread::set_no_new_privs(true).map_err(|e| fail("no_new_privs", e.into()))?;
    }
    let cwd = process.cwd();
    std::env::set_current_dir(cwd)
        .map_err(|e| (126, format!("chdir to \"{}\": {e}", cwd.display())))?;
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let args = process.args().clone().unwrap_or_default();
    let prog = args.first().ok_or((125, "no command given".to_string()))?;
    let path = super::resolve(prog, &env)?;
    if let (Some(p), true) = (seccomp, nnp) {
        crate::seccomp::install(p).map_err(|e| (125, format!("seccomp: {e}")))?;
    }
    // SAFETY: close_range only sets flags on our own descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Err(super::Program::new(&path, &args, &env)?.exec(prog))
}
