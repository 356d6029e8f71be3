//! cgroups v1 and v2 behind one interface.
//!
//! [`manager`] picks the implementation from the host's mount layout
//! ([`crate::host::cgroups`]): a unified (v2-only) host gets [`v2`]; a hybrid
//! or legacy host gets [`v1`], which uses the v1 controller hierarchies (a
//! hybrid host's v2 mount carries no controllers).
//!
//! **Where cgroups go.** Always *below* the cgroup this process is already in
//! (read from `/proc/self/cgroup`, per hierarchy on v1 — the memory hierarchy
//! may say `/process_api/xyz` while the others say `/`), never at a hierarchy
//! root and never beside it: `<own cgroup>/<parent>/<name>`, where the parent
//! defaults to `berth` and may be set like Docker's `--cgroup-parent`
//! (relative to the own cgroup; a leading `/` is ignored, `..` refused).
//!
//! **Lifecycle.** [`CgroupManager::create`] makes the directories,
//! [`CgroupManager::apply`] writes an OCI [`LinuxResources`],
//! [`CgroupManager::add_process`] moves a process in, and
//! [`CgroupManager::remove`] deletes the cgroup again (and the default `berth`
//! parent when it became empty; a caller's own `--cgroup-parent` is left alone
//! because it may carry limits of its own).
//!
//! **What `apply` sets.** Memory (limit, reservation, memory+swap, swappiness
//! and OOM-killer disabling on v1), CPU (shares/weight, quota/period, burst,
//! idle, cpuset cpus/mems), pids, device rules on v1 (`devices.allow` /
//! `devices.deny`), and on v2 the raw `unified` map. Not applied yet: device
//! rules on v2 (they need an eBPF program attached to the cgroup, which this
//! module does not build — so on v2 they are ignored, not enforced), block
//! I/O, huge pages, network classes and RDMA. Kernel-memory limits are
//! obsolete and ignored; v1-only knobs (swappiness, OOM-killer disabling)
//! are ignored on v2, which has no such files.
//!
//! All parsing lives in [`parse`] as pure functions with unit tests on sample
//! files of both versions.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use serde::Serialize;

use crate::host::{self, CgroupMode};

pub mod parse;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod tests;

pub use parse::Hierarchy;

/// The parent used when [`CgroupConfig::parent`] is `None`.
pub const DEFAULT_PARENT: &str = "berth";

/// How long `freeze`/`thaw` wait for the kernel to report the new state.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `remove` keeps retrying while exiting processes keep a cgroup busy.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cgroup to manage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupConfig {
    /// The cgroup's own name, one path component (usually the container ID).
    pub name: String,
    /// Path between the own cgroup and `name` (Docker's `--cgroup-parent`),
    /// relative to this process's cgroup; [`DEFAULT_PARENT`] when `None`.
    pub parent: Option<String>,
}

impl CgroupConfig {
    /// A config with the default parent.
    pub fn new(name: impl Into<String>) -> Self {
        CgroupConfig {
            name: name.into(),
            parent: None,
        }
    }

    /// The cgroup's path relative to the own cgroup (`berth/<name>`),
    /// validated.
    pub fn relative_path(&self) -> Result<String, CgroupError> {
        let name =
            parse::check_rel_path(&self.name, true).map_err(|reason| CgroupError::InvalidName {
                value: self.name.clone(),
                reason,
            })?;
        let parent = match &self.parent {
            None => DEFAULT_PARENT.to_string(),
            Some(p) => {
                parse::check_rel_path(p, false).map_err(|reason| CgroupError::InvalidName {
                    value: p.clone(),
                    reason,
                })?
            }
        };
        Ok(format!("{parent}/{name}"))
    }

    /// How many parent levels `remove` may delete when empty: the default
    /// parent only.
    fn prunable_parents(&self) -> usize {
        usize::from(self.parent.is_none())
    }
}

/// One cgroup, in every hierarchy it needs, created below the own cgroup.
///
/// Methods may be called in any order; those that read or write files report
/// the file at fault. Implementations hold no open files, so a manager can be
/// rebuilt at any time from the same [`CgroupConfig`] (for example by a later
/// `berth` process managing a running container).
pub trait CgroupManager: Send + Sync {
    /// 1 or 2.
    fn version(&self) -> u8;

