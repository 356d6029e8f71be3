//! The container's file system, built inside its own mount namespace: the
//! root (an overlay or a bind of the bundle's rootfs), the OCI mounts, /dev,
//! pivot_root, masked and read-only paths. Everything here runs in the child
//! after clone(CLONE_NEWNS), so every mount vanishes with the namespace — a
//! crashed container leaves no mount on the host.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use rustix::fs::{Mode, OFlags, ResolveFlags};

/// An error with the path it concerns.
pub fn at(what: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// mount(2) with raw flags (propagation flags included, which rustix splits out).
pub fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(|s| cstr(s.as_bytes())).transpose()?;
    let target_c = cstr(target.as_os_str().as_bytes())?;
    let fstype = fstype.map(|s| cstr(s.as_bytes())).transpose()?;
    let data = data
        .filter(|d| !d.is_empty())
        .map(|s| cstr(s.as_bytes()))
        .transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // outlives the call.
    let r = unsafe {
        libc::mount(
            p(&src),
            target_c.as_ptr(),
            p(&fstype),
            flags,
            p(&data) as *const libc::c_void,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(at(
            format!("mount {}", target.display()),
            io::Error::last_os_error(),
        ))
    }
}

/// Mount flags and leftover data string from OCI mount options, as runc reads them.
pub fn parse_options(opts: &[String]) -> (libc::c_ulong, libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut propagation: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let rec = if o.starts_with('r') { libc::MS_REC } else { 0 };
                propagation |= rec
                    | match o.trim_start_matches('r') {
                        "private" => libc::MS_PRIVATE,
                        "shared" => libc::MS_SHARED,
                        "slave" => libc::MS_SLAVE,
                        _ => libc::MS_UNBINDABLE,
                    };
                (0, 0)
            }
            other => {
                data.push(other.to_string());
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, propagation, data.join(","))
}

/// Opens (creating as a directory or an empty file) `dest` inside the root
/// directory `root`, resolving symlinks *within* the root, and returns an
/// O_PATH descriptor usable as a mount target via /proc/self/fd.
pub fn open_in_root(root: &OwnedFd, dest: &Path, dir: bool) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let path_flags = OFlags::PATH | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::openat2(root, dest, path_flags, Mode::empty(), resolve) {
        return Ok(fd);
    }
    // Create the missing components one by one, each resolved within the root.
    let mut cur = std::path::PathBuf::from("/");
    let comps: Vec<_> = dest
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let parent = rustix::fs::openat2(
            root,
            &cur,
            OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
            resolve,
        )
        .map_err(|e| at(cur.display(), e.into()))?;
        cur.push(c);
        let last = i + 1 == comps.len();
        let exists = rustix::fs::openat2(root, &cur, path_flags, Mode::empty(), resolve).is_ok();
        if exists {
            continue;
        }
        let name = c.as_os_str();
        if last && !dir {
            let f = rustix::fs::openat(
                &parent,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            );
            f.map_err(|e| at(cur.display(), e.into()))?;
        } else {
            match rustix::fs::mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(at(cur.display(), e.into())),
            }
        }
    }
    rustix::fs::openat2(root, dest, path_flags, Mode::empty(), resolve)
        .map_err(|e| at(dest.display(), e.into()))
}

fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// Sets up one OCI mount under the root.
fn mount_one(root_fd: &OwnedFd, m: &Mount) -> io::Result<()> {
    let opts = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&opts);
    let kind = m.typ().as_deref().unwrap_or("none");
    let is_bind = kind == "bind" || flags & libc::MS_BIND != 0;
    let dest = m.destination();
    let src = m.source().as_ref().map(|s| s.display().to_string());
    let dir = if is_bind {
        src.as_deref()
            .is_none_or(|s| fs::metadata(s).map(|m| m.is_dir()).unwrap_or(true))
    } else {
        true
    };
    let target_fd = open_in_root(root_fd, dest, dir)
        .map_err(|e| at(format!("mount destination {}", dest.display()), e))?;
    let target = fd_path(&target_fd);
    let wrap = |e: io::Error| {
        at(
            format!(
                "mount {} on {}",
                src.as_deref().unwrap_or(kind),
                dest.display()
            ),
            e,
        )
    };
    if is_bind {
        let src = src.as_deref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bind mount on {} has no source", dest.display()),
            )
        })?;
        mount(
            Some(src),
            &target,
            None,
            libc::MS_BIND | (flags & libc::MS_REC),
            None,
        )
        .map_err(wrap)?;
        let extra = flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 {
            // Flags on a bind mount take a remount, on the new mount: the old
            // descriptor still names the directory underneath it.
            let fresh = open_in_root(root_fd, dest, dir).map_err(wrap)?;
            mount(
                None,
                &fd_path(&fresh),
                None,
                libc::MS_BIND | libc::MS_REMOUNT | extra,
                None,
            )
            .map_err(wrap)?;
        }
    } else {
        mount(
            src.as_deref().or(Some(kind)),
            &target,
            Some(kind),
            flags,
            Some(&data),
        )
        .map_err(wrap)?;
    }
    if propagation != 0 {
        let fresh = open_in_root(root_fd, dest, dir).map_err(wrap)?;
        mount(None, &fd_path(&fresh), None, propagation, None).map_err(wrap)?;
    }
    Ok(())
}

