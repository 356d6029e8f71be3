//! The Linux container runtime: an OCI `Spec` becomes a process in its own
//! namespaces, on its own root file system, with the capabilities, rlimits,
//! user and seccomp filter the spec asks for.
//!
//! The process chain is deliberately short. The caller (berth's monitor or CLI,
//! single-threaded at that point) `clone`s the container's init with every
//! namespace flag; the child waits on a pipe until the parent has placed it in
//! its cgroup, builds its root file system inside its own mount namespace
//! (nothing leaks to the host), drops privileges, and `execve`s the user's
//! program, which is therefore PID 1 of the new PID namespace. Any failure
//! before `execve` is written back on a close-on-exec pipe, so the parent
//! learns "started" (EOF) or the exact reason it did not, with Docker's exit
//! codes: 127 for a missing program, 126 for one that cannot be executed.

pub mod caps;
pub mod exec;
pub mod oci;
pub mod rootfs;

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimit, Spec};

/// Why a container could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program does not exist (exit code 127).
    #[error("{0}")]
    NotFound(String),
    /// The program exists but cannot be executed (exit code 126).
    #[error("{0}")]
    NotExecutable(String),
    /// Anything else that went wrong before the program ran (exit code 125).
    #[error("{0}")]
    Setup(String),
}

impl StartError {
    /// Docker's exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::NotFound(_) => 127,
            StartError::NotExecutable(_) => 126,
            StartError::Setup(_) => 125,
        }
    }
}

/// How to start the container's process.
pub struct SpawnOptions<'a> {
    /// The spec (config.json).
    pub spec: &'a Spec,
    /// Absolute path of the root file system directory.
    pub rootfs: PathBuf,
    /// Data of an overlay mount to place on `rootfs` inside the container's
    /// mount namespace (berth's own images); `None` for a ready rootfs (OCI bundles).
    pub overlay: Option<String>,
    /// Called in the parent with the child's PID before it may continue
    /// (cgroup placement, uid maps).
    pub before_start: &'a mut dyn FnMut(i32) -> Result<(), String>,
    /// Warnings (e.g. clamped rlimits) are reported here by the parent.
    pub warn: &'a mut dyn FnMut(String),
    /// File descriptors to become the process's stdin, stdout and stderr;
    /// `None` keeps the caller's.
    pub stdio: [Option<std::os::fd::OwnedFd>; 3],
    /// The OCI runtime CLI's extras (exec FIFO gate, console socket);
    /// `None` for berth's own containers.
    pub oci: Option<oci::InitOptions>,
}

/// Namespace flags the spec asks for.
fn clone_flags(spec: &Spec) -> Result<libc::c_int, StartError> {
    let mut flags = 0;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        if ns.path().is_some() && oci::joinable(ns.typ()) {
            // Joined by path in the child (see `oci::open_namespaces`).
            continue;
        }
        if ns.path().is_some() {
            return Err(StartError::Setup(format!(
                "joining an existing {:?} namespace is not supported yet",
                ns.typ()
            )));
        }
        flags |= match ns.typ() {
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            LinuxNamespaceType::Time => 0x80, // CLONE_NEWTIME
        };
    }
    Ok(flags)
}

/// The hard limits this host lets us set: we cannot raise a hard limit
/// without CAP_SYS_RESOURCE, so requests above it are clamped with a warning.
pub fn clamp_rlimits(limits: &[PosixRlimit], warn: &mut dyn FnMut(String)) -> Vec<(i32, u64, u64)> {
    let mut out = Vec::new();
    for l in limits {
        let name = l.typ().to_string();
        let Some(res) = rlimit_resource(&name) else {
            warn(format!("ignoring unknown rlimit {name}"));
            continue;
        };
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let r = unsafe { libc::getrlimit(res as _, &mut cur) };
        let (mut soft, mut hard) = (l.soft(), l.hard());
        if r == 0 && hard > cur.rlim_max && !has_sys_resource() {
            warn(format!(
                "{name}: hard limit {hard} exceeds the host's {} and cannot be raised here; clamped",
                cur.rlim_max
            ));
            hard = cur.rlim_max;
            soft = soft.min(hard);
        }
        out.push((res, soft, hard));
    }
    out
}

fn has_sys_resource() -> bool {
    rustix::thread::capabilities(None)
        .map(|c| {
            c.effective
                .contains(rustix::thread::CapabilitySet::SYS_RESOURCE)
        })
        .unwrap_or(false)
        && rustix::thread::capability_is_in_bounding_set(
            rustix::thread::CapabilitySet::SYS_RESOURCE,
        )
        .unwrap_or(false)
}

