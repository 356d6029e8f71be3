//! cgroup v2: one directory in the unified hierarchy, below this process's
//! own cgroup. Follows the kernel's `Documentation/admin-guide/cgroup-v2.rst`
//! and runc's conversions of OCI values.
//!
//! Controllers reach a cgroup only when every ancestor lists them in
//! `cgroup.subtree_control`; `create` enables the ones the own cgroup offers
//! on each level it creates. The kernel refuses that (EBUSY) on a non-root
//! cgroup that has processes of its own (the "no internal processes" rule);
//! then the cgroup is still created and only limits that need a missing
//! controller fail, naming it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::{
    CgroupError, CgroupManager, CpuStats, FREEZE_TIMEOUT, MemoryStats, PidsStats, REMOVE_TIMEOUT,
    Stats, collect_pids, create_levels, mem_value, parse, parse_file, prune_parents, read,
    read_keyed, read_keyed_opt, read_limit, read_opt, read_u64, read_u64_opt, remove_tree,
    signal_pids, write, write_error, write_raw,
};

/// Controllers `create` enables for the cgroups it makes.
pub const CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids", "hugetlb"];

/// cgroup v2 manager.
#[derive(Clone, Debug)]
pub struct V2Manager {
    own: PathBuf,
    rel: String,
    dir: PathBuf,
    prune: usize,
}

impl V2Manager {
    /// A manager for cgroup `rel` (`<parent>/<name>`) below `own`, the own
    /// cgroup's directory in the unified hierarchy. `prune` parent levels are
    /// removed by `remove` when empty.
    pub fn new(own: PathBuf, rel: &str, prune: usize) -> Self {
        V2Manager {
            dir: parse::join_rel(&own, rel),
            own,
            rel: rel.to_string(),
            prune,
        }
    }

