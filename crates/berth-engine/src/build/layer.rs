//! Writing a build step's layer: a tar stream hashed as it is written (its
//! diff ID), gzipped and hashed again (the blob digest) into a staging file.
//! Sources: a COPY/ADD plan (entries from the context or another stage) or a
//! RUN's overlay upper directory (whiteouts translated to the OCI form).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_build::context::{CopyEntry, EntryKind};
use berth_image::Digest;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// A writer that hashes and counts what passes through.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    fn finish(self) -> (W, Digest, u64) {
        let hex = hex::encode(self.hash.finalize());
        (
            self.inner,
            Digest::from_hex(&hex).expect("sha256 hex"),
            self.len,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Sink = Hashing<GzEncoder<Hashing<BufWriter<File>>>>;

/// A layer being written to a staging file.
pub struct LayerWriter {
    tar: tar::Builder<Sink>,
    file: tempfile::NamedTempFile,
    /// Paths written so far (to add missing parents once).
    written: std::collections::HashSet<String>,
}

/// A finished layer: its blob in a staging file, with digests.
pub struct StagedLayer {
    pub file: tempfile::NamedTempFile,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

impl LayerWriter {
    pub fn new(tmp: &Path) -> io::Result<Self> {
        let file = tempfile::NamedTempFile::new_in(tmp)?;
        let out = BufWriter::with_capacity(1 << 18, file.reopen()?);
        // Fast gzip: a build is dominated by its own writes, not by ratio.
        let gz = GzEncoder::new(Hashing::new(out), Compression::fast());
        let mut tar = tar::Builder::new(Hashing::new(gz));
        tar.mode(tar::HeaderMode::Complete);
        Ok(LayerWriter {
            tar,
            file,
            written: Default::default(),
        })
    }

    pub fn finish(self) -> io::Result<StagedLayer> {
        let sink = self.tar.into_inner()?;
        let (gz, diff_id, _) = sink.finish();
        let hashing = gz.finish()?;
        let (mut out, digest, size) = hashing.finish();
        out.flush()?;
        Ok(StagedLayer {
            file: self.file,
            digest,
            size,
            diff_id,
        })
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    /// A directory entry (path absolute or relative, without trailing `/`).
    pub fn dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32, mtime: u64) -> io::Result<()> {
        let p = rel(path);
        if p.is_empty() {
            return Ok(());
        }
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, mtime);
        self.written.insert(p.clone());
        self.tar
            .append_data(&mut h, format!("{p}/"), io::empty())
            .map(|_| ())
    }

    /// Parent directories of `path` that `exists` says are missing below, as
    /// Docker creates them (0755 root, or the given owner).
    pub fn parents(
        &mut self,
        path: &str,
        owner: (u32, u32),
        exists: &dyn Fn(&str) -> bool,
    ) -> io::Result<()> {
        let p = rel(path);
        let mut cur = String::new();
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            if !self.written.contains(&cur) && !exists(&cur) {
                self.dir(&cur, 0o755, owner.0, owner.1, 0)?;
            }
        }
        Ok(())
    }

    // The tar header's fields, one argument each, read clearest at call sites.
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
        size: u64,
        data: impl Read,
    ) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(size);
        let p = rel(path);
        self.written.insert(p.clone());
        self.tar.append_data(&mut h, p, data)
    }

    pub fn symlink(
        &mut self,
        path: &str,
        target: &str,
        uid: u32,
        gid: u32,
        mtime: u64,
    ) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, uid, gid, mtime);
        let p = rel(path);
        self.written.insert(p.clone());
        self.tar.append_link(&mut h, p, target)
    }

    fn special(&mut self, path: &str, mut h: tar::Header, link: Option<&str>) -> io::Result<()> {
        let p = rel(path);
        self.written.insert(p.clone());
        match link {
            Some(l) => self.tar.append_link(&mut h, p, l),
            None => self.tar.append_data(&mut h, p, io::empty()),
        }
    }

    /// COPY/ADD entries: owner `owner` (Docker's root:root unless `--chown`),
    /// modes kept unless `chmod`.
    pub fn copy_entries(
        &mut self,
        entries: &[CopyEntry],
        owner: (u32, u32),
        chmod: Option<u32>,
    ) -> io::Result<()> {
        for e in entries {
            let mtime = fs::symlink_metadata(&e.host_path)
                .map(|m| m.mtime().max(0) as u64)
                .unwrap_or(0);
            let mode = chmod.unwrap_or(e.mode);
            match &e.kind {
                EntryKind::Dir => self.dir(&e.target, mode, owner.0, owner.1, mtime)?,
                EntryKind::File => {
                    let f = File::open(&e.host_path)?;
                    let size = f.metadata()?.len();
                    self.file(
                        &e.target,
                        mode,
                        owner.0,
                        owner.1,
                        mtime,
                        size,
                        BufReader::with_capacity(1 << 16, f).take(size),
                    )?
                }
                EntryKind::Symlink(t) => self.symlink(&e.target, t, owner.0, owner.1, mtime)?,
            }
        }
        Ok(())
    }

    /// ADD of a local archive: its entries under `dest`, owners and modes as
    /// in the archive (or `--chown`). `false` when `path` is not a tar.
    pub fn extract_archive(
        &mut self,
        path: &Path,
        dest: &str,
        chown: Option<(u32, u32)>,
    ) -> io::Result<bool> {
        if !is_archive(path)? {
            return Ok(false);
        }
        let f = BufReader::new(File::open(path)?);
        let (_, r) = berth_image::layer::decompress(f)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let mut ar = tar::Archive::new(r);
        for entry in ar.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.to_string_lossy().to_string();
            let clean = berth_build::dockerignore::clean(name.trim_start_matches('/'));
            if clean == "." || clean.starts_with("..") {
                continue;
            }
            let target = format!("{}/{}", dest.trim_end_matches('/'), clean);
            let mut h = entry.header().clone();
            if let Some((u, g)) = chown {
                h.set_uid(u.into());
                h.set_gid(g.into());
            }
            let kind = h.entry_type();
            let p = rel(&target);
            self.written.insert(p.clone());
            if kind.is_hard_link() {
                let link = entry.link_name()?.map(|l| l.to_string_lossy().to_string());
                let l = link.unwrap_or_default();
                let l = berth_build::dockerignore::clean(l.trim_start_matches('/'));
                let l = rel(&format!("{}/{}", dest.trim_end_matches('/'), l));
                self.tar.append_link(&mut h, p, l)?;
            } else if kind.is_symlink() {
                let link = entry.link_name()?.map(|l| l.to_string_lossy().to_string());
                self.tar.append_link(&mut h, p, link.unwrap_or_default())?;
            } else if kind.is_dir() {
                self.tar.append_data(&mut h, format!("{p}/"), io::empty())?;
            } else {
                let size = h.size()?;
                self.tar.append_data(&mut h, p, (&mut entry).take(size))?;
            }
        }
        Ok(true)
    }

    /// A RUN's upper directory: overlay whiteouts (0:0 character devices)
    /// become `.wh.NAME`, opaque directories get `.wh..wh..opq`, hard links
    /// inside the layer stay links.
    pub fn upper(&mut self, upper: &Path) -> io::Result<()> {
        let mut links: HashMap<(u64, u64), String> = HashMap::new();
        self.upper_dir(upper, "", &mut links)
    }

    fn upper_dir(
        &mut self,
        dir: &Path,
        prefix: &str,
        links: &mut HashMap<(u64, u64), String>,
    ) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let host = dir.join(&name);
            let name = name.to_string_lossy().to_string();
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let m = fs::symlink_metadata(&host)?;
            let ft = m.file_type();
            let (uid, gid, mtime) = (m.uid(), m.gid(), m.mtime().max(0) as u64);
            if ft.is_char_device() && m.rdev() == 0 {
                let wh = match path.rsplit_once('/') {
                    Some((d, n)) => format!("{d}/.wh.{n}"),
                    None => format!(".wh.{name}"),
                };
                self.file(&wh, 0o644, 0, 0, mtime, 0, io::empty())?;
            } else if ft.is_dir() {
                self.dir(&path, m.mode(), uid, gid, mtime)?;
                if is_opaque(&host) {
                    self.file(
                        &format!("{path}/.wh..wh..opq"),
                        0o644,
                        0,
                        0,
                        mtime,
                        0,
                        io::empty(),
                    )?;
                }
                self.upper_dir(&host, &path, links)?;
            } else if ft.is_symlink() {
                let t = fs::read_link(&host)?;
                self.symlink(&path, &t.to_string_lossy(), uid, gid, mtime)?;
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    let key = (m.dev(), m.ino());
                    if let Some(first) = links.get(&key) {
                        let h = Self::header(tar::EntryType::Link, m.mode(), uid, gid, mtime);
                        let first = first.clone();
                        self.special(&path, h, Some(&first))?;
                        continue;
                    }
                    links.insert(key, path.clone());
                }
                let f = File::open(&host)?;
                let size = m.len();
                self.file(
                    &path,
                    m.mode(),
                    uid,
                    gid,
                    mtime,
                    size,
                    BufReader::with_capacity(1 << 16, f).take(size),
                )?;
            } else {
                let kind = if ft.is_fifo() {
                    tar::EntryType::Fifo
                } else if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    // Sockets cannot be stored in a tar; Docker drops them too.
                    continue;
                };
                let mut h = Self::header(kind, m.mode(), uid, gid, mtime);
                let rdev = m.rdev();
                h.set_device_major(libc::major(rdev))?;
                h.set_device_minor(libc::minor(rdev))?;
                self.special(&path, h, None)?;
            }
        }
        Ok(())
    }
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf),
        Ok(1) if buf[0] == b'y'
    )
}

