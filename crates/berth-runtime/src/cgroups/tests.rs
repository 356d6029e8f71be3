//! Tests on the host's real cgroups (as root). Every test works in its own
//! cgroup `berth/berth-test-<pid>-<n>` below this process's cgroup, and a
//! guard kills what it started and removes the cgroup even when an assertion
//! fails, so the tests run in parallel and leave nothing behind.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::*;

const MIB: i64 = 1 << 20;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_name() -> String {
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Owns a test cgroup and the processes a test started.
struct Guard {
    name: String,
    mgr: Box<dyn CgroupManager>,
    children: Vec<Child>,
}

impl Guard {
    /// A created cgroup, or `None` (test skipped) without root or cgroups.
    fn new() -> Option<Guard> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: cgroup tests need root");
            return None;
        }
        if host::cgroups().mode == CgroupMode::None {
            eprintln!("skipped: no cgroups on this host");
            return None;
        }
        let name = unique_name();
        let mgr = manager(&CgroupConfig::new(&name)).expect("manager");
        // The guard exists before `create`, so a failing create is cleaned up.
        let g = Guard {
            name,
            mgr,
            children: Vec::new(),
        };
        g.mgr.create().expect("create");
        Some(g)
    }

    /// On v2, whether the cgroup got these controllers (a parent with
    /// processes of its own cannot hand them down); always true on v1.
    fn has_controllers(&self, wanted: &[&str]) -> bool {
        if self.mgr.version() == 1 {
            return true;
        }
        let have = std::fs::read_to_string(self.mgr.paths()[0].join("cgroup.controllers"))
            .unwrap_or_default();
        let ok = wanted
            .iter()
            .all(|w| have.split_whitespace().any(|h| h == *w));
        if !ok {
            eprintln!("skipped: cgroup v2 controllers {wanted:?} not delegated here");
        }
        ok
    }

    /// Starts `sh -c script` with piped stdin (so it can wait for `read`).
    fn spawn_sh(&mut self, script: &str) -> i32 {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    /// Lets the shell's `read` return.
    fn release(&mut self, i: usize) {
        let stdin = self.children[i].stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write stdin");
        stdin.flush().expect("flush");
    }

    /// The file of `name` in the hierarchy whose path contains `hint`
    /// (v1: the controller's mount; v2: the one directory).
    fn file(&self, hint: &str, name: &str) -> PathBuf {
        let paths = self.mgr.paths();
        let dir = if self.mgr.version() == 2 {
            paths[0].clone()
        } else {
            paths
                .iter()
                .find(|p| {
                    p.components().any(|c| {
                        c.as_os_str()
                            .to_string_lossy()
                            .split(',')
                            .any(|s| s == hint)
                    })
                })
                .unwrap_or_else(|| panic!("no {hint} hierarchy in {paths:?}"))
                .clone()
        };
        dir.join(name)
    }

    fn read(&self, hint: &str, name: &str) -> String {
        let f = self.file(hint, name);
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Kill through the cgroup first: a frozen child would never die from
        // a plain kill, and waiting for it would hang.
        let _ = self.mgr.kill_all(libc::SIGKILL);
        let _ = self.mgr.thaw();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.mgr.remove() {
            eprintln!("cleanup of {}: {e}", self.name);
        }
    }
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
        .build()
        .unwrap()
}

fn pids_limit(n: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(n).build().unwrap())
        .build()
        .unwrap()
}

