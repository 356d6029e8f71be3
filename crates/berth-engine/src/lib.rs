//! berth-engine: the one thing front ends (CLI, API) call.
//!
//! It owns the services (images now; containers, volumes and networks as they
//! land) under one root directory and answers questions that span them, such as
//! "which containers use this image" before an image is removed.

pub mod build;
pub mod containers;
pub mod copy;
pub mod network;
pub mod registry;
pub mod run;
pub mod spec;
pub mod volumes;

use std::path::{Path, PathBuf};

pub use berth_image as image;
pub use berth_net;
pub use berth_registry;
pub use berth_runtime::{cgroups, host};

use berth_image::{Digest, ImageError, ImageStore, Problem, Removed};
use serde::Serialize;

/// Default root of berth's state.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// From the image service.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// From the registry client.
    #[error(transparent)]
    Registry(#[from] berth_registry::RegistryError),
    /// The root directory is unusable.
    #[error("root directory {path}: {source}")]
    Root {
        /// The root.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `berth info`.
#[derive(Debug, Serialize)]
pub struct Info {
    /// berth's version.
    pub version: &'static str,
    /// State root.
    pub root: PathBuf,
    /// Snapshot/storage driver.
    pub storage_driver: &'static str,
    /// Number of images.
    pub images: usize,
    /// Host facts.
    pub host: host::HostInfo,
    /// What `--isolation vm` would boot.
    pub vm: VmSupport,
}

/// The microVM backend on this host, for `info`: each part, or (in its
/// `*_error` field) why it is missing.
#[derive(Debug, Serialize)]
pub struct VmSupport {
    /// The guest kernel.
    pub kernel: Option<berth_runtime::microvm::assets::GuestKernel>,
    /// Why there is no guest kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_error: Option<String>,
    /// The static agent.
    pub agent: Option<PathBuf>,
    /// Why there is no agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// The hypervisor and accelerator, e.g. `qemu-microvm (tcg)`.
    pub hypervisor: Option<String>,
    /// Why there is no hypervisor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypervisor_error: Option<String>,
    /// Why this accelerator.
    pub accel_reason: String,
    /// Isolation `run` uses without `--isolation`.
    pub default_isolation: &'static str,
}

/// Disk usage by kind, for `system df`.
#[derive(Debug, Serialize)]
pub struct DiskUsage {
    /// Images.
    pub images: berth_image::ImageUsage,
}

/// What `system prune` removed.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    /// Container IDs.
    pub containers: Vec<String>,
    /// Volume names.
    pub volumes: Vec<String>,
    /// Network names.
    pub networks: Vec<String>,
    /// "untagged: x" / "deleted: sha256:…" lines.
    pub images: Vec<String>,
    /// Bytes freed from the image store.
    pub reclaimed: u64,
}

/// The engine over one root directory.
pub struct Engine {
    root: PathBuf,
    images: ImageStore,
}

impl Engine {
    /// Opens (creating) the state under `root`.
    pub fn open(root: &Path) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(root).map_err(|source| EngineError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| EngineError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Engine {
            images: ImageStore::open(&root)?,
            root,
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container records.
    pub fn containers(&self) -> containers::Containers {
        containers::Containers::new(&self.root)
    }

    /// The volumes.
    pub fn volumes(&self) -> volumes::Volumes {
        volumes::Volumes::new(&self.root)
    }

    /// The image service: references, store, archives.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// Containers (of any state, as Docker counts them) using an image, by name.
    pub fn containers_using(&self, image: &Digest) -> Vec<String> {
        self.containers()
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.image_id == image.as_str())
            .map(|c| c.name)
            .collect()
    }

    /// `rmi`: refuses images containers use unless untagging a second name.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<Removed>, EngineError> {
        Ok(self
            .images
            .remove(name, force, &|id| self.containers_using(id))?)
    }

    /// `image prune [-a]`.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<Removed>, u64), EngineError> {
        Ok(self.images.prune(all, &|id| self.containers_using(id))?)
    }

    /// `system prune`: stopped containers, then unused networks, then unused
    /// anonymous (or all) volumes, then dangling (or all unused) images, then leftovers of
    /// interrupted operations (ingest files, half-unpacked snapshots).
    pub fn prune_system(
        &self,
        all_images: bool,
        all_volumes: bool,
    ) -> Result<Pruned, run::RunError> {
        let mut p = Pruned {
            containers: self.prune_containers()?,
            ..Default::default()
        };
        // (prune_containers released what a crash left of their networking.)
        p.networks = network::prune(self);
        let in_use: std::collections::HashSet<String> = self
            .containers()
            .list()?
            .into_iter()
            .flat_map(|c| c.volumes)
            .collect();
        for v in self.volumes().list() {
            if (all_volumes || v.anonymous)
                && !in_use.contains(&v.name)
                && self.volumes().remove(&v.name).is_ok()
            {
                p.volumes.push(v.name);
            }
        }
        let (removed, freed) = self.prune_images(all_images)?;
        p.images = removed
            .into_iter()
            .map(|r| match r {
                Removed::Untagged(t) => format!("untagged: {t}"),
                Removed::Deleted(d) => format!("deleted: {d}"),
            })
            .collect();
        p.reclaimed = freed + containers::vm::prune_shared(self);
        self.images().clean_leftovers().map_err(EngineError::from)?;
        Ok(p)
    }

    /// `system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage, EngineError> {
        Ok(DiskUsage {
            images: self.images.usage(&|id| self.containers_using(id))?,
        })
    }

    /// `system check`: every blob re-hashed, every record cross-checked.
    pub fn check(&self) -> Result<Vec<Problem>, EngineError> {
        Ok(self.images.check()?)
    }

    /// `info`.
    pub fn info(&self) -> Result<Info, EngineError> {
        Ok(Info {
            version: env!("CARGO_PKG_VERSION"),
            root: self.root.clone(),
            storage_driver: "overlay",
            images: self.images.list()?.len(),
            host: host::probe(&self.root),
            vm: {
                use berth_runtime::microvm::{accel, assets, hypervisor};
                fn split<T>(
                    r: Result<T, berth_runtime::microvm::VmError>,
                ) -> (Option<T>, Option<String>) {
                    match r {
                        Ok(v) => (Some(v), None),
                        Err(e) => (None, Some(e.to_string())),
                    }
                }
                let (kernel, kernel_error) = split(assets::kernel());
                let (agent, agent_error) = split(assets::agent());
                let (hypervisor, hypervisor_error) = split(hypervisor().map(|h| h.name()));
                VmSupport {
                    kernel,
                    kernel_error,
                    agent,
                    agent_error,
                    hypervisor,
                    hypervisor_error,
                    accel_reason: accel::detect().1,
                    default_isolation: containers::vm::default_isolation()
                        .map(|i| i.as_str())
                        .unwrap_or("container"),
                }
            },
        })
    }
}
