//! Registry errors; each names the registry, reference or digest at fault.

use std::path::PathBuf;

use berth_image::ImageError;
use berth_image::reference::ReferenceError;

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The configuration file is unreadable or malformed.
    #[error("configuration file {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credentials file is unreadable or malformed.
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry refused the credentials (or wants some).
    #[error("unauthorized: {detail}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// Docker-style explanation naming the registry.
        detail: String,
    },
    /// A manifest, tag, repository or blob the registry does not have.
    #[error("{what}: not found: {detail}")]
    NotFound {
        /// Reference or digest asked for.
        what: String,
        /// The registry's own words.
        detail: String,
    },
    /// No answer within the configured timeout.
    #[error(
        "registry {registry}: {what} timed out after {secs}s (registry-timeout-seconds in {config})"
    )]
    Timeout {
        /// The registry.
        registry: String,
        /// The request.
        what: String,
        /// The timeout.
        secs: u64,
        /// The configuration file that sets it.
        config: PathBuf,
    },
    /// The registry only speaks plain HTTP and is not allowed to.
    #[error(
        "registry {registry} speaks plain HTTP, which berth uses only for localhost, 127.0.0.1 \
         and registries listed in \"insecure-registries\" in {config}; add \"{registry}\" there to allow it"
    )]
    InsecureNotAllowed {
        /// The registry.
        registry: String,
        /// The configuration file to edit.
        config: PathBuf,
    },
    /// The registry could not be reached or answered out of protocol.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// What happened.
        message: String,
    },
    /// A manifest or index that cannot be used.
    #[error("{what}: {reason}")]
    Invalid {
        /// Reference or digest concerned.
        what: String,
        /// Why.
        reason: String,
    },
    /// `push` of a name the store does not have.
    #[error("An image does not exist locally with the tag: {0}")]
    NoLocalImage(String),
    /// A bad image reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The image store failed (digest mismatches land here too).
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl From<berth_image::content::ContentError> for RegistryError {
    fn from(e: berth_image::content::ContentError) -> Self {
        RegistryError::Image(e.into())
    }
}

impl RegistryError {
    pub(crate) fn invalid(what: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        RegistryError::Invalid {
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn registry(registry: &str, message: impl Into<String>) -> Self {
        RegistryError::Registry {
            registry: registry.to_string(),
            message: message.into(),
        }
    }
}
