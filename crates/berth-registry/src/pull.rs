//! Pull: manifest (and index) resolution, then every missing layer streamed
//! from the registry into the content store and its snapshot at once.
//!
//! Each layer has a download task on the runtime and an unpacking thread;
//! between them a bounded channel, read through [`ChannelReader`], so the
//! layer is hashed, decompressed and unpacked while it arrives and never
//! lands in a temporary file. At most `max-concurrent-downloads` layers are
//! in flight. Nothing is kept unless every layer verified ([`Ingest`]).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_image::media;
use berth_image::snapshot::chain_ids;
use berth_image::{Digest, ImageRecord, ImageStore, Ingest, IngestedLayer, Reference};
use bytes::{Buf, Bytes};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::auth::repository_scope;
use crate::transport::Endpoint;
use crate::{ACCEPT, Client, Event, MAX_CONFIG, MAX_MANIFEST, Platform, RegistryError};
use crate::{RemoteManifest, Sources};

/// What a pull did.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The reference pulled (normalised).
    pub reference: Reference,
    /// The stored image manifest's digest (for a multi-platform image, the
    /// chosen platform's manifest: the one the store records, so
    /// `NAME@DIGEST` finds the image and RepoDigests shows it).
    pub digest: Digest,
    /// The index the reference named, for a multi-platform image.
    pub index: Option<Digest>,
    /// The image now in the store.
    pub image: ImageRecord,
    /// True when nothing had to be fetched or changed.
    pub up_to_date: bool,
    /// Blob bytes downloaded.
    pub downloaded: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// A descriptor, leniently parsed (Docker and OCI spell it the same).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct PlatformJson {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IndexJson {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ManifestJson {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

impl Descriptor {
    pub(crate) fn digest(&self, what: &str) -> Result<Digest, RegistryError> {
        Digest::parse(&self.digest).map_err(|e| RegistryError::invalid(what, e.to_string()))
    }
}

/// Parses a manifest, refusing what berth cannot store.
pub(crate) fn parse_manifest(bytes: &[u8], what: &str) -> Result<ManifestJson, RegistryError> {
    let m: ManifestJson = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::invalid(what, format!("malformed manifest JSON: {e}")))?;
    if m.schema_version != 2 {
        return Err(RegistryError::invalid(
            what,
            format!(
                "schema version {} manifests are not supported",
                m.schema_version
            ),
        ));
    }
    Ok(m)
}

/// The media type of a manifest document: its own `mediaType`, else the
/// Content-Type it was served with, else what its shape says.
fn media_type_of(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<String, RegistryError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::invalid(what, format!("malformed manifest JSON: {e}")))?;
    if !v.is_object() {
        return Err(RegistryError::invalid(
            what,
            "malformed manifest JSON: not an object",
        ));
    }
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Err(RegistryError::invalid(
            what,
            "Docker schema 1 manifests are not supported",
        ));
    }
    let mt = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or_else(|| {
            content_type
                .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
                .filter(|c| media::is_index(c) || media::is_manifest(c))
        })
        .unwrap_or_else(|| {
            if v.get("manifests").is_some() {
                media::OCI_INDEX.to_string()
            } else {
                media::OCI_MANIFEST.to_string()
            }
        });
    if !media::is_index(&mt) && !media::is_manifest(&mt) {
        return Err(RegistryError::invalid(
            what,
            format!("unsupported manifest media type \"{mt}\""),
        ));
    }
    Ok(mt)
}

