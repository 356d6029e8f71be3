//! Image archives: `docker-archive` (manifest.json) and `oci-archive` (an OCI
//! image layout in a tar), read by `load` and written by `save`.
//!
//! Loading indexes the archive once (entry name → offset, size) without reading
//! layer data, then streams every layer straight from its offset into the content
//! store and its snapshot at the same time, all layers in parallel. A layer is
//! read once and never copied to a temporary file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::digest::Digest;
use crate::layer::{self, Compression};
use crate::meta::{ImageRecord, LayerRecord};
use crate::reference::{Reference, familiar};
use crate::snapshot::chain_ids;
use crate::store::{Created, ImageError, ImageStore, NewLayer, io_at};
use crate::{config, media};

/// Largest manifest, config or index accepted (registries cap at 4 MiB).
pub const MAX_JSON: u64 = 4 << 20;
const BUF: usize = 1 << 18;

/// Archive formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `docker save` layout: manifest.json, config and layer files.
    Docker,
    /// OCI image layout: oci-layout, index.json, blobs/.
    Oci,
}

/// Progress of a load, as events; the front end decides how to show them.
#[derive(Clone, Debug)]
pub enum LoadEvent {
    /// A layer starts streaming.
    LayerStart {
        /// Layer name (digest or archive entry).
        layer: String,
        /// Bytes to read.
        size: u64,
    },
    /// Bytes of a layer read so far (sent about every MiB).
    LayerProgress {
        /// Layer name.
        layer: String,
        /// Bytes read.
        done: u64,
    },
    /// A layer is stored and unpacked (or was already).
    LayerDone {
        /// Layer name.
        layer: String,
        /// True when nothing had to be unpacked.
        cached: bool,
    },
}

/// One image a load stored.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The image.
    pub image: ImageRecord,
    /// References now pointing at it.
    pub tags: Vec<Reference>,
}

/// Where each member of a tar archive lies.
struct Index {
    path: PathBuf,
    shown: String,
    entries: HashMap<String, (u64, u64)>,
    _temp: Option<tempfile::NamedTempFile>,
}

fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl Index {
    fn open(path: &Path, tmp: &Path) -> Result<Index, ImageError> {
        let shown = path.display().to_string();
        let bad = |reason: String| ImageError::invalid(format!("archive {shown}"), reason);
        let mut f = File::open(path).map_err(io_at(path))?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(io_at(path))?;
        f.seek(SeekFrom::Start(0)).map_err(io_at(path))?;
        // A compressed archive (`docker save | gzip`) is expanded once to a temp file.
        let (file_path, temp) = match Compression::detect(&magic[..n]) {
            Compression::None => (path.to_path_buf(), None),
            _ => {
                let (_, mut r) = layer::decompress(BufReader::with_capacity(BUF, f))
                    .map_err(|e| bad(e.to_string()))?;
                let t = tempfile::NamedTempFile::new_in(tmp).map_err(io_at(tmp))?;
                let mut w = BufWriter::with_capacity(BUF, t.as_file());
                io::copy(&mut r, &mut w).map_err(|e| bad(format!("cannot decompress: {e}")))?;
                w.flush().map_err(io_at(t.path()))?;
                drop(w);
                (t.path().to_path_buf(), Some(t))
            }
        };
        let f = File::open(&file_path).map_err(io_at(&file_path))?;
        let len = f.metadata().map_err(io_at(&file_path))?.len();
        if len == 0 {
            return Err(bad("is empty".into()));
        }
        let mut ar = tar::Archive::new(BufReader::with_capacity(64 << 10, f));
        let mut entries = HashMap::new();
        let mut links = Vec::new();
        let iter = ar
            .entries_with_seek()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for e in iter {
            let e = e.map_err(|e| bad(format!("corrupt tar: {e}")))?;
            let name = clean_name(&String::from_utf8_lossy(&e.path_bytes()));
            let off = e.raw_file_position();
            let size = e.size();
            if off.saturating_add(size) > len {
                return Err(bad(format!(
                    "is truncated: entry {name} ends at byte {} of {len}",
                    off + size
                )));
            }
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    entries.insert(name, (off, size));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes() {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        let target = if e.header().entry_type() == tar::EntryType::Symlink {
                            let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                            clean_name(&format!("{dir}/{t}"))
                        } else {
                            clean_name(&t)
                        };
                        links.push((name, target));
                    }
                }
                _ => {}
            }
        }
        if entries.is_empty() {
            return Err(bad("is not an image archive: it holds no files".into()));
        }
        // docker save writes repeated layers as links to the first copy.
        for (name, target) in links {
            if let Some(&v) = entries.get(&target) {
                entries.insert(name, v);
            }
        }
        Ok(Index {
            path: file_path,
            shown,
            entries,
            _temp: temp,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn size(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|e| e.1)
    }

    fn reader(&self, name: &str) -> Result<io::Take<BufReader<File>>, ImageError> {
        let &(off, size) = self.entries.get(name).ok_or_else(|| {
            ImageError::invalid(format!("archive {}", self.shown), format!("has no {name}"))
        })?;
        let mut f = File::open(&self.path).map_err(io_at(&self.path))?;
        f.seek(SeekFrom::Start(off)).map_err(io_at(&self.path))?;
        Ok(BufReader::with_capacity(BUF, f).take(size))
    }

    fn read_json_bytes(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let size = self.size(name).unwrap_or(0);
        if size > MAX_JSON {
            return Err(ImageError::invalid(
                format!("archive {}", self.shown),
                format!("{name} is {size} bytes, larger than the {MAX_JSON}-byte limit"),
            ));
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.reader(name)?
            .read_to_end(&mut buf)
            .map_err(io_at(&self.path))?;
        Ok(buf)
    }

    fn blob_name(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// Reads a small blob of an OCI layout and checks its digest.
    fn read_blob(&self, d: &Digest, referrer: &str) -> Result<Vec<u8>, ImageError> {
        let name = Self::blob_name(d);
        if !self.has(&name) {
            return Err(ImageError::invalid(
                referrer,
                format!(
                    "references blob {d}, which is not in archive {}",
                    self.shown
                ),
            ));
        }
        let bytes = self.read_json_bytes(&name)?;
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(ImageError::Content(
                crate::content::ContentError::DigestMismatch {
                    expected: d.clone(),
                    actual,
                },
            ));
        }
        Ok(bytes)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImageError::invalid(what, format!("malformed JSON: {e}")))
}

/// A layer to read: archive entry, media type, expected digest and size when known.
type PlannedLayer = (String, String, Option<(Digest, u64)>);
/// What ingesting one distinct layer gave: blob digest, blob size, unpacked bytes.
type LayerResult = Result<(Digest, u64, u64), ImageError>;

/// One image found in an archive, before its layers are ingested.
struct Plan {
    manifest: Vec<u8>,
    manifest_media_type: String,
    config: Vec<u8>,
    config_media_type: String,
    layers: Vec<PlannedLayer>,
    diff_ids: Vec<Digest>,
    tags: Vec<Reference>,
    /// docker-archive images get a manifest synthesised after the layers are read.
    synthesise_manifest: bool,
}

fn diff_ids_of(config: &[u8], what: &str) -> Result<Vec<Digest>, ImageError> {
    let cfg: oci_spec::image::ImageConfiguration = parse_json(config, what)?;
    cfg.rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| ImageError::invalid(what, e.to_string())))
        .collect()
}

fn desc_digest(d: &oci_spec::image::Descriptor, what: &str) -> Result<Digest, ImageError> {
    Digest::try_from(d.digest()).map_err(|e| ImageError::invalid(what, e.to_string()))
}

impl ImageStore {
    /// `load -i PATH`: stores every image of a docker- or oci-archive (detected).
    /// On any error nothing is stored.
    pub fn load(
        &self,
        path: &Path,
        events: &(dyn Fn(LoadEvent) + Sync),
    ) -> Result<Vec<Loaded>, ImageError> {
        let _busy = self.ops_lock(false)?;
        let index = Index::open(path, &self.tmp)?;
        let plans = if index.has("index.json") && index.has("oci-layout") {
            self.plan_oci(&index)?
        } else if index.has("manifest.json") {
            self.plan_docker(&index)?
        } else {
            return Err(ImageError::invalid(
                format!("archive {}", path.display()),
                "is neither a docker-archive (no manifest.json) nor an oci-archive (no index.json and oci-layout)",
            ));
        };
        let created = Created::default();
        let result = self.ingest_plans(&index, plans, &created, events);
        if result.is_err() {
            created.undo(self);
        }
        result
    }