/// The state letter in /proc/PID/stat (after the parenthesised command).
fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn wait_child(c: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = c.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cgroups_names_are_validated() {
    for bad in ["", ".", "..", "a/b", "/"] {
        assert!(
            matches!(
                CgroupConfig::new(bad).relative_path(),
                Err(CgroupError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let mut c = CgroupConfig::new("ctr");
    assert_eq!(c.relative_path().unwrap(), "berth/ctr");
    c.parent = Some("/my/parent/".into());
    assert_eq!(c.relative_path().unwrap(), "my/parent/ctr");
    c.parent = Some("../escape".into());
    assert!(c.relative_path().is_err());
}

#[test]
fn cgroups_create_below_own_cgroup_and_remove() {
    let Some(g) = Guard::new() else { return };
    let own = own_cgroup_paths().unwrap();
    let paths = g.mgr.paths();
    assert!(!paths.is_empty());
    for p in &paths {
        assert!(p.is_dir(), "{} not created", p.display());
        // Which hierarchy: the one whose own directory is a prefix (the
        // longest, since a root "/" is a prefix of everything below it).
        let h = own
            .iter()
            .filter(|h| h.version == g.mgr.version() && p.starts_with(&h.dir))
            .max_by_key(|h| h.dir.components().count())
            .unwrap_or_else(|| panic!("{} is not below an own cgroup", p.display()));
        assert_eq!(p, &h.dir.join("berth").join(&g.name));
        assert_ne!(p.parent(), Some(h.mount_point.as_path()));
    }
    if g.mgr.version() == 1 {
        // One directory per hierarchy used, including the ones this host has.
        for ctrl in ["memory", "cpu", "pids", "freezer"] {
            let h = own.iter().find(|h| h.has(ctrl)).unwrap();
            let want = h.dir.join("berth").join(&g.name);
            assert!(paths.contains(&want), "{ctrl}: {want:?} not in {paths:?}");
        }
        // A new cpuset cgroup got cpus and mems, or no process could join.
        assert!(!g.read("cpuset", "cpuset.cpus").is_empty());
        assert!(!g.read("cpuset", "cpuset.mems").is_empty());
    }
    // Creating twice is fine.
    g.mgr.create().unwrap();
    g.mgr.remove().unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} still there", p.display());
    }
    // Removing twice is fine.
    g.mgr.remove().unwrap();
}

#[test]
fn cgroups_custom_parent_is_kept_on_remove() {
    let Some(_) = Guard::new() else { return };
    let parent = unique_name();
    let cfg = CgroupConfig {
        name: "ctr".into(),
        parent: Some(format!("{parent}/sub")),
    };
    let m = manager(&cfg).unwrap();
    struct Cleanup(Vec<PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_dir(p.join("sub/ctr"));
                let _ = std::fs::remove_dir(p.join("sub"));
                let _ = std::fs::remove_dir(p);
            }
        }
    }
    let parents: Vec<PathBuf> = m
        .paths()
        .iter()
        .map(|p| p.parent().unwrap().parent().unwrap().to_path_buf())
        .collect();
    let _cleanup = Cleanup(parents.clone());
    m.create().unwrap();
    for p in m.paths() {
        assert!(p.ends_with(Path::new(&parent).join("sub/ctr")), "{p:?}");
        assert!(p.is_dir());
    }
    m.remove().unwrap();
    for (p, parent) in m.paths().iter().zip(&parents) {
        assert!(!p.exists());
        assert!(parent.join("sub").is_dir(), "a caller's parent was removed");
    }
}

#[test]
fn cgroups_apply_limits_and_stats_report_them() {
    let Some(g) = Guard::new() else { return };
    if !g.has_controllers(&["memory", "cpu", "pids"]) {
        return;
    }
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .swap(128 * MIB)
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
        .unwrap();
    g.mgr.apply(&r).unwrap();
    let swap_accounted;
    if g.mgr.version() == 1 {
        assert_eq!(
            g.read("memory", "memory.limit_in_bytes"),
            (64 * MIB).to_string()
        );
        swap_accounted = g.file("memory", "memory.memsw.limit_in_bytes").exists();
        if swap_accounted {
            assert_eq!(
                g.read("memory", "memory.memsw.limit_in_bytes"),
                (128 * MIB).to_string()
            );
        }
        assert_eq!(g.read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(g.read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(g.read("cpu", "cpu.shares"), "512");
        assert_eq!(g.read("pids", "pids.max"), "20");
    } else {
        assert_eq!(g.read("", "memory.max"), (64 * MIB).to_string());
        swap_accounted = g.file("", "memory.swap.max").exists();
        if swap_accounted {
            assert_eq!(g.read("", "memory.swap.max"), (64 * MIB).to_string());
        }
        assert_eq!(g.read("", "cpu.max"), "50000 100000");
        assert_eq!(g.read("", "cpu.weight"), "20");
        assert_eq!(g.read("", "pids.max"), "20");
    }
    let s = g.mgr.stats().unwrap();
    let m = s.memory.expect("memory stats");
    assert_eq!(m.limit, Some(64 << 20));
    if swap_accounted {
        assert_eq!(m.memory_swap_limit, Some(128 << 20));
    }
    let c = s.cpu.expect("cpu stats");
    assert_eq!((c.quota_us, c.period_us), (Some(50_000), Some(100_000)));
    assert_eq!(s.pids.expect("pids stats").limit, Some(20));

    // Lowering, raising and lifting both memory limits needs the right write
    // order on v1 (memory <= memory+swap after every write).
    for (mem, sw) in [
        (32 * MIB, 32 * MIB),
        (256 * MIB, 512 * MIB),
        (48 * MIB, 64 * MIB),
    ] {
        g.mgr
            .apply(&resources(mem, sw))
            .unwrap_or_else(|e| panic!("{mem}/{sw}: {e}"));
        let m = g.mgr.stats().unwrap().memory.unwrap();
        assert_eq!(m.limit, Some(mem as u64));
        if swap_accounted {
            assert_eq!(m.memory_swap_limit, Some(sw as u64));
        }
    }
    g.mgr.apply(&resources(-1, 0)).unwrap();
    let m = g.mgr.stats().unwrap().memory.unwrap();
    assert_eq!((m.limit, m.memory_swap_limit), (None, None));
    g.mgr.apply(&pids_limit(0)).unwrap();
    assert_eq!(g.mgr.stats().unwrap().pids.unwrap().limit, None);
    // The JSON form is what `berth stats` will print.
    let json = serde_json::to_value(g.mgr.stats().unwrap()).unwrap();
    assert!(json["memory"]["usage"].is_u64(), "{json}");
}

#[test]
fn cgroups_process_freeze_thaw_kill() {
    let Some(mut g) = Guard::new() else { return };
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    g.children.push(child);
    g.mgr.add_process(pid).unwrap();
    assert_eq!(g.mgr.pids().unwrap(), [pid]);
    for p in g.mgr.paths() {
        let procs = std::fs::read_to_string(p.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == pid.to_string()), "{p:?}");
    }

    g.mgr.freeze().unwrap();
    let frozen_state = if g.mgr.version() == 1 {
        g.read("freezer", "freezer.state") == "FROZEN"
    } else {
        g.read("", "cgroup.events").contains("frozen 1")
    };
    assert!(
        frozen_state || proc_state(pid) == Some('D'),
        "not frozen: state {:?}",
        proc_state(pid)
    );
    g.mgr.freeze().unwrap(); // again: fine

    g.mgr.thaw().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || proc_state(pid) == Some('S')),
        "not running after thaw: {:?}",
        proc_state(pid)
    );
    let st = g.mgr.stats().unwrap();
    assert!(st.cpu.is_some());
    if let Some(p) = st.pids {
        assert_eq!(p.current, 1);
    }

    g.mgr.kill_all(libc::SIGKILL).unwrap();
    let status = wait_child(&mut g.children[0], Duration::from_secs(10)).expect("still alive");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(wait_until(Duration::from_secs(5), || g
        .mgr
        .pids()
        .unwrap()
        .is_empty()));
    g.mgr.remove().unwrap();
    assert!(g.mgr.paths().iter().all(|p| !p.exists()));
}

