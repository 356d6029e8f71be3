//! HTTP to one registry: TLS setup (system roots plus certs.d), choosing
//! HTTPS or (where allowed) plain HTTP, the authentication dance, retries
//! with backoff, and resumable blob downloads.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::Digest;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_RANGE, HeaderMap, RANGE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use crate::RegistryError;
use crate::auth::{Challenge, TokenCache, TokenResponse, parse_challenge, scope_key};
use crate::config::Config;
use crate::credentials::Credentials;

/// Retries after a 5xx answer or a dropped connection.
pub(crate) const MAX_RETRIES: u32 = 3;
/// First backoff; doubled for each retry.
const BACKOFF: Duration = Duration::from_millis(250);

pub(crate) fn backoff(attempt: u32) -> Duration {
    BACKOFF * 2u32.pow(attempt.saturating_sub(1).min(6))
}

/// The API host for a reference's domain (Docker Hub's differs).
pub(crate) fn api_host(domain: &str) -> &str {
    if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    }
}

/// One registry, reached and (lazily) authenticated.
pub(crate) struct Endpoint {
    /// The registry as references name it (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// `https://host/` or `http://host/`.
    pub base: Url,
    client: reqwest::Client,
    upload_client: reqwest::Client,
    creds: Option<Credentials>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<TokenCache>,
    timeout_secs: u64,
    config_path: PathBuf,
}

/// An error's message with its causes (reqwest's own message is terse).
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&m);
        }
        cur = c.source();
    }
    out
}

/// A TLS configuration for `domain`: the system's roots plus every `*.crt`
/// in `<certs-dir>/<domain>/`, a client certificate from a `*.cert` +
/// `*.key` pair there, and no verification at all for insecure registries.
fn tls_config(config: &Config, domain: &str) -> Result<rustls::ClientConfig, RegistryError> {
    let tls_err = |what: &Path, e: &dyn std::fmt::Display| {
        RegistryError::registry(domain, format!("TLS setup: {}: {e}", what.display()))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::registry(domain, format!("TLS setup: {e}")))?;
    let dir = config.certs_dir.join(domain);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let builder = if config.is_insecure(domain) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "crt"))
        {
            let certs = CertificateDer::pem_file_iter(f).map_err(|e| tls_err(f, &e))?;
            for c in certs {
                let c = c.map_err(|e| tls_err(f, &e))?;
                roots.add(c).map_err(|e| tls_err(f, &e))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let pair = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "cert"))
        .map(|c| (c.clone(), c.with_extension("key")))
        .find(|(_, k)| k.exists());
    Ok(match pair {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
                .map_err(|e| tls_err(&cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err(&cert, &e))?;
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| tls_err(&key, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(&cert, &e))?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The verifier for insecure registries: any certificate, but the handshake
/// signatures are still checked (as Go's `InsecureSkipVerify` does).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// HTTP clients for one registry: one for requests whose answer must keep
/// coming (a stalled read fails after the timeout), one for uploads, which
/// get a per-request deadline from their size instead: reqwest's read
/// timeout also runs while a request body is being sent.
pub(crate) fn clients_for(
    config: &Config,
    domain: &str,
) -> Result<(reqwest::Client, reqwest::Client), RegistryError> {
    let t = config.timeout();
    let tls = tls_config(config, domain)?;
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(t)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
    };
    let err = |e: reqwest::Error| {
        RegistryError::registry(domain, format!("HTTP client: {}", describe(&e)))
    };
    let reads = builder()
        .tls_backend_preconfigured(tls.clone())
        // Per read: a slow but moving download is fine, a stalled one is not.
        .read_timeout(t)
        .build()
        .map_err(err)?;
    let uploads = builder()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(err)?;
    Ok((reads, uploads))
}

/// The deadline for uploading `n` bytes: the timeout plus time for the
/// bytes at a (slow) 64 KiB/s.
pub(crate) fn upload_deadline(timeout: Duration, n: u64) -> Duration {
    timeout + Duration::from_secs(n / (64 << 10))
}

async fn ping(client: &reqwest::Client, base: &Url) -> Result<Response, reqwest::Error> {
    client
        .get(base.join("v2/").expect("static path"))
        .send()
        .await
}

fn challenge_of(resp: &Response) -> Option<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge)
}

/// Where a resumed download goes on from, given the answer to a request
/// for `bytes=offset-`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The body starts at `offset`, or `skip` bytes before it (discard those).
    Skip(u64),
}

