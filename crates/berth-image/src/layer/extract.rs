//! The filesystem side of applying a layer: every operation is done relative to a directory
//! file descriptor that was opened without following symlinks, beneath the destination.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::mem;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use rustix::fs::{
    AtFlags, CWD, Dev, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;
use rustix::path::DecInt;
use tar::EntryType;

use super::pool::{self, Job, Leaf, Pool};
use super::{BUF_SIZE, LayerError};

/// Flags for opening a directory we are about to work in. `RDONLY` (not `PATH`) so the same
/// descriptor can be used for `fchown`, `fchmod`, `fsetxattr` and `futimens`.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Flags for creating a regular file: never reuse or follow what is already there.
const FILE_FLAGS: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Resolution that refuses every symlink and never leaves the starting directory.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a directory could not be resolved beneath the destination.
enum Resolve {
    /// A component does not exist (and was not to be created).
    Missing,
    /// A component is a symlink or not a directory.
    NotDirectory,
    /// Anything else.
    Io(io::Error),
}

fn classify(e: Errno) -> Resolve {
    match e {
        Errno::NOENT => Resolve::Missing,
        Errno::LOOP | Errno::NOTDIR | Errno::XDEV => Resolve::NotDirectory,
        e => Resolve::Io(e.into()),
    }
}

/// Opens the directory `rel` (normalized, non-empty, relative) beneath `root`, refusing
/// symlinks anywhere on the way; missing components are created (mode 0755) when `create`.
fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], create: bool) -> Result<OwnedFd, Resolve> {
    match rustix::fs::openat2(root, rel, DIR_FLAGS, Mode::empty(), RESOLVE) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) if create => {}
        // No openat2 (pre-5.6 kernel), or a concurrent rename made the kernel give up:
        // fall back to walking one component at a time.
        Err(Errno::NOSYS | Errno::AGAIN) => {}
        Err(e) => return Err(classify(e)),
    }
    let mut cur: Option<OwnedFd> = None;
    for comp in rel.split(|&b| b == b'/') {
        let dir = cur.as_ref().map_or(root, |fd| fd.as_fd());
        let next = match rustix::fs::openat(dir, comp, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                let created = match rustix::fs::mkdirat(dir, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) => true,
                    Err(Errno::EXIST) => false,
                    Err(e) => return Err(Resolve::Io(e.into())),
                };
                let fd =
                    rustix::fs::openat(dir, comp, DIR_FLAGS, Mode::empty()).map_err(classify)?;
                if created {
                    // mkdirat's mode is filtered through the umask.
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(|e| Resolve::Io(e.into()))?;
                }
                fd
            }
            Err(e) => return Err(classify(e)),
        };
        cur = Some(next);
    }
    cur.ok_or(Resolve::Missing)
}

/// An open directory beneath the destination.
struct DirFd {
    /// Shared with the jobs creating files in it.
    fd: Arc<OwnedFd>,
    /// The group new entries in it get from the kernel when it is setgid.
    inherit_gid: Cell<Option<u32>>,
}

impl DirFd {
    fn new(fd: OwnedFd) -> io::Result<DirFd> {
        let st = rustix::fs::fstat(&fd)?;
        Ok(DirFd {
            fd: Arc::new(fd),
            inherit_gid: Cell::new(inherit_gid(&st)),
        })
    }
}

/// The group new entries in a directory get from the kernel, if it is setgid.
pub(super) fn inherit_gid(st: &Stat) -> Option<u32> {
    (st.st_mode & 0o2000 != 0).then_some(st.st_gid)
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Directory descriptors: the destination itself and the most recently used parent
/// directory (tar streams list a directory's children together, so one slot hits nearly always).
struct Dirs {
    root: Rc<DirFd>,
    cached_path: Vec<u8>,
    cached: Option<Rc<DirFd>>,
}

impl Dirs {
    /// Whether [`Dirs::open`] of `rel` would be answered without resolving anything.
    fn is_cached(&self, rel: &[u8]) -> bool {
        rel.is_empty() || (self.cached.is_some() && self.cached_path == rel)
    }

    fn open(&mut self, rel: &[u8], create: bool) -> Result<Rc<DirFd>, Resolve> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = &self.cached
            && self.cached_path == rel
        {
            return Ok(fd.clone());
        }
        let fd = open_beneath(self.root.as_fd(), rel, create)?;
        let fd = Rc::new(DirFd::new(fd).map_err(Resolve::Io)?);
        self.remember(rel, fd.clone());
        Ok(fd)
    }

    fn remember(&mut self, rel: &[u8], fd: Rc<DirFd>) {
        self.cached_path.clear();
        self.cached_path.extend_from_slice(rel);
        self.cached = Some(fd);
    }

    /// Forgets the cached directory; called whenever a directory is removed, since the
    /// cached descriptor may then refer to a directory that no longer has its path.
    fn invalidate(&mut self) {
        self.cached = None;
    }
}

