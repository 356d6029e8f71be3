//! The image store: content, metadata and snapshots behind one handle.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::content::{ContentError, ContentStore};
use crate::digest::{Digest, HashingReader};
use crate::layer::{self, LayerError};
use crate::meta::{BlobRecord, ImageRecord, LayerRecord, Meta, MetaError, SnapshotRecord};
use crate::reference::{Reference, ReferenceError, familiar};
use crate::snapshot::{Snapshots, chain_ids};
use crate::{config, media};

/// What can go wrong with images. Each variant names the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image by that name or ID.
    #[error("No such image: {0}")]
    NotFound(String),
    /// An ID prefix matched more than one image.
    #[error("image ID prefix {0} is ambiguous")]
    Ambiguous(String),
    /// A bad reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A content store failure.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// A metadata failure.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A layer that could not be applied.
    #[error("layer {layer}: {source}")]
    Layer {
        /// The layer (digest or archive entry).
        layer: String,
        /// What went wrong.
        #[source]
        source: LayerError,
    },
    /// The uncompressed layer is not the one the config lists.
    #[error(
        "layer {layer}: uncompressed content is {actual} but the image config expects {expected}"
    )]
    DiffIdMismatch {
        /// Layer blob.
        layer: String,
        /// diff_id from the config.
        expected: Digest,
        /// What unpacking produced.
        actual: Digest,
    },
    /// A structurally bad manifest, config or archive.
    #[error("{what}: {reason}")]
    Invalid {
        /// The object at fault (archive path, digest, file).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A media type berth does not handle.
    #[error("{what}: unsupported media type \"{media_type}\"")]
    UnsupportedMediaType {
        /// Descriptor concerned.
        what: String,
        /// The media type.
        media_type: String,
    },
    /// `rmi` refused.
    #[error("conflict: unable to remove {name}: {reason}")]
    Conflict {
        /// Image named.
        name: String,
        /// Why.
        reason: String,
    },
    /// A file-system failure.
    #[error("{path}: {source}")]
    Io {
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn invalid(what: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        ImageError::Invalid {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { path, source }
}

/// One image for `images`.
#[derive(Clone, Debug, Serialize)]
pub struct ImageSummary {
    /// Image ID.
    pub id: Digest,
    /// Full references pointing at it, sorted.
    pub tags: Vec<String>,
    /// `created` from the config.
    pub created: Option<String>,
    /// Unpacked size.
    pub size: u64,
    /// Manifest digest.
    pub manifest: Digest,
}

/// What `rmi` did, in Docker's words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Removed {
    /// A reference was removed.
    Untagged(String),
    /// An image (and whatever only it used) was deleted.
    Deleted(Digest),
}

/// One line of `history`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// RFC 3339, as recorded.
    pub created: String,
    /// The instruction or command that made it.
    pub created_by: String,
    /// Its comment.
    pub comment: String,
    /// Unpacked size of the layer it made (0 for none).
    pub size: u64,
    /// It made no layer.
    pub empty_layer: bool,
}

/// Space used by images, for `system df`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageUsage {
    /// Number of images.
    pub images: usize,
    /// Images used by containers.
    pub active: usize,
    /// Bytes of unpacked snapshots plus blobs.
    pub size: u64,
    /// Bytes freed if every unused image were removed.
    pub reclaimable: u64,
}

/// A problem `system check` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The object (blob digest, snapshot, image).
    pub object: String,
    /// What is wrong.
    pub problem: String,
}

/// A layer ready to be committed with its image.
pub(crate) struct NewLayer {
    pub record: LayerRecord,
    pub unpacked: u64,
}

/// The image store at `<root>/image`.
#[derive(Clone, Debug)]
pub struct ImageStore {
    pub(crate) content: ContentStore,
    pub(crate) meta: Meta,
    pub(crate) snapshots: Snapshots,
    pub(crate) tmp: PathBuf,
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ImageStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let dir = root.join("image");
        let content = ContentStore::open(&dir.join("content"))?;
        let snapshots = Snapshots::open(&dir.join("snapshots")).map_err(io_at(&dir))?;
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
        Ok(ImageStore {
            content,
            meta: Meta::new(&dir),
            snapshots,
            tmp,
        })
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The snapshot directories.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Finds an image by reference, full ID, or unique ID prefix.
    pub fn resolve(&self, name: &str) -> Result<ImageRecord, ImageError> {
        self.meta.read(|t| {
            let id_part = name.strip_prefix("sha256:").unwrap_or(name);
            let looks_like_id =
                !id_part.is_empty() && id_part.bytes().all(|b| b.is_ascii_hexdigit());
            if let Ok(r) = Reference::parse(name) {
                if let Some(d) = r.digest() {
                    // name@digest: the manifest digest of a stored image.
                    for img in t.images()? {
                        if &img.manifest == d || &img.id == d {
                            return Ok(img);
                        }
                    }
                } else if let Some(id) = t.tag(&r.to_string())?
                    && let Some(img) = t.image(&id)?
                {
                    return Ok(img);
                }
            } else if !looks_like_id {
                // Report the reference error for things that are not IDs either.
                Reference::parse(name)?;
            }
            if looks_like_id && (id_part.len() >= 4 || name.starts_with("sha256:")) {
                let matches: Vec<_> = t
                    .images()?
                    .into_iter()
                    .filter(|i| i.id.hex().starts_with(&id_part.to_ascii_lowercase()))
                    .collect();
                match matches.len() {
                    1 => return Ok(matches.into_iter().next().expect("one match")),
                    0 => {}
                    _ => return Err(ImageError::Ambiguous(name.to_string())),
                }
            }
            Err(ImageError::NotFound(name.to_string()))
        })
    }

