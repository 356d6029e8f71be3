//! The runc-compatible OCI runtime: `create`, `start`, `state`, `kill`,
//! `delete`, `pause`, `resume`, `exec`, `ps`, `list` and `features` over an
//! OCI bundle, with runc's state directory model, so that other engines
//! (podman's conmon, containerd shims) can use berth as their runtime.
//!
//! # Process model (runc's)
//!
//! `create` is the parent of the container's init: it clones it with
//! [`super::spawn`], which builds the root file system, pivots, drops
//! privileges and then stops *right before `execve`*: the init opens the
//! container's `exec.fifo` for writing, which blocks until `start` opens it
//! for reading. Once the init has reached that gate (its error pipe reached
//! EOF), `create` writes `state.json` and the `--pid-file` and exits. The init
//! is then reparented to the caller's subreaper (conmon sets
//! `PR_SET_CHILD_SUBREAPER`) or to the host's init, whichever reaps it.
//! `state` reports `stopped` once the PID is gone, a zombie, or a different
//! process (start times are compared).
//!
//! # State directory
//!
//! `<root>/<id>/` (mode 0711) holds `state.json` (the OCI state plus what
//! later commands need: the init's start time, the cgroup), `config.json` (the
//! spec as created, for `exec`) and, between `create` and `start`,
//! `exec.fifo` (mode 0622 so a non-root init can open it). Writes are a
//! temporary file and a rename.
//!
//! # Differences from runc
//!
//! * The `cgroup` mount type is rewritten into what the host can mount: on a
//!   v1 host a tmpfs with a read-only bind of the container's cgroup in each
//!   hierarchy (runc does the same without a cgroup namespace); on a v2 host a
//!   bind of the container's cgroup. Co-mounted controllers get no alias
//!   symlinks (`cpu` → `cpu,cpuacct`).
//! * `cgroupsPath` follows runc (an absolute path starts at each hierarchy's
//!   root as mounted, a relative one at the caller's own cgroup); without one
//!   the cgroup is `berth-runtime/<id>` below the caller's own cgroup, as
//!   berth's [`crate::cgroups::CgroupConfig`] places everything. Where the
//!   path starts is recorded at create, because later commands may run in
//!   other cgroups (conmon runs `create` from its own cgroup).
//! * Hooks: `prestart` and `createRuntime` run when the init has reached the
//!   exec gate (after its root is built, not before `pivot_root`),
//!   `poststart` after `start`, `poststop` on `delete`. `createContainer` and
//!   `startContainer` (which run inside the container) are refused.
//! * No user namespaces (no ID mappings yet), no systemd cgroup driver, no
//!   `--preserve-fds`, no AppArmor/SELinux labels (ignored, like a host
//!   without them).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    Hook, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceType,
    LinuxResources, Mount, MountBuilder, Process, Spec,
};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::{SpawnOptions, StartError};
use crate::cgroups::{self, CgroupError, CgroupManager};

/// Where container state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/berth-runtime";
/// The cgroup parent when the spec has no `cgroupsPath`.
pub const DEFAULT_CGROUP_PARENT: &str = "berth-runtime";
/// The runtime-spec version written into states.
pub const OCI_VERSION: &str = "1.0.2";
/// How long `delete --force` waits for a killed container to die.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Errors

/// Why an OCI runtime command failed. Every variant names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// No container with this ID.
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    /// `create` with an ID in use.
    #[error("container with id \"{0}\" already exists")]
    Exists(String),
    /// An ID runc would refuse.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.'")]
    InvalidId(String),
    /// The container is not in a state that allows the operation.
    #[error("container \"{id}\": {msg}")]
    WrongState {
        /// The container.
        id: String,
        /// What is wrong.
        msg: String,
    },
    /// The bundle's config.json (or a process.json) is unusable.
    #[error("{}: {detail}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error("container \"{id}\": {source}")]
    Cgroup {
        /// The container.
        id: String,
        /// The cause.
        source: CgroupError,
    },
    /// The process could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A hook failed.
    #[error("{kind} hook {}: {detail}", path.display())]
    Hook {
        /// `prestart`, `poststart` …
        kind: String,
        /// The hook's program.
        path: PathBuf,
        /// Exit status and output.
        detail: String,
    },
    /// Something berth's runtime does not do.
    #[error("{0}")]
    Unsupported(String),
}

impl OciError {
    /// The exit code for the CLI: Docker's 125/126/127 for a process that
    /// could not start, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            OciError::Start(e) => e.exit_code(),
            _ => 1,
        }
    }
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> OciError {
    let path = path.into();
    move |source| OciError::Io { path, source }
}

// ---------------------------------------------------------------------------
// The container init's side (called from `super::init`)

/// What an init started by the OCI runtime does beyond berth's own
/// containers ([`SpawnOptions::oci`]).
#[derive(Default)]
pub struct InitOptions {
    /// An `O_PATH` descriptor of the exec FIFO. The init, its setup done and
    /// its error pipe closed, opens it for writing right before `execve`:
    /// that blocks until `start` opens it for reading.
    pub exec_fifo: Option<OwnedFd>,
    /// A connected unix socket (`--console-socket`): the init allocates a
    /// pseudo-terminal in the container's devpts, sends the master there
    /// (SCM_RIGHTS, with the slave's path as the message, as runc does) and
    /// makes the slave its stdio and controlling terminal.
    pub console_socket: Option<OwnedFd>,
}

/// Restores the default SIGPIPE disposition. Rust programs start with
/// SIGPIPE ignored, and an ignored signal stays ignored across `execve`:
/// without this every container (and exec'd process) would inherit it,
/// unlike under runc. Call it first thing in the runtime's `main`.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Namespace types that can be joined by path (`linux.namespaces[].path`)
/// from inside the freshly cloned init.
pub(super) fn joinable(t: LinuxNamespaceType) -> bool {
    matches!(
        t,
        LinuxNamespaceType::Network
            | LinuxNamespaceType::Ipc
            | LinuxNamespaceType::Uts
            | LinuxNamespaceType::Mount
            | LinuxNamespaceType::Cgroup
    )
}