fn default_devices() -> Vec<(&'static str, u32, u32)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
}

/// A device node to create: type bits, major, minor, mode, owner.
struct Node {
    kind: libc::mode_t,
    major: u32,
    minor: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn make_device(dev_root: &Path, path: &Path, n: Node) -> io::Result<()> {
    let rel = path.strip_prefix("/dev").unwrap_or(path);
    let full = dev_root.join(rel.strip_prefix("/").unwrap_or(rel));
    if let Some(p) = full.parent() {
        fs::create_dir_all(p)?;
    }
    let _ = fs::remove_file(&full);
    let c = cstr(full.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated path; mknod takes plain integers otherwise.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            n.kind | (n.mode & 0o7777),
            libc::makedev(n.major, n.minor),
        )
    };
    if r != 0 {
        return Err(at(full.display(), io::Error::last_os_error()));
    }
    // SAFETY: as above; chown takes a path and two integers.
    let r = unsafe { libc::chown(c.as_ptr(), n.uid, n.gid) };
    if r != 0 {
        return Err(at(full.display(), io::Error::last_os_error()));
    }
    // mknod applied our umask (0666 became 0644): set the mode asked for.
    // SAFETY: as above; chmod takes a path and an integer.
    if unsafe { libc::chmod(c.as_ptr(), n.mode & 0o7777) } != 0 {
        return Err(at(full.display(), io::Error::last_os_error()));
    }
    Ok(())
}

/// Creates the device nodes and the usual /dev symlinks.
fn populate_dev(rootfs: &Path, devices: &[LinuxDevice]) -> io::Result<()> {
    let dev = rootfs.join("dev");
    for (p, maj, min) in default_devices() {
        if devices.iter().any(|d| d.path() == Path::new(p)) {
            continue;
        }
        make_device(
            &dev,
            Path::new(p),
            Node {
                kind: libc::S_IFCHR,
                major: maj,
                minor: min,
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
        )?;
    }
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        make_device(
            &dev,
            d.path(),
            Node {
                kind,
                major: d.major() as u32,
                minor: d.minor() as u32,
                mode: d.file_mode().unwrap_or(0o666),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            },
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    if dev.join("pts").is_dir() {
        let _ = fs::remove_file(dev.join("ptmx"));
        std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    }
    Ok(())
}

/// Builds the root file system and pivots into it. `overlay` is the data
/// string of an overlay mount to place on the bundle's rootfs first.
pub fn setup(spec: &Spec, rootfs: &Path, overlay: Option<&str>) -> io::Result<()> {
    // Nothing we mount may propagate back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    match overlay {
        Some(data) => mount(Some("overlay"), rootfs, Some("overlay"), 0, Some(data))?,
        // pivot_root needs the new root to be a mount point.
        None => mount(
            Some(&rootfs.display().to_string()),
            rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?,
    }
    let root_fd = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(rootfs.display(), e.into()))?;
    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        mount_one(&root_fd, m)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        let devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().clone())
            .unwrap_or_default();
        populate_dev(rootfs, &devices)?;
    }
    // pivot_root(".", ".") stacks the old root under the new one; detaching it
    // leaves only the container's tree (runc's approach: no put_old directory).
    std::env::set_current_dir(rootfs).map_err(|e| at(rootfs.display(), e))?;
    rustix::process::pivot_root(".", ".").map_err(|e| at("pivot_root", e.into()))?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| at("detach old root", e.into()))?;
    std::env::set_current_dir("/")?;
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        let path = Path::new(&p);
        match fs::metadata(path) {
            Ok(md) if md.is_dir() => {
                mount(Some("tmpfs"), path, Some("tmpfs"), libc::MS_RDONLY, None)?
            }
            Ok(_) => mount(Some("/dev/null"), path, None, libc::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    for p in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        let path = Path::new(&p);
        if path.exists() {
            mount(Some(&p), path, None, libc::MS_BIND | libc::MS_REC, None)?;
            mount(
                None,
                path,
                None,
                libc::MS_BIND
                    | libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_REC
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                None,
            )?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = |v: &[&str]| parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (f, p, d) = o(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(f, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(p, 0);
        assert_eq!(d, "mode=755,size=65536k");
        let (f, p, _) = o(&["rbind", "ro", "rprivate"]);
        assert_eq!(f, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(p, libc::MS_REC | libc::MS_PRIVATE);
        let (f, _, _) = o(&["ro", "rw"]);
        assert_eq!(f, 0);
    }
}
