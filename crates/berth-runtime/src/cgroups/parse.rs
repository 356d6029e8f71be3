//! Pure functions: parsing cgroup and proc files, and converting OCI values to
//! what the kernel files expect. No I/O here, so everything (v2 included) is
//! unit-tested on sample text whatever the host runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCgroup {
    /// Hierarchy ID (0 for the v2 unified hierarchy).
    pub id: u32,
    /// Controllers bound to the hierarchy (`cpu,cpuacct` → two; `name=systemd`
    /// kept as is); empty for v2.
    pub controllers: Vec<String>,
    /// Path of the cgroup relative to the hierarchy's root, starting with `/`.
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<ProcCgroup>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The path may itself contain ':', so split at most twice.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("malformed line {line:?}"));
        };
        let id = id
            .parse()
            .map_err(|_| format!("bad hierarchy id in {line:?}"))?;
        out.push(ProcCgroup {
            id,
            controllers: ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// A cgroup file system mount, from `/proc/<pid>/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy appears at the mount point (`/` unless
    /// bind-mounted or mounted inside a cgroup namespace).
    pub root: String,
    /// 1 (`cgroup`) or 2 (`cgroup2`).
    pub version: u8,
    /// Super options (`rw,cpu,cpuacct`, `rw,name=systemd`), split at commas.
    pub options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the cgroup (v1 `cgroup` and v2 `cgroup2`) mounts in a mountinfo text.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        let version = match r[0] {
            "cgroup" => 1,
            "cgroup2" => 2,
            _ => continue,
        };
        out.push(CgroupMount {
            mount_point: PathBuf::from(unescape_mountinfo(l[4])),
            root: unescape_mountinfo(l[3]),
            version,
            options: r[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// Where this process (or the one whose files were parsed) sits in one
/// cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// 1 or 2.
    pub version: u8,
    /// Controllers of a v1 hierarchy (`["cpu", "cpuacct"]`); empty for v2.
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The cgroup path as `/proc/self/cgroup` shows it.
    pub cgroup: String,
    /// The cgroup's directory: the mount point joined with the path below the
    /// mount's root.
    pub dir: PathBuf,
}

impl Hierarchy {
    /// Whether this v1 hierarchy carries `controller`.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Joins `/proc/self/cgroup` entries with cgroup mounts. Entries whose
/// hierarchy is not mounted, or whose cgroup lies outside what the mount shows
/// (for example `/..` inside a foreign cgroup namespace), are left out.
pub fn resolve_hierarchies(entries: &[ProcCgroup], mounts: &[CgroupMount]) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for e in entries {
        let v2 = e.id == 0 && e.controllers.is_empty();
        let dir = mounts
            .iter()
            .filter(|m| {
                if v2 {
                    m.version == 2
                } else {
                    m.version == 1 && e.controllers.iter().all(|c| m.options.contains(c))
                }
            })
            .find_map(|m| Some((m, below_root(&m.root, &e.path)?)));
        let Some((m, rel)) = dir else { continue };
        out.push(Hierarchy {
            version: if v2 { 2 } else { 1 },
            controllers: e.controllers.clone(),
            mount_point: m.mount_point.clone(),
            cgroup: e.path.clone(),
            dir: join_rel(&m.mount_point, &rel),
        });
    }
    out
}

/// The part of `path` below `root`, or None when `path` is not under `root`.
fn below_root(root: &str, path: &str) -> Option<String> {
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None; // "/foo" is not below "/fo"
    }
    Some(rest.trim_start_matches('/').to_string())
}

/// Joins a relative cgroup path (components separated by '/') to a directory.
pub fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

/// Checks a cgroup path given by a user (Docker's `--cgroup-parent`, or a
/// container name): relative components only, no `.`/`..`, nothing empty
/// when `single` (one component) is asked for. A leading `/` is accepted and
/// ignored: parents are always relative to the caller's own cgroup.
pub fn check_rel_path(value: &str, single: bool) -> Result<String, &'static str> {
    let trimmed = value.trim_matches('/');
    if trimmed.is_empty() {
        return Err("empty");
    }
    if value.contains('\0') {
        return Err("contains a NUL byte");
    }
    let comps: Vec<&str> = trimmed.split('/').collect();
    if single && comps.len() != 1 {
        return Err("must be a single path component");
    }
    for c in &comps {
        if c.is_empty() || *c == "." || *c == ".." {
            return Err("must not contain empty, '.' or '..' components");
        }
    }
    Ok(comps.join("/"))
}

/// Parses "flat keyed" files: one `key value` pair a line (`memory.stat`,
/// `cpu.stat`, `memory.events`, `memory.oom_control`, `cgroup.events`,
/// `cpuacct.stat`, `pids.events`). Lines whose value is not an unsigned
/// integer are skipped.
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// Above this a v1 limit means "unlimited": v1 reports no limit as
/// `PAGE_COUNTER_MAX * PAGE_SIZE` (9223372036854771712 with 4 KiB pages),
/// which depends on the page size.
pub const V1_UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Parses a limit file: `max` (v2) or `-1` (v1 quota) or a huge v1 value
/// mean unlimited (`None`); anything else is a number.
pub fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t == "max" || t == "-1" {
        return Ok(None);
    }
    let v: u64 = t.parse().map_err(|_| format!("not a limit: {t:?}"))?;
    Ok((v < V1_UNLIMITED_THRESHOLD).then_some(v))
}

/// Parses a plain unsigned integer file (`memory.current`, `pids.current`).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse().map_err(|_| format!("not a number: {t:?}"))
}

