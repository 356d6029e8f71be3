//! What the host offers the runtimes: cgroup layout, overlayfs, user
//! namespaces, KVM, and which peer tools are installed. Every answer comes from
//! a real probe (a mount, an unshare, an ioctl), not from guessing at files.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// How cgroups are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup v2 at /sys/fs/cgroup.
    Unified,
    /// v1 controller hierarchies plus an empty v2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// Only v1 hierarchies.
    Legacy,
    /// No cgroup file system found.
    None,
}

impl CgroupMode {
    /// The version berth's resource controls use: 2 for unified, else 1.
    pub fn version(self) -> u8 {
        match self {
            CgroupMode::Unified => 2,
            CgroupMode::None => 0,
            _ => 1,
        }
    }
}

/// cgroup facts.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupInfo {
    /// Mount layout.
    pub mode: CgroupMode,
    /// Controllers berth can use (on v1: those with a hierarchy; on v2: those enabled).
    pub controllers: Vec<String>,
}

/// A probe result with the reason when negative.
#[derive(Clone, Debug, Serialize)]
pub struct Capability {
    /// Works.
    pub usable: bool,
    /// Why not (empty when usable).
    pub detail: String,
}

impl Capability {
    fn yes() -> Self {
        Capability {
            usable: true,
            detail: String::new(),
        }
    }
    fn no(detail: impl Into<String>) -> Self {
        Capability {
            usable: false,
            detail: detail.into(),
        }
    }
}

/// Everything `berth info` reports about the host.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    /// Kernel release.
    pub kernel: String,
    /// cgroup layout.
    pub cgroups: CgroupInfo,
    /// overlayfs mounts work.
    pub overlayfs: Capability,
    /// Unprivileged-style user namespaces can be created.
    pub user_namespaces: Capability,
    /// /dev/kvm answers KVM_GET_API_VERSION.
    pub kvm: Capability,
    /// Peer tools found on PATH, name → path.
    pub peers: Vec<(String, Option<PathBuf>)>,
}

/// Tools berth interoperates with or measures against.
pub const PEERS: &[&str] = &[
    "runc",
    "crun",
    "podman",
    "skopeo",
    "umoci",
    "buildah",
    "docker",
    "dockerd",
    "docker-registry",
    "qemu-system-x86_64",
];

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Probes the host. `scratch` is a directory the overlay probe may use.
pub fn probe(scratch: &Path) -> HostInfo {
    HostInfo {
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        cgroups: cgroups(),
        overlayfs: overlayfs(scratch),
        user_namespaces: user_namespaces(),
        kvm: kvm(),
        peers: PEERS.iter().map(|p| (p.to_string(), which(p))).collect(),
    }
}

// f_type's integer type differs between architectures, so the cast is not always a no-op.
#[allow(clippy::unnecessary_cast)]
fn is_cgroup2(p: &str) -> bool {
    rustix::fs::statfs(p).is_ok_and(|s| s.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// Detects the cgroup layout and usable controllers.
pub fn cgroups() -> CgroupInfo {
    if is_cgroup2("/sys/fs/cgroup") {
        let controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        return CgroupInfo {
            mode: CgroupMode::Unified,
            controllers,
        };
    }
    // /proc/cgroups: subsys_name hierarchy num_cgroups enabled
    let controllers: Vec<String> = fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[1] != "0" && f[3] == "1").then(|| f[0].to_string())
        })
        .collect();
    let mode = if is_cgroup2("/sys/fs/cgroup/unified") {
        CgroupMode::Hybrid
    } else if controllers.is_empty() {
        CgroupMode::None
    } else {
        CgroupMode::Legacy
    };
    CgroupInfo { mode, controllers }
}

/// Mounts and unmounts a tiny overlay in `scratch`.
pub fn overlayfs(scratch: &Path) -> Capability {
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.ends_with("\toverlay")) {
        return Capability::no("overlay is not in /proc/filesystems");
    }
    let dir = match tempfile::Builder::new()
        .prefix(".probe-overlay-")
        .tempdir_in(scratch)
    {
        Ok(d) => d,
        Err(e) => return Capability::no(format!("{}: {e}", scratch.display())),
    };
    let p = |n: &str| dir.path().join(n);
    for n in ["l", "u", "w", "m"] {
        if let Err(e) = fs::create_dir(p(n)) {
            return Capability::no(e.to_string());
        }
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        p("l").display(),
        p("u").display(),
        p("w").display()
    );
    let data = std::ffi::CString::new(data).expect("paths have no NUL");
    match rustix::mount::mount(
        "overlay",
        p("m"),
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    ) {
        Ok(()) => {
            let _ = rustix::mount::unmount(p("m"), rustix::mount::UnmountFlags::DETACH);
            Capability::yes()
        }
        Err(e) => Capability::no(format!("mount failed: {e}")),
    }
}

/// Creates a user namespace in a child process.
pub fn user_namespaces() -> Capability {
    if fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|s| s.trim() == "0") {
        return Capability::no("user.max_user_namespaces is 0");
    }
    let mut cmd = Command::new("/bin/true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe system call (unshare).
    unsafe {
        cmd.pre_exec(|| {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER)
                .map_err(std::io::Error::from)
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Capability::yes(),
        Ok(s) => Capability::no(format!("probe exited with {s}")),
        Err(e) => Capability::no(format!("unshare(CLONE_NEWUSER): {e}")),
    }
}

/// Opens /dev/kvm and asks its API version.
pub fn kvm() -> Capability {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    let f = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(f) => f,
        Err(e) => return Capability::no(format!("/dev/kvm: {e}")),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int;
    // the fd is open for the duration of the call.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if v == 12 {
        Capability::yes()
    } else {
        Capability::no(format!("KVM_GET_API_VERSION returned {v}"))
    }
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let info = probe(dir.path());
        assert!(!info.kernel.is_empty());
        // The CI machine is hybrid with controllers on v1; any real host has some mode.
        assert_ne!(info.cgroups.mode, CgroupMode::None);
        assert!(
            info.cgroups.controllers.iter().any(|c| c == "memory"),
            "{:?}",
            info.cgroups
        );
        assert!(info.overlayfs.usable, "{}", info.overlayfs.detail);
        // The probe leaves nothing behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-berth").is_none());
    }
}
