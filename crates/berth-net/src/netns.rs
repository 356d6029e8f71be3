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
