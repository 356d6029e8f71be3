//! Bind mounts, named and anonymous volumes, tmpfs, and `volume` commands.

mod common;

use common::{Store, fixture};
use serde_json::Value;

fn busybox() -> Store {
    let s = Store::new();
    s.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
    s
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let s = busybox();
    let host = common::scratch();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let h = host.path().display().to_string();
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{h}:/h"),
        "busybox",
        "sh",
        "-c",
        "cat /h/in; echo back > /h/out",
    ]);
    assert_eq!(out, "from host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "back\n"
    );
    let r = s.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{h}:/h:ro"),
        "busybox",
        "touch",
        "/h/x",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    let r = s.run(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,source={h},target=/m,readonly"),
        "busybox",
        "cat",
        "/m/in",
    ]);
    assert_eq!(r.stdout, "from host\n", "{}", r.stderr);
    // -v creates a missing host directory; --mount refuses it.
    let missing = host.path().join("new/dir");
    s.ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/n", missing.display()),
        "busybox",
        "true",
    ]);
    assert!(missing.is_dir());
    let r = s.run(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,source=/var/tmp/berth-no-such-dir,target=/m",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

#[test]
fn named_volumes_are_populated_from_the_image_and_outlive_containers() {
    let s = busybox();
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "conf:/etc",
        "busybox",
        "sh",
        "-c",
        "echo saved > /etc/mine",
    ]);
    // First use copied the image's /etc in.
    let out = s.ok(&[
        "run",
        "--rm",
        "-v",
        "conf:/x",
        "busybox",
        "sh",
        "-c",
        "cat /x/mine; ls /x",
    ]);
    assert!(out.starts_with("saved\n"), "{out}");
    assert!(out.contains("passwd"), "{out}");
    let ls = s.ok(&["volume", "ls", "-q"]);
    assert_eq!(ls.trim(), "conf");
    let v: Value = serde_json::from_str(&s.ok(&["volume", "inspect", "conf"])).unwrap();
    assert_eq!(v[0]["Name"], "conf");
    assert_eq!(v[0]["Driver"], "local");
    // In use: rm refuses; after the container is gone it works.
    s.ok(&[
        "create", "--name", "holder", "-v", "conf:/c", "busybox", "true",
    ]);
    let err = s.fails(&["volume", "rm", "conf"]);
    assert!(err.contains("in use"), "{err}");
    s.ok(&["rm", "holder"]);
    s.ok(&["volume", "rm", "conf"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    let err = s.fails(&["volume", "inspect", "conf"]);
    assert!(err.contains("no such volume"), "{err}");
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_rm() {
    let s = busybox();
    s.ok(&["create", "--name", "a", "-v", "/data", "busybox", "true"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]).lines().count(), 1);
    s.ok(&["rm", "-v", "a"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    s.ok(&["run", "--rm", "-v", "/data", "busybox", "true"]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q"]),
        "",
        "--rm removes anonymous volumes"
    );
    s.ok(&["create", "--name", "b", "-v", "/data", "busybox", "true"]);
    s.ok(&["rm", "b"]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q"]).lines().count(),
        1,
        "plain rm keeps them"
    );
    s.ok(&["volume", "create", "--label", "keep=yes", "named"]);
    let out = s.ok(&["volume", "prune", "-f"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert_eq!(
        s.ok(&["volume", "ls", "-q"]).trim(),
        "named",
        "prune keeps named volumes without -a"
    );
    s.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn tmpfs_mounts() {
    let s = busybox();
    let out = s.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m",
        "busybox",
        "sh",
        "-c",
        "mount | grep /scratch",
    ]);
    assert!(
        out.contains("tmpfs on /scratch") && out.contains("size=1024k"),
        "{out}"
    );
    let out = s.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=2m",
        "busybox",
        "sh",
        "-c",
        "mount | grep ' /t '",
    ]);
    assert!(out.contains("size=2048k"), "{out}");
}

#[test]
fn bad_volume_specs_are_refused_without_leftovers() {
    let s = busybox();
    for (flag, v, needle) in [
        ("-v", "data:relative", "relative"),
        ("-v", "./here:/x", "absolute"),
        ("-v", "/a:/b:bogus", "bogus"),
        ("-v", "bad name:/x", "bad name"),
        ("--mount", "type=volume,target=rel", "rel"),
        ("--mount", "type=nfs,target=/x", "nfs"),
        ("--tmpfs", "notabs", "notabs"),
    ] {
        let r = s.run(&["run", "--rm", flag, v, "busybox", "true"]);
        assert_eq!(r.code, 125, "{flag} {v}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{flag} {v}: {}", r.stderr);
    }
    assert_eq!(s.ok(&["volume", "ls", "-q"]), "");
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "");
}