fn rlimit_resource(name: &str) -> Option<i32> {
    let n = name.to_ascii_uppercase();
    let n = n.trim_start_matches("RLIMIT_");
    Some(match n {
        "CPU" => libc::RLIMIT_CPU,
        "FSIZE" => libc::RLIMIT_FSIZE,
        "DATA" => libc::RLIMIT_DATA,
        "STACK" => libc::RLIMIT_STACK,
        "CORE" => libc::RLIMIT_CORE,
        "RSS" => libc::RLIMIT_RSS,
        "NPROC" => libc::RLIMIT_NPROC,
        "NOFILE" => libc::RLIMIT_NOFILE,
        "MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "AS" => libc::RLIMIT_AS,
        "LOCKS" => libc::RLIMIT_LOCKS,
        "SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "NICE" => libc::RLIMIT_NICE,
        "RTPRIO" => libc::RLIMIT_RTPRIO,
        "RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

/// Starts the container's process and returns its PID (in the caller's PID
/// namespace). The caller must be single-threaded: the child runs Rust code
/// between `clone` and `execve`.
pub fn spawn(opts: SpawnOptions<'_>) -> Result<i32, StartError> {
    let setup = |what: &str, e: io::Error| StartError::Setup(format!("{what}: {e}"));
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if threads != 1 {
        return Err(StartError::Setup(format!(
            "internal error: spawning a container from a process with {threads} threads"
        )));
    }
    let flags = clone_flags(opts.spec)?;
    let joins = oci::open_namespaces(opts.spec)?;
    let process = opts
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| StartError::Setup("the spec has no process".into()))?;
    let rlimits = clamp_rlimits(&process.rlimits().clone().unwrap_or_default(), opts.warn);
    // Compiled before clone so a bad profile fails early and the child only installs it.
    let seccomp = match opts
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
    {
        Some(s) => {
            let p = crate::seccomp::compile(s)
                .map_err(|e| StartError::Setup(format!("seccomp: {e}")))?;
            for n in p.notes() {
                (opts.warn)(format!("seccomp: {n}"));
            }
            Some(p)
        }
        None => None,
    };
    let (go_r, go_w) = std::io::pipe().map_err(|e| setup("pipe", e))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| setup("pipe", e))?;
    // SAFETY: a raw clone without CLONE_VM and without a new stack behaves like
    // fork(): the child gets a copy of this (single-threaded) address space.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(setup("clone", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(go_w);
        drop(err_r);
        for (target, fd) in opts.stdio.iter().enumerate() {
            if let Some(fd) = fd {
                use std::os::fd::AsRawFd;
                // SAFETY: dup2 between two descriptors this process owns.
                if unsafe { libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(125) };
                }
            }
        }
        child(
            opts.spec,
            &opts.rootfs,
            opts.overlay.as_deref(),
            &rlimits,
            seccomp.as_ref(),
            go_r,
            err_w,
            &joins,
            opts.oci.as_ref(),
        );
    }
    let pid = pid as i32;
    drop(go_r);
    drop(err_w);
    // The child has its copies; ours would keep pipes open.
    drop(opts.stdio);
    let fail = |msg: String| {
        // SAFETY: kill and waitpid on our own child, integers only.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        StartError::Setup(msg)
    };
    if let Err(e) = (opts.before_start)(pid) {
        return Err(fail(e));
    }
    let mut go_w = go_w;
    if let Err(e) = go_w.write_all(b"g") {
        return Err(fail(format!("starting the container: {e}")));
    }
    drop(go_w);
    let mut msg = String::new();
    let mut err_r = err_r;
    let _ = err_r.read_to_string(&mut msg);
    if msg.is_empty() {
        return Ok(pid);
    }
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let (code, text) = msg.split_once(':').unwrap_or(("125", &msg));
    Err(match code {
        "127" => StartError::NotFound(text.to_string()),
        "126" => StartError::NotExecutable(text.to_string()),
        _ => StartError::Setup(text.to_string()),
    })
}

/// The child side: never returns.
// Everything the child needs, handed down from `spawn` (it shares no state).
#[allow(clippy::too_many_arguments)]
fn child(
    spec: &Spec,
    rootfs: &Path,
    overlay: Option<&str>,
    rlimits: &[(i32, u64, u64)],
    seccomp: Option<&crate::seccomp::Program>,
    mut go: std::io::PipeReader,
    mut err: std::io::PipeWriter,
    joins: &[(std::os::fd::OwnedFd, libc::c_int)],
    oci: Option<&oci::InitOptions>,
) -> ! {
    let mut b = [0u8; 1];
    if go.read_exact(&mut b).is_err() {
        // The parent gave up before letting us run.
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(125) };
    }
    let (code, msg) = match init(spec, rootfs, overlay, rlimits, seccomp, &err, joins, oci) {
        Ok(never) => match never {},
        Err((code, msg)) => (code, msg),
    };
    let _ = err.write_all(format!("{code}:{msg}").as_bytes());
    // SAFETY: _exit skips destructors and atexit handlers the parent owns.
    unsafe { libc::_exit(code) };
}