/// Decides how to use a (possibly ranged) blob response. A server that
/// ignores the Range header answers 200 with the whole blob: the download
/// then restarts, discarding the bytes already had.
pub(crate) fn resume_action(
    offset: u64,
    status: StatusCode,
    content_range: Option<&str>,
) -> Result<Resume, String> {
    match status {
        StatusCode::OK => Ok(Resume::Skip(offset)),
        StatusCode::PARTIAL_CONTENT => {
            let start = content_range
                .and_then(|r| r.trim().strip_prefix("bytes "))
                .and_then(|r| r.split_once('-'))
                .and_then(|(s, _)| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    format!("206 answer without a usable Content-Range ({content_range:?})")
                })?;
            if start > offset {
                return Err(format!(
                    "asked for bytes from {offset} but the registry sent bytes from {start}"
                ));
            }
            Ok(Resume::Skip(offset - start))
        }
        s => Err(format!("answered {s} to a ranged request")),
    }
}

impl Endpoint {
    /// Reaches `domain`: HTTPS first; plain HTTP when HTTPS fails and the
    /// registry answers plain HTTP and is allowed to (else a clear error).
    pub(crate) async fn connect(
        config: &Config,
        domain: &str,
        creds: Option<Credentials>,
    ) -> Result<Endpoint, RegistryError> {
        let (client, upload_client) = clients_for(config, domain)?;
        let host = api_host(domain);
        let bad_host = |_| RegistryError::invalid(domain, "is not a valid registry host");
        let https = Url::parse(&format!("https://{host}/")).map_err(bad_host)?;
        let make = |base: Url, resp: &Response| Endpoint {
            domain: domain.to_string(),
            base,
            client: client.clone(),
            upload_client: upload_client.clone(),
            creds: creds.clone(),
            challenge: Mutex::new(if resp.status() == StatusCode::UNAUTHORIZED {
                challenge_of(resp)
            } else {
                None
            }),
            tokens: Mutex::new(TokenCache::default()),
            timeout_secs: config.registry_timeout_seconds,
            config_path: config.path.clone(),
        };
        let timeout = |what: &str| RegistryError::Timeout {
            registry: domain.to_string(),
            what: what.to_string(),
            secs: config.registry_timeout_seconds,
            config: config.path.clone(),
        };
        let tls_error = match ping(&client, &https).await {
            Ok(resp) => return Ok(make(https, &resp)),
            Err(e) if e.is_timeout() => return Err(timeout(&format!("GET {https}v2/"))),
            Err(e) => e,
        };
        let http = Url::parse(&format!("http://{host}/")).map_err(bad_host)?;
        match ping(&client, &http).await {
            Ok(resp)
                if resp.status() == StatusCode::OK || resp.status() == StatusCode::UNAUTHORIZED =>
            {
                if config.allows_http(domain) {
                    Ok(make(http, &resp))
                } else {
                    Err(RegistryError::InsecureNotAllowed {
                        registry: domain.to_string(),
                        config: config.path.clone(),
                    })
                }
            }
            Err(e) if e.is_timeout() && config.allows_http(domain) => {
                Err(timeout(&format!("GET {http}v2/")))
            }
            _ => Err(RegistryError::registry(
                domain,
                format!("GET {https}v2/: {}", describe(&tls_error)),
            )),
        }
    }