    /// Every image with its references.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        self.meta.read(|t| {
            let mut by_id: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
            for (r, id) in t.tags()? {
                by_id.entry(id).or_default().push(r);
            }
            let mut out: Vec<ImageSummary> = t
                .images()?
                .into_iter()
                .map(|i| ImageSummary {
                    tags: by_id.remove(&i.id).unwrap_or_default(),
                    id: i.id,
                    created: i.created,
                    size: i.size,
                    manifest: i.manifest,
                })
                .collect();
            // Newest first, as Docker lists them.
            out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
            Ok(out)
        })
    }

    /// The references pointing at an image.
    pub fn tags_of(&self, id: &Digest) -> Result<Vec<String>, ImageError> {
        Ok(self
            .meta
            .read(|t| t.tags())?
            .into_iter()
            .filter(|(_, i)| i == id)
            .map(|(r, _)| r)
            .collect())
    }

    /// The raw config JSON of an image (verified).
    pub fn config_json(&self, img: &ImageRecord) -> Result<Value, ImageError> {
        let bytes = self.content.read_verified(&img.id)?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::invalid(&img.id, e.to_string()))
    }

    /// The raw manifest bytes of an image (verified).
    pub fn manifest_bytes(&self, img: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        Ok(self.content.read_verified(&img.manifest)?)
    }

    /// Overlay lower dirs for an image's root file system, top first.
    pub fn lowerdirs(&self, img: &ImageRecord) -> Vec<PathBuf> {
        img.layers
            .iter()
            .rev()
            .map(|l| self.snapshots.path(&l.chain_id))
            .collect()
    }

    /// Docker-shaped `image inspect` JSON.
    pub fn inspect(&self, name: &str) -> Result<Value, ImageError> {
        let img = self.resolve(name)?;
        let cfg = self.config_json(&img)?;
        let tags = self.tags_of(&img.id)?;
        let repo_tags: Vec<String> = tags.iter().map(|t| familiar(t)).collect();
        let mut repo_digests: Vec<String> = tags
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .map(|r| format!("{}@{}", r.familiar_repository(), img.manifest))
            .collect();
        repo_digests.dedup();
        let lower: Vec<String> = self
            .lowerdirs(&img)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Ok(json!({
            "Id": img.id,
            "RepoTags": repo_tags,
            "RepoDigests": repo_digests,
            "Parent": "",
            "Comment": cfg.pointer("/history/0/comment").cloned().unwrap_or(json!("")),
            "Created": img.created.clone().unwrap_or_default(),
            "DockerVersion": cfg.get("docker_version").cloned().unwrap_or(json!("")),
            "Author": cfg.get("author").cloned().unwrap_or(json!("")),
            "Config": cfg.get("config").cloned().unwrap_or(json!({})),
            "Architecture": cfg.get("architecture").cloned().unwrap_or(json!("")),
            "Variant": cfg.get("variant").cloned().unwrap_or(Value::Null),
            "Os": cfg.get("os").cloned().unwrap_or(json!("")),
            "Size": img.size,
            "GraphDriver": {
                "Name": "overlay",
                "Data": { "LowerDir": lower.join(":") },
            },
            "RootFS": {
                "Type": "layers",
                "Layers": img.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
            },
            "Descriptor": {
                "mediaType": img.manifest_media_type,
                "digest": img.manifest,
                "size": self.content.size(&img.manifest).unwrap_or(0),
            },
            "Metadata": { "LastTagTime": "" },
        }))
    }

    /// `history`: the image's history entries, newest first, each with the unpacked
    /// size of the layer it made (0 for entries that made none, as `empty_layer`
    /// says). An image without history gets one entry per layer.
    pub fn history(&self, name: &str) -> Result<(ImageRecord, Vec<HistoryEntry>), ImageError> {
        let img = self.resolve(name)?;
        let config = self.config_json(&img)?;
        let sizes: Vec<u64> = self.meta.read(|t| -> Result<Vec<u64>, ImageError> {
            img.layers
                .iter()
                .map(|l| Ok(t.snapshot(&l.chain_id)?.map_or(0, |s| s.size)))
                .collect()
        })?;
        let mut layers = sizes.into_iter();
        let mut out = Vec::new();
        match config["history"].as_array() {
            Some(h) if !h.is_empty() => {
                for e in h {
                    let empty = e["empty_layer"].as_bool().unwrap_or(false);
                    out.push(HistoryEntry {
                        created: e["created"].as_str().unwrap_or_default().to_string(),
                        created_by: e["created_by"].as_str().unwrap_or_default().to_string(),
                        comment: e["comment"].as_str().unwrap_or_default().to_string(),
                        size: if empty { 0 } else { layers.next().unwrap_or(0) },
                        empty_layer: empty,
                    });
                }
            }
            _ => {
                for size in layers {
                    out.push(HistoryEntry {
                        created: img.created.clone().unwrap_or_default(),
                        size,
                        ..Default::default()
                    });
                }
            }
        }
        out.reverse();
        Ok((img, out))
    }

    /// `tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference, ImageError> {
        let target = Reference::parse(target)?;
        if target.digest().is_some() {
            return Err(ImageError::invalid(
                &target,
                "refusing to create a tag with a digest reference",
            ));
        }
        let img = self.resolve(source)?;
        self.meta
            .write(|t| t.set_tag(&target.to_string(), &img.id))?;
        Ok(target)
    }

    /// `rmi [-f] NAME`: untags; deletes the image once no reference is left.
    /// `in_use` names the containers using an image, if any.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: &dyn Fn(&Digest) -> Vec<String>,
    ) -> Result<Vec<Removed>, ImageError> {
        let img = self.resolve(name)?;
        let users = in_use(&img.id);
        let by_ref = Reference::parse(name)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| r.to_string());
        let tags = self.tags_of(&img.id)?;
        let mut out = Vec::new();
        let removed = self.meta.write(|t| -> Result<Vec<Digest>, ImageError> {
            let is_tag = by_ref.as_ref().is_some_and(|r| tags.contains(r));
            if !users.is_empty() {
                let used = format!(
                    "image {} is being used by container(s) {}",
                    img.id.short(),
                    users.join(", ")
                );
                if !force || !is_tag {
                    return Err(ImageError::Conflict {
                        name: name.to_string(),
                        reason: if is_tag {
                            format!("{used} (must force)")
                        } else {
                            used
                        },
                    });
                }
                // Forced by name: the name goes, the image stays for its containers.
                let r = by_ref.as_ref().expect("checked");
                t.remove_tag(r)?;
                out.push(Removed::Untagged(familiar(r)));
                return Ok(vec![]);
            }
            if is_tag && tags.len() > 1 {
                // Untag only; the image stays for its other names.
                let r = by_ref.as_ref().expect("checked");
                t.remove_tag(r)?;
                out.push(Removed::Untagged(familiar(r)));
                return Ok(vec![]);
            }
            if !is_tag && tags.len() > 1 && !force {
                return Err(ImageError::Conflict {
                    name: name.to_string(),
                    reason: format!(
                        "image is referenced in multiple repositories (must be forced): {}",
                        tags.iter()
                            .map(|t| familiar(t))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            for r in &tags {
                t.remove_tag(r)?;
                out.push(Removed::Untagged(familiar(r)));
            }
            t.remove_image(&img.id)?;
            out.push(Removed::Deleted(img.id.clone()));
            Ok(vec![img.id.clone()])
        })?;
        if !removed.is_empty() {
            self.collect_garbage()?;
        }
        Ok(out)
    }

    /// Removes dangling images (no reference) — or, with `all`, every image no
    /// container uses. Returns what was removed and the bytes freed.
    pub fn prune(
        &self,
        all: bool,
        in_use: &dyn Fn(&Digest) -> Vec<String>,
    ) -> Result<(Vec<Removed>, u64), ImageError> {
        let before = self.disk_bytes()?;
        let mut out = Vec::new();
        self.meta.write(|t| -> Result<(), ImageError> {
            let tags = t.tags()?;
            for img in t.images()? {
                let refs: Vec<&String> = tags
                    .iter()
                    .filter(|(_, i)| i == &img.id)
                    .map(|(r, _)| r)
                    .collect();
                if !in_use(&img.id).is_empty() || (!all && !refs.is_empty()) {
                    continue;
                }
                for r in refs {
                    t.remove_tag(r)?;
                    out.push(Removed::Untagged(familiar(r)));
                }
                t.remove_image(&img.id)?;
                out.push(Removed::Deleted(img.id.clone()));
            }
            Ok(())
        })?;
        self.collect_garbage()?;
        let after = self.disk_bytes()?;
        Ok((out, before.saturating_sub(after)))
    }

    /// Deletes blobs and snapshots no image references. Records go first, in one
    /// transaction; files follow (an interrupted run leaves unreferenced files,
    /// which the next run removes).
    pub fn collect_garbage(&self) -> Result<(), ImageError> {
        let (blobs, snaps) = self.meta.write(|t| -> Result<_, ImageError> {
            let mut live_blobs = HashSet::new();
            let mut live_snaps = HashSet::new();
            for img in t.images()? {
                live_blobs.insert(img.id.clone());
                live_blobs.insert(img.manifest.clone());
                for l in &img.layers {
                    live_blobs.insert(l.digest.clone());
                    live_snaps.insert(l.chain_id.clone());
                }
            }
            let mut dead_snaps = Vec::new();
            for (k, _) in t.snapshots()? {
                let d = Digest::parse(&k)
                    .map_err(|e| ImageError::invalid("snapshots", e.to_string()))?;
                if !live_snaps.contains(&d) {
                    t.remove_snapshot(&d)?;
                    dead_snaps.push(d);
                }
            }
            for (d, _) in t.blobs()? {
                if !live_blobs.contains(&d) {
                    t.remove_blob(&d)?;
                }
            }
            Ok((live_blobs, (live_snaps, dead_snaps)))
        })?;
        let (live_snaps, _) = snaps;
        for d in self.content.list()?.into_iter().flatten() {
            if !blobs.contains(&d) {
                self.content.delete(&d)?;
            }
        }
        let (chains, _) = self.snapshots.list().map_err(io_at(&self.tmp))?;
        for c in chains {
            if !live_snaps.contains(&c) {
                self.snapshots
                    .remove(&c)
                    .map_err(io_at(self.snapshots.path(&c)))?;
            }
        }
        Ok(())
    }

    /// Removes what interrupted operations left: ingest files, pending and
    /// half-deleted snapshots, temporary files. Returns how many.
    pub fn clean_leftovers(&self) -> Result<usize, ImageError> {
        // Writers hold the operations lock shared; leftovers are only
        // leftovers when nobody is writing.
        let Some(_quiet) = self.ops_lock(true)? else {
            return Ok(0);
        };
        let mut n = self.content.clean_ingest()?;
        let (_, junk) = self.snapshots.list().map_err(io_at(&self.tmp))?;
        for j in junk {
            if fs::remove_dir_all(&j).is_ok() {
                n += 1;
            }
        }
        for e in fs::read_dir(&self.tmp).map_err(io_at(&self.tmp))?.flatten() {
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        self.collect_garbage()?;
        Ok(n)
    }

    /// Takes the operations lock: shared for writers (load, import), or
    /// exclusive without waiting for cleaners (None when writers are active).
    pub(crate) fn ops_lock(&self, exclusive: bool) -> Result<Option<fs::File>, ImageError> {
        let p = self.tmp.with_file_name("ops.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_at(&p))?;
        use rustix::fs::{FlockOperation, flock};
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::LockShared
        };
        match flock(&f, op) {
            Ok(()) => Ok(Some(f)),
            Err(rustix::io::Errno::WOULDBLOCK) if exclusive => Ok(None),
            Err(e) => Err(io_at(&p)(e.into())),
        }
    }

    fn disk_bytes(&self) -> Result<u64, ImageError> {
        self.meta.read(|t| -> Result<u64, ImageError> {
            let b: u64 = t.blobs()?.iter().map(|(_, r)| r.size).sum();
            let s: u64 = t.snapshots()?.iter().map(|(_, r)| r.size).sum();
            Ok(b + s)
        })
    }

    /// `system df` figures for images.
    pub fn usage(&self, in_use: &dyn Fn(&Digest) -> Vec<String>) -> Result<ImageUsage, ImageError> {
        self.meta.read(|t| -> Result<ImageUsage, ImageError> {
            let blobs: BTreeMap<Digest, BlobRecord> = t.blobs()?.into_iter().collect();
            let snaps: BTreeMap<String, SnapshotRecord> = t.snapshots()?.into_iter().collect();
            let images = t.images()?;
            let mut u = ImageUsage {
                images: images.len(),
                size: blobs.values().map(|b| b.size).sum::<u64>()
                    + snaps.values().map(|s| s.size).sum::<u64>(),
                ..Default::default()
            };
            // Bytes reachable from active images stay; the rest is reclaimable.
            let mut kept_blobs = BTreeSet::new();
            let mut kept_snaps = BTreeSet::new();
            for img in &images {
                if in_use(&img.id).is_empty() {
                    continue;
                }
                u.active += 1;
                kept_blobs.insert(img.id.clone());
                kept_blobs.insert(img.manifest.clone());
                for l in &img.layers {
                    kept_blobs.insert(l.digest.clone());
                    kept_snaps.insert(l.chain_id.as_str().to_string());
                }
            }
            let kept: u64 = kept_blobs
                .iter()
                .filter_map(|d| blobs.get(d))
                .map(|b| b.size)
                .sum::<u64>()
                + kept_snaps
                    .iter()
                    .filter_map(|c| snaps.get(c))
                    .map(|s| s.size)
                    .sum::<u64>();
            u.reclaimable = u.size.saturating_sub(kept);
            Ok(u)
        })
    }

    /// `system check`: re-hashes every blob and cross-checks the records.
    pub fn check(&self) -> Result<Vec<Problem>, ImageError> {
        let mut problems = Vec::new();
        let mut p = |object: &dyn std::fmt::Display, problem: String| {
            problems.push(Problem {
                object: object.to_string(),
                problem,
            })
        };
        let (blobs, snaps, images) = self
            .meta
            .read(|t| -> Result<_, ImageError> { Ok((t.blobs()?, t.snapshots()?, t.images()?)) })?;
        let recorded: BTreeMap<Digest, BlobRecord> = blobs.into_iter().collect();
        for entry in self.content.list()? {
            match entry {
                Err(name) => p(
                    &name,
                    "file in the blob directory is not named by a digest".into(),
                ),
                Ok(d) => match self.content.verify(&d) {
                    Ok(size) => match recorded.get(&d) {
                        None => p(&d, "blob is not referenced by any record".into()),
                        Some(r) if r.size != size => {
                            p(&d, format!("size is {size} but {} was recorded", r.size))
                        }
                        Some(_) => {}
                    },
                    Err(ContentError::DigestMismatch { actual, .. }) => p(
                        &d,
                        format!("content does not match its digest (hashes to {actual})"),
                    ),
                    Err(e) => p(&d, e.to_string()),
                },
            }
        }
        for d in recorded.keys() {
            if !self.content.contains(d) {
                p(d, "recorded blob is missing".into());
            }
        }
        for (chain, _) in &snaps {
            let d = Digest::parse(chain)
                .map_err(|e| ImageError::invalid("snapshots", e.to_string()))?;
            if !self.snapshots.exists(&d) {
                p(
                    &format!("snapshot {chain}"),
                    "recorded snapshot directory is missing".into(),
                );
            }
        }
        let snap_keys: HashSet<&String> = snaps.iter().map(|(k, _)| k).collect();
        for img in &images {
            for l in &img.layers {
                if !snap_keys.contains(&l.chain_id.as_str().to_string()) {
                    p(
                        &format!("image {}", img.id.short()),
                        format!("snapshot {} is not recorded", l.chain_id),
                    );
                }
                if !recorded.contains_key(&l.digest) {
                    p(
                        &format!("image {}", img.id.short()),
                        format!("layer blob {} is not recorded", l.digest),
                    );
                }
            }
        }
        Ok(problems)
    }

    /// Unpacks one layer stream (as distributed) into its snapshot and, when
    /// `keep_blob`, into the content store. Verifies the blob digest and size
    /// when given, and that the uncompressed bytes are `diff_id`.
    pub(crate) fn ingest_layer(
        &self,
        src: impl Read,
        layer_name: &str,
        expected: Option<(&Digest, u64)>,
        diff_id: &Digest,
        chain: &Digest,
        created: &Created,
    ) -> Result<(Digest, u64, u64), ImageError> {
        self.ingest_layer_with(src, layer_name, expected, diff_id, chain, created, false)
    }

    /// [`Self::ingest_layer`]; with `blame_blob`, a layer that fails to unpack
    /// is read to its end first, and when its bytes do not match `expected`
    /// the digest (or size) mismatch is reported instead: a corrupt download
    /// is then named for what it is rather than by the tar error it caused.
    #[allow(clippy::too_many_arguments)]
    fn ingest_layer_with(
        &self,
        src: impl Read,
        layer_name: &str,
        expected: Option<(&Digest, u64)>,
        diff_id: &Digest,
        chain: &Digest,
        created: &Created,
        blame_blob: bool,
    ) -> Result<(Digest, u64, u64), ImageError> {
        let need_snapshot = !self.snapshots.exists(chain);
        let mut blob = self.content.writer(expected)?;
        let lerr = |source| ImageError::Layer {
            layer: layer_name.to_string(),
            source,
        };
        let mut tee = Tee {
            inner: src,
            out: &mut blob,
        };
        let unpacked = (|| {
            let (actual_diff, unpacked, pending) = if need_snapshot {
                let pending = self.snapshots.prepare().map_err(io_at(&self.tmp))?;
                let applied = layer::apply_layer(&mut tee, pending.path()).map_err(lerr)?;
                (applied.diff_id, applied.unpacked_size, Some(pending))
            } else {
                let (_, r) =
                    layer::decompress(BufReader::with_capacity(1 << 18, &mut tee)).map_err(lerr)?;
                let mut h = HashingReader::new(r);
                io::copy(&mut h, &mut io::sink()).map_err(io_at(layer_name))?;
                (h.finish().0, 0, None)
            };
            // Drain what the decoder did not need (trailing padding) so the blob is whole.
            io::copy(&mut tee, &mut io::sink()).map_err(io_at(layer_name))?;
            if &actual_diff != diff_id {
                return Err(ImageError::DiffIdMismatch {
                    layer: layer_name.to_string(),
                    expected: diff_id.clone(),
                    actual: actual_diff,
                });
            }
            Ok((unpacked, pending))
        })();
        let (unpacked, pending) = match unpacked {
            Ok(v) => v,
            Err(e) if blame_blob && expected.is_some() => {
                // Read the rest (ignoring errors: the stream may be what broke)
                // and let the blob's own verification speak if it fails.
                let _ = io::copy(&mut tee, &mut io::sink());
                return Err(match blob.commit_check() {
                    Err(c) => c.into(),
                    Ok(()) => e,
                });
            }
            Err(e) => return Err(e),
        };
        let (digest, size, new) = blob.commit()?;
        if new {
            created.blobs.lock().expect("lock").push(digest.clone());
        }
        if let Some(p) = pending
            && self
                .snapshots
                .commit(p, chain)
                .map_err(io_at(self.snapshots.path(chain)))?
        {
            created.snapshots.lock().expect("lock").push(chain.clone());
        }
        Ok((digest, size, unpacked))
    }

    /// Records an image whose blobs and snapshots are in place, and points
    /// `tags` at it, all in one transaction. Returns the references that moved
    /// away from another image.
    pub(crate) fn commit_image(
        &self,
        manifest: &[u8],
        manifest_media_type: &str,
        config: &[u8],
        config_media_type: &str,
        layers: &[NewLayer],
        tags: &[Reference],
    ) -> Result<ImageRecord, ImageError> {
        let manifest_digest = self.content.put(manifest)?;
        let id = self.content.put(config)?;
        let cfg: Value =
            serde_json::from_slice(config).map_err(|e| ImageError::invalid(&id, e.to_string()))?;
        let created = cfg
            .get("created")
            .and_then(Value::as_str)
            .map(str::to_string);
        let rec = ImageRecord {
            id: id.clone(),
            manifest: manifest_digest.clone(),
            manifest_media_type: manifest_media_type.to_string(),
            config_media_type: config_media_type.to_string(),
            layers: layers.iter().map(|l| l.record.clone()).collect(),
            created,
            stored_at: now(),
            size: 0,
        };
        self.meta.write(|t| -> Result<ImageRecord, ImageError> {
            let mut rec = rec;
            let mut parent = None;
            for l in layers {
                let r = &l.record;
                t.put_blob(
                    &r.digest,
                    &BlobRecord {
                        size: r.size,
                        media_type: r.media_type.clone(),
                    },
                )?;
                let snap = match t.snapshot(&r.chain_id)? {
                    Some(s) => s,
                    None => {
                        let s = SnapshotRecord {
                            parent: parent.clone(),
                            diff_id: r.diff_id.clone(),
                            size: l.unpacked,
                        };
                        t.put_snapshot(&r.chain_id, &s)?;
                        s
                    }
                };
                rec.size += snap.size;
                parent = Some(r.chain_id.clone());
            }
            t.put_blob(
                &manifest_digest,
                &BlobRecord {
                    size: manifest.len() as u64,
                    media_type: manifest_media_type.to_string(),
                },
            )?;
            t.put_blob(
                &id,
                &BlobRecord {
                    size: config.len() as u64,
                    media_type: config_media_type.to_string(),
                },
            )?;
            t.put_image(&rec)?;
            for tag in tags {
                t.set_tag(&tag.to_string(), &id)?;
            }
            Ok(rec)
        })
    }

    /// `import`: a root file system tarball (optionally compressed) becomes a
    /// one-layer image, with Dockerfile-style `changes` applied to its config.
    pub fn import(
        &self,
        src: impl Read,
        source_name: &str,
        reference: Option<&str>,
        changes: &[String],
        message: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        let reference = reference.map(Reference::parse).transpose()?;
        let _busy = self.ops_lock(false)?;
        let mut cfg = config::Config::default();
        for c in changes {
            config::apply_change(&mut cfg, c)
                .map_err(|e| ImageError::invalid(format!("--change {c:?}"), e))?;
        }
        // Store the layer uncompressed (as Docker does): its digest is its diff_id.
        let (_, mut r) =
            layer::decompress(BufReader::with_capacity(1 << 18, src)).map_err(|source| {
                ImageError::Layer {
                    layer: source_name.to_string(),
                    source,
                }
            })?;
        let staged = tempfile::NamedTempFile::new_in(&self.tmp).map_err(io_at(&self.tmp))?;
        let mut w = io::BufWriter::with_capacity(1 << 18, staged.as_file());
        let mut h = HashingReader::new(&mut r);
        io::copy(&mut h, &mut w).map_err(io_at(source_name))?;
        w.flush().map_err(io_at(staged.path()))?;
        drop(w);
        let (diff_id, size) = h.finish();
        let created_at = rfc3339(now());
        let config_json = config::image_config_json(
            &cfg,
            &created_at,
            std::slice::from_ref(&diff_id),
            &[json!({
                "created": created_at,
                "created_by": "berth import",
                "comment": message.map(str::to_string)
                    .unwrap_or_else(|| format!("Imported from {source_name}")),
            })],
        );
        let config_bytes = serde_json::to_vec(&config_json).expect("json");
        let chain = chain_ids(std::slice::from_ref(&diff_id)).remove(0);
        let created = Created::default();
        let result = (|| {
            let f = fs::File::open(staged.path()).map_err(io_at(staged.path()))?;
            let (digest, size, unpacked) = self.ingest_layer(
                BufReader::with_capacity(1 << 18, f),
                source_name,
                Some((&diff_id, size)),
                &diff_id,
                &chain,
                &created,
            )?;
            let layer = NewLayer {
                record: LayerRecord {
                    digest: digest.clone(),
                    size,
                    media_type: media::OCI_LAYER.to_string(),
                    diff_id: diff_id.clone(),
                    chain_id: chain.clone(),
                },
                unpacked,
            };
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": {
                    "mediaType": media::OCI_CONFIG,
                    "digest": Digest::of(&config_bytes),
                    "size": config_bytes.len(),
                },
                "layers": [{ "mediaType": media::OCI_LAYER, "digest": digest, "size": size }],
            });
            let manifest = serde_json::to_vec(&manifest).expect("json");
            self.commit_image(
                &manifest,
                media::OCI_MANIFEST,
                &config_bytes,
                media::OCI_CONFIG,
                &[layer],
                reference.as_slice(),
            )
        })();
        if result.is_err() {
            created.undo(self);
        }
        result
    }
}