/// Parses v2 `cpu.max` (`$MAX $PERIOD`, `max 100000`) into (quota, period) in µs.
pub fn parse_cpu_max(text: &str) -> Result<(Option<u64>, u64), String> {
    let mut it = text.split_whitespace();
    let (Some(q), Some(p)) = (it.next(), it.next()) else {
        return Err(format!("not a cpu.max value: {:?}", text.trim()));
    };
    let quota = parse_limit(q)?;
    let period = p
        .parse()
        .map_err(|_| format!("bad period in {:?}", text.trim()))?;
    Ok((quota, period))
}

/// Parses `cgroup.procs`/`tasks`: one pid a line.
pub fn parse_pids(text: &str) -> Result<Vec<i32>, String> {
    text.split_whitespace()
        .map(|p| p.parse().map_err(|_| format!("bad pid {p:?}")))
        .collect()
}

/// runc's cgroup v1 `cpu.shares` → v2 `cpu.weight` conversion:
/// `1 + ((shares - 2) * 9999) / 262142`, which maps the v1 range
/// [2, 262144] onto the v2 range [1, 10000]. Shares outside the v1 range are
/// clamped to it first (the v1 kernel clamps the same way).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// Converts OCI's memory+swap total (`swap`, as Docker's `--memory-swap`) into
/// v2's `memory.swap.max` (swap alone), following runc's
/// `ConvertMemorySwapToCgroupV2Value`. `None`/0 means unset; -1 unlimited.
/// Returns the value to write, `None` for "leave as is".
pub fn v2_swap_max(memory: Option<i64>, swap: Option<i64>) -> Result<Option<String>, String> {
    let memory = memory.unwrap_or(0);
    let swap = swap.unwrap_or(0);
    // Unlimited memory with swap unset: make both unlimited (as on v1).
    if memory == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    if swap == 0 {
        return Ok(None);
    }
    if swap < 0 {
        return Ok(Some("max".into()));
    }
    if memory <= 0 {
        return Err("a memory+swap limit needs a memory limit".into());
    }
    if swap < memory {
        return Err(format!(
            "memory+swap limit {swap} is below the memory limit {memory}"
        ));
    }
    Ok(Some((swap - memory).to_string()))
}

