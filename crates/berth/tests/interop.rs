//! Interoperability with the real peers (skopeo, podman): archives berth
//! writes must be read by them, and archives they write must load in berth,
//! with the config digest (image ID) and the OCI manifest digest intact.
//!
//! No mocks: every test runs the installed `skopeo` / `podman` (scripts/deps.sh
//! installs them). Each test has its own scratch directory, berth store and,
//! where podman is used, podman storage (`--root`/`--runroot`/`--tmpdir` inside
//! the scratch dir), so the tests run in parallel and touch nothing global.
//! Podman's storage is reset and anything it mounted under the scratch dir is
//! unmounted when the test ends, pass or fail; a passing test also asserts
//! that no mount is left behind.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_engine::image::Digest;
use common::{Store, fixture, fixture_digests, scratch};
use serde_json::Value;

// ---------------------------------------------------------------------------
// helpers

/// Runs a peer tool and insists on success; returns stdout.
fn run_ok(mut c: Command) -> String {
    let what = format!("{c:?}");
    let o = output(&mut c);
    assert!(
        o.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 output")
}

fn output(c: &mut Command) -> Output {
    c.stdin(Stdio::null());
    match c.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} is not installed; run scripts/deps.sh (interop tests need skopeo and podman)",
            c.get_program()
        ),
        Err(e) => panic!("spawn {c:?}: {e}"),
    }
}

/// One test's scratch space: a directory for archives and a TMPDIR for the
/// peers (containers/image stages big files in $TMPDIR, /var/tmp otherwise).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = scratch();
        fs::create_dir(dir.path().join("tmp")).unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn skopeo(&self, args: &[&str]) -> String {
        let mut c = Command::new("skopeo");
        c.env("TMPDIR", self.path("tmp"))
            .arg("--insecure-policy")
            .args(args);
        run_ok(c)
    }

    /// A podman with private storage under `<scratch>/<name>`.
    fn podman(&self, name: &str) -> Podman {
        let base = self.path(name);
        fs::create_dir(&base).unwrap();
        Podman { base }
    }
}

/// A podman whose storage lives entirely inside a scratch directory. Dropping
/// it resets that storage and unmounts whatever is still mounted below it.
struct Podman {
    base: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::podman_in(&self.base, &self.base.join("..").join("tmp"));
        c.args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd(args))
    }

    /// `podman load -i file`; returns the names it reports.
    fn load(&self, file: &str) -> Vec<String> {
        let out = self.ok(&["load", "-i", file]);
        let names: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("Loaded image: "))
            .flat_map(|l| l.split(", "))
            .map(|n| n.trim().to_string())
            .collect();
        assert!(
            !names.is_empty(),
            "podman load -i {file} loaded nothing: {out}"
        );
        names
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["image", "inspect", name])).unwrap();
        v[0].clone()
    }

    /// Resets the storage, unmounts leftovers, and asserts nothing is mounted
    /// below the scratch dir any more.
    fn finish(self) {
        let base = self.base.clone();
        drop(self);
        let left = common::mounts_under(&base);
        assert!(left.is_empty(), "mounts left under {base:?}: {left:?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.base.join("root").exists() {
            let _ = output(&mut self.cmd(&["system", "reset", "-f"]));
        }
        // Belt and braces: if podman left anything mounted (a crash, a reset
        // that failed), unmount it, deepest first, so the TempDir can go.
        common::unmount_all_under(&self.base);
    }
}

/// `berth image inspect NAME`, first element.
fn berth_inspect(s: &Store, name: &str) -> Value {
    let v: Value = serde_json::from_str(&s.ok(&["image", "inspect", name])).unwrap();
    v[0].clone()
}

/// A store with the busybox fixture loaded.
fn store_with_busybox() -> Store {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    s
}

