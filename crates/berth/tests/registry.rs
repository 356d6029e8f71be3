//! berth against real registries (issue 4): Debian's `docker-registry`
//! (distribution 2.8) started by each test on 127.0.0.x with a temporary
//! config — plain HTTP, TLS with a CA made in the test, htpasswd basic auth,
//! token auth with a token server written here — plus proxies and fake
//! servers for the bad-input cases. skopeo and podman are the peers that
//! must accept what berth pushes and push what berth pulls.
//!
//! Every test has its own registry, ports, store and config files
//! (`BERTH_CONFIG`, `BERTH_AUTH_FILE`, `DOCKER_CONFIG`), so they run in
//! parallel; no traffic leaves 127.0.0.0/8.

mod common;
#[path = "registry/net.rs"]
mod net;
#[path = "registry/pki.rs"]
mod pki;
#[path = "registry/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berth_engine::image::Digest;
use common::{Run, Store, fixture, fixture_digests, scratch};
use net::{Fault, LOCALHOST, Request, Response};
use serde_json::{Value, json};
use server::{Auth, Registry, TokenServer};

/// Longest any single berth or peer command may take before the test fails
/// (rather than hanging the suite).
const LIMIT: Duration = Duration::from_secs(180);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

// ---------------------------------------------------------------------------
// running commands

/// Runs `c` for at most [`LIMIT`], feeding it `input`.
fn run_limited(mut c: Command, input: Option<&[u8]>) -> Run {
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // The tests must not depend on the host's proxy settings.
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(v);
    }
    let what = format!("{c:?}");
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} is not installed; run scripts/deps.sh",
            c.get_program()
        ),
        Err(e) => panic!("spawn {what}: {e}"),
    };
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i).unwrap();
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {LIMIT:?}; killed");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

fn ok_or_panic(what: &str, r: Run) -> String {
    assert_eq!(
        r.code, 0,
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// `err` (lower-cased) contains every one of `all` and at least one of `any`.
fn assert_mentions(err: &str, all: &[&str], any: &[&str]) {
    let low = err.to_lowercase();
    for n in all {
        assert!(
            low.contains(&n.to_lowercase()),
            "error should mention {n:?}:\n{err}"
        );
    }
    assert!(
        any.is_empty() || any.iter().any(|n| low.contains(&n.to_lowercase())),
        "error should mention one of {any:?}:\n{err}"
    );
}

/// skopeo with a private TMPDIR and auth file; insists on success.
fn skopeo(args: &[&str]) -> String {
    let tmp = scratch();
    let mut c = Command::new("skopeo");
    c.env("TMPDIR", tmp.path())
        .env("REGISTRY_AUTH_FILE", tmp.path().join("auth.json"))
        .arg("--insecure-policy")
        .args(args);
    ok_or_panic(&format!("skopeo {args:?}"), run_limited(c, None))
}

/// Pushes a fixture archive (`busybox.oci.tar` …) to `dest` (HOST/REPO:TAG,
/// plain HTTP) with skopeo; `creds` is `user:password`.
fn skopeo_push_fixture(file: &str, dest: &str, creds: Option<&str>) {
    let transport = if file.contains(".oci.") {
        "oci-archive"
    } else {
        "docker-archive"
    };
    let src = format!("{transport}:{}", fixture(file));
    let dst = format!("docker://{dest}");
    let mut args = vec!["copy", "-q", "--dest-tls-verify=false", &src, &dst];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    skopeo(&args);
}

/// The manifest digest of `busybox.oci.tar` and its one layer's digest.
fn busybox_digests() -> (String, String) {
    let (manifest, _) = fixture_digests("busybox.oci");
    let layout = OciDir::busybox();
    let m: Value = serde_json::from_slice(&layout.blob(&manifest)).unwrap();
    (manifest, m["layers"][0]["digest"].as_str().unwrap().into())
}

// ---------------------------------------------------------------------------
// berth with its own store and config files

/// A berth with a private store and private config, credential and Docker
/// config files (`BERTH_CONFIG`, `BERTH_AUTH_FILE`, `DOCKER_CONFIG`).
struct Berth {
    store: Store,
    etc: tempfile::TempDir,
    config: std::cell::RefCell<Value>,
}

impl Berth {
    fn new() -> Berth {
        let etc = scratch();
        fs::create_dir(etc.path().join("certs.d")).unwrap();
        fs::create_dir(etc.path().join("docker")).unwrap();
        let certs = etc.path().join("certs.d").display().to_string();
        let b = Berth {
            store: Store::new(),
            etc,
            config: std::cell::RefCell::new(json!({ "certs-dir": certs })),
        };
        b.write_config();
        b
    }

    fn write_config(&self) {
        fs::write(
            self.etc.path().join("config.json"),
            serde_json::to_vec_pretty(&*self.config.borrow()).unwrap(),
        )
        .unwrap();
    }

    /// Sets one key of berth's config file.
    fn configure(&self, key: &str, value: Value) {
        self.config.borrow_mut()[key] = value;
        self.write_config();
    }

    fn auth_file(&self) -> PathBuf {
        self.etc.path().join("auth.json")
    }

    fn docker_config(&self) -> PathBuf {
        self.etc.path().join("docker")
    }

    /// Trusts `ca` for `host` (`ip:port`) the certs.d way.
    fn trust(&self, host: &str, ca: &Path) {
        let d = self.etc.path().join("certs.d").join(host);
        fs::create_dir_all(&d).unwrap();
        fs::copy(ca, d.join("ca.crt")).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.store.cmd(args);
        c.env("BERTH_CONFIG", self.etc.path().join("config.json"))
            .env("BERTH_AUTH_FILE", self.auth_file())
            .env("DOCKER_CONFIG", self.docker_config());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        run_limited(self.cmd(args), None)
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        run_limited(self.cmd(args), Some(input))
    }

    fn ok(&self, args: &[&str]) -> String {
        ok_or_panic(&format!("berth {args:?}"), self.run(args))
    }

    /// Runs berth, insists on exit code 1 and a message; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 1,
            "berth {args:?} should fail with exit code 1\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        assert!(
            !r.stderr.trim().is_empty(),
            "berth {args:?} failed silently"
        );
        r.stderr
    }

    /// `berth pull REF` (extra args before REF); checks the output shape and
    /// returns the digest it reports.
    fn pull_with(&self, extra: &[&str], reference: &str) -> String {
        let mut args = vec!["pull"];
        args.extend(extra);
        args.push(reference);
        let out = self.ok(&args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.last().copied(),
            Some(reference),
            "last line of pull should be the reference:\n{out}"
        );
        let digest = lines
            .iter()
            .find_map(|l| l.strip_prefix("Digest: "))
            .unwrap_or_else(|| panic!("no Digest: line in pull output:\n{out}"))
            .trim()
            .to_string();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        digest
    }

    fn pull(&self, reference: &str) -> String {
        self.pull_with(&[], reference)
    }

    /// `berth push REF`; returns the manifest digest from its last line.
    fn push(&self, reference: &str) -> String {
        self.push_env(reference, &[]).0
    }

    /// `berth push REF` with extra environment variables; returns the
    /// manifest digest from its last line and the whole output.
    fn push_env(&self, reference: &str, env: &[(&str, &str)]) -> (String, String) {
        let mut c = self.cmd(&["push", reference]);
        c.envs(env.iter().copied());
        let r = run_limited(c, None);
        let all = format!("{}{}", r.stdout, r.stderr);
        let out = ok_or_panic(&format!("berth push {reference}"), r);
        let last = out.lines().last().unwrap_or("");
        let tag = reference.rsplit_once(':').unwrap().1;
        let rest = last
            .strip_prefix(&format!("{tag}: digest: "))
            .unwrap_or_else(|| panic!("push's last line should be '{tag}: digest: …':\n{out}"));
        let (digest, size) = rest.split_once(" size: ").expect("size: in push output");
        assert!(size.trim().parse::<u64>().is_ok(), "{last}");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{last}"
        );
        (digest.to_string(), all)
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["image", "inspect", name])).unwrap();
        v[0].clone()
    }

    fn images_q(&self) -> Vec<String> {
        self.ok(&["images", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Loads the busybox fixture and names it `name`.
    fn load_busybox_as(&self, name: &str) {
        self.ok(&["load", "-q", "-i", &fixture("busybox.oci.tar")]);
        self.ok(&["tag", "busybox:latest", name]);
    }

    /// `berth run --rm IMAGE echo ok` prints ok.
    fn assert_runs(&self, image: &str) {
        assert_eq!(self.ok(&["run", "--rm", image, "echo", "ok"]).trim(), "ok");
    }

    /// Every file under the store (names and sizes), except the metadata
    /// database and lock files, which change without anything being stored.
    fn stored(&self) -> BTreeSet<String> {
        let root = self.store.root();
        common::walk(&root)
            .into_iter()
            .filter(|p| p.is_file())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                !n.ends_with(".redb") && !n.ends_with(".lock")
            })
            .map(|p| {
                let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                format!("{} {len}", p.strip_prefix(&root).unwrap().display())
            })
            .collect()
    }

    /// Runs berth `args`, which must fail (exit 1) with a message naming
    /// everything in `all` and something in `any`, and leave no image and no
    /// new file in the store; returns stderr.
    fn fails_storing_nothing(&self, args: &[&str], all: &[&str], any: &[&str]) -> String {
        let images = self.images_q();
        let before = self.stored();
        let err = self.fails(args);
        eprintln!("berth {args:?} failed as it should:\n{err}");
        assert_mentions(&err, all, any);
        assert_eq!(
            self.images_q(),
            images,
            "images changed by a failed {args:?}"
        );
        let after = self.stored();
        assert_eq!(
            after,
            before,
            "files left in the store by a failed {args:?}:\n{:#?}",
            after.difference(&before).collect::<Vec<_>>()
        );
        assert_eq!(self.ok(&["system", "check"]).trim(), "no problems found");
        err
    }
}

