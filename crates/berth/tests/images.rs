//! Image commands end to end on the fixture images and synthetic ones.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::{Entry, Store, Synthetic, fixture, fixture_digests, layer, oci_archive};
use serde_json::Value;

fn inspect(s: &Store, name: &str) -> Value {
    let v: Value = serde_json::from_str(&s.ok(&["image", "inspect", name])).unwrap();
    v[0].clone()
}

#[test]
fn load_oci_and_docker_archives() {
    let (manifest, config) = fixture_digests("busybox.oci");
    for file in ["busybox.oci.tar", "busybox.docker.tar"] {
        let s = Store::new();
        let out = s.ok(&["load", "-i", &fixture(file)]);
        assert_eq!(out.trim(), "Loaded image: busybox:latest", "{file}");
        let imgs = s.images();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0]["Repository"], "busybox");
        assert_eq!(imgs[0]["Tag"], "latest");
        assert_eq!(
            imgs[0]["ID"],
            config.as_str(),
            "{file}: image ID is the config digest"
        );
        if file.contains("oci") {
            assert_eq!(imgs[0]["Digest"], manifest.as_str(), "manifest digest kept");
        }
        let i = inspect(&s, "busybox");
        assert_eq!(i["Id"], config.as_str());
        assert_eq!(i["RepoTags"][0], "busybox:latest");
        assert_eq!(i["Config"]["Cmd"][0], "sh");
        assert_eq!(i["Os"], "linux");
        assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 1);
        // The snapshot is a real tree with the applet hard links.
        let lower = i["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
        let sh = fs::metadata(format!("{lower}/bin/sh")).unwrap();
        let ls = fs::metadata(format!("{lower}/bin/ls")).unwrap();
        assert_eq!(sh.ino(), ls.ino(), "applets are hard links");
        assert!(sh.nlink() > 100);
        assert_eq!(
            fs::metadata(format!("{lower}/tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        // Loading again changes nothing and unpacks nothing.
        s.ok(&["load", "-i", &fixture(file)]);
        assert_eq!(s.images().len(), 1);
        assert_eq!(s.ok(&["system", "check"]).trim(), "no problems found");
    }
}

#[test]
fn load_from_stdin() {
    let s = Store::new();
    let data = fs::read(fixture("busybox.oci.tar")).unwrap();
    let r = s.run_stdin(&["load"], &data);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Loaded image: busybox:latest"));
}

#[test]
fn images_quiet_json_and_filter() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    s.ok(&["tag", "busybox", "localhost:5000/team/bb:v1"]);
    let table = s.ok(&["images"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    assert!(
        header.starts_with(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]),
        "{table}"
    );
    assert!(table.contains("localhost:5000/team/bb"), "{table}");
    let q = s.ok(&["images", "-q"]);
    assert_eq!(q.lines().count(), 1, "one image, two names: {q}");
    assert_eq!(q.trim().len(), 12);
    let filtered = s.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "busybox"]);
    assert_eq!(filtered.trim(), "busybox:latest");
    let j = s.images();
    assert_eq!(j.len(), 2);
    assert!(
        j.iter()
            .all(|r| r["Size"].as_str().unwrap().ends_with("MB"))
    );
}

#[test]
fn tag_and_rmi() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let id = inspect(&s, "busybox")["Id"].as_str().unwrap().to_string();
    s.ok(&["tag", "busybox:latest", "mine:1"]);
    s.ok(&["tag", &id[7..19], "mine:2"]);
    assert_eq!(s.images().len(), 3);
    // Removing one of several names only untags.
    assert_eq!(s.ok(&["rmi", "mine:1"]).trim(), "Untagged: mine:1");
    // By ID with several names: refused without -f.
    let err = s.fails(&["rmi", &id[7..19]]);
    assert!(err.contains("referenced in multiple repositories"), "{err}");
    let out = s.ok(&["rmi", "-f", &id[7..19]]);
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    assert!(out.contains("Untagged: mine:2"), "{out}");
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(s.images().is_empty());
    // Nothing is left behind: no blobs, no snapshots.
    let (_, files) = s.state();
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("content/blobs/sha256/") && !f.starts_with("snapshots/")),
        "{files:?}"
    );
}

#[test]
fn rmi_unknown_image_fails() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let before = s.state();
    let r = s.run(&["rmi", "nosuch:latest"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("No such image: nosuch:latest"),
        "{}",
        r.stderr
    );
    let err = s.fails(&["rmi", "UPPER/case"]);
    assert!(
        err.contains("UPPER/case") && err.contains("lowercase"),
        "{err}"
    );
    assert_eq!(s.state(), before);
}