    /// A URL under the registry's base.
    pub(crate) fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone())
    }

    /// Resolves a `Location` header (absolute or relative).
    pub(crate) fn location(&self, resp: &Response, what: &str) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RegistryError::registry(&self.domain, format!("{what}: answer has no Location"))
            })?;
        self.base.join(loc).map_err(|e| {
            RegistryError::registry(&self.domain, format!("{what}: bad Location {loc:?}: {e}"))
        })
    }

    fn timeout_error(&self, what: &str) -> RegistryError {
        RegistryError::Timeout {
            registry: self.domain.clone(),
            what: what.to_string(),
            secs: self.timeout_secs,
            config: self.config_path.clone(),
        }
    }

    /// A transport failure as an error naming the registry.
    pub(crate) fn transport_error(&self, e: &reqwest::Error, what: &str) -> RegistryError {
        if e.is_timeout() {
            self.timeout_error(what)
        } else {
            RegistryError::registry(&self.domain, format!("{what}: {}", describe(e)))
        }
    }

    fn unauthorized(&self, what: &str) -> RegistryError {
        let detail = if self.creds.is_some() {
            format!(
                "authentication required by {} for {what} (wrong username or password?)",
                self.domain
            )
        } else {
            format!(
                "authentication required by {} for {what}; log in with `berth login {}`",
                self.domain, self.domain
            )
        };
        RegistryError::Unauthorized {
            registry: self.domain.clone(),
            detail,
        }
    }

    /// An error for an unexpected status, with the registry's own message
    /// (`{"errors":[{"code":…,"message":…}]}`) when it sent one.
    pub(crate) async fn status_error(&self, resp: Response, what: &str) -> RegistryError {
        let status = resp.status();
        let body = read_capped(resp, 64 << 10).await.unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let errs = v.get("errors")?.as_array()?.clone();
                let msgs: Vec<String> = errs
                    .iter()
                    .map(|e| {
                        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                        let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                        match (code.is_empty(), msg.is_empty()) {
                            (false, false) => format!("{}: {msg}", code.to_lowercase()),
                            (false, true) => code.to_lowercase(),
                            _ => msg.to_string(),
                        }
                    })
                    .collect();
                (!msgs.is_empty()).then(|| msgs.join("; "))
            })
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                if text.is_empty() || text.len() > 200 {
                    status.to_string()
                } else {
                    format!("{status}: {text}")
                }
            });
        if status == StatusCode::NOT_FOUND {
            RegistryError::NotFound {
                what: what.to_string(),
                detail,
            }
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let mut e = self.unauthorized(what);
            if let RegistryError::Unauthorized { detail: d, .. } = &mut e {
                d.push_str(&format!(" ({detail})"));
            }
            e
        } else if detail.contains(status.as_str()) {
            RegistryError::registry(&self.domain, format!("{what}: {detail}"))
        } else {
            // The registry's own message ("unknown: unknown error") does not
            // say that it answered 500 or 503 (after retries, for those).
            RegistryError::registry(&self.domain, format!("{what}: {detail} ({status})"))
        }
    }

    /// The Authorization header for a request needing `scopes`.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<String>, RegistryError> {
        let ch = self.challenge.lock().expect("lock").clone();
        match ch {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self
                .creds
                .as_ref()
                .map(|c| format!("Basic {}", c.encoded()))),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scope_key(scopes);
                if let Some(t) = self.tokens.lock().expect("lock").get(&key) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let (t, ttl) = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                self.tokens.lock().expect("lock").put(&key, t.clone(), ttl);
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    /// GETs a token from the challenge's realm (with the credentials, when
    /// there are any, as Basic auth).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Duration), RegistryError> {
        let what = format!("token from {realm}");
        let mut url = Url::parse(realm).map_err(|e| {
            RegistryError::registry(&self.domain, format!("bad token realm {realm:?}: {e}"))
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
            if let Some(c) = &self.creds {
                q.append_pair("account", &c.username);
            }
        }
        let mut attempt = 0;
        let resp = loop {
            let mut req = self.client.get(url.clone());
            if let Some(c) = &self.creds {
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            match req.send().await {
                Ok(r) if r.status().is_server_error() && attempt < MAX_RETRIES => {}
                Ok(r) => break r,
                Err(e) if retryable(&e) && attempt < MAX_RETRIES => {}
                Err(e) => return Err(self.transport_error(&e, &what)),
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(&format!("a token from {realm}")));
        }
        if !status.is_success() {
            return Err(self.status_error(resp, &what).await);
        }
        let body = read_capped(resp, 1 << 20)
            .await
            .map_err(|e| self.capped_error(e, &what))?;
        let tr: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::registry(&self.domain, format!("{what}: malformed answer: {e}"))
        })?;
        tr.token().ok_or_else(|| {
            RegistryError::registry(&self.domain, format!("{what}: answer has no token"))
        })
    }

    /// Sends a request built by `make`, authenticated for `scopes`. Follows
    /// a new or changed challenge once; when `idempotent`, retries 5xx
    /// answers and dropped connections with exponential backoff. Other
    /// statuses are the caller's to judge.
    pub(crate) async fn send<F>(
        &self,
        scopes: &[String],
        idempotent: bool,
        what: &str,
        make: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        self.send_inner(scopes, idempotent, what, None, make).await
    }

    /// [`Endpoint::send`] for a request carrying `len` bytes of body (never
    /// retried here: an upload session's state is the caller's to judge).
    pub(crate) async fn send_body<F>(
        &self,
        scopes: &[String],
        what: &str,
        len: u64,
        make: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        self.send_inner(scopes, false, what, Some(len), make).await
    }

    async fn send_inner<F>(
        &self,
        scopes: &[String],
        idempotent: bool,
        what: &str,
        upload: Option<u64>,
        make: F,
    ) -> Result<Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> RequestBuilder,
    {
        let mut attempt = 0;
        let mut reauthed = false;
        loop {
            let auth = self.authorization(scopes).await?;
            let mut req = match upload {
                None => make(&self.client),
                Some(n) => make(&self.upload_client)
                    .timeout(upload_deadline(Duration::from_secs(self.timeout_secs), n)),
            };
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let ch = challenge_of(&resp);
                    let was = self.challenge.lock().expect("lock").clone();
                    // Worth one more try: a first challenge, a bearer token
                    // that expired or lacked a scope. Not: Basic credentials
                    // that were just refused.
                    let retry = !reauthed
                        && match (&ch, &was) {
                            (Some(Challenge::Basic), Some(Challenge::Basic)) => false,
                            (Some(Challenge::Basic), None) => self.creds.is_some(),
                            (Some(_), _) => true,
                            (None, _) => false,
                        };
                    if !retry {
                        return Err(self.status_error(resp, what).await);
                    }
                    *self.challenge.lock().expect("lock") = ch;
                    self.tokens.lock().expect("lock").forget(&scope_key(scopes));
                    reauthed = true;
                }
                Ok(resp)
                    if resp.status().is_server_error() && idempotent && attempt < MAX_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if idempotent && attempt < MAX_RETRIES && retryable(&e) => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.transport_error(&e, what)),
            }
        }
    }

    /// `login`: proves the credentials work (GET /v2/ through the challenge,
    /// or a token from the realm with no scope, as Docker does).
    pub(crate) async fn check_login(&self) -> Result<(), RegistryError> {
        let what = format!("GET {}", self.url("v2/"));
        let ch = self.challenge.lock().expect("lock").clone();
        if let Some(Challenge::Bearer { realm, service, .. }) = ch {
            self.fetch_token(&realm, service.as_deref(), &[]).await?;
            return Ok(());
        }
        let resp = self
            .send(&[], true, &what, |c| c.get(self.url("v2/")))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(resp, &what).await)
        }
    }

    /// Streams the blob `digest` of `repo` into `tx`, checking it is no
    /// longer than `size` and resuming with a Range request when the
    /// connection drops. On failure an error is also sent down `tx`, so the
    /// reader never mistakes a broken download for the end of the blob.
    pub(crate) async fn download(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<(), RegistryError> {
        let r = self.download_inner(repo, digest, size, tx).await;
        if let Err(e) = &r {
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
        r
    }

    async fn download_inner(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}"));
        let scopes = [crate::auth::repository_scope(repo, false)];
        let what = format!("blob {digest}");
        let mut offset = 0u64;
        let mut attempt = 0u32;
        let fail = |msg: String| RegistryError::invalid(&what, msg);
        loop {
            let resp = self
                .send(&scopes, true, &what, |c| {
                    let r = c.get(url.clone());
                    if offset > 0 {
                        r.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        r
                    }
                })
                .await?;
            if !resp.status().is_success() {
                return Err(self.status_error(resp, &what).await);
            }
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let Resume::Skip(mut skip) = resume_action(offset, resp.status(), cr.as_deref())
                .map_err(|m| RegistryError::registry(&self.domain, format!("{what}: {m}")))?;
            let mut resp = resp;
            let dropped = loop {
                match resp.chunk().await {
                    Ok(Some(mut b)) => {
                        if skip > 0 {
                            let n = skip.min(b.len() as u64);
                            skip -= n;
                            b = b.slice(n as usize..);
                            if b.is_empty() {
                                continue;
                            }
                        }
                        if offset + b.len() as u64 > size {
                            return Err(fail(format!(
                                "the registry sent more than the {size} bytes the manifest lists"
                            )));
                        }
                        offset += b.len() as u64;
                        if tx.send(Ok(b)).await.is_err() {
                            // The reader stopped: it failed and its error says why.
                            return Ok(());
                        }
                    }
                    Ok(None) => break None,
                    Err(e) if e.is_timeout() => return Err(self.transport_error(&e, &what)),
                    Err(e) => break Some(describe(&e)),
                }
            };
            if offset == size {
                return Ok(());
            }
            // Dropped or cut short: resume where it stopped.
            let why = dropped.unwrap_or_else(|| "connection closed early".into());
            if attempt >= MAX_RETRIES {
                return Err(fail(format!(
                    "download failed after {offset} of {size} bytes ({why}), {MAX_RETRIES} retries"
                )));
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// GETs a small document (manifest, config, tag list) whole, refusing
    /// more than `cap` bytes.
    pub(crate) async fn get_small(
        &self,
        scopes: &[String],
        url: Url,
        accept: Option<&str>,
        cap: u64,
        what: &str,
    ) -> Result<(Vec<u8>, HeaderMap), RegistryError> {
        let resp = self
            .send(scopes, true, what, |c| {
                let r = c.get(url.clone());
                match accept {
                    Some(a) => r.header(reqwest::header::ACCEPT, a),
                    None => r,
                }
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, what).await);
        }
        let too_big = |size: String| {
            RegistryError::invalid(what, format!("is {size}, larger than the {cap}-byte limit"))
        };
        if let Some(n) = resp.content_length()
            && n > cap
        {
            return Err(too_big(format!("{n} bytes")));
        }
        let headers = resp.headers().clone();
        let body = read_capped(resp, cap).await.map_err(|e| match e {
            Capped::TooBig => too_big(format!("more than {cap} bytes")),
            e => self.capped_error(e, what),
        })?;
        Ok((body, headers))
    }
}

/// Why a capped read stopped.
pub(crate) enum Capped {
    TooBig,
    Http(reqwest::Error),
}

impl From<reqwest::Error> for Capped {
    fn from(e: reqwest::Error) -> Self {
        Capped::Http(e)
    }
}

impl Capped {
    fn is_timeout(&self) -> bool {
        matches!(self, Capped::Http(e) if e.is_timeout())
    }
}

impl std::fmt::Display for Capped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capped::TooBig => f.write_str("answer too large"),
            Capped::Http(e) => f.write_str(&describe(e)),
        }
    }
}

