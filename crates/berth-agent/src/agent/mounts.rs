//! The agent's own mounts and the container's root file system.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_agent::{Boot, FileContent, Mount, MountSource};

use super::paths::{make_file, mkdir_all, resolve_in_root, valid_name};
use super::sys::{check, cpath, err_text, log, mount};

/// Where the container's root file system is assembled; processes chroot
/// into it.
pub const ROOT: &str = "/rootfs";
/// The image's file system.
const LOWER: &str = "/run/lower";
/// The writable layer (ext4 or tmpfs) holding the overlay's upper and work.
const RW: &str = "/run/rw";
/// Contents of `Boot.files`.
const FILES: &str = "/run/files";
/// 9p shares, one directory per tag.
const SHARES: &str = "/run/shares";

/// 9p options: virtio transport, the Linux dialect, 256 KiB messages, and
/// no caching beyond what shared mmap needs so host and guest writers see
/// each other's changes at once.
const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap";

/// Mount flags and file system data parsed from `Mount.options`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// MS_* flags.
    pub flags: libc::c_ulong,
    /// Everything else (`size=64m`, `mode=1777`), comma-joined for mount(2).
    pub data: String,
}

/// Splits mount options into flags and data; propagation options (the
/// guest has no other mount namespace to propagate to) and `bind`/`rbind`
/// (implied by the source) are dropped.
pub fn parse_options(opts: &[String]) -> Options {
    let mut out = Options::default();
    let mut data = Vec::new();
    for o in opts.iter().flat_map(|o| o.split(',')) {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o {
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
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "" | "defaults" | "bind" | "rbind" | "private" | "rprivate" | "shared" | "rshared"
            | "slave" | "rslave" | "unbindable" | "runbindable" => (0, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        out.flags = (out.flags | set) & !clear;
    }
    out.data = data.join(",");
    out
}

/// The agent's own file systems in the initramfs: /proc, /sys, /dev, /run.
pub fn early() -> io::Result<()> {
    for d in ["/proc", "/sys", "/dev", "/run", ROOT] {
        mkdir_all(Path::new(d))?;
    }
    let nse = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (src, target, fstype, flags, data) in [
        ("proc", "/proc", "proc", nse, ""),
        ("sysfs", "/sys", "sysfs", nse, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
    ] {
        match mount(src, Path::new(target), fstype, flags, data) {
            Ok(()) => {}
            // Already there (a kernel that mounts devtmpfs by itself).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("mount {target}: {e}"))),
        }
    }
    for d in [LOWER, RW, FILES, SHARES] {
        mkdir_all(Path::new(d))?;
    }
    Ok(())
}

/// Errors of `boot`, naming what failed.
type BootResult<T> = Result<T, String>;

fn at(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> String {
    move |e| format!("{what}: {}", err_text(&e))
}

/// Applies `Boot`: the root file system, the standard mounts, the files,
/// the mounts, the host name.
pub fn boot(b: &Boot) -> BootResult<()> {
    use super::sys::trace;
    trace("boot: begin");
    // First: nothing the container runs may share random numbers or the
    // time with the snapshot this VM may have been resumed from.
    super::sys::reseed(&b.seed).map_err(at("reseeding the random number generator"))?;
    super::sys::set_clock(b.clock_ns).map_err(at("setting the clock"))?;
    root(b)?;
    trace("boot: root mounted");
    standard()?;
    trace("boot: standard mounts");
    for (i, f) in b.files.iter().enumerate() {
        file(i, f)?;
    }
    let mut shares = HashSet::new();
    for m in &b.mounts {
        one_mount(m, &mut shares)?;
    }
    trace("boot: files and mounts");
    if b.rootfs.read_only {
        // Last, as runc does: every mount point above could still be made.
        mount(
            "",
            Path::new(ROOT),
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            "",
        )
        .map_err(at("remount / read-only"))?;
    }
    if !b.hostname.is_empty() {
        // SAFETY: the pointer and length describe the hostname's bytes.
        let r = unsafe { libc::sethostname(b.hostname.as_ptr().cast(), b.hostname.len()) };
        check(r).map_err(at(format!("sethostname {:?}", b.hostname)))?;
    }
    if let Err(e) = loopback_up() {
        log!("bringing up lo: {e}");
    }
    super::net::configure(&b.interfaces)?;
    trace("boot: done");
    Ok(())
}

/// The overlay at /rootfs: the image below, the writable layer above. A
/// read-only root is an overlay too, with a throw-away tmpfs upper, so
/// mount points missing from the image can still be made before / goes
/// read-only.
fn root(b: &Boot) -> BootResult<()> {
    let r = &b.rootfs;
    // Big reads: every request to an emulated disk is expensive, and the first
    // program of a container faults its whole binary in.
    for dev in std::iter::once(&r.image).chain(r.writable.as_ref()) {
        super::sys::flush_block_cache(dev).map_err(at(format!("flushing {dev}")))?;
        if let Some(name) = dev.strip_prefix("/dev/") {
            let knob = format!("/sys/block/{name}/queue/read_ahead_kb");
            if let Err(e) = std::fs::write(&knob, "4096") {
                log!("{knob}: {e}");
            }
        }
    }
    let fstype = if r.image_fstype.is_empty() {
        "erofs"
    } else {
        &r.image_fstype
    };
    mount(&r.image, Path::new(LOWER), fstype, libc::MS_RDONLY, "")
        .map_err(at(format!("mount image {} ({fstype})", r.image)))?;
    super::sys::trace("boot: image mounted");
    match (&r.writable, r.read_only) {
        // noinit_itable: the template is made with lazy inode tables; zeroing them
        // in the background would fill the VM's sparse layer for nothing.
        (Some(dev), false) => mount(dev, Path::new(RW), "ext4", 0, "noinit_itable")
            .map_err(at(format!("mount writable layer {dev} (ext4)")))?,
        _ => mount("tmpfs", Path::new(RW), "tmpfs", 0, "mode=0755")
            .map_err(at("mount tmpfs for the writable layer"))?,
    }
    super::sys::trace("boot: writable layer mounted");
    let upper = Path::new(RW).join("upper");
    let work = Path::new(RW).join("work");
    mkdir_all(&upper).map_err(|e| e.to_string())?;
    mkdir_all(&work).map_err(|e| e.to_string())?;
    let data = format!(
        "lowerdir={LOWER},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount("overlay", Path::new(ROOT), "overlay", 0, &data).map_err(at("mount overlay on /"))
}

/// A directory in the root to mount on, made if missing.
fn dir_in_root(target: &str) -> BootResult<PathBuf> {
    let p = resolve_in_root(Path::new(ROOT), target).map_err(at(target))?;
    mkdir_all(&p).map_err(|e| e.to_string())?;
    Ok(p)
}

/// /proc, /sys, /dev (a tmpfs with the usual nodes, as docker makes it),
/// /dev/pts, /dev/shm, and cgroup2 when the kernel has it.
fn standard() -> BootResult<()> {
    let nse = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let proc_ = dir_in_root("/proc")?;
    mount("proc", &proc_, "proc", nse, "").map_err(at("mount /proc"))?;
    let sys = dir_in_root("/sys")?;
    mount("sysfs", &sys, "sysfs", nse | libc::MS_RDONLY, "").map_err(at("mount /sys"))?;
    let cgroup = sys.join("fs/cgroup");
    if cgroup.is_dir()
        && let Err(e) = mount("cgroup2", &cgroup, "cgroup2", nse | libc::MS_RDONLY, "")
    {
        log!("mount /sys/fs/cgroup: {}", err_text(&e));
    }
    let dev = dir_in_root("/dev")?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    )
    .map_err(at("mount /dev"))?;
    for (name, major, minor) in DEV_NODES {
        mknod(&dev.join(name), *major, *minor).map_err(at(format!("mknod /dev/{name}")))?;
    }
    for (name, target) in DEV_LINKS {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(at(format!("symlink /dev/{name}")))?;
    }
    let pts = dev.join("pts");
    mkdir_all(&pts).map_err(|e| e.to_string())?;
    mount(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    .map_err(at("mount /dev/pts"))?;
    let shm = dev.join("shm");
    mkdir_all(&shm).map_err(|e| e.to_string())?;
    mount("shm", &shm, "tmpfs", nse, "mode=1777,size=65536k").map_err(at("mount /dev/shm"))?;
    Ok(())
}

/// Character devices in the container's /dev: (name, major, minor).
const DEV_NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks in the container's /dev.
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
    ("ptmx", "pts/ptmx"),
];

/// A character device, mode 0666.
fn mknod(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a NUL-terminated path that outlives the call.
    check(unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    })?;
    // The umask took bits off.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
}

/// A generated file: written to the agent's tmpfs, bind mounted over its
/// target (made if missing).
fn file(i: usize, f: &FileContent) -> BootResult<()> {
    let src = Path::new(FILES).join(i.to_string());
    fs::write(&src, &f.contents).map_err(at(src.display()))?;
    let target = resolve_in_root(Path::new(ROOT), &f.target).map_err(at(&f.target))?;
    if let Err(e) = make_file(&target) {
        log!("skipping {}: {e}", f.target);
        return Ok(());
    }
    mount(&src.to_string_lossy(), &target, "", libc::MS_BIND, "")
        .map_err(at(format!("bind mount {}", f.target)))
}

/// One `Mount`, with the 9p share it needs mounted first.
fn one_mount(m: &Mount, shares: &mut HashSet<String>) -> BootResult<()> {
    let opts = parse_options(&m.options);
    let ro = if m.read_only { libc::MS_RDONLY } else { 0 };
    let flags = opts.flags | ro;
    match &m.source {
        MountSource::Tmpfs => {
            let target = dir_in_root(&m.target)?;
            mount("tmpfs", &target, "tmpfs", flags, &opts.data)
                .map_err(at(format!("mount tmpfs on {}", m.target)))
        }
        MountSource::Share { tag, path } => {
            let share = share_dir(tag, shares)?;
            let src = resolve_in_root(&share, path).map_err(at(format!("{tag}:{path}")))?;
            let meta = fs::metadata(&src).map_err(at(format!("share {tag} path {path:?}")))?;
            let target = resolve_in_root(Path::new(ROOT), &m.target).map_err(at(&m.target))?;
            if meta.is_dir() {
                mkdir_all(&target).map_err(|e| e.to_string())?;
            } else {
                make_file(&target).map_err(|e| e.to_string())?;
            }
            mount(
                &src.to_string_lossy(),
                &target,
                "",
                libc::MS_BIND | libc::MS_REC,
                "",
            )
            .map_err(at(format!("bind mount {tag}:{path} on {}", m.target)))?;
            if flags != 0 {
                // Bind mounts take their flags from a remount.
                mount(
                    "",
                    &target,
                    "",
                    libc::MS_REMOUNT | libc::MS_BIND | flags,
                    "",
                )
                .map_err(at(format!("remount {} with its options", m.target)))?;
            }
            Ok(())
        }
    }
}

/// /run/shares/<tag>, the 9p share mounted there on first use.
fn share_dir(tag: &str, mounted: &mut HashSet<String>) -> BootResult<PathBuf> {
    if !valid_name(tag) {
        return Err(format!("bad 9p share tag {tag:?}"));
    }
    let dir = Path::new(SHARES).join(tag);
    if !mounted.contains(tag) {
        mkdir_all(&dir).map_err(|e| e.to_string())?;
        mount(tag, &dir, "9p", 0, NINEP_OPTIONS).map_err(at(format!("mount 9p share {tag}")))?;
        mounted.insert(tag.to_string());
    }
    Ok(dir)
}

/// `ip link set lo up`.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned right after.
    let s =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: s is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming "lo"; the kernel fills its flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: req is a valid ifreq; the kernel only reads it.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Options {
        parse_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o = opts(&["nosuid", "nodev", "noexec", "size=65536k", "mode=1777"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        assert_eq!(o.data, "size=65536k,mode=1777");

        let o = opts(&["ro,rbind,rprivate", "rw", "noatime"]);
        assert_eq!(o.flags, libc::MS_NOATIME);
        assert_eq!(o.data, "");

        let o = opts(&["noexec", "exec", "ro", "uid=1000"]);
        assert_eq!(o.flags, libc::MS_RDONLY);
        assert_eq!(o.data, "uid=1000");

        assert_eq!(opts(&[]), Options::default());
    }
}
