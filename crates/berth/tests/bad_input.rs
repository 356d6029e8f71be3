//! Bad input: every case gets a clear error naming the culprit, a non-zero
//! exit, and a store exactly as it was before.

mod common;

use std::fs;
use std::path::Path;

use common::{Entry, Store, Synthetic, fixture, layer, layout, oci_archive};

/// A store that already holds busybox, so we also check nothing is lost.
fn store() -> Store {
    let s = Store::new();
    s.ok(&["load", "-i", &fixture("busybox.oci.tar")]);
    s
}

/// Loading `archive` fails with a message containing every `needles`, and
/// leaves the store unchanged.
fn load_fails(s: &Store, archive: &Path, needles: &[&str]) -> String {
    let before = s.state();
    let err = s.fails(&["load", "-i", archive.to_str().unwrap()]);
    for n in needles {
        assert!(err.contains(n), "error should name {n:?}:\n{err}");
    }
    assert_eq!(s.state(), before, "store changed by a failed load");
    // No temporary snapshot or ingest file may survive either.
    let junk: Vec<_> = common::walk(&s.root().join("image"))
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".tmp-") || n.starts_with("blob-") || n.starts_with(".trash-")
        })
        .collect();
    assert!(junk.is_empty(), "{junk:?}");
    assert_eq!(s.ok(&["system", "check"]).trim(), "no problems found");
    err
}

#[test]
fn truncated_archive() {
    let s = store();
    let dir = common::scratch();
    let data = fs::read(fixture("debian.oci.tar")).unwrap();
    let p = dir.path().join("half.tar");
    fs::write(&p, &data[..data.len() / 2]).unwrap();
    load_fails(&s, &p, &["half.tar", "truncated"]);
}

#[test]
fn corrupt_archive() {
    let s = store();
    let dir = common::scratch();
    let p = dir.path().join("garbage.tar");
    let junk: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(&p, junk).unwrap();
    load_fails(&s, &p, &["garbage.tar"]);
    let empty = dir.path().join("empty.tar");
    fs::write(&empty, b"").unwrap();
    load_fails(&s, &empty, &["empty.tar", "empty"]);
    // A valid tar that is no image archive.
    let other = dir.path().join("other.tar");
    fs::write(&other, layer(&[Entry::File("readme", b"x")])).unwrap();
    load_fails(&s, &other, &["other.tar", "neither a docker-archive"]);
}

#[test]
fn blob_not_matching_its_digest() {
    let s = store();
    let dir = common::scratch();
    let good = layer(&[Entry::File("a", b"aaaa"), Entry::File("b", b"bbbb")]);
    let mut l = layout(&[Synthetic::new("localhost/bad:1", vec![good])]);
    // Corrupt the layer blob (first blob) but keep its name.
    let (hex, data) = &mut l.blobs[0];
    let hex = hex.clone();
    let n = data.len();
    data[n - 12] ^= 0xff; // inside the gzip trailer/payload
    let p = dir.path().join("corrupt-blob.tar");
    l.write(&p);
    load_fails(&s, &p, &[&hex[..12]]);
    // A corrupt config (a small JSON blob) is named by its digest too.
    let mut l = layout(&[Synthetic::new(
        "localhost/bad:2",
        vec![layer(&[Entry::File("c", b"c")])],
    )]);
    let cfg = l.configs[0].hex().to_string();
    let entry = l.blobs.iter_mut().find(|(h, _)| *h == cfg).unwrap();
    entry.1[2] ^= 1;
    let p = dir.path().join("corrupt-config.tar");
    l.write(&p);
    load_fails(&s, &p, &[&cfg, "does not match"]);
}

#[test]
fn layer_whose_content_is_not_its_diff_id() {
    let s = store();
    let dir = common::scratch();
    let mut img = Synthetic::new("localhost/diff:1", vec![layer(&[Entry::File("a", b"a")])]);
    img.diff_ids = Some(vec![
        berth_engine::image::Digest::of(b"something else").to_string(),
    ]);
    let (p, _) = oci_archive(dir.path(), "diffid.tar", &[img]);
    load_fails(&s, &p, &["expects"]);
}

#[test]
fn manifest_referencing_a_missing_blob() {
    let s = store();
    let dir = common::scratch();
    let mut l = layout(&[Synthetic::new(
        "localhost/missing:1",
        vec![layer(&[Entry::File("a", b"a")])],
    )]);
    let (hex, _) = l.blobs.remove(0);
    let p = dir.path().join("missing.tar");
    l.write(&p);
    load_fails(&s, &p, &[&hex, "not in archive"]);
}

