//! cgroup v1: one directory per controller hierarchy (`cpu` and `cpuacct` may
//! share one), each below this process's own cgroup *in that hierarchy*.

use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::{
    CgroupError, CgroupManager, CpuStats, FREEZE_TIMEOUT, Hierarchy, MemoryStats, PidsStats,
    REMOVE_TIMEOUT, Stats, collect_pids, create_levels, mem_value, parse, parse_file,
    prune_parents, read, read_keyed, read_keyed_opt, read_limit, read_opt, read_u64, read_u64_opt,
    remove_tree, signal_pids, write, write_error, write_raw,
};

/// The v1 controllers berth joins.
pub const CONTROLLERS: &[&str] = &[
    "cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "pids", "blkio",
];

/// One hierarchy as this manager uses it.
#[derive(Clone, Debug)]
struct Used {
    controllers: Vec<String>,
    /// The own cgroup in this hierarchy.
    own: PathBuf,
    /// The managed cgroup.
    dir: PathBuf,
}

/// cgroup v1 manager.
#[derive(Clone, Debug)]
pub struct V1Manager {
    used: Vec<Used>,
    rel: String,
    prune: usize,
}

impl V1Manager {
    /// A manager for cgroup `rel` (`<parent>/<name>`) below the own cgroup of
    /// every v1 hierarchy in `own` that carries one of [`CONTROLLERS`].
    /// `prune` parent levels are removed by `remove` when empty.
    pub fn new(own: &[Hierarchy], rel: &str, prune: usize) -> Result<Self, CgroupError> {
        let mut used: Vec<Used> = Vec::new();
        for h in own.iter().filter(|h| h.version == 1) {
            if !h
                .controllers
                .iter()
                .any(|c| CONTROLLERS.contains(&c.as_str()))
            {
                continue;
            }
            if used.iter().any(|u| u.own == h.dir) {
                continue;
            }
            used.push(Used {
                controllers: h.controllers.clone(),
                own: h.dir.clone(),
                dir: parse::join_rel(&h.dir, rel),
            });
        }
        if used.is_empty() {
            return Err(CgroupError::NotAvailable(
                "no cgroup v1 controller hierarchy is mounted".into(),
            ));
        }
        Ok(V1Manager {
            used,
            rel: rel.to_string(),
            prune,
        })
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.used
            .iter()
            .find(|u| u.controllers.iter().any(|c| c == controller))
            .map(|u| u.dir.as_path())
    }

    fn need(&self, controller: &str, what: &str) -> Result<&Path, CgroupError> {
        self.dir_of(controller)
            .ok_or_else(|| CgroupError::MissingController {
                controller: controller.into(),
                what: what.into(),
                path: self.used[0].own.clone(),
            })
    }