/// One image being written from streams, e.g. by a registry pull: layers
/// arrive one at a time (from any thread), and the image record and its tags
/// are written in one transaction by [`Ingest::commit`]. Dropped without a
/// commit, it removes every blob and snapshot it created, so a failed pull
/// leaves nothing behind. It holds the store's operations lock (shared), so
/// `system prune` does not take its half-written files for leftovers.
pub struct Ingest {
    store: ImageStore,
    created: Created,
    committed: std::sync::atomic::AtomicBool,
    _busy: Option<fs::File>,
}

/// A layer stored by an [`Ingest`], to pass to [`Ingest::commit`].
#[derive(Clone, Debug)]
pub struct IngestedLayer {
    /// The layer as the image record will list it.
    pub record: LayerRecord,
    /// Bytes unpacked into a new snapshot (0 when it existed).
    pub unpacked: u64,
}

impl ImageStore {
    /// Starts writing an image from streams (see [`Ingest`]).
    pub fn ingest(&self) -> Result<Ingest, ImageError> {
        Ok(Ingest {
            _busy: self.ops_lock(false)?,
            store: self.clone(),
            created: Created::default(),
            committed: false.into(),
        })
    }
}

impl Ingest {
    /// True when the layer's blob and its snapshot are both stored already.
    pub fn has_layer(&self, digest: &Digest, chain: &Digest) -> bool {
        self.store.content.contains(digest) && self.store.snapshots.exists(chain)
    }