/// Normalizes a tar path into `out`: `.` components and repeated or trailing slashes are
/// dropped; absolute paths, `..` components and NUL bytes are refused. The root is `""`.
fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err("`..` component"),
            _ => {}
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    Ok(())
}

/// Splits a normalized path into its parent directory and final component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The group a directory with this metadata passes on to new entries, if it is setgid.
fn setgid_group(meta: &Meta) -> Option<u32> {
    (meta.mode.as_raw_mode() & 0o2000 != 0).then_some(meta.gid.as_raw())
}

fn is_whiteout_device(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn both(ts: Timespec) -> Timestamps {
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// Parses a PAX time (`[-]seconds[.fraction]`).
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if secs.is_empty() || !secs.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(secs).ok()?.parse().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some(match (neg, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

/// A numeric header field: what the tar crate parsed, or 0 for a field left blank (all NULs
/// or spaces), which some writers produce and Go's archive/tar also reads as 0.
fn numeric<T: Default>(raw: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(T::default()),
        parsed => parsed,
    }
}

/// Removes the directory `name` in `parent` and everything beneath it, without following
/// symlinks.
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let fd = rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    let mut children = Vec::new();
    for child in rustix::fs::Dir::read_from(&fd)? {
        let child = child?;
        let child = child.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push(child.to_vec());
        }
    }
    for child in &children {
        match rustix::fs::unlinkat(&fd, &child[..], AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::ISDIR) => remove_tree(fd.as_fd(), child)?,
            Err(e) => return Err(e.into()),
        }
    }
    drop(fd);
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Ownership, permissions and modification time of an entry.
#[derive(Clone, Copy)]
pub(super) struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: Timespec,
}

/// `SCHILY.xattr.*` records of an entry: (name, value).
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// An operation that failed and why; the caller names the entry it was for.
pub(super) type Failure = (&'static str, io::Error);

fn at(op: &'static str) -> impl FnOnce(Errno) -> Failure {
    move |e| (op, e.into())
}

/// Removes whatever is at `name` in `dir` so that an entry can take its place. Returns
/// whether that was a directory (a descriptor cached for it no longer has its path).
fn remove_existing(dir: BorrowedFd<'_>, name: &[u8]) -> Result<bool, Failure> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(false),
        Err(Errno::ISDIR) => remove_tree(dir, name)
            .map(|()| true)
            .map_err(|e| ("removing the existing directory", e)),
        Err(e) => Err(("removing the existing file", e.into())),
    }
}

