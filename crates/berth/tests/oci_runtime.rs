//! The runc-compatible OCI runtime (`berth runtime …`, or the binary named
//! `berth-runtime`): bundles made by `runc spec` over the busybox fixture,
//! driven the way engines drive runc, and podman using berth as its runtime.
//!
//! Every test has its own scratch directory (bundle, `--root` state dir) and
//! unique container IDs, and deletes its containers with `delete --force`
//! when it ends, pass or fail. The podman test keeps podman's storage inside
//! its scratch directory and resets it (and unmounts leftovers) on drop; its
//! containers' runtime state lives in berth-runtime's default `--root`
//! (/run/berth-runtime), because podman does not pass `--runtime-flag`s to
//! the `delete` its cleanup process runs.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, scratch};
use serde_json::Value;

// ---------------------------------------------------------------------------
// helpers

/// What a command did.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The runtime as some binary name sees it, over one state directory.
struct Rt {
    exe: PathBuf,
    /// `berth runtime …` rather than a binary named `berth-runtime`.
    subcommand: bool,
    root: PathBuf,
}

impl Rt {
    fn berth(root: &Path) -> Rt {
        Rt {
            exe: env!("CARGO_BIN_EXE_berth").into(),
            subcommand: true,
            root: root.into(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        if self.subcommand {
            c.arg("runtime");
        }
        c.arg("--root").arg(&self.root).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = self.cmd(args).output().expect("spawn the runtime");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "runtime {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Insists on failure with a message naming `what`; returns stderr.
    fn fails(&self, args: &[&str], what: &str) -> String {
        let r = self.run(args);
        assert_ne!(r.code, 0, "runtime {args:?} should fail\n{}", r.stdout);
        assert!(
            r.stderr.contains(what),
            "runtime {args:?}: error should name {what:?}: {}",
            r.stderr
        );
        r.stderr
    }

    /// `create`. The container's init inherits the create process's stdio,
    /// so that goes to files (a pipe would stay open as long as it runs).
    fn create(&self, bundle: &Path, id: &str, extra: &[&str]) -> i32 {
        let dir = bundle.parent().unwrap();
        let out = File::create(dir.join(format!("{id}.out"))).unwrap();
        let err = File::create(dir.join(format!("{id}.err"))).unwrap();
        let pid_file = dir.join(format!("{id}.pid"));
        let mut c = self.cmd(&["create", "--bundle"]);
        c.arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(extra)
            .arg(id)
            .stdout(out)
            .stderr(err.try_clone().unwrap());
        let status = c.status().expect("spawn create");
        let errors = fs::read_to_string(dir.join(format!("{id}.err"))).unwrap_or_default();
        assert!(status.success(), "create {id} failed: {errors}");
        let pid: i32 = fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a PID in the pid file");
        pid
    }

    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }

    fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `state` reports `want`.
    fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.status(id);
            if s == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: status {s}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Deletes the containers (with --force) when dropped, pass or fail.
struct Cleanup<'a> {
    rt: &'a Rt,
    ids: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.rt.cmd(&["delete", "--force", id]).output();
        }
    }
}

/// A unique container ID for this test process.
fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// A bundle from `runc spec` with the busybox fixture as its rootfs and the
/// process changed by `edit` (the root is made writable, no terminal).
fn bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let b = dir.join("bundle");
    fs::create_dir_all(b.join("rootfs")).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(fixture("busybox.rootfs.tar"))
        .arg("-C")
        .arg(b.join("rootfs"))
        .status()
        .expect("tar");
    assert!(st.success(), "unpacking busybox.rootfs.tar");
    let st = match Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&b)
        .status()
    {
        Ok(s) => s,
        Err(e) => panic!("runc is not installed ({e}); run scripts/deps.sh"),
    };
    assert!(st.success(), "runc spec");
    let p = b.join("config.json");
    let mut v: Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    v["process"]["terminal"] = Value::Bool(false);
    v["root"]["readonly"] = Value::Bool(false);
    edit(&mut v);
    fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    b
}