// ---------------------------------------------------------------------------
// OCI layouts for skopeo to push

/// An OCI image layout directory, starting from the busybox fixture.
struct OciDir {
    dir: tempfile::TempDir,
}

impl OciDir {
    fn busybox() -> OciDir {
        let dir = scratch();
        let f = fs::File::open(fixture("busybox.oci.tar")).unwrap();
        tar::Archive::new(f).unpack(dir.path()).unwrap();
        OciDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::read(self.path().join("blobs/sha256").join(hex)).unwrap()
    }

    fn json_blob(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).unwrap()
    }

    /// Stores a blob; returns its descriptor.
    fn put(&self, media_type: &str, data: &[u8]) -> Value {
        let d = Digest::of(data);
        fs::write(self.path().join("blobs/sha256").join(d.hex()), data).unwrap();
        json!({"mediaType": media_type, "digest": d.to_string(), "size": data.len()})
    }

    fn put_json(&self, media_type: &str, v: &Value) -> Value {
        self.put(media_type, &serde_json::to_vec(v).unwrap())
    }

    /// The busybox image's (manifest descriptor, manifest, config).
    fn base(&self) -> (Value, Value, Value) {
        let index: Value =
            serde_json::from_slice(&fs::read(self.path().join("index.json")).unwrap()).unwrap();
        let desc = index["manifests"][0].clone();
        let manifest = self.json_blob(desc["digest"].as_str().unwrap());
        let config = self.json_blob(manifest["config"]["digest"].as_str().unwrap());
        (desc, manifest, config)
    }

    /// A manifest like busybox's but with `config`; returns its descriptor.
    fn manifest_with(&self, manifest: &Value, config: &Value, extra_layers: &[Value]) -> Value {
        let mut m = manifest.clone();
        m["config"] = self.put_json(OCI_CONFIG, config);
        m["layers"]
            .as_array_mut()
            .unwrap()
            .extend(extra_layers.iter().cloned());
        self.put_json(OCI_MANIFEST, &m)
    }

    /// Points index.json's only entry, tagged `tag`, at `desc`.
    fn tag(&self, tag: &str, desc: &Value) {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d]});
        fs::write(
            self.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// `skopeo copy [--all] oci:DIR:TAG docker://DEST`.
    fn push(&self, tag: &str, dest: &str, all: bool) {
        let src = format!("oci:{}:{tag}", self.path().display());
        let dst = format!("docker://{dest}");
        let mut args = vec!["copy", "-q", "--dest-tls-verify=false"];
        if all {
            args.push("--all");
        }
        args.extend([src.as_str(), dst.as_str()]);
        skopeo(&args);
    }
}