    /// The hierarchy whose `cgroup.procs` lists the cgroup's processes.
    fn tracking_dir(&self) -> &Path {
        self.dir_of("freezer")
            .or_else(|| self.dir_of("pids"))
            .unwrap_or(&self.used[0].dir)
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<(), CgroupError> {
        let any = mem_value(m.limit()).is_some()
            || mem_value(m.swap()).is_some()
            || mem_value(m.reservation()).is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true);
        if !any {
            return Ok(());
        }
        let dir = self.need("memory", "memory limits")?;
        if let Some(r) = mem_value(m.reservation()) {
            write(&dir.join("memory.soft_limit_in_bytes"), &r.to_string())?;
        }
        set_memory_and_swap(dir, mem_value(m.limit()), mem_value(m.swap()))?;
        if let Some(s) = m.swappiness() {
            let f = dir.join("memory.swappiness");
            if s > 100 {
                return Err(CgroupError::Invalid {
                    path: f,
                    detail: format!("swappiness {s} is not in 0..=100"),
                });
            }
            write(&f, &s.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(&dir.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<(), CgroupError> {
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p != 0);
        let rt_period = c.realtime_period().filter(|p| *p != 0);
        let rt_runtime = c.realtime_runtime().filter(|r| *r != 0);
        let shares = c.shares().filter(|s| *s != 0);
        if shares.is_some()
            || quota.is_some()
            || period.is_some()
            || c.burst().is_some()
            || c.idle().is_some()
            || rt_period.is_some()
            || rt_runtime.is_some()
        {
            let dir = self.need("cpu", "CPU limits")?;
            if let Some(s) = shares {
                let f = dir.join("cpu.shares");
                write(&f, &s.to_string())?;
                let got = read_u64(&f)?;
                if got != s {
                    return Err(CgroupError::Invalid {
                        path: f,
                        detail: format!(
                            "cpu shares {s} are outside the kernel's range (it set {got}; \
                             allowed: 2..=262144)"
                        ),
                    });
                }
            }
            set_quota_period(dir, quota, period)?;
            if let Some(b) = c.burst() {
                write(&dir.join("cpu.cfs_burst_us"), &b.to_string())?;
            }
            if let Some(i) = c.idle() {
                write(&dir.join("cpu.idle"), &i.to_string())?;
            }
            if let Some(p) = rt_period {
                write(&dir.join("cpu.rt_period_us"), &p.to_string())?;
            }
            if let Some(r) = rt_runtime {
                write(&dir.join("cpu.rt_runtime_us"), &r.to_string())?;
            }
        }
        let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
        let mems = c.mems().as_deref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            let dir = self.need("cpuset", "cpuset cpus/mems")?;
            if let Some(v) = cpus {
                write(&dir.join("cpuset.cpus"), v)?;
            }
            if let Some(v) = mems {
                write(&dir.join("cpuset.mems"), v)?;
            }
        }
        Ok(())
    }

    fn freezer_state(&self, what: &str) -> Result<PathBuf, CgroupError> {
        Ok(self.need("freezer", what)?.join("freezer.state"))
    }
}

/// Copies `cpuset.cpus` and `cpuset.mems` from the parent when empty: a new
/// v1 cpuset cgroup starts with none, and no process could join it.
fn ensure_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = dir.join(f);
        if read(&mine)?.trim().is_empty() {
            let theirs = read(&parent.join(f))?;
            write(&mine, theirs.trim())?;
        }
    }
    Ok(())
}

/// Writes the memory limit and the memory+swap limit in the order the kernel
/// accepts: it requires `memory.limit_in_bytes <= memory.memsw.limit_in_bytes`
/// after every single write (EINVAL otherwise), so memsw goes first when it
/// grows past the current memory limit, last otherwise (runc's
/// `setMemoryAndSwap`).
fn set_memory_and_swap(
    dir: &Path,
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<(), CgroupError> {
    let limit_f = dir.join("memory.limit_in_bytes");
    let memsw_f = dir.join("memory.memsw.limit_in_bytes");
    let memsw_supported = memsw_f.exists();
    let mut swap = swap;
    for (v, f) in [(limit, &limit_f), (swap, &memsw_f)] {
        if v.is_some_and(|v| v < -1) {
            return Err(CgroupError::Invalid {
                path: f.clone(),
                detail: format!("{} is neither a size nor -1 (unlimited)", v.unwrap_or(0)),
            });
        }
    }
    // Unlimited memory with swap unset means both unlimited.
    if limit == Some(-1) && swap.is_none() && memsw_supported {
        swap = Some(-1);
    }
    if let Some(s) = swap {
        if !memsw_supported {
            return Err(CgroupError::Invalid {
                path: memsw_f,
                detail: format!(
                    "cannot set memory+swap to {s}: the kernel does not account swap \
                     (boot with swapaccount=1)"
                ),
            });
        }
        match limit {
            Some(l) if l > 0 && s > 0 && s < l => {
                return Err(CgroupError::Invalid {
                    path: memsw_f,
                    detail: format!("memory+swap limit {s} is below the memory limit {l}"),
                });
            }
            Some(-1) if s > 0 => {
                return Err(CgroupError::Invalid {
                    path: memsw_f,
                    detail: format!("memory+swap limit {s} needs a memory limit, not unlimited"),
                });
            }
            _ => {}
        }
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        let current = parse_file(&limit_f, &read(&limit_f)?, parse::parse_u64)?;
        if s == -1 || current < s as u64 {
            set_swap(dir, &memsw_f, s)?;
            return set_memory(dir, &limit_f, l);
        }
    }
    if let Some(l) = limit {
        set_memory(dir, &limit_f, l)?;
    }
    if let Some(s) = swap {
        set_swap(dir, &memsw_f, s)?;
    }
    Ok(())
}

fn set_memory(dir: &Path, f: &Path, limit: i64) -> Result<(), CgroupError> {
    let value = limit.to_string();
    match write_raw(f, &value) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::BelowUsage {
            path: f.into(),
            limit,
            usage: read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0),
        }),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let memsw = read_opt(&dir.join("memory.memsw.limit_in_bytes"))
                .ok()
                .flatten()
                .map(|s| s.trim().to_string());
            let hint = match memsw {
                Some(m) => format!(
                    "the memory limit may not exceed memory.memsw.limit_in_bytes ({m}); \
                     raise memory+swap as well"
                ),
                None => String::new(),
            };
            Err(write_error(f, &value, e, &hint))
        }
        Err(e) => Err(write_error(f, &value, e, "")),
    }
}

