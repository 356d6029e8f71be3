use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use tar::{EntryType, Header};
use tempfile::TempDir;

use super::*;

/// A tar stream built by hand, header by header, so that names can be anything.
struct Tar(tar::Builder<Vec<u8>>);

struct Opts {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

const DEFAULT: Opts = Opts {
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: 1_600_000_000,
};

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// Appends an entry whose name and link name bytes are written into the header as they
    /// are (no validation: `..` and absolute names included).
    fn raw(&mut self, kind: EntryType, name: &[u8], link: &[u8], data: &[u8], o: &Opts) {
        self.raw_dev(kind, name, link, data, o, (0, 0));
    }

    fn raw_dev(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        o: &Opts,
        (major, minor): (u32, u32),
    ) {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_mode(o.mode);
        h.set_uid(o.uid);
        h.set_gid(o.gid);
        h.set_mtime(o.mtime);
        h.set_size(data.len() as u64);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.raw(EntryType::Regular, name.as_bytes(), b"", data, &DEFAULT);
    }

    fn file_with(&mut self, name: &str, data: &[u8], o: &Opts) {
        self.raw(EntryType::Regular, name.as_bytes(), b"", data, o);
    }

    fn dir(&mut self, name: &str, o: &Opts) {
        self.raw(EntryType::Directory, name.as_bytes(), b"", b"", o);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        let o = Opts {
            mode: 0o777,
            ..DEFAULT
        };
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            &o,
        );
    }

    fn hardlink(&mut self, name: &str, target: &str) {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            &DEFAULT,
        );
    }

    /// A PAX extended header applying to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (key, value) in records {
            let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut digits = 1;
            while (rest + digits).to_string().len() != digits {
                digits += 1;
            }
            data.extend_from_slice(format!("{} {key}=", rest + digits).as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw(EntryType::XHeader, b"PaxHeaders/x", b"", &data, &DEFAULT);
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A temp dir with an empty `snap` directory to apply into; siblings of `snap` are
/// "outside" the destination.
struct Dest {
    tmp: TempDir,
}

impl Dest {
    fn new() -> Dest {
        let tmp = TempDir::new().unwrap();
        fs::create_dir(tmp.path().join("snap")).unwrap();
        Dest { tmp }
    }

    fn snap(&self) -> PathBuf {
        self.tmp.path().join("snap")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.snap().join(rel)
    }

    fn apply(&self, layer: &[u8]) -> Result<Applied, LayerError> {
        apply_layer(layer, &self.snap())
    }

    /// Everything under the temp dir except `snap` itself and what is inside it.
    fn outside(&self) -> Vec<String> {
        fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "snap")
            .collect()
    }
}

fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("lgetxattr {} {name}: {e}", p.display()),
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// Deterministic incompressible-ish bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn expect_refused(layer: &[u8], entry: &str) -> (Dest, LayerError) {
    let dest = Dest::new();
    let err = dest.apply(layer).expect_err("the layer must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(entry),
        "error `{msg}` should name the entry `{entry}`"
    );
    (dest, err)
}

#[test]
fn detect_compression_by_magic() {
    assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    assert_eq!(
        Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
        Compression::Zstd
    );
    assert_eq!(Compression::detect(b"etc/"), Compression::None);
    assert_eq!(Compression::detect(&[0x28, 0xb5]), Compression::None);
    assert_eq!(Compression::detect(&[]), Compression::None);
}

