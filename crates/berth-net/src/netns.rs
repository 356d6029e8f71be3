//! Network namespaces as files: `/proc/PID/ns/net` bind-mounted to a path, so
//! CNI plugins (and `--network container:`) can name it and DEL can still
//! enter it after the process is gone.

use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

use crate::NetError;

/// Bind-mounts the network namespace of `pid` onto `path` (created).
pub fn pin(pid: i32, path: &Path) -> Result<(), NetError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(NetError::io(dir))?;
    }
    std::fs::File::create(path).map_err(NetError::io(path))?;
    let src = format!("/proc/{pid}/ns/net");
    rustix::mount::mount(
        src.as_str(),
        path,
        "",
        MountFlags::BIND,
        None::<&std::ffi::CStr>,
    )
    .map_err(|e| NetError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("bind-mounting {src}: {e}")),
    })
}

/// Unmounts and removes a pinned namespace; a missing one is fine.
pub fn unpin(path: &Path) -> Result<(), NetError> {
    if !path.exists() {
        return Ok(());
    }
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(NetError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            });
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Brings `lo` up in the network namespace at `netns` (a pin or `/proc/PID/ns/net`):
/// what the CNI loopback plugin does, without starting a process for it. Every
/// container start with its own network namespace needs it, and exec'ing the Go
/// plugin cost more than the rest of starting a `--network none` container.
///
/// A short-lived thread joins the namespace (setns affects only the calling thread),
/// sets the flag and ends; the caller's own namespaces are untouched.
pub fn loopback_up(netns: &Path) -> Result<(), NetError> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(netns).map_err(NetError::io(netns))?;
    let up = || -> std::io::Result<()> {
        // SAFETY: setns on a namespace descriptor we opened, in this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socket takes integers; the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor socket() just returned, owned by nothing else.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: ifreq is plain data; all zeros is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass; the flags
        // member of the union is the one these requests use.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    let r = std::thread::scope(|s| s.spawn(up).join());
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NetError::Io {
            path: netns.to_path_buf(),
            source: std::io::Error::other(format!("bringing lo up: {e}")),
        }),
        Err(_) => Err(NetError::Io {
            path: netns.to_path_buf(),
            source: std::io::Error::other("bringing lo up: the thread panicked"),
        }),
    }
}