    /// Streams one layer blob (as distributed: plain, gzip or zstd) into the
    /// content store and into its snapshot at the same time. The blob must be
    /// `expected` (digest, size) and unpack to `diff_id`; otherwise nothing of
    /// it is kept and the error names the digest at fault. A blob that is
    /// already stored whole is not written again; a snapshot that exists is
    /// not unpacked again (the stream is still verified).
    pub fn layer(
        &self,
        src: impl Read,
        expected: (&Digest, u64),
        media_type: &str,
        diff_id: &Digest,
        chain: &Digest,
    ) -> Result<IngestedLayer, ImageError> {
        let (digest, size, unpacked) = self.store.ingest_layer_with(
            src,
            expected.0.as_str(),
            Some(expected),
            diff_id,
            chain,
            &self.created,
            true,
        )?;
        Ok(IngestedLayer {
            record: LayerRecord {
                digest,
                size,
                media_type: media_type.to_string(),
                diff_id: diff_id.clone(),
                chain_id: chain.clone(),
            },
            unpacked,
        })
    }

    /// A layer already stored whole (see [`Ingest::has_layer`]), without reading it.
    pub fn existing_layer(
        &self,
        expected: (&Digest, u64),
        media_type: &str,
        diff_id: &Digest,
        chain: &Digest,
    ) -> IngestedLayer {
        IngestedLayer {
            record: LayerRecord {
                digest: expected.0.clone(),
                size: expected.1,
                media_type: media_type.to_string(),
                diff_id: diff_id.clone(),
                chain_id: chain.clone(),
            },
            unpacked: 0,
        }
    }