    /// Controllers available in the cgroup (`cgroup.controllers`).
    fn controllers(&self) -> Result<BTreeSet<String>, CgroupError> {
        Ok(read(&self.dir.join("cgroup.controllers"))?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }

    fn apply_memory(&self, m: &LinuxMemory, avail: &BTreeSet<String>) -> Result<(), CgroupError> {
        let limit = mem_value(m.limit());
        let swap = mem_value(m.swap());
        let reservation = mem_value(m.reservation());
        if limit.is_none() && swap.is_none() && reservation.is_none() {
            // swappiness and disable_oom_killer have no v2 equivalent (runc
            // ignores them too).
            return Ok(());
        }
        need(avail, "memory", "memory limits", &self.dir)?;
        let max_f = self.dir.join("memory.max");
        let swap_f = self.dir.join("memory.swap.max");
        for (v, f) in [(limit, &max_f), (swap, &swap_f), (reservation, &max_f)] {
            if let Some(v) = v.filter(|v| *v < -1) {
                return Err(CgroupError::Invalid {
                    path: f.clone(),
                    detail: format!("{v} is neither a size nor -1 (unlimited)"),
                });
            }
        }
        // v2 does not refuse a limit below usage: it reclaims, then OOM-kills
        // processes until usage fits. Refuse instead, as v1 does (EBUSY).
        if let Some(l) = limit.filter(|l| *l > 0) {
            let usage = read_u64(&self.dir.join("memory.current"))?;
            if (l as u64) < usage {
                return Err(CgroupError::BelowUsage {
                    path: max_f,
                    limit: l,
                    usage,
                });
            }
        }
        let swap_max = parse::v2_swap_max(limit, swap).map_err(|detail| CgroupError::Invalid {
            path: swap_f.clone(),
            detail,
        })?;
        // Swap first (runc's order); on a kernel without swap accounting the
        // file is absent, which only matters when some swap was asked for.
        if let Some(v) = swap_max
            && let Err(e) = write_raw(&swap_f, &v)
        {
            let harmless = e.kind() == std::io::ErrorKind::NotFound && (v == "max" || v == "0");
            if !harmless {
                return Err(write_error(&swap_f, &v, e, ""));
            }
        }
        if let Some(l) = limit {
            write(&max_f, &max_value(l))?;
        }
        if let Some(r) = reservation {
            write(&self.dir.join("memory.low"), &max_value(r))?;
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu, avail: &BTreeSet<String>) -> Result<(), CgroupError> {
        if c.realtime_period().is_some_and(|p| p != 0)
            || c.realtime_runtime().is_some_and(|r| r != 0)
        {
            return Err(CgroupError::Invalid {
                path: self.dir.join("cpu.max"),
                detail: "real-time CPU period/runtime are not supported by cgroup v2".into(),
            });
        }
        let shares = c.shares().filter(|s| *s != 0);
        let cpu_max = parse::v2_cpu_max(c.quota(), c.period());
        if shares.is_some() || cpu_max.is_some() || c.burst().is_some() || c.idle().is_some() {
            need(avail, "cpu", "CPU limits", &self.dir)?;
            if let Some(s) = shares {
                let w = parse::shares_to_weight(s);
                write(&self.dir.join("cpu.weight"), &w.to_string())?;
            }
            if let Some(v) = cpu_max {
                write(&self.dir.join("cpu.max"), &v)?;
            }
            if let Some(b) = c.burst() {
                write(&self.dir.join("cpu.max.burst"), &b.to_string())?;
            }
            if let Some(i) = c.idle() {
                write(&self.dir.join("cpu.idle"), &i.to_string())?;
            }
        }
        let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
        let mems = c.mems().as_deref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            need(avail, "cpuset", "cpuset cpus/mems", &self.dir)?;
            if let Some(v) = cpus {
                write(&self.dir.join("cpuset.cpus"), v)?;
            }
            if let Some(v) = mems {
                write(&self.dir.join("cpuset.mems"), v)?;
            }
        }
        Ok(())
    }

    fn events_frozen(&self) -> Result<Option<u64>, CgroupError> {
        Ok(read_keyed(&self.dir.join("cgroup.events"))?
            .get("frozen")
            .copied())
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let f = self.dir.join("cgroup.freeze");
        if !f.exists() && self.dir.exists() {
            return Err(CgroupError::NotAvailable(format!(
                "{} is missing (freezing on cgroup v2 needs Linux 5.2 or later)",
                f.display()
            )));
        }
        let want = u64::from(frozen);
        write(&f, &want.to_string())?;
        let done = super::wait_for(FREEZE_TIMEOUT, || Ok(self.events_frozen()? == Some(want)))?;
        if !done {
            if frozen {
                // Never leave it half frozen.
                let _ = write(&f, "0");
            }
            return Err(CgroupError::Timeout {
                path: self.dir.join("cgroup.events"),
                what: format!("frozen {want}"),
            });
        }
        Ok(())
    }
}

/// `-1` → `max`, else the number.
fn max_value(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

fn need(
    avail: &BTreeSet<String>,
    controller: &str,
    what: &str,
    dir: &Path,
) -> Result<(), CgroupError> {
    if avail.contains(controller) {
        return Ok(());
    }
    Err(CgroupError::MissingController {
        controller: controller.into(),
        what: format!(
            "{what}; a parent's cgroup.subtree_control must enable it, which the kernel \
             refuses while that parent has processes of its own"
        ),
        path: dir.into(),
    })
}

/// Enables in `parent`'s `cgroup.subtree_control` those of [`CONTROLLERS`]
/// it offers and has not enabled yet. EBUSY (the parent has processes and is
/// not the root) is tolerated: the child then lacks those controllers.
fn enable_controllers(parent: &Path) -> Result<(), CgroupError> {
    let offered = read(&parent.join("cgroup.controllers"))?;
    let ctl_f = parent.join("cgroup.subtree_control");
    let enabled = read(&ctl_f)?;
    let enabled: BTreeSet<&str> = enabled.split_whitespace().collect();
    let add: Vec<String> = offered
        .split_whitespace()
        .filter(|c| CONTROLLERS.contains(c) && !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    let v = add.join(" ");
    match write_raw(&ctl_f, &v) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(write_error(&ctl_f, &v, e, "")),
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> u8 {
        2
    }

    fn create(&self) -> Result<(), CgroupError> {
        create_levels(&self.own, &self.rel, |parent, _dir, _leaf| {
            enable_controllers(parent)
        })
    }

    fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let avail = self.controllers()?;
        // runc's order: pids, memory, cpu, cpuset, then the raw map.
        if let Some(p) = r.pids() {
            need(&avail, "pids", "a pids limit", &self.dir)?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_string()
            };
            write(&self.dir.join("pids.max"), &v)?;
        }
        if let Some(m) = r.memory() {
            self.apply_memory(m, &avail)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c, &avail)?;
        }
        if let Some(u) = r.unified() {
            for (k, v) in u {
                let f = self.dir.join(k);
                if parse::check_rel_path(k, true).is_err() || k.starts_with("cgroup.") {
                    return Err(CgroupError::Invalid {
                        path: f,
                        detail: "a \"unified\" key must name a controller file of the cgroup"
                            .into(),
                    });
                }
                write_raw(&f, v).map_err(|e| {
                    let hint = if e.kind() == std::io::ErrorKind::NotFound {
                        "no such file: is the controller enabled?"
                    } else {
                        ""
                    };
                    write_error(&f, v, e, hint)
                })?;
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let f = self.dir.join("cgroup.procs");
        let v = pid.to_string();
        write_raw(&f, &v).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ESRCH) {
                "no such process"
            } else {
                ""
            };
            write_error(&f, &v, e, hint)
        })
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        collect_pids(&self.dir, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let avail = self.controllers()?;
        let d = &self.dir;
        let mut st = Stats::default();
        if avail.contains("memory") {
            let stat = read_keyed(&d.join("memory.stat"))?;
            let limit = read_limit(&d.join("memory.max"))?;
            let swap_usage = read_u64_opt(&d.join("memory.swap.current"))?;
            let swap_max_f = d.join("memory.swap.max");
            let swap_max = match read_opt(&swap_max_f)? {
                Some(t) => parse_file(&swap_max_f, &t, parse::parse_limit)?,
                None => None,
            };
            st.memory = Some(MemoryStats {
                usage: read_u64(&d.join("memory.current"))?,
                limit,
                max_usage: read_u64_opt(&d.join("memory.peak"))?,
                cache: stat.get("file").copied().unwrap_or(0),
                swap_usage,
                memory_swap_limit: match (limit, swap_max, swap_usage) {
                    (Some(l), Some(s), Some(_)) => Some(l.saturating_add(s)),
                    _ => None,
                },
                oom_kills: read_keyed_opt(&d.join("memory.events"))?
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0),
            });
        }
        // cpu.stat's usage lines are core (always there); the throttling
        // lines and cpu.max come with the cpu controller.
        let s = read_keyed(&d.join("cpu.stat"))?;
        let us = |k: &str| s.get(k).copied().unwrap_or(0).saturating_mul(1000);
        let mut c = CpuStats {
            usage_ns: us("usage_usec"),
            user_ns: us("user_usec"),
            system_ns: us("system_usec"),
            periods: s.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: s.get("nr_throttled").copied().unwrap_or(0),
            throttled_ns: us("throttled_usec"),
            ..CpuStats::default()
        };
        let cpu_max_f = d.join("cpu.max");
        if let Some(t) = read_opt(&cpu_max_f)? {
            let (q, p) = parse_file(&cpu_max_f, &t, parse::parse_cpu_max)?;
            c.quota_us = q;
            c.period_us = Some(p);
        }
        st.cpu = Some(c);
        if avail.contains("pids") {
            st.pids = Some(PidsStats {
                current: read_u64(&d.join("pids.current"))?,
                limit: read_limit(&d.join("pids.max"))?,
            });
        }
        Ok(st)
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        super::to_signal(signal)?;
        let kill_f = self.dir.join("cgroup.kill");
        if signal == libc::SIGKILL && kill_f.exists() {
            // Linux 5.14+: one write kills the whole subtree, forks included.
            return match write_raw(&kill_f, "1") {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(write_error(&kill_f, "1", e, "")),
            };
        }
        let frozen = self.freeze().is_ok();
        let result = self
            .pids()
            .and_then(|pids| signal_pids(&self.dir, &pids, signal));
        if frozen {
            self.thaw()?;
        }
        result
    }

    fn remove(&self) -> Result<(), CgroupError> {
        remove_tree(&self.dir, Instant::now() + REMOVE_TIMEOUT)?;
        prune_parents(&self.dir, self.prune);
        Ok(())
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}

