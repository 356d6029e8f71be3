//! The `microvm` backend: the same OCI bundle as the `linux` backend, run as
//! a process inside its own small VM.
//!
//! A VM is made of
//! - a guest kernel built by `scripts/kernel.sh` ([`assets::kernel`]);
//! - an initramfs holding only `berth-agent`, the guest's PID 1
//!   ([`initramfs`]), shared by every VM;
//! - the image's root file system as a read-only erofs disk, exported once
//!   per chain ID and shared, plus a per-VM writable layer (a qcow2 overlay
//!   over an empty ext4) ([`disk`]);
//! - host directories (`-v`, volumes) shared over virtio-9p;
//! - one virtio-serial port carrying the agent protocol (`berth_agent`).
//!
//! The hypervisor sits behind [`Hypervisor`]: QEMU's `microvm` machine now
//! ([`qemu::Qemu`]), with KVM or TCG as [`accel::detect`] decides; a built-in
//! VMM on the rust-vmm crates fits the same trait.

pub mod accel;
pub mod assets;
pub mod disk;
pub mod initramfs;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod spec;

use std::path::PathBuf;
use std::time::Duration;

/// The least guest RAM the kernel and agent boot in.
pub const MIN_MEMORY_MIB: u64 = 64;
/// Guest RAM without `--memory`.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// Errors of the VM backend, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No guest kernel was found.
    #[error(
        "no guest kernel found (looked in {looked}): build one with `bash scripts/kernel.sh` (the README's install command does)"
    )]
    NoKernel {
        /// Where it looked.
        looked: String,
    },
    /// No static berth-agent was found.
    #[error("no berth-agent found ({0}): build it with `bash scripts/agent.sh`")]
    NoAgent(String),
    /// The hypervisor could not be started or died while starting.
    #[error("the hypervisor ({hypervisor}) failed to start the VM: {detail}")]
    Hypervisor {
        /// Which one.
        hypervisor: String,
        /// Its stderr, or the error.
        detail: String,
    },
    /// A tool the backend runs failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The program.
        tool: String,
        /// Its stderr, or the error.
        detail: String,
    },
    /// Bad VM settings.
    #[error("{0}")]
    Config(String),
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Wraps an I/O error with its path.
pub(crate) fn io_at(p: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> VmError {
    let path = p.into();
    move |source| VmError::Io { path, source }
}

/// The last lines of a hypervisor or console log, for error messages:
/// `":\n  line\n  line"`, or empty if it has none.
pub fn log_tail(p: &std::path::Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n  {tail}")
    }
}

/// A disk the VM gets, in order (`/dev/vda`, `/dev/vdb`, …).
#[derive(Clone, Debug)]
pub struct Disk {
    /// Image file.
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: &'static str,
    /// The guest cannot write it.
    pub read_only: bool,
    /// Bytes the guest sees (a qcow2's virtual size); part of a VM's shape
    /// for [`snapshot`]s.
    pub size: u64,
}

/// A host directory shared with the guest (virtio-9p).
#[derive(Clone, Debug)]
pub struct Share {
    /// Mount tag the agent mounts it by.
    pub tag: String,
    /// Host directory.
    pub path: PathBuf,
    /// The guest cannot write it.
    pub read_only: bool,
}

/// The VM's network card: a tap device in the hypervisor's own network
/// namespace, which the hypervisor creates there (the caller then joins that
/// namespace to a network and connects the tap to it).
#[derive(Clone, Debug)]
pub struct Nic {
    /// Tap device name.
    pub tap: String,
    /// The guest NIC's MAC address.
    pub mac: String,
}

/// Everything a hypervisor needs to boot one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Guest kernel (uncompressed vmlinux with a PVH entry).
    pub kernel: PathBuf,
    /// Initramfs with the agent as /init.
    pub initramfs: PathBuf,
    /// Extra kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Disks, in order.
    pub disks: Vec<Disk>,
    /// Shared directories.
    pub shares: Vec<Share>,
    /// A network card; with one, the hypervisor runs in a network namespace
    /// of its own (see [`Nic`]).
    pub nic: Option<Nic>,
    /// Unix socket the hypervisor connects the agent's port to (listening
    /// before the VM starts, so nothing the agent sends is lost).
    pub agent_socket: PathBuf,
    /// Where the guest's serial console (kernel messages) goes.
    pub console_log: PathBuf,
    /// Where the hypervisor's own stdout/stderr go.
    pub hypervisor_log: PathBuf,
    /// A control socket for [`Hypervisor::save`] (QMP for QEMU); `None`:
    /// the VM will not be saved.
    pub control_socket: Option<PathBuf>,
    /// Resume this saved state (made by [`Hypervisor::save`] from a VM of
    /// the same shape, see [`snapshot`]) instead of booting.
    pub restore: Option<PathBuf>,
}

/// A started VM.
pub trait RunningVm: Send {
    /// Host PID of the process that runs the VM.
    fn pid(&self) -> i32;
    /// Whether it still runs; `Some(status)` once it ended.
    fn try_wait(&mut self) -> std::io::Result<Option<i32>>;
    /// Ends it at once (the guest gets no say).
    fn kill(&mut self);
    /// Waits for it to end by itself for up to `timeout`, then kills it.
    fn wait_or_kill(&mut self, timeout: Duration) -> i32 {
        let until = std::time::Instant::now() + timeout;
        loop {
            match self.try_wait() {
                Ok(Some(s)) => return s,
                Ok(None) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    self.kill();
                    return self.try_wait().ok().flatten().unwrap_or(-1);
                }
            }
        }
    }
}

/// A hypervisor driver: boots a [`VmConfig`]. The VM must not outlive the
/// process that launched it (a killed monitor leaves no VM behind).
pub trait Hypervisor {
    /// Name for messages and `inspect`, e.g. `qemu-microvm (tcg)`.
    fn name(&self) -> String;
    /// What identifies the hypervisor's build (a saved state is only
    /// resumed by the build that saved it).
    fn identity(&self) -> String;
    /// Boots the VM (or resumes [`VmConfig::restore`]); returns once the
    /// hypervisor process runs.
    fn launch(&self, cfg: &VmConfig) -> Result<Box<dyn RunningVm>, VmError>;
    /// Stops `vm` (launched with `cfg`, which had a control socket) and
    /// saves its whole state to the file `to`.
    fn save(
        &self,
        vm: &mut dyn RunningVm,
        cfg: &VmConfig,
        to: &std::path::Path,
    ) -> Result<(), VmError>;
}

/// The driver for this host: QEMU microvm with the detected accelerator.
pub fn hypervisor() -> Result<Box<dyn Hypervisor>, VmError> {
    Ok(Box::new(qemu::Qemu::find(accel::detect().0)?))
}
