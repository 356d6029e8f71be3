//! The content store: blobs addressed by their sha256 digest.
//!
//! A blob is written to `ingest/`, hashed while written, and made visible under
//! `blobs/sha256/<hex>` only by an atomic rename once its digest (and size, when
//! expected) checked out. A crash leaves at worst an orphan in `ingest/`, never a
//! partial blob under its digest.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher, HashingReader};

/// Errors from the content store, each naming the blob concerned.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Written bytes hash to something else than promised.
    #[error("blob {expected}: content does not match its digest (got {actual})")]
    DigestMismatch {
        /// The digest the content was supposed to have.
        expected: Digest,
        /// What it hashed to.
        actual: Digest,
    },
    /// Written bytes are more or fewer than promised.
    #[error("blob {digest}: size {actual} does not match the expected {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size promised.
        expected: u64,
        /// Size seen.
        actual: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0}: not found in the content store")]
    NotFound(Digest),
    /// An I/O failure on a blob.
    #[error("blob {what}: {source}")]
    Io {
        /// Blob digest or file concerned.
        what: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ContentError {
    move |source| ContentError::Io {
        what: what.to_string(),
        source,
    }
}

/// Blob files under one directory.
#[derive(Clone, Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store rooted at `dir`.
    pub fn open(dir: &Path) -> Result<Self, ContentError> {
        let blobs = dir.join("blobs").join("sha256");
        let ingest = dir.join("ingest");
        for d in [&blobs, &ingest] {
            fs::create_dir_all(d).map_err(io_err(d.display()))?;
        }
        Ok(ContentStore { blobs, ingest })
    }

    /// Where a blob lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// True when the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    /// Size on disk of a present blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        match fs::metadata(self.path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err(digest)(e)),
        }
    }

    /// Starts writing a blob. With `expected`, the commit refuses other content.
    pub fn writer(&self, expected: Option<(&Digest, u64)>) -> Result<BlobWriter, ContentError> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.ingest)
            .map_err(io_err(self.ingest.display()))?;
        Ok(BlobWriter {
            file,
            hasher: Hasher::new(),
            expected: expected.map(|(d, s)| (d.clone(), s)),
            blobs: self.blobs.clone(),
        })
    }

    /// Writes a whole in-memory blob and returns its digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, ContentError> {
        let digest = Digest::of(data);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut w = self.writer(Some((&digest, data.len() as u64)))?;
        w.write_all(data).map_err(io_err(&digest))?;
        w.commit()?;
        Ok(digest)
    }

    /// Opens a blob for reading without verifying it.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        File::open(self.path(digest)).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound(digest.clone())
            } else {
                io_err(digest)(e)
            }
        })
    }

    /// Reads a whole (small) blob and verifies it: manifests and configs.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut data = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut data)
            .map_err(io_err(digest))?;
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Re-hashes one blob.
    pub fn verify(&self, digest: &Digest) -> Result<u64, ContentError> {
        let f = self.open_blob(digest)?;
        let mut r = HashingReader::new(BufReader::with_capacity(1 << 18, f));
        io::copy(&mut r, &mut io::sink()).map_err(io_err(digest))?;
        let (actual, len) = r.finish();
        if &actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(len)
    }

    /// Every blob present, as (digest, or the file name when it is not one).
    pub fn list(&self) -> Result<Vec<Result<Digest, String>>, ContentError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.blobs).map_err(io_err(self.blobs.display()))? {
            let e = e.map_err(io_err(self.blobs.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            out.push(Digest::from_hex(&name).map_err(|_| name));
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob; absent blobs are fine.
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(digest)(e)),
            _ => Ok(()),
        }
    }

    /// Removes leftovers of interrupted writes; returns how many.
    pub fn clean_ingest(&self) -> Result<usize, ContentError> {
        let mut n = 0;
        for e in fs::read_dir(&self.ingest).map_err(io_err(self.ingest.display()))? {
            let e = e.map_err(io_err(self.ingest.display()))?;
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A blob being written; dropped without `commit`, it leaves nothing behind.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    expected: Option<(Digest, u64)>,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Checks what was written so far against the expected digest and size
    /// without publishing anything (to name a corrupt blob after a failure).
    pub fn commit_check(&self) -> Result<(), ContentError> {
        let Some((expected, size)) = &self.expected else {
            return Ok(());
        };
        let actual = self.hasher.clone().finish();
        if &actual != expected {
            return Err(ContentError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if self.hasher.len() != *size {
            return Err(ContentError::SizeMismatch {
                digest: expected.clone(),
                expected: *size,
                actual: self.hasher.len(),
            });
        }
        Ok(())
    }

    /// Verifies and publishes the blob under its digest. The flag is true when
    /// the blob was not in the store before.
    pub fn commit(mut self) -> Result<(Digest, u64, bool), ContentError> {
        let len = self.hasher.len();
        let actual = self.hasher.finish();
        if let Some((expected, size)) = self.expected {
            if actual != expected {
                return Err(ContentError::DigestMismatch { expected, actual });
            }
            if len != size {
                return Err(ContentError::SizeMismatch {
                    digest: expected,
                    expected: size,
                    actual: len,
                });
            }
        }
        let target = self.blobs.join(actual.hex());
        if target.exists() {
            return Ok((actual, len, false));
        }
        self.file.flush().map_err(io_err(&actual))?;
        self.file.as_file().sync_data().map_err(io_err(&actual))?;
        self.file
            .persist(&target)
            .map_err(|e| io_err(&actual)(e.error))?;
        Ok((actual, len, true))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verify_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(cs.read_verified(&d).unwrap(), b"hello");
        assert_eq!(cs.verify(&d).unwrap(), 5);
        assert_eq!(cs.list().unwrap(), vec![Ok(d.clone())]);

        // Wrong content for a promised digest: refused, nothing published.
        let other = Digest::of(b"other");
        let mut w = cs.writer(Some((&other, 5))).unwrap();
        w.write_all(b"wrong").unwrap();
        let e = w.commit().unwrap_err();
        assert!(e.to_string().contains(other.as_str()), "{e}");
        assert!(!cs.contains(&other));
        // Right content, wrong size.
        let mut w = cs.writer(Some((&other, 9))).unwrap();
        w.write_all(b"other").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::SizeMismatch { .. })));
        assert!(!cs.contains(&other));
        // A dropped writer leaves no ingest file.
        let mut w = cs.writer(None).unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put(b"hello").unwrap();
        fs::write(cs.path(&d), b"hellO").unwrap();
        assert!(matches!(
            cs.verify(&d),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(cs.read_verified(&d).is_err());
        let missing = Digest::of(b"nope");
        assert!(matches!(
            cs.verify(&missing),
            Err(ContentError::NotFound(_))
        ));
    }
}