/// Opens the namespaces the spec names by path, in the caller (the paths are
/// the host's). The init joins them with [`join_namespaces`].
pub(super) fn open_namespaces(spec: &Spec) -> Result<Vec<(OwnedFd, libc::c_int)>, StartError> {
    let mut out = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        let Some(path) = ns.path() else { continue };
        if !joinable(ns.typ()) {
            continue;
        }
        let flag = match ns.typ() {
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            _ => libc::CLONE_NEWCGROUP,
        };
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
            |e| {
                StartError::Setup(format!(
                    "{:?} namespace {}: {}",
                    ns.typ(),
                    path.display(),
                    io::Error::from(e)
                ))
            },
        )?;
        out.push((fd, flag));
    }
    Ok(out)
}

/// In the init: joins the namespaces opened by [`open_namespaces`].
pub(super) fn join_namespaces(joins: &[(OwnedFd, libc::c_int)]) -> io::Result<()> {
    for (fd, flag) in joins {
        // SAFETY: setns on a namespace descriptor we own.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            return Err(super::rootfs::at("setns", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// In the init, after `pivot_root` and before the user switch: allocates a
/// pseudo-terminal from the container's `/dev/ptmx`, sends the master over
/// `socket`, and makes the slave stdin, stdout, stderr and the controlling
/// terminal (the init already leads its own session).
pub(super) fn setup_console(socket: &OwnedFd, process: &Process) -> io::Result<()> {
    let (master, slave, name) = open_pty(Path::new("/dev/ptmx"))?;
    if let Some(size) = process.console_size() {
        set_size(&slave, size.height() as u16, size.width() as u16)?;
    }
    // runc's fixStdioPermissions: the user owns its terminal.
    let _ = rustix::fs::fchown(
        &slave,
        Some(rustix::process::Uid::from_raw(process.user().uid())),
        None,
    );
    send_fd(socket.as_fd(), name.as_bytes(), master.as_fd())
        .map_err(|e| super::rootfs::at("sending the console to --console-socket", e))?;
    drop(master);
    for target in 0..3 {
        // SAFETY: dup2 between descriptors this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(super::rootfs::at(
                "console stdio",
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: TIOCSCTTY takes an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(super::rootfs::at("TIOCSCTTY", io::Error::last_os_error()));
    }
    // As runc: /dev/console is the container's terminal too.
    let console = Path::new("/dev/console");
    if fs::symlink_metadata(console).is_err() {
        let _ = fs::File::create(console);
    }
    let _ = super::rootfs::mount(Some(&name), console, None, libc::MS_BIND, None);
    Ok(())
}

/// Opens a new pseudo-terminal through `ptmx` (a devpts `ptmx` node or the
/// `/dev/ptmx` symlink to one): (master, slave, slave's path as the
/// container sees it).
pub fn open_pty(ptmx: &Path) -> io::Result<(OwnedFd, OwnedFd, String)> {
    let master = rustix::fs::open(
        ptmx,
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| super::rootfs::at(ptmx.display(), e.into()))?;
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int and TIOCGPTN writes one; both point at
    // locals that outlive the calls.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0
            || libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) != 0
        {
            return Err(super::rootfs::at(
                "unlocking the pseudo-terminal",
                io::Error::last_os_error(),
            ));
        }
    }
    // TIOCGPTPEER opens the slave of *this* devpts instance without a path.
    // SAFETY: the ioctl takes open flags and returns a new descriptor.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(super::rootfs::at(
            "opening the pseudo-terminal's slave",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((master, slave, format!("/dev/pts/{n}")))
}

/// Sets a terminal's size.
pub fn set_size(tty: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In the init, right before `execve`: tells the spawner that setup is done
/// (the error pipe becomes stderr, so the spawner sees EOF while a later
/// failure, such as the filter refusing `execve`, is still reported on the
/// container's stderr), then blocks on the exec FIFO until `start`.
pub(super) fn wait_for_start(fifo: &OwnedFd, err_pipe: &std::io::PipeWriter) -> io::Result<()> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    // Reopening goes through the container's /proc: fail now, while create
    // can still report it, if there is none.
    fs::metadata(&path)
        .map_err(|e| super::rootfs::at("the exec fifo (is /proc mounted in the container?)", e))?;
    // SAFETY: dup2 onto the error pipe's descriptor, which this process owns;
    // the PipeWriter stays valid (it now names a copy of stderr).
    if unsafe { libc::dup2(2, err_pipe.as_raw_fd()) } < 0 {
        return Err(super::rootfs::at(
            "closing the error pipe",
            io::Error::last_os_error(),
        ));
    }
    rustix::io::fcntl_setfd(err_pipe, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| super::rootfs::at("cloexec", e.into()))?;
    let mut f = loop {
        match fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(super::rootfs::at("opening the exec fifo", e)),
        }
    };
    f.write_all(b"0")
        .map_err(|e| super::rootfs::at("writing the exec fifo", e))?;
    Ok(())
}