fn set_args(v: &mut Value, args: &[&str]) {
    v["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
}

/// The process's cgroup directories, from /proc/PID/cgroup (v1 controllers
/// and, on a unified host, the v2 one).
fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.splitn(3, ':').collect();
        if f.len() != 3 || f[2] == "/" {
            continue;
        }
        let base = match f[1] {
            "" => PathBuf::from("/sys/fs/cgroup"),
            c if c.starts_with("name=") => continue,
            c => PathBuf::from("/sys/fs/cgroup").join(c.split(',').next().unwrap()),
        };
        let dir = base.join(f[2].trim_start_matches('/'));
        if dir.is_dir() {
            out.push(dir);
        }
    }
    out
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

/// Waits until a file exists and returns its content.
fn wait_file(p: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            return s;
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of /proc/PID/status (`S`, `D`, `T`, `Z` …).
fn proc_state(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| s.trim().chars().take(1).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 1. the lifecycle on a `runc spec` bundle

/// create → created (pid file, new namespaces, a cgroup), start → running,
/// kill → stopped, delete → no state, no cgroup; and the errors runc gives.
#[test]
fn lifecycle_of_a_runc_spec_bundle() {
    let dir = scratch();
    let b = bundle(dir.path(), |v| {
        set_args(v, &["sh", "-c", "echo hi > /tmp/out; sleep 30"])
    });
    let rt = Rt::berth(&dir.path().join("state"));
    let c1 = id("life");
    let _cleanup = Cleanup {
        rt: &rt,
        ids: vec![c1.clone()],
    };

    let pid = rt.create(&b, &c1, &[]);
    let st = rt.state(&c1);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], c1.as_str());
    assert_eq!(st["pid"], pid, "state and --pid-file agree");
    assert_eq!(
        st["bundle"],
        b.canonicalize().unwrap().display().to_string()
    );
    assert!(
        st["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1."))
    );
    assert!(rt.root.join(&c1).join("state.json").is_file());
    // Created, not started: the program has not run.
    assert!(!b.join("rootfs/tmp/out").exists());
    let p = pid.to_string();
    for kind in ["pid", "mnt", "uts", "ipc", "net"] {
        assert_ne!(ns(&p, kind), ns("self", kind), "{kind} namespace");
    }
    let cgroups = cgroup_dirs(pid);
    assert!(!cgroups.is_empty(), "the init has a cgroup of its own");
    assert!(
        cgroups
            .iter()
            .all(|d| d.ends_with(format!("berth-runtime/{c1}"))),
        "{cgroups:?}"
    );
    let list = rt.ok(&["list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&c1) && l.contains("created")),
        "{list}"
    );
    let json: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json[0]["id"], c1.as_str());

    // Errors name the container.
    rt.fails(&["create", "--bundle", b.to_str().unwrap(), &c1], &c1);
    rt.fails(&["delete", &c1, "--bogus-flag"], "--bogus-flag");

    rt.ok(&["start", &c1]);
    assert_eq!(rt.status(&c1), "running");
    assert_eq!(wait_file(&b.join("rootfs/tmp/out")), "hi\n");
    rt.fails(&["start", &c1], &c1);
    rt.fails(&["delete", &c1], &c1);
    assert!(
        rt.root.join(&c1).exists(),
        "a refused delete keeps the state"
    );

    // PID 1 of a namespace ignores TERM without a handler; KILL is forced.
    rt.ok(&["kill", &c1, "TERM"]);
    rt.ok(&["kill", &c1, "KILL"]);
    rt.wait_status(&c1, "stopped");
    assert_eq!(rt.state(&c1)["pid"], 0, "runc reports pid 0 once stopped");
    rt.fails(&["kill", &c1, "KILL"], &c1);

    rt.ok(&["delete", &c1]);
    assert!(!rt.root.join(&c1).exists(), "state directory removed");
    for d in &cgroups {
        assert!(!d.exists(), "cgroup {} removed", d.display());
    }
    assert!(!rt.ok(&["list"]).contains(&c1));
    rt.fails(&["state", &c1], &c1);
    rt.fails(&["delete", &c1], &c1);
    // --force on a missing container is fine (engines clean up that way).
    rt.ok(&["delete", "--force", &c1]);
}