    fn plan_oci(&self, index: &Index) -> Result<Vec<Plan>, ImageError> {
        let what = format!("archive {}: index.json", index.shown);
        let idx_bytes = index.read_json_bytes("index.json")?;
        let idx: oci_spec::image::ImageIndex = parse_json(&idx_bytes, &what)?;
        let mut plans = Vec::new();
        for desc in idx.manifests() {
            let mut names = Vec::new();
            if let Some(a) = desc.annotations() {
                let full = a.get("io.containerd.image.name");
                let refname = a.get("org.opencontainers.image.ref.name");
                // A full name wins; a bare ref.name is only a tag and names no repository.
                if let Some(n) = full.or(refname.filter(|r| r.contains(['/', ':']))) {
                    names.push(Reference::parse(n)?);
                }
            }
            let mut mt = desc.media_type().to_string();
            let mut d = desc_digest(desc, &what)?;
            let mut bytes = index.read_blob(&d, &what)?;
            if media::is_index(&mt) {
                // A multi-platform index: pick the host's platform.
                let sub: oci_spec::image::ImageIndex = parse_json(&bytes, d.as_str())?;
                let pick = sub
                    .manifests()
                    .iter()
                    .find(|m| {
                        m.platform().as_ref().is_some_and(|p| {
                            p.os().to_string() == "linux"
                                && p.architecture().to_string() == config::host_arch()
                        }) && index.has(&Index::blob_name(
                            &desc_digest(m, "").unwrap_or_else(|_| d.clone()),
                        ))
                    })
                    .ok_or_else(|| {
                        ImageError::invalid(
                            &d,
                            format!(
                                "index has no linux/{} image in this archive",
                                config::host_arch()
                            ),
                        )
                    })?;
                mt = pick.media_type().to_string();
                d = desc_digest(pick, d.as_str())?;
                bytes = index.read_blob(&d, &what)?;
            }
            if !media::is_manifest(&mt) {
                return Err(ImageError::UnsupportedMediaType {
                    what: d.to_string(),
                    media_type: mt,
                });
            }
            plans.push(self.plan_manifest(index, &d, bytes, &mt, names)?);
        }
        if plans.is_empty() {
            return Err(ImageError::invalid(what, "lists no images"));
        }
        Ok(plans)
    }

