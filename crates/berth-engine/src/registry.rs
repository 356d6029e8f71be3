//! Registry operations for front ends: pull, push, login/logout, remote
//! manifests, and the `--pull` policy of `run`/`create`.
//!
//! Each call builds a [`Client`] from the environment (`$BERTH_CONFIG`,
//! `$BERTH_AUTH_FILE`, `$DOCKER_CONFIG`) and drops it before returning, so
//! its runtime threads are gone again when a container is spawned (the
//! runtime forks and insists on a single-threaded process).

use std::str::FromStr;

use berth_image::Reference;
pub use berth_registry::{
    Client, Config, Credentials, Event, Platform, Pulled, Pushed, RegistryError, RemoteManifest,
    Sources,
};

use crate::{Engine, EngineError};

/// `--pull` for `run` and `create`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the image is not in the store (Docker's default).
    #[default]
    Missing,
    /// Never pull.
    Never,
}

impl FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            _ => Err(format!(
                "invalid pull policy \"{s}\": expected always, missing or never"
            )),
        }
    }
}

impl Engine {
    /// A registry client configured from the environment.
    pub fn registry(&self) -> Result<Client, EngineError> {
        let mut c = Client::from_env()?;
        // Lets tests and benchmarks force chunked uploads on small images.
        if let Some(n) = std::env::var("BERTH_REGISTRY_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
        {
            c.set_upload_policy(berth_registry::UploadPolicy {
                monolithic_max: n,
                chunk_size: n,
            });
        }
        Ok(c)
    }

    /// Where berth remembers which repository each blob came from.
    pub fn blob_sources(&self) -> Sources {
        Sources::new(&self.root.join("registry"))
    }

    /// `pull NAME[:TAG|@DIGEST]` for `platform` (default: the host's).
    pub fn pull(
        &self,
        name: &str,
        platform: Option<&str>,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Pulled, EngineError> {
        let r = Reference::parse(name).map_err(berth_registry::RegistryError::from)?;
        let platform = match platform {
            Some(p) => Platform::parse(p).map_err(|reason| RegistryError::Invalid {
                what: "--platform".into(),
                reason,
            })?,
            None => Platform::host(),
        };
        let client = self.registry()?;
        Ok(client.pull(&self.images, &self.blob_sources(), &r, &platform, events)?)
    }

    /// `push NAME[:TAG]`.
    pub fn push(&self, name: &str, events: &(dyn Fn(Event) + Sync)) -> Result<Pushed, EngineError> {
        let r = Reference::parse(name).map_err(berth_registry::RegistryError::from)?;
        let client = self.registry()?;
        Ok(client.push(&self.images, &self.blob_sources(), &r, events)?)
    }

    /// `login`: verifies and stores credentials; returns the registry.
    pub fn login(&self, server: &str, creds: &Credentials) -> Result<String, EngineError> {
        Ok(self.registry()?.login(server, creds)?)
    }

    /// `logout`: returns the registry and whether credentials were stored.
    pub fn logout(&self, server: &str) -> Result<(String, bool), EngineError> {
        Ok(self.registry()?.logout(server)?)
    }

    /// `manifest inspect`: the manifest or index as the registry serves it.
    pub fn remote_manifest(&self, name: &str) -> Result<RemoteManifest, EngineError> {
        let r = Reference::parse(name).map_err(berth_registry::RegistryError::from)?;
        Ok(self.registry()?.manifest(&r)?)
    }

    /// The tags of `name`'s repository in its registry.
    pub fn remote_tags(&self, name: &str) -> Result<Vec<String>, EngineError> {
        let r = Reference::parse(name).map_err(berth_registry::RegistryError::from)?;
        Ok(self.registry()?.tags(&r)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!("always".parse(), Ok(PullPolicy::Always));
        assert_eq!("never".parse(), Ok(PullPolicy::Never));
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
        assert!("sometimes".parse::<PullPolicy>().is_err());
    }
}