#[test]
fn decompress_copes_with_short_first_read() {
    let data = noise(10_000, 7);
    for (compressed, want) in [
        (gzip(&data), Compression::Gzip),
        (zstd(&data), Compression::Zstd),
        (data.clone(), Compression::None),
    ] {
        // A 1-byte buffer: fill_buf never shows the whole magic.
        let (got, mut r) = decompress(BufReader::with_capacity(1, &compressed[..])).unwrap();
        assert_eq!(got, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}

#[test]
fn regular_files_keep_modes_owners_and_mtimes() {
    let mut t = Tar::new();
    t.file_with(
        "./etc/motd",
        b"hello\n",
        &Opts {
            mode: 0o640,
            uid: 1000,
            gid: 1001,
            mtime: 1_234_567_890,
        },
    );
    t.file_with(
        "bin/tool",
        &noise(300_000, 1),
        &Opts {
            mode: 0o755,
            uid: 0,
            gid: 50,
            mtime: 42,
        },
    );
    t.file("empty", b"");
    let dest = Dest::new();
    let applied = dest.apply(&t.finish()).unwrap();
    assert_eq!(applied.entries, 3);
    assert_eq!(applied.unpacked_size, 6 + 300_000);

    let m = lmeta(&dest.path("etc/motd"));
    assert!(m.file_type().is_file());
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    assert_eq!(m.mtime(), 1_234_567_890);
    assert_eq!(fs::read(dest.path("etc/motd")).unwrap(), b"hello\n");

    let m = lmeta(&dest.path("bin/tool"));
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!((m.uid(), m.gid()), (0, 50));
    assert_eq!(m.mtime(), 42);
    assert_eq!(fs::read(dest.path("bin/tool")).unwrap(), noise(300_000, 1));
    assert_eq!(fs::read(dest.path("empty")).unwrap(), b"");

    // A parent that has no entry of its own is created 0755 root:root.
    let m = lmeta(&dest.path("etc"));
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
fn directories_keep_metadata_and_mtime_after_children() {
    let mut t = Tar::new();
    t.dir(
        "./",
        &Opts {
            mode: 0o755,
            mtime: 7,
            ..DEFAULT
        },
    );
    t.dir(
        "usr/",
        &Opts {
            mode: 0o750,
            uid: 12,
            gid: 34,
            mtime: 1000,
        },
    );
    t.dir(
        "usr/share/",
        &Opts {
            mode: 0o2775,
            mtime: 2000,
            ..DEFAULT
        },
    );
    t.file("usr/share/a", b"a");
    t.file("usr/b", b"b");
    t.dir(
        "tmp",
        &Opts {
            mode: 0o1777,
            mtime: 3000,
            ..DEFAULT
        },
    );
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();

    let m = lmeta(&dest.path("usr"));
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!((m.uid(), m.gid()), (12, 34));
    assert_eq!(m.mtime(), 1000, "set after its children were written");
    let m = lmeta(&dest.path("usr/share"));
    assert_eq!(m.mode() & 0o7777, 0o2775);
    assert_eq!(m.mtime(), 2000);
    let m = lmeta(&dest.path("tmp"));
    assert_eq!(m.mode() & 0o7777, 0o1777);
    // The root entry's metadata goes onto the destination itself.
    let m = lmeta(&dest.snap());
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(m.mtime(), 7);
}

#[test]
fn symlinks_are_created_not_followed() {
    let mut t = Tar::new();
    t.symlink("abs", "/etc/passwd");
    t.symlink("rel", "../../../outside");
    t.raw(
        EntryType::Symlink,
        b"owned",
        b"abs",
        b"",
        &Opts {
            mode: 0o777,
            uid: 5,
            gid: 6,
            mtime: 99,
        },
    );
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(
        fs::read_link(dest.path("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(dest.path("rel")).unwrap(),
        Path::new("../../../outside")
    );
    let m = lmeta(&dest.path("owned"));
    assert!(m.file_type().is_symlink());
    assert_eq!((m.uid(), m.gid()), (5, 6));
    assert_eq!(m.mtime(), 99);
    assert!(dest.outside().is_empty());
}

#[test]
fn hard_links_share_the_inode() {
    let mut t = Tar::new();
    t.file("./bin/original", b"contents");
    t.hardlink("./usr/bin/linked", "./bin/original");
    t.hardlink("bin/again", "bin/original");
    let dest = Dest::new();
    let applied = dest.apply(&t.finish()).unwrap();
    let a = lmeta(&dest.path("bin/original"));
    let b = lmeta(&dest.path("usr/bin/linked"));
    let c = lmeta(&dest.path("bin/again"));
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
    assert_eq!(applied.unpacked_size, 8);
}

#[test]
fn devices_and_fifos() {
    let mut t = Tar::new();
    let o = Opts {
        mode: 0o620,
        uid: 0,
        gid: 5,
        mtime: 77,
    };
    t.raw_dev(EntryType::Char, b"dev/tty9", b"", b"", &o, (4, 9));
    t.raw_dev(EntryType::Block, b"dev/loop9", b"", b"", &o, (7, 9));
    t.raw(
        EntryType::Fifo,
        b"run/fifo",
        b"",
        b"",
        &Opts { mode: 0o4610, ..o },
    );
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();

    let m = lmeta(&dest.path("dev/tty9"));
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())),
        (4, 9)
    );
    assert_eq!(m.mode() & 0o7777, 0o620);
    assert_eq!(m.gid(), 5);
    assert_eq!(m.mtime(), 77);
    let m = lmeta(&dest.path("dev/loop9"));
    assert!(m.file_type().is_block_device());
    assert_eq!(
        (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())),
        (7, 9)
    );
    let m = lmeta(&dest.path("run/fifo"));
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o4610);
}