// ---------------------------------------------------------------------------
// 2. run

/// `run` in the foreground exits with the container's exit code and leaves
/// nothing behind.
#[test]
fn run_exits_with_the_containers_code() {
    let dir = scratch();
    let b = bundle(dir.path(), |v| {
        set_args(v, &["sh", "-c", "echo out; exit 3"])
    });
    let rt = Rt::berth(&dir.path().join("state"));
    let c = id("run");
    let _cleanup = Cleanup {
        rt: &rt,
        ids: vec![c.clone()],
    };
    let r = rt.run(&["run", "--bundle", b.to_str().unwrap(), &c]);
    assert_eq!(r.code, 3, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert!(!rt.root.join(&c).exists(), "run removes the container");

    // A program that is not there: create fails with Docker's code and a message.
    let b2 = bundle(&dir.path().join("b2"), |v| set_args(v, &["/nope"]));
    let r = rt.run(&["run", "--bundle", b2.to_str().unwrap(), &c]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    assert!(r.stderr.contains("/nope"), "{}", r.stderr);
    assert!(!rt.root.join(&c).exists(), "a failed create leaves nothing");
}

// ---------------------------------------------------------------------------
// 3. pause, resume, ps, exec

#[test]
fn pause_resume_ps_and_exec() {
    let dir = scratch();
    let b = bundle(dir.path(), |v| {
        set_args(v, &["sh", "-c", "echo hi > /tmp/out; exec sleep 60"])
    });
    let rt = Rt::berth(&dir.path().join("state"));
    let c = id("ops");
    let _cleanup = Cleanup {
        rt: &rt,
        ids: vec![c.clone()],
    };
    let pid = rt.create(&b, &c, &[]);
    rt.ok(&["start", &c]);
    wait_file(&b.join("rootfs/tmp/out"));

    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &c])).unwrap();
    assert_eq!(pids, vec![pid]);
    let table = rt.ok(&["ps", &c]);
    assert!(table.lines().next().unwrap().contains("PID"), "{table}");
    assert!(
        table.lines().skip(1).any(|l| l.contains(&pid.to_string())),
        "{table}"
    );

    rt.ok(&["pause", &c]);
    assert_eq!(rt.status(&c), "paused");
    let frozen = cgroup_dirs(pid).iter().any(|d| {
        fs::read_to_string(d.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
            || fs::read_to_string(d.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
    });
    assert!(frozen, "the cgroup is frozen");
    rt.fails(&["pause", &c], &c);
    rt.fails(&["exec", &c, "true"], "paused");
    rt.ok(&["resume", &c]);
    assert_eq!(rt.status(&c), "running");
    assert!(matches!(proc_state(pid).as_str(), "S" | "R"), "thawed");
    rt.fails(&["resume", &c], &c);

    // exec joins the container: same namespaces, its root, its cgroup.
    assert_eq!(rt.ok(&["exec", &c, "cat", "/tmp/out"]), "hi\n");
    let r = rt.run(&["exec", &c, "sh", "-c", "exit 5"]);
    assert_eq!(r.code, 5, "exec passes the exit code on: {}", r.stderr);
    let out = rt.ok(&[
        "exec",
        "-e",
        "FOO=bar",
        &c,
        "sh",
        "-c",
        "echo $FOO; ls /proc/1/ns/pid",
    ]);
    assert_eq!(out, "bar\n/proc/1/ns/pid\n");
    let pid_file = dir.path().join("exec.pid");
    let mut cmd = rt.cmd(&["exec", "-d", "--pid-file"]);
    cmd.arg(&pid_file).args([c.as_str(), "sleep", "60"]);
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let epid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(ns(&epid.to_string(), "pid"), ns(&pid.to_string(), "pid"));
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &c])).unwrap();
    assert!(pids.contains(&epid) && pids.contains(&pid), "{pids:?}");

    // --all reaches the exec'd process too; delete --force cleans up.
    rt.ok(&["kill", "--all", &c, "KILL"]);
    rt.wait_status(&c, "stopped");
    rt.ok(&["delete", &c]);
}