/// Busybox plus a layer holding /marker with `text`, tagged `tag` in `oci`;
/// returns the new config digest (the image ID).
fn busybox_with_marker(oci: &OciDir, tag: &str, text: &str) -> String {
    let (_, manifest, mut config) = oci.base();
    let tar = common::layer(&[common::Entry::File("marker", text.as_bytes())]);
    let layer = oci.put(OCI_LAYER_GZIP, &common::gzip(&tar));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(Digest::of(&tar).to_string()));
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"created_by": "berth registry test: /marker"}));
    let desc = oci.manifest_with(&manifest, &config, &[layer]);
    oci.tag(tag, &desc);
    oci.json_blob(desc["digest"].as_str().unwrap())["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------
// podman with private storage

/// A podman whose storage lives in a scratch dir; reset and unmounted on drop.
struct Podman {
    base: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let base = scratch();
        fs::create_dir(base.path().join("tmp")).unwrap();
        // podman insists that a REGISTRY_AUTH_FILE it is given exists.
        fs::write(base.path().join("auth.json"), "{}").unwrap();
        Podman { base }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let b = self.base.path();
        let mut c = common::podman_in(b, &b.join("tmp"));
        c.env("REGISTRY_AUTH_FILE", b.join("auth.json")).args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        ok_or_panic(
            &format!("podman {args:?}"),
            run_limited(self.cmd(args), None),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.base.path().join("root").exists() {
            let _ = self.cmd(&["system", "reset", "-f"]).output();
        }
        common::unmount_all_under(self.base.path());
    }
}

// ---------------------------------------------------------------------------
// round trips (plain HTTP on 127.0.0.1)

#[test]
fn push_then_pull_into_an_empty_store() {
    let reg = Registry::plain();
    let a = Berth::new();
    let r = format!("{}/rt/busybox:1", reg.host());
    a.load_busybox_as(&r);
    let pushed = a.push(&r);
    // Pushing again finds every blob there; another repository in the same
    // registry can mount them; the manifest digest stays the same.
    assert_eq!(a.push(&r), pushed);
    let other = format!("{}/rt/other:2", reg.host());
    a.ok(&["tag", &r, &other]);
    assert_eq!(a.push(&other), pushed);

    let b = Berth::new();
    assert_eq!(b.pull(&r), pushed);
    let img = b.inspect(&r);
    assert_eq!(img["Id"], a.inspect(&r)["Id"], "same config after the trip");
    let repo_digest = format!("{}/rt/busybox@{pushed}", reg.host());
    assert!(
        img["RepoDigests"]
            .as_array()
            .unwrap()
            .contains(&json!(repo_digest)),
        "RepoDigests should hold {repo_digest}: {}",
        img["RepoDigests"]
    );
    b.assert_runs(&r);

    // -q: only the reference.
    let c = Berth::new();
    assert_eq!(c.ok(&["pull", "-q", &other]).trim(), other);
    assert_eq!(c.inspect(&other)["Id"], img["Id"]);

    // manifest inspect shows what the registry holds.
    let m: Value = serde_json::from_str(&b.ok(&["manifest", "inspect", &r])).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["config"]["digest"], img["Id"]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{r}"),
    ]);
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), pushed);

    // Tag listing (GET /v2/NAME/tags/list), as `podman search --list-tags`.
    a.ok(&["tag", &r, &format!("{}/rt/busybox:2", reg.host())]);
    a.push(&format!("{}/rt/busybox:2", reg.host()));
    let out = b.ok(&[
        "search",
        "--list-tags",
        &format!("{}/rt/busybox", reg.host()),
    ]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TAG"], "{out}");
    let repo = format!("{}/rt/busybox", reg.host());
    assert_eq!(
        rows[1..],
        [[repo.as_str(), "1"], [repo.as_str(), "2"]],
        "{out}"
    );
    let v: Value = serde_json::from_str(&b.ok(&[
        "search",
        "--list-tags",
        "--format",
        "json",
        &format!("{}/rt/other", reg.host()),
    ]))
    .unwrap();
    assert_eq!(v[0]["Tags"], json!(["2"]), "{v}");
    let err = b.fails(&[
        "search",
        "--list-tags",
        &format!("{}/rt/nosuch", reg.host()),
    ]);
    assert!(err.contains("rt/nosuch"), "{err}");
}

#[test]
fn skopeo_pushes_and_berth_pulls_and_runs() {
    let reg = Registry::plain();
    let b = Berth::new();
    // OCI manifest, pushed as-is: berth sees the fixture's own digest.
    let oci = format!("{}/library/busybox:oci", reg.host());
    skopeo_push_fixture("busybox.oci.tar", &oci, None);
    assert_eq!(b.pull(&oci), fixture_digests("busybox.oci").0);
    b.assert_runs(&oci);
    // Docker schema2 manifest from the docker-archive.
    let docker = format!("{}/library/busybox:docker", reg.host());
    skopeo_push_fixture("busybox.docker.tar", &docker, None);
    let d = b.pull(&docker);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{docker}"),
    ]);
    let m: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(Digest::of(raw.as_bytes()).to_string(), d);
    b.assert_runs(&docker);
    // Same config either way: one image with two names.
    assert_eq!(b.inspect(&oci)["Id"], b.inspect(&docker)["Id"]);
}

#[test]
fn berth_pushes_and_skopeo_and_podman_accept() {
    let reg = Registry::plain();
    let b = Berth::new();
    let r = format!("{}/peers/busybox:1", reg.host());
    b.load_busybox_as(&r);
    let pushed = b.push(&r);

    let info: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{r}"),
    ]))
    .unwrap();
    assert_eq!(info["Digest"], pushed);
    assert_eq!(info["Architecture"], "amd64");
    // A full copy checks every blob against its digest.
    let out = scratch();
    skopeo(&[
        "copy",
        "-q",
        "--src-tls-verify=false",
        &format!("docker://{r}"),
        &format!("oci:{}:x", out.path().display()),
    ]);

    let p = Podman::new();
    p.ok(&["pull", "-q", "--tls-verify=false", &r]);
    let v: Value = serde_json::from_str(&p.ok(&["image", "inspect", &r])).unwrap();
    assert_eq!(v[0]["Digest"], pushed);
    assert_eq!(
        format!("sha256:{}", v[0]["Id"].as_str().unwrap()),
        b.inspect(&r)["Id"].as_str().unwrap()
    );
}