/// One member of a tar archive.
fn tar_member(archive: &Path, name: &str) -> Vec<u8> {
    let mut t = tar::Archive::new(fs::File::open(archive).unwrap());
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p.trim_start_matches("./") == name {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("{name} not in {archive:?}");
}

/// The manifest descriptors of an oci-archive's index.json.
fn index_manifests(archive: &Path) -> Vec<Value> {
    let index: Value = serde_json::from_slice(&tar_member(archive, "index.json")).unwrap();
    index["manifests"].as_array().expect("manifests").clone()
}

/// The single manifest digest in an oci-archive, checked against the blob it
/// names (sha256 of the blob bytes must equal the descriptor's digest).
fn only_manifest_digest(archive: &Path) -> String {
    let m = index_manifests(archive);
    assert_eq!(m.len(), 1, "{archive:?}: expected one manifest: {m:?}");
    let d = m[0]["digest"].as_str().unwrap().to_string();
    let hex = d.strip_prefix("sha256:").unwrap();
    let blob = tar_member(archive, &format!("blobs/sha256/{hex}"));
    assert_eq!(
        Digest::of(&blob).to_string(),
        d,
        "{archive:?}: manifest blob"
    );
    d
}

/// The config an OCI layout directory's only manifest points at, as (digest,
/// parsed JSON), after checking the digests of the manifest and config blobs.
fn layout_dir_config(dir: &Path) -> (String, Value) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = fs::read(dir.join("blobs/sha256").join(&md["sha256:".len()..])).unwrap();
    assert_eq!(Digest::of(&blob).to_string(), md);
    let m: Value = serde_json::from_slice(&blob).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let config = fs::read(dir.join("blobs/sha256").join(&cd["sha256:".len()..])).unwrap();
    assert_eq!(Digest::of(&config).to_string(), cd);
    (cd, serde_json::from_slice(&config).unwrap())
}