// ---------------------------------------------------------------------------
// 4. the berth-runtime name

/// A symlink named `berth-runtime` is the runtime, with runc's global flags
/// before the command as podman passes them.
#[test]
fn berth_runtime_name() {
    let dir = scratch();
    let b = bundle(dir.path(), |v| set_args(v, &["sleep", "60"]));
    let link = dir.path().join("berth-runtime");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), &link).unwrap();
    let rt = Rt {
        exe: link.clone(),
        subcommand: false,
        root: dir.path().join("state"),
    };
    let c = id("name");
    let _cleanup = Cleanup {
        rt: &rt,
        ids: vec![c.clone()],
    };
    let v = rt.ok(&["--version"]);
    assert!(v.starts_with("berth-runtime version"), "{v}");
    let log = dir.path().join("runtime.log");
    let pid = rt.create(
        &b,
        &c,
        &["--log", log.to_str().unwrap(), "--log-format", "json"],
    );
    rt.ok(&["start", &c]);
    assert_eq!(rt.state(&c)["pid"], pid);
    // An error reaches the JSON log, which conmon reads back.
    let mut cmd = Command::new(&link);
    cmd.args([
        "--root",
        rt.root.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ])
    .args(["--log-format=json", "start", &c]);
    assert!(!cmd.output().unwrap().status.success());
    let last: Value =
        serde_json::from_str(fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains(&c), "{last}");
    // The systemd cgroup driver is refused clearly.
    rt.fails(
        &[
            "--systemd-cgroup",
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "other",
        ],
        "systemd",
    );
    rt.ok(&["delete", "--force", &c]);
    assert!(!rt.root.join(&c).exists());

    let f: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(
        f["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&"pid".into())
    );
    assert_eq!(f["linux"]["cgroup"]["systemd"], false);
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
}

// ---------------------------------------------------------------------------
// 5. --console-socket

