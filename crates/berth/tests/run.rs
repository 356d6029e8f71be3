//! `berth run` in the foreground: isolation for real, Docker's merge rules and
//! exit codes, and nothing left behind.

mod common;

use common::{Store, fixture};

fn busybox() -> Store {
    let s = Store::new();
    s.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
    s
}

fn sh(s: &Store, script: &str) -> String {
    s.ok(&["run", "--rm", "busybox", "sh", "-c", script])
}

/// Mounts of this process whose paths mention the store.
fn leftover_mounts(s: &Store) -> Vec<String> {
    let root = s.dir.path().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_string)
        .collect()
}

#[test]
fn process_is_pid_1_with_its_own_hostname_and_no_host_processes() {
    let s = busybox();
    let out = sh(
        &s,
        "echo $$; hostname; ps -o pid,comm | wc -l; ls /proc | grep -c '^[0-9]'",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_eq!(
        lines[1].len(),
        12,
        "hostname is the short container ID: {out}"
    );
    assert_ne!(
        lines[1],
        rustix::system::uname().nodename().to_str().unwrap()
    );
    // Header + sh + ps (+ wc) at most: no host process is visible.
    assert!(lines[2].parse::<u32>().unwrap() <= 4, "{out}");
    assert!(lines[3].parse::<u32>().unwrap() <= 4, "{out}");
    let out = s.ok(&["run", "--rm", "--hostname", "box1", "busybox", "hostname"]);
    assert_eq!(out.trim(), "box1");
    assert!(leftover_mounts(&s).is_empty(), "{:?}", leftover_mounts(&s));
    assert_eq!(
        std::fs::read_dir(s.root().join("containers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn exit_codes_follow_docker() {
    let s = busybox();
    assert_eq!(s.run(&["run", "--rm", "busybox", "true"]).code, 0);
    assert_eq!(s.run(&["run", "--rm", "busybox", "false"]).code, 1);
    assert_eq!(
        s.run(&["run", "--rm", "busybox", "sh", "-c", "exit 42"])
            .code,
        42
    );
    let r = s.run(&["run", "--rm", "busybox", "no-such-program"]);
    assert_eq!(r.code, 127);
    assert!(r.stderr.contains("no-such-program"), "{}", r.stderr);
    let r = s.run(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(r.code, 126, "{}", r.stderr);
    // --pull never: a missing image is an error here, not a pull from docker.io
    // (tests never leave 127.0.0.0/8; pulls are tested against local registries).
    let r = s.run(&["run", "--rm", "--pull", "never", "nosuchimage"]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr.contains("No such image: nosuchimage"),
        "{}",
        r.stderr
    );
    let r = s.run(&["run", "--rm", "-u", "ghost", "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("ghost"), "{}", r.stderr);
}

#[test]
fn docker_default_capabilities_and_refused_privileged_operations() {
    let s = busybox();
    let caps = sh(&s, "grep -E '^Cap(Eff|Bnd)' /proc/self/status");
    // Docker's default set: chown dac_override fowner fsetid kill setgid setuid
    // setpcap net_bind_service net_raw sys_chroot mknod audit_write setfcap.
    assert!(caps.contains("CapEff:\t00000000a80425fb"), "{caps}");
    assert!(caps.contains("CapBnd:\t00000000a80425fb"), "{caps}");
    let r = s.run(&[
        "run", "--rm", "busybox", "mount", "-t", "tmpfs", "t", "/mnt",
    ]);
    assert_ne!(r.code, 0, "mount must be refused");
    let r = s.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo 1 > /proc/sys/kernel/ostype",
    ]);
    assert_ne!(r.code, 0, "/proc/sys must be read-only");
    let caps = s.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(caps.contains("0000000000001000"), "{caps}");
    let caps = s.ok(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    // Privileged gets everything the host's bounding set holds.
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = host.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    assert!(
        caps.contains(bnd.trim_start_matches("CapBnd:").trim()),
        "{caps} vs {bnd}"
    );
}

#[test]
fn env_user_and_workdir_merge() {
    let s = busybox();
    let out = s.ok(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-e",
        "PATH=/bin",
        "-u",
        "nobody",
        "-w",
        "/made/here",
        "busybox",
        "sh",
        "-c",
        "echo $FOO $PATH $HOSTNAME; id -u; id -g; pwd",
    ]);
    let l: Vec<&str> = out.lines().collect();
    assert!(l[0].starts_with("bar /bin "), "{out}");
    assert_eq!(l[1], "65534");
    assert_eq!(l[2], "65534");
    assert_eq!(l[3], "/made/here");
    let out = s.ok(&[
        "run",
        "--rm",
        "-u",
        "1234:4321",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(out, "1234\n4321\n");
    // --entrypoint replaces the image's command entirely.
    let out = s.ok(&["run", "--rm", "--entrypoint", "echo", "busybox", "a", "b"]);
    assert_eq!(out, "a b\n");
    // The image's default PATH reaches the process.
    let out = sh(&s, "echo $PATH");
    assert!(out.contains("/bin"), "{out}");
}

#[test]
fn read_only_root_and_private_writable_layer() {
    let s = busybox();
    let r = s.run(&["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    // Writes go to the container's own layer, never to the image.
    sh(&s, "echo changed > /etc/motd-test; rm /bin/ls");
    let out = sh(&s, "ls /etc/motd-test 2>&1; ls -l /bin/ls | wc -l");
    assert!(out.contains("No such file"), "{out}");
    assert!(out.trim_end().ends_with('1'), "{out}");
    assert!(leftover_mounts(&s).is_empty());
}

#[test]
fn rmi_refuses_an_image_a_container_uses() {
    let s = busybox();
    let mut child = s
        .cmd(&["run", "--rm", "busybox", "sleep", "3"])
        .spawn()
        .unwrap();
    let containers = s.root().join("containers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&containers)
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "container never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = s.fails(&["rmi", "busybox"]);
    assert!(err.contains("being used by container"), "{err}");
    let id = s.images()[0]["ID"].as_str().unwrap().to_string();
    let err = s.fails(&["rmi", "-f", &id]);
    assert!(err.contains("being used by container"), "{err}");
    // Forced by name: the name goes, the image stays while the container runs.
    assert_eq!(
        s.ok(&["rmi", "-f", "busybox"]).trim(),
        "Untagged: busybox:latest"
    );
    assert_eq!(s.images()[0]["Repository"], "<none>");
    assert!(child.wait().unwrap().success());
    s.ok(&["image", "prune", "-f"]);
    assert!(s.images().is_empty());
}

/// cgroup directories named after this store's containers that still exist.
fn leftover_cgroups() -> Vec<String> {
    let mut out = Vec::new();
    for ctrl in ["memory", "pids", "cpu", "freezer"] {
        let out_of = std::process::Command::new("find")
            .args([
                &format!("/sys/fs/cgroup/{ctrl}"),
                "-type",
                "d",
                "-path",
                "*/berth/*",
            ])
            .output()
            .unwrap();
        out.extend(
            String::from_utf8_lossy(&out_of.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    out
}

#[test]
fn seccomp_default_profile_and_unconfined() {
    let s = busybox();
    let out = sh(
        &s,
        "unshare -U true; echo unshare=$?; grep '^Seccomp:' /proc/self/status",
    );
    assert!(out.contains("unshare=1"), "unshare must be refused: {out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let out = s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "sh",
        "-c",
        "grep '^Seccomp:' /proc/self/status",
    ]);
    assert!(out.contains("Seccomp:\t0"), "{out}");
    // A custom Docker-format profile: everything allowed but mkdir.
    let dir = common::scratch();
    let p = dir.path().join("profile.json");
    std::fs::write(&p, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
    let opt = format!("seccomp={}", p.display());
    let r = s.run(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "mkdir",
        "/x",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Operation not permitted"), "{}", r.stderr);
    // Bad profiles are refused before anything starts, naming the file.
    std::fs::write(&p, "{ nope").unwrap();
    let r = s.run(&["run", "--rm", "--security-opt", &opt, "busybox", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("profile.json"), "{}", r.stderr);
    // no-new-privileges reaches the process.
    let out = s.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "grep",
        "NoNewPrivs",
        "/proc/self/status",
    ]);
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn memory_limit_oom_kills_and_pids_limit_holds() {
    let s = busybox();
    let r = s.run(&[
        "run",
        "--rm",
        "-m",
        "32m",
        "--memory-swap",
        "32m",
        "busybox",
        "sh",
        "-c",
        "head -c 200000000 /dev/zero | tail > /dev/null",
    ]);
    assert_eq!(r.code, 137, "{}", r.stderr);
    assert!(r.stderr.contains("OOM"), "{}", r.stderr);
    // busybox sh gives up at the first fork the pids limit refuses.
    let forks = "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait";
    let r = s.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        "busybox",
        "sh",
        "-c",
        forks,
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("can't fork"), "{}", r.stderr);
    let r = s.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        forks,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let limits = s.ok(&[
        "run",
        "--rm",
        "-m",
        "64m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/cgroup",
    ]);
    assert!(!limits.is_empty());
    assert!(
        leftover_cgroups()
            .iter()
            .all(|c| !c.contains(&s.dir.path().display().to_string()))
    );
}

#[test]
fn bad_resource_flags_exit_125() {
    let s = busybox();
    for args in [
        vec!["run", "-m", "12q", "busybox", "true"],
        vec!["run", "--cpus", "lots", "busybox", "true"],
        vec!["run", "--ulimit", "nofile=9:1", "busybox", "true"],
        vec!["run", "--memory-swap", "1g", "busybox", "true"],
        vec!["run", "--security-opt", "bogus", "busybox", "true"],
    ] {
        let r = s.run(&args);
        assert_eq!(r.code, 125, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty());
    }
    assert_eq!(
        std::fs::read_dir(s.root().join("containers"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn rlimits_above_the_host_are_clamped_with_a_warning() {
    let s = busybox();
    let r = s.run(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=100:200",
        "busybox",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(r.stdout, "100\n200\n");
    let host_hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap();
    let huge = format!("nofile=100:{}", host_hard + 1);
    let r = s.run(&[
        "run",
        "--rm",
        "--ulimit",
        &huge,
        "busybox",
        "sh",
        "-c",
        "ulimit -Hn",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    if !has_sys_resource() {
        assert!(r.stderr.contains("clamped"), "{}", r.stderr);
        assert_eq!(r.stdout.trim(), host_hard.to_string());
    }
}

fn has_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    let bits = u64::from_str_radix(bnd.trim_start_matches("CapBnd:").trim(), 16).unwrap();
    bits & (1 << 24) != 0
}

#[test]
fn tty_gives_a_terminal_sized_like_ours() {
    let s = busybox();
    let out = s.ok(&[
        "run",
        "--rm",
        "-t",
        "busybox",
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo term; echo $TERM; stty size",
    ]);
    // A pty turns \n into \r\n.
    assert_eq!(out.replace("\r\n", "\n"), "term\nxterm\n24 80\n");
    // Through a real terminal (tmux): the size follows it, stdin reaches the shell.
    let out = s.dir.path().join("tty.out");
    let cmd = format!(
        "{} --root {} run --rm -it busybox sh -c 'stty size; read line; echo got:$line' > {} 2>&1",
        env!("CARGO_BIN_EXE_berth"),
        s.root().display(),
        out.display()
    );
    let tmux = common::Tmux::start(&cmd, 101, 33);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("33 101")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no size: {:?}",
            std::fs::read_to_string(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tmux.run(&["send-keys", "-t", "0", "hello", "Enter"]);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("got:hello")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no echo: {:?}",
            std::fs::read_to_string(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Let `run --rm` finish its own clean-up before the terminal goes away.
    while !s.ok(&["ps", "-aq"]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "--rm did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn programs_start_with_default_signals() {
    let s = busybox();
    let out = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "grep",
        "-E",
        "^Sig(Ign|Blk)",
        "/proc/self/status",
    ]);
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    // SIGPIPE works: `yes` stops when `head` is done.
    assert_eq!(sh(&s, "yes | head -1"), "y\n");
}

#[test]
fn options_stop_at_the_image_name() {
    // As with Docker: what follows the image is the command's, dashes and all.
    let s = busybox();
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            "busybox",
            "-c",
            "echo $0 -e"
        ]),
        "sh -e\n"
    );
    assert_eq!(s.ok(&["run", "--rm", "busybox", "echo", "-n", "x"]), "x");
}