    /// Records `layers` (one chain, base first) without an image: their
    /// blobs and snapshots are kept when the `Ingest` is dropped uncommitted,
    /// e.g. the finished steps of a failed build, which stay cached. Nothing
    /// references them, so image garbage collection (`rmi`, `prune`) may
    /// remove them again.
    pub fn retain(&self, layers: &[IngestedLayer]) -> Result<(), ImageError> {
        if layers.is_empty() {
            return Ok(());
        }
        self.store.meta.write(|t| -> Result<(), ImageError> {
            let mut parent = None;
            for l in layers {
                let r = &l.record;
                if t.blob(&r.digest)?.is_none() {
                    t.put_blob(
                        &r.digest,
                        &BlobRecord {
                            size: r.size,
                            media_type: r.media_type.clone(),
                        },
                    )?;
                }
                if t.snapshot(&r.chain_id)?.is_none() {
                    t.put_snapshot(
                        &r.chain_id,
                        &SnapshotRecord {
                            parent: parent.clone(),
                            diff_id: r.diff_id.clone(),
                            size: l.unpacked,
                        },
                    )?;
                }
                parent = Some(r.chain_id.clone());
            }
            Ok(())
        })?;
        let keep_blobs: HashSet<&Digest> = layers.iter().map(|l| &l.record.digest).collect();
        let keep_snaps: HashSet<&Digest> = layers.iter().map(|l| &l.record.chain_id).collect();
        self.created
            .blobs
            .lock()
            .expect("lock")
            .retain(|d| !keep_blobs.contains(d));
        self.created
            .snapshots
            .lock()
            .expect("lock")
            .retain(|c| !keep_snaps.contains(c));
        Ok(())
    }