#[test]
fn cgroups_pids_limit_holds() {
    let Some(mut g) = Guard::new() else { return };
    if !g.has_controllers(&["pids"]) {
        return;
    }
    g.mgr.apply(&pids_limit(5)).unwrap();
    // The shell joins first, then tries to start 20 sleepers (dash's `[` is
    // a builtin, so only `sleep` forks).
    let sh = g.spawn_sh(
        "read x; i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo spawned all",
    );
    g.mgr.add_process(sh).unwrap();
    g.release(0);
    // dash gives up at the first refused fork; either way, give it time.
    let _ = wait_child(&mut g.children[0], Duration::from_secs(5));
    let pids = g.mgr.pids().unwrap();
    assert!(
        !pids.is_empty() && pids.len() <= 5,
        "{} pids: {pids:?}",
        pids.len()
    );
    let s = g.mgr.stats().unwrap().pids.unwrap();
    assert!(s.current <= 5, "pids.current {}", s.current);
    assert_eq!(s.limit, Some(5));
    let events = g.read("pids", "pids.events");
    let refused = parse::parse_flat_keyed(&events)
        .get("max")
        .copied()
        .unwrap_or(0);
    assert!(refused >= 1, "pids.events: {events}");

    // kill_all reaches the orphaned sleepers too.
    g.mgr.kill_all(libc::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || g.mgr.pids().unwrap().is_empty()),
        "left: {:?}",
        g.mgr.pids()
    );
}