/// v2 `cpu.max` value for an OCI quota/period (runc's logic): quota > 0 is a
/// number, anything else `max`; the period is appended when given. `None`
/// when neither is set.
pub fn v2_cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.unwrap_or(0);
    let period = period.unwrap_or(0);
    if quota == 0 && period == 0 {
        return None;
    }
    let mut s = if quota > 0 {
        quota.to_string()
    } else {
        "max".to_string()
    };
    if period != 0 {
        s.push(' ');
        s.push_str(&period.to_string());
    }
    Some(s)
}

/// A v1 `devices.allow`/`devices.deny` line for an OCI device rule:
/// `type major:minor access`, `*` for an absent (or negative) number, `rwm`
/// when no access is given. The device cgroup knows `a`, `b` and `c`; OCI's
/// `u` (unbuffered character device) is a `c`, a FIFO (`p`) has no rule.
pub fn device_rule(d: &oci_spec::runtime::LinuxDeviceCgroup) -> Result<String, String> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let typ = match d.typ().unwrap_or(T::A) {
        T::A => "a",
        T::B => "b",
        T::C | T::U => "c",
        T::P => return Err("FIFOs (type \"p\") have no device cgroup rule".into()),
    };
    let num = |n: Option<i64>| match n {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let access = d.access().as_deref().unwrap_or("");
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(format!(
            "device access {access:?} is not a combination of r, w, m"
        ));
    }
    let access = if access.is_empty() { "rwm" } else { access };
    Ok(format!(
        "{typ} {}:{} {access}",
        num(d.major()),
        num(d.minor())
    ))
}