    /// Creates the cgroup's directory in every hierarchy used (and the parents
    /// up from the own cgroup), preparing them as the version requires (v1
    /// cpuset: copy `cpuset.cpus`/`cpuset.mems` down; v2: enable controllers
    /// in each parent's `cgroup.subtree_control`). Existing directories are fine.
    fn create(&self) -> Result<(), CgroupError>;

    /// Writes the limits in `r`. Memory+swap is OCI's total (Docker's
    /// `--memory-swap`; -1 unlimited); CPU shares become a v2 weight by
    /// runc's formula. A limit the kernel refuses, or one below current usage,
    /// is an error naming the file and the value.
    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError>;

    /// Moves process `pid` (all its threads) into the cgroup in every hierarchy.
    fn add_process(&self, pid: i32) -> Result<(), CgroupError>;

    /// Processes in the cgroup and its descendants, sorted.
    fn pids(&self) -> Result<Vec<i32>, CgroupError>;

    /// Freezes every process and returns once the kernel says they are frozen.
    fn freeze(&self) -> Result<(), CgroupError>;

    /// Thaws the cgroup and returns once the kernel says it is thawed.
    fn thaw(&self) -> Result<(), CgroupError>;

    /// Usage and limits, per controller present.
    fn stats(&self) -> Result<Stats, CgroupError>;

    /// Sends `signal` to every process in the cgroup (v2 SIGKILL: one write to
    /// `cgroup.kill`; otherwise freeze, signal each, thaw, so no process can
    /// fork away from the signal). Processes already gone are not an error.
    fn kill_all(&self, signal: i32) -> Result<(), CgroupError>;

    /// Removes the cgroup (and cgroups created below it) everywhere, retrying
    /// for up to [`REMOVE_TIMEOUT`] while exiting processes keep it busy.
    /// A cgroup that does not exist is fine.
    fn remove(&self) -> Result<(), CgroupError>;

    /// The cgroup's directory in each hierarchy used.
    fn paths(&self) -> Vec<PathBuf>;
}

/// Builds the manager for this host: v2 on a unified host, v1 otherwise.
pub fn manager(cfg: &CgroupConfig) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let rel = cfg.relative_path()?;
    let own = own_cgroup_paths()?;
    match host::cgroups().mode {
        CgroupMode::Unified => {
            let h = own.iter().find(|h| h.version == 2).ok_or_else(|| {
                CgroupError::NotAvailable("no cgroup2 entry in /proc/self/cgroup".into())
            })?;
            Ok(Box::new(v2::V2Manager::new(
                h.dir.clone(),
                &rel,
                cfg.prunable_parents(),
            )))
        }
        CgroupMode::Hybrid | CgroupMode::Legacy => Ok(Box::new(v1::V1Manager::new(
            &own,
            &rel,
            cfg.prunable_parents(),
        )?)),
        CgroupMode::None => Err(CgroupError::NotAvailable(
            "no cgroup file system is mounted".into(),
        )),
    }
}

/// Where this process is, per hierarchy: `/proc/self/cgroup` joined with the
/// cgroup mounts of `/proc/self/mountinfo`.
pub fn own_cgroup_paths() -> Result<Vec<Hierarchy>, CgroupError> {
    let proc_cgroup = Path::new("/proc/self/cgroup");
    let entries =
        parse::parse_proc_cgroup(&read(proc_cgroup)?).map_err(|detail| CgroupError::Parse {
            path: proc_cgroup.into(),
            detail,
        })?;
    let mounts = parse::parse_cgroup_mounts(&read(Path::new("/proc/self/mountinfo"))?);
    Ok(parse::resolve_hierarchies(&entries, &mounts))
}

/// Usage and limits of one cgroup. A section is `None` when its controller
/// is not available. Limits are `None` when unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Memory controller.
    pub memory: Option<MemoryStats>,
    /// CPU controllers (v1 `cpu` + `cpuacct`; v2 `cpu`).
    pub cpu: Option<CpuStats>,
    /// Pids controller.
    pub pids: Option<PidsStats>,
}

/// Memory usage in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Current usage (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage: u64,
    /// Memory limit.
    pub limit: Option<u64>,
    /// Peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`, Linux
    /// 5.19+; `None` where the kernel does not keep it).
    pub max_usage: Option<u64>,
    /// Page cache (v1 `total_cache`, v2 `file` of `memory.stat`).
    pub cache: u64,
    /// Swap in use; `None` when swap is not accounted.
    pub swap_usage: Option<u64>,
    /// Memory+swap limit, OCI's `swap` / Docker's `--memory-swap`
    /// (v1 `memory.memsw.limit_in_bytes`, v2 `memory.max` + `memory.swap.max`).
    /// `None` when unlimited or when swap is not accounted.
    pub memory_swap_limit: Option<u64>,
    /// Processes the OOM killer killed in this cgroup (v1 `memory.oom_control`
    /// `oom_kill`, Linux 4.13+; v2 `memory.events` `oom_kill`).
    pub oom_kills: u64,
}