#[test]
fn multi_platform_index_picks_the_requested_platform() {
    let reg = Registry::plain();
    let oci = OciDir::busybox();
    let (amd64, manifest, config) = oci.base();
    // platform → (image ID, manifest digest). The other platforms reuse
    // busybox's layer under their own configs; amd64 comes last so that
    // taking the first entry is wrong, arm/v6 before arm/v7 so that ignoring
    // the variant is wrong.
    let mut want = std::collections::BTreeMap::new();
    let mut entries = Vec::new();
    for (arch, variant) in [("arm64", "v8"), ("arm", "v6"), ("arm", "v7")] {
        let mut c = config.clone();
        c["architecture"] = json!(arch);
        c["variant"] = json!(variant);
        let mut desc = oci.manifest_with(&manifest, &c, &[]);
        let digest = desc["digest"].as_str().unwrap().to_string();
        let id = oci.json_blob(&digest)["config"]["digest"].clone();
        want.insert(format!("{arch}/{variant}"), (id, digest));
        desc["platform"] = json!({"architecture": arch, "os": "linux", "variant": variant});
        entries.push(desc);
    }
    let amd64_digest = amd64["digest"].as_str().unwrap().to_string();
    let amd64_id = oci.json_blob(&amd64_digest)["config"]["digest"].clone();
    want.insert("amd64".into(), (amd64_id, amd64_digest));
    let mut a = amd64.clone();
    a.as_object_mut().unwrap().remove("annotations");
    a["platform"] = json!({"architecture": "amd64", "os": "linux"});
    entries.push(a);
    let index = oci.put_json(
        OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    );
    oci.tag("multi", &index);
    let r = format!("{}/multi/busybox:1", reg.host());
    oci.push("multi", &r, true);
    let index_digest = index["digest"].as_str().unwrap();

    let b = Berth::new();
    let check = |platform: &[&str], key: &str| {
        let (want_id, manifest_digest) = &want[key];
        let d = b.pull_with(platform, &r);
        // Docker reports (and records) the index digest; the platform's
        // manifest digest would name what was pulled as well. Either way the
        // digest shown must be the one recorded.
        assert!(
            d == index_digest || &d == manifest_digest,
            "{platform:?}: digest {d} is neither the index nor the manifest"
        );
        let img = b.inspect(&r);
        assert_eq!(&img["Id"], want_id, "{platform:?} pulled the wrong image");
        let repo_digest = format!("{}/multi/busybox@{d}", reg.host());
        assert!(
            img["RepoDigests"]
                .as_array()
                .unwrap()
                .contains(&json!(repo_digest)),
            "pull printed Digest: {d}, so RepoDigests should hold {repo_digest}: {}",
            img["RepoDigests"]
        );
    };
    check(&[], "amd64");
    assert_eq!(b.inspect(&r)["Architecture"], "amd64");
    b.assert_runs(&r);
    check(&["--platform", "linux/arm64"], "arm64/v8");
    assert_eq!(b.inspect(&r)["Architecture"], "arm64");
    check(&["--platform", "linux/arm64/v8"], "arm64/v8");
    check(&["--platform", "linux/arm/v7"], "arm/v7");
    check(&["--platform", "linux/amd64"], "amd64");
    // manifest inspect shows the index itself.
    let m: Value = serde_json::from_str(&b.ok(&["manifest", "inspect", &r])).unwrap();
    assert_eq!(m["mediaType"], OCI_INDEX);
    assert_eq!(m["manifests"].as_array().unwrap().len(), 4);
    // No such platform: a clear error, nothing new stored.
    let before = b.images_q();
    let err = b.fails(&["pull", "--platform", "linux/s390x", &r]);
    assert_mentions(&err, &["s390x"], &[]);
    assert_eq!(b.images_q(), before);

    // By digest: the index's picks the platform, a manifest's is that image.
    for (reference, key) in [
        (
            format!("{}/multi/busybox@{index_digest}", reg.host()),
            "amd64",
        ),
        (
            format!("{}/multi/busybox@{}", reg.host(), want["arm/v6"].1),
            "arm/v6",
        ),
    ] {
        let c = Berth::new();
        let out = c.ok(&["pull", &reference]);
        assert_eq!(out.lines().last(), Some(reference.as_str()), "{out}");
        let ids = c.images_q();
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert_eq!(c.inspect(&ids[0])["Id"], want[key].0, "{reference}");
    }
}

#[test]
fn run_and_create_pull_policies() {
    let reg = Registry::plain();
    let b = Berth::new();
    let r = format!("{}/policy/busybox:1", reg.host());
    skopeo_push_fixture("busybox.oci.tar", &r, None);
    let probe = |policy: Option<&str>| -> String {
        let mut args = vec!["run", "--rm"];
        if let Some(p) = policy {
            args.extend(["--pull", p]);
        }
        args.extend([
            r.as_str(),
            "sh",
            "-c",
            "cat /marker 2>/dev/null || echo none",
        ]);
        b.ok(&args).trim().to_string()
    };

    // never, and the image is not here: an error naming it, nothing pulled.
    let r1 = b.run(&["run", "--rm", "--pull", "never", &r, "echo", "ok"]);
    assert_ne!(r1.code, 0, "run --pull never pulled:\n{}", r1.stdout);
    assert_mentions(&r1.stderr, &["policy/busybox"], &[]);
    let r2 = b.run(&["create", "--pull", "never", &r]);
    assert_ne!(r2.code, 0, "create --pull never pulled:\n{}", r2.stdout);
    assert!(b.images_q().is_empty());

    // missing: pulls what is not here.
    assert_eq!(probe(Some("missing")), "none");
    assert_eq!(b.images_q().len(), 1);

    // The tag moves on in the registry.
    let oci = OciDir::busybox();
    let v2 = busybox_with_marker(&oci, "v2", "v2\n");
    oci.push("v2", &r, false);

    // missing (the default) and never use the local image.
    assert_eq!(probe(None), "none");
    assert_eq!(probe(Some("missing")), "none");
    assert_eq!(probe(Some("never")), "none");
    // always pulls, and the local tag follows.
    assert_eq!(probe(Some("always")), "v2");
    assert_eq!(b.inspect(&r)["Id"], json!(v2));
    assert_eq!(probe(Some("never")), "v2");

    // create pulls the same way.
    let other = format!("{}/policy/other:1", reg.host());
    skopeo_push_fixture("busybox.oci.tar", &other, None);
    let id = b.ok(&["create", "--pull", "missing", &other, "true"]);
    b.ok(&["rm", id.trim()]);
    let id = b.ok(&["create", "--pull", "always", &r, "true"]);
    b.ok(&["rm", id.trim()]);
}

// ---------------------------------------------------------------------------
// TLS

/// A TLS registry on 127.0.0.1 with a CA made for the test.
fn tls_registry(dir: &Path) -> (Registry, pki::Ca) {
    let ca = pki::Ca::new(dir);
    let (cert, key) = ca.server_cert("127.0.0.1");
    (
        Registry::start(LOCALHOST, Auth::None, Some((&cert, &key))),
        ca,
    )
}

