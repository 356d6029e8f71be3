//! `cp` between a container and the host, in both directions.
//!
//! Paths inside the container are resolved with `openat2(RESOLVE_IN_ROOT)`
//! against the container's root (its live root via /proc/PID/root, or its
//! overlay mounted privately while stopped), so a symlink in the container can
//! never lead the copy out to the host. Data travels as a tar stream: out of
//! the container with the `tar` crate (symlinks not followed); into it with
//! berth's own layer extractor, which refuses any path through a symlink.

use crate::containers::ContainerError;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::Engine;
use crate::containers::Status;
use crate::run::RunError;

fn io(p: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RunError {
    let path = p.into();
    move |source| RunError::Io { path, source }
}

fn user_err(msg: String) -> RunError {
    RunError::Spec(crate::spec::SpecError(msg))
}

/// The container's root directory, kept available for the copy.
struct Root {
    fd: OwnedFd,
    mounted: Option<PathBuf>,
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(m) = &self.mounted {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

impl Engine {
    fn container_root(&self, name: &str) -> Result<(Root, String), RunError> {
        let c = self.containers().resolve(name)?;
        if c.options.isolation == crate::containers::vm::Isolation::Vm {
            // Its files live in the VM's own disk, not in a host overlay, and its
            // PID is the hypervisor's: /proc/PID/root would be the host's root.
            return Err(ContainerError::State(format!(
                "container {} runs in a VM: cp does not reach into a VM's disk yet (use exec with tar, or a volume)",
                c.name
            ))
            .into());
        }
        let open = |p: &Path| {
            rustix::fs::open(
                p,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io(p)(e.into()))
        };
        if matches!(c.state.status, Some(Status::Running | Status::Paused)) && c.state.pid > 0 {
            let p = PathBuf::from(format!("/proc/{}/root", c.state.pid));
            return Ok((
                Root {
                    fd: open(&p)?,
                    mounted: None,
                },
                c.id,
            ));
        }
        // Stopped: its overlay, mounted on the host just for the copy.
        let data = self.overlay_for(&c)?;
        let target = self.containers().dir(&c.id).join("rootfs");
        berth_runtime::linux::rootfs::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            0,
            Some(&data),
        )
        .map_err(io(&target))?;
        let root = Root {
            fd: open(&target)?,
            mounted: Some(target),
        };
        Ok((root, c.id))
    }

    /// `cp CONTAINER:SRC DEST`.
    pub fn copy_from(&self, name: &str, src: &str, dest: &Path) -> Result<(), RunError> {
        let (root, _) = self.container_root(name)?;
        let contents_only = src.ends_with("/.");
        let fd = rustix::fs::openat2(
            &root.fd,
            src,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
        .map_err(|e| {
            user_err(format!(
                "Could not find the file {src} in container {name}: {e}"
            ))
        })?;
        // fstat, not a stat of /proc/self/fd/N (that would describe the magic link).
        let st = rustix::fs::fstat(&fd).map_err(|e| io(src)(e.into()))?;
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let is_dir = kind == rustix::fs::FileType::Directory;
        let is_symlink = kind == rustix::fs::FileType::Symlink;
        let base = Path::new(src.trim_end_matches("/.").trim_end_matches('/'))
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "root".into());
        // Docker: into an existing directory, else as the destination itself.
        let target = if dest.is_dir() && !contents_only {
            dest.join(&base)
        } else {
            dest.to_path_buf()
        };
        let mut tmp = tempfile::tempfile_in(self.root().join("image").join("tmp"))
            .map_err(io(self.root()))?;
        {
            let mut b = tar::Builder::new(&mut tmp);
            b.follow_symlinks(false);
            if is_dir {
                // Walk relative to the directory itself (entered by descriptor),
                // so no path string ever re-resolves through the container.
                let dirfd = rustix::fs::openat2(
                    &root.fd,
                    src,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT,
                )
                .map_err(|e| io(src)(e.into()))?;
                let back = rustix::fs::open(
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(".")(e.into()))?;
                rustix::process::fchdir(&dirfd).map_err(|e| io(src)(e.into()))?;
                let r = b.append_dir_all(".", ".");
                let _ = rustix::process::fchdir(&back);
                r.map_err(io(src))?;
            } else if is_symlink {
                let link =
                    rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| io(src)(e.into()))?;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, "file", std::ffi::OsStr::from_bytes(link.as_bytes()))
                    .map_err(io(src))?;
            } else {
                let f = rustix::fs::openat2(
                    &root.fd,
                    src,
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT,
                )
                .map_err(|e| io(src)(e.into()))?;
                let mut f = File::from(f);
                let fmeta = f.metadata().map_err(io(src))?;
                let mut h = tar::Header::new_gnu();
                h.set_metadata(&fmeta);
                b.append_data(&mut h, "file", &mut f).map_err(io(src))?;
            }
            b.finish().map_err(io(src))?;
        }
        tmp.seek(SeekFrom::Start(0)).map_err(io(src))?;
        let mut ar = tar::Archive::new(tmp);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        if is_dir {
            fs::create_dir_all(&target).map_err(io(&target))?;
            ar.unpack(&target).map_err(io(&target))?;
        } else {
            for e in ar.entries().map_err(io(&target))? {
                let mut e = e.map_err(io(&target))?;
                e.unpack(&target).map_err(io(&target))?;
            }
        }
        Ok(())
    }

    /// `cp SRC CONTAINER:DEST`.
    pub fn copy_to(&self, name: &str, src: &Path, dest: &str) -> Result<(), RunError> {
        let meta = fs::symlink_metadata(src).map_err(io(src))?;
        let (root, _) = self.container_root(name)?;
        let open_dir = |p: &str| {
            rustix::fs::openat2(
                &root.fd,
                p,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            )
        };
        let contents_only = src.to_string_lossy().ends_with("/.");
        let src_base = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        // Into an existing directory, else as the destination (its parent must exist).
        let (dir, name_in_dir) = match open_dir(dest) {
            Ok(fd) => (fd, if contents_only { None } else { Some(src_base) }),
            Err(_) => {
                let d = Path::new(dest);
                let parent = d
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/".into());
                let fd = open_dir(if parent.is_empty() { "/" } else { &parent }).map_err(|e| {
                    user_err(format!(
                        "Could not find the directory {parent} in container {name}: {e}"
                    ))
                })?;
                let n = d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| user_err(format!("invalid destination {dest}")))?;
                (fd, Some(n))
            }
        };
        let mut tmp = tempfile::tempfile_in(self.root().join("image").join("tmp"))
            .map_err(io(self.root()))?;
        {
            let mut b = tar::Builder::new(&mut tmp);
            b.follow_symlinks(false);
            let top = name_in_dir.clone().unwrap_or_else(|| ".".into());
            if meta.is_dir() {
                b.append_dir_all(&top, src).map_err(io(src))?;
            } else if top == "." {
                return Err(user_err(format!(
                    "cannot copy file {} onto a directory's contents",
                    src.display()
                )));
            } else {
                b.append_path_with_name(src, &top).map_err(io(src))?;
            }
            b.finish().map_err(io(src))?;
        }
        tmp.seek(SeekFrom::Start(0)).map_err(io(src))?;
        let target = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        berth_image::layer::apply_layer(tmp, &target)
            .map_err(|e| user_err(format!("copying into {name}:{dest}: {e}")))?;
        Ok(())
    }
}