#[test]
fn cgroups_memory_limit_oom_kills() {
    let Some(mut g) = Guard::new() else { return };
    if !g.has_controllers(&["memory"]) {
        return;
    }
    if !Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: no python3");
        return;
    }
    g.mgr.apply(&resources(32 * MIB, 32 * MIB)).unwrap();
    // Joins before exec, so everything python touches is charged here.
    let sh = g.spawn_sh("read x; exec python3 -c 'b = b\"x\" * (100 << 20); print(len(b))'");
    g.mgr.add_process(sh).unwrap();
    g.release(0);
    let status = wait_child(&mut g.children[0], Duration::from_secs(60)).expect("not killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let m = g.mgr.stats().unwrap().memory.unwrap();
    assert!(m.oom_kills >= 1, "{m:?}");
    assert_eq!(m.limit, Some(32 << 20));
}

#[test]
fn cgroups_errors_name_the_file() {
    let Some(mut g) = Guard::new() else { return };

    // A process gone: the error names cgroup.procs.
    let e = g.mgr.add_process(i32::MAX).unwrap_err();
    eprintln!("{e}");
    assert!(e.to_string().contains("cgroup.procs"), "{e}");

    // memory+swap below memory is refused before anything is written.
    if g.has_controllers(&["memory"]) {
        let e = g.mgr.apply(&resources(64 * MIB, 32 * MIB)).unwrap_err();
        eprintln!("{e}");
        let file = if g.mgr.version() == 1 {
            "memory.memsw.limit_in_bytes"
        } else {
            "memory.swap.max"
        };
        assert!(e.to_string().contains(file), "{e}");

        // A 1-byte limit below what a process in the cgroup already uses.
        let sh = g.spawn_sh("read x; exec sleep 30");
        g.mgr.add_process(sh).unwrap();
        g.release(0);
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{sh}/comm")).is_ok_and(|c| c.trim() == "sleep")
        }));
        let e = g.mgr.apply(&resources(1, 0)).unwrap_err();
        let (file, dir) = if g.mgr.version() == 1 {
            ("memory.limit_in_bytes", g.file("memory", ""))
        } else {
            ("memory.max", g.file("", ""))
        };
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(
            msg.contains(file) && msg.contains(&*dir.to_string_lossy()),
            "{msg}"
        );
        assert!(
            matches!(e, CgroupError::BelowUsage { limit: 1, .. }),
            "{e:?}"
        );
        // The limit was not changed.
        assert_eq!(g.mgr.stats().unwrap().memory.unwrap().limit, None);
    }

    // Bad signal numbers are refused before anything is signalled.
    assert!(matches!(
        g.mgr.kill_all(-3),
        Err(CgroupError::InvalidSignal(-3))
    ));

    // A cgroup that was never created: removing it is fine, stats name a file.
    let never = manager(&CgroupConfig::new(unique_name())).unwrap();
    never.remove().unwrap();
    assert!(never.paths().iter().all(|p| !p.exists()));
    let e = never.stats().unwrap_err();
    assert!(e.to_string().contains("berth-test-"), "{e}");
}

#[test]
fn cgroups_v1_device_rules_are_enforced() {
    let Some(mut g) = Guard::new() else { return };
    if g.mgr.version() != 1 {
        eprintln!("skipped: device rules are v1-only here");
        return;
    }
    // Docker's shape: deny everything, then allow /dev/null (1:3) only.
    let rule = |allow: bool, typ, major: Option<i64>, minor: Option<i64>| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access("rwm");
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    };
    let r = LinuxResourcesBuilder::default()
        .devices(vec![
            rule(false, LinuxDeviceType::A, None, None),
            rule(true, LinuxDeviceType::C, Some(1), Some(3)),
        ])
        .build()
        .unwrap();
    g.mgr.apply(&r).unwrap();
    assert_eq!(g.read("devices", "devices.list"), "c 1:3 rwm");
    let sh = g.spawn_sh(
        "read x; echo hi > /dev/null || exit 3; head -c1 /dev/zero > /dev/null && exit 4; exit 0",
    );
    g.mgr.add_process(sh).unwrap();
    g.release(0);
    let status = wait_child(&mut g.children[0], Duration::from_secs(10)).expect("hung");
    assert_eq!(
        status.code(),
        Some(0),
        "/dev/null must open, /dev/zero must not"
    );
}
