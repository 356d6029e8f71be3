//! The guest's initramfs: `berth-agent` as /init and nothing else.
//!
//! Written in the kernel's "newc" cpio format (uncompressed: the kernel
//! needs no decompressor and unpacking is a copy), once per agent binary,
//! and shared by every VM.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{VmError, io_at};

/// Appends newc cpio entries.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime: reproducible
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            write!(self.out, "{f:08x}").expect("writing to a Vec");
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory.
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// The initramfs for `agent`, built into `dir` on first use and written
/// atomically. Keyed by the agent file's identity (path, inode, size,
/// mtime), so a start does not hash the binary and a rebuilt agent gets a
/// new initramfs.
pub fn for_agent(agent: &Path, dir: &Path) -> Result<PathBuf, VmError> {
    let out = dir.join(file_name(agent)?);
    if out.is_file() {
        return Ok(out);
    }
    let bin = std::fs::read(agent).map_err(io_at(agent))?;
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let mut c = Cpio::default();
    for d in ["dev", "proc", "sys", "run", "rootfs", "tmp"] {
        c.dir(d, 0o755);
    }
    // The kernel opens /dev/console as init's stdin/stdout/stderr.
    c.char_dev("dev/console", 0o600, 5, 1);
    c.file("init", 0o755, &bin);
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_at(dir))?;
    std::fs::write(tmp.path(), c.finish()).map_err(io_at(tmp.path()))?;
    tmp.persist(&out).map_err(|e| VmError::Io {
        path: out.clone(),
        source: e.error,
    })?;
    Ok(out)
}

/// The initramfs file name for `agent`: `initramfs-<key>.cpio`.
pub fn file_name(agent: &Path) -> Result<String, VmError> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(agent).map_err(io_at(agent))?;
    let id = format!(
        "{}\0{}\0{}\0{}.{}",
        agent.display(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    );
    Ok(format!(
        "initramfs-{}.cpio",
        hex16(&Sha256::digest(id.as_bytes()))
    ))
}

/// Removes the initramfs files in `dir` other than `keep` (those of agents
/// rebuilt or moved since; a running VM has its own in memory). Bytes freed.
pub fn prune(dir: &Path, keep: &str) -> u64 {
    let mut freed = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != keep && name.starts_with("initramfs-") && name.ends_with(".cpio") {
            freed += e.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(e.path());
        }
    }
    freed
}

fn hex16(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::default();
        c.dir("dev", 0o755);
        c.file("init", 0o755, b"abcde");
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // Header (110) + "dev\0" (4) = 114, padded to 116.
        assert_eq!(&out[116..122], b"070701");
        let init = 116;
        // mode field of "init": regular file 0755.
        assert_eq!(&out[init + 14..init + 22], b"000081ed");
        // filesize 5.
        assert_eq!(&out[init + 54..init + 62], b"00000005");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
        assert!(out.windows(5).any(|w| w == b"abcde"));
    }
}