fn set_swap(dir: &Path, f: &Path, swap: i64) -> Result<(), CgroupError> {
    let value = swap.to_string();
    write_raw(f, &value).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => CgroupError::BelowUsage {
            path: f.into(),
            limit: swap,
            usage: read_u64(&dir.join("memory.memsw.usage_in_bytes")).unwrap_or(0),
        },
        Some(libc::EINVAL) => write_error(
            f,
            &value,
            e,
            "memory+swap may not be below memory.limit_in_bytes",
        ),
        _ => write_error(f, &value, e, ""),
    })
}

/// Quota and period, tolerating a period the kernel refuses until the new
/// quota is in place (runc's order).
fn set_quota_period(
    dir: &Path,
    quota: Option<i64>,
    period: Option<u64>,
) -> Result<(), CgroupError> {
    let period_f = dir.join("cpu.cfs_period_us");
    let mut pending_period = None;
    if let Some(p) = period {
        let v = p.to_string();
        match write_raw(&period_f, &v) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota.is_some() => {
                pending_period = Some(v);
            }
            Err(e) => return Err(write_error(&period_f, &v, e, "")),
        }
    }
    if let Some(q) = quota {
        write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
        if let Some(v) = pending_period {
            write(&period_f, &v)?;
        }
    }
    Ok(())
}

impl CgroupManager for V1Manager {
    fn version(&self) -> u8 {
        1
    }