/// GETs the manifest `reference` names (or `by_digest` in its repository),
/// capped at [`MAX_MANIFEST`] and, when asked for by digest, verified.
pub(crate) async fn fetch_manifest(
    ep: &Endpoint,
    reference: &Reference,
    by_digest: Option<&Digest>,
) -> Result<RemoteManifest, RegistryError> {
    let repo = reference.path();
    let want = by_digest.or(reference.digest());
    let ref_part = match want {
        Some(d) => d.to_string(),
        None => reference.tag().unwrap_or("latest").to_string(),
    };
    let what = match by_digest {
        Some(d) => format!("manifest {d} of {}", reference.repository()),
        None => format!("manifest for {reference}"),
    };
    let url = ep.url(&format!("v2/{repo}/manifests/{ref_part}"));
    let (bytes, headers) = ep
        .get_small(
            &[repository_scope(repo, false)],
            url,
            Some(ACCEPT),
            MAX_MANIFEST,
            &what,
        )
        .await?;
    let digest = Digest::of(&bytes);
    if let Some(d) = want
        && &digest != d
    {
        return Err(RegistryError::invalid(
            &what,
            format!("content does not match its digest (got {digest})"),
        ));
    }
    let ct = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let media_type = media_type_of(&bytes, ct, &what)?;
    Ok(RemoteManifest {
        bytes,
        media_type,
        digest,
    })
}

/// Every tag of a repository, following `Link: <…>; rel="next"` pages.
pub(crate) async fn list_tags(
    ep: &Endpoint,
    reference: &Reference,
) -> Result<Vec<String>, RegistryError> {
    #[derive(Deserialize)]
    struct Tags {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    let repo = reference.path();
    let what = format!("tags of {}", reference.repository());
    let mut url = ep.url(&format!("v2/{repo}/tags/list"));
    let mut out = Vec::new();
    for _ in 0..1000 {
        let (body, headers) = ep
            .get_small(
                &[repository_scope(repo, false)],
                url.clone(),
                None,
                MAX_MANIFEST,
                &what,
            )
            .await?;
        let t: Tags = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::invalid(&what, format!("malformed answer: {e}")))?;
        out.extend(t.tags.unwrap_or_default());
        let next = headers
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        match next {
            Some(n) => url = ep.url(&n),
            None => return Ok(out),
        }
    }
    Ok(out)
}

/// The target of a `Link: </v2/…?last=x>; rel="next"` header.
fn next_link(h: &str) -> Option<String> {
    h.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Chooses the manifest for `platform` from an index.
fn select_from_index(
    index: &RemoteManifest,
    platform: &Platform,
    what: &str,
) -> Result<Descriptor, RegistryError> {
    let idx: IndexJson = serde_json::from_slice(&index.bytes)
        .map_err(|e| RegistryError::invalid(what, format!("malformed index JSON: {e}")))?;
    let usable: Vec<&Descriptor> = idx
        .manifests
        .iter()
        .filter(|d| {
            d.platform.is_some() && (d.media_type.is_empty() || media::is_manifest(&d.media_type))
        })
        .collect();
    let pick = platform.select(usable.iter().map(|d| {
        let p = d.platform.as_ref().expect("filtered");
        (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref())
    }));
    match pick {
        Some(i) => Ok(usable[i].clone()),
        None => {
            let have: Vec<String> = usable
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref()).to_string())
                .collect();
            Err(RegistryError::invalid(
                what,
                format!(
                    "no image for platform {platform} (the index has: {})",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            ))
        }
    }
}

/// Reads a layer from the download task's channel, reporting progress.
struct ChannelReader<'a> {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
    done: u64,
    reported: u64,
    report: &'a dyn Fn(u64),
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        self.done += n as u64;
        if self.done - self.reported >= 512 << 10 {
            self.reported = self.done;
            (self.report)(self.done);
        }
        Ok(n)
    }
}

/// One layer to fetch.
struct Job {
    index: usize,
    digest: Digest,
    size: u64,
    media_type: String,
    diff_id: Digest,
    chain: Digest,
}

