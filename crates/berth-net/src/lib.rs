//! berth-net: container networking for berth.
//!
//! * [`cni`]: a CNI client — runs Debian's containernetworking-plugins from
//!   `/usr/lib/cni` with the `CNI_*` environment protocol (ADD, DEL, CHECK) and
//!   parses their results (CNI spec 1.0.0 and 0.4.0).
//! * [`networks`]: network metadata under `<root>/networks/<name>/`
//!   (`network.json` + the conflist the engine hands the plugins), the default
//!   `bridge` network, and subnets that never overlap a host route ([`subnet`]).
//! * [`ports`]: `-p/--publish` specs, turned into the portmap plugin's
//!   `portMappings`.
//! * [`netns`]: network namespaces kept as bind mounts of `/proc/PID/ns/net`.
//! * [`dns`]: the per-network DNS responder (container names, forwarding).
//! * [`tap`]: a microVM's tap device joined to its namespace's interface.

pub mod cni;
pub mod dns;
pub mod netns;
pub mod networks;
pub mod ports;
pub mod subnet;
pub mod tap;

use std::path::PathBuf;

pub use networks::{Network, NetworkCreate, Networks};
pub use ports::PortMapping;
pub use subnet::Ipv4Net;

/// Networking errors, each naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No network by that name or ID.
    #[error("network {0} not found")]
    NotFound(String),
    /// A network by that name exists already.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// Invalid user input (names, subnets, port specs).
    #[error("{0}")]
    Invalid(String),
    /// A subnet that overlaps another network or a host route.
    #[error("invalid pool request: Pool overlaps with other one on this address space ({0})")]
    Overlap(String),
    /// No free subnet left in the pools.
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )]
    NoSubnet,
    /// A network that containers still use.
    #[error("error while removing network: network {name} has active endpoints ({containers})")]
    InUse {
        /// The network.
        name: String,
        /// Containers using it.
        containers: String,
    },
    /// A CNI plugin failed.
    #[error("CNI plugin {plugin} {command} failed: {msg}")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// ADD, DEL or CHECK.
        command: String,
        /// Its message (the CNI error's `msg` and `details`, or its stderr).
        msg: String,
    },
    /// A file or system call failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetError {
        let path = path.into();
        move |source| NetError::Io { path, source }
    }
}

/// Writes `data` to `path` atomically (temporary file + rename).
pub(crate) fn write_atomic(path: &std::path::Path, data: &[u8]) -> Result<(), NetError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(NetError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(NetError::io(path))
}
