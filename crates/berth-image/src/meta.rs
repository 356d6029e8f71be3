//! Image metadata in one embedded database (redb).
//!
//! redb holds an exclusive lock on its file for as long as it is open, and berth
//! has no daemon: many short CLI processes share one store. So the database is
//! opened per transaction, behind a blocking `flock` on a sibling lock file, and
//! long work (unpacking, hashing) happens outside any transaction. A transaction
//! either commits whole or not at all, so a crash leaves the old state or the new.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::digest::Digest;

const IMAGES: TableDefinition<&str, &str> = TableDefinition::new("images");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const BLOBS: TableDefinition<&str, &str> = TableDefinition::new("blobs");
const SNAPSHOTS: TableDefinition<&str, &str> = TableDefinition::new("snapshots");

/// A failure of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database itself failed.
    #[error("metadata database {path}: {source}")]
    Db {
        /// Database file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A record could not be decoded.
    #[error("metadata database: record {key} in {table} is corrupt: {source}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The lock file could not be taken.
    #[error("metadata lock {path}: {source}")]
    Lock {
        /// Lock file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// One layer of an image as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the layer blob as distributed (maybe compressed).
    pub digest: Digest,
    /// Size of that blob.
    pub size: u64,
    /// Media type of that blob.
    pub media_type: String,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Chain ID naming the snapshot of this layer and all below it.
    pub chain_id: Digest,
}

/// An image: a config plus the manifest it arrived with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image ID: the config digest, as Docker prints it.
    pub id: Digest,
    /// Manifest kept for save/push (its bytes are in the content store).
    pub manifest: Digest,
    /// That manifest's media type.
    pub manifest_media_type: String,
    /// Media type of the config blob.
    pub config_media_type: String,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// `created` from the image config (RFC 3339), if any.
    pub created: Option<String>,
    /// When this store got the image (Unix seconds).
    pub stored_at: u64,
    /// Unpacked size of all layers.
    pub size: u64,
}

impl ImageRecord {
    /// Chain ID of the top layer: the snapshot a container starts from.
    pub fn top_chain(&self) -> Option<&Digest> {
        self.layers.last().map(|l| &l.chain_id)
    }
}

/// A blob's recorded size and media type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Size in bytes.
    pub size: u64,
    /// Media type it was stored under.
    pub media_type: String,
}

/// An unpacked layer directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Chain ID of the snapshot below, if any.
    pub parent: Option<Digest>,
    /// Digest of the uncompressed layer it holds.
    pub diff_id: Digest,
    /// Bytes of regular files in it.
    pub size: u64,
}

/// The database handle; cheap, opens the file per transaction.
#[derive(Clone, Debug)]
pub struct Meta {
    path: PathBuf,
    lock: PathBuf,
}

impl Meta {
    /// The database at `dir/meta.redb` (created on first use).
    pub fn new(dir: &Path) -> Self {
        Meta {
            path: dir.join("meta.redb"),
            lock: dir.join("meta.lock"),
        }
    }