async fn read_capped(mut resp: Response, cap: u64) -> Result<Vec<u8>, Capped> {
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await? {
        if (out.len() + c.len()) as u64 > cap {
            return Err(Capped::TooBig);
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

impl Endpoint {
    fn capped_error(&self, e: Capped, what: &str) -> RegistryError {
        if e.is_timeout() {
            self.timeout_error(what)
        } else {
            RegistryError::registry(&self.domain, format!("{what}: {e}"))
        }
    }
}

/// Worth retrying: the request went out and the connection broke, not a
/// refusal to connect, a TLS failure or a timeout.
fn retryable(e: &reqwest::Error) -> bool {
    !e.is_timeout() && !e.is_connect() && !e.is_builder() && !e.is_redirect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_decisions() {
        assert_eq!(resume_action(0, StatusCode::OK, None), Ok(Resume::Skip(0)));
        // The server ignored Range: start over, discarding what we had.
        assert_eq!(
            resume_action(100, StatusCode::OK, None),
            Ok(Resume::Skip(100))
        );
        assert_eq!(
            resume_action(100, StatusCode::PARTIAL_CONTENT, Some("bytes 100-199/200")),
            Ok(Resume::Skip(0))
        );
        // An earlier start than asked: skip the overlap.
        assert_eq!(
            resume_action(100, StatusCode::PARTIAL_CONTENT, Some("bytes 90-199/200")),
            Ok(Resume::Skip(10))
        );
        assert!(
            resume_action(100, StatusCode::PARTIAL_CONTENT, Some("bytes 150-199/200")).is_err()
        );
        assert!(resume_action(100, StatusCode::PARTIAL_CONTENT, None).is_err());
        assert!(resume_action(100, StatusCode::RANGE_NOT_SATISFIABLE, None).is_err());
    }

    #[test]
    fn upload_deadlines_grow_with_size() {
        let t = Duration::from_secs(30);
        assert_eq!(upload_deadline(t, 1000), t);
        assert_eq!(upload_deadline(t, 64 << 20), t + Duration::from_secs(1024));
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_millis(1000));
    }

    #[test]
    fn hosts() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