    /// Records the image (manifest and config bytes kept exactly as given, so
    /// the manifest digest is the registry's) and points `tags` at it, in one
    /// transaction. After this, dropping the `Ingest` removes nothing.
    pub fn commit(
        &self,
        manifest: &[u8],
        manifest_media_type: &str,
        config: &[u8],
        config_media_type: &str,
        layers: &[IngestedLayer],
        tags: &[Reference],
    ) -> Result<ImageRecord, ImageError> {
        let layers: Vec<NewLayer> = layers
            .iter()
            .map(|l| NewLayer {
                record: l.record.clone(),
                unpacked: l.unpacked,
            })
            .collect();
        let rec = self.store.commit_image(
            manifest,
            manifest_media_type,
            config,
            config_media_type,
            &layers,
            tags,
        )?;
        self.committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(rec)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.committed.load(std::sync::atomic::Ordering::SeqCst) {
            self.created.undo(&self.store);
        }
    }
}

/// Blobs and snapshots a failed operation created, to remove again.
#[derive(Default)]
pub(crate) struct Created {
    pub blobs: std::sync::Mutex<Vec<Digest>>,
    pub snapshots: std::sync::Mutex<Vec<Digest>>,
}

impl Created {
    /// Removes everything recorded, unless some committed image uses it.
    pub(crate) fn undo(&self, store: &ImageStore) {
        let live = store
            .meta
            .read(
                |t| -> Result<(HashSet<Digest>, HashSet<Digest>), MetaError> {
                    let mut b = HashSet::new();
                    let mut s = HashSet::new();
                    for img in t.images()? {
                        b.insert(img.id.clone());
                        b.insert(img.manifest.clone());
                        for l in img.layers {
                            b.insert(l.digest);
                            s.insert(l.chain_id);
                        }
                    }
                    Ok((b, s))
                },
            )
            .unwrap_or_default();
        for d in self.blobs.lock().expect("lock").iter() {
            if !live.0.contains(d) {
                let _ = store.content.delete(d);
            }
        }
        for c in self.snapshots.lock().expect("lock").iter() {
            if !live.1.contains(c) {
                let _ = store.snapshots.remove(c);
            }
        }
    }
}

