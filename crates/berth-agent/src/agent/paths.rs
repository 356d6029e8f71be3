//! Paths inside the container's root, resolved the way the container would
//! see them: a symlink in the image (`/etc/resolv.conf -> /run/...`) must
//! not send the agent's mounts or writes outside /rootfs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up, like Linux's ELOOP limit.
const MAX_LINKS: u32 = 40;

/// `path` inside `root`, symlinks followed as if `root` were `/` and `..`
/// stopping at it (filepath-securejoin's rules). Components that do not
/// exist are kept as written, so the result can be created afterwards.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = split(Path::new(path));
    let mut current: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == "." || part.is_empty() {
            continue;
        }
        if part == ".." {
            current.pop();
            continue;
        }
        let mut full = root.to_path_buf();
        full.extend(&current);
        full.push(&part);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path}: too many levels of symbolic links"),
                    ));
                }
                let target = fs::read_link(&full)?;
                if target.is_absolute() {
                    current.clear();
                }
                for (i, c) in split(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            _ => current.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&current);
    Ok(out)
}

/// A path's components as names ("" for the root, "." and ".." kept).
fn split(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Makes `path` (already resolved) and its parents as directories, mode
/// 0755 like runc.
pub fn mkdir_all(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))
}

/// Makes `path` (already resolved) an existing file to mount over: its
/// parents as directories, then an empty file unless something is there.
pub fn make_file(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o755)
        .open(path)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))
}

/// A 9p tag or similar single path component, refused when it could name
/// something other than one entry.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// `dir` + `/` + `name` as bytes (no normalisation: what execve gets).
pub fn join_bytes(dir: &str, name: &str) -> Vec<u8> {
    let dir = if dir.is_empty() { "." } else { dir };
    let mut v = OsString::from(dir).into_vec();
    if !v.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(Path::new(name).as_os_str().as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("berth-agent-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let root = tmp("resolve");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("run/real")).unwrap();
        symlink("/run/real/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("../../../../..", root.join("etc/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();

        let r = |p| resolve_in_root(&root, p).unwrap();
        assert_eq!(r("/etc/resolv.conf"), root.join("run/real/resolv.conf"));
        assert_eq!(r("etc/hosts"), root.join("etc/hosts"));
        assert_eq!(r("/etc/up/etc/passwd"), root.join("etc/passwd"));
        assert_eq!(r("/../../x"), root.join("x"));
        assert_eq!(r("/bin/sh"), root.join("usr/bin/sh"));
        assert_eq!(r("/"), root.clone());
        assert!(resolve_in_root(&root, "/loop/x").is_err());

        make_file(&r("/new/dir/file")).unwrap();
        assert!(root.join("new/dir/file").is_file());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn names_and_joins() {
        assert!(valid_name("vol0"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert_eq!(join_bytes("/bin", "sh"), b"/bin/sh");
        assert_eq!(join_bytes("/bin/", "sh"), b"/bin/sh");
        assert_eq!(join_bytes("", "sh"), b"./sh");
    }
}