impl Client {
    /// `pull`: fetches `reference` (choosing `platform` from an index) into
    /// `store`, tags it (when pulled by tag) and records where its blobs
    /// came from in `sources`. On any failure nothing is stored.
    pub fn pull(
        &self,
        store: &ImageStore,
        sources: &Sources,
        reference: &Reference,
        platform: &Platform,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Pulled, RegistryError> {
        let start = Instant::now();
        let ep = self.endpoint(reference.domain())?;
        let repo = reference.path();
        let top = self.rt.block_on(fetch_manifest(&ep, reference, None))?;
        let shown = reference.to_string();
        let manifest = if media::is_index(&top.media_type) {
            let d = select_from_index(&top, platform, &format!("index for {shown}"))?;
            let digest = d.digest(&shown)?;
            let m = self
                .rt
                .block_on(fetch_manifest(&ep, reference, Some(&digest)))?;
            if !media::is_manifest(&m.media_type) {
                return Err(RegistryError::invalid(
                    format!("manifest {digest} of {shown}"),
                    format!("is a {}, not an image manifest", m.media_type),
                ));
            }
            m
        } else {
            top.clone()
        };
        let what = format!("manifest {} of {shown}", manifest.digest);
        let m = parse_manifest(&manifest.bytes, &what)?;
        events(Event::Resolved {
            reference: shown.clone(),
            digest: top.digest.clone(),
            layers: m.layers.len(),
        });
        if let Ok(img) = store.resolve(&shown)
            && img.manifest == manifest.digest
            && img.layers.iter().all(|l| {
                store.content().contains(&l.digest) && store.snapshots().exists(&l.chain_id)
            })
        {
            for l in &img.layers {
                events(Event::LayerExists {
                    digest: l.digest.clone(),
                });
            }
            let elapsed = start.elapsed();
            events(Event::Done {
                digest: manifest.digest.clone(),
                size: 0,
                elapsed,
            });
            return Ok(Pulled {
                reference: reference.clone(),
                index: (top.digest != manifest.digest).then_some(top.digest),
                digest: manifest.digest,
                image: img,
                up_to_date: true,
                downloaded: 0,
                elapsed,
            });
        }

        // The config: from the store when there, else fetched and verified.
        let cfg_mt = m.config.media_type.clone();
        if !media::is_config(&cfg_mt) {
            return Err(RegistryError::invalid(
                &what,
                format!("config has unsupported media type \"{cfg_mt}\""),
            ));
        }
        let cfg_digest = m.config.digest(&what)?;
        let mut downloaded = 0u64;
        let config = match store.content().read_verified(&cfg_digest) {
            Ok(b) => b,
            Err(_) => {
                if m.config.size > MAX_CONFIG {
                    return Err(RegistryError::invalid(
                        format!("config {cfg_digest}"),
                        format!(
                            "is {} bytes, larger than the {MAX_CONFIG}-byte limit",
                            m.config.size
                        ),
                    ));
                }
                let cwhat = format!("config {cfg_digest}");
                let url = ep.url(&format!("v2/{repo}/blobs/{cfg_digest}"));
                let (b, _) = self.rt.block_on(ep.get_small(
                    &[repository_scope(repo, false)],
                    url,
                    None,
                    MAX_CONFIG,
                    &cwhat,
                ))?;
                let actual = Digest::of(&b);
                if actual != cfg_digest {
                    return Err(RegistryError::Image(
                        berth_image::content::ContentError::DigestMismatch {
                            expected: cfg_digest.clone(),
                            actual,
                        }
                        .into(),
                    ));
                }
                downloaded += b.len() as u64;
                b
            }
        };
        let diff_ids = diff_ids(&config, &cfg_digest)?;
        if diff_ids.len() != m.layers.len() {
            return Err(RegistryError::invalid(
                &what,
                format!(
                    "has {} layers but its config {cfg_digest} lists {} diff_ids",
                    m.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let chains = chain_ids(&diff_ids);

        let ingest = store.ingest()?;
        let mut layers: Vec<Option<IngestedLayer>> = vec![None; m.layers.len()];
        let mut jobs = Vec::new();
        for (i, l) in m.layers.iter().enumerate() {
            let d = l.digest(&what)?;
            if !media::is_layer(&l.media_type) {
                return Err(RegistryError::invalid(
                    format!("layer {d} of {shown}"),
                    format!("unsupported media type \"{}\"", l.media_type),
                ));
            }
            if ingest.has_layer(&d, &chains[i]) {
                events(Event::LayerExists { digest: d.clone() });
                layers[i] = Some(ingest.existing_layer(
                    (&d, l.size),
                    &l.media_type,
                    &diff_ids[i],
                    &chains[i],
                ));
            } else {
                jobs.push(Job {
                    index: i,
                    digest: d,
                    size: l.size,
                    media_type: l.media_type.clone(),
                    diff_id: diff_ids[i].clone(),
                    chain: chains[i].clone(),
                });
            }
        }
        let results = self.fetch_layers(&ep, repo, &ingest, &jobs, events);
        for (job, r) in jobs.iter().zip(results) {
            let l = r?;
            downloaded += job.size;
            layers[job.index] = Some(l);
        }
        let layers: Vec<IngestedLayer> = layers
            .into_iter()
            .map(|l| l.expect("every layer"))
            .collect();
        let tags: Vec<Reference> = if reference.digest().is_none() {
            vec![reference.clone()]
        } else {
            vec![]
        };
        let image = ingest.commit(
            &manifest.bytes,
            &manifest.media_type,
            &config,
            &cfg_mt,
            &layers,
            &tags,
        )?;
        let mut blobs: Vec<Digest> = layers.iter().map(|l| l.record.digest.clone()).collect();
        blobs.push(cfg_digest);
        sources.record(&reference.repository(), &blobs);
        let elapsed = start.elapsed();
        events(Event::Done {
            digest: manifest.digest.clone(),
            size: downloaded,
            elapsed,
        });
        Ok(Pulled {
            reference: reference.clone(),
            index: (top.digest != manifest.digest).then_some(top.digest),
            digest: manifest.digest,
            image,
            up_to_date: false,
            downloaded,
            elapsed,
        })
    }

    /// Downloads and unpacks `jobs`, `max-concurrent-downloads` at a time.
    /// Results come back in job order; after a failure no new layer starts.
    fn fetch_layers(
        &self,
        ep: &Arc<Endpoint>,
        repo: &str,
        ingest: &Ingest,
        jobs: &[Job],
        events: &(dyn Fn(Event) + Sync),
    ) -> Vec<Result<IngestedLayer, RegistryError>> {
        let results: Mutex<Vec<Option<Result<IngestedLayer, RegistryError>>>> =
            Mutex::new((0..jobs.len()).map(|_| None).collect());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let workers = self.config.max_concurrent_downloads.min(jobs.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let r = self.fetch_layer(ep, repo, ingest, job, events);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        results.lock().expect("lock")[i] = Some(r);
                    }
                });
            }
        });
        results
            .into_inner()
            .expect("lock")
            .into_iter()
            .zip(jobs)
            .map(|(r, j)| {
                r.unwrap_or_else(|| {
                    Err(RegistryError::invalid(
                        format!("layer {}", j.digest),
                        "not fetched: another layer failed",
                    ))
                })
            })
            .collect()
    }