/// Is the file a tar archive (plain or compressed)? Read the header block
/// after decompression and look for the ustar magic, as Docker's detection.
fn is_archive(path: &Path) -> io::Result<bool> {
    let f = BufReader::new(File::open(path)?);
    let Ok((_, mut r)) = berth_image::layer::decompress(f) else {
        return Ok(false);
    };
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return Ok(false),
        }
    }
    Ok(got == 512 && &block[257..262] == b"ustar")
}

/// A path as tar entries name it: relative, no leading `/`.
fn rel(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// A view of an image's file system through its snapshot directories (top
/// first), for questions like "does this directory exist".
pub struct LowerView(pub Vec<PathBuf>);

impl LowerView {
    /// The metadata of `path` in the merged view, if it exists.
    pub fn stat(&self, path: &str) -> Option<fs::Metadata> {
        let p = rel(path);
        if p.is_empty() {
            return self.0.first().and_then(|d| fs::metadata(d).ok());
        }
        for d in &self.0 {
            if let Ok(m) = fs::symlink_metadata(d.join(&p)) {
                // An overlay whiteout hides everything below.
                if m.file_type().is_char_device() && m.rdev() == 0 {
                    return None;
                }
                return Some(m);
            }
            // A directory made opaque in this layer hides lower ones.
            let mut parent = Path::new(&p).parent();
            while let Some(pp) = parent {
                if pp.as_os_str().is_empty() {
                    break;
                }
                if is_opaque(&d.join(pp)) {
                    return None;
                }
                parent = pp.parent();
            }
        }
        None
    }

    pub fn exists(&self, path: &str) -> bool {
        self.stat(path).is_some()
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.stat(path).is_some_and(|m| m.is_dir())
    }
}
