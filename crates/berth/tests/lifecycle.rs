//! Container lifecycle: detached runs under a monitor, ps, logs, stop, kill,
//! rm, wait, inspect, restart policies, and crash safety.

mod common;

use std::time::{Duration, Instant};

use common::{Store, fixture};
use serde_json::Value;

fn busybox() -> Store {
    let s = Store::new();
    s.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
    s
}

fn inspect(s: &Store, name: &str) -> Value {
    let v: Value = serde_json::from_str(&s.ok(&["inspect", name])).unwrap();
    v[0].clone()
}

/// Polls until `f` holds (bounded; these are not timing assertions).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(s: &Store, name: &str) -> String {
    inspect(s, name)["State"]["Status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Nothing of the store's containers remains: mounts, cgroups, processes.
fn assert_clean(s: &Store) {
    let root = s.dir.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&root), "mounts left: {mounts}");
    for d in std::fs::read_dir(s.root().join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = d.file_name().to_string_lossy().into_owned();
        let out = std::process::Command::new("find")
            .args(["/sys/fs/cgroup", "-maxdepth", "6", "-name", &id])
            .output()
            .unwrap();
        assert!(out.stdout.is_empty(), "cgroup left for {id}");
    }
}

#[test]
fn detached_run_ps_logs_stop_rm() {
    let s = busybox();
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox",
        "sh",
        "-c",
        "echo hello; echo oops >&2; sleep 60",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    eventually("running", || status(&s, "web") == "running");
    let ps = s.ok(&["ps"]);
    assert!(
        ps.contains(&id[..12]) && ps.contains("web") && ps.contains("Up "),
        "{ps}"
    );
    assert_eq!(s.ok(&["ps", "-q"]).trim(), &id[..12]);
    eventually("logs", || s.run(&["logs", "web"]).stdout.contains("hello"));
    let r = s.run(&["logs", "web"]);
    assert_eq!(r.stdout, "hello\n");
    assert_eq!(r.stderr, "oops\n");
    let ts = s.ok(&["logs", "-t", "--tail", "2", &id[..8]]);
    assert!(
        ts.starts_with("20") && ts.trim_end().ends_with("hello"),
        "{ts}"
    );
    let i = inspect(&s, "web");
    assert_eq!(i["State"]["Running"], true);
    assert!(i["State"]["Pid"].as_i64().unwrap() > 0);
    assert_eq!(i["Name"], "/web");
    // Running: rm refuses without -f.
    let err = s.fails(&["rm", "web"]);
    assert!(err.contains("container is running"), "{err}");
    // sh as PID 1 ignores SIGTERM: stop escalates to SIGKILL after -t.
    assert_eq!(s.ok(&["stop", "-t", "1", "web"]).trim(), "web");
    let i = inspect(&s, "web");
    assert_eq!(i["State"]["Status"], "exited");
    assert_eq!(i["State"]["ExitCode"], 137);
    assert!(s.ok(&["ps"]).lines().count() == 1, "only the header");
    assert!(s.ok(&["ps", "-a"]).contains("Exited (137)"));
    // Logs survive the container.
    assert_eq!(s.run(&["logs", "web"]).stdout, "hello\n");
    s.ok(&["rm", "web"]);
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "");
    assert_clean(&s);
}