    fn create(&self) -> Result<(), CgroupError> {
        for u in &self.used {
            let cpuset = u.controllers.iter().any(|c| c == "cpuset");
            create_levels(&u.own, &self.rel, |parent, dir, _leaf| {
                if cpuset {
                    ensure_cpuset(parent, dir)
                } else {
                    Ok(())
                }
            })?;
        }
        Ok(())
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
            let key = u.keys().next().cloned().unwrap_or_default();
            return Err(CgroupError::Invalid {
                path: self.used[0].dir.join(key),
                detail: "\"unified\" resources need cgroup v2; this host uses v1".into(),
            });
        }
        if let Some(devs) = r.devices().as_ref().filter(|d| !d.is_empty()) {
            // In order, as runc: typically "deny all" first, then the allow
            // list. On a cgroup that already has processes there is a moment
            // in between when they are denied too.
            let dir = self.need("devices", "device rules")?;
            for d in devs {
                let f = dir.join(if d.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                });
                let rule = parse::device_rule(d).map_err(|detail| CgroupError::Invalid {
                    path: f.clone(),
                    detail,
                })?;
                write(&f, &rule)?;
            }
        }
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = r.pids() {
            let dir = self.need("pids", "a pids limit")?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_string()
            };
            write(&dir.join("pids.max"), &v)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for u in &self.used {
            let f = u.dir.join("cgroup.procs");
            let v = pid.to_string();
            write_raw(&f, &v).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::ESRCH) {
                    "no such process"
                } else {
                    ""
                };
                write_error(&f, &v, e, hint)
            })?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        collect_pids(self.tracking_dir(), &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        let f = self.freezer_state("freezing")?;
        // Writing FROZEN again on every poll catches processes forked while
        // the freeze was in progress (runc does the same).
        let done = super::wait_for(FREEZE_TIMEOUT, || {
            write(&f, "FROZEN")?;
            match read(&f)?.trim() {
                "FROZEN" => Ok(true),
                "FREEZING" => Ok(false),
                other => Err(CgroupError::Parse {
                    path: f.clone(),
                    detail: format!("unexpected freezer state {other:?} after writing FROZEN"),
                }),
            }
        })?;
        if !done {
            // Stuck in FREEZING: never leave it half frozen.
            let _ = write(&f, "THAWED");
            return Err(CgroupError::Timeout {
                path: f,
                what: "FROZEN".into(),
            });
        }
        Ok(())
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        let f = self.freezer_state("thawing")?;
        write(&f, "THAWED")?;
        let done = super::wait_for(FREEZE_TIMEOUT, || Ok(read(&f)?.trim() == "THAWED"))?;
        if !done {
            return Err(CgroupError::Timeout {
                path: f,
                what: "THAWED".into(),
            });
        }
        Ok(())
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut st = Stats::default();
        if let Some(d) = self.dir_of("memory") {
            let usage = read_u64(&d.join("memory.usage_in_bytes"))?;
            let stat = read_keyed(&d.join("memory.stat"))?;
            let memsw_usage = read_u64_opt(&d.join("memory.memsw.usage_in_bytes"))?;
            let memsw_limit_f = d.join("memory.memsw.limit_in_bytes");
            let memsw_limit = match read_opt(&memsw_limit_f)? {
                Some(t) => parse_file(&memsw_limit_f, &t, parse::parse_limit)?,
                None => None,
            };
            st.memory = Some(MemoryStats {
                usage,
                limit: read_limit(&d.join("memory.limit_in_bytes"))?,
                max_usage: read_u64_opt(&d.join("memory.max_usage_in_bytes"))?,
                cache: stat
                    .get("total_cache")
                    .or_else(|| stat.get("cache"))
                    .copied()
                    .unwrap_or(0),
                swap_usage: memsw_usage.map(|m| m.saturating_sub(usage)),
                memory_swap_limit: memsw_limit,
                oom_kills: read_keyed_opt(&d.join("memory.oom_control"))?
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0),
            });
        }
        let cpu = self.dir_of("cpu");
        let acct = self.dir_of("cpuacct");
        if cpu.is_some() || acct.is_some() {
            let mut c = CpuStats::default();
            if let Some(d) = acct {
                c.usage_ns = read_u64(&d.join("cpuacct.usage"))?;
                match (
                    read_u64_opt(&d.join("cpuacct.usage_user"))?,
                    read_u64_opt(&d.join("cpuacct.usage_sys"))?,
                ) {
                    (Some(u), Some(s)) => (c.user_ns, c.system_ns) = (u, s),
                    _ => {
                        let ticks = read_keyed(&d.join("cpuacct.stat"))?;
                        let ns = 1_000_000_000 / parse::USER_HZ;
                        c.user_ns = ticks.get("user").copied().unwrap_or(0) * ns;
                        c.system_ns = ticks.get("system").copied().unwrap_or(0) * ns;
                    }
                }
            }
            if let Some(d) = cpu {
                let s = read_keyed(&d.join("cpu.stat"))?;
                c.periods = s.get("nr_periods").copied().unwrap_or(0);
                c.throttled_periods = s.get("nr_throttled").copied().unwrap_or(0);
                c.throttled_ns = s.get("throttled_time").copied().unwrap_or(0);
                c.quota_us = read_limit(&d.join("cpu.cfs_quota_us"))?;
                c.period_us = Some(read_u64(&d.join("cpu.cfs_period_us"))?);
            }
            st.cpu = Some(c);
        }
        if let Some(d) = self.dir_of("pids") {
            st.pids = Some(PidsStats {
                current: read_u64(&d.join("pids.current"))?,
                limit: read_limit(&d.join("pids.max"))?,
            });
        }
        Ok(st)
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        super::to_signal(signal)?;
        // Frozen, nothing can fork a child that misses the signal. Should
        // freezing fail (no freezer, or stuck), signal anyway.
        let frozen = self.dir_of("freezer").is_some() && self.freeze().is_ok();
        let dir = self.tracking_dir();
        let result = self.pids().and_then(|pids| signal_pids(dir, &pids, signal));
        if frozen {
            self.thaw()?;
        }
        result
    }

    fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        let mut first_err = None;
        for u in &self.used {
            match remove_tree(&u.dir, deadline) {
                Ok(()) => prune_parents(&u.dir, self.prune),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.used.iter().map(|u| u.dir.clone()).collect()
    }
}
