//! Shared helpers for berth's end-to-end tests: a private store per test, the
//! real `berth` binary, the fixture images, and synthetic image archives.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use berth_engine::image::Digest;
use serde_json::{Value, json};

/// Scratch space for tests. Not /tmp: on the CI machine file creation there is
/// an order of magnitude slower than elsewhere on the same disk.
pub fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("BERTH_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir_in(base)
        .expect("scratch dir")
}

/// A private berth store for one test.
pub struct Store {
    pub dir: tempfile::TempDir,
}

/// What a command did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// What a test store leaves on the host outside its directory goes with it:
/// its containers (processes, cgroups; CNI DEL: veths, leases, iptables
/// rules), the bridges of its
/// networks (`run` joins the default `bridge` network, as Docker's does) and
/// namespace pins. Runs even when the test failed.
impl Drop for Store {
    fn drop(&mut self) {
        let root = self.root();
        let any = |d: &str| std::fs::read_dir(root.join(d)).is_ok_and(|mut e| e.next().is_some());
        if !any("containers") && !any("networks") && !any("netns") {
            return;
        }
        let ids = self.run(&["ps", "-aq", "--no-trunc"]).stdout;
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.run(&["rm", "-f", id]);
        }
        for e in std::fs::read_dir(root.join("networks"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let bridge = std::fs::read(e.path().join("network.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|n| n["bridge"].as_str().map(str::to_string));
            if let Some(b) = bridge {
                let _ = Command::new("ip").args(["link", "del", &b]).output();
            }
        }
        for p in std::fs::read_dir(root.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = rustix::mount::unmount(p.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

impl Store {
    pub fn new() -> Store {
        Store { dir: scratch() }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--root").arg(self.root()).args(args);
        c.stdin(Stdio::null());
        // Tests only talk to 127.0.0.0/8: a pull a test did not mean to make (an image
        // name that is not in its store) goes to a closed local port, never to
        // docker.io, and fails.
        c.env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.0/8,localhost");
        c
    }

    /// Runs berth; returns whatever happened.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("spawn berth"))
    }

    /// Runs berth with bytes on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn berth");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("wait berth"))
    }

    /// Runs berth and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "berth {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs berth and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_ne!(
            r.code, 0,
            "berth {args:?} should fail\nstdout:\n{}",
            r.stdout
        );
        assert!(!r.stderr.is_empty(), "berth {args:?} failed silently");
        r.stderr
    }

    /// `images --format json` parsed.
    pub fn images(&self) -> Vec<Value> {
        self.ok(&["images", "--format", "json", "--no-trunc"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// Everything observable about the store: image list plus every file under
    /// the image directory (names, sizes), excluding the lock file.
    pub fn state(&self) -> (Vec<Value>, BTreeSet<String>) {
        let mut files = BTreeSet::new();
        let base = self.root().join("image");
        for e in walk(&base) {
            let rel = e.strip_prefix(&base).unwrap().display().to_string();
            if rel == "meta.lock" || rel == "meta.redb" {
                continue;
            }
            let m = std::fs::symlink_metadata(&e).unwrap();
            files.insert(format!("{rel} {}", if m.is_file() { m.len() } else { 0 }));
        }
        (self.images(), files)
    }
}

/// All paths below `dir` (not following symlinks).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&p));
        }
    }
    out
}

/// The fixture images directory (built and cached by scripts/fixtures.sh).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("BERTH_FIXTURES") {
            return PathBuf::from(d);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fixtures.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/fixtures.sh");
        assert!(out.status.success(), "scripts/fixtures.sh failed");
        let s = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(s.lines().last().expect("fixtures dir").trim())
    })
}

/// A fixture file, e.g. `busybox.oci.tar`.
pub fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// (manifest, config) digests recorded by the fixture script for `busybox.oci` etc.
pub fn fixture_digests(name: &str) -> (String, String) {
    let txt = std::fs::read_to_string(fixtures().join("digests.txt")).unwrap();
    for l in txt.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() == Some(&name) {
            return (f[2].to_string(), f[4].to_string());
        }
    }
    panic!("{name} not in digests.txt");
}