/// The image's config digest as skopeo reads it (sha256 of the raw config).
fn skopeo_config_digest(x: &Scratch, transport: &str) -> String {
    let mut c = Command::new("skopeo");
    c.env("TMPDIR", x.path("tmp"))
        .args(["inspect", "--raw", "--config", transport]);
    let o = output(&mut c);
    assert!(
        o.status.success(),
        "skopeo inspect --raw --config {transport}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Digest::of(&o.stdout).to_string()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. skopeo reads what berth saves

/// berth's docker-archive and oci-archive of busybox are valid for skopeo:
/// `inspect` sees the fixture's config (same digest through both formats),
/// the OCI manifest is the fixture's byte for byte, and `skopeo copy` (which
/// verifies every blob digest and the layer diff IDs) copies both into an OCI
/// layout that points at the same config.
#[test]
fn skopeo_reads_berth_archives() {
    let (manifest, config) = fixture_digests("busybox.oci");
    let x = Scratch::new();
    let s = store_with_busybox();
    let (docker, oci) = (x.s("busybox.docker.tar"), x.s("busybox.oci.tar"));
    s.ok(&["save", "-o", &docker, "busybox"]);
    s.ok(&[
        "save",
        "--format",
        "docker",
        "-o",
        &x.s("explicit.tar"),
        "busybox",
    ]);
    s.ok(&["save", "--format", "oci", "-o", &oci, "busybox"]);

    let da = format!("docker-archive:{docker}");
    let oa = format!("oci-archive:{oci}");

    // Same config through both formats, and it is the fixture's.
    assert_eq!(
        skopeo_config_digest(&x, &da),
        config,
        "docker-archive config"
    );
    assert_eq!(skopeo_config_digest(&x, &oa), config, "oci-archive config");
    assert_eq!(
        skopeo_config_digest(&x, &format!("docker-archive:{}", x.s("explicit.tar"))),
        config,
        "--format docker"
    );

    // The raw config's diff IDs are what skopeo lists as the docker-archive's
    // layers; the oci-archive keeps the fixture's manifest unchanged.
    let raw_config: Value =
        serde_json::from_str(&x.skopeo(&["inspect", "--raw", "--config", &da])).unwrap();
    let diff_ids = strs(&raw_config["rootfs"]["diff_ids"]);
    let di: Value = serde_json::from_str(&x.skopeo(&["inspect", &da])).unwrap();
    assert_eq!(strs(&di["Layers"]), diff_ids, "docker-archive layers");
    let oi: Value = serde_json::from_str(&x.skopeo(&["inspect", &oa])).unwrap();
    assert_eq!(
        oi["Digest"],
        manifest.as_str(),
        "oci-archive manifest digest"
    );
    let raw_manifest = x.skopeo(&["inspect", "--raw", &oa]);
    assert_eq!(Digest::of(raw_manifest.as_bytes()).to_string(), manifest);
    assert_eq!(only_manifest_digest(Path::new(&oci)), manifest);
    let m: Value = serde_json::from_str(&raw_manifest).unwrap();
    let layer_digests: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(strs(&oi["Layers"]), layer_digests);
    assert_eq!(layer_digests.len(), diff_ids.len());

    // skopeo copy verifies blob digests and diff IDs while it copies. From
    // the oci-archive nothing changes; from the docker-archive skopeo converts
    // the manifest to OCI and re-serialises the config (key order), so there
    // the config must be the same JSON, not the same bytes.
    x.skopeo(&[
        "copy",
        "-q",
        &oa,
        &format!("oci:{}:busybox", x.s("from-oci")),
    ]);
    let (oci_cd, oci_config) = layout_dir_config(&x.path("from-oci"));
    assert_eq!(oci_cd, config, "skopeo copy {oa}");
    assert_eq!(oci_config, raw_config);
    x.skopeo(&[
        "copy",
        "-q",
        &da,
        &format!("oci:{}:busybox", x.s("from-docker")),
    ]);
    let (_, docker_config) = layout_dir_config(&x.path("from-docker"));
    assert_eq!(docker_config, raw_config, "skopeo copy {da}: same config");
}

// ---------------------------------------------------------------------------
// 2. podman loads what berth saves

/// `podman load` accepts both of berth's archive formats and ends up with the
/// same image ID (podman prints the config digest without `sha256:`); from
/// the oci-archive podman records berth's manifest digest.
#[test]
fn podman_loads_berth_archives() {
    let (manifest, config) = fixture_digests("busybox.oci");
    let x = Scratch::new();
    let s = store_with_busybox();
    let (docker, oci) = (x.s("busybox.docker.tar"), x.s("busybox.oci.tar"));
    s.ok(&["save", "--format", "docker", "-o", &docker, "busybox"]);
    s.ok(&["save", "--format", "oci", "-o", &oci, "busybox"]);

    let mut ids = Vec::new();
    for (file, store) in [(&docker, "podman-docker"), (&oci, "podman-oci")] {
        let p = x.podman(store);
        let names = p.load(file);
        assert_eq!(names.len(), 1, "{file}: {names:?}");
        let name = &names[0];
        assert!(name.ends_with("busybox:latest"), "{file}: loaded as {name}");
        let id = p.ok(&["image", "inspect", "--format", "{{.Id}}", name]);
        assert_eq!(
            format!("sha256:{}", id.trim()),
            config,
            "{file}: podman's image ID"
        );
        let i = p.inspect(name);
        assert!(
            strs(&i["RepoTags"])
                .iter()
                .any(|t| t.ends_with("/busybox:latest")),
            "{file}: {}",
            i["RepoTags"]
        );
        if file == &oci {
            assert_eq!(
                i["Digest"],
                manifest.as_str(),
                "podman keeps berth's manifest"
            );
        }
        // podman can hand it back: a docker-archive of it loads in berth as
        // the same image.
        let back = x.s(&format!("{store}-back.tar"));
        p.ok(&["save", "--format", "docker-archive", "-o", &back, name]);
        ids.push(id.trim().to_string());
        p.finish();
        let s2 = Store::new();
        s2.ok(&["load", "-i", &back]);
        assert_eq!(s2.images()[0]["ID"], config.as_str());
    }
    assert_eq!(ids[0], ids[1], "same image ID from both formats");
}

/// A multi-image docker-archive written by berth (two names for busybox plus
/// debian) loads in podman with every name and both image IDs.
#[test]
fn podman_loads_berth_multi_image_docker_archive() {
    let (_, busybox) = fixture_digests("busybox.oci");
    let (_, debian) = fixture_digests("debian.oci");
    let x = Scratch::new();
    let s = store_with_busybox();
    s.ok(&["load", "-i", &fixture("debian.oci.tar")]);
    s.ok(&["tag", "busybox", "example.com/second:v1"]);
    let file = x.s("multi.tar");
    s.ok(&[
        "save",
        "-o",
        &file,
        "busybox",
        "example.com/second:v1",
        "debian:bookworm",
    ]);

    let p = x.podman("podman");
    let mut names = p.load(&file);
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    for (name, config) in [
        ("busybox:latest", &busybox),
        ("example.com/second:v1", &busybox),
        ("debian:bookworm", &debian),
    ] {
        let full = names
            .iter()
            .find(|n| n.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not loaded: {names:?}"));
        let id = p.ok(&["image", "inspect", "--format", "{{.Id}}", full]);
        assert_eq!(&format!("sha256:{}", id.trim()), config, "{full}");
    }
    p.finish();
}

// ---------------------------------------------------------------------------
// 3. berth loads what the peers write

/// An oci-archive written by `skopeo copy … oci-archive:F:name:tag` (where
/// `org.opencontainers.image.ref.name` is the whole `name:tag`) loads in
/// berth under that name, with the fixture's config and the manifest digest
/// the archive's index names.
#[test]
fn berth_loads_skopeo_oci_archive() {
    let (manifest, config) = fixture_digests("busybox.oci");
    let x = Scratch::new();
    let cases = [
        ("busybox:latest", "busybox", "latest"),
        ("example.com/team/box:v2", "example.com/team/box", "v2"),
    ];
    for (i, (reference, repo, tag)) in cases.into_iter().enumerate() {
        let file = x.s(&format!("skopeo-{i}.tar"));
        x.skopeo(&[
            "copy",
            "-q",
            &format!("oci-archive:{}", fixture("busybox.oci.tar")),
            &format!("oci-archive:{file}:{reference}"),
        ]);
        let in_archive = only_manifest_digest(Path::new(&file));
        assert_eq!(in_archive, manifest, "skopeo kept the manifest");

        let s = Store::new();
        s.ok(&["load", "-i", &file]);
        let imgs = s.images();
        assert_eq!(imgs.len(), 1, "{reference}: {imgs:?}");
        assert_eq!(imgs[0]["Repository"], repo, "{reference}");
        assert_eq!(imgs[0]["Tag"], tag, "{reference}");
        let inspect = berth_inspect(&s, reference);
        assert_eq!(inspect["Id"], config.as_str(), "{reference}");
        assert_eq!(
            inspect["Descriptor"]["digest"],
            in_archive.as_str(),
            "{reference}"
        );
    }
}

/// `podman save --format oci-archive` loads in berth: podman rewrites the
/// layer (it stores layers uncompressed and compresses again on save), so the
/// manifest digest differs from the fixture's; berth must record exactly the
/// one in podman's index. The config digest is the fixture's.
#[test]
fn berth_loads_podman_oci_archive() {
    let (_, config) = fixture_digests("busybox.oci");
    let x = Scratch::new();
    let p = x.podman("podman");
    p.load(&fixture("busybox.oci.tar"));
    let file = x.s("podman.oci.tar");
    p.ok(&["save", "--format", "oci-archive", "-o", &file, "busybox"]);
    p.finish();

    let in_archive = only_manifest_digest(Path::new(&file));
    let s = Store::new();
    s.ok(&["load", "-i", &file]);
    let imgs = s.images();
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    assert_eq!(imgs[0]["Repository"], "busybox");
    assert_eq!(imgs[0]["Tag"], "latest");
    let i = berth_inspect(&s, "busybox");
    assert_eq!(i["Id"], config.as_str());
    assert_eq!(i["Descriptor"]["digest"], in_archive.as_str());
    assert_eq!(imgs[0]["Digest"], in_archive.as_str());
    assert_eq!(s.ok(&["system", "check"]).trim(), "no problems found");
}

/// `podman save --format docker-archive` (one image) and `podman save -m`
/// (two names: busybox and a `podman tag`ged second name) load in berth with
/// the fixture's config digest and every name.
#[test]
fn berth_loads_podman_docker_archives() {
    let (_, config) = fixture_digests("busybox.oci");
    let x = Scratch::new();
    let p = x.podman("podman");
    p.load(&fixture("busybox.oci.tar"));
    p.ok(&["tag", "busybox", "localhost/second:v1"]);
    let (single, multi) = (x.s("single.tar"), x.s("multi.tar"));
    p.ok(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        &single,
        "busybox",
    ]);
    p.ok(&[
        "save",
        "-m",
        "--format",
        "docker-archive",
        "-o",
        &multi,
        "busybox",
        "localhost/second:v1",
    ]);
    p.finish();

    let s = Store::new();
    s.ok(&["load", "-i", &single]);
    let imgs = s.images();
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    assert_eq!(imgs[0]["Repository"], "busybox");
    assert_eq!(imgs[0]["ID"], config.as_str());
    assert_eq!(berth_inspect(&s, "busybox")["Id"], config.as_str());

    let s = Store::new();
    s.ok(&["load", "-i", &multi]);
    let mut tags: Vec<String> = s
        .images()
        .iter()
        .map(|i| {
            assert_eq!(i["ID"], config.as_str(), "{i}");
            format!(
                "{}:{}",
                i["Repository"].as_str().unwrap(),
                i["Tag"].as_str().unwrap()
            )
        })
        .collect();
    tags.sort();
    assert_eq!(tags, ["busybox:latest", "localhost/second:v1"]);
    for name in ["busybox", "localhost/second:v1"] {
        assert_eq!(berth_inspect(&s, name)["Id"], config.as_str(), "{name}");
    }
    assert_eq!(s.ok(&["system", "check"]).trim(), "no problems found");
}

// ---------------------------------------------------------------------------
// 4. round trip

/// fixture → berth load → berth save (oci) → skopeo copy to a new
/// oci-archive → berth load into a fresh store: the config digest and the
/// manifest digest survive every hop.
#[test]
fn round_trip_through_skopeo_keeps_digests() {
    let (manifest, config) = fixture_digests("busybox.oci");
    let x = Scratch::new();
    let s = store_with_busybox();
    let saved = x.s("berth.oci.tar");
    s.ok(&["save", "--format", "oci", "-o", &saved, "busybox"]);
    assert_eq!(only_manifest_digest(Path::new(&saved)), manifest);

    let copied = x.s("skopeo.oci.tar");
    x.skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{saved}"),
        &format!("oci-archive:{copied}:busybox:latest"),
    ]);
    assert_eq!(only_manifest_digest(Path::new(&copied)), manifest);

    let fresh = Store::new();
    fresh.ok(&["load", "-i", &copied]);
    let i = berth_inspect(&fresh, "busybox");
    assert_eq!(i["Id"], config.as_str(), "config digest survives");
    assert_eq!(
        i["Descriptor"]["digest"],
        manifest.as_str(),
        "manifest digest survives"
    );
    assert_eq!(fresh.images()[0]["Digest"], manifest.as_str());
    // And the unpacked tree is the same as from the fixture directly.
    let a = berth_inspect(&s, "busybox");
    assert_eq!(a["RootFS"], i["RootFS"]);
    assert_eq!(fresh.ok(&["system", "check"]).trim(), "no problems found");
}