/// Sends `fd` over a unix socket with `payload` as the message (SCM_RIGHTS).
pub fn send_fd(socket: impl AsFd, payload: &[u8], fd: impl AsFd) -> io::Result<()> {
    let payload = if payload.is_empty() { b"\0" } else { payload };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is 64 bytes, larger than `space`; the
    // CMSG macros compute pointers inside it; iov and payload outlive sendmsg.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(
            libc::CMSG_DATA(cmsg) as *mut libc::c_int,
            fd.as_fd().as_raw_fd(),
        );
        loop {
            if libc::sendmsg(socket.as_fd().as_raw_fd(), &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Receives one descriptor sent with [`send_fd`] (or runc's `utils.SendFd`):
/// (the descriptor, the message).
pub fn recv_fd(socket: impl AsFd) -> io::Result<(OwnedFd, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it states.
        let n =
            unsafe { libc::recvmsg(socket.as_fd().as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the CMSG macros walk the control buffer the kernel filled in
    // (msg_controllen was updated to what it wrote).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the message carried no file descriptor",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
        buf.truncate(n);
        Ok((OwnedFd::from_raw_fd(fd), buf))
    }
}

// ---------------------------------------------------------------------------
// State

/// A container's status, as the OCI state names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created; the init waits at the exec gate.
    Created,
    /// The user's program runs.
    Running,
    /// Frozen.
    Paused,
    /// The init has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The OCI state of a container, with runc's extra fields (`rootfs`,
/// `created`, `owner`): what `state` prints and hooks read on stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Runtime-spec version.
    pub oci_version: String,
    /// Container ID.
    pub id: String,
    /// PID of the init in the caller's PID namespace (0 once stopped, as runc).
    pub pid: i32,
    /// Current status.
    pub status: Status,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute root file system path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// The user owning the container's state.
    pub owner: String,
    /// The spec's annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `state.json`: the state as last written plus what later commands need.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(flatten)]
    state: State,
    /// The init's start time (clock ticks since boot): a PID reused by
    /// another process is not the container.
    init_start_time: u64,
    /// The container's cgroup, below `cgroup_base`.
    cgroup_path: String,
    /// Where `cgroup_path` starts in each hierarchy, fixed at create: later
    /// commands may run in other cgroups (podman runs `create` from conmon's
    /// cgroup and `pause` from its own).
    cgroup_base: Vec<CgroupBase>,
    /// Whether the parent is [`DEFAULT_CGROUP_PARENT`] (removed when empty).
    default_cgroup_parent: bool,
}

/// One hierarchy's starting point for the container's cgroup path.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CgroupBase {
    version: u8,
    controllers: Vec<String>,
    mount_point: PathBuf,
    dir: PathBuf,
}

/// The starting points: the hierarchies' roots (as mounted) for an absolute
/// `cgroupsPath`, as runc; this process's own cgroups otherwise.
fn cgroup_base(absolute: bool) -> Result<Vec<CgroupBase>, CgroupError> {
    Ok(cgroups::own_cgroup_paths()?
        .into_iter()
        .map(|h| CgroupBase {
            version: h.version,
            controllers: h.controllers,
            dir: if absolute {
                h.mount_point.clone()
            } else {
                h.dir
            },
            mount_point: h.mount_point,
        })
        .collect())
}

/// The manager for cgroup `rel` below `base` (v2 on a unified host, v1
/// otherwise, as [`cgroups::manager`] chooses).
fn cgroup_manager(base: &[CgroupBase], rel: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let own: Vec<cgroups::Hierarchy> = base
        .iter()
        .map(|b| cgroups::Hierarchy {
            version: b.version,
            controllers: b.controllers.clone(),
            mount_point: b.mount_point.clone(),
            cgroup: String::new(),
            dir: b.dir.clone(),
        })
        .collect();
    match crate::host::cgroups().mode {
        crate::host::CgroupMode::Unified => {
            let h = own.iter().find(|h| h.version == 2).ok_or_else(|| {
                CgroupError::NotAvailable("no cgroup2 entry in /proc/self/cgroup".into())
            })?;
            Ok(Box::new(cgroups::v2::V2Manager::new(h.dir.clone(), rel, 0)))
        }
        crate::host::CgroupMode::Hybrid | crate::host::CgroupMode::Legacy => {
            Ok(Box::new(cgroups::v1::V1Manager::new(&own, rel, 0)?))
        }
        crate::host::CgroupMode::None => Err(CgroupError::NotAvailable(
            "no cgroup file system is mounted".into(),
        )),
    }
}

impl Record {
    fn cgroup(&self) -> Result<Box<dyn CgroupManager>, OciError> {
        cgroup_manager(&self.cgroup_base, &self.cgroup_path).map_err(|source| OciError::Cgroup {
            id: self.state.id.clone(),
            source,
        })
    }

    fn alive(&self) -> bool {
        alive(self.state.pid, self.init_start_time)
    }

    /// The status now: the recorded one while the init lives.
    fn status(&self) -> Status {
        if self.alive() {
            self.state.status
        } else {
            Status::Stopped
        }
    }

    fn public(&self) -> State {
        let mut s = self.state.clone();
        s.status = self.status();
        if s.status == Status::Stopped {
            s.pid = 0;
        }
        s
    }

    fn wrong(&self, msg: impl Into<String>) -> OciError {
        OciError::WrongState {
            id: self.state.id.clone(),
            msg: msg.into(),
        }
    }
}

/// (state, start time) of a process from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Start time of a process in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// True while `pid` is the process that started at `start` and has not
/// exited (a zombie nobody reaped has exited).
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && matches!(proc_stat(pid), Some((s, t)) if t == start && s != 'Z' && s != 'X')
}

// ---------------------------------------------------------------------------
// Options

/// `create` / `run`.
pub struct CreateOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write the init's PID.
    pub pid_file: Option<PathBuf>,
    /// A socket connected to `--console-socket` (or the foreground `run`'s
    /// own), for a spec with `process.terminal`.
    pub console_socket: Option<OwnedFd>,
}

/// `exec`.
pub struct ExecOptions {
    /// The process to start.
    pub process: Process,
    /// Where to write its PID.
    pub pid_file: Option<PathBuf>,
    /// A socket connected to `--console-socket`, for `process.terminal`.
    pub console_socket: Option<OwnedFd>,
    /// Allow exec into a paused container.
    pub ignore_paused: bool,
}

/// What `exec` flags change in the container's own process.
#[derive(Default)]
pub struct ProcessOverrides {
    /// The command.
    pub args: Vec<String>,
    /// `KEY=VALUE` added or replaced.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Capabilities added to every set.
    pub caps: Vec<String>,
}

// ---------------------------------------------------------------------------
// The runtime

/// The OCI runtime over one state directory.
pub struct Runtime {
    root: PathBuf,
}