    /// Runs `f` in a transaction and commits it when `f` succeeds.
    pub fn write<T, E: From<MetaError>>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, E>,
    ) -> Result<T, E> {
        let _lock = self.lock(true)?;
        let db = Database::create(&self.path).map_err(|e| self.db_err(e))?;
        let txn = db.begin_write().map_err(|e| self.db_err(e))?;
        let mut t = Txn {
            txn: Inner::Write(Box::new(txn)),
            meta: self,
        };
        let out = f(&mut t)?;
        if let Inner::Write(txn) = t.txn {
            txn.commit().map_err(|e| self.db_err(e))?;
        }
        Ok(out)
    }

    /// Runs `f` in a read-only snapshot. Opens the file read-only, so readers
    /// share the lock and a read never writes (or syncs) anything; falls back
    /// to an aborted write transaction when the file is missing or needs repair.
    pub fn read<T, E: From<MetaError>>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, E>,
    ) -> Result<T, E> {
        {
            let _lock = self.lock(false)?;
            if let Ok(db) = ReadOnlyDatabase::open(&self.path) {
                let txn = db.begin_read().map_err(|e| self.db_err(e))?;
                let mut t = Txn {
                    txn: Inner::Read(txn),
                    meta: self,
                };
                return f(&mut t);
            }
        }
        let _lock = self.lock(true)?;
        let db = Database::create(&self.path).map_err(|e| self.db_err(e))?;
        let txn = db.begin_write().map_err(|e| self.db_err(e))?;
        let mut t = Txn {
            txn: Inner::Write(Box::new(txn)),
            meta: self,
        };
        let out = f(&mut t)?;
        if let Inner::Write(txn) = t.txn {
            txn.abort().map_err(|e| self.db_err(e))?;
        }
        Ok(out)
    }

    fn lock(&self, exclusive: bool) -> Result<File, MetaError> {
        let err = |source| MetaError::Lock {
            path: self.lock.clone(),
            source,
        };
        if let Some(parent) = self.lock.parent() {
            fs::create_dir_all(parent).map_err(err)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(err)?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).map_err(|e| err(e.into()))?;
        Ok(f)
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> MetaError {
        MetaError::Db {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }
}

fn table_name(def: TableDefinition<&str, &str>) -> &'static str {
    match def.name() {
        "images" => "images",
        "tags" => "tags",
        "blobs" => "blobs",
        _ => "snapshots",
    }
}

enum Inner {
    // Boxed: a write transaction is several times the size of a read one.
    Write(Box<WriteTransaction>),
    Read(ReadTransaction),
}

/// One open transaction with typed accessors (writes need `Meta::write`).
pub struct Txn<'a> {
    txn: Inner,
    meta: &'a Meta,
}

/// Runs `f` on a table of either kind of transaction.
macro_rules! with_table {
    ($self:ident, $def:expr, |$t:ident| $body:expr) => {
        match &$self.txn {
            Inner::Write(w) => {
                let $t = w.open_table($def).map_err(|e| $self.meta.db_err(e))?;
                $body
            }
            Inner::Read(r) => match r.open_table($def) {
                Ok($t) => $body,
                // A table nobody has written yet reads as empty.
                Err(TableError::TableDoesNotExist(_)) => Default::default(),
                Err(e) => return Err($self.meta.db_err(e)),
            },
        }
    };
}