#[test]
fn unknown_media_type() {
    let s = store();
    let dir = common::scratch();
    let mut img = Synthetic::new("localhost/mt:1", vec![layer(&[Entry::File("a", b"a")])]);
    img.layer_media_type = "application/vnd.example.mystery".into();
    let (p, _) = oci_archive(dir.path(), "mt.tar", &[img]);
    load_fails(
        &s,
        &p,
        &["unsupported media type", "application/vnd.example.mystery"],
    );
}

#[test]
fn malformed_manifest_json() {
    let s = store();
    let dir = common::scratch();
    let mut l = layout(&[Synthetic::new(
        "localhost/json:1",
        vec![layer(&[Entry::File("a", b"a")])],
    )]);
    let bad = b"{ not json".to_vec();
    let d = berth_engine::image::Digest::of(&bad);
    l.blobs.push((d.hex().to_string(), bad.clone()));
    l.index["manifests"][0]["digest"] = serde_json::json!(d.to_string());
    l.index["manifests"][0]["size"] = serde_json::json!(bad.len());
    let p = dir.path().join("json.tar");
    l.write(&p);
    load_fails(&s, &p, &[d.as_str(), "malformed JSON"]);
}

/// A layer that tries to escape is refused with the entry named, nothing is
/// written outside the snapshot, and nothing is stored.
fn escape(entries: &[Entry], culprit: &str, file: &str) {
    let s = store();
    let dir = common::scratch();
    let (p, _) = oci_archive(
        dir.path(),
        file,
        &[Synthetic::new("localhost/evil:1", vec![layer(entries)])],
    );
    load_fails(&s, &p, &[culprit]);
}

#[test]
fn layer_with_path_traversal() {
    escape(
        &[Entry::File(
            "../../../../../../var/tmp/berth-evil-dotdot",
            b"x",
        )],
        "berth-evil-dotdot",
        "dotdot.tar",
    );
    assert!(!Path::new("/var/tmp/berth-evil-dotdot").exists());
    escape(
        &[Entry::File("/var/tmp/berth-evil-abs", b"x")],
        "berth-evil-abs",
        "abs.tar",
    );
    assert!(!Path::new("/var/tmp/berth-evil-abs").exists());
}

#[test]
fn layer_with_symlink_escape() {
    let outside = common::scratch();
    let target = outside.path().display().to_string();
    escape(
        &[
            Entry::Symlink("link", &target),
            Entry::File("link/owned", b"x"),
        ],
        "link/owned",
        "symlink.tar",
    );
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "wrote through the symlink"
    );
}

#[test]
fn layer_with_hardlink_escape() {
    escape(
        &[Entry::Hardlink("passwd", "../../../../../../etc/passwd")],
        "passwd",
        "hardlink.tar",
    );
    escape(
        &[Entry::Hardlink("shadow", "/etc/shadow")],
        "shadow",
        "hardlink-abs.tar",
    );
    // A hard link to a name this layer does not contain.
    escape(
        &[Entry::Hardlink("ghost", "not-here")],
        "ghost",
        "hardlink-missing.tar",
    );
}

#[test]
fn second_image_failing_undoes_the_first() {
    let s = store();
    let dir = common::scratch();
    let ok = Synthetic::new(
        "localhost/ok:1",
        vec![layer(&[Entry::File("fine", b"fine")])],
    );
    let mut bad = Synthetic::new("localhost/bad:1", vec![layer(&[Entry::File("x", b"x")])]);
    bad.layer_media_type = "application/vnd.example.mystery".into();
    let (p, _) = oci_archive(dir.path(), "mixed.tar", &[ok, bad]);
    load_fails(&s, &p, &["application/vnd.example.mystery"]);
    let mut bad = Synthetic::new("localhost/bad:2", vec![layer(&[Entry::File("../x", b"x")])]);
    bad.layer_media_type = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    let ok = Synthetic::new(
        "localhost/ok:2",
        vec![layer(&[Entry::File("fine2", b"fine")])],
    );
    let (p, _) = oci_archive(dir.path(), "mixed2.tar", &[ok, bad]);
    load_fails(&s, &p, &["../x"]);
}