impl Runtime {
    /// A runtime keeping state under `root` (runc's `--root`).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn load(&self, id: &str) -> Result<Record, OciError> {
        check_id(id)?;
        let p = self.dir(id).join("state.json");
        let text = match fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(id.to_string()));
            }
            Err(e) => return Err(io_err(&p)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| OciError::Config {
            path: p,
            detail: e.to_string(),
        })
    }

    fn save(&self, rec: &Record) -> Result<(), OciError> {
        let p = self.dir(&rec.state.id).join("state.json");
        let data = serde_json::to_vec(rec).map_err(|e| OciError::Config {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        write_atomic(&p, &data, 0o600)
    }

    /// `create`: builds the container and leaves its init waiting for
    /// `start`. Returns the init's PID. The caller must be single-threaded;
    /// it becomes the init's parent.
    pub fn create(
        &self,
        id: &str,
        o: CreateOptions,
        warn: &mut dyn FnMut(String),
    ) -> Result<i32, OciError> {
        check_id(id)?;
        let bundle = absolute(&o.bundle)?;
        let cfg_path = bundle.join("config.json");
        let spec = Spec::load(&cfg_path).map_err(|e| OciError::Config {
            path: cfg_path.clone(),
            detail: e.to_string(),
        })?;
        let bad = |detail: String| OciError::Config {
            path: cfg_path.clone(),
            detail,
        };
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| bad("the spec has no process".into()))?;
        match (
            process.terminal().unwrap_or(false),
            o.console_socket.is_some(),
        ) {
            (true, false) => {
                return Err(bad(
                    "process.terminal is true but no --console-socket was given".into(),
                ));
            }
            (false, true) => {
                return Err(bad(
                    "--console-socket was given but process.terminal is false".into(),
                ));
            }
            _ => {}
        }
        check_supported(&spec).map_err(bad)?;
        let root_path = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| bad("the spec has no root".into()))?;
        let rootfs = if root_path.is_absolute() {
            root_path
        } else {
            bundle.join(root_path)
        };
        if !rootfs.is_dir() {
            return Err(bad(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )));
        }
        let (cg_path, cg_absolute, default_parent) = cgroup_location(
            id,
            spec.linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .and_then(|p| p.to_str()),
        )
        .map_err(bad)?;

        if !self.root.exists() {
            fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
            let _ = fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700));
        }
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(OciError::Exists(id.to_string()));
            }
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let mut undo = Undo {
            dir: Some(dir.clone()),
            cgroup: None,
            pid: None,
        };
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(io_err(&dir))?;
        let fifo_path = dir.join("exec.fifo");
        let c = std::ffi::CString::new(fifo_path.as_os_str().as_encoded_bytes())
            .map_err(|_| bad("NUL byte in --root".into()))?;
        // SAFETY: a NUL-terminated path and a mode.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o622) } != 0 {
            return Err(io_err(&fifo_path)(io::Error::last_os_error()));
        }
        fs::set_permissions(&fifo_path, fs::Permissions::from_mode(0o622))
            .map_err(io_err(&fifo_path))?;
        let fifo = rustix::fs::open(&fifo_path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_err(&fifo_path)(e.into()))?;
        spec.save(dir.join("config.json"))
            .map_err(|e| bad(e.to_string()))?;

        let cg_err = |source| OciError::Cgroup {
            id: id.to_string(),
            source,
        };
        let cg_base = cgroup_base(cg_absolute).map_err(cg_err)?;
        let cg = cgroup_manager(&cg_base, &cg_path).map_err(cg_err)?;
        cg.create().map_err(cg_err)?;
        undo.cgroup = Some((cg_base.clone(), cg_path.clone(), default_parent));
        cg.apply(&resources(&spec)).map_err(cg_err)?;

        let mut run_spec = spec.clone();
        rewrite_cgroup_mounts(&mut run_spec, cg.as_ref()).map_err(cg_err)?;
        if let Some(mut p) = run_spec.process().clone() {
            trim_ambient(&mut p, warn);
            run_spec.set_process(Some(p));
        }
        first_rule_wins(&mut run_spec);
        let pid = super::spawn(SpawnOptions {
            spec: &run_spec,
            rootfs: rootfs.clone(),
            overlay: None,
            before_start: &mut |pid| cg.add_process(pid).map_err(|e| e.to_string()),
            warn,
            stdio: [None, None, None],
            oci: Some(InitOptions {
                exec_fifo: Some(fifo),
                console_socket: o.console_socket,
            }),
        })?;
        undo.pid = Some(pid);
        let rec = Record {
            state: State {
                oci_version: OCI_VERSION.into(),
                id: id.to_string(),
                pid,
                status: Status::Created,
                bundle: bundle.clone(),
                rootfs,
                created: now_rfc3339(),
                owner: owner_of(&dir),
                annotations: spec
                    .annotations()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            },
            init_start_time: start_time(pid).ok_or_else(|| {
                StartError::Setup(format!("the container's init (PID {pid}) exited"))
            })?,
            cgroup_path: cg_path,
            cgroup_base: cg_base,
            default_cgroup_parent: default_parent,
        };
        self.save(&rec)?;
        if let Some(h) = spec.hooks() {
            run_hooks("prestart", h.prestart().as_deref(), &rec.state)?;
            run_hooks("createRuntime", h.create_runtime().as_deref(), &rec.state)?;
        }
        if let Some(p) = &o.pid_file {
            write_atomic(p, pid.to_string().as_bytes(), 0o644)?;
        }
        undo.disarm();
        Ok(pid)
    }

    /// `start`: lets a created container's init `execve` the user's program.
    pub fn start(&self, id: &str, warn: &mut dyn FnMut(String)) -> Result<(), OciError> {
        let mut rec = self.load(id)?;
        match rec.status() {
            Status::Created => {}
            Status::Stopped => return Err(rec.wrong("cannot start a container that has stopped")),
            _ => return Err(rec.wrong("cannot start an already running container")),
        }
        let fifo_path = self.dir(id).join("exec.fifo");
        let fifo = match rustix::fs::open(
            &fifo_path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(f) => f,
            Err(rustix::io::Errno::NOENT) => {
                return Err(rec.wrong("cannot start an already running container"));
            }
            Err(e) => return Err(io_err(&fifo_path)(e.into())),
        };
        // The init is blocked opening the FIFO for writing; our open lets it
        // through and it writes one byte. Poll so a dead init is noticed.
        let mut byte = [0u8; 1];
        loop {
            let mut fds = [rustix::event::PollFd::new(
                &fifo,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_err(&fifo_path)(e.into())),
            }
            match rustix::io::read(&fifo, &mut byte) {
                Ok(1) => break,
                Ok(_) => return Err(rec.wrong("cannot start an already running container")),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_err(&fifo_path)(e.into())),
            }
            if !rec.alive() {
                return Err(rec.wrong("the container's init exited before it was started"));
            }
        }
        let _ = fs::remove_file(&fifo_path);
        rec.state.status = Status::Running;
        self.save(&rec)?;
        if let Some(h) = self.spec(id)?.hooks()
            && let Err(e) = run_hooks("poststart", h.poststart().as_deref(), &rec.public())
        {
            warn(e.to_string());
        }
        Ok(())
    }

    /// `state`.
    pub fn state(&self, id: &str) -> Result<State, OciError> {
        Ok(self.load(id)?.public())
    }

    /// `list`: every container, sorted by ID.
    pub fn list(&self) -> Result<Vec<State>, OciError> {
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.root)(e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match self.load(&name) {
                Ok(r) => out.push(r.public()),
                // Half-created or foreign directories are not containers.
                Err(_) => continue,
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// `kill`: signals the init, or with `all` every process of the container.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), OciError> {
        let rec = self.load(id)?;
        if rec.status() == Status::Stopped {
            return Err(rec.wrong("container not running"));
        }
        if all {
            return rec
                .cgroup()?
                .kill_all(signal)
                .map_err(|source| OciError::Cgroup {
                    id: id.to_string(),
                    source,
                });
        }
        // SAFETY: kill takes integers.
        if unsafe { libc::kill(rec.state.pid, signal) } != 0 {
            return Err(OciError::Io {
                path: format!("/proc/{}", rec.state.pid).into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// `delete`: removes a stopped (or created) container; `force` kills a
    /// running or paused one first. With `force`, an unknown ID is not an
    /// error (runc's behaviour, which engines rely on when cleaning up).
    pub fn delete(
        &self,
        id: &str,
        force: bool,
        warn: &mut dyn FnMut(String),
    ) -> Result<(), OciError> {
        let rec = match self.load(id) {
            Ok(r) => r,
            Err(OciError::NotFound(_)) => {
                // A create that died half-way leaves a directory without state.
                let dir = self.dir(id);
                if dir.exists() {
                    fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                }
                return if force {
                    Ok(())
                } else {
                    Err(OciError::NotFound(id.into()))
                };
            }
            Err(OciError::Config { .. }) if force => {
                // Unreadable state: nothing can be done but forget it.
                let dir = self.dir(id);
                return fs::remove_dir_all(&dir).map_err(io_err(&dir));
            }
            Err(e) => return Err(e),
        };
        let status = rec.status();
        match status {
            Status::Stopped => {}
            Status::Created => self.kill_and_wait(&rec)?,
            Status::Running | Status::Paused if force => self.kill_and_wait(&rec)?,
            s => {
                return Err(rec.wrong(format!(
                    "cannot delete a container that is not stopped: {s} (use --force)"
                )));
            }
        }
        let cg = rec.cgroup()?;
        // Exec'd processes may outlive the init; they go with the container.
        if cg.pids().map(|p| !p.is_empty()).unwrap_or(false) {
            let _ = cg.kill_all(libc::SIGKILL);
        }
        cg.remove().map_err(|source| OciError::Cgroup {
            id: id.to_string(),
            source,
        })?;
        if rec.default_cgroup_parent {
            prune_parents(cg.as_ref());
        }
        if let Ok(spec) = self.spec(id)
            && let Some(h) = spec.hooks()
        {
            let mut st = rec.public();
            st.status = Status::Stopped;
            if let Err(e) = run_hooks("poststop", h.poststop().as_deref(), &st) {
                warn(e.to_string());
            }
        }
        let dir = self.dir(id);
        fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }

    fn kill_and_wait(&self, rec: &Record) -> Result<(), OciError> {
        if let Ok(cg) = rec.cgroup() {
            let _ = cg.kill_all(libc::SIGKILL);
        }
        // SAFETY: kill takes integers; the PID was checked to be the init.
        unsafe { libc::kill(rec.state.pid, libc::SIGKILL) };
        let deadline = Instant::now() + KILL_TIMEOUT;
        while rec.alive() {
            if Instant::now() > deadline {
                return Err(rec.wrong(format!(
                    "the init (PID {}) did not die after SIGKILL",
                    rec.state.pid
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// `pause`: freezes every process of a running container.
    pub fn pause(&self, id: &str) -> Result<(), OciError> {
        let mut rec = self.load(id)?;
        match rec.status() {
            Status::Running | Status::Created => {}
            Status::Paused => return Err(rec.wrong("container already paused")),
            Status::Stopped => return Err(rec.wrong("container not running")),
        }
        rec.cgroup()?.freeze().map_err(|source| OciError::Cgroup {
            id: id.to_string(),
            source,
        })?;
        rec.state.status = Status::Paused;
        self.save(&rec)
    }

    /// `resume`: thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<(), OciError> {
        let mut rec = self.load(id)?;
        if rec.status() != Status::Paused {
            return Err(rec.wrong("container not paused"));
        }
        rec.cgroup()?.thaw().map_err(|source| OciError::Cgroup {
            id: id.to_string(),
            source,
        })?;
        rec.state.status = if self.dir(id).join("exec.fifo").exists() {
            Status::Created
        } else {
            Status::Running
        };
        self.save(&rec)
    }

    /// `ps`: the PIDs of the container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>, OciError> {
        let rec = self.load(id)?;
        if rec.status() == Status::Stopped {
            return Ok(Vec::new());
        }
        rec.cgroup()?.pids().map_err(|source| OciError::Cgroup {
            id: id.to_string(),
            source,
        })
    }

    /// The spec the container was created with.
    pub fn spec(&self, id: &str) -> Result<Spec, OciError> {
        let p = self.dir(id).join("config.json");
        if !p.exists() {
            self.load(id)?;
        }
        Spec::load(&p).map_err(|e| OciError::Config {
            path: p,
            detail: e.to_string(),
        })
    }

    /// Reads an `exec --process` file (a runtime-spec `process` object).
    pub fn read_process(path: &Path) -> Result<Process, OciError> {
        let text = fs::read(path).map_err(io_err(path))?;
        serde_json::from_slice(&text).map_err(|e| OciError::Config {
            path: path.into(),
            detail: e.to_string(),
        })
    }

    /// The process `exec ID COMMAND…` runs: the container's own process
    /// (environment, user, capabilities, rlimits) with the flags applied.
    pub fn exec_process(&self, id: &str, o: ProcessOverrides) -> Result<Process, OciError> {
        let spec = self.spec(id)?;
        let mut p = spec.process().clone().unwrap_or_default();
        if o.args.is_empty() {
            return Err(OciError::Unsupported(
                "exec needs a command (or --process)".into(),
            ));
        }
        p.set_args(Some(o.args));
        let mut env = p.env().clone().unwrap_or_default();
        for e in o.env {
            let key = e.split('=').next().unwrap_or("").to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            env.push(e);
        }
        p.set_env(Some(env));
        if let Some(c) = o.cwd {
            p.set_cwd(c);
        }
        let mut user = p.user().clone();
        if let Some(u) = o.user {
            let (uid, gid) = u.split_once(':').unwrap_or((&u, "0"));
            let parse = |s: &str| {
                s.parse::<u32>().map_err(|_| {
                    OciError::Unsupported(format!(
                        "--user {u:?}: only numeric UID[:GID] is supported"
                    ))
                })
            };
            user.set_uid(parse(uid)?);
            user.set_gid(parse(gid)?);
        }
        if !o.additional_gids.is_empty() {
            user.set_additional_gids(Some(o.additional_gids));
        }
        p.set_user(user);
        p.set_terminal(Some(o.tty));
        if o.no_new_privs {
            p.set_no_new_privileges(Some(true));
        }
        if !o.caps.is_empty() {
            let mut caps = p.capabilities().clone().unwrap_or_default();
            let add = |set: Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.unwrap_or_default();
                for c in &o.caps {
                    let name = if c.starts_with("CAP_") {
                        c.clone()
                    } else {
                        format!("CAP_{c}")
                    };
                    if let Ok(cap) = name.parse() {
                        set.insert(cap);
                    }
                }
                Some(set)
            };
            caps.set_bounding(add(caps.bounding().clone()));
            caps.set_effective(add(caps.effective().clone()));
            caps.set_permitted(add(caps.permitted().clone()));
            p.set_capabilities(Some(caps));
        }
        Ok(p)
    }

    /// `exec`: starts a process in a created or running container and
    /// returns its PID. The caller must be single-threaded; it becomes the
    /// process's reaper (a subreaper), so it can wait for it.
    pub fn exec(
        &self,
        id: &str,
        mut o: ExecOptions,
        warn: &mut dyn FnMut(String),
    ) -> Result<i32, OciError> {
        let rec = self.load(id)?;
        trim_ambient(&mut o.process, warn);
        match rec.status() {
            Status::Created | Status::Running => {}
            Status::Paused if o.ignore_paused => {}
            Status::Paused => {
                return Err(rec
                    .wrong("cannot exec in a paused container (use --ignore-paused to override)"));
            }
            Status::Stopped => return Err(rec.wrong("cannot exec in a stopped container")),
        }
        let mut spec = self.spec(id)?;
        first_rule_wins(&mut spec);
        let terminal = o.process.terminal().unwrap_or(false);
        match (terminal, &o.console_socket) {
            (true, None) => {
                return Err(OciError::Unsupported(
                    "process.terminal is true but no --console-socket was given".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(OciError::Unsupported(
                    "--console-socket was given but process.terminal is false".into(),
                ));
            }
            _ => {}
        }
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(s) => Some(
                crate::seccomp::compile(s)
                    .map_err(|e| StartError::Setup(format!("seccomp: {e}")))?,
            ),
            None => None,
        };
        let mut stdio: [Option<OwnedFd>; 3] = [None, None, None];
        if let Some(sock) = &o.console_socket {
            // The container's own devpts instance, reached through its root.
            let ptmx = PathBuf::from(format!("/proc/{}/root/dev/pts/ptmx", rec.state.pid));
            let (master, slave, name) = open_pty(&ptmx).map_err(io_err(&ptmx))?;
            if let Some(size) = o.process.console_size() {
                let _ = set_size(&slave, size.height() as u16, size.width() as u16);
            }
            let _ = rustix::fs::fchown(
                &slave,
                Some(rustix::process::Uid::from_raw(o.process.user().uid())),
                None,
            );
            send_fd(sock, name.as_bytes(), &master).map_err(io_err("--console-socket"))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(io_err(&ptmx));
            stdio = [Some(dup(&slave)?), Some(dup(&slave)?), Some(slave)];
        }
        let cg = rec.cgroup()?;
        let pid = super::exec::exec(
            rec.state.pid,
            &o.process,
            seccomp.as_ref(),
            &mut |p| cg.add_process(p).map_err(|e| e.to_string()),
            stdio,
        )?;
        if let Some(p) = &o.pid_file {
            write_atomic(p, pid.to_string().as_bytes(), 0o644)?;
        }
        Ok(pid)
    }
}

/// Undoes a half-done `create` when dropped.
struct Undo {
    dir: Option<PathBuf>,
    cgroup: Option<(Vec<CgroupBase>, String, bool)>,
    pid: Option<i32>,
}

impl Undo {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some((base, rel, default_parent)) = &self.cgroup
            && let Ok(cg) = cgroup_manager(base, rel)
        {
            let _ = cg.remove();
            if *default_parent {
                prune_parents(cg.as_ref());
            }
        }
        if let Some(d) = &self.dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Removes the (default) parent directories of a removed cgroup if empty.
fn prune_parents(cg: &dyn CgroupManager) {
    for p in cg.paths() {
        if let Some(parent) = p.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// runc's ID rule: `^[\w+\-.]+$`, and not `.` or `..`.
pub fn check_id(id: &str) -> Result<(), OciError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidId(id.to_string()))
    }
}

/// What berth's runtime refuses in a spec, with the reason.
fn check_supported(spec: &Spec) -> Result<(), String> {
    if let Some(h) = spec.hooks() {
        for (name, hooks) in [
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
        ] {
            if hooks.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(format!(
                    "hooks.{name} (run inside the container) is not supported by berth-runtime"
                ));
            }
        }
    }
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
    {
        if ns.typ() == LinuxNamespaceType::User {
            return Err("user namespaces (ID mappings) are not supported by berth-runtime".into());
        }
        if ns.path().is_some() && !joinable(ns.typ()) {
            return Err(format!(
                "joining an existing {:?} namespace by path is not supported",
                ns.typ()
            ));
        }
    }
    Ok(())
}

/// (path, whether it starts at the hierarchies' roots, whether it is the
/// default `berth-runtime/<id>`) for `linux.cgroupsPath`. As runc: an
/// absolute path starts at each hierarchy's root, a relative one at the
/// caller's own cgroup.
fn cgroup_location(id: &str, path: Option<&str>) -> Result<(String, bool, bool), String> {
    let Some(path) = path.filter(|p| !p.trim_matches('/').is_empty()) else {
        return Ok((format!("{DEFAULT_CGROUP_PARENT}/{id}"), false, true));
    };
    if path.contains(':') {
        return Err(format!(
            "linux.cgroupsPath {path:?} is a systemd unit path (slice:prefix:name); \
             berth-runtime only has the cgroupfs driver (no --systemd-cgroup)"
        ));
    }
    let rel = cgroups::parse::check_rel_path(path, false)
        .map_err(|e| format!("linux.cgroupsPath {path:?}: {e}"))?;
    Ok((rel, path.starts_with('/'), false))
}

/// The spec's resources plus runc's default device rules: mknod of anything,
/// the standard /dev nodes, ptys and tun, then every `linux.devices` node.
fn resources(spec: &Spec) -> LinuxResources {
    let linux = spec.linux().as_ref();
    let mut r = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access(access.to_string());
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("every field set")
    };
    let mut devs: Vec<LinuxDeviceCgroup> = r.devices().clone().unwrap_or_default();
    if devs.is_empty() {
        // Nothing denied: the cgroup inherits its parent's rules.
        return r;
    }
    use LinuxDeviceType::{B, C};
    devs.push(rule(C, None, None, "m"));
    devs.push(rule(B, None, None, "m"));
    for (maj, min) in [
        (1, 3),
        (1, 8),
        (1, 7),
        (5, 0),
        (1, 5),
        (1, 9),
        (5, 2),
        (10, 200),
    ] {
        devs.push(rule(C, Some(maj), Some(min), "rwm"));
    }
    devs.push(rule(C, Some(136), None, "rwm"));
    for d in linux.and_then(|l| l.devices().clone()).unwrap_or_default() {
        if matches!(d.typ(), LinuxDeviceType::P) {
            continue;
        }
        devs.push(rule(d.typ(), Some(d.major()), Some(d.minor()), "rwm"));
    }
    r.set_devices(Some(devs));
    r
}

/// Replaces each `cgroup` mount with mounts this host can do (see the module
/// documentation): a `cgroup` file system cannot be mounted again on a v1
/// host, and should show only the container's own cgroup.
fn rewrite_cgroup_mounts(spec: &mut Spec, cg: &dyn CgroupManager) -> Result<(), CgroupError> {
    let Some(mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    if !mounts.iter().any(|m| m.typ().as_deref() == Some("cgroup")) {
        return Ok(());
    }
    let unified = crate::host::cgroups().mode == crate::host::CgroupMode::Unified;
    let own = cgroups::own_cgroup_paths()?;
    let ours = cg.paths();
    let mut out = Vec::new();
    for m in mounts {
        if m.typ().as_deref() != Some("cgroup") {
            out.push(m);
            continue;
        }
        let opts = m.options().clone().unwrap_or_default();
        let keep: Vec<String> = opts
            .iter()
            .filter(|o| matches!(o.as_str(), "ro" | "nosuid" | "noexec" | "nodev"))
            .cloned()
            .collect();
        let bind = |dest: PathBuf, src: &Path| -> Mount {
            let mut o = vec!["bind".to_string()];
            o.extend(keep.iter().cloned());
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(src)
                .options(o)
                .build()
                .expect("every field set")
        };
        if unified {
            let src = ours
                .first()
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
            out.push(bind(m.destination().clone(), &src));
            continue;
        }
        out.push(
            MountBuilder::default()
                .destination(m.destination().clone())
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec![
                    "nosuid".to_string(),
                    "noexec".into(),
                    "nodev".into(),
                    "mode=755".into(),
                ])
                .build()
                .expect("every field set"),
        );
        let mut seen = Vec::new();
        for h in own.iter().filter(|h| h.version == 1) {
            if seen.contains(&h.mount_point) {
                continue;
            }
            seen.push(h.mount_point.clone());
            let Some(name) = h.mount_point.file_name() else {
                continue;
            };
            let src = ours
                .iter()
                .find(|p| p.starts_with(&h.mount_point))
                .cloned()
                .unwrap_or_else(|| h.dir.clone());
            out.push(bind(m.destination().join(name), &src));
        }
    }
    spec.set_mounts(Some(out));
    Ok(())
}

/// runc's profiles are written for libseccomp, which keeps the *first*
/// unconditional rule for a syscall and silently ignores later ones (podman's
/// default profile allows `setns`, `sethostname` … early and lists them again
/// under EPERM further down). berth's compiler refuses such conflicts, so
/// they are resolved here the way libseccomp resolves them.
fn first_rule_wins(spec: &mut Spec) {
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let Some(mut seccomp) = linux.seccomp().clone() else {
        return;
    };
    let Some(rules) = seccomp.syscalls().clone() else {
        return;
    };
    let mut first: BTreeMap<String, (String, Option<u32>)> = BTreeMap::new();
    let mut out = Vec::new();
    for mut r in rules {
        if r.args().as_ref().is_some_and(|a| !a.is_empty()) {
            out.push(r);
            continue;
        }
        let action = (format!("{:?}", r.action()), r.errno_ret());
        let names: Vec<String> = r
            .names()
            .iter()
            .filter(|n| match first.get(*n) {
                Some(a) => *a == action,
                None => {
                    first.insert((*n).clone(), action.clone());
                    true
                }
            })
            .cloned()
            .collect();
        if names.is_empty() {
            continue;
        }
        r.set_names(names);
        out.push(r);
    }
    seccomp.set_syscalls(Some(out));
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
}

/// The kernel raises an ambient capability only if it is permitted and
/// inheritable; runc warns about the others and goes on (`runc spec` asks
/// for ambient capabilities without inheritable ones), so berth does too.
pub fn trim_ambient(process: &mut Process, warn: &mut dyn FnMut(String)) {
    let Some(mut caps) = process.capabilities().clone() else {
        return;
    };
    let Some(ambient) = caps.ambient().clone() else {
        return;
    };
    fn has(
        set: &Option<oci_spec::runtime::Capabilities>,
        c: &oci_spec::runtime::Capability,
    ) -> bool {
        set.as_ref().is_some_and(|s| s.contains(c))
    }
    let (keep, drop): (Vec<_>, Vec<_>) = ambient
        .into_iter()
        .partition(|c| has(caps.inheritable(), c) && has(caps.permitted(), c));
    if drop.is_empty() {
        return;
    }
    let mut names: Vec<String> = drop.iter().map(|c| format!("CAP_{c}")).collect();
    names.sort();
    warn(format!(
        "ambient capabilities not raised (not permitted and inheritable): {}",
        names.join(", ")
    ));
    caps.set_ambient(Some(keep.into_iter().collect()));
    process.set_capabilities(Some(caps));
}

/// Runs hooks in order with the state on stdin; the first failure is the error.
fn run_hooks(kind: &str, hooks: Option<&[Hook]>, state: &State) -> Result<(), OciError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let json = serde_json::to_vec(state).unwrap_or_default();
    for h in hooks.unwrap_or_default() {
        let fail = |detail: String| OciError::Hook {
            kind: kind.into(),
            path: h.path().clone(),
            detail,
        };
        let args = h.args().clone().unwrap_or_default();
        let mut c = Command::new(h.path());
        if let Some((a0, rest)) = args.split_first() {
            c.arg0(a0).args(rest);
        }
        c.env_clear();
        for e in h.env().iter().flatten() {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            c.env(k, v);
        }
        let errfile = tempfile::tempfile().map_err(|e| fail(e.to_string()))?;
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(errfile.try_clone().map_err(|e| fail(e.to_string()))?);
        let mut child = c.spawn().map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&json);
        }
        let deadline = h
            .timeout()
            .filter(|t| *t > 0)
            .map(|t| Instant::now() + Duration::from_secs(t as u64));
        let status = loop {
            match child.try_wait().map_err(|e| fail(e.to_string()))? {
                Some(s) => break s,
                None if deadline.is_some_and(|d| Instant::now() > d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {}s",
                        h.timeout().unwrap_or(0)
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        if !status.success() {
            let mut msg = String::new();
            let mut f = errfile;
            use std::io::Seek;
            let _ = f.seek(io::SeekFrom::Start(0));
            let _ = f.take(4096).read_to_string(&mut msg);
            return Err(fail(format!("{status}: {}", msg.trim())));
        }
    }
    Ok(())
}

/// The features document (runtime-spec `features.md`).
pub fn features() -> serde_json::Value {
    use serde_json::json;
    let mount_options = [
        "async",
        "atime",
        "bind",
        "defaults",
        "dev",
        "diratime",
        "exec",
        "noatime",
        "nodev",
        "nodiratime",
        "noexec",
        "norelatime",
        "nostrictatime",
        "nosuid",
        "private",
        "rbind",
        "relatime",
        "ro",
        "rprivate",
        "rshared",
        "rslave",
        "runbindable",
        "rw",
        "shared",
        "slave",
        "strictatime",
        "suid",
        "sync",
        "unbindable",
    ];
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": mount_options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts", "time"],
            "capabilities": super::caps::ALL,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false
            },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X86_64"],
                "knownFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
                ],
                "supportedFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
                ]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "io.github.berth.version": env!("CARGO_PKG_VERSION"),
            "org.opencontainers.runc.checkpoint.enabled": "false"
        }
    })
}

