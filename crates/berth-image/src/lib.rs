//! berth-image: everything about images at rest.
//!
//! - [`reference`]: names as Docker parses them.
//! - [`digest`], [`content`]: sha256 digests and the content-addressed blob store.
//! - [`meta`]: image, tag, blob and snapshot records in one redb database.
//! - [`layer`]: safe layer extraction into overlayfs-ready snapshots ([`snapshot`]).
//! - [`archive`]: docker-archive and oci-archive load/save.
//! - [`config`]: image configs and Dockerfile-style changes.
//! - [`ImageStore`]: the handle that ties them together.

pub mod archive;
pub mod config;
pub mod content;
pub mod digest;
pub mod layer;
pub mod media;
pub mod meta;
pub mod reference;
pub mod snapshot;
mod store;

pub use digest::Digest;
pub use meta::ImageRecord;
pub use reference::Reference;
pub use store::{
    HistoryEntry, ImageError, ImageStore, ImageSummary, ImageUsage, Ingest, IngestedLayer, Problem,
    Removed, rfc3339,
};