#[test]
fn xattrs_from_pax_records() {
    let mut t = Tar::new();
    t.pax(&[
        ("SCHILY.xattr.user.foo", b"bar"),
        ("SCHILY.xattr.trusted.berth", b"\x00binary\xff"),
    ]);
    t.file("file", b"x");
    t.pax(&[("SCHILY.xattr.trusted.dir", b"d")]);
    t.dir("dir/", &DEFAULT);
    t.pax(&[
        ("SCHILY.xattr.trusted.link", b"l"),
        // Refused by the kernel on symlinks: skipped, not an error.
        ("SCHILY.xattr.user.link", b"l"),
    ]);
    t.symlink("link", "/nowhere");
    // Overlayfs metadata never comes from the tar.
    t.pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")]);
    t.dir("sneaky/", &DEFAULT);
    let dest = Dest::new();
    let applied = dest.apply(&t.finish()).unwrap();
    assert_eq!(applied.entries, 4, "PAX headers are not entries");

    assert_eq!(xattr(&dest.path("file"), "user.foo").unwrap(), b"bar");
    assert_eq!(
        xattr(&dest.path("file"), "trusted.berth").unwrap(),
        b"\x00binary\xff"
    );
    assert_eq!(xattr(&dest.path("dir"), "trusted.dir").unwrap(), b"d");
    assert_eq!(xattr(&dest.path("link"), "trusted.link").unwrap(), b"l");
    assert_eq!(xattr(&dest.path("sneaky"), "trusted.overlay.opaque"), None);
}

#[test]
fn security_capability_survives_chown() {
    // VFS v2 capability: cap_net_raw permitted + effective.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let mut t = Tar::new();
    t.pax(&[("SCHILY.xattr.security.capability", &cap)]);
    t.file_with(
        "ping",
        b"elf",
        &Opts {
            mode: 0o755,
            uid: 0,
            gid: 1,
            mtime: 1,
        },
    );
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(
        xattr(&dest.path("ping"), "security.capability").unwrap(),
        cap
    );
}

#[test]
fn setuid_and_setgid_survive_chown() {
    let mut t = Tar::new();
    t.file_with(
        "usr/bin/su",
        b"elf",
        &Opts {
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            mtime: 1,
        },
    );
    t.file_with(
        "usr/bin/wall",
        b"elf",
        &Opts {
            mode: 0o2755,
            uid: 0,
            gid: 5,
            mtime: 1,
        },
    );
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    let m = lmeta(&dest.path("usr/bin/su"));
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    let m = lmeta(&dest.path("usr/bin/wall"));
    assert_eq!(m.mode() & 0o7777, 0o2755);
}