#[cfg(test)]
mod tests {
    //! The v2 manager against a fake cgroup directory (plain files in a
    //! temporary directory), so its file writes and reads are checked on
    //! hosts without cgroup v2.

    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    use std::fs;

    const MIB: i64 = 1 << 20;

    fn put(dir: &Path, name: &str, content: &str) {
        fs::write(dir.join(name), content).unwrap();
    }

    fn get(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).unwrap()
    }

    /// A fake own cgroup with `berth/c1` below it, the leaf carrying the
    /// files a kernel would show with the given controllers.
    fn fake(controllers: &str) -> (tempfile::TempDir, V2Manager) {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().to_path_buf();
        let leaf = own.join("berth/c1");
        fs::create_dir_all(&leaf).unwrap();
        for d in [&own, &own.join("berth")] {
            put(d, "cgroup.controllers", controllers);
            put(d, "cgroup.subtree_control", "");
        }
        put(&leaf, "cgroup.controllers", controllers);
        for (f, v) in [
            ("cgroup.procs", ""),
            ("cgroup.freeze", "0"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
            ("cgroup.kill", ""),
            ("memory.current", "1048576\n"),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("memory.low", "0\n"),
            ("memory.peak", "2097152\n"),
            ("memory.stat", "anon 1000\nfile 5000\nkernel 300\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("cpu.weight", "100\n"),
            ("cpu.max", "max 100000\n"),
            (
                "cpu.stat",
                "usage_usec 2873\nuser_usec 1000\nsystem_usec 1873\nnr_periods 4\n\
                 nr_throttled 1\nthrottled_usec 9000\n",
            ),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("pids.max", "max\n"),
            ("pids.current", "3\n"),
        ] {
            put(&leaf, f, v);
        }
        let m = V2Manager::new(own, "berth/c1", 1);
        (tmp, m)
    }

    fn resources(limit: i64, swap: i64) -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .swap(swap)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .shares(512u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20i64).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn v2_create_enables_controllers_in_parents() {
        let (tmp, m) = fake("cpuset cpu io memory pids rdma");
        m.create().unwrap();
        assert_eq!(
            get(tmp.path(), "cgroup.subtree_control"),
            "+cpuset +cpu +io +memory +pids"
        );
        assert_eq!(
            get(&tmp.path().join("berth"), "cgroup.subtree_control"),
            "+cpuset +cpu +io +memory +pids"
        );
        // Already enabled controllers are not written again.
        put(
            tmp.path(),
            "cgroup.subtree_control",
            "cpuset cpu io memory pids\n",
        );
        put(
            &tmp.path().join("berth"),
            "cgroup.subtree_control",
            "cpu memory\n",
        );
        m.create().unwrap();
        assert_eq!(
            get(tmp.path(), "cgroup.subtree_control"),
            "cpuset cpu io memory pids\n"
        );
        assert_eq!(
            get(&tmp.path().join("berth"), "cgroup.subtree_control"),
            "+cpuset +io +pids"
        );
        assert_eq!(m.paths(), [tmp.path().join("berth/c1")]);
    }

    #[test]
    fn v2_apply_writes_runc_conversions() {
        let (tmp, m) = fake("cpuset cpu io memory pids");
        m.apply(&resources(64 * MIB, 128 * MIB)).unwrap();
        let leaf = tmp.path().join("berth/c1");
        assert_eq!(get(&leaf, "memory.max"), (64 * MIB).to_string());
        assert_eq!(get(&leaf, "memory.swap.max"), (64 * MIB).to_string());
        assert_eq!(get(&leaf, "cpu.max"), "50000 100000");
        assert_eq!(get(&leaf, "cpu.weight"), "20");
        assert_eq!(get(&leaf, "pids.max"), "20");

        // memory == memory+swap: no swap at all.
        m.apply(&resources(32 * MIB, 32 * MIB)).unwrap();
        assert_eq!(get(&leaf, "memory.swap.max"), "0");
        // Unlimited.
        m.apply(&resources(-1, -1)).unwrap();
        assert_eq!(get(&leaf, "memory.max"), "max");
        assert_eq!(get(&leaf, "memory.swap.max"), "max");
    }

    #[test]
    fn v2_apply_errors_name_the_file() {
        let (_tmp, m) = fake("cpuset cpu io memory pids");
        // Below usage (1 MiB in the fake).
        let e = m.apply(&resources(4096, 4096)).unwrap_err();
        assert!(matches!(e, CgroupError::BelowUsage { .. }), "{e}");
        assert!(e.to_string().contains("memory.max"), "{e}");
        // memory+swap below memory.
        let e = m.apply(&resources(64 * MIB, 32 * MIB)).unwrap_err();
        assert!(e.to_string().contains("memory.swap.max"), "{e}");
        // A controller the parent did not hand down.
        let (_tmp2, m2) = fake("cpu memory");
        let e = m2.apply(&resources(64 * MIB, 64 * MIB)).unwrap_err();
        assert!(
            matches!(&e, CgroupError::MissingController { controller, .. } if controller == "pids"),
            "{e}"
        );
        // Real-time CPU settings do not exist on v2.
        let rt = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .realtime_runtime(1000i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(m.apply(&rt).is_err());
    }

    #[test]
    fn v2_unified_map_is_written_and_checked() {
        let (tmp, m) = fake("memory pids");
        let leaf = tmp.path().join("berth/c1");
        put(&leaf, "memory.high", "max\n");
        let r = LinuxResourcesBuilder::default()
            .unified(
                [("memory.high".to_string(), "50000000".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        m.apply(&r).unwrap();
        assert_eq!(get(&leaf, "memory.high"), "50000000");
        for bad in ["../x", "cgroup.procs", "memory.nope"] {
            let r = LinuxResourcesBuilder::default()
                .unified(
                    [(bad.to_string(), "1".to_string())]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()
                .unwrap();
            assert!(m.apply(&r).is_err(), "{bad}");
        }
    }

    #[test]
    fn v2_stats_from_files() {
        let (tmp, m) = fake("cpu memory pids");
        let leaf = tmp.path().join("berth/c1");
        put(&leaf, "memory.max", "67108864\n");
        put(&leaf, "memory.swap.max", "67108864\n");
        put(&leaf, "cpu.max", "50000 100000\n");
        put(&leaf, "pids.max", "20\n");
        let s = m.stats().unwrap();
        let mem = s.memory.unwrap();
        assert_eq!(mem.usage, 1 << 20);
        assert_eq!(mem.limit, Some(64 << 20));
        assert_eq!(mem.max_usage, Some(2 << 20));
        assert_eq!(mem.cache, 5000);
        assert_eq!(mem.swap_usage, Some(0));
        assert_eq!(mem.memory_swap_limit, Some(128 << 20));
        assert_eq!(mem.oom_kills, 1);
        let cpu = s.cpu.unwrap();
        assert_eq!(cpu.usage_ns, 2_873_000);
        assert_eq!(cpu.user_ns, 1_000_000);
        assert_eq!(cpu.system_ns, 1_873_000);
        assert_eq!(cpu.throttled_periods, 1);
        assert_eq!(cpu.throttled_ns, 9_000_000);
        assert_eq!((cpu.quota_us, cpu.period_us), (Some(50_000), Some(100_000)));
        let pids = s.pids.unwrap();
        assert_eq!((pids.current, pids.limit), (3, Some(20)));
        // Without the memory controller: no memory section, no error.
        put(&leaf, "cgroup.controllers", "cpu pids");
        assert!(m.stats().unwrap().memory.is_none());
    }

    #[test]
    fn v2_freeze_waits_for_events_and_kill_uses_cgroup_kill() {
        let (tmp, m) = fake("cpu memory pids");
        let leaf = tmp.path().join("berth/c1");
        put(&leaf, "cgroup.events", "populated 1\nfrozen 1\n");
        m.freeze().unwrap();
        assert_eq!(get(&leaf, "cgroup.freeze"), "1");
        put(&leaf, "cgroup.events", "populated 1\nfrozen 0\n");
        m.thaw().unwrap();
        assert_eq!(get(&leaf, "cgroup.freeze"), "0");
        m.kill_all(libc::SIGKILL).unwrap();
        assert_eq!(get(&leaf, "cgroup.kill"), "1");
        assert!(matches!(m.kill_all(0), Err(CgroupError::InvalidSignal(0))));
        assert!(m.pids().unwrap().is_empty());
    }
}