enum Never {}

// Everything the child needs, handed down from `spawn` (it shares no state).
#[allow(clippy::too_many_arguments)]
fn init(
    spec: &Spec,
    rootfs: &Path,
    overlay: Option<&str>,
    rlimits: &[(i32, u64, u64)],
    seccomp: Option<&crate::seccomp::Program>,
    err_pipe: &std::io::PipeWriter,
    joins: &[(std::os::fd::OwnedFd, libc::c_int)],
    oci: Option<&oci::InitOptions>,
) -> Result<Never, (i32, String)> {
    let setup = |e: io::Error| (125, e.to_string());
    let process = spec.process().as_ref().expect("checked by spawn");
    // The error pipe must not leak into the user's program.
    rustix::io::fcntl_setfd(err_pipe, rustix::io::FdFlags::CLOEXEC).map_err(|e| setup(e.into()))?;
    oci::join_namespaces(joins).map_err(setup)?;
    // SAFETY: setsid takes no arguments; it only fails if we already lead a group.
    unsafe { libc::setsid() };
    reset_signals();
    // (With a console socket the terminal is made later, inside the container.)
    if process.terminal().unwrap_or(false) && oci.is_none_or(|o| o.console_socket.is_none()) {
        // The pty slave on stdin becomes our controlling terminal.
        // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is ours.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(setup(rootfs::at("TIOCSCTTY", io::Error::last_os_error())));
        }
    }
    rootfs::setup(spec, rootfs, overlay).map_err(setup)?;
    if let Some(sock) = oci.and_then(|o| o.console_socket.as_ref()) {
        oci::setup_console(sock, process).map_err(setup)?;
    }
    // Docker creates a missing working directory, as root (a read-only root cannot).
    let _ = std::fs::create_dir_all(process.cwd());
    if let Some(h) = spec.hostname() {
        rustix::system::sethostname(h.as_bytes())
            .map_err(|e| setup(rootfs::at("sethostname", e.into())))?;
    }
    for &(res, soft, hard) in rlimits {
        let l = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(res as _, &l) } != 0 {
            return Err(setup(rootfs::at(
                format!("setrlimit {res}"),
                io::Error::last_os_error(),
            )));
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| setup(rootfs::at("oom_score_adj", e)))?;
    }
    let caps = process.capabilities().clone().unwrap_or_default();
    caps::apply_bounding(&caps).map_err(|e| setup(rootfs::at("capability bounding set", e)))?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which the
    // user may be about to lose: install it now (the profile must allow what
    // follows: setgroups, setresuid, capset, execve — Docker's does).
    if let (Some(p), false) = (seccomp, nnp) {
        crate::seccomp::install(p).map_err(|e| (125, format!("seccomp: {e}")))?;
    }
    // Keep capabilities across setuid so the sets below can still be applied.
    rustix::thread::set_keep_capabilities(true).map_err(|e| setup(e.into()))?;
    let user = process.user();
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: setgroups reads `groups.len()` gids from a live slice.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(setup(rootfs::at("setgroups", io::Error::last_os_error())));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(user.gid(), user.gid(), user.gid()) } != 0 {
        return Err(setup(rootfs::at(
            format!("setgid {}", user.gid()),
            io::Error::last_os_error(),
        )));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(user.uid(), user.uid(), user.uid()) } != 0 {
        return Err(setup(rootfs::at(
            format!("setuid {}", user.uid()),
            io::Error::last_os_error(),
        )));
    }
    caps::apply_sets(&caps).map_err(|e| setup(rootfs::at("capabilities", e)))?;
    if nnp {
        rustix::thread::set_no_new_privs(true).map_err(|e| setup(e.into()))?;
    }
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let cwd = process.cwd();
    std::env::set_current_dir(cwd).map_err(|e| {
        (
            125,
            format!(
                "chdir to cwd (\"{}\") set in config.json failed: {e}",
                cwd.display()
            ),
        )
    })?;
    let args = process.args().clone().unwrap_or_default();
    let prog = args
        .first()
        .ok_or((125, "the process has no arguments".to_string()))?;
    let path = resolve(prog, &env)?;
    if let Some(fifo) = oci.and_then(|o| o.exec_fifo.as_ref()) {
        oci::wait_for_start(fifo, err_pipe).map_err(setup)?;
    }
    if let (Some(p), true) = (seccomp, nnp) {
        crate::seccomp::install(p).map_err(|e| (125, format!("seccomp: {e}")))?;
    }
    // No descriptor of the caller beyond stdio may leak into the container.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let program = Program::new(&path, &args, &env)?;
    if spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.get(INIT_ANNOTATION).is_some_and(|v| v == "true"))
    {
        run_as_init(err_pipe);
    }
    Err(program.exec(prog))
}

