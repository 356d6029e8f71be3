//! The layer cache: one small JSON file per step key under
//! `<root>/build-cache/`, written to a temporary name and renamed, so a
//! crash never leaves a half entry. An entry whose blob has since been
//! removed (prune) is simply a miss.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_image::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a step produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The layer, when the step made one.
    pub layer: Option<CachedLayer>,
    /// The step's history entry (its `created` time is kept, so an unchanged
    /// rebuild gives the same image ID).
    pub history: serde_json::Value,
}

/// A layer blob and its uncompressed digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedLayer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

pub struct Cache {
    dir: PathBuf,
}

/// A step's key: the parent's key, the expanded instruction, the build args
/// it uses and (COPY/ADD) the content hash of its sources.
pub fn key(parent: &str, instruction: &str, args: &str, content: &str) -> String {
    let mut h = Sha256::new();
    for part in [parent, instruction, args, content] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

impl Cache {
    pub fn open(root: &Path) -> Self {
        Cache {
            dir: root.join("build-cache"),
        }
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        let bytes = fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put(&self, key: &str, e: &Entry) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&serde_json::to_vec(e).expect("json"))?;
        tmp.persist(self.dir.join(format!("{key}.json")))
            .map_err(|e| e.error)?;
        Ok(())
    }
}