/// Creates the regular file `name` in `dir` (mode 0600 until [`finish_fd`]). Later entries
/// win: whatever is there is removed first, never written through (it may be a hard link
/// shared with another path, or a symlink). Also returns whether a directory was removed.
pub(super) fn create_file(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(OwnedFd, bool), Failure> {
    let mode = Mode::from_raw_mode(0o600);
    match rustix::fs::openat(dir, name, FILE_FLAGS, mode) {
        Ok(fd) => Ok((fd, false)),
        Err(Errno::EXIST) => {
            let removed_dir = remove_existing(dir, name)?;
            let fd =
                rustix::fs::openat(dir, name, FILE_FLAGS, mode).map_err(at("creating the file"))?;
            Ok((fd, removed_dir))
        }
        Err(e) => Err(("creating the file", e.into())),
    }
}

/// Creates the symlink `name` in `dir`, replacing whatever is there. The target is stored
/// verbatim: it is never followed here. Returns whether a directory was removed.
pub(super) fn create_symlink(
    dir: BorrowedFd<'_>,
    name: &[u8],
    target: &[u8],
) -> Result<bool, Failure> {
    match rustix::fs::symlinkat(target, dir, name) {
        Ok(()) => Ok(false),
        Err(Errno::EXIST) => {
            let removed_dir = remove_existing(dir, name)?;
            rustix::fs::symlinkat(target, dir, name).map_err(at("creating the symlink"))?;
            Ok(removed_dir)
        }
        Err(e) => Err(("creating the symlink", e.into())),
    }
}

/// Owner (when `chown`), mode and xattrs through a descriptor (regular files and
/// directories).
fn set_fd_meta(
    fd: BorrowedFd<'_>,
    meta: &Meta,
    chown: bool,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), Failure> {
    if chown {
        rustix::fs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(at("chown"))?;
    }
    // After chown, which clears setuid/setgid.
    rustix::fs::fchmod(fd, meta.mode).map_err(at("chmod"))?;
    // After chown too, which clears security.capability.
    for (name, value) in xattrs {
        rustix::fs::fsetxattr(fd, &name[..], value, XattrFlags::empty())
            .map_err(at("setting an extended attribute"))?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of a regular file just written, through its descriptor.
pub(super) fn finish_fd(
    fd: BorrowedFd<'_>,
    meta: &Meta,
    chown: bool,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), Failure> {
    set_fd_meta(fd, meta, chown, xattrs)?;
    rustix::fs::futimens(fd, &both(meta.mtime)).map_err(at("setting times"))
}

/// `/proc/self/fd/<dir>[/<name>]`: a path that reaches `name` in `dir` through the
/// descriptor, for the calls that have no `*at` form. `name` is a single component, and
/// the final component is never followed by the `l*` calls.
fn proc_path(dir: BorrowedFd<'_>, name: Option<&[u8]>) -> Vec<u8> {
    let mut path = b"/proc/self/fd/".to_vec();
    path.extend_from_slice(DecInt::from_fd(dir).as_bytes());
    if let Some(name) = name {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    path
}

/// Xattrs on a symlink or special file `name` in `dir`.
fn set_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), Failure> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let path = proc_path(dir, Some(name));
    for (key, value) in xattrs {
        match rustix::fs::lsetxattr(&path[..], &key[..], value, XattrFlags::empty()) {
            Ok(()) => {}
            // The kernel refuses user.* xattrs on symlinks and special files.
            Err(Errno::PERM) if key.starts_with(b"user.") => {}
            Err(e) => return Err(("setting an extended attribute", e.into())),
        }
    }
    Ok(())
}

/// Owner (when `chown`), mode (when `chmod`), xattrs and times of a symlink or special
/// file, by name in `dir`.
pub(super) fn finish_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    meta: &Meta,
    chown: bool,
    chmod: bool,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), Failure> {
    if chown {
        rustix::fs::chownat(
            dir,
            name,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(at("chown"))?;
    }
    if chmod {
        // There is no fchmodat(AT_SYMLINK_NOFOLLOW) before Linux 6.6 and no fchmod on an
        // O_PATH descriptor, and opening a device or fifo for real has side effects:
        // pin the node with O_PATH, check it is what we made, and chmod it through
        // its /proc/self/fd link, which leads to exactly that inode.
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(at("opening the special file"))?;
        let st = rustix::fs::fstat(&fd).map_err(at("inspecting the special file"))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(("chmod", Errno::LOOP.into()));
        }
        rustix::fs::chmodat(
            CWD,
            &proc_path(fd.as_fd(), None)[..],
            meta.mode,
            AtFlags::empty(),
        )
        .map_err(at("chmod"))?;
    }
    set_xattrs_at(dir, name, xattrs)?;
    rustix::fs::utimensat(dir, name, &both(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(at("setting times"))
}

/// A set of paths kept as 64-bit hashes, so that it stays small for layers with millions
/// of entries. Two paths with the same hash only cost a needless wait for the workers
/// (a path is taken to be known when it is not), never a missed one.
#[derive(Default)]
struct Known {
    hashes: HashSet<u64>,
    state: std::hash::RandomState,
}

impl Known {
    /// Adds `path`; false if it (or a path with the same hash) was there already.
    fn insert(&mut self, path: &[u8]) -> bool {
        self.hashes.insert(self.state.hash_one(path))
    }
}

/// Applies tar entries one by one beneath a destination directory, handing regular files
/// and symlinks to a [`Pool`] of workers when it has one (see the `pool` module for how
/// the result is kept the same as applying the entries in order).
pub(super) struct Extractor {
    /// Whether what we create is owned by root:root to begin with.
    root_creds: bool,
    dirs: Dirs,
    pool: Option<Pool>,
    /// With a pool: every path this layer has created, or resolved as a directory (with
    /// every directory on the way), as hashes (see [`Known`]). A job is only ever handed
    /// out for a path not in here, so it cannot collide with anything before it; an entry
    /// for a path in here waits for the jobs in flight first.
    known: Known,
    /// Raw name of the current (or last) entry, for error messages.
    name: Vec<u8>,
    have_name: bool,
    /// Normalized path of the current entry.
    path: Vec<u8>,
    /// Raw and normalized link target of the current entry.
    link_raw: Vec<u8>,
    link: Vec<u8>,
    /// `SCHILY.xattr.*` records of the current entry.
    xattrs: Xattrs,
    /// Copy buffer for file contents.
    buf: Vec<u8>,
    /// Directories whose times are set once all their children are written.
    dir_times: Vec<(Box<[u8]>, Timespec)>,
    unpacked_size: u64,
    entries: u64,
}

impl Extractor {
    /// `root_gid`: what [`inherit_gid`] says of `root`.
    pub(super) fn new(root: OwnedFd, root_gid: Option<u32>, pool: Option<Pool>) -> Self {
        Extractor {
            root_creds: rustix::process::geteuid().is_root()
                && rustix::process::getegid().is_root(),
            dirs: Dirs {
                root: Rc::new(DirFd {
                    fd: Arc::new(root),
                    inherit_gid: Cell::new(root_gid),
                }),
                cached_path: Vec::new(),
                cached: None,
            },
            pool,
            known: Known::default(),
            name: Vec::new(),
            have_name: false,
            path: Vec::new(),
            link_raw: Vec::new(),
            link: Vec::new(),
            xattrs: Vec::new(),
            buf: vec![0; BUF_SIZE],
            dir_times: Vec::new(),
            unpacked_size: 0,
            entries: 0,
        }
    }

    fn entry_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// An error reading the stream itself (between entries, or after the last one).
    pub(super) fn stream_error(&self, source: io::Error) -> LayerError {
        LayerError::Stream {
            after: self.have_name.then(|| self.entry_name()),
            source,
        }
    }

    /// The error to report when applying stops with `e`: a file that a worker failed to
    /// create comes earlier in the stream than whatever failed after it was handed out.
    pub(super) fn first_error(&mut self, e: LayerError) -> LayerError {
        match self.pool.as_mut().map(Pool::barrier) {
            Some(Err(earlier)) => earlier,
            _ => e,
        }
    }

    fn fail(&self, op: &'static str, e: impl Into<io::Error>) -> LayerError {
        LayerError::Apply {
            entry: self.entry_name(),
            op,
            source: e.into(),
        }
    }

    fn failed(&self, (op, e): Failure) -> LayerError {
        self.fail(op, e)
    }

    fn invalid(&self, reason: impl Into<String>) -> LayerError {
        LayerError::InvalidHeader {
            entry: self.entry_name(),
            reason: reason.into(),
        }
    }

    fn unsafe_path(&self, reason: &'static str) -> LayerError {
        LayerError::UnsafePath {
            entry: self.entry_name(),
            reason,
        }
    }

    fn hard_link(&self, reason: &'static str) -> LayerError {
        LayerError::HardLink {
            entry: self.entry_name(),
            target: String::from_utf8_lossy(&self.link_raw).into_owned(),
            reason,
        }
    }

    fn resolve_error(&self, e: Resolve) -> LayerError {
        match e {
            Resolve::NotDirectory | Resolve::Missing => {
                self.unsafe_path("a parent directory is a symlink or not a directory")
            }
            Resolve::Io(e) => self.fail("opening the parent directory", e),
        }
    }

    /// Called before an entry creates, replaces or removes `path`; records the path.
    /// Returns whether the entry may be handed to the pool: only when nothing earlier in
    /// the layer used `path`, so that what a job replaces can be nothing this thread has
    /// open or cached. Otherwise a job may still be writing that path (or beneath it):
    /// waits for the jobs in flight, and the entry is applied here.
    fn claim(&mut self, path: &[u8]) -> Result<bool, LayerError> {
        let Some(pool) = &mut self.pool else {
            return Ok(false);
        };
        if self.known.insert(path) {
            Ok(true)
        } else {
            pool.barrier()?;
            Ok(false)
        }
    }

    /// Opens the directory `rel` beneath the destination (created if missing when
    /// `create`). A job in flight for a path on the way means a later entry goes through
    /// what that job creates: wait for it, so the path is resolved as it would have been
    /// in order (and refused, as it is no directory).
    fn open_dir(
        &mut self,
        rel: &[u8],
        create: bool,
    ) -> Result<Result<Rc<DirFd>, Resolve>, LayerError> {
        let Some(pool) = &mut self.pool else {
            return Ok(self.dirs.open(rel, create));
        };
        if self.dirs.is_cached(rel) {
            return Ok(self.dirs.open(rel, create));
        }
        if pool.is_pending_on_path(rel) {
            pool.barrier()?;
        }
        let opened = self.dirs.open(rel, create);
        if opened.is_ok() {
            // Every directory on the way exists now, and is this layer's business.
            for (i, &b) in rel.iter().enumerate() {
                if b == b'/' {
                    self.known.insert(&rel[..i]);
                }
            }
            self.known.insert(rel);
        }
        Ok(opened)
    }

    /// The parent directory of an entry, created if missing.
    fn parent(&mut self, parent: &[u8]) -> Result<Rc<DirFd>, LayerError> {
        self.open_dir(parent, true)?
            .map_err(|e| self.resolve_error(e))
    }

    /// Removes whatever is at `name` in `dir` so that an entry can take its place.
    fn remove_existing(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), LayerError> {
        match remove_existing(dir, name) {
            Ok(removed_dir) => {
                if removed_dir {
                    self.dirs.invalidate();
                }
                Ok(())
            }
            Err(failure) => {
                self.dirs.invalidate();
                Err(self.failed(failure))
            }
        }
    }

    /// Applies one tar entry.
    pub(super) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        self.name.clear();
        self.name.extend_from_slice(&entry.path_bytes());
        self.have_name = true;
        if entry.header().entry_type().is_pax_global_extensions() {
            // Global PAX headers carry nothing that applies to the filesystem.
            return Ok(());
        }
        self.entries += 1;

        let mut path = mem::take(&mut self.path);
        let mut link = mem::take(&mut self.link);
        let result = self.apply_entry(entry, &mut path, &mut link);
        self.path = path;
        self.link = link;
        result
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &mut Vec<u8>,
        link: &mut Vec<u8>,
    ) -> Result<(), LayerError> {
        self.xattrs.clear();
        let mut pax_mtime = None;
        let pax = entry
            .pax_extensions()
            .map_err(|e| self.invalid(format!("PAX extensions: {e}")))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| self.invalid(format!("PAX extensions: {e}")))?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    // Overlayfs metadata may only come from whiteout conversion.
                    if !name.starts_with(b"trusted.overlay.") {
                        self.xattrs
                            .push((name.to_vec(), ext.value_bytes().to_vec()));
                    }
                } else if key == b"mtime" {
                    pax_mtime = Some(
                        parse_pax_time(ext.value_bytes())
                            .ok_or_else(|| self.invalid("PAX mtime is not a number"))?,
                    );
                }
            }
        }
        normalize(&self.name, path).map_err(|reason| self.unsafe_path(reason))?;

        let header = entry.header();
        let kind = header.entry_type();
        let old = header.as_old();
        let uid = numeric(&old.uid, header.uid()).map_err(|e| self.invalid(format!("uid: {e}")))?;
        let gid = numeric(&old.gid, header.gid()).map_err(|e| self.invalid(format!("gid: {e}")))?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.invalid("uid or gid out of range"));
        };
        if uid == u32::MAX || gid == u32::MAX {
            return Err(self.invalid("uid or gid out of range"));
        }
        let mode =
            numeric(&old.mode, header.mode()).map_err(|e| self.invalid(format!("mode: {e}")))?;
        let mtime = match pax_mtime {
            Some(t) => t,
            None => Timespec {
                tv_sec: numeric(&old.mtime, header.mtime())
                    .map_err(|e| self.invalid(format!("mtime: {e}")))?
                    .try_into()
                    .map_err(|_| self.invalid("mtime out of range"))?,
                tv_nsec: 0,
            },
        };
        let meta = Meta {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            mode: Mode::from_raw_mode(mode & 0o7777),
            mtime,
        };
        let device = if matches!(kind, EntryType::Char | EntryType::Block) {
            let major = header
                .device_major()
                .map_err(|e| self.invalid(format!("device major: {e}")))?;
            let minor = header
                .device_minor()
                .map_err(|e| self.invalid(format!("device minor: {e}")))?;
            rustix::fs::makedev(major.unwrap_or(0), minor.unwrap_or(0))
        } else {
            0
        };
        if matches!(kind, EntryType::Symlink | EntryType::Link) {
            let Some(target) = entry.link_name_bytes() else {
                return Err(self.invalid("link without a target"));
            };
            self.link_raw.clear();
            self.link_raw.extend_from_slice(&target);
        }

        let (parent, base) = split(path);
        if base.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, base);
        }

        let is_dir = kind == EntryType::Directory
            || (kind == EntryType::Regular && self.name.ends_with(b"/"));
        if path.is_empty() && !is_dir {
            return Err(self.invalid("the root entry must be a directory"));
        }
        match kind {
            _ if is_dir => self.directory(path, &meta),
            EntryType::Regular | EntryType::Continuous => {
                let expected = entry.size();
                self.regular(entry, path, &meta, Some(expected))
            }
            // The tar crate fills in the holes; the stored size is not the file's size.
            EntryType::GNUSparse => self.regular(entry, path, &meta, None),
            EntryType::Symlink => self.symlink(path, &meta),
            EntryType::Link => {
                normalize(&self.link_raw, link).map_err(|reason| self.hard_link(reason))?;
                self.hardlink(path, link)
            }
            EntryType::Char => self.node(path, FileType::CharacterDevice, device, &meta),
            EntryType::Block => self.node(path, FileType::BlockDevice, device, &meta),
            EntryType::Fifo => self.node(path, FileType::Fifo, 0, &meta),
            other => Err(LayerError::Unsupported {
                entry: self.entry_name(),
                kind: char::from(other.as_byte()),
            }),
        }
    }

    /// Whether something just created in `parent` needs a chown to be owned as `meta` says.
    /// (Skipping the chown of root:root files in a root-run extraction saves a syscall for
    /// nearly every entry of a typical image.)
    fn needs_chown(&self, parent: &DirFd, meta: &Meta) -> bool {
        !(self.root_creds
            && meta.uid.is_root()
            && meta.gid.is_root()
            && parent.inherit_gid.get().is_none_or(|gid| gid == 0))
    }

    /// Hands `leaf` at `path` (in `parent`) to the pool, which the caller has.
    fn submit(
        &mut self,
        path: &[u8],
        parent: &DirFd,
        leaf: Leaf,
        meta: &Meta,
    ) -> Result<(), LayerError> {
        let (dir_part, _) = split(path);
        let job = Job {
            seq: self.entries,
            entry: self.entry_name(),
            path: path.into(),
            name_at: if dir_part.is_empty() {
                0
            } else {
                dir_part.len() + 1
            },
            dir: parent.fd.clone(),
            leaf,
            meta: *meta,
            chown: self.needs_chown(parent, meta),
            xattrs: mem::take(&mut self.xattrs),
        };
        self.pool
            .as_mut()
            .expect("submit is only called with a pool")
            .submit(job)
    }

    fn directory(&mut self, path: &[u8], meta: &Meta) -> Result<(), LayerError> {
        if path.is_empty() {
            let root = self.dirs.root.clone();
            set_fd_meta(root.as_fd(), meta, true, &self.xattrs).map_err(|f| self.failed(f))?;
            root.inherit_gid.set(setgid_group(meta));
            self.dir_times.push((Box::default(), meta.mtime));
            return Ok(());
        }
        self.claim(path)?;
        let (parent, name) = split(path);
        let pfd = self.parent(parent)?;
        let mut opaque = false;
        let mut chown = self.needs_chown(&pfd, meta);
        match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fail("inspecting the existing entry", e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    // A directory replacing a whiteout from this same layer: the whiteout
                    // deleted the lower layers' version, so this one must hide it too.
                    opaque = is_whiteout_device(&st);
                    self.remove_existing(pfd.as_fd(), name)?;
                    rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.fail("creating the directory", e))?;
                } else {
                    // An earlier entry's directory: only its metadata changes.
                    chown = true;
                }
            }
            Err(e) => return Err(self.fail("creating the directory", e)),
        }
        let fd = rustix::fs::openat(&pfd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| self.fail("opening the directory", e))?;
        set_fd_meta(fd.as_fd(), meta, chown, &self.xattrs).map_err(|f| self.failed(f))?;
        if opaque {
            rustix::fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| self.fail("marking the directory opaque", e))?;
        }
        self.dir_times.push((path.into(), meta.mtime));
        // Its children most likely come next.
        let dir = DirFd {
            fd: Arc::new(fd),
            inherit_gid: Cell::new(setgid_group(meta)),
        };
        self.dirs.remember(path, Rc::new(dir));
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut R,
        path: &[u8],
        meta: &Meta,
        expected: Option<u64>,
    ) -> Result<(), LayerError> {
        let to_pool = self.claim(path)?;
        let (parent, name) = split(path);
        let pfd = self.parent(parent)?;
        let truncated = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the layer stream ends inside this entry",
            )
        };
        if to_pool
            && let Some(size) = expected
            && size <= pool::MAX_JOB_FILE
        {
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| self.fail("reading the file's contents", e))?;
            if data.len() as u64 != size {
                return Err(self.fail("reading the file's contents", truncated()));
            }
            self.unpacked_size += size;
            return self.submit(path, &pfd, Leaf::File(data), meta);
        }

        let (fd, removed_dir) = create_file(pfd.as_fd(), name).map_err(|f| {
            self.dirs.invalidate();
            self.failed(f)
        })?;
        if removed_dir {
            self.dirs.invalidate();
        }
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail("reading the file's contents", e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| self.fail("writing the file", e))?;
            written += n as u64;
        }
        if expected.is_some_and(|expected| expected != written) {
            return Err(self.fail("reading the file's contents", truncated()));
        }
        finish_fd(
            file.as_fd(),
            meta,
            self.needs_chown(&pfd, meta),
            &self.xattrs,
        )
        .map_err(|f| self.failed(f))?;
        self.unpacked_size += written;
        Ok(())
    }

    fn symlink(&mut self, path: &[u8], meta: &Meta) -> Result<(), LayerError> {
        if self.link_raw.is_empty() {
            return Err(self.invalid("symlink without a target"));
        }
        let to_pool = self.claim(path)?;
        let (parent, name) = split(path);
        let pfd = self.parent(parent)?;
        if to_pool {
            let target = self.link_raw.clone();
            return self.submit(path, &pfd, Leaf::Symlink(target), meta);
        }
        let removed_dir = create_symlink(pfd.as_fd(), name, &self.link_raw).map_err(|f| {
            self.dirs.invalidate();
            self.failed(f)
        })?;
        if removed_dir {
            self.dirs.invalidate();
        }
        let chown = self.needs_chown(&pfd, meta);
        finish_at(pfd.as_fd(), name, meta, chown, false, &self.xattrs).map_err(|f| self.failed(f))
    }

    fn node(
        &mut self,
        path: &[u8],
        kind: FileType,
        dev: Dev,
        meta: &Meta,
    ) -> Result<(), LayerError> {
        self.claim(path)?;
        let (parent, name) = split(path);
        let pfd = self.parent(parent)?;
        let mode = Mode::from_raw_mode(0o600);
        if let Err(e) = rustix::fs::mknodat(&pfd, name, kind, mode, dev) {
            if e != Errno::EXIST {
                return Err(self.fail("creating the special file", e));
            }
            self.remove_existing(pfd.as_fd(), name)?;
            rustix::fs::mknodat(&pfd, name, kind, mode, dev)
                .map_err(|e| self.fail("creating the special file", e))?;
        }
        let chown = self.needs_chown(&pfd, meta);
        finish_at(pfd.as_fd(), name, meta, chown, true, &self.xattrs).map_err(|f| self.failed(f))
    }

    fn hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), LayerError> {
        if target == path {
            // A link to itself: nothing to do.
            return Ok(());
        }
        if target.is_empty() {
            return Err(self.hard_link("the target is the layer's root"));
        }
        // The target may be a file that a worker is still creating.
        if let Some(pool) = &mut self.pool
            && pool.is_pending(target)
        {
            pool.barrier()?;
        }
        self.claim(path)?;
        let (tparent, tname) = split(target);
        let tfd = self.open_dir(tparent, false)?.map_err(|e| match e {
            Resolve::Missing => self.hard_link("the target does not exist in this layer"),
            Resolve::NotDirectory => {
                self.hard_link("a parent of the target is a symlink or not a directory")
            }
            Resolve::Io(e) => self.fail("opening the link target's directory", e),
        })?;
        match rustix::fs::statat(&tfd, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(self.hard_link("the target is a directory"));
            }
            Ok(_) => {}
            Err(Errno::NOENT) => {
                return Err(self.hard_link("the target does not exist in this layer"));
            }
            Err(e) => return Err(self.fail("inspecting the link target", e)),
        }
        let (parent, name) = split(path);
        let pfd = self.parent(parent)?;
        // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
        if let Err(e) = rustix::fs::linkat(&tfd, tname, &pfd, name, AtFlags::empty()) {
            if e != Errno::EXIST {
                return Err(self.fail("creating the hard link", e));
            }
            self.remove_existing(pfd.as_fd(), name)?;
            rustix::fs::linkat(&tfd, tname, &pfd, name, AtFlags::empty())
                .map_err(|e| self.fail("creating the hard link", e))?;
        }
        Ok(())
    }

    /// `parent/.wh.name` → a 0:0 character device `parent/name`;
    /// `parent/.wh..wh..opq` → `trusted.overlay.opaque=y` on `parent`.
    fn whiteout(&mut self, parent: &[u8], base: &[u8]) -> Result<(), LayerError> {
        let pfd = self.parent(parent)?;
        if base == OPAQUE_MARKER {
            return rustix::fs::fsetxattr(&pfd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| self.fail("marking the directory opaque", e));
        }
        let target = &base[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(self.unsafe_path("whiteout of no file"));
        }
        if self.pool.is_some() {
            let mut path = parent.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(target);
            self.claim(&path)?;
        }
        match rustix::fs::mknodat(
            &pfd,
            target,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                // Whiteouts only delete from lower layers; what this layer itself put there
                // stays. A file already hides the lower ones; a directory must be made opaque
                // so that it does not merge with them.
                let st = rustix::fs::statat(&pfd, target, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.fail("inspecting the whiteout's target", e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let fd = rustix::fs::openat(&pfd, target, DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.fail("opening the whiteout's target", e))?;
                    rustix::fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                        .map_err(|e| self.fail("marking the directory opaque", e))?;
                }
                Ok(())
            }
            Err(e) => Err(self.fail("creating the whiteout device", e)),
        }
    }

    /// Waits for the workers, sets the directories' times, now that nothing more will be
    /// written into them, and returns (unpacked size, entries).
    pub(super) fn finish(mut self) -> Result<(u64, u64), LayerError> {
        if let Some(pool) = &mut self.pool {
            pool.barrier()?;
        }
        let dir_times = mem::take(&mut self.dir_times);
        let root = self.dirs.root.clone();
        for (path, mtime) in &dir_times {
            let opened;
            let fd = if path.is_empty() {
                root.as_fd()
            } else {
                match open_beneath(root.as_fd(), path, false) {
                    Ok(fd) => {
                        opened = fd;
                        opened.as_fd()
                    }
                    // Replaced by a later entry (which set its own times).
                    Err(Resolve::Missing | Resolve::NotDirectory) => continue,
                    Err(Resolve::Io(e)) => {
                        return Err(LayerError::Apply {
                            entry: String::from_utf8_lossy(path).into_owned(),
                            op: "opening the directory to set its times",
                            source: e,
                        });
                    }
                }
            };
            rustix::fs::futimens(fd, &both(*mtime)).map_err(|e| LayerError::Apply {
                entry: String::from_utf8_lossy(path).into_owned(),
                op: "setting times",
                source: e.into(),
            })?;
        }
        Ok((self.unpacked_size, self.entries))
    }
}