/// v1 `cpuacct.stat` counts in `USER_HZ` ticks, which the kernel fixes at 100
/// for user space on every mainstream architecture (x86, arm, arm64, riscv,
/// ppc, s390).
pub const USER_HZ: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUP_HYBRID: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/9db2d653bc8cd408cf8b61f53bc844cc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn proc_cgroup_hybrid() {
        let e = parse_proc_cgroup(PROC_CGROUP_HYBRID).unwrap();
        assert_eq!(e.len(), 10);
        assert_eq!(e[0].controllers, ["name=systemd"]);
        assert_eq!(e[5].controllers, ["memory"]);
        assert_eq!(e[5].path, "/process_api/9db2d653bc8cd408cf8b61f53bc844cc");
        assert_eq!(e[9].id, 0);
        assert!(e[9].controllers.is_empty());
        assert!(parse_proc_cgroup("garbage").is_err());
        assert!(parse_proc_cgroup("x:memory:/").is_err());
        // A path containing ':' survives.
        let e = parse_proc_cgroup("0::/a:b\n").unwrap();
        assert_eq!(e[0].path, "/a:b");
    }

    #[test]
    fn hybrid_hierarchies_resolve_per_controller() {
        let h = resolve_hierarchies(
            &parse_proc_cgroup(PROC_CGROUP_HYBRID).unwrap(),
            &parse_cgroup_mounts(MOUNTINFO_HYBRID),
        );
        assert_eq!(h.len(), 10);
        let mem = h.iter().find(|h| h.has("memory")).unwrap();
        assert_eq!(mem.version, 1);
        assert_eq!(
            mem.dir,
            Path::new("/sys/fs/cgroup/memory/process_api/9db2d653bc8cd408cf8b61f53bc844cc")
        );
        let cpu = h.iter().find(|h| h.has("cpu")).unwrap();
        assert_eq!(cpu.dir, Path::new("/sys/fs/cgroup/cpu"));
        let v2 = h.iter().find(|h| h.version == 2).unwrap();
        assert_eq!(v2.dir, Path::new("/sys/fs/cgroup/unified"));
        let sd = h.iter().find(|h| h.has("name=systemd")).unwrap();
        assert_eq!(sd.mount_point, Path::new("/sys/fs/cgroup/systemd"));
    }

    #[test]
    fn joined_cpu_cpuacct_and_bind_mounted_root() {
        let proc = "4:cpu,cpuacct:/docker/abc/sub\n3:memory:/docker/abc\n";
        let mi = "\
25 24 0:22 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
";
        let h = resolve_hierarchies(&parse_proc_cgroup(proc).unwrap(), &parse_cgroup_mounts(mi));
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(h[0].dir, Path::new("/sys/fs/cgroup/cpu,cpuacct/sub"));
        assert_eq!(h[1].dir, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn unified_and_cgroupns_escape() {
        let mi = "\
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let h = resolve_hierarchies(
            &parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n").unwrap(),
            &parse_cgroup_mounts(mi),
        );
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].version, 2);
        assert_eq!(
            h[0].dir,
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
        );
        // Outside the namespace's view: not resolvable.
        let h = resolve_hierarchies(
            &parse_proc_cgroup("0::/../../elsewhere\n").unwrap(),
            &parse_cgroup_mounts(mi),
        );
        assert!(h.is_empty());
        // "/foo" is not below a mount rooted at "/fo".
        let mi2 = "1 1 0:1 /fo /mnt - cgroup2 cgroup2 rw\n";
        let h = resolve_hierarchies(
            &parse_proc_cgroup("0::/foo\n").unwrap(),
            &parse_cgroup_mounts(mi2),
        );
        assert!(h.is_empty());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"a\134b"), r"a\b");
        assert_eq!(unescape_mountinfo(r"trail\04"), r"trail\04");
        let m = parse_cgroup_mounts("1 1 0:1 / /mnt/my\\040cg rw - cgroup cgroup rw,pids\n");
        assert_eq!(m[0].mount_point, Path::new("/mnt/my cg"));
        assert!(parse_cgroup_mounts("1 1 0:1 / /proc rw - proc proc rw\n").is_empty());
    }

    #[test]
    fn rel_paths() {
        assert_eq!(check_rel_path("berth", true).unwrap(), "berth");
        assert_eq!(check_rel_path("/a/b/", false).unwrap(), "a/b");
        assert!(check_rel_path("a/b", true).is_err());
        assert!(check_rel_path("..", true).is_err());
        assert!(check_rel_path("a/../b", false).is_err());
        assert!(check_rel_path("a//b", false).is_err());
        assert!(check_rel_path("", false).is_err());
        assert!(check_rel_path("/", false).is_err());
        assert!(check_rel_path(".", true).is_err());
    }

    #[test]
    fn v1_memory_stat_and_oom_control() {
        let stat = "\
cache 1081344
rss 258048
rss_huge 0
shmem 0
mapped_file 0
swap 0
hierarchical_memory_limit 67108864
hierarchical_memsw_limit 134217728
total_cache 2162688
total_rss 258048
";
        let m = parse_flat_keyed(stat);
        assert_eq!(m["cache"], 1_081_344);
        assert_eq!(m["total_cache"], 2_162_688);
        assert_eq!(m["hierarchical_memsw_limit"], 134_217_728);
        let oom = parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(oom["oom_kill"], 3);
    }

    #[test]
    fn v2_memory_stat_and_events() {
        let stat = "\
anon 1310720
file 4096000
kernel 323584
kernel_stack 32768
pagetables 86016
sock 0
shmem 0
file_mapped 0
file_dirty 0
pgfault 1431
pgmajfault 0
workingset_refault_anon 0
";
        let m = parse_flat_keyed(stat);
        assert_eq!(m["anon"], 1_310_720);
        assert_eq!(m["file"], 4_096_000);
        let ev = parse_flat_keyed("low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n");
        assert_eq!(ev["oom_kill"], 1);
        assert_eq!(ev["max"], 12);
        let cev = parse_flat_keyed("populated 1\nfrozen 0\n");
        assert_eq!(cev["frozen"], 0);
        assert_eq!(cev["populated"], 1);
    }

    #[test]
    fn cpu_stats_v1_and_v2() {
        let v1 = parse_flat_keyed(
            "nr_periods 120\nnr_throttled 7\nthrottled_time 523000000\nnr_bursts 0\nburst_time 0\n",
        );
        assert_eq!(v1["nr_throttled"], 7);
        assert_eq!(v1["throttled_time"], 523_000_000);
        let acct = parse_flat_keyed("user 12\nsystem 3\n");
        assert_eq!(acct["user"] * (1_000_000_000 / USER_HZ), 120_000_000);
        let v2 = parse_flat_keyed(
            "usage_usec 2873\nuser_usec 1000\nsystem_usec 1873\ncore_sched.force_idle_usec 0\n\
             nr_periods 4\nnr_throttled 1\nthrottled_usec 9000\nnr_bursts 0\nburst_usec 0\n",
        );
        assert_eq!(v2["usage_usec"], 2873);
        assert_eq!(v2["throttled_usec"], 9000);
        assert_eq!(v2["core_sched.force_idle_usec"], 0);
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(parse_limit("-1\n").unwrap(), None);
        assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
        assert_eq!(parse_limit("67108864\n").unwrap(), Some(67_108_864));
        assert!(parse_limit("lots").is_err());
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), (None, 100_000));
        assert_eq!(
            parse_cpu_max("50000 100000\n").unwrap(),
            (Some(50_000), 100_000)
        );
        assert!(parse_cpu_max("50000").is_err());
        assert_eq!(parse_u64("42\n").unwrap(), 42);
        assert_eq!(parse_pids("12\n345\n").unwrap(), [12, 345]);
        assert!(parse_pids("12\nx\n").is_err());
        assert_eq!(parse_pids("").unwrap(), Vec::<i32>::new());
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn swap_converts_like_runc() {
        let mib = 1 << 20;
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(128 * mib)).unwrap(),
            Some((64 * mib).to_string())
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(64 * mib)).unwrap(),
            Some("0".into())
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(-1)).unwrap(),
            Some("max".into())
        );
        assert_eq!(v2_swap_max(Some(-1), None).unwrap(), Some("max".into()));
        assert_eq!(v2_swap_max(Some(64 * mib), None).unwrap(), None);
        assert_eq!(v2_swap_max(None, None).unwrap(), None);
        assert!(v2_swap_max(Some(64 * mib), Some(32 * mib)).is_err());
        assert!(v2_swap_max(None, Some(32 * mib)).is_err());
        assert!(v2_swap_max(Some(-1), Some(32 * mib)).is_err());
    }

    #[test]
    fn device_rules() {
        use oci_spec::runtime::{LinuxDeviceCgroupBuilder as B, LinuxDeviceType as T};
        let r = |b: B| device_rule(&b.build().unwrap());
        assert_eq!(
            r(B::default().allow(false).access("rwm")).unwrap(),
            "a *:* rwm"
        );
        assert_eq!(
            r(B::default()
                .allow(true)
                .typ(T::C)
                .major(1i64)
                .minor(3i64)
                .access("rwm"))
            .unwrap(),
            "c 1:3 rwm"
        );
        assert_eq!(
            r(B::default().typ(T::C).major(136i64).access("rwm")).unwrap(),
            "c 136:* rwm"
        );
        assert_eq!(
            r(B::default().typ(T::B).major(-1i64).access("m")).unwrap(),
            "b *:* m"
        );
        assert_eq!(
            r(B::default().typ(T::U).major(5i64).minor(2i64)).unwrap(),
            "c 5:2 rwm"
        );
        assert!(r(B::default().typ(T::P)).is_err());
        assert!(r(B::default().access("rwx")).is_err());
    }

    #[test]
    fn cpu_max_converts_like_runc() {
        assert_eq!(
            v2_cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            v2_cpu_max(Some(-1), Some(100_000)).as_deref(),
            Some("max 100000")
        );
        assert_eq!(v2_cpu_max(Some(20_000), None).as_deref(), Some("20000"));
        assert_eq!(
            v2_cpu_max(None, Some(250_000)).as_deref(),
            Some("max 250000")
        );
        assert_eq!(v2_cpu_max(None, None), None);
        assert_eq!(v2_cpu_max(Some(0), Some(0)), None);
    }
}
