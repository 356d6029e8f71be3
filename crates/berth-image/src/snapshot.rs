//! Snapshots: one directory per chain ID holding that layer's files, ready to be
//! an overlayfs lower dir (`lowerdir=top:…:base`), as Docker's overlay2 keeps them.
//!
//! A snapshot is unpacked into a `.tmp-*` directory and renamed to its chain ID only
//! when complete, so a chain ID directory is always whole. Two images sharing a
//! layer chain share the directory: it is unpacked once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// The chain ID of a layer: `diff_id` for the base, else
/// `sha256(parent_chain + " " + diff_id)` (OCI image-spec, config.md).
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// Chain IDs for a list of diff IDs, base first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let c = chain_id(out.last(), d);
        out.push(c);
    }
    out
}

/// The snapshot directories.
#[derive(Clone, Debug)]
pub struct Snapshots {
    dir: PathBuf,
}

/// A snapshot being unpacked; removed on drop unless committed.
pub struct Pending {
    dir: Option<PathBuf>,
}

impl Pending {
    /// The directory to unpack into.
    pub fn path(&self) -> &Path {
        self.dir.as_deref().expect("pending snapshot still open")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

impl Snapshots {
    /// Snapshots under `dir` (created if needed).
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Snapshots {
            dir: dir.to_path_buf(),
        })
    }

    /// Directory of a snapshot.
    pub fn path(&self, chain: &Digest) -> PathBuf {
        self.dir.join(chain.hex())
    }

    /// True when the snapshot is unpacked.
    pub fn exists(&self, chain: &Digest) -> bool {
        self.path(chain).is_dir()
    }

    /// A fresh empty directory to unpack a layer into.
    pub fn prepare(&self) -> io::Result<Pending> {
        let d = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)?;
        Ok(Pending {
            dir: Some(d.keep()),
        })
    }

    /// Publishes a pending snapshot under its chain ID. Returns false when another
    /// writer got there first (the pending copy is then discarded).
    pub fn commit(&self, mut pending: Pending, chain: &Digest) -> io::Result<bool> {
        let src = pending.dir.take().expect("pending snapshot still open");
        let dst = self.path(chain);
        match fs::rename(&src, &dst) {
            Ok(()) => Ok(true),
            Err(e) if dst.is_dir() => {
                let _ = e;
                let _ = fs::remove_dir_all(&src);
                Ok(false)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&src);
                Err(e)
            }
        }
    }

    /// Deletes a snapshot: renamed away first so a half-deleted tree never
    /// appears under a chain ID.
    pub fn remove(&self, chain: &Digest) -> io::Result<()> {
        let src = self.path(chain);
        let trash = self.dir.join(format!(".trash-{}", chain.hex()));
        match fs::rename(&src, &trash) {
            Ok(()) => fs::remove_dir_all(&trash),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Chain IDs present on disk, and names of leftovers (`.tmp-*`, `.trash-*`).
    pub fn list(&self) -> io::Result<(Vec<Digest>, Vec<PathBuf>)> {
        let mut chains = Vec::new();
        let mut junk = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            match Digest::from_hex(&name) {
                Ok(d) => chains.push(d),
                Err(_) => junk.push(e.path()),
            }
        }
        chains.sort();
        Ok((chains, junk))
    }

    /// `lowerdir=` value for an overlay mount of the given chain (base first in).
    pub fn lowerdirs(&self, chains: &[Digest]) -> String {
        chains
            .iter()
            .rev()
            .map(|c| self.path(c).display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn prepare_commit_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshots::open(dir.path()).unwrap();
        let c = Digest::of(b"x");
        let p = s.prepare().unwrap();
        fs::write(p.path().join("f"), b"1").unwrap();
        assert!(s.commit(p, &c).unwrap());
        assert!(s.path(&c).join("f").exists());
        // A second writer loses the race quietly.
        let p = s.prepare().unwrap();
        fs::write(p.path().join("g"), b"1").unwrap();
        assert!(!s.commit(p, &c).unwrap());
        assert!(!s.path(&c).join("g").exists());
        // Dropped pending snapshots leave nothing.
        let p = s.prepare().unwrap();
        drop(p);
        let (chains, junk) = s.list().unwrap();
        assert_eq!(chains, vec![c.clone()]);
        assert!(junk.is_empty(), "{junk:?}");
        s.remove(&c).unwrap();
        assert!(!s.exists(&c));
    }
}