#[test]
fn names_must_be_unique_and_valid() {
    let s = busybox();
    s.ok(&["create", "--name", "one", "busybox", "true"]);
    let r = s.run(&["run", "--name", "one", "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("already in use"), "{}", r.stderr);
    let r = s.run(&["create", "--name", "bad name", "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("Invalid container name"), "{}", r.stderr);
    let r = s.run(&["start", "nosuch"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("No such container: nosuch"),
        "{}",
        r.stderr
    );
    assert_eq!(s.ok(&["ps", "-a", "-q"]).lines().count(), 1);
}

#[test]
fn create_start_wait_and_exit_codes() {
    let s = busybox();
    let id = s
        .ok(&["create", "busybox", "sh", "-c", "echo made; exit 3"])
        .trim()
        .to_string();
    assert_eq!(status(&s, &id), "created");
    assert!(s.ok(&["ps", "-a"]).contains("Created"));
    s.ok(&["start", &id[..12]]);
    assert_eq!(s.ok(&["wait", &id[..12]]).trim(), "3");
    assert_eq!(inspect(&s, &id)["State"]["ExitCode"], 3);
    assert_eq!(s.ok(&["logs", &id]), "made\n");
    // start -a attaches and passes the exit code on.
    let r = s.run(&["start", "-a", &id]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("made"), "{}", r.stdout);
    // A missing program fails the start with 127 and is recorded.
    let id = s.ok(&["create", "busybox", "nope"]).trim().to_string();
    let r = s.run(&["start", &id]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
    assert_eq!(inspect(&s, &id)["State"]["ExitCode"], 127);
    let r = s.run(&["run", "-d", "busybox", "nope"]);
    assert_eq!(r.code, 127, "{}", r.stderr);
}

#[test]
fn foreground_run_keeps_a_record_unless_rm() {
    let s = busybox();
    let r = s.run(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ]);
    assert_eq!(r.code, 5);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(inspect(&s, "fg")["State"]["ExitCode"], 5);
    assert_eq!(s.run(&["logs", "fg"]).stdout, "out\n");
    s.ok(&["run", "--rm", "busybox", "true"]);
    assert_eq!(s.ok(&["ps", "-a", "-q"]).lines().count(), 1);
    // -i passes stdin through.
    let r = s.run_stdin(
        &[
            "run",
            "-i",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "read x; echo got $x",
        ],
        b"hi\n",
    );
    assert_eq!(r.stdout, "got hi\n");
}

#[test]
fn detached_rm_removes_itself() {
    let s = busybox();
    let id = s
        .ok(&["run", "-d", "--rm", "busybox", "sh", "-c", "exit 0"])
        .trim()
        .to_string();
    eventually("auto removal", || s.run(&["inspect", &id]).code != 0);
    assert_clean(&s);
}

#[test]
fn kill_delivers_signals() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 9' USR1; while true; do sleep 0.1; done",
    ]);
    eventually("running", || status(&s, "trap") == "running");
    std::thread::sleep(Duration::from_millis(200));
    s.ok(&["kill", "-s", "USR1", "trap"]);
    assert_eq!(s.ok(&["wait", "trap"]).trim(), "9");
    assert!(s.ok(&["logs", "trap"]).contains("got-usr1"));
    let err = s.fails(&["kill", "trap"]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn restart_policy_on_failure() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    eventually("retries exhausted", || {
        let i = inspect(&s, "flaky");
        i["State"]["Status"] == "exited" && i["RestartCount"] == 2
    });
    let tries = s.ok(&["logs", "flaky"]).matches("try").count();
    assert_eq!(tries, 3, "first run plus two restarts");
    let r = s.run(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(r.code, 125);
    let r = s.run(&["run", "--restart", "sometimes", "busybox", "true"]);
    assert_eq!(r.code, 125);
}

#[test]
fn oom_kill_is_visible_in_inspect() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "-m",
        "32m",
        "--memory-swap",
        "32m",
        "busybox",
        "sh",
        "-c",
        "head -c 200000000 /dev/zero | tail",
    ]);
    assert_eq!(s.ok(&["wait", "hog"]).trim(), "137");
    let i = inspect(&s, "hog");
    assert_eq!(i["State"]["OOMKilled"], true, "{i}");
    assert_eq!(i["HostConfig"]["Memory"], 32 << 20);
}

#[test]
fn a_killed_monitor_is_reported_and_rm_f_cleans_up() {
    let s = busybox();
    s.ok(&["run", "-d", "--name", "orphan", "busybox", "sleep", "60"]);
    eventually("running", || status(&s, "orphan") == "running");
    let rec: Value = serde_json::from_slice(
        &std::fs::read(
            s.root()
                .join("containers")
                .join(inspect(&s, "orphan")["Id"].as_str().unwrap())
                .join("record.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let monitor = rec["state"]["monitor_pid"].as_i64().unwrap() as i32;
    let pid = rec["state"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: sending SIGKILL to the monitor this test started.
    unsafe { libc_kill(monitor, 9) };
    eventually("dead state", || status(&s, "orphan") == "dead");
    assert!(s.ok(&["ps", "-a"]).contains("Dead"));
    s.ok(&["rm", "-f", "orphan"]);
    eventually("process gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert_clean(&s);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn pause_unpause_stats_top_rename_prune() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    eventually("running", || status(&s, "ticker") == "running");
    s.ok(&["pause", "ticker"]);
    assert_eq!(status(&s, "ticker"), "paused");
    assert!(s.ok(&["ps"]).contains("(Paused)"));
    // Frozen: the log stops growing. A line written just before the freeze may
    // still be on its way from the pipe to the log: let that settle first.
    let mut before = s.ok(&["logs", "ticker"]).len();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = s.ok(&["logs", "ticker"]).len();
        if now == before {
            break;
        }
        before = now;
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        s.ok(&["logs", "ticker"]).len(),
        before,
        "a paused container wrote output"
    );
    let err = s.fails(&["pause", "ticker"]);
    assert!(err.contains("already paused"), "{err}");
    s.ok(&["unpause", "ticker"]);
    assert_eq!(status(&s, "ticker"), "running");
    eventually("output resumes", || {
        s.ok(&["logs", "ticker"]).len() > before
    });
    let st: Value = serde_json::from_str(
        s.ok(&["stats", "--no-stream", "--format", "json", "ticker"])
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        st["MemUsage"].as_str().unwrap().ends_with("/ 67.1MB"),
        "{st}"
    );
    assert!(st["PIDs"].as_str().unwrap().parse::<u32>().unwrap() >= 1);
    let top = s.ok(&["top", "ticker"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.contains("while true"), "{top}");
    s.ok(&["rename", "ticker", "tocker"]);
    assert_eq!(inspect(&s, "tocker")["Name"], "/tocker");
    assert!(s.run(&["inspect", "ticker"]).code != 0);
    s.ok(&["create", "--name", "idle", "busybox", "true"]);
    let out = s.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    // The running one stays; the created one is gone.
    assert_eq!(
        s.ok(&["ps", "-a", "--format", "{{.Names}}"]).trim(),
        "tocker"
    );
    s.ok(&["rm", "-f", "tocker"]);
    assert_clean(&s);
}

#[test]
fn env_file_and_labels() {
    let s = busybox();
    let dir = common::scratch();
    let f = dir.path().join("env.list");
    std::fs::write(&f, "# comment\n\nA=1\nB=two words\n").unwrap();
    let out = s.ok(&[
        "run",
        "--rm",
        "--env-file",
        f.to_str().unwrap(),
        "-e",
        "A=3",
        "busybox",
        "sh",
        "-c",
        "echo $A $B",
    ]);
    assert_eq!(out, "3 two words\n");
    std::fs::write(&f, "BAD LINE=1\n").unwrap();
    let r = s.run(&[
        "run",
        "--rm",
        "--env-file",
        f.to_str().unwrap(),
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("env.list:1"), "{}", r.stderr);
    s.ok(&[
        "create",
        "--name",
        "lab",
        "--label",
        "team=core",
        "--label",
        "tier=db",
        "busybox",
        "true",
    ]);
    let i = inspect(&s, "lab");
    assert_eq!(i["Config"]["Labels"]["team"], "core");
    assert_eq!(i["Config"]["Labels"]["tier"], "db");
}

#[test]
fn exec_joins_the_container() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--hostname",
        "boxhost",
        "busybox",
        "sleep",
        "60",
    ]);
    eventually("running", || status(&s, "box") == "running");
    let out = s.ok(&["exec", "box", "sh", "-c", "hostname; echo $$; grep -E '^(CapEff|Seccomp):' /proc/self/status; ps -o pid,comm | grep -c sleep"]);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "boxhost", "{out}");
    assert_ne!(l[1], "1", "exec'd process is not PID 1: {out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert_eq!(l.last().unwrap(), &"1", "sees the container's sleep: {out}");
    let r = s.run(&["exec", "box", "sh", "-c", "exit 4"]);
    assert_eq!(r.code, 4);
    let out = s.ok(&[
        "exec",
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $X",
    ]);
    assert_eq!(out, "65534\n/tmp\n1\n");
    let r = s.run(&["exec", "box", "nosuch"]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    let r = s.run_stdin(
        &["exec", "-i", "box", "sh", "-c", "read x; echo got $x"],
        b"yo\n",
    );
    assert_eq!(r.stdout, "got yo\n");
    assert_eq!(s.run(&["exec", "-d", "box", "sleep", "30"]).code, 0);
    assert!(s.ok(&["top", "box"]).contains("sleep 30"));
    s.ok(&["stop", "-t", "0", "box"]);
    let r = s.run(&["exec", "box", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not running"), "{}", r.stderr);
    s.ok(&["rm", "box"]);
    assert_clean(&s);
}

#[test]
fn system_prune_removes_what_nothing_uses_and_crash_leftovers() {
    let s = busybox();
    s.ok(&[
        "create", "--name", "stopped", "-v", "/anon", "busybox", "true",
    ]);
    s.ok(&["run", "-d", "--name", "live", "busybox", "sleep", "60"]);
    s.ok(&["import", &fixture("busybox.rootfs.tar")]); // dangling image
    // What a crashed load would leave behind.
    let img = s.root().join("image");
    std::fs::create_dir_all(img.join("snapshots/.tmp-crashed/usr")).unwrap();
    std::fs::write(img.join("content/ingest/blob-crashed"), b"partial").unwrap();
    let out = s.ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert!(out.contains("deleted: sha256:"), "{out}");
    assert_eq!(s.ok(&["ps", "-a", "--format", "{{.Names}}"]).trim(), "live");
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    assert_eq!(s.images().len(), 1, "busybox stays: a container uses it");
    assert!(!img.join("snapshots/.tmp-crashed").exists());
    assert!(!img.join("content/ingest/blob-crashed").exists());
    assert_eq!(s.ok(&["system", "check"]).trim(), "no problems found");
    s.ok(&["rm", "-f", "live"]);
    assert_clean(&s);
}

#[test]
fn init_reaps_and_forwards_signals() {
    let s = busybox();
    // PID 1 is berth's init; the program runs as its child.
    let out = s.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "2", "{out}");
    // Without --init, sh as PID 1 ignores SIGTERM and stop must SIGKILL (137);
    // with it, SIGTERM reaches sleep, which dies of it (143).
    s.ok(&[
        "run", "-d", "--name", "ini", "--init", "busybox", "sleep", "60",
    ]);
    eventually("running", || status(&s, "ini") == "running");
    s.ok(&["stop", "-t", "10", "ini"]);
    assert_eq!(inspect(&s, "ini")["State"]["ExitCode"], 143);
    // Orphans are reaped: no zombie survives under the init.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "reap",
        "--init",
        "busybox",
        "sh",
        "-c",
        "(sleep 0.1 &) ; sleep 60",
    ]);
    eventually("running", || status(&s, "reap") == "running");
    std::thread::sleep(Duration::from_millis(500));
    let ps = s.ok(&["exec", "reap", "ps", "-o", "stat,comm"]);
    assert!(!ps.lines().any(|l| l.trim_start().starts_with('Z')), "{ps}");
    s.ok(&["rm", "-f", "ini", "reap"]);
    assert_clean(&s);
}

#[test]
fn cp_both_directions_and_never_out_of_the_container() {
    let s = busybox();
    let host = common::scratch();
    let h = host.path();
    std::fs::create_dir_all(h.join("dir/sub")).unwrap();
    std::fs::write(h.join("dir/a"), "a\n").unwrap();
    std::fs::write(h.join("dir/sub/b"), "b\n").unwrap();
    std::fs::write(h.join("file"), "f\n").unwrap();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "cpx",
        "busybox",
        "sh",
        "-c",
        "mkdir /data; echo inner > /data/x; ln -s / /escape; sleep 60",
    ]);
    eventually("ready", || {
        s.run(&["exec", "cpx", "test", "-e", "/escape"]).code == 0
    });
    // Out of the container: a directory, a file.
    s.ok(&["cp", "cpx:/data", h.join("out").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(h.join("out/x")).unwrap(), "inner\n");
    s.ok(&["cp", "cpx:/data/x", h.join("dir").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(h.join("dir/x")).unwrap(), "inner\n");
    // A symlink to / inside the container resolves to the container's root.
    s.ok(&[
        "cp",
        "cpx:/escape/etc/passwd",
        h.join("pw").to_str().unwrap(),
    ]);
    let container_passwd = s.ok(&["exec", "cpx", "cat", "/etc/passwd"]);
    assert_eq!(
        std::fs::read_to_string(h.join("pw")).unwrap(),
        container_passwd
    );
    // Into the container: into a directory, and as a new name.
    s.ok(&["cp", h.join("dir").to_str().unwrap(), "cpx:/tmp/"]);
    assert_eq!(s.ok(&["exec", "cpx", "cat", "/tmp/dir/sub/b"]), "b\n");
    s.ok(&["cp", h.join("file").to_str().unwrap(), "cpx:/tmp/renamed"]);
    assert_eq!(s.ok(&["exec", "cpx", "cat", "/tmp/renamed"]), "f\n");
    // Writing through the container's symlink to / stays inside it.
    s.ok(&[
        "cp",
        h.join("file").to_str().unwrap(),
        "cpx:/escape/tmp/through-link",
    ]);
    assert_eq!(s.ok(&["exec", "cpx", "cat", "/tmp/through-link"]), "f\n");
    assert!(!std::path::Path::new("/tmp/through-link").exists());
    // Stopped containers too.
    s.ok(&["stop", "-t", "0", "cpx"]);
    s.ok(&[
        "cp",
        "cpx:/tmp/renamed",
        h.join("stopped").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(h.join("stopped")).unwrap(), "f\n");
    let err = s.fails(&["cp", "cpx:/nope", h.join("n").to_str().unwrap()]);
    assert!(err.contains("/nope"), "{err}");
    s.ok(&["rm", "cpx"]);
    assert_clean(&s);
}

#[test]
fn signals_to_a_foreground_berth_reach_the_process() {
    let s = busybox();
    let mut child = s
        .cmd(&[
            "run", "--rm", "--init", "--name", "fgsig", "busybox", "sleep", "30",
        ])
        .spawn()
        .unwrap();
    eventually("running", || {
        s.run(&["inspect", "fgsig"]).code == 0 && status(&s, "fgsig") == "running"
    });
    // SAFETY: signalling the berth process this test started.
    unsafe { libc_kill(child.id() as i32, 15) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143), "SIGTERM reached sleep");
}

#[test]
fn ps_filters_and_restart() {
    let s = busybox();
    s.ok(&[
        "run", "-d", "--name", "up", "--label", "tier=web", "busybox", "sleep", "60",
    ]);
    assert_eq!(
        s.run(&["run", "--name", "done", "busybox", "sh", "-c", "exit 2"])
            .code,
        2
    );
    eventually("running", || status(&s, "up") == "running");
    let names = |f: &str| {
        s.ok(&["ps", "-a", "--filter", f, "--format", "{{.Names}}"])
            .trim()
            .to_string()
    };
    assert_eq!(names("status=running"), "up");
    assert_eq!(names("status=exited"), "done");
    assert_eq!(names("exited=2"), "done");
    assert_eq!(names("label=tier=web"), "up");
    assert_eq!(names("name=do"), "done");
    assert_eq!(names("ancestor=busybox").lines().count(), 2);
    let err = s.fails(&["ps", "--filter", "bogus=1"]);
    assert!(err.contains("bogus"), "{err}");
    let pid1 = inspect(&s, "up")["State"]["Pid"].as_i64().unwrap();
    s.ok(&["restart", "-t", "0", "up"]);
    eventually("running again", || status(&s, "up") == "running");
    assert_ne!(inspect(&s, "up")["State"]["Pid"].as_i64().unwrap(), pid1);
    s.ok(&["rm", "-f", "up", "done"]);
    assert_clean(&s);
}