#[test]
fn tls_registry_trusted_through_certs_dir() {
    let pki_dir = scratch();
    let (reg, ca) = tls_registry(pki_dir.path());
    let r = format!("{}/tls/busybox:1", reg.host());
    // skopeo checks the certificate too, given the same certs.d-style dir.
    let cert_dir = scratch();
    fs::copy(&ca.cert, cert_dir.path().join("ca.crt")).unwrap();
    let src = format!("oci-archive:{}", fixture("busybox.oci.tar"));
    skopeo(&[
        "copy",
        "-q",
        "--dest-cert-dir",
        &cert_dir.path().display().to_string(),
        &src,
        &format!("docker://{r}"),
    ]);

    let b = Berth::new();
    b.trust(&reg.host(), &ca.cert);
    assert_eq!(b.pull(&r), fixture_digests("busybox.oci").0);
    b.assert_runs(&r);
    let r2 = format!("{}/tls/pushed:1", reg.host());
    b.ok(&["tag", &r, &r2]);
    let pushed = b.push(&r2);
    let c = Berth::new();
    c.trust(&reg.host(), &ca.cert);
    assert_eq!(c.pull(&r2), pushed);
}

#[test]
fn tls_registry_without_its_ca_fails_with_a_certificate_error() {
    let pki_dir = scratch();
    let (reg, _ca) = tls_registry(pki_dir.path());
    let r = format!("{}/tls/busybox:1", reg.host());
    skopeo_push_fixture("busybox.oci.tar", &r, None);
    let b = Berth::new();
    b.fails_storing_nothing(&["pull", &r], &[&reg.host(), "certificate"], &[]);
    // A CA for someone else does not help either.
    let other = pki::Ca::new(&pki_dir.path().join("other"));
    b.trust(&reg.host(), &other.cert);
    b.fails_storing_nothing(&["pull", &r], &[&reg.host(), "certificate"], &[]);
}

// ---------------------------------------------------------------------------
// auth

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55";