/// CPU time in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    /// Total CPU time used.
    pub usage_ns: u64,
    /// In user mode.
    pub user_ns: u64,
    /// In kernel mode.
    pub system_ns: u64,
    /// Enforcement periods that elapsed with a quota set.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Total time throttled.
    pub throttled_ns: u64,
    /// Quota per period in µs; `None` when unlimited.
    pub quota_us: Option<u64>,
    /// Period in µs.
    pub period_us: Option<u64>,
}

/// Process counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PidsStats {
    /// Processes and threads in the cgroup.
    pub current: u64,
    /// Limit.
    pub limit: Option<u64>,
}

/// Errors, each naming the path (file or directory) at fault.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// cgroups cannot be used on this host.
    #[error("cgroups are not available: {0}")]
    NotAvailable(String),
    /// A name or parent that is not a safe relative cgroup path.
    #[error("invalid cgroup path {value:?}: {reason}")]
    InvalidName {
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Reading a file failed.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing a value failed (the kernel refused it).
    #[error("writing {value:?} to {}: {source}{hint}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        source: io::Error,
        /// Extra explanation, starting with "; ", or empty.
        hint: String,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {}: {source}{hint}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
        /// Extra explanation, starting with "; ", or empty.
        hint: String,
    },
    /// Removing a cgroup directory failed.
    #[error("removing cgroup {}: {source}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file's content did not parse.
    #[error("parsing {}: {detail}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A memory limit below what the cgroup already uses.
    #[error(
        "{}: memory limit {limit} is below the current usage of {usage} bytes, \
         which the kernel could not reclaim",
        path.display()
    )]
    BelowUsage {
        /// The limit file.
        path: PathBuf,
        /// The limit asked for.
        limit: i64,
        /// Current usage.
        usage: u64,
    },
    /// Resource values that contradict each other or the version.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file the value was meant for.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A controller the operation needs has no hierarchy (v1) or is not
    /// enabled (v2).
    #[error("cgroup controller {controller:?} is not available below {} (needed for {what})", path.display())]
    MissingController {
        /// The controller.
        controller: String,
        /// What needed it.
        what: String,
        /// The cgroup (or own cgroup) where it is missing.
        path: PathBuf,
    },
    /// The kernel did not reach a state in time.
    #[error("{}: timed out waiting for {what}", path.display())]
    Timeout {
        /// The state file.
        path: PathBuf,
        /// The awaited state.
        what: String,
    },
    /// A signal number that is not a signal.
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
    /// Signalling a process failed (other than it being gone already).
    #[error("sending signal {signal} to process {pid} (in {}): {source}", path.display())]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: i32,
        /// The cgroup it was found in.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------
// File helpers shared by v1 and v2.

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })
}

/// Reads a file that may be absent (an optional kernel feature).
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// Runs a parser on a file's text, naming the file on failure.
pub(crate) fn parse_file<T>(
    path: &Path,
    text: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, CgroupError> {
    f(text).map_err(|detail| CgroupError::Parse {
        path: path.into(),
        detail,
    })
}

pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_file(path, &read(path)?, parse::parse_u64)
}

pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?
        .map(|t| parse_file(path, &t, parse::parse_u64))
        .transpose()
}

pub(crate) fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    parse_file(path, &read(path)?, parse::parse_limit)
}

pub(crate) fn read_keyed(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(parse::parse_flat_keyed(&read(path)?))
}

pub(crate) fn read_keyed_opt(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(read_opt(path)?
        .map(|t| parse::parse_flat_keyed(&t))
        .unwrap_or_default())
}

/// Writes `value` to an existing file in one `write(2)` (cgroup files take a
/// value per write). Never creates the file: a missing cgroup file is ENOENT.
pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// [`write_raw`] with the error naming file and value.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| write_error(path, value, source, ""))
}

pub(crate) fn write_error(path: &Path, value: &str, source: io::Error, hint: &str) -> CgroupError {
    CgroupError::Write {
        path: path.into(),
        value: value.into(),
        source,
        hint: if hint.is_empty() {
            String::new()
        } else {
            format!("; {hint}")
        },
    }
}