    fn plan_manifest(
        &self,
        index: &Index,
        d: &Digest,
        bytes: Vec<u8>,
        mt: &str,
        tags: Vec<Reference>,
    ) -> Result<Plan, ImageError> {
        let m: oci_spec::image::ImageManifest = parse_json(&bytes, d.as_str())?;
        let cfg_mt = m.config().media_type().to_string();
        if !media::is_config(&cfg_mt) {
            return Err(ImageError::UnsupportedMediaType {
                what: format!("config of {d}"),
                media_type: cfg_mt,
            });
        }
        let cd = desc_digest(m.config(), d.as_str())?;
        let config = index.read_blob(&cd, &format!("manifest {d}"))?;
        let diff_ids = diff_ids_of(&config, cd.as_str())?;
        let mut layers = Vec::new();
        for l in m.layers() {
            let lmt = l.media_type().to_string();
            let ld = desc_digest(l, d.as_str())?;
            if !media::is_layer(&lmt) {
                return Err(ImageError::UnsupportedMediaType {
                    what: format!("layer {ld} of manifest {d}"),
                    media_type: lmt,
                });
            }
            let name = Index::blob_name(&ld);
            match index.size(&name) {
                None => {
                    return Err(ImageError::invalid(
                        format!("manifest {d}"),
                        format!(
                            "references blob {ld}, which is not in archive {}",
                            index.shown
                        ),
                    ));
                }
                Some(s) if s != l.size() => {
                    return Err(ImageError::invalid(
                        format!("layer {ld}"),
                        format!(
                            "is {s} bytes in the archive but the manifest says {}",
                            l.size()
                        ),
                    ));
                }
                Some(_) => {}
            }
            layers.push((name, lmt, Some((ld, l.size()))));
        }
        if layers.len() != diff_ids.len() {
            return Err(ImageError::invalid(
                format!("manifest {d}"),
                format!(
                    "has {} layers but its config lists {} diff_ids",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        Ok(Plan {
            manifest: bytes,
            manifest_media_type: mt.to_string(),
            config,
            config_media_type: cfg_mt,
            layers,
            diff_ids,
            tags,
            synthesise_manifest: false,
        })
    }

    fn plan_docker(&self, index: &Index) -> Result<Vec<Plan>, ImageError> {
        let what = format!("archive {}: manifest.json", index.shown);
        let bytes = index.read_json_bytes("manifest.json")?;
        let items: Vec<Value> = parse_json(&bytes, &what)?;
        let mut plans = Vec::new();
        for item in items {
            let config_name = item
                .get("Config")
                .and_then(Value::as_str)
                .ok_or_else(|| ImageError::invalid(&what, "an entry has no Config"))?;
            let config_name = clean_name(config_name);
            if !index.has(&config_name) {
                return Err(ImageError::invalid(
                    &what,
                    format!("references {config_name}, which is not in the archive"),
                ));
            }
            let config = index.read_json_bytes(&config_name)?;
            let diff_ids = diff_ids_of(&config, &config_name)?;
            let mut tags = Vec::new();
            for t in item
                .get("RepoTags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = t.as_str() {
                    tags.push(Reference::parse(t)?);
                }
            }
            let mut layers = Vec::new();
            for l in item
                .get("Layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = clean_name(l.as_str().unwrap_or_default());
                if !index.has(&name) {
                    return Err(ImageError::invalid(
                        &what,
                        format!("references layer {name}, which is not in the archive"),
                    ));
                }
                // Media type from the bytes: docker-archive layers are usually plain tar.
                let mut magic = [0u8; 4];
                let n = index
                    .reader(&name)?
                    .read(&mut magic)
                    .map_err(io_at(&index.path))?;
                let mt = match Compression::detect(&magic[..n]) {
                    Compression::None => media::DOCKER_LAYER,
                    Compression::Gzip => media::DOCKER_LAYER_GZIP,
                    Compression::Zstd => media::OCI_LAYER_ZSTD,
                };
                // A blobs/sha256/<hex> name promises a digest; check it.
                let expected = name
                    .strip_prefix("blobs/sha256/")
                    .and_then(|h| Digest::from_hex(h).ok())
                    .map(|d| (d, index.size(&name).unwrap_or(0)));
                layers.push((name, mt.to_string(), expected));
            }
            if layers.len() != diff_ids.len() {
                return Err(ImageError::invalid(
                    &config_name,
                    format!(
                        "manifest.json lists {} layers but the config lists {} diff_ids",
                        layers.len(),
                        diff_ids.len()
                    ),
                ));
            }
            plans.push(Plan {
                manifest: vec![],
                manifest_media_type: media::DOCKER_MANIFEST.to_string(),
                config,
                config_media_type: media::DOCKER_CONFIG.to_string(),
                layers,
                diff_ids,
                tags,
                synthesise_manifest: true,
            });
        }
        if plans.is_empty() {
            return Err(ImageError::invalid(what, "lists no images"));
        }
        Ok(plans)
    }

    fn ingest_plans(
        &self,
        index: &Index,
        plans: Vec<Plan>,
        created: &Created,
        events: &(dyn Fn(LoadEvent) + Sync),
    ) -> Result<Vec<Loaded>, ImageError> {
        // Every distinct layer once, all in parallel (bounded by the CPU count).
        struct Job {
            entry: String,
            expected: Option<(Digest, u64)>,
            diff_id: Digest,
            chain: Digest,
        }
        let mut jobs: Vec<Job> = Vec::new();
        let mut seen = HashSet::new();
        for p in &plans {
            let chains = chain_ids(&p.diff_ids);
            for (i, (entry, _, expected)) in p.layers.iter().enumerate() {
                if seen.insert((entry.clone(), chains[i].clone())) {
                    jobs.push(Job {
                        entry: entry.clone(),
                        expected: expected.clone(),
                        diff_id: p.diff_ids[i].clone(),
                        chain: chains[i].clone(),
                    });
                }
            }
        }
        let results: Mutex<HashMap<(String, Digest), LayerResult>> = Mutex::new(HashMap::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(jobs.len())
            .max(1);
        let failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        if failed.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let shown = job
                            .expected
                            .as_ref()
                            .map(|(d, _)| d.to_string())
                            .unwrap_or_else(|| job.entry.clone());
                        let size = index.size(&job.entry).unwrap_or(0);
                        let cached = self.snapshots.exists(&job.chain)
                            && job
                                .expected
                                .as_ref()
                                .is_some_and(|(d, _)| self.content.contains(d));
                        events(LoadEvent::LayerStart {
                            layer: shown.clone(),
                            size,
                        });
                        let r = if cached {
                            let (d, s) = job.expected.clone().expect("cached has digest");
                            Ok((d, s, 0))
                        } else {
                            index.reader(&job.entry).and_then(|rd| {
                                let rd = Counting {
                                    inner: rd,
                                    done: 0,
                                    reported: 0,
                                    report: &|done| {
                                        events(LoadEvent::LayerProgress {
                                            layer: shown.clone(),
                                            done,
                                        })
                                    },
                                };
                                self.ingest_layer(
                                    rd,
                                    &shown,
                                    job.expected.as_ref().map(|(d, s)| (d, *s)),
                                    &job.diff_id,
                                    &job.chain,
                                    created,
                                )
                            })
                        };
                        if r.is_err() {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            events(LoadEvent::LayerDone {
                                layer: shown,
                                cached,
                            });
                        }
                        results
                            .lock()
                            .expect("lock")
                            .insert((job.entry.clone(), job.chain.clone()), r);
                    }
                });
            }
        });
        let mut results = results.into_inner().expect("lock");
        // Report the first failure in archive order.
        for job in &jobs {
            if let Some(Err(_)) = results.get(&(job.entry.clone(), job.chain.clone())) {
                let Some(Err(e)) = results.remove(&(job.entry.clone(), job.chain.clone())) else {
                    unreachable!()
                };
                return Err(e);
            }
        }
        let mut loaded = Vec::new();
        for p in plans {
            let chains = chain_ids(&p.diff_ids);
            let mut layers = Vec::new();
            for (i, (entry, mt, _)) in p.layers.iter().enumerate() {
                let Some(Ok((digest, size, unpacked))) =
                    results.get(&(entry.clone(), chains[i].clone()))
                else {
                    return Err(ImageError::invalid(entry, "layer was not processed"));
                };
                layers.push(NewLayer {
                    record: LayerRecord {
                        digest: digest.clone(),
                        size: *size,
                        media_type: mt.clone(),
                        diff_id: p.diff_ids[i].clone(),
                        chain_id: chains[i].clone(),
                    },
                    unpacked: *unpacked,
                });
            }
            let manifest = if p.synthesise_manifest {
                docker_manifest(&p.config, &layers)
            } else {
                p.manifest
            };
            let image = self.commit_image(
                &manifest,
                &p.manifest_media_type,
                &p.config,
                &p.config_media_type,
                &layers,
                &p.tags,
            )?;
            loaded.push(Loaded {
                image,
                tags: p.tags,
            });
        }
        Ok(loaded)
    }

    /// `save -o PATH NAME...`: writes the images into one archive. The archive
    /// appears at `out` only when complete.
    pub fn save(&self, names: &[String], out: &Path, format: Format) -> Result<(), ImageError> {
        if names.is_empty() {
            return Err(ImageError::invalid("save", "no image given"));
        }
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".berth-save-")
            .tempfile_in(dir)
            .map_err(io_at(dir))?;
        self.write_archive(names, tmp.as_file(), format)?;
        tmp.as_file().sync_data().map_err(io_at(tmp.path()))?;
        tmp.persist(out).map_err(|e| ImageError::Io {
            path: out.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Writes an archive of `names` to any writer (e.g. stdout).
    pub fn write_archive(
        &self,
        names: &[String],
        w: impl Write,
        format: Format,
    ) -> Result<(), ImageError> {
        // Resolve everything first so a bad name fails before any byte is written.
        let mut images: Vec<(ImageRecord, Option<Reference>)> = Vec::new();
        for n in names {
            let img = self.resolve(n)?;
            let r = Reference::parse(n).ok().filter(|r| {
                r.digest().is_none()
                    && self
                        .tags_of(&img.id)
                        .is_ok_and(|t| t.contains(&r.to_string()))
            });
            images.push((img, r));
        }
        let mut b = tar::Builder::new(BufWriter::with_capacity(BUF, w));
        let mut written = HashSet::new();
        let put_bytes =
            |b: &mut tar::Builder<_>, name: &str, data: &[u8]| -> Result<(), ImageError> {
                let mut h = tar_header(data.len() as u64);
                b.append_data(&mut h, name, data).map_err(io_at(name))
            };
        let put_blob = |b: &mut tar::Builder<_>,
                        written: &mut HashSet<Digest>,
                        d: &Digest|
         -> Result<(), ImageError> {
            if !written.insert(d.clone()) {
                return Ok(());
            }
            let f = self.content.open_blob(d)?;
            let size = f.metadata().map_err(io_at(self.content.path(d)))?.len();
            let mut h = tar_header(size);
            b.append_data(
                &mut h,
                format!("blobs/sha256/{}", d.hex()),
                BufReader::with_capacity(BUF, f),
            )
            .map_err(io_at(self.content.path(d)))
        };
        let mut docker_items = Vec::new();
        let mut oci_descs = Vec::new();
        for (img, r) in &images {
            let tags: Vec<String> = match r {
                Some(r) => vec![r.to_string()],
                // Saved by ID: no names, as Docker does.
                None => vec![],
            };
            put_blob(&mut b, &mut written, &img.id)?;
            for l in &img.layers {
                put_blob(&mut b, &mut written, &l.digest)?;
            }
            match format {
                Format::Docker => {
                    docker_items.push(json!({
                        "Config": format!("blobs/sha256/{}", img.id.hex()),
                        "RepoTags": tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
                        "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
                    }));
                }
                Format::Oci => {
                    let manifest = self.oci_manifest(img)?;
                    let md = Digest::of(&manifest);
                    if written.insert(md.clone()) {
                        put_bytes(&mut b, &format!("blobs/sha256/{}", md.hex()), &manifest)?;
                    }
                    let desc = |ann: Value| {
                        json!({
                            "mediaType": media::OCI_MANIFEST,
                            "digest": md,
                            "size": manifest.len(),
                            "annotations": ann,
                        })
                    };
                    if tags.is_empty() {
                        oci_descs.push(desc(json!({})));
                    }
                    for t in &tags {
                        let tag = Reference::parse(t)
                            .ok()
                            .and_then(|r| r.tag().map(str::to_string));
                        oci_descs.push(desc(json!({
                            "io.containerd.image.name": t,
                            "org.opencontainers.image.ref.name": tag.unwrap_or_default(),
                        })));
                    }
                }
            }
        }
        match format {
            Format::Docker => {
                let m = serde_json::to_vec(&docker_items).expect("json");
                put_bytes(&mut b, "manifest.json", &m)?;
                let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
                for (img, _) in &images {
                    for t in self.tags_of(&img.id)? {
                        if let Ok(r) = Reference::parse(&t)
                            && let (Some(tag), Some(top)) = (r.tag(), img.layers.last())
                        {
                            repos
                                .entry(r.familiar_repository())
                                .or_default()
                                .insert(tag.to_string(), top.chain_id.hex().to_string());
                        }
                    }
                }
                put_bytes(
                    &mut b,
                    "repositories",
                    &serde_json::to_vec(&repos).expect("json"),
                )?;
            }
            Format::Oci => {
                put_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
                let idx = json!({
                    "schemaVersion": 2,
                    "mediaType": media::OCI_INDEX,
                    "manifests": oci_descs,
                });
                put_bytes(
                    &mut b,
                    "index.json",
                    &serde_json::to_vec(&idx).expect("json"),
                )?;
            }
        }
        let mut w = b.into_inner().map_err(io_at("archive"))?;
        w.flush().map_err(io_at("archive"))?;
        Ok(())
    }

    /// The image's manifest as an OCI manifest: the stored bytes when they are
    /// one (so its digest survives), else a conversion of the Docker manifest.
    fn oci_manifest(&self, img: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        let bytes = self.manifest_bytes(img)?;
        if img.manifest_media_type == media::OCI_MANIFEST {
            return Ok(bytes);
        }
        let config = self.content.size(&img.id)?;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": { "mediaType": media::OCI_CONFIG, "digest": img.id, "size": config },
            "layers": img.layers.iter().map(|l| json!({
                "mediaType": media::layer_to_oci(&l.media_type),
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        });
        Ok(serde_json::to_vec(&m).expect("json"))
    }
}

/// Reports how many bytes went through, about every MiB.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    report: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 1 << 20 || (n == 0 && self.done > self.reported) {
            self.reported = self.done;
            (self.report)(self.done);
        }
        Ok(n)
    }
}

fn docker_manifest(config: &[u8], layers: &[NewLayer]) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": {
            "mediaType": media::DOCKER_CONFIG,
            "size": config.len(),
            "digest": Digest::of(config),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": media::layer_to_docker(&l.record.media_type),
            "size": l.record.size,
            "digest": l.record.digest,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).expect("json")
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}
