//! Push: every blob the registry lacks (checked with HEAD; mounted from
//! another repository of the same registry when berth knows one), then the
//! manifest, byte for byte as the store keeps it, so its digest survives.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_image::{Digest, ImageStore, Reference};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};

use crate::auth::repository_scope;
use crate::pull::parse_manifest;
use crate::transport::{Endpoint, MAX_RETRIES, backoff};
use crate::{Client, Event, RegistryError, Sources};

/// When a blob goes up in one PUT and when in chunks.
#[derive(Clone, Copy, Debug)]
pub struct UploadPolicy {
    /// Blobs up to this size are uploaded with one `PUT ?digest=`.
    pub monolithic_max: u64,
    /// Larger ones go in `PATCH` requests of this many bytes.
    pub chunk_size: u64,
}

impl Default for UploadPolicy {
    fn default() -> Self {
        UploadPolicy {
            monolithic_max: 32 << 20,
            chunk_size: 16 << 20,
        }
    }
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// The reference pushed.
    pub reference: Reference,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// How one blob got there.
enum Outcome {
    Exists,
    Mounted(String),
    Pushed,
}

impl Client {
    /// `push`: uploads the image `reference` names from `store`.
    pub fn push(
        &self,
        store: &ImageStore,
        sources: &Sources,
        reference: &Reference,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Pushed, RegistryError> {
        let start = Instant::now();
        let Some(tag) = reference.tag() else {
            return Err(RegistryError::invalid(
                reference,
                "push needs a tag, not a digest",
            ));
        };
        let shown = reference.to_string();
        let img = store.resolve(&shown).map_err(|e| match e {
            berth_image::ImageError::NotFound(_) => {
                RegistryError::NoLocalImage(reference.familiar())
            }
            e => e.into(),
        })?;
        let manifest = store.manifest_bytes(&img)?;
        let what = format!("manifest {} of {shown}", img.manifest);
        let m = parse_manifest(&manifest, &what)?;
        let mut blobs: Vec<(Digest, u64, bool)> = Vec::new();
        for l in &m.layers {
            blobs.push((l.digest(&what)?, l.size, true));
        }
        blobs.push((m.config.digest(&what)?, m.config.size, false));
        let ep = self.endpoint(reference.domain())?;
        let repo = reference.path();

        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let errors: Mutex<Vec<(usize, RegistryError)>> = Mutex::new(Vec::new());
        let workers = self.config.max_concurrent_uploads.min(blobs.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((d, size, is_layer)) = blobs.get(i) else {
                            break;
                        };
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let quiet = |_: Event| {};
                        let ev: &(dyn Fn(Event) + Sync) = if *is_layer { events } else { &quiet };
                        match self.push_blob(&ep, store, sources, repo, d, *size, ev) {
                            Ok(Outcome::Exists) => ev(Event::LayerExists { digest: d.clone() }),
                            Ok(Outcome::Mounted(from)) => ev(Event::LayerMounted {
                                digest: d.clone(),
                                from,
                            }),
                            Ok(Outcome::Pushed) => ev(Event::LayerPushed {
                                digest: d.clone(),
                                size: *size,
                            }),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                errors.lock().expect("lock").push((i, e));
                            }
                        }
                    }
                });
            }
        });
        let mut errors = errors.into_inner().expect("lock");
        errors.sort_by_key(|(i, _)| *i);
        if let Some((_, e)) = errors.into_iter().next() {
            return Err(e);
        }

        let mwhat = format!("PUT manifest {shown}");
        let url = ep.url(&format!("v2/{repo}/manifests/{tag}"));
        let body = Bytes::from(manifest);
        let scopes = [repository_scope(repo, true)];
        let mt = img.manifest_media_type.clone();
        let resp = self.rt.block_on(ep.send(&scopes, true, &mwhat, |c| {
            c.put(url.clone())
                .header(CONTENT_TYPE, &mt)
                .body(body.clone())
        }))?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.rt.block_on(ep.status_error(resp, &mwhat)));
        }
        let digest = Digest::of(&body);
        if let Some(theirs) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && theirs != digest.as_str()
        {
            return Err(RegistryError::registry(
                &ep.domain,
                format!("{mwhat}: the registry stored it as {theirs}, not {digest}"),
            ));
        }
        let all: Vec<Digest> = blobs.iter().map(|(d, _, _)| d.clone()).collect();
        sources.record(&reference.repository(), &all);
        let elapsed = start.elapsed();
        events(Event::Done {
            digest: digest.clone(),
            size: body.len() as u64,
            elapsed,
        });
        Ok(Pushed {
            reference: reference.clone(),
            digest,
            size: body.len() as u64,
            elapsed,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn push_blob(
        &self,
        ep: &Endpoint,
        store: &ImageStore,
        sources: &Sources,
        repo: &str,
        digest: &Digest,
        size: u64,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Outcome, RegistryError> {
        let scopes = [repository_scope(repo, true)];
        let what = format!("blob {digest}");
        let blob_url = ep.url(&format!("v2/{repo}/blobs/{digest}"));
        let resp = self
            .rt
            .block_on(ep.send(&scopes, true, &what, |c| c.head(blob_url.clone())))?;
        if resp.status().is_success() {
            return Ok(Outcome::Exists);
        }
        if resp.status() != StatusCode::NOT_FOUND {
            return Err(self
                .rt
                .block_on(ep.status_error(resp, &format!("HEAD {what}"))));
        }
        // Local blob first: a push of something the store lacks fails here,
        // not halfway through an upload.
        let file_size = store.content().size(digest)?;
        if file_size != size {
            return Err(RegistryError::invalid(
                &what,
                format!("is {file_size} bytes in the store but the manifest says {size}"),
            ));
        }
        // A mount from a repository of the same registry that has it.
        let prefix = format!("{}/", ep.domain);
        let mut location = None;
        for from in sources
            .repositories(digest)
            .iter()
            .filter_map(|r| r.strip_prefix(&prefix))
            .filter(|from| *from != repo)
            .take(2)
        {
            let mscopes = [repository_scope(repo, true), repository_scope(from, false)];
            let mut url = ep.url(&format!("v2/{repo}/blobs/uploads/"));
            url.query_pairs_mut()
                .append_pair("mount", digest.as_str())
                .append_pair("from", from);
            let mwhat = format!("mount of {digest} from {from}");
            let resp = self.rt.block_on(ep.send(&mscopes, false, &mwhat, |c| {
                c.post(url.clone()).header(CONTENT_LENGTH, "0")
            }))?;
            match resp.status() {
                StatusCode::CREATED => return Ok(Outcome::Mounted(from.to_string())),
                // Not mounted, but an upload session was opened: use it.
                StatusCode::ACCEPTED => {
                    location = Some(ep.location(&resp, &mwhat)?);
                    break;
                }
                _ => {}
            }
        }
        events(Event::LayerStart {
            digest: digest.clone(),
            size,
        });
        let mut attempt = 0;
        loop {
            match self.upload(ep, store, repo, digest, size, location.take(), events) {
                Ok(()) => return Ok(Outcome::Pushed),
                Err(RegistryError::Registry { .. }) if attempt < MAX_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One upload session: POST, then one PUT with the body, or PATCHes
    /// with `Content-Range` and a closing PUT.
    #[allow(clippy::too_many_arguments)]
    fn upload(
        &self,
        ep: &Endpoint,
        store: &ImageStore,
        repo: &str,
        digest: &Digest,
        size: u64,
        location: Option<reqwest::Url>,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<(), RegistryError> {
        let scopes = [repository_scope(repo, true)];
        let what = format!("upload of {digest}");
        let mut loc = match location {
            Some(l) => l,
            None => {
                let url = ep.url(&format!("v2/{repo}/blobs/uploads/"));
                let resp = self.rt.block_on(ep.send(&scopes, false, &what, |c| {
                    c.post(url.clone()).header(CONTENT_LENGTH, "0")
                }))?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.rt.block_on(ep.status_error(resp, &what)));
                }
                ep.location(&resp, &what)?
            }
        };
        let io_err = |e: std::io::Error| {
            RegistryError::Image(
                berth_image::content::ContentError::Io {
                    what: digest.to_string(),
                    source: e,
                }
                .into(),
            )
        };
        let mut file = store.content().open_blob(digest)?;
        let with_digest = |mut u: reqwest::Url| {
            u.query_pairs_mut().append_pair("digest", digest.as_str());
            u
        };
        let policy = self.upload;
        if size <= policy.monolithic_max {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).map_err(io_err)?;
            let body = Bytes::from(buf);
            let url = with_digest(loc);
            let resp = self
                .rt
                .block_on(ep.send_body(&scopes, &what, body.len() as u64, |c| {
                    c.put(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                }))?;
            if resp.status() != StatusCode::CREATED {
                return Err(self.rt.block_on(ep.status_error(resp, &what)));
            }
            return Ok(());
        }
        let chunk = policy.chunk_size.max(1);
        let mut offset = 0u64;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        while offset < size {
            let n = chunk.min(size - offset);
            let mut buf = vec![0u8; n as usize];
            file.read_exact(&mut buf).map_err(io_err)?;
            let body = Bytes::from(buf);
            let range = format!("{}-{}", offset, offset + n - 1);
            let url = loc.clone();
            let resp = self.rt.block_on(ep.send_body(&scopes, &what, n, |c| {
                c.patch(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, &range)
                    .body(body.clone())
            }))?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.rt.block_on(ep.status_error(resp, &what)));
            }
            loc = ep.location(&resp, &what)?;
            offset += n;
            events(Event::LayerProgress {
                digest: digest.clone(),
                done: offset,
                total: size,
            });
        }
        let url = with_digest(loc);
        let resp = self.rt.block_on(ep.send(&scopes, false, &what, |c| {
            c.put(url.clone()).header(CONTENT_LENGTH, "0")
        }))?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.rt.block_on(ep.status_error(resp, &what)));
        }
        Ok(())
    }
}