    fn fetch_layer(
        &self,
        ep: &Arc<Endpoint>,
        repo: &str,
        ingest: &Ingest,
        job: &Job,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<IngestedLayer, RegistryError> {
        events(Event::LayerStart {
            digest: job.digest.clone(),
            size: job.size,
        });
        // 64 chunks (hyper's are up to a few hundred KiB) in flight at most.
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(64);
        let dl = {
            let ep = ep.clone();
            let repo = repo.to_string();
            let digest = job.digest.clone();
            let size = job.size;
            self.rt
                .spawn(async move { ep.download(&repo, &digest, size, &tx).await })
        };
        let report = |done| {
            events(Event::LayerProgress {
                digest: job.digest.clone(),
                done,
                total: job.size,
            })
        };
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            done: 0,
            reported: 0,
            report: &report,
        };
        let unpacked = ingest.layer(
            reader,
            (&job.digest, job.size),
            &job.media_type,
            &job.diff_id,
            &job.chain,
        );
        let downloaded = self.rt.block_on(dl).unwrap_or_else(|e| {
            Err(RegistryError::registry(
                &ep.domain,
                format!("download of {} failed: {e}", job.digest),
            ))
        });
        // A download error explains an unpacking error that followed it;
        // a download that stopped because unpacking failed returns Ok.
        downloaded?;
        let l = unpacked?;
        report(job.size);
        events(Event::LayerVerified {
            digest: job.digest.clone(),
        });
        events(Event::LayerUnpacked {
            digest: job.digest.clone(),
        });
        Ok(l)
    }
}

