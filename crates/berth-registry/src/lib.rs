//! berth-registry: a client for the OCI distribution spec (Docker Hub, GHCR,
//! Harbor, `registry:2`, …).
//!
//! - [`Client`]: pull, push, login/logout, manifests and tags, with a
//!   blocking API for the (synchronous) engine; inside, one small tokio
//!   runtime and one `reqwest` client per registry.
//! - [`config`]: berth's configuration file (insecure registries, certs.d,
//!   concurrency, timeout).
//! - [`credentials`]: stored logins (berth's own file, then Docker's).
//! - [`auth`]: `WWW-Authenticate` challenges, scopes and bearer tokens.
//! - [`platform`]: `--platform` and choosing an image from an index.
//! - [`sources`]: which repository a blob came from, for cross-repository mounts.
//!
//! Progress is reported as [`Event`]s; the front end decides how to draw them.

pub mod auth;
pub mod config;
pub mod credentials;
mod error;
pub mod platform;
mod pull;
mod push;
pub mod sources;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::{Digest, Reference};

pub use config::Config;
pub use credentials::{AuthFiles, Credentials};
pub use error::RegistryError;
pub use platform::Platform;
pub use pull::Pulled;
pub use push::{Pushed, UploadPolicy};
pub use sources::Sources;

use transport::Endpoint;

/// Largest manifest or index accepted (Docker's limit).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG: u64 = 32 << 20;

/// Media types a manifest request accepts.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Progress of a pull or push, as events.
#[derive(Clone, Debug)]
pub enum Event {
    /// The reference resolved to a manifest (an index's digest when the tag
    /// names a multi-platform image) with this many layers.
    Resolved {
        /// The reference as given, normalised.
        reference: String,
        /// Digest the reference resolved to.
        digest: Digest,
        /// Layers in the chosen image.
        layers: usize,
    },
    /// A layer starts downloading (pull) or uploading (push).
    LayerStart {
        /// Layer blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// Bytes of a layer moved so far (about every 512 KiB).
    LayerProgress {
        /// Layer blob.
        digest: Digest,
        /// Bytes so far.
        done: u64,
        /// Size of the blob.
        total: u64,
    },
    /// A downloaded layer matched its digest and size.
    LayerVerified {
        /// Layer blob.
        digest: Digest,
    },
    /// A downloaded layer is unpacked into its snapshot.
    LayerUnpacked {
        /// Layer blob.
        digest: Digest,
    },
    /// The layer was there already (pull: in the store; push: in the registry).
    LayerExists {
        /// Layer blob.
        digest: Digest,
    },
    /// Push: the registry mounted the layer from another repository.
    LayerMounted {
        /// Layer blob.
        digest: Digest,
        /// The repository (path on the same registry) it came from.
        from: String,
    },
    /// Push: the layer was uploaded.
    LayerPushed {
        /// Layer blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// Finished.
    Done {
        /// Manifest digest (of what the reference names).
        digest: Digest,
        /// Bytes transferred.
        size: u64,
        /// How long it took.
        elapsed: Duration,
    },
}

/// A manifest or index as the registry serves it.
#[derive(Clone, Debug)]
pub struct RemoteManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

/// The registry client: configuration, credentials, a tokio runtime and one
/// connection pool per registry. Dropping it stops the runtime's threads
/// (the container runtime needs a single-threaded process afterwards).
pub struct Client {
    config: Config,
    auth: AuthFiles,
    rt: tokio::runtime::Runtime,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    upload: UploadPolicy,
}

impl Client {
    /// A client with this configuration and these credential files.
    pub fn new(config: Config, auth: AuthFiles) -> Result<Client, RegistryError> {
        // Two threads drive the sockets (and TLS); hashing and unpacking run
        // on the caller's threads.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-registry")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::registry("(none)", format!("cannot start runtime: {e}")))?;
        Ok(Client {
            config,
            auth,
            rt,
            endpoints: Mutex::new(HashMap::new()),
            upload: UploadPolicy::default(),
        })
    }

    /// A client configured from the environment: `$BERTH_CONFIG`,
    /// `$BERTH_AUTH_FILE`, `$DOCKER_CONFIG` (see [`Config`], [`AuthFiles`]).
    pub fn from_env() -> Result<Client, RegistryError> {
        Client::new(Config::load()?, AuthFiles::from_env())
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The credential files in use.
    pub fn auth_files(&self) -> &AuthFiles {
        &self.auth
    }

    /// Changes when pushes switch from one PUT to chunked PATCHes.
    pub fn set_upload_policy(&mut self, p: UploadPolicy) {
        self.upload = p;
    }

    /// The endpoint for `domain`, reached (and its challenge learnt) once.
    fn endpoint(&self, domain: &str) -> Result<Arc<Endpoint>, RegistryError> {
        if let Some(e) = self.endpoints.lock().expect("lock").get(domain) {
            return Ok(e.clone());
        }
        let creds = self.auth.get(domain)?;
        let ep = Arc::new(
            self.rt
                .block_on(Endpoint::connect(&self.config, domain, creds))?,
        );
        self.endpoints
            .lock()
            .expect("lock")
            .insert(domain.to_string(), ep.clone());
        Ok(ep)
    }

    /// `login`: checks the credentials against the registry and stores them
    /// in berth's credentials file (only when they work).
    pub fn login(&self, registry: &str, creds: &Credentials) -> Result<String, RegistryError> {
        let domain = normalise_registry(registry);
        let ep = self.rt.block_on(Endpoint::connect(
            &self.config,
            &domain,
            Some(creds.clone()),
        ))?;
        self.rt.block_on(ep.check_login())?;
        self.auth.store(&domain, creds)?;
        Ok(domain)
    }

    /// `logout`: forgets stored credentials. Returns the registry and whether
    /// there were any.
    pub fn logout(&self, registry: &str) -> Result<(String, bool), RegistryError> {
        let domain = normalise_registry(registry);
        let had = self.auth.remove(&domain)?;
        Ok((domain, had))
    }

    /// The manifest or index `reference` names, as served.
    pub fn manifest(&self, reference: &Reference) -> Result<RemoteManifest, RegistryError> {
        let ep = self.endpoint(reference.domain())?;
        self.rt.block_on(pull::fetch_manifest(&ep, reference, None))
    }

    /// Every tag of `reference`'s repository (following pagination).
    pub fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        let ep = self.endpoint(reference.domain())?;
        self.rt.block_on(pull::list_tags(&ep, reference))
    }
}

/// A registry as `login`/`logout` take it (`https://index.docker.io/v1/`,
/// `host:port/`, nothing) → the domain references use.
pub fn normalise_registry(registry: &str) -> String {
    let r = registry.trim();
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let r = r.split('/').next().unwrap_or(r);
    match r {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        r => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_for_login() {
        assert_eq!(normalise_registry(""), "docker.io");
        assert_eq!(
            normalise_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalise_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            normalise_registry("http://127.0.0.1:5000/"),
            "127.0.0.1:5000"
        );
    }
}