// ---------------------------------------------------------------------------
// Small helpers

fn absolute(p: &Path) -> Result<PathBuf, OciError> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_err(io_err(p))?.join(p)
    };
    fs::canonicalize(&abs).map_err(io_err(abs))
}

/// Writes a file through a temporary file and a rename.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), OciError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(path))?;
    tmp.write_all(data).map_err(io_err(path))?;
    let _ = tmp
        .as_file()
        .set_permissions(fs::Permissions::from_mode(mode));
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}

/// The user owning `path`, by name when /etc/passwd knows it.
fn owner_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = fs::metadata(path).map(|m| m.uid()) else {
        return String::new();
    };
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// Now as RFC 3339 with nanoseconds, UTC.
fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ids() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            cgroup_location("c1", None).unwrap(),
            ("berth-runtime/c1".into(), false, true)
        );
        assert_eq!(
            cgroup_location("c1", Some("/libpod_parent/libpod-c1")).unwrap(),
            ("libpod_parent/libpod-c1".into(), true, false)
        );
        assert_eq!(
            cgroup_location("c1", Some("mine/c1")).unwrap(),
            ("mine/c1".into(), false, false)
        );
        assert!(cgroup_location("c1", Some("system.slice:berth:c1")).is_err());
        assert!(cgroup_location("c1", Some("a/../b")).is_err());
    }

    #[test]
    fn fd_passing() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = std::io::pipe().unwrap();
        send_fd(&a, b"/dev/pts/7", &w).unwrap();
        drop(w);
        let (fd, msg) = recv_fd(&b).unwrap();
        assert_eq!(msg, b"/dev/pts/7");
        let mut w2 = std::fs::File::from(fd);
        w2.write_all(b"x").unwrap();
        drop(w2);
        let mut s = String::new();
        let mut r = r;
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "x");
    }

    #[test]
    fn time_format() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2024-01-02T03:04:05.123456789Z".len(), "{t}");
        assert!(t.starts_with("20"), "{t}");
    }

    #[test]
    fn default_device_rules_follow_a_deny() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .unwrap();
        let r = resources(&spec);
        let d = r.devices().clone().unwrap();
        assert!(!d[0].allow());
        assert!(d.len() > 5);
        assert!(d[1..].iter().all(|x| x.allow()));
        let none: Spec =
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).unwrap();
        assert!(resources(&none).devices().is_none());
    }
}