impl Txn<'_> {
    fn get<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &str>,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        let raw: Option<String> = with_table!(self, def, |table| table
            .get(key)
            .map_err(|e| self.meta.db_err(e))?
            .map(|v| v.value().to_string()));
        let Some(raw) = raw else {
            return Ok(None);
        };
        serde_json::from_str(&raw)
            .map(Some)
            .map_err(|source| MetaError::Corrupt {
                table: table_name(def),
                key: key.to_string(),
                source,
            })
    }

    fn all<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &str>,
    ) -> Result<Vec<(String, T)>, MetaError> {
        let raw: Vec<(String, String)> = with_table!(self, def, |table| {
            let mut raw = Vec::new();
            for item in table.iter().map_err(|e| self.meta.db_err(e))? {
                let (k, v) = item.map_err(|e| self.meta.db_err(e))?;
                raw.push((k.value().to_string(), v.value().to_string()));
            }
            raw
        });
        raw.into_iter()
            .map(|(key, v)| {
                serde_json::from_str(&v)
                    .map(|val| (key.clone(), val))
                    .map_err(|source| MetaError::Corrupt {
                        table: table_name(def),
                        key,
                        source,
                    })
            })
            .collect()
    }

    fn put<T: Serialize>(
        &mut self,
        def: TableDefinition<&str, &str>,
        key: &str,
        val: &T,
    ) -> Result<(), MetaError> {
        let json = serde_json::to_string(val).expect("records serialize");
        let Inner::Write(txn) = &self.txn else {
            panic!("a write inside Meta::read");
        };
        let mut table = txn.open_table(def).map_err(|e| self.meta.db_err(e))?;
        table
            .insert(key, json.as_str())
            .map_err(|e| self.meta.db_err(e))?;
        Ok(())
    }

    fn del(&mut self, def: TableDefinition<&str, &str>, key: &str) -> Result<bool, MetaError> {
        let Inner::Write(txn) = &self.txn else {
            panic!("a write inside Meta::read");
        };
        let mut table = txn.open_table(def).map_err(|e| self.meta.db_err(e))?;
        let old = table.remove(key).map_err(|e| self.meta.db_err(e))?;
        Ok(old.is_some())
    }

    /// An image by ID.
    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>, MetaError> {
        self.get(IMAGES, id.as_str())
    }
    /// All images.
    pub fn images(&self) -> Result<Vec<ImageRecord>, MetaError> {
        Ok(self.all(IMAGES)?.into_iter().map(|(_, v)| v).collect())
    }
    /// Stores an image record.
    pub fn put_image(&mut self, rec: &ImageRecord) -> Result<(), MetaError> {
        self.put(IMAGES, rec.id.as_str(), rec)
    }
    /// Deletes an image record.
    pub fn remove_image(&mut self, id: &Digest) -> Result<bool, MetaError> {
        self.del(IMAGES, id.as_str())
    }

    /// The image a full reference (`docker.io/library/busybox:latest`) names.
    pub fn tag(&self, reference: &str) -> Result<Option<Digest>, MetaError> {
        self.get(TAGS, reference)
    }
    /// All (reference, image ID) pairs, sorted by reference.
    pub fn tags(&self) -> Result<Vec<(String, Digest)>, MetaError> {
        self.all(TAGS)
    }
    /// Points a reference at an image.
    pub fn set_tag(&mut self, reference: &str, id: &Digest) -> Result<(), MetaError> {
        self.put(TAGS, reference, id)
    }
    /// Removes a reference.
    pub fn remove_tag(&mut self, reference: &str) -> Result<bool, MetaError> {
        self.del(TAGS, reference)
    }

    /// A blob's record.
    pub fn blob(&self, d: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        self.get(BLOBS, d.as_str())
    }
    /// All blob records.
    pub fn blobs(&self) -> Result<Vec<(Digest, BlobRecord)>, MetaError> {
        self.all(BLOBS)?
            .into_iter()
            .map(|(k, v)| {
                Digest::parse(&k)
                    .map(|d| (d, v))
                    .map_err(|e| MetaError::Corrupt {
                        table: "blobs",
                        key: k,
                        source: serde::de::Error::custom(e),
                    })
            })
            .collect()
    }
    /// Records a blob.
    pub fn put_blob(&mut self, d: &Digest, rec: &BlobRecord) -> Result<(), MetaError> {
        self.put(BLOBS, d.as_str(), rec)
    }
    /// Forgets a blob.
    pub fn remove_blob(&mut self, d: &Digest) -> Result<bool, MetaError> {
        self.del(BLOBS, d.as_str())
    }

    /// A snapshot's record.
    pub fn snapshot(&self, chain: &Digest) -> Result<Option<SnapshotRecord>, MetaError> {
        self.get(SNAPSHOTS, chain.as_str())
    }
    /// All snapshots.
    pub fn snapshots(&self) -> Result<Vec<(String, SnapshotRecord)>, MetaError> {
        self.all(SNAPSHOTS)
    }
    /// Records a snapshot.
    pub fn put_snapshot(&mut self, chain: &Digest, rec: &SnapshotRecord) -> Result<(), MetaError> {
        self.put(SNAPSHOTS, chain.as_str(), rec)
    }
    /// Forgets a snapshot.
    pub fn remove_snapshot(&mut self, chain: &Digest) -> Result<bool, MetaError> {
        self.del(SNAPSHOTS, chain.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(dir.path());
        let id = Digest::of(b"cfg");
        meta.write(|t| t.set_tag("docker.io/library/a:latest", &id))
            .unwrap();
        let got: Option<Digest> = meta.read(|t| t.tag("docker.io/library/a:latest")).unwrap();
        assert_eq!(got, Some(id.clone()));
        // A failing closure commits nothing.
        let r: Result<(), MetaError> = meta.write(|t| {
            t.set_tag("docker.io/library/b:latest", &id)?;
            Err(MetaError::Lock {
                path: "x".into(),
                source: std::io::Error::other("boom"),
            })
        });
        assert!(r.is_err());
        let tags = meta.read(|t| t.tags()).unwrap();
        assert_eq!(tags.len(), 1);
    }
}