/// The `rootfs.diff_ids` of an image config.
fn diff_ids(config: &[u8], digest: &Digest) -> Result<Vec<Digest>, RegistryError> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Cfg {
        rootfs: RootFs,
    }
    let what = format!("config {digest}");
    let c: Cfg = serde_json::from_slice(config)
        .map_err(|e| RegistryError::invalid(&what, format!("malformed image config: {e}")))?;
    c.rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| RegistryError::invalid(&what, e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(media_type_of(oci, None, "x").unwrap(), media::OCI_MANIFEST);
        let bare = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            media_type_of(
                bare,
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
                "x"
            )
            .unwrap(),
            media::DOCKER_MANIFEST
        );
        assert_eq!(media_type_of(bare, None, "x").unwrap(), media::OCI_MANIFEST);
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            media_type_of(idx, Some("text/plain"), "x").unwrap(),
            media::OCI_INDEX
        );
        let e = media_type_of(b"{nope", None, "manifest for r")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("manifest for r") && e.contains("malformed"),
            "{e}"
        );
        assert!(media_type_of(br#"{"schemaVersion":1}"#, None, "x").is_err());
        assert!(media_type_of(br#"{"mediaType":"text/html"}"#, None, "x").is_err());
        assert!(media_type_of(b"[1]", None, "x").is_err());
    }

    #[test]
    fn index_selection() {
        let bytes = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,"platform":{"os":"unknown","architecture":"unknown"}}
        ]}"#;
        let idx = RemoteManifest {
            bytes: bytes.to_vec(),
            media_type: media::OCI_INDEX.into(),
            digest: Digest::of(bytes),
        };
        let pick = |p: &str| select_from_index(&idx, &Platform::parse(p).unwrap(), "idx");
        assert!(
            pick("linux/amd64")
                .unwrap()
                .digest
                .starts_with("sha256:2222")
        );
        assert!(
            pick("linux/arm64")
                .unwrap()
                .digest
                .starts_with("sha256:1111")
        );
        let e = pick("linux/s390x").unwrap_err().to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/arm64/v8, linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn manifests_and_configs() {
        assert!(parse_manifest(b"{}", "m").is_err());
        let m = parse_manifest(
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3},"layers":[]}"#,
            "m",
        )
        .unwrap();
        assert_eq!(m.config.size, 3);
        let d = Digest::of(b"c");
        let ids = diff_ids(
            br#"{"rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}}"#,
            &d,
        )
        .unwrap();
        assert_eq!(ids.len(), 1);
        let e = diff_ids(b"{}", &d).unwrap_err().to_string();
        assert!(e.contains(d.as_str()), "{e}");
    }

    #[test]
    fn links() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn channel_reader_passes_errors_on() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        drop(tx);
        let report = |_| {};
        let mut r = ChannelReader {
            rx,
            cur: Bytes::new(),
            done: 0,
            reported: 0,
            report: &report,
        };
        let mut buf = [0u8; 2];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(r.read(&mut buf).unwrap(), 1);
        assert_eq!(r.read(&mut buf).unwrap_err().to_string(), "cut");
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