/// A program ready for `execve`, prepared (allocated) beforehand.
pub(crate) struct Program {
    path: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_p: Vec<*const libc::c_char>,
    envp_p: Vec<*const libc::c_char>,
}

impl Program {
    pub(crate) fn new(
        path: &Path,
        args: &[String],
        env: &[String],
    ) -> Result<Program, (i32, String)> {
        let c = |s: &str| CString::new(s).map_err(|_| (125, format!("NUL byte in {s:?}")));
        let argv: Vec<CString> = args.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
        envp_p.push(std::ptr::null());
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| (125, "NUL in path".to_string()))?;
        Ok(Program {
            path,
            _argv: argv,
            _envp: envp,
            argv_p,
            envp_p,
        })
    }

    /// Replaces this process; returns only on failure, with Docker's code
    /// (127 not found, 126 otherwise).
    pub(crate) fn exec(&self, shown: &str) -> (i32, String) {
        // SAFETY: both arrays are NUL-terminated and point at CStrings this
        // struct owns; execve only returns on failure.
        unsafe {
            libc::execve(
                self.path.as_ptr(),
                self.argv_p.as_ptr(),
                self.envp_p.as_ptr(),
            )
        };
        let e = io::Error::last_os_error();
        let code = if e.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        };
        (code, format!("exec {shown:?}: {e}"))
    }
}

/// Gives the program default signal dispositions and an empty signal mask.
/// Ignored signals stay ignored across execve (Rust itself ignores SIGPIPE,
/// and berth's caller may ignore others), which a container must not inherit.
pub(crate) fn reset_signals() {
    // The raw system call, because glibc's wrappers refuse the two real-time
    // signals it reserves (32, 33), which a caller may still have ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads a valid kernel sigaction (SIG_DFL,
            // no handler) of the size we pass; invalid numbers just fail.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Spec annotation asking for an init process (`run --init`).
pub const INIT_ANNOTATION: &str = "io.berth.init";

/// `--init`: forks; the child returns to exec the user's program, while this
/// process stays PID 1 of the container — already inside it, with its user,
/// capabilities and seccomp filter — forwarding signals to the program,
/// reaping every orphan, and exiting with the program's status. No init
/// binary has to exist in the image.
fn run_as_init(err_pipe: &std::io::PipeWriter) {
    // SAFETY: fork in the single-threaded container init.
    let child = unsafe { libc::fork() };
    if child <= 0 {
        // The child (or a failed fork) goes on to execve.
        return;
    }
    // The spawner waits for EOF on the error pipe, the monitor's caller on
    // its start pipe: this process never execs, so it closes every
    // descriptor but stdio itself (including our copy of the error pipe).
    let _ = err_pipe;
    // SAFETY: close_range on our own descriptor table; this process never
    // returns to the frames owning them (it leaves through _exit below).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    forward_signals(child);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == child {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(0) };
        }
    }
}

/// Finds the program the way execvp would, in the container's PATH.
fn resolve(prog: &str, env: &[String]) -> Result<PathBuf, (i32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let check = |p: &Path| -> Result<PathBuf, (i32, String)> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err((126, format!("exec: \"{prog}\": is a directory"))),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Err((126, format!("exec: \"{prog}\": permission denied")))
            }
            Ok(_) => Ok(p.to_path_buf()),
            Err(_) => Err((127, format!("exec: \"{prog}\": no such file or directory"))),
        }
    };
    if prog.contains('/') {
        return check(Path::new(prog));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(prog);
        match check(&cand) {
            Ok(p) => return Ok(p),
            Err((126, m)) => denied = Some((126, m)),
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or((
        127,
        format!("exec: \"{prog}\": executable file not found in $PATH"),
    )))
}

/// Waits for a process and returns its exit code the shell's way (128+signal).
pub fn wait(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and takes integers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Relays SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by
/// this process to `pid` (a foreground container), as `docker run` does.
pub fn forward_signals(pid: i32) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: `forward` only performs async-signal-safe work (an atomic
        // load and kill).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}