#[test]
fn whiteout_becomes_a_0_0_char_device() {
    let mut t = Tar::new();
    t.file("etc/.wh.motd", b"");
    t.file(".wh.top", b"");
    t.file("a/.wh..wh.plnk", b"");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    for p in ["etc/motd", "top", "a/.wh.plnk"] {
        let m = lmeta(&dest.path(p));
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert!(fs::symlink_metadata(dest.path("etc/.wh.motd")).is_err());
}

#[test]
fn opaque_marker_becomes_xattr() {
    let mut t = Tar::new();
    t.dir("etc/", &DEFAULT);
    t.file("etc/.wh..wh..opq", b"");
    t.file("etc/new", b"new");
    // The directory does not exist yet: it is created.
    t.file("var/lib/.wh..wh..opq", b"");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(
        xattr(&dest.path("etc"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(
        xattr(&dest.path("var/lib"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(fs::symlink_metadata(dest.path("etc/.wh..wh..opq")).is_err());
    assert_eq!(fs::read(dest.path("etc/new")).unwrap(), b"new");
}

#[test]
fn whiteout_and_directory_of_the_same_name_make_it_opaque() {
    let mut t = Tar::new();
    // Whiteout first, then this layer's own directory.
    t.file(".wh.a", b"");
    t.dir("a/", &DEFAULT);
    t.file("a/f", b"f");
    // Directory first, then the whiteout.
    t.dir("b/", &DEFAULT);
    t.file(".wh.b", b"");
    // A file of this layer stays a file.
    t.file("c", b"c");
    t.file(".wh.c", b"");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(
        xattr(&dest.path("a"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(fs::read(dest.path("a/f")).unwrap(), b"f");
    assert_eq!(
        xattr(&dest.path("b"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(fs::read(dest.path("c")).unwrap(), b"c");
}

#[test]
fn later_entries_win() {
    let mut t = Tar::new();
    t.file("f", b"one");
    t.file("f", b"two");
    t.file("shared", b"old");
    t.hardlink("keeper", "shared");
    t.file("shared", b"new"); // replaces, does not write through the hard link
    t.dir("d/", &DEFAULT);
    t.file("d/child", b"c");
    t.file("d", b"now a file");
    t.file("s", b"file");
    t.symlink("s", "/etc/shadow");
    t.symlink("x", "/etc/shadow");
    t.file("x", b"a file, not written through the symlink");
    t.dir(
        "keep/",
        &Opts {
            mode: 0o755,
            ..DEFAULT
        },
    );
    t.file("keep/child", b"kept");
    t.dir(
        "keep/",
        &Opts {
            mode: 0o700,
            uid: 3,
            ..DEFAULT
        },
    );
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(fs::read(dest.path("f")).unwrap(), b"two");
    assert_eq!(fs::read(dest.path("shared")).unwrap(), b"new");
    assert_eq!(fs::read(dest.path("keeper")).unwrap(), b"old");
    assert_eq!(fs::read(dest.path("d")).unwrap(), b"now a file");
    assert_eq!(
        fs::read_link(dest.path("s")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(lmeta(&dest.path("x")).is_file());
    let m = lmeta(&dest.path("keep"));
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 3));
    assert_eq!(fs::read(dest.path("keep/child")).unwrap(), b"kept");
}

#[test]
fn long_names_and_pax_times() {
    let long = format!("{}/file", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(4);
    h.set_mtime(5);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    let mut t = Tar(b);
    t.pax(&[("mtime", b"1234567890.5")]);
    t.file("fractional", b"");
    t.pax(&[("mtime", b"-1.25")]);
    t.file("negative", b"");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(fs::read(dest.path(&long)).unwrap(), b"long");
    let m = lmeta(&dest.path("fractional"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 500_000_000));
    let m = lmeta(&dest.path("negative"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (-2, 750_000_000));
}

fn sample_layer() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("./", &DEFAULT);
    t.dir("usr/", &DEFAULT);
    t.file("usr/big", &noise(1 << 20, 3));
    t.file("usr/small", b"small");
    t.symlink("usr/link", "big");
    t.file("etc/.wh.gone", b"");
    let mut tar = t.finish();
    // Real exporters pad to a 10 KiB record: the DiffID covers the padding too.
    tar.resize(tar.len().next_multiple_of(10240) + 10240, 0);
    tar
}

#[test]
fn diff_id_is_sha256_of_the_uncompressed_stream() {
    let tar = sample_layer();
    let dest = Dest::new();
    let applied = dest.apply(&tar).unwrap();
    assert_eq!(applied.diff_id.to_string(), sha256_digest(&tar));
    assert_eq!(applied.entries, 6);
    assert_eq!(applied.unpacked_size, (1 << 20) + 5);
}

#[test]
fn compressed_layers_give_the_same_diff_id() {
    let tar = sample_layer();
    let want = sha256_digest(&tar);
    for (what, layer) in [("gzip", gzip(&tar)), ("zstd", zstd(&tar))] {
        let dest = Dest::new();
        let applied = dest.apply(&layer).unwrap();
        assert_eq!(applied.diff_id.to_string(), want, "{what}");
        assert_eq!(
            fs::read(dest.path("usr/big")).unwrap(),
            noise(1 << 20, 3),
            "{what}"
        );
    }
}

#[test]
fn truncated_gzip_is_an_error() {
    let layer = gzip(&sample_layer());
    let dest = Dest::new();
    let err = dest.apply(&layer[..layer.len() / 2]).unwrap_err();
    assert!(
        matches!(err, LayerError::Stream { .. } | LayerError::Apply { .. }),
        "{err:?}"
    );
}

#[test]
fn truncated_tar_is_an_error() {
    let tar = sample_layer();
    let dest = Dest::new();
    // Cut inside usr/big's contents.
    let err = dest.apply(&tar[..600_000]).unwrap_err();
    assert!(err.to_string().contains("usr/big"), "{err}");
}

#[test]
fn refuses_dotdot() {
    let mut t = Tar::new();
    t.file("../evil", b"evil");
    let (dest, _) = expect_refused(&t.finish(), "../evil");
    assert!(dest.outside().is_empty());

    let mut t = Tar::new();
    t.file("a/../../evil", b"evil");
    let (dest, _) = expect_refused(&t.finish(), "a/../../evil");
    assert!(dest.outside().is_empty());
}

#[test]
fn refuses_absolute_paths() {
    let evil = Path::new("/etc/evil");
    assert!(!evil.exists());
    let mut t = Tar::new();
    t.file("/etc/evil", b"evil");
    let (dest, err) = expect_refused(&t.finish(), "/etc/evil");
    assert!(matches!(err, LayerError::UnsafePath { .. }), "{err:?}");
    assert!(!evil.exists());
    assert!(fs::read_dir(dest.snap()).unwrap().next().is_none());
}

#[test]
fn refuses_paths_through_symlinks() {
    let elsewhere = TempDir::new().unwrap();
    let mut t = Tar::new();
    t.symlink("link", elsewhere.path().to_str().unwrap());
    t.file("link/x", b"evil");
    let (dest, err) = expect_refused(&t.finish(), "link/x");
    assert!(matches!(err, LayerError::UnsafePath { .. }), "{err:?}");
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());
    assert!(dest.outside().is_empty());

    // Relative link to the parent, deeper entry, and a directory entry.
    let mut t = Tar::new();
    t.symlink("up", "..");
    t.dir("up/evil/", &DEFAULT);
    let (dest, _) = expect_refused(&t.finish(), "up/evil/");
    assert!(dest.outside().is_empty());

    // Through a symlink to a directory inside the layer is refused just the same.
    let mut t = Tar::new();
    t.dir("real/", &DEFAULT);
    t.symlink("alias", "real");
    t.file("alias/x", b"x");
    expect_refused(&t.finish(), "alias/x");

    // A directory already in use, replaced by a symlink: the cached descriptor of the old
    // directory must not be used, and the new path must be refused.
    let mut t = Tar::new();
    t.dir("a/", &DEFAULT);
    t.file("a/f", b"f");
    t.symlink("a", elsewhere.path().to_str().unwrap());
    t.file("a/x", b"evil");
    expect_refused(&t.finish(), "a/x");
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());

    // Whiteouts and opaque markers too.
    let mut t = Tar::new();
    t.symlink("link", elsewhere.path().to_str().unwrap());
    t.file("link/.wh.x", b"");
    expect_refused(&t.finish(), "link/.wh.x");
    let mut t = Tar::new();
    t.symlink("link", elsewhere.path().to_str().unwrap());
    t.file("link/.wh..wh..opq", b"");
    expect_refused(&t.finish(), "link/.wh..wh..opq");
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());
    assert_eq!(xattr(elsewhere.path(), "trusted.overlay.opaque"), None);
}

#[test]
fn refuses_hard_link_escape() {
    let mut t = Tar::new();
    t.hardlink("h", "../../etc/passwd");
    let (dest, err) = expect_refused(&t.finish(), "`h`");
    assert!(matches!(err, LayerError::HardLink { .. }), "{err:?}");
    assert!(fs::symlink_metadata(dest.path("h")).is_err());

    let mut t = Tar::new();
    t.hardlink("h", "/etc/passwd");
    expect_refused(&t.finish(), "`h`");

    // Through a symlink to a file outside.
    let mut t = Tar::new();
    t.symlink("etc", "/etc");
    t.hardlink("h", "etc/passwd");
    let (dest, _) = expect_refused(&t.finish(), "`h`");
    assert!(fs::symlink_metadata(dest.path("h")).is_err());
}

#[test]
fn refuses_hard_link_to_missing_target() {
    let mut t = Tar::new();
    t.hardlink("h", "not/there");
    let (_, err) = expect_refused(&t.finish(), "`h`");
    assert!(matches!(err, LayerError::HardLink { .. }), "{err:?}");

    let mut t = Tar::new();
    t.hardlink("h", "nothere");
    expect_refused(&t.finish(), "`h`");
}

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn overlay_mount_honours_whiteouts_and_opaque_dirs() {
    let tmp = TempDir::new().unwrap();
    let (snap1, snap2, merged) = (
        tmp.path().join("1"),
        tmp.path().join("2"),
        tmp.path().join("merged"),
    );
    for d in [&snap1, &snap2, &merged] {
        fs::create_dir(d).unwrap();
    }

    let mut t = Tar::new();
    t.file("a/keep", b"keep");
    t.file("a/gone", b"gone");
    t.file("b/old", b"old");
    t.file("b/sub/old", b"old");
    t.file("c/lower", b"lower");
    t.file("top", b"top");
    apply_layer(&t.finish()[..], &snap1).unwrap();

    let mut t = Tar::new();
    t.file("a/.wh.gone", b"");
    t.file(".wh.top", b"");
    t.dir("b/", &DEFAULT);
    t.file("b/.wh..wh..opq", b"");
    t.file("b/new", b"new");
    t.file(".wh.c", b"");
    t.dir("c/", &DEFAULT);
    t.file("c/upper", b"upper");
    apply_layer(&gzip(&t.finish())[..], &snap2).unwrap();

    let opts = format!("lowerdir={}:{}", snap2.display(), snap1.display());
    let opts = std::ffi::CString::new(opts).unwrap();
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        Some(opts.as_c_str()),
    )
    .expect("mount overlay");
    let _guard = Mounted(merged.clone());

    let names = |rel: &str| {
        let mut v: Vec<String> = fs::read_dir(merged.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(""), ["a", "b", "c"]);
    assert_eq!(names("a"), ["keep"]);
    assert_eq!(names("b"), ["new"]);
    assert_eq!(names("c"), ["upper"]);
    assert_eq!(fs::read(merged.join("a/keep")).unwrap(), b"keep");
    assert!(!merged.join("a/gone").exists());
    assert!(!merged.join("top").exists());
    assert!(!merged.join("b/old").exists());
}

#[test]
fn serial_fallback_matches_the_pipeline() {
    let tar = sample_layer();
    let layer = zstd(&tar);
    let piped = Dest::new();
    let want = piped.apply(&layer).unwrap();

    let serial = Dest::new();
    let root = rustix::fs::open(
        serial.snap(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let (compression, decoded) = decompress(&layer[..]).unwrap();
    assert_eq!(compression, Compression::Zstd);
    let (hash, (unpacked_size, entries)) = apply_serially(decoded, root, None).unwrap();
    assert_eq!(format!("sha256:{}", hex::encode(hash)), sha256_digest(&tar));
    assert_eq!((unpacked_size, entries), (want.unpacked_size, want.entries));
    assert_eq!(
        fs::read(serial.path("usr/big")).unwrap(),
        fs::read(piped.path("usr/big")).unwrap()
    );
    assert!(lmeta(&serial.path("etc/gone")).file_type().is_char_device());
}

#[test]
fn refusal_mid_stream_stops_without_hanging() {
    let mut t = Tar::new();
    t.file("ok", b"ok");
    t.file("../evil", b"evil");
    // Far more than the pipeline holds, so the reader must notice the writer gave up.
    t.file("big", &noise(16 << 20, 9));
    let (dest, _) = expect_refused(&gzip(&t.finish()), "../evil");
    assert!(dest.outside().is_empty());
    assert!(fs::symlink_metadata(dest.path("big")).is_err());
}

#[test]
fn root_owned_entries_in_setgid_directories_keep_their_group() {
    let mut t = Tar::new();
    t.dir(
        "shared/",
        &Opts {
            mode: 0o2775,
            uid: 0,
            gid: 100,
            mtime: 1,
        },
    );
    t.file("shared/root-file", b"x"); // 0:0 wanted, the kernel would give 0:100
    t.dir("shared/root-dir/", &DEFAULT);
    t.symlink("shared/root-link", "x");
    t.file_with(
        "shared/staff-file",
        b"x",
        &Opts {
            gid: 100,
            ..DEFAULT
        },
    );
    t.file("plain/root-file", b"x");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    for p in [
        "shared/root-file",
        "shared/root-dir",
        "shared/root-link",
        "plain/root-file",
    ] {
        let m = lmeta(&dest.path(p));
        assert_eq!((m.uid(), m.gid()), (0, 0), "{p}");
    }
    // A new directory in a setgid one inherits the bit unless the entry says otherwise.
    assert_eq!(lmeta(&dest.path("shared/root-dir")).mode() & 0o7777, 0o644);
    assert_eq!(lmeta(&dest.path("shared/staff-file")).gid(), 100);
}

#[test]
fn replaced_directory_is_not_written_into() {
    let mut t = Tar::new();
    t.dir("d/", &DEFAULT);
    t.file("d/old", b"old");
    t.file("d", b"file"); // removes d/ and its contents
    t.dir("d/", &DEFAULT); // and a directory again
    t.file("d/new", b"new");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    let mut names: Vec<_> = fs::read_dir(dest.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["new"]);

    // A file where a later entry wants a directory is an error, not a silent rewrite.
    let mut t = Tar::new();
    t.file("f", b"file");
    t.file("f/x", b"x");
    expect_refused(&t.finish(), "f/x");
}

#[test]
fn unknown_entry_types_are_refused() {
    let mut t = Tar::new();
    t.raw(EntryType::new(b'Z'), b"weird", b"", b"", &DEFAULT);
    let (_, err) = expect_refused(&t.finish(), "weird");
    assert!(
        matches!(err, LayerError::Unsupported { kind: 'Z', .. }),
        "{err:?}"
    );
}

// Parallel file creation: regular files up to `pool::MAX_JOB_FILE` and symlinks are
// created by worker threads while the entries after them are read. The tests below put a
// later entry right behind one a worker is likely still writing.

/// Contents big enough that a worker is likely still writing them when the next entries
/// are read, small enough to be handed to a worker.
fn job_sized(seed: u64) -> Vec<u8> {
    let data = noise(512 * 1024, seed);
    assert!(data.len() as u64 <= pool::MAX_JOB_FILE);
    data
}

#[test]
fn duplicate_of_a_file_a_worker_is_writing() {
    let mut t = Tar::new();
    t.file("f", &job_sized(1));
    t.file("f", b"second");
    t.file("g", &job_sized(2));
    t.dir("g/", &DEFAULT); // a directory replacing it
    t.file("g/child", b"c");
    t.file("h", &job_sized(3));
    t.symlink("h", "target"); // a symlink replacing it
    t.symlink("s", "first");
    t.file("s", &job_sized(4)); // a file replacing a symlink
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(fs::read(dest.path("f")).unwrap(), b"second");
    assert!(lmeta(&dest.path("g")).is_dir());
    assert_eq!(fs::read(dest.path("g/child")).unwrap(), b"c");
    assert_eq!(fs::read_link(dest.path("h")).unwrap(), Path::new("target"));
    assert!(lmeta(&dest.path("s")).is_file());
    assert_eq!(fs::read(dest.path("s")).unwrap(), job_sized(4));
}

#[test]
fn hard_link_to_a_file_a_worker_is_writing() {
    let mut t = Tar::new();
    t.file("bin/a", &job_sized(5));
    t.hardlink("bin/b", "bin/a");
    t.file("c", b"first");
    t.file("c", &job_sized(6)); // replaced, by a worker
    t.hardlink("d", "c");
    // A symlink (created by a worker) is linked itself.
    t.symlink("s", "nowhere");
    t.hardlink("s2", "s");
    let dest = Dest::new();
    let applied = dest.apply(&t.finish()).unwrap();
    let (a, b) = (lmeta(&dest.path("bin/a")), lmeta(&dest.path("bin/b")));
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(fs::read(dest.path("bin/b")).unwrap(), job_sized(5));
    let (c, d) = (lmeta(&dest.path("c")), lmeta(&dest.path("d")));
    assert_eq!((c.ino(), c.nlink()), (d.ino(), 2));
    assert_eq!(fs::read(dest.path("d")).unwrap(), job_sized(6));
    let (s, s2) = (lmeta(&dest.path("s")), lmeta(&dest.path("s2")));
    assert!(s2.file_type().is_symlink());
    assert_eq!(s.ino(), s2.ino());
    assert_eq!(applied.unpacked_size, 2 * 512 * 1024 + 5);
}

#[test]
fn whiteout_of_a_file_a_worker_wrote() {
    let mut t = Tar::new();
    t.file("etc/c", &job_sized(7));
    t.file("etc/.wh.c", b"");
    t.symlink("l", "x");
    t.file(".wh.l", b"");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    // This layer's own files stay; they already hide the lower layers' versions.
    assert!(lmeta(&dest.path("etc/c")).is_file());
    assert_eq!(fs::read(dest.path("etc/c")).unwrap(), job_sized(7));
    assert_eq!(fs::read_link(dest.path("l")).unwrap(), Path::new("x"));
}

#[test]
fn path_through_a_file_a_worker_is_writing_is_refused() {
    let mut t = Tar::new();
    t.file("f", &job_sized(8));
    t.file("f/x", b"x");
    let (dest, err) = expect_refused(&t.finish(), "f/x");
    assert!(matches!(err, LayerError::UnsafePath { .. }), "{err:?}");
    // No directory was made for f/x in place of the file.
    assert!(lmeta(&dest.path("f")).is_file());

    let mut t = Tar::new();
    t.file("f", &job_sized(9));
    t.hardlink("h", "f/x");
    let (_, err) = expect_refused(&t.finish(), "`h`");
    assert!(matches!(err, LayerError::HardLink { .. }), "{err:?}");

    let elsewhere = TempDir::new().unwrap();
    let mut t = Tar::new();
    t.symlink("l", elsewhere.path().to_str().unwrap());
    t.dir("l/d/", &DEFAULT);
    expect_refused(&t.finish(), "l/d/");
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());
}

#[test]
fn directory_replaced_while_workers_write_into_it() {
    let mut t = Tar::new();
    t.dir("d/", &DEFAULT);
    for i in 0..300 {
        t.file(&format!("d/f{i}"), &noise(2000, i));
    }
    t.file("d", b"now a file");
    t.file("e/big", &job_sized(10));
    t.file("e", b"replaces e/ and e/big");
    let dest = Dest::new();
    dest.apply(&t.finish()).unwrap();
    assert_eq!(fs::read(dest.path("d")).unwrap(), b"now a file");
    assert_eq!(fs::read(dest.path("e")).unwrap(), b"replaces e/ and e/big");
}

#[test]
fn the_earliest_failing_entry_is_reported() {
    let mut t = Tar::new();
    t.file("ok", b"ok");
    // The kernel knows no `bogus.` xattr namespace: creating this file fails (in a worker).
    t.pax(&[("SCHILY.xattr.bogus.name", b"v")]);
    t.file("bad", b"bad");
    for i in 0..100 {
        t.file(&format!("more/f{i}"), b"x");
    }
    t.file("../evil", b"evil");
    let layer = t.finish();
    let (_, err) = expect_refused(&layer, "`bad`");
    assert!(
        matches!(
            err,
            LayerError::Apply {
                op: "setting an extended attribute",
                ..
            }
        ),
        "{err:?}"
    );

    // The same as applying the entries in order.
    let serial = Dest::new();
    let root = open_dir(&serial.snap());
    let err = apply_serially(Box::new(&layer[..]), root, None).unwrap_err();
    assert!(err.to_string().contains("`bad`"), "{err}");
}

fn open_dir(p: &Path) -> std::os::fd::OwnedFd {
    rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap()
}

/// Everything about the tree under `root` that applying a layer decides, one line per path.
fn describe(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        let p = root.join(rel);
        let m = lmeta(&p);
        let ft = m.file_type();
        let what = if ft.is_dir() {
            format!("dir opaque={:?}", xattr(&p, "trusted.overlay.opaque"))
        } else if ft.is_symlink() {
            format!("symlink -> {}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            format!(
                "file {}",
                hex::encode(sha2::Sha256::digest(fs::read(&p).unwrap()))
            )
        } else {
            format!("other {:o} rdev={}", m.mode() & 0o170000, m.rdev())
        };
        // Whiteout devices get the time they were made.
        let mtime = if ft.is_char_device() { 0 } else { m.mtime() };
        out.push(format!(
            "{} {what} mode={:o} owner={}:{} mtime={mtime} nlink={}",
            rel.display(),
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            if ft.is_dir() { 0 } else { m.nlink() },
        ));
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for name in names {
                walk(root, &rel.join(name), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

#[test]
fn workers_give_the_same_tree_as_applying_in_order() {
    use std::collections::HashMap;
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        File,
        Symlink,
        Dir,
        Whiteout,
    }
    // Leaves drawn from a few names in a few fixed directories, so that entries keep
    // landing on paths an earlier entry (possibly still being written) created. A model of
    // the tree keeps the layer valid: hard links only to files and symlinks, children only
    // in leaves that are directories.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut model: HashMap<String, Kind> = HashMap::new();
    let mut t = Tar::new();
    // Directories without an entry would get the time they were made.
    for d in ["./", "a/", "a/b/", "c/"] {
        t.dir(d, &DEFAULT);
    }
    for i in 0..3000u64 {
        let dir = ["", "a/", "a/b/", "c/"][next(4) as usize];
        let leaf = format!("{dir}n{}", next(30));
        let path = if model.get(&leaf) == Some(&Kind::Dir) && next(2) == 0 {
            format!("{leaf}/m{}", next(5))
        } else {
            leaf
        };
        let o = Opts {
            mode: [0o644, 0o600, 0o755, 0o4755][next(4) as usize],
            uid: next(3),
            gid: next(3),
            mtime: 1_000_000 + i,
        };
        let kind = match next(12) {
            0 => {
                t.dir(&format!("{path}/"), &o);
                if model.get(&path) != Some(&Kind::Dir) {
                    model.retain(|p, _| !p.starts_with(&format!("{path}/")));
                }
                Kind::Dir
            }
            1 => {
                t.symlink(&path, &format!("target{i}"));
                Kind::Symlink
            }
            2 => {
                let targets: Vec<_> = model
                    .iter()
                    .filter(|(p, k)| {
                        matches!(k, Kind::File | Kind::Symlink)
                            && **p != path
                            && !p.starts_with(&format!("{path}/"))
                    })
                    .map(|(p, _)| p.clone())
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let target = &targets[next(targets.len() as u64) as usize];
                t.hardlink(&path, target);
                model[target]
            }
            3 => {
                let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
                let wh = if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                };
                t.file(&wh, b"");
                if model.contains_key(&path) {
                    continue;
                }
                Kind::Whiteout
            }
            _ => {
                let size = [0, 100, 5000, 70_000][next(4) as usize];
                t.file_with(&path, &noise(size, i), &o);
                Kind::File
            }
        };
        if kind != Kind::Dir {
            model.retain(|p, _| !p.starts_with(&format!("{path}/")));
        }
        model.insert(path, kind);
    }
    let layer = t.finish();

    let parallel = Dest::new();
    let applied = parallel.apply(&layer).unwrap();
    let serial = Dest::new();
    let (hash, counts) =
        apply_serially(Box::new(&layer[..]), open_dir(&serial.snap()), None).unwrap();
    assert_eq!(
        applied.diff_id.to_string(),
        format!("sha256:{}", hex::encode(hash))
    );
    assert_eq!((applied.unpacked_size, applied.entries), counts);
    let (want, got) = (describe(&serial.snap()), describe(&parallel.snap()));
    assert!(want.len() > 50, "{want:?}");
    assert_eq!(want, got);
}
