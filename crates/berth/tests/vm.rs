//! `--isolation vm`: the same image in its own microVM (QEMU microvm, TCG on
//! this host), end to end: guest kernel, agent, exit codes, stdio, exec,
//! stop, volumes shared with containers, and the bad-input cases.
//!
//! The guest kernel and the static agent come from `BERTH_KERNEL` and
//! `BERTH_AGENT`, which `scripts/test.sh` sets (building them if needed).

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

/// Polls until `f` holds (bounded; not a timing assertion).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// No hypervisor, socket or writable layer of this store is left.
fn assert_no_leftovers(s: &Store) {
    let root = s.root().display().to_string();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !(cmdline.contains("qemu-system") && cmdline.contains(&root)),
            "a hypervisor of this store still runs: {cmdline}"
        );
    }
    let left: Vec<_> = common::walk(&s.root().join("containers"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "qcow2" || e == "sock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn guest_kernel_vcpus_and_memory() {
    let s = busybox();
    let out = s.ok(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "--cpus",
        "2",
        "--memory",
        "256m",
        "busybox",
        "sh",
        "-c",
        "uname -r; nproc; grep MemTotal /proc/meminfo",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_ne!(lines[0], host_release(), "the guest's own kernel");
    let info = s.ok(&["info", "--format", "json"]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        info["vm"]["kernel"]["release"].as_str(),
        Some(lines[0]),
        "info names the kernel the VM booted"
    );
    assert_eq!(lines[1], "2");
    let kb: u64 = lines[2].split_whitespace().nth(1).unwrap().parse().unwrap();
    // The kernel keeps a little of the RAM for itself.
    assert!((200_000..=262_144).contains(&kb), "MemTotal {kb} kB");
    assert_no_leftovers(&s);
}

#[test]
fn exit_codes_propagate() {
    let s = busybox();
    for (script, code) in [("exit 0", 0), ("exit 1", 1), ("kill -9 $$", 137)] {
        let r = s.run(&[
            "run",
            "--isolation",
            "vm",
            "--rm",
            "busybox",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(r.code, code, "{script}: {}", r.stderr);
    }
    let r = s.run(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "busybox",
        "no-such-command",
    ]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    assert!(r.stderr.contains("no-such-command"), "{}", r.stderr);
    assert_no_leftovers(&s);
    assert_eq!(s.ok(&["ps", "-aq"]), "", "--rm removed them all");
}

#[test]
fn env_user_workdir_and_stdin() {
    let s = busybox();
    let r = s.run_stdin(
        &[
            "run",
            "--isolation",
            "vm",
            "--rm",
            "-i",
            "-e",
            "GREETING=hello",
            "-u",
            "1000:1000",
            "-w",
            "/work/dir",
            "busybox",
            "sh",
            "-c",
            "echo $GREETING; id -u; id -g; pwd; cat; echo err >&2",
        ],
        b"from stdin\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "hello\n1000\n1000\n/work/dir\nfrom stdin\n");
    assert!(r.stderr.contains("err"), "{}", r.stderr);
    // Host name, rlimits and the image's entrypoint, as for a container.
    let out = s.ok(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "--hostname",
        "vmhost",
        "--ulimit",
        "nofile=1024:2048",
        "--entrypoint",
        "sh",
        "busybox",
        "-c",
        "hostname; cat /etc/hostname; ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(out, "vmhost\nvmhost\n1024\n2048\n");
}

#[test]
fn detached_exec_logs_stop_and_inspect() {
    let s = busybox();
    let id = s
        .ok(&[
            "run",
            "-d",
            "--isolation",
            "vm",
            "--name",
            "vm1",
            "busybox",
            "sh",
            "-c",
            "echo started; trap 'echo bye; exit 7' TERM; while true; do sleep 1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let i = inspect(&s, "vm1");
    assert_eq!(i["HostConfig"]["Isolation"], "vm");
    assert!(
        i["VM"]["Hypervisor"].as_str().unwrap().contains("qemu"),
        "{i}"
    );
    assert_eq!(i["VM"]["VCPUs"], 1);
    assert_eq!(i["VM"]["MemoryMiB"], 256);
    let qemu = i["State"]["Pid"].as_i64().unwrap();
    assert!(alive(qemu));
    assert!(
        s.ok(&["ps", "--format", "{{.Names}} {{.Isolation}}"])
            .contains("vm1 vm")
    );
    eventually("the first log line", || {
        s.ok(&["logs", "vm1"]).contains("started")
    });

    // exec: output, exit code, a file the main process can see.
    assert_eq!(
        s.ok(&["exec", "vm1", "sh", "-c", "echo in-vm > /tmp/x; cat /tmp/x"]),
        "in-vm\n"
    );
    let r = s.run(&["exec", "vm1", "sh", "-c", "exit 5"]);
    assert_eq!(r.code, 5);
    let r = s.run(&["exec", "vm1", "no-such-command"]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    let r = s.run_stdin(&["exec", "-i", "vm1", "cat"], b"piped\n");
    assert_eq!(r.stdout, "piped\n");

    // stop: the stop signal reaches the process in the guest, and the VM ends.
    s.ok(&["stop", "-t", "30", "vm1"]);
    let i = inspect(&s, "vm1");
    assert_eq!(i["State"]["Status"], "exited");
    assert_eq!(i["State"]["ExitCode"], 7, "the trap ran in the guest");
    assert!(s.ok(&["logs", "vm1"]).contains("bye"));
    eventually("the hypervisor to exit", || !alive(qemu));
    assert_eq!(s.ok(&["wait", "vm1"]).trim(), "7");
    s.ok(&["rm", "vm1"]);
    assert_no_leftovers(&s);
}

#[test]
fn kill_delivers_the_signal_in_the_guest() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "k",
        "busybox",
        "sleep",
        "1000",
    ]);
    s.ok(&["kill", "k"]);
    eventually("the VM to stop", || {
        inspect(&s, "k")["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(&s, "k")["State"]["ExitCode"], 137);
    s.ok(&["rm", "k"]);
    assert_no_leftovers(&s);
}

#[test]
fn a_volume_written_by_a_vm_is_read_by_a_container() {
    let s = busybox();
    let host = common::scratch();
    let bind = format!("{}:/bind", host.path().display());
    s.ok(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "-v",
        "shared:/data",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo from-vm > /data/f; echo bound > /bind/g; ls -n /data/f",
    ]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "shared:/data",
            "busybox",
            "cat",
            "/data/f"
        ]),
        "from-vm\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("g")).unwrap(),
        "bound\n"
    );
    // And back: what a container wrote, a VM reads (read-only bind too).
    std::fs::write(host.path().join("h"), "from-host\n").unwrap();
    let ro = format!("{}:/ro:ro", host.path().display());
    let r = s.run(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "-v",
        &ro,
        "busybox",
        "sh",
        "-c",
        "cat /ro/h; echo x > /ro/new",
    ]);
    assert_eq!(r.stdout, "from-host\n");
    assert_ne!(r.code, 0, "a read-only bind is read-only in the VM");
    assert!(!host.path().join("new").exists());
}

#[test]
fn read_only_root_and_tmpfs() {
    let s = busybox();
    let r = s.run(&[
        "run",
        "--isolation",
        "vm",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        "busybox",
        "sh",
        "-c",
        "echo ok > /scratch/f && cat /scratch/f; touch /etc/nope",
    ]);
    assert_eq!(r.stdout, "ok\n");
    assert_ne!(r.code, 0, "the root is read-only");
}

#[test]
fn same_output_as_a_container_except_the_kernel() {
    let s = busybox();
    let script = "echo $HOME; id; pwd; ls /; cat /etc/hostname | wc -c; echo $PATH; \
                  ls /proc/self/fd | wc -l; uname -s";
    let container = s.ok(&["run", "--rm", "busybox", "sh", "-c", script]);
    let vm = s.ok(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(container, vm);
    let kc = s.ok(&["run", "--rm", "busybox", "uname", "-r"]);
    let kv = s.ok(&["run", "--rm", "--isolation", "vm", "busybox", "uname", "-r"]);
    assert_ne!(kc, kv, "only the kernel differs");
}

#[test]
fn restart_policy_boots_a_new_vm() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "r",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    eventually("two restarts", || {
        let i = inspect(&s, "r");
        i["State"]["Status"] == "exited" && i["RestartCount"] == 2
    });
    assert_eq!(s.ok(&["logs", "r"]).matches("run").count(), 3);
    s.ok(&["rm", "r"]);
    assert_no_leftovers(&s);
}

#[test]
fn a_killed_monitor_leaves_no_hypervisor() {
    let s = busybox();
    let id = s
        .ok(&["run", "-d", "--isolation", "vm", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    let rec: Value = serde_json::from_slice(
        &std::fs::read(s.root().join("containers").join(&id).join("record.json")).unwrap(),
    )
    .unwrap();
    let monitor = rec["state"]["monitor_pid"].as_i64().unwrap();
    let qemu = rec["state"]["pid"].as_i64().unwrap();
    assert!(alive(monitor) && alive(qemu));
    // SAFETY: kill takes integers; the monitor is a process this test started.
    unsafe { libc::kill(monitor as i32, libc::SIGKILL) };
    eventually("the hypervisor to die with its monitor", || !alive(qemu));
    assert_eq!(inspect(&s, &id)["State"]["Status"], "dead");
    s.ok(&["rm", &id]);
    assert_no_leftovers(&s);
}

// Bad input: each a clear error, exit 125, nothing left behind.

fn fails_cleanly(s: &Store, args: &[&str], env: &[(&str, &str)], expect: &str) {
    let mut c = s.cmd(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{args:?}: {stderr:?} lacks {expect:?}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]), "", "{args:?} left a container");
    assert_no_leftovers(s);
}

#[test]
fn no_kernel_names_the_command_that_builds_one() {
    let s = busybox();
    fails_cleanly(
        &s,
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
        &[("BERTH_KERNEL", "/nonexistent/vmlinux")],
        "scripts/kernel.sh",
    );
}

#[test]
fn memory_below_the_guest_minimum() {
    let s = busybox();
    fails_cleanly(
        &s,
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "--memory",
            "16m",
            "busybox",
            "true",
        ],
        &[],
        "--memory 16m is below the 64 MiB",
    );
    // `create` checks it too, before anything exists.
    fails_cleanly(
        &s,
        &[
            "create",
            "--isolation",
            "vm",
            "--memory",
            "16m",
            "busybox",
            "true",
        ],
        &[],
        "64 MiB",
    );
}

#[test]
fn a_hypervisor_that_fails_shows_its_stderr() {
    let s = busybox();
    let bogus = common::scratch();
    let kernel = bogus.path().join("vmlinux");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    fails_cleanly(
        &s,
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
        &[("BERTH_KERNEL", kernel.to_str().unwrap())],
        "qemu",
    );
}

#[test]
fn an_image_whose_rootfs_cannot_be_exported() {
    let s = busybox();
    // The export directory cannot be created: a file is in its way.
    std::fs::create_dir_all(s.root().join("vm")).unwrap();
    std::fs::write(s.root().join("vm/rootfs"), b"in the way").unwrap();
    fails_cleanly(
        &s,
        &["run", "--rm", "--isolation", "vm", "busybox", "true"],
        &[],
        "cannot export the root file system of image busybox",
    );
}

#[test]
fn unknown_isolation_and_host_network_are_refused() {
    let s = busybox();
    let e = s.fails(&["run", "--rm", "--isolation", "hyperv", "busybox", "true"]);
    assert!(e.contains("invalid isolation \"hyperv\""), "{e}");
    let e = s.fails(&[
        "create",
        "--isolation",
        "vm",
        "--network",
        "host",
        "busybox",
        "true",
    ]);
    assert!(e.contains("--network host"), "{e}");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn terminals_in_the_guest() {
    let s = busybox();
    // -t: a pty inside the guest, sized before the process runs.
    let r = s.run(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "tty; stty size",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.replace('\r', ""), "/dev/pts/0\n24 80\n");
    // -it: piped input through the guest's pty; the exit code comes back.
    let r = s.run_stdin(
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-i",
            "-t",
            "busybox",
            "sh",
        ],
        b"tty; exit 4\n",
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stdout.contains("/dev/pts/0"), "{}", r.stdout);
    // exec -t: its own pty, owned by the user.
    s.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "t",
        "busybox",
        "sleep",
        "600",
    ]);
    let out = s.ok(&[
        "exec",
        "-t",
        "-u",
        "1000",
        "t",
        "sh",
        "-c",
        "tty; stat -c %u $(tty)",
    ]);
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out}");
    assert_eq!(lines[1], "1000", "{out}");
    assert_eq!(s.run(&["exec", "t", "tty"]).stdout, "not a tty\n");
    s.ok(&["rm", "-f", "t"]);
    assert_no_leftovers(&s);
}

#[test]
fn start_i_feeds_a_vm_created_with_i() {
    let s = busybox();
    s.ok(&[
        "create",
        "-i",
        "--isolation",
        "vm",
        "--name",
        "reader",
        "busybox",
        "sh",
        "-c",
        "read x; echo got:$x; cat",
    ]);
    let r = s.run_stdin(&["start", "-ai", "reader"], b"hello\nworld\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "got:hello\nworld\n");
    assert_eq!(inspect(&s, "reader")["State"]["ExitCode"], 0);
    s.ok(&["rm", "reader"]);
    assert_no_leftovers(&s);
}

#[test]
fn system_prune_cleans_what_an_interrupted_export_left() {
    let s = busybox();
    s.ok(&["run", "--rm", "--isolation", "vm", "busybox", "true"]);
    let exports = s.root().join("vm/rootfs");
    let listing = || {
        let mut v: Vec<_> = std::fs::read_dir(&exports)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    let live = listing();
    let names: Vec<_> = live
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "one export and its disk: {names:?}");
    assert!(names[0].ends_with(".erofs") && names[1] == format!("{}.qcow2", names[0]));
    // What a killed export leaves, an export of an image removed since (and
    // its disk), and the saved guest of the warm starts.
    std::fs::create_dir_all(exports.join(".export-killed/merged")).unwrap();
    std::fs::write(exports.join("sha256-0000.erofs"), b"stale").unwrap();
    std::fs::write(exports.join("sha256-0000.erofs.qcow2"), b"stale").unwrap();
    std::fs::create_dir_all(s.root().join("vm/.template-killed")).unwrap();
    assert_eq!(snapshots(&s).len(), 1);
    let old_initramfs = s.root().join("vm/initramfs/initramfs-00000000.cpio");
    std::fs::write(&old_initramfs, b"an agent rebuilt since").unwrap();
    let killed_maker = s.root().join("vm/snapshots/.make-killed");
    std::fs::create_dir_all(&killed_maker).unwrap();
    std::fs::write(killed_maker.join("disk0.qcow2"), b"blank").unwrap();
    s.ok(&["system", "prune", "-f"]);
    assert_eq!(listing(), live, "only the live export stays");
    assert!(!s.root().join("vm/.template-killed").exists());
    assert!(
        snapshots(&s).is_empty(),
        "saved guests are a cache prune empties"
    );
    assert!(!killed_maker.exists(), "what a killed maker left");
    assert!(!old_initramfs.exists(), "an old agent's initramfs");
    let initramfs: Vec<_> = std::fs::read_dir(s.root().join("vm/initramfs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(initramfs.len(), 1, "the current agent's stays");
    // The image is still runnable as a VM.
    assert_eq!(
        s.ok(&["run", "--rm", "--isolation", "vm", "busybox", "echo", "ok"]),
        "ok\n"
    );
}

#[test]
fn the_config_file_sets_the_default_isolation() {
    let s = busybox();
    let dir = common::scratch();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, br#"{"isolation": "vm"}"#).unwrap();
    let run = |args: &[&str]| {
        let out = s.cmd(args).env("BERTH_CONFIG", &cfg).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["run", "--rm", "busybox", "uname", "-r"]);
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(out.trim(), host_release(), "a VM by default");
    // --isolation still wins.
    let (_, out, _) = run(&[
        "run",
        "--rm",
        "--isolation",
        "container",
        "busybox",
        "uname",
        "-r",
    ]);
    assert_eq!(out.trim(), host_release());
    let (_, info, _) = run(&["info"]);
    assert!(info.contains("Default Isolation: vm"), "{info}");
    // A bad value is an error naming the file.
    std::fs::write(&cfg, br#"{"isolation": "chroot"}"#).unwrap();
    let (code, _, err) = run(&["run", "--rm", "busybox", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("config.json") && err.contains("chroot"),
        "{err}"
    );
}

/// A VM's PID is its hypervisor's, whose root and network namespace are the
/// host's: nothing may reach the host through them.
#[test]
fn cp_and_container_network_never_reach_the_host_through_a_vm() {
    let s = busybox();
    s.ok(&[
        "run",
        "-d",
        "--isolation",
        "vm",
        "--name",
        "v",
        "busybox",
        "sleep",
        "600",
    ]);
    let src = common::scratch();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let marker = format!("/berth-cp-test-{}", std::process::id());
    let e = s.fails(&[
        "cp",
        src.path().join("f").to_str().unwrap(),
        &format!("v:{marker}"),
    ]);
    assert!(e.contains("runs in a VM"), "{e}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "written on the host!"
    );
    let e = s.fails(&["cp", "v:/etc/hostname", src.path().to_str().unwrap()]);
    assert!(e.contains("runs in a VM"), "{e}");
    let e = s.fails(&["run", "--rm", "--network", "container:v", "busybox", "true"]);
    assert!(e.contains("runs in a VM"), "{e}");
    s.ok(&["rm", "-f", "v"]);
    assert_no_leftovers(&s);
}

/// Through a real terminal (tmux): the guest's pty starts at our size,
/// follows it when the window is resized, and our keys reach the shell.
#[test]
fn the_guest_terminal_follows_ours() {
    let s = busybox();
    let out = s.dir.path().join("tty.out");
    let cmd = format!(
        "{} --root {} run --rm -it --isolation vm busybox sh -c 'stty size; read line; for i in $(seq 100); do [ \"$(stty size)\" = \"40 120\" ] && break; sleep 0.1; done; stty size; echo got:$line' > {} 2>&1",
        env!("CARGO_BIN_EXE_berth"),
        s.root().display(),
        out.display()
    );
    let shows = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(what)
        {
            assert!(
                Instant::now() < deadline,
                "no {what:?}: {:?}",
                std::fs::read_to_string(&out)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let tmux = common::Tmux::start(&cmd, 101, 33);
    shows("33 101");
    assert!(tmux.run(&["resize-window", "-t", "0", "-x", "120", "-y", "40"]));
    // (The guest polls for the new size: the resize travels as a frame.)
    tmux.run(&["send-keys", "-t", "0", "hello", "Enter"]);
    shows("got:hello");
    shows("40 120");
    // Let `run --rm` finish its own clean-up before the terminal goes away.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.ok(&["ps", "-aq"]).is_empty() {
        assert!(Instant::now() < deadline, "--rm did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The saved guests of warm starts in `s` (one directory per VM shape).
fn snapshots(s: &Store) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(s.root().join("vm/snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("state").is_file())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn warm_starts_are_machines_of_their_own() {
    let s = busybox();
    let probe = &[
        "run",
        "--rm",
        "--network",
        "none",
        "--isolation",
        "vm",
        "busybox",
        "sh",
        "-c",
        "cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1; date +%s",
    ];
    // The first start of this shape boots and saves a guest.
    let first = s.ok(probe);
    let saved = snapshots(&s);
    assert_eq!(saved.len(), 1, "one saved guest: {saved:?}");
    // Later ones are resumed from it, yet do not share its random state or
    // live at the time it was saved.
    std::thread::sleep(Duration::from_secs(2));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (a, b) = (s.ok(probe), s.ok(probe));
    assert_eq!(snapshots(&s), saved, "resumed, not saved again");
    let lines = |o: &str| o.lines().map(str::to_string).collect::<Vec<_>>();
    let (la, lb, lf) = (lines(&a), lines(&b), lines(&first));
    assert_eq!(la.len(), 3, "{a}");
    assert_ne!(la[0], lb[0], "boot ids differ");
    assert_ne!(la[1], lb[1], "random bytes differ");
    assert_ne!(la[1], lf[1]);
    let guest_now: u64 = la[2].parse().unwrap();
    assert!(
        guest_now + 1 >= before,
        "the guest's clock ({guest_now}) is the host's ({before}), not the snapshot's"
    );
    // Another shape gets its own; BERTH_VM_SNAPSHOT=0 boots without one.
    let mut c = s.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--isolation",
        "vm",
        "--cpus",
        "2",
        "busybox",
        "nproc",
    ]);
    c.env("BERTH_VM_SNAPSHOT", "0");
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
    assert_eq!(
        snapshots(&s).len(),
        1,
        "no snapshot with BERTH_VM_SNAPSHOT=0"
    );
    s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--isolation",
        "vm",
        "--cpus",
        "2",
        "busybox",
        "true",
    ]);
    assert_eq!(
        snapshots(&s).len(),
        2,
        "a second shape, a second saved guest"
    );
    assert_no_leftovers(&s);
}

#[test]
fn a_saved_guest_that_cannot_be_resumed_is_replaced() {
    let s = busybox();
    let args = &[
        "run",
        "--rm",
        "--network",
        "none",
        "--isolation",
        "vm",
        "busybox",
        "echo",
        "ok",
    ];
    assert_eq!(s.ok(args), "ok\n");
    let saved = snapshots(&s);
    assert_eq!(saved.len(), 1);
    std::fs::write(saved[0].join("state"), b"not a saved VM").unwrap();
    let r = s.run(args);
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(
        r.stderr.contains("resumed from the saved guest") && r.stderr.contains("boots afresh"),
        "{}",
        r.stderr
    );
    assert!(snapshots(&s).is_empty(), "the bad one is gone");
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert_no_leftovers(&s);
    // The next start makes a good one.
    assert_eq!(s.ok(args), "ok\n");
    assert_eq!(snapshots(&s).len(), 1);
}