/// A reader that copies what it reads into a writer.
pub(crate) struct Tee<'a, R, W> {
    pub inner: R,
    pub out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_file_layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let data = vec![7u8; 10_000];
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "f", &data[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn ingest_commits_or_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let layer = one_file_layer();
        let d = Digest::of(&layer);
        let chain = chain_ids(std::slice::from_ref(&d)).remove(0);
        let n = layer.len() as u64;

        // A corrupt download: reported as the blob's digest mismatch, not as
        // whatever the unpacker made of it; nothing stays behind.
        let mut bad = layer.clone();
        bad[600] ^= 0xff;
        let ingest = store.ingest().unwrap();
        let e = ingest
            .layer(&bad[..], (&d, n), media::OCI_LAYER, &d, &chain)
            .unwrap_err();
        assert!(
            matches!(e, ImageError::Content(ContentError::DigestMismatch { .. })),
            "{e}"
        );
        assert!(e.to_string().contains(d.as_str()), "{e}");
        let e = ingest
            .layer(
                &layer[..n as usize - 512],
                (&d, n),
                media::OCI_LAYER,
                &d,
                &chain,
            )
            .unwrap_err();
        assert!(e.to_string().contains(d.as_str()), "{e}");
        drop(ingest);
        assert!(!store.content().contains(&d));
        assert!(!store.snapshots().exists(&chain));

        // Stored, then dropped without a commit: removed again.
        let ingest = store.ingest().unwrap();
        let l = ingest
            .layer(&layer[..], (&d, n), media::OCI_LAYER, &d, &chain)
            .unwrap();
        assert!(ingest.has_layer(&d, &chain));
        drop(ingest);
        assert!(!store.content().contains(&d));
        assert!(!store.snapshots().exists(&chain));

        // Stored and committed: kept, tagged, and reused by the next ingest.
        let ingest = store.ingest().unwrap();
        let l2 = ingest
            .layer(&layer[..], (&d, n), media::OCI_LAYER, &d, &chain)
            .unwrap();
        assert_eq!(l.record, l2.record);
        let config = config::image_config_json(
            &config::Config::default(),
            "2024-01-01T00:00:00Z",
            std::slice::from_ref(&d),
            &[],
        );
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = br#"{"schemaVersion":2}"#;
        let r = Reference::parse("reg.example/a:b").unwrap();
        let img = ingest
            .commit(
                manifest,
                media::OCI_MANIFEST,
                &config,
                media::OCI_CONFIG,
                &[l2],
                std::slice::from_ref(&r),
            )
            .unwrap();
        drop(ingest);
        assert_eq!(img.manifest, Digest::of(manifest));
        assert_eq!(store.resolve("reg.example/a:b").unwrap().id, img.id);
        assert!(store.content().contains(&d) && store.snapshots().exists(&chain));
        let ingest = store.ingest().unwrap();
        assert!(ingest.has_layer(&d, &chain));
        let again = ingest.existing_layer((&d, n), media::OCI_LAYER, &d, &chain);
        assert_eq!(again.record, img.layers[0]);
        assert!(store.check().unwrap().is_empty());
    }

    #[test]
    fn retained_layers_outlive_an_uncommitted_ingest_until_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let layer = one_file_layer();
        let d = Digest::of(&layer);
        let chain = chain_ids(std::slice::from_ref(&d)).remove(0);
        let n = layer.len() as u64;
        let ingest = store.ingest().unwrap();
        let l = ingest
            .layer(&layer[..], (&d, n), media::OCI_LAYER, &d, &chain)
            .unwrap();
        ingest.retain(std::slice::from_ref(&l)).unwrap();
        ingest.retain(std::slice::from_ref(&l)).unwrap();
        drop(ingest);
        // Kept and recorded: `system check` finds nothing wrong.
        assert!(store.content().contains(&d) && store.snapshots().exists(&chain));
        assert!(store.check().unwrap().is_empty());
        assert!(store.list().unwrap().is_empty());
        // No image references it: garbage collection removes it.
        store.collect_garbage().unwrap();
        assert!(!store.content().contains(&d) && !store.snapshots().exists(&chain));
        assert!(store.check().unwrap().is_empty());
    }

    #[test]
    fn formats_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