#[test]
fn invalid_references_are_refused() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let before = s.state();
    for bad in ["UPPER/case", "a:b:c", "x@sha256:123", ":nope"] {
        let err = s.fails(&["tag", "busybox", bad]);
        assert!(
            err.contains("invalid reference format") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    assert_eq!(s.state(), before);
}

#[test]
fn save_several_images_and_reload() {
    let s = Store::new();
    let dir = common::scratch();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let (p, l) = oci_archive(
        dir.path(),
        "syn.tar",
        &[Synthetic::new(
            "localhost/syn:1",
            vec![layer(&[Entry::File("hello.txt", b"hi\n")])],
        )],
    );
    s.ok(&["load", "-i", p.to_str().unwrap()]);
    for fmt in ["docker", "oci"] {
        let out = dir.path().join(format!("all-{fmt}.tar"));
        s.ok(&[
            "save",
            "--format",
            fmt,
            "-o",
            out.to_str().unwrap(),
            "busybox",
            "localhost/syn:1",
        ]);
        let t = Store::new();
        let loaded = t.ok(&["load", "-i", out.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");
        assert!(loaded.contains("Loaded image: localhost/syn:1"), "{loaded}");
        let mut a: Vec<(String, String)> = s
            .images()
            .iter()
            .map(|r| (r["Repository"].to_string(), r["ID"].to_string()))
            .collect();
        let mut b: Vec<(String, String)> = t
            .images()
            .iter()
            .map(|r| (r["Repository"].to_string(), r["ID"].to_string()))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{fmt}: config digests survive");
        if fmt == "oci" {
            // OCI manifests are written verbatim: their digests survive too.
            assert_eq!(
                inspect(&t, "localhost/syn:1")["Descriptor"]["digest"],
                l.manifests[0].to_string()
            );
            let (m, _) = fixture_digests("busybox.oci");
            assert_eq!(inspect(&t, "busybox")["Descriptor"]["digest"], m.as_str());
        }
    }
}

#[test]
fn save_to_stdout_and_unknown_image() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let out = s.cmd(&["save", "busybox"]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() > 500_000);
    let dir = common::scratch();
    let target = dir.path().join("x.tar");
    let err = s.fails(&["save", "-o", target.to_str().unwrap(), "busybox", "nosuch"]);
    assert!(err.contains("No such image: nosuch"), "{err}");
    assert!(!target.exists(), "no half-written archive");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[test]
fn import_with_changes() {
    let s = Store::new();
    let out = s.ok(&[
        "import",
        "-c",
        r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
        "--change",
        "ENV FOO=bar",
        "-c",
        "WORKDIR /srv",
        "-m",
        "from the fixture",
        &fixture("busybox.rootfs.tar"),
        "imported:1",
    ]);
    let id = out.trim();
    assert!(id.starts_with("sha256:"), "{out}");
    let i = inspect(&s, "imported:1");
    assert_eq!(i["Id"], id);
    assert_eq!(
        i["Config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo hi"])
    );
    assert_eq!(i["Config"]["Env"], serde_json::json!(["FOO=bar"]));
    assert_eq!(i["Config"]["WorkingDir"], "/srv");
    assert_eq!(i["Comment"], "from the fixture");
    let lower = i["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    assert!(fs::metadata(format!("{lower}/bin/busybox")).is_ok());
    // From stdin, gzip-compressed, untagged.
    let gz = common::gzip(&fs::read(fixture("busybox.rootfs.tar")).unwrap());
    let r = s.run_stdin(&["import", "-"], &gz);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Same layer: the snapshot is shared, not unpacked twice.
    let snaps = fs::read_dir(s.root().join("image/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 1);
    // A bad change is refused and stores nothing.
    let before = s.state();
    let err = s.fails(&[
        "import",
        "-c",
        "RUN rm -rf /",
        &fixture("busybox.rootfs.tar"),
    ]);
    assert!(err.contains("RUN"), "{err}");
    assert_eq!(s.state(), before);
}

#[test]
fn shared_layers_unpack_once() {
    let s = Store::new();
    let dir = common::scratch();
    let base = layer(&[Entry::Dir("etc"), Entry::File("etc/base", b"base")]);
    let a = layer(&[Entry::File("a", b"a")]);
    let b = layer(&[Entry::File("b", b"b")]);
    let (p, _) = oci_archive(
        dir.path(),
        "two.tar",
        &[
            Synthetic::new("localhost/a:1", vec![base.clone(), a]),
            Synthetic::new("localhost/b:1", vec![base, b]),
        ],
    );
    s.ok(&["load", "-i", p.to_str().unwrap()]);
    assert_eq!(s.images().len(), 2);
    let snaps = fs::read_dir(s.root().join("image/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 3, "base + a + b");
    let la = inspect(&s, "localhost/a:1")["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap()
        .to_string();
    let lb = inspect(&s, "localhost/b:1")["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        la.split(':').nth(1),
        lb.split(':').nth(1),
        "base snapshot shared"
    );
    // Removing one image keeps the shared base.
    s.ok(&["rmi", "localhost/a:1"]);
    let snaps = fs::read_dir(s.root().join("image/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 2);
    assert_eq!(s.ok(&["system", "check"]).trim(), "no problems found");
}

#[test]
fn prune_and_df() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    s.ok(&["import", &fixture("busybox.rootfs.tar")]); // dangling: no name
    assert_eq!(s.images().len(), 2);
    let df = s.ok(&["system", "df"]);
    assert!(df.lines().nth(1).unwrap().starts_with("Images"), "{df}");
    let dfj: Value = serde_json::from_str(
        s.ok(&["system", "df", "--format", "json"])
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(dfj["TotalCount"], "2");
    // Without -f and no "y" on stdin, nothing happens.
    s.ok(&["image", "prune"]);
    assert_eq!(s.images().len(), 2);
    let out = s.ok(&["image", "prune", "-f"]);
    assert!(out.contains("deleted: sha256:"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let left = s.images();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["Repository"], "busybox");
    s.ok(&["image", "prune", "-a", "-f"]);
    assert!(s.images().is_empty());
}

#[test]
fn system_check_finds_corruption() {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    let (_, config) = fixture_digests("busybox.oci");
    let blob = s
        .root()
        .join("image/content/blobs/sha256")
        .join(&config[7..]);
    let mut data = fs::read(&blob).unwrap();
    data[10] ^= 1;
    fs::write(&blob, data).unwrap();
    let r = s.run(&["system", "check"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains(&config), "{}", r.stdout);
    assert!(
        r.stdout.contains("does not match its digest"),
        "{}",
        r.stdout
    );
    // Reading the corrupt config is refused too.
    let err = s.fails(&["image", "inspect", "busybox"]);
    assert!(err.contains(&config), "{err}");
}

/// Unmounts on drop so a failing assertion leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn layers_stack_as_overlay_lower_dirs() {
    let s = Store::new();
    let dir = common::scratch();
    let base = layer(&[
        Entry::Dir("etc"),
        Entry::File("etc/gone", b"old"),
        Entry::Dir("data"),
        Entry::File("data/old1", b"1"),
        Entry::File("data/old2", b"2"),
        Entry::File("keep", b"keep"),
        Entry::Hardlink("keep-link", "keep"),
    ]);
    let top = layer(&[
        Entry::File("etc/.wh.gone", b""),
        Entry::Dir("data"),
        Entry::File("data/.wh..wh..opq", b""),
        Entry::File("data/new", b"new"),
        Entry::File("keep", b"changed"),
    ]);
    let (p, _) = oci_archive(
        dir.path(),
        "stack.tar",
        &[Synthetic::new("localhost/stack:1", vec![base, top])],
    );
    s.ok(&["load", "-i", p.to_str().unwrap()]);
    let i = inspect(&s, "localhost/stack:1");
    let lower = i["GraphDriver"]["Data"]["LowerDir"].as_str().unwrap();
    assert_eq!(lower.split(':').count(), 2);
    let (upper, work, merged) = (
        dir.path().join("u"),
        dir.path().join("w"),
        dir.path().join("m"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(st.success());
    let _guard = Mounted(merged.clone());
    assert!(
        !merged.join("etc/gone").exists(),
        "whiteout hides the lower file"
    );
    assert!(merged.join("etc").is_dir());
    let mut data: Vec<String> = fs::read_dir(merged.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    data.sort();
    assert_eq!(data, vec!["new"], "opaque dir hides lower content");
    assert_eq!(
        fs::read(merged.join("keep")).unwrap(),
        b"changed",
        "top layer wins"
    );
    assert_eq!(
        fs::read(merged.join("keep-link")).unwrap(),
        b"keep",
        "hard link kept its inode"
    );
}
