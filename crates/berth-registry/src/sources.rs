//! Which repositories a blob is known to be in, so a push to another
//! repository of the same registry can mount it instead of uploading it.
//!
//! A small side table, `<dir>/sources.json` (`{"sha256:…": ["host/repo", …]}`),
//! rewritten by temp file + rename under an `flock`. It is only a hint: a
//! wrong or stale entry costs one refused mount request.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_image::Digest;

/// Repositories remembered per blob (the most recent ones).
const MAX_PER_BLOB: usize = 8;

/// The side table of blob sources.
#[derive(Clone, Debug)]
pub struct Sources {
    file: PathBuf,
    lock: PathBuf,
}

type Table = BTreeMap<String, Vec<String>>;

impl Sources {
    /// The table under `dir` (created on first write).
    pub fn new(dir: &Path) -> Sources {
        Sources {
            file: dir.join("sources.json"),
            lock: dir.join("sources.lock"),
        }
    }

    fn locked(&self, exclusive: bool) -> Option<fs::File> {
        fs::create_dir_all(self.lock.parent()?).ok()?;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .ok()?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).ok()?;
        Some(f)
    }

    fn read(&self) -> Table {
        // A missing or damaged table is an empty one: it only holds hints.
        fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Remembers that `blobs` are in `repository` (`host/path`). Failures
    /// are ignored: losing a hint only costs an upload later.
    pub fn record(&self, repository: &str, blobs: &[Digest]) {
        let Some(_lock) = self.locked(true) else {
            return;
        };
        let mut t = self.read();
        for d in blobs {
            let repos = t.entry(d.to_string()).or_default();
            repos.retain(|r| r != repository);
            repos.insert(0, repository.to_string());
            repos.truncate(MAX_PER_BLOB);
        }
        let Some(dir) = self.file.parent() else {
            return;
        };
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
            return;
        };
        let json = serde_json::to_vec(&t).expect("json");
        if tmp.write_all(&json).is_ok() {
            let _ = tmp.persist(&self.file);
        }
    }

    /// Repositories (`host/path`) `blob` is known to be in, most recent first.
    pub fn repositories(&self, blob: &Digest) -> Vec<String> {
        let _lock = self.locked(false);
        self.read().remove(blob.as_str()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sources::new(&dir.path().join("registry"));
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert!(s.repositories(&a).is_empty());
        s.record("h:1/x", &[a.clone(), b.clone()]);
        s.record("h:1/y", std::slice::from_ref(&a));
        assert_eq!(s.repositories(&a), vec!["h:1/y", "h:1/x"]);
        assert_eq!(s.repositories(&b), vec!["h:1/x"]);
        s.record("h:1/x", std::slice::from_ref(&a));
        assert_eq!(s.repositories(&a), vec!["h:1/x", "h:1/y"]);
        for i in 0..20 {
            s.record(&format!("h/r{i}"), std::slice::from_ref(&b));
        }
        assert_eq!(s.repositories(&b).len(), MAX_PER_BLOB);
        fs::write(dir.path().join("registry/sources.json"), "junk").unwrap();
        assert!(s.repositories(&a).is_empty());
    }
}