/// One tar entry for a synthetic layer.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// Builds an uncompressed layer tar. Names are written raw into the header, so
/// malicious paths (`../x`, `/abs`) can be produced.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, data): (&str, &[u8]) = match e {
            Entry::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, d)
            }
            Entry::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, &[])
            }
            Entry::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(t).unwrap();
                (n, &[])
            }
            Entry::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                raw_name(&mut h.as_old_mut().linkname, t);
                (n, &[])
            }
        };
        raw_name(&mut h.as_old_mut().name, name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn raw_name(field: &mut [u8; 100], name: &str) {
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

/// gzip-compresses bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An image to put in a synthetic OCI archive.
pub struct Synthetic {
    /// Full name for the index annotation.
    pub name: String,
    /// Layer blobs as stored (maybe compressed) with their uncompressed tar.
    pub layers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Media type for every layer.
    pub layer_media_type: String,
    /// Overrides the config's diff_ids.
    pub diff_ids: Option<Vec<String>>,
}

impl Synthetic {
    pub fn new(name: &str, tars: Vec<Vec<u8>>) -> Synthetic {
        Synthetic {
            name: name.into(),
            layers: tars.into_iter().map(|t| (gzip(&t), t)).collect(),
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_ids: None,
        }
    }
}

/// Blobs and index of a synthetic OCI layout, before it becomes a tar; tests
/// may tamper with `blobs` before calling [`Layout::write`].
pub struct Layout {
    pub blobs: Vec<(String, Vec<u8>)>,
    pub index: Value,
    pub manifests: Vec<Digest>,
    pub configs: Vec<Digest>,
}

pub fn layout(images: &[Synthetic]) -> Layout {
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    let mut manifests = Vec::new();
    let mut configs = Vec::new();
    for img in images {
        let diff_ids: Vec<String> = img.diff_ids.clone().unwrap_or_else(|| {
            img.layers
                .iter()
                .map(|(_, t)| Digest::of(t).to_string())
                .collect()
        });
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": { "Cmd": ["sh"], "Env": ["PATH=/bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let cd = Digest::of(&config);
        let mut ldescs = Vec::new();
        for (blob, _) in &img.layers {
            let d = Digest::of(blob);
            ldescs
                .push(json!({"mediaType": img.layer_media_type, "digest": d, "size": blob.len()}));
            blobs.push((d.hex().to_string(), blob.clone()));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": ldescs,
        }))
        .unwrap();
        let md = Digest::of(&manifest);
        blobs.push((cd.hex().to_string(), config));
        blobs.push((md.hex().to_string(), manifest.clone()));
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "annotations": {"io.containerd.image.name": img.name},
        }));
        manifests.push(md);
        configs.push(cd);
    }
    Layout {
        blobs,
        index: json!({"schemaVersion": 2, "manifests": descs}),
        manifests,
        configs,
    }
}

impl Layout {
    /// Writes the layout as an oci-archive tar at `path`.
    pub fn write(&self, path: &Path) {
        let f = std::fs::File::create(path).unwrap();
        let mut b = tar::Builder::new(f);
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &serde_json::to_vec(&self.index).unwrap());
        let mut seen = BTreeSet::new();
        for (hex, data) in &self.blobs {
            if seen.insert(hex.clone()) {
                add(&format!("blobs/sha256/{hex}"), data);
            }
        }
        b.finish().unwrap();
    }
}

/// Writes a synthetic OCI archive and returns its path inside `dir`.
pub fn oci_archive(dir: &Path, file: &str, images: &[Synthetic]) -> (PathBuf, Layout) {
    let l = layout(images);
    let p = dir.join(file);
    l.write(&p);
    (p, l)
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Undoes the octal escapes (`\040` for a space …) of /proc/self/mountinfo.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or below `dir`, deepest first (lazily as a last
/// resort), so a test's scratch directory can always be removed.
pub fn unmount_all_under(dir: &Path) {
    let mut left = mounts_under(dir);
    left.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in left {
        let _ = Command::new("umount")
            .arg("-R")
            .arg(&m)
            .stderr(Stdio::null())
            .status();
    }
    for m in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

/// `podman` with all of its state under `dir` (root, runroot, tmpdir; staging files
/// in `tmp`, the TMPDIR the caller names) and no systemd, events or cgroup manager,
/// so tests never touch the host's podman or each other's.
pub fn podman_in(dir: &Path, tmp: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("TMPDIR", tmp)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--tmpdir")
        .arg(dir.join("libpod"))
        .args([
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
    c
}

/// A tmux server of the test's own (`-L`), running `cmd` in a `cols`x`rows`
/// window: a real terminal for the `-t` tests. Killed on drop.
pub struct Tmux {
    sock: String,
}

impl Tmux {
    pub fn start(cmd: &str, cols: u16, rows: u16) -> Tmux {
        let t = Tmux {
            sock: format!("berth-test-{}", std::process::id()),
        };
        let (x, y) = (cols.to_string(), rows.to_string());
        assert!(
            t.run(&["new-session", "-d", "-x", &x, "-y", &y, cmd]),
            "tmux"
        );
        t
    }

    /// A tmux command on this server; whether it succeeded.
    pub fn run(&self, args: &[&str]) -> bool {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.sock)
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