/// With process.terminal the init allocates a pty inside the container and
/// sends the master over --console-socket (SCM_RIGHTS); the slave is the
/// program's terminal.
#[test]
fn console_socket_receives_the_pty_master() {
    let dir = scratch();
    let b = bundle(dir.path(), |v| {
        v["process"]["terminal"] = Value::Bool(true);
        v["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 100});
        set_args(v, &["sh", "-c", "tty; stty size; read x; echo got $x"]);
    });
    let rt = Rt::berth(&dir.path().join("state"));
    let c = id("tty");
    let _cleanup = Cleanup {
        rt: &rt,
        ids: vec![c.clone()],
    };
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // terminal: true needs the socket.
    rt.fails(
        &["create", "--bundle", b.to_str().unwrap(), &c],
        "console-socket",
    );
    rt.create(&b, &c, &["--console-socket", sock.to_str().unwrap()]);
    let (conn, _) = listener.accept().unwrap();
    let (master, name) = berth_runtime::linux::oci::recv_fd(&conn).unwrap();
    assert_eq!(String::from_utf8_lossy(&name), "/dev/pts/0");
    let mut reader = File::from(master);
    let mut writer = reader.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        // EIO once the last slave descriptor closes.
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rt.ok(&["start", &c]);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = false;
    while !seen.contains("got abc") {
        assert!(
            Instant::now() < deadline,
            "terminal output so far: {seen:?}"
        );
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
        if !sent && seen.contains("30 100") {
            writer.write_all(b"abc\n").unwrap();
            sent = true;
        }
    }
    assert!(seen.contains("/dev/pts/0"), "{seen:?}");
    rt.wait_status(&c, "stopped");
    rt.ok(&["delete", &c]);
}

// ---------------------------------------------------------------------------
// 6. podman

/// A podman whose storage lives in a scratch directory and whose runtime is
/// berth (through a `berth-runtime` symlink). Dropping it resets the storage
/// and unmounts whatever is still mounted below it.
struct Podman {
    base: PathBuf,
    runtime: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::podman_in(&self.base, &self.base.join("tmp"));
        c.arg("--runtime").arg(&self.runtime);
        match args.split_first() {
            // No network (podman's would leave its cni-podman0 bridge and the
            // plugins' chains behind) and cgroups of this test's own, removed
            // on drop (podman's default parent, /libpod_parent, stays).
            Some((&"run", rest)) => c
                .args(["run", "--network", "none", "--cgroup-parent"])
                .arg(self.cgroup_parent())
                .args(rest),
            _ => c.args(args),
        };
        c.stdin(Stdio::null());
        c
    }

    fn cgroup_parent(&self) -> String {
        format!("/berth-test-podman-{}", std::process::id())
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = match self.cmd(args).output() {
            Ok(o) => o,
            Err(e) => panic!("podman is not installed ({e}); run scripts/deps.sh"),
        };
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "podman {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.base.join("root").exists() {
            let _ = self.cmd(&["rm", "-a", "-f"]).output();
            let _ = self.cmd(&["system", "reset", "-f"]).output();
        }
        common::unmount_all_under(&self.base);
        for ctrl in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let top = ctrl
                .path()
                .join(self.cgroup_parent().trim_start_matches('/'));
            let mut dirs: Vec<_> = common::walk(&top)
                .into_iter()
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for d in dirs.iter().chain(std::iter::once(&top)) {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

/// podman runs containers through berth-runtime (conmon calls create with
/// --pid-file and, for -t, --console-socket; podman calls start, state,
/// kill, pause, resume, exec and delete).
#[test]
fn podman_with_berth_as_its_runtime() {
    let dir = scratch();
    let base = dir.path().join("podman");
    fs::create_dir_all(base.join("tmp")).unwrap();
    let runtime = dir.path().join("berth-runtime");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), &runtime).unwrap();
    let p = Podman { base, runtime };
    let loaded = p.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let image = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .map(|n| n.split(", ").next().unwrap().trim().to_string())
        .expect("podman load names the image");

    let out = p.ok(&["run", "--rm", &image, "echo", "hello"]);
    assert_eq!(out, "hello\n");
    let r = p.run(&["run", "--rm", &image, "sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    // -t: conmon passes --console-socket.
    let out = p.ok(&["run", "--rm", "-t", &image, "tty"]);
    assert_eq!(out.trim(), "/dev/pts/0");

    let name = format!("berth-rt-{}", std::process::id());
    let cid = p
        .ok(&["run", "-d", "--name", &name, &image, "sleep", "100"])
        .trim()
        .to_string();
    assert_eq!(
        p.ok(&["inspect", "--format", "{{.State.Status}}", &name])
            .trim(),
        "running"
    );
    let state: Value = serde_json::from_str(
        &Rt::berth(Path::new(berth_runtime::linux::oci::DEFAULT_ROOT)).ok(&["state", &cid]),
    )
    .unwrap();
    assert_eq!(state["status"], "running");
    assert_eq!(
        p.ok(&["exec", &name, "cat", "/proc/1/cmdline"]),
        "sleep\x00100\x00"
    );
    assert_eq!(p.ok(&["exec", "-t", &name, "tty"]).trim(), "/dev/pts/0");
    p.ok(&["pause", &name]);
    assert_eq!(
        p.ok(&["inspect", "--format", "{{.State.Status}}", &name])
            .trim(),
        "paused"
    );
    p.ok(&["unpause", &name]);
    p.ok(&["stop", "-t", "1", &name]);
    assert_eq!(
        p.ok(&["inspect", "--format", "{{.State.Status}}", &name])
            .trim(),
        "exited"
    );
    p.ok(&["rm", &name]);
    assert!(
        !Path::new(berth_runtime::linux::oci::DEFAULT_ROOT)
            .join(&cid)
            .exists(),
        "podman rm deleted the runtime's state"
    );
    drop(p);
    let left = common::mounts_under(dir.path());
    assert!(left.is_empty(), "mounts left: {left:?}");
}