fn htpasswd_registry() -> Registry {
    Registry::start(
        LOCALHOST,
        Auth::Htpasswd {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        None,
    )
}

fn token_registry() -> (Registry, Arc<TokenServer>) {
    let t = TokenServer::start(USER, PASSWORD);
    (Registry::start(LOCALHOST, Auth::Token(t.clone()), None), t)
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The auth file's bytes, or None if there is none.
fn read_opt(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

/// login (both password forms) → pull, run, push → logout → refused again.
fn login_round_trip(reg: &Registry) {
    let host = reg.host();
    let creds = format!("{USER}:{PASSWORD}");
    let r = format!("{host}/auth/busybox:1");
    skopeo_push_fixture("busybox.oci.tar", &r, Some(&creds));

    let b = Berth::new();
    // Anonymous: refused, nothing stored.
    b.fails_storing_nothing(
        &["pull", &r],
        &[&host],
        &["unauthorized", "authentication required", "denied"],
    );
    assert!(!b.auth_file().exists());

    let out = b.ok(&["login", "-u", USER, "-p", PASSWORD, &host]);
    assert!(out.contains("Login Succeeded"), "{out}");
    assert_eq!(mode(&b.auth_file()), 0o600, "auth file must be 0600");
    assert_eq!(b.pull(&r), fixture_digests("busybox.oci").0);
    b.assert_runs(&r);
    let pushed_ref = format!("{host}/auth/pushed:1");
    b.ok(&["tag", &r, &pushed_ref]);
    let pushed = b.push(&pushed_ref);

    b.ok(&["logout", &host]);
    let after = read_opt(&b.auth_file()).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&after).contains(&host),
        "logout left {host} in the auth file"
    );
    let c = Berth::new();
    // Shares nothing with b: b's logout must not matter, c's own login does.
    c.fails_storing_nothing(
        &["pull", &pushed_ref],
        &[&host],
        &["unauthorized", "authentication required", "denied"],
    );
    let out = c.run_stdin(
        &["login", "-u", USER, "--password-stdin", &host],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert_eq!(out.code, 0, "login --password-stdin: {}", out.stderr);
    assert!(out.stdout.contains("Login Succeeded"), "{}", out.stdout);
    assert_eq!(mode(&c.auth_file()), 0o600);
    assert_eq!(c.pull(&pushed_ref), pushed);
    // And b, logged out, is refused again.
    b.ok(&["rmi", &pushed_ref]);
    b.fails(&["pull", &pushed_ref]);
}

/// A wrong password: login fails naming the problem, the auth file is
/// untouched (absent, then with the earlier good login).
fn wrong_password(reg: &Registry) {
    let host = reg.host();
    let b = Berth::new();
    let err = b.fails(&["login", "-u", USER, "-p", "wrong", &host]);
    assert_mentions(&err, &["unauthorized"], &[]);
    assert_eq!(read_opt(&b.auth_file()), None);
    b.ok(&["login", "-u", USER, "-p", PASSWORD, &host]);
    let good = read_opt(&b.auth_file()).unwrap();
    let r = b.run_stdin(
        &["login", "-u", USER, "--password-stdin", &host],
        b"not-it\n",
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(&r.stderr, &["unauthorized"], &[]);
    assert_eq!(read_opt(&b.auth_file()).unwrap(), good, "auth file changed");
    assert_eq!(mode(&b.auth_file()), 0o600);
}

#[test]
fn basic_auth_login_push_pull_logout() {
    login_round_trip(&htpasswd_registry());
}

#[test]
fn basic_auth_wrong_password() {
    wrong_password(&htpasswd_registry());
}

#[test]
fn docker_config_auths_are_honoured() {
    let reg = htpasswd_registry();
    let host = reg.host();
    let r = format!("{host}/dockercfg/busybox:1");
    skopeo_push_fixture("busybox.oci.tar", &r, Some(&format!("{USER}:{PASSWORD}")));

    let b = Berth::new();
    let write = |password: &str| {
        let auth = net::b64(format!("{USER}:{password}").as_bytes(), false);
        fs::write(
            b.docker_config().join("config.json"),
            serde_json::to_vec(&json!({"auths": {&host: {"auth": auth}}})).unwrap(),
        )
        .unwrap();
    };
    // A wrong password there is refused, nothing stored.
    write("wrong");
    b.fails_storing_nothing(&["pull", &r], &[&host], &["unauthorized", "denied"]);
    write(PASSWORD);
    assert_eq!(b.pull(&r), fixture_digests("busybox.oci").0);
    b.assert_runs(&r);
    assert!(
        !b.auth_file().exists(),
        "pulling should not write berth's auth file"
    );
}

#[test]
fn token_auth_login_push_pull_logout() {
    let (reg, tokens) = token_registry();
    login_round_trip(&reg);
    let scopes = tokens.scopes();
    assert!(
        scopes.iter().any(|s| s == "repository:auth/busybox:pull"),
        "berth should ask for pull on auth/busybox: {scopes:?}"
    );
    assert!(
        scopes
            .iter()
            .any(|s| s.starts_with("repository:auth/pushed:") && s.contains("push")),
        "berth should ask for push on auth/pushed: {scopes:?}"
    );
}

#[test]
fn token_auth_wrong_password() {
    let (reg, tokens) = token_registry();
    wrong_password(&reg);
    assert!(tokens.refused.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

// ---------------------------------------------------------------------------
// bad input: each fails clearly, exits 1 and stores nothing

/// A plain registry holding busybox at `busybox:latest`.
fn registry_with_busybox() -> Registry {
    let reg = Registry::plain();
    skopeo_push_fixture(
        "busybox.oci.tar",
        &format!("{}/busybox:latest", reg.host()),
        None,
    );
    reg
}

/// busybox in a fresh registry, behind a proxy that applies `fault` to the GETs of
/// its layer.
struct Faulty {
    /// Kept for the test's length: dropping it stops the registry.
    _reg: Registry,
    proxy: net::Proxy,
    /// The layer's digest.
    layer: String,
    /// The image's reference through the proxy.
    r: String,
}

fn busybox_behind(fault: Fault) -> Faulty {
    let reg = registry_with_busybox();
    let (_, layer) = busybox_digests();
    let proxy = net::proxy(reg.addr, &layer, fault);
    let r = format!("{}/busybox:latest", proxy.host());
    Faulty {
        _reg: reg,
        proxy,
        layer,
        r,
    }
}

#[test]
fn corrupt_blob_is_refused_naming_its_digest() {
    let Faulty {
        _reg,
        proxy,
        layer,
        r,
    } = busybox_behind(Fault::Corrupt);
    let b = Berth::new();
    let hex = &layer["sha256:".len()..];
    b.fails_storing_nothing(
        &["pull", &r],
        &[&hex[..12]],
        &["digest", "mismatch", "verif", "corrupt"],
    );
    assert!(proxy.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn truncated_blob_is_refused_naming_its_digest() {
    let Faulty {
        _reg,
        proxy,
        layer,
        r,
    } = busybox_behind(Fault::Truncate);
    let b = Berth::new();
    let hex = &layer["sha256:".len()..];
    b.fails_storing_nothing(
        &["pull", &r],
        &[&hex[..12]],
        &[
            "truncat",
            "eof",
            "end of file",
            "incomplete",
            "short",
            "closed",
            "size",
            "expected",
        ],
    );
    assert!(proxy.hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn blob_that_stalls_midway_times_out() {
    let Faulty {
        _reg,
        proxy: _proxy,
        r,
        ..
    } = busybox_behind(Fault::Stall);
    let b = Berth::new();
    b.configure("registry-timeout-seconds", json!(2));
    b.fails_storing_nothing(&["pull", &r], &[], &["timed out", "timeout", "time out"]);
}

/// A fake registry on 127.0.0.1 answering `/v2/` and the manifests in
/// `manifests` (repository → (body, with Content-Length)).
fn fake_registry(manifests: Vec<(&'static str, Vec<u8>, bool)>) -> net::Server {
    net::serve(LOCALHOST, move |req: &Request| {
        let api = ("Docker-Distribution-API-Version", "registry/2.0");
        if req.path() == "/v2/" {
            return Response::json(200, &json!({})).header(api.0, api.1);
        }
        for (repo, body, len) in &manifests {
            if req.path() == format!("/v2/{repo}/manifests/latest") {
                let mut resp = Response::new(200)
                    .header(api.0, api.1)
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", &Digest::of(body).to_string())
                    .body(body.clone());
                resp.content_length = *len;
                return resp;
            }
        }
        Response::json(
            404,
            &json!({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}),
        )
        .header(api.0, api.1)
    })
}

#[test]
fn manifest_too_large_is_refused() {
    // A 5 MiB manifest (the cap is 4 MiB), as JSON that would parse: once
    // with Content-Length, once streamed without, so the cap must hold while
    // reading too.
    let pad = "x".repeat(5 << 20);
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
        "layers": [], "annotations": {"pad": pad},
    }))
    .unwrap();
    let fake = fake_registry(vec![
        ("huge", body.clone(), true),
        ("streamed", body, false),
    ]);
    let b = Berth::new();
    for repo in ["huge", "streamed"] {
        let r = format!("{}/{repo}:latest", fake.host());
        b.fails_storing_nothing(
            &["pull", &r],
            &[repo, "manifest"],
            &[
                "too large",
                "too big",
                "exceeds",
                "limit",
                "larger",
                "maximum",
            ],
        );
    }
}

#[test]
fn malformed_manifest_is_refused() {
    let body = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "#.to_vec();
    let fake = fake_registry(vec![("mangled", body, true)]);
    let b = Berth::new();
    let r = format!("{}/mangled:latest", fake.host());
    b.fails_storing_nothing(&["pull", &r], &["mangled", "manifest"], &[]);
}

#[test]
fn unknown_repository_is_named() {
    let reg = registry_with_busybox();
    let b = Berth::new();
    let r = format!("{}/no/such-repo:latest", reg.host());
    b.fails_storing_nothing(
        &["pull", &r],
        &["no/such-repo"],
        &["not found", "unknown", "no such", "does not exist"],
    );
}

#[test]
fn unknown_tag_is_named() {
    let reg = registry_with_busybox();
    let b = Berth::new();
    let r = format!("{}/busybox:no-such-tag", reg.host());
    b.fails_storing_nothing(
        &["pull", &r],
        &["no-such-tag"],
        &["not found", "unknown", "no such", "does not exist"],
    );
}

/// Requests berth made for repository content (manifests, blobs), from the
/// registry's access log.
fn content_requests(reg: &Registry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("berth/") && l.contains(" /v2/busybox/"))
        .count()
}

#[test]
fn http_registry_not_listed_as_insecure_is_refused() {
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let reg = Registry::start(ip, Auth::None, None);
    let host = reg.host();
    let r = format!("{host}/busybox:latest");
    skopeo_push_fixture("busybox.oci.tar", &r, None);
    let b = Berth::new();
    b.fails_storing_nothing(&["pull", &r], &[&host], &["insecure", "http"]);
    // A credential-free `GET /v2/` probe (to say "this is plain HTTP") is
    // fine; asking for the image over plain HTTP is not.
    assert_eq!(
        content_requests(&reg),
        0,
        "berth fetched content over plain HTTP:\n{}",
        reg.log()
    );
    // Listed as insecure, the same registry works.
    b.configure("insecure-registries", json!([host]));
    assert_eq!(b.pull(&r), fixture_digests("busybox.oci").0);
}

#[test]
fn hanging_registry_times_out() {
    let hang = net::hang(LOCALHOST);
    let b = Berth::new();
    b.configure("registry-timeout-seconds", json!(2));
    let r = format!("{}/busybox:latest", hang.host());
    b.fails_storing_nothing(
        &["pull", &r],
        &[&hang.host()],
        &["timed out", "timeout", "time out"],
    );
}

// ---------------------------------------------------------------------------
// protocol details, watched through a proxy: retries, resumption, upload
// paths, the download limit, token reuse

/// The requests `p` got with `method` whose path contains `pat`.
fn seen(p: &net::Proxy, method: &str, pat: &str) -> Vec<Request> {
    p.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path().contains(pat))
        .collect()
}

fn hits(p: &net::Proxy) -> usize {
    p.hits.load(std::sync::atomic::Ordering::SeqCst)
}

/// `b` pulled busybox whole: the fixture's manifest and config, every blob
/// in the store verified.
fn assert_busybox_intact(b: &Berth, r: &str, digest: &str) {
    let (manifest, config) = fixture_digests("busybox.oci");
    assert_eq!(digest, manifest);
    assert_eq!(b.inspect(r)["Id"], json!(config));
    assert_eq!(b.ok(&["system", "check"]).trim(), "no problems found");
}

#[test]
fn server_errors_on_a_blob_are_retried() {
    let Faulty {
        _reg,
        proxy,
        layer,
        r,
    } = busybox_behind(Fault::Status(503, 2));
    let b = Berth::new();
    let d = b.pull(&r);
    assert_busybox_intact(&b, &r, &d);
    assert_eq!(hits(&proxy), 2, "two 503 answers");
    let gets = seen(&proxy, "GET", &format!("/blobs/{layer}"));
    assert_eq!(gets.len(), 3, "two refused GETs, then the blob: {gets:#?}");
}

#[test]
fn server_error_on_the_manifest_is_retried() {
    let reg = registry_with_busybox();
    let proxy = net::proxy_matching(reg.addr, "/manifests/", Fault::Status(503, 1));
    let b = Berth::new();
    let r = format!("{}/busybox:latest", proxy.host());
    let d = b.pull(&r);
    assert_busybox_intact(&b, &r, &d);
    assert_eq!(hits(&proxy), 1);
    let gets = seen(&proxy, "GET", "/manifests/latest");
    assert_eq!(gets.len(), 2, "one 503, then the manifest: {gets:#?}");
}

#[test]
fn registry_that_always_fails_gives_up_naming_the_blob() {
    let Faulty {
        _reg,
        proxy,
        layer,
        r,
    } = busybox_behind(Fault::Status(500, usize::MAX));
    let b = Berth::new();
    let hex = &layer["sha256:".len()..];
    b.fails_storing_nothing(&["pull", &r], &[&proxy.host(), &hex[..12], "500"], &[]);
    let gets = seen(&proxy, "GET", &format!("/blobs/{layer}")).len();
    assert!(
        (2..=6).contains(&gets),
        "berth should retry a few times, then stop: {gets} GETs"
    );
}

/// Pulls busybox through a proxy that cuts the first GET of its layer halfway (with
/// `fault`), checks the pulled image is intact, and returns the two layer GETs seen.
fn pull_with_a_dropped_layer(fault: Fault) -> Vec<Request> {
    let Faulty {
        _reg,
        proxy,
        layer,
        r,
    } = busybox_behind(fault);
    let b = Berth::new();
    let d = b.pull(&r);
    assert_busybox_intact(&b, &r, &d);
    assert_eq!(hits(&proxy), 1);
    let gets = seen(&proxy, "GET", &format!("/blobs/{layer}"));
    assert_eq!(gets.len(), 2, "{gets:#?}");
    gets
}

#[test]
fn dropped_download_resumes_with_a_range_request() {
    let gets = pull_with_a_dropped_layer(Fault::DropOnce);
    assert_eq!(gets[0].header("range"), None);
    let range = gets[1].header("range").expect("the second GET has a Range");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Range should be bytes=N-: {range}"));
    assert!(from > 0, "{range}");
}

#[test]
fn resumption_copes_with_a_server_that_ignores_range() {
    let gets = pull_with_a_dropped_layer(Fault::DropOnceIgnoreRange);
    assert!(gets[1].header("range").is_some());
}

/// The `key` query parameter of `r`.
fn query(r: &Request, key: &str) -> Option<String> {
    r.query()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `skopeo inspect` of `r` (plain HTTP) accepts it and reports `digest`.
fn skopeo_accepts(r: &str, digest: &str) {
    let info: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{r}"),
    ]))
    .unwrap();
    assert_eq!(info["Digest"], digest, "{info}");
}

#[test]
fn push_uploads_monolithically_then_skips_existing_and_mounts() {
    let reg = Registry::plain();
    let proxy = net::proxy_matching(reg.addr, "", Fault::None);
    let b = Berth::new();
    let a = format!("{}/push/a:1", proxy.host());
    b.load_busybox_as(&a);
    let (_, layer) = busybox_digests();

    // First push: one POST and one PUT ?digest= with the body per blob.
    let (pushed, _) = b.push_env(&a, &[]);
    let puts = seen(&proxy, "PUT", "/v2/push/a/blobs/uploads/");
    assert_eq!(puts.len(), 2, "layer and config: {puts:#?}");
    for p in &puts {
        let d = query(p, "digest").expect("PUT ?digest=");
        assert!(!p.body.is_empty(), "monolithic PUT without a body");
        assert_eq!(Digest::of(&p.body).to_string(), d);
    }
    assert!(
        puts.iter()
            .any(|p| query(p, "digest").as_deref() == Some(&layer))
    );
    assert!(seen(&proxy, "PATCH", "/blobs/uploads/").is_empty());

    // Again: every blob is there (HEAD), nothing is uploaded.
    let before = proxy.requests().len();
    let (again, out) = b.push_env(&a, &[]);
    assert_eq!(again, pushed);
    assert!(out.contains("Layer already exists"), "{out}");
    let new = &proxy.requests()[before..];
    assert!(
        new.iter()
            .any(|r| r.method == "HEAD" && r.path().ends_with(&format!("/blobs/{layer}"))),
        "{new:#?}"
    );
    assert!(
        !new.iter().any(|r| r.path().contains("/blobs/uploads/")),
        "an upload for blobs that exist: {new:#?}"
    );

    // Another repository of the same registry: mounted from the first.
    let other = format!("{}/push/b:1", proxy.host());
    b.ok(&["tag", &a, &other]);
    let before = proxy.requests().len();
    let (mounted, out) = b.push_env(&other, &[]);
    assert_eq!(mounted, pushed);
    assert!(out.contains("Mounted from push/a"), "{out}");
    let new = &proxy.requests()[before..];
    let mount = new
        .iter()
        .find(|r| r.method == "POST" && query(r, "mount").as_deref() == Some(&layer))
        .unwrap_or_else(|| panic!("no POST ?mount={layer}: {new:#?}"));
    assert_eq!(mount.path(), "/v2/push/b/blobs/uploads/");
    assert_eq!(query(mount, "from").as_deref(), Some("push/a"));
    assert!(
        !new.iter()
            .any(|r| matches!(r.method.as_str(), "PUT" | "PATCH")
                && r.path().contains("/blobs/uploads/")),
        "a mounted blob was uploaded: {new:#?}"
    );

    // Both pull back as pushed, and skopeo accepts them.
    for repo in ["push/a:1", "push/b:1"] {
        let r = format!("{}/{repo}", reg.host());
        assert_eq!(Berth::new().pull(&r), pushed);
        skopeo_accepts(&r, &pushed);
    }
}

#[test]
fn push_uploads_in_chunks_when_told_to() {
    let reg = Registry::plain();
    let proxy = net::proxy_matching(reg.addr, "", Fault::None);
    let b = Berth::new();
    let r = format!("{}/chunked/busybox:1", proxy.host());
    b.load_busybox_as(&r);
    let (_, layer) = busybox_digests();
    const CHUNK: usize = 256 << 10;
    let (pushed, _) = b.push_env(&r, &[("BERTH_REGISTRY_CHUNK_SIZE", &CHUNK.to_string())]);

    // The layer (over 1 MiB) went up in PATCHes of CHUNK bytes with
    // contiguous Content-Ranges, then a PUT ?digest= without a body.
    let patches = seen(&proxy, "PATCH", "/v2/chunked/busybox/blobs/uploads/");
    assert!(patches.len() >= 2, "{} PATCHes", patches.len());
    let mut next = 0usize;
    let mut blob = Vec::new();
    for p in &patches {
        let cr = p.header("content-range").expect("PATCH with Content-Range");
        let (a, z) = cr.split_once('-').expect("Content-Range start-end");
        let (a, z): (usize, usize) = (a.parse().unwrap(), z.parse().unwrap());
        assert_eq!(a, next, "ranges must be contiguous: {cr}");
        assert_eq!(z + 1 - a, p.body.len(), "{cr}");
        assert!(p.body.len() <= CHUNK);
        next = z + 1;
        blob.extend_from_slice(&p.body);
    }
    assert_eq!(Digest::of(&blob).to_string(), layer);
    let close = seen(&proxy, "PUT", "/v2/chunked/busybox/blobs/uploads/")
        .into_iter()
        .find(|p| query(p, "digest").as_deref() == Some(&layer))
        .expect("a closing PUT ?digest= for the layer");
    assert!(close.body.is_empty());

    let direct = format!("{}/chunked/busybox:1", reg.host());
    assert_eq!(Berth::new().pull(&direct), pushed);
    skopeo_accepts(&direct, &pushed);
}

/// Busybox plus `n` tiny layers, tagged `tag` in `oci`.
fn busybox_with_layers(oci: &OciDir, tag: &str, n: usize) {
    let (_, manifest, mut config) = oci.base();
    let mut layers = Vec::new();
    for i in 0..n {
        let name = format!("extra-{i}");
        let text = format!("layer {i}\n");
        let tar = common::layer(&[common::Entry::File(&name, text.as_bytes())]);
        layers.push(oci.put(OCI_LAYER_GZIP, &common::gzip(&tar)));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(Digest::of(&tar).to_string()));
        config["history"]
            .as_array_mut()
            .unwrap()
            .push(json!({"created_by": format!("berth registry test: /{name}")}));
    }
    let desc = oci.manifest_with(&manifest, &config, &layers);
    oci.tag(tag, &desc);
}

#[test]
fn concurrent_downloads_respect_the_configured_limit() {
    let reg = Registry::plain();
    let oci = OciDir::busybox();
    busybox_with_layers(&oci, "three", 2);
    oci.push("three", &format!("{}/layers/three:1", reg.host()), false);

    // Each blob answer is held back, so downloads that run together are
    // seen in flight together.
    let hold = Fault::Hold(Duration::from_millis(400));
    let one = net::proxy_matching(reg.addr, "/blobs/sha256:", hold);
    let b = Berth::new();
    b.configure("max-concurrent-downloads", json!(1));
    b.pull(&format!("{}/layers/three:1", one.host()));
    assert_eq!(
        seen(&one, "GET", "/blobs/sha256:").len(),
        4,
        "config and three layers"
    );
    assert_eq!(one.max_blob_gets_in_flight(), 1);

    // The default (3) fetches the layers together.
    let three = net::proxy_matching(reg.addr, "/blobs/sha256:", hold);
    let c = Berth::new();
    c.pull(&format!("{}/layers/three:1", three.host()));
    assert!(
        three.max_blob_gets_in_flight() > 1,
        "layers should download concurrently by default"
    );
}

#[test]
fn bearer_token_is_reused_for_every_request_of_a_pull() {
    let (reg, tokens) = token_registry();
    let oci = OciDir::busybox();
    busybox_with_layers(&oci, "three", 2);
    skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("oci:{}:three", oci.path().display()),
        &format!("docker://{}/tok/layers:1", reg.host()),
    ]);
    let b = Berth::new();
    b.ok(&["login", "-u", USER, "-p", PASSWORD, &reg.host()]);
    let before = tokens.scopes().len();
    b.pull(&format!("{}/tok/layers:1", reg.host()));
    let asked = tokens.scopes()[before..].to_vec();
    assert_eq!(
        asked,
        vec!["repository:tok/layers:pull".to_string()],
        "one token for the pull's one scope"
    );
    // …used for the manifest, the config and the three layers.
    let gets = reg
        .log()
        .lines()
        .filter(|l| l.contains("berth/") && l.contains("GET /v2/tok/layers/"))
        .count();
    assert!(gets >= 5, "{}", reg.log());
}