/// Pids in `dir`'s `cgroup.procs` and in every cgroup below it.
pub(crate) fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let Some(text) = read_opt(&procs)? else {
        return Ok(()); // removed meanwhile
    };
    out.extend(parse_file(&procs, &text, parse::parse_pids)?);
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

/// Child cgroups of `dir` (none if `dir` is gone).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.into(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.into(),
            source,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Removes a cgroup directory and the cgroups below it, deepest first,
/// retrying `EBUSY` (processes still exiting) until `deadline`. Absent is fine.
pub(crate) fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for sub in subdirs(dir)? {
        remove_tree(&sub, deadline)?;
    }
    let mut delay = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.into(),
                    source,
                });
            }
        }
    }
}

/// Removes up to `levels` parents of `dir` that are empty, stopping at the
/// first that is not (another container's cgroup is still there).
pub(crate) fn prune_parents(dir: &Path, levels: usize) {
    let mut cur = dir.parent();
    for _ in 0..levels {
        let Some(p) = cur else { return };
        if std::fs::remove_dir(p).is_err() {
            return;
        }
        cur = p.parent();
    }
}

/// Makes `dir` and its missing parents below `own` (which must exist),
/// calling `prepare` on every level after it exists (also levels that already
/// existed, so a level a concurrent creator has not prepared yet is prepared
/// here). A parent removed concurrently by `prune_parents` is re-created.
pub(crate) fn create_levels(
    own: &Path,
    rel: &str,
    mut prepare: impl FnMut(&Path, &Path, bool) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    if !own.is_dir() {
        return Err(CgroupError::Create {
            path: own.into(),
            source: io::Error::from(io::ErrorKind::NotFound),
            hint: "; the process's own cgroup is not visible".into(),
        });
    }
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut attempt = 0;
    'attempt: loop {
        attempt += 1;
        let retry = attempt < 10;
        let mut parent = own.to_path_buf();
        for (i, c) in comps.iter().enumerate() {
            let dir = parent.join(c);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && retry => {
                    continue 'attempt; // a parent was pruned meanwhile
                }
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: dir,
                        source,
                        hint: String::new(),
                    });
                }
            }
            match prepare(&parent, &dir, i + 1 == comps.len()) {
                // The level was pruned between mkdir and prepare (its files
                // then fail with ENOENT, or ENODEV while the kernel removes
                // it; another creator may even have made it anew): start again.
                Err(e) if retry && vanished(&e) => continue 'attempt,
                r => r?,
            }
            parent = dir;
        }
        return Ok(());
    }
}

/// Whether an error says the cgroup directory went away under us.
fn vanished(e: &CgroupError) -> bool {
    match e {
        CgroupError::Read { source, .. } | CgroupError::Write { source, .. } => {
            source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ENODEV)
        }
        _ => false,
    }
}

/// Polls `done` until it says yes or `timeout` passes.
pub(crate) fn wait_for(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_micros(100);
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Checks a signal number: a named signal, or a real-time one in the range
/// the C library leaves to applications.
pub(crate) fn to_signal(sig: i32) -> Result<rustix::process::Signal, CgroupError> {
    if let Some(s) = rustix::process::Signal::from_named_raw(sig) {
        return Ok(s);
    }
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) {
        // SAFETY: `sig` is non-zero and within [SIGRTMIN, SIGRTMAX] as the C
        // library reports them, so it is a valid signal and not one of the
        // libc-reserved real-time signals below SIGRTMIN.
        return Ok(unsafe { rustix::process::Signal::from_raw_unchecked(sig) });
    }
    Err(CgroupError::InvalidSignal(sig))
}

/// Signals each pid; a process already gone (`ESRCH`) is fine.
pub(crate) fn signal_pids(dir: &Path, pids: &[i32], signal: i32) -> Result<(), CgroupError> {
    let sig = to_signal(signal)?;
    let mut first_err = None;
    for &pid in pids {
        let Some(p) = rustix::process::Pid::from_raw(pid) else {
            continue;
        };
        match rustix::process::kill_process(p, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                first_err.get_or_insert(CgroupError::Signal {
                    pid,
                    signal,
                    path: dir.into(),
                    source: e.into(),
                });
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The memory limit an OCI resource set asks for, `None`/0 = unset.
pub(crate) fn mem_value(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}
