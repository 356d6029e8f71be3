//! Where the guest kernel and the agent come from.
//!
//! The kernel is built by `scripts/kernel.sh` into
//! `$BERTH_CACHE/kernel/<key>/vmlinux` (`$BERTH_CACHE` defaults to
//! `~/.cache/berth`) with `current` pointing at the newest; the agent by
//! `scripts/agent.sh`. `install.sh` copies both to `/usr/local/lib/berth`.
//! `BERTH_KERNEL` and `BERTH_AGENT` name files directly.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::VmError;

/// Where installed VM assets live.
pub const LIB_DIR: &str = "/usr/local/lib/berth";

/// A guest kernel.
#[derive(Clone, Debug, Serialize)]
pub struct GuestKernel {
    /// The vmlinux file.
    pub path: PathBuf,
    /// Its release (`uname -r` in the guest), when known.
    pub release: Option<String>,
}

/// berth's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_CACHE") {
        return d.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/berth")
}

/// The guest kernel to boot.
pub fn kernel() -> Result<GuestKernel, VmError> {
    let mut candidates = Vec::new();
    if let Some(k) = std::env::var_os("BERTH_KERNEL") {
        candidates.push(PathBuf::from(k));
    } else {
        candidates.push(cache_dir().join("kernel/current/vmlinux"));
        candidates.push(Path::new(LIB_DIR).join("vmlinux"));
    }
    for c in &candidates {
        if c.is_file() {
            // `kernel.sh` writes the release next to the kernel.
            let release = std::fs::read_to_string(c.with_file_name("release"))
                .ok()
                .map(|s| s.trim().to_string());
            return Ok(GuestKernel {
                path: std::fs::canonicalize(c).unwrap_or_else(|_| c.clone()),
                release,
            });
        }
    }
    Err(VmError::NoKernel {
        looked: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The static `berth-agent` binary: `$BERTH_AGENT`, else next to the
/// running executable, else in [`LIB_DIR`]. A dynamically linked agent
/// cannot run from an initramfs that holds nothing else, so it is refused.
pub fn agent() -> Result<PathBuf, VmError> {
    let mut candidates = Vec::new();
    if let Some(a) = std::env::var_os("BERTH_AGENT") {
        candidates.push(PathBuf::from(a));
    } else {
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join("berth-agent"));
        }
        candidates.push(Path::new(LIB_DIR).join("berth-agent"));
    }
    let mut why = Vec::new();
    for c in &candidates {
        match std::fs::read(c) {
            Ok(bytes) if is_static_elf(&bytes) => return Ok(c.clone()),
            Ok(_) => why.push(format!("{} is not a statically linked ELF", c.display())),
            Err(e) => why.push(format!("{}: {e}", c.display())),
        }
    }
    Err(VmError::NoAgent(why.join("; ")))
}

/// An x86-64 ELF without a program interpreter (PT_INTERP).
fn is_static_elf(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_check() {
        // Our own test binary is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
