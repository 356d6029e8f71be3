//! Linux capabilities: names, Docker's default set, and applying an OCI
//! `LinuxCapabilities` to the calling process.

use std::collections::BTreeSet;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Capabilities Docker grants a container by default.
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows, indexed by number.
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The kernel number of a capability name (`CAP_` prefix optional, any case).
pub fn number(name: &str) -> Option<u32> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    ALL.iter().position(|c| *c == full).map(|i| i as u32)
}

/// Normalises a user-given name (`net_admin`, `CAP_NET_ADMIN`) or `ALL`.
pub fn normalise(name: &str) -> Option<String> {
    if name.eq_ignore_ascii_case("all") {
        return Some("ALL".into());
    }
    number(name).map(|n| ALL[n as usize].to_string())
}

/// Docker's `--cap-add` / `--cap-drop` on top of its default set.
pub fn docker_set(
    add: &[String],
    drop: &[String],
    privileged: bool,
) -> Result<Vec<String>, String> {
    let mut set: BTreeSet<String> = if privileged {
        // Everything this host can give (its bounding set may lack some).
        host_bounding().into_iter().collect()
    } else {
        DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect()
    };
    for d in drop {
        match normalise(d).ok_or_else(|| format!("unknown capability to drop: {d:?}"))? {
            a if a == "ALL" => set.clear(),
            c => {
                set.remove(&c);
            }
        }
    }
    for a in add {
        match normalise(a).ok_or_else(|| format!("unknown capability to add: {a:?}"))? {
            x if x == "ALL" => set.extend(ALL.iter().map(|s| s.to_string())),
            c => {
                set.insert(c);
            }
        }
    }
    Ok(set.into_iter().collect())
}

fn mask(caps: &Option<Capabilities>) -> u64 {
    caps.iter()
        .flatten()
        .filter_map(|c: &Capability| number(&c.to_string()))
        .fold(0u64, |m, n| m | (1u64 << n))
}

/// The last capability this kernel supports.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or((ALL.len() - 1) as u32)
}

/// Drops from the bounding set everything not in `bounding`.
pub fn apply_bounding(c: &LinuxCapabilities) -> std::io::Result<()> {
    let keep = mask(c.bounding());
    for n in 0..=last_cap() {
        if keep & (1u64 << n) == 0 {
            // SAFETY: PR_CAPBSET_DROP takes an integer capability number and no pointers.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: the kernel does not know this capability.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Capabilities in this process's bounding set: all a container can get here.
pub fn host_bounding() -> Vec<String> {
    (0..=last_cap())
        .filter(|n| {
            // SAFETY: PR_CAPBSET_READ takes an integer and reads nothing else.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, *n as libc::c_ulong, 0, 0, 0) == 1 }
        })
        .filter_map(|n| ALL.get(n as usize).map(|s| s.to_string()))
        .collect()
}

/// Sets effective, permitted and inheritable sets, then the ambient set.
pub fn apply_sets(c: &LinuxCapabilities) -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets, capabilities, set_capabilities};
    let have = capabilities(None)?.permitted.bits();
    let missing = mask(c.permitted()) & !have;
    if missing != 0 {
        let names: Vec<&str> = (0..64)
            .filter(|n| missing & (1u64 << n) != 0)
            .filter_map(|n| ALL.get(n).copied())
            .collect();
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("not available on this host: {}", names.join(", ")),
        ));
    }
    set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::from_bits_retain(mask(c.effective())),
            permitted: CapabilitySet::from_bits_retain(mask(c.permitted())),
            inheritable: CapabilitySet::from_bits_retain(mask(c.inheritable())),
        },
    )?;
    let ambient = mask(c.ambient());
    for n in 0..=last_cap() {
        if ambient & (1u64 << n) != 0 {
            // SAFETY: PR_CAP_AMBIENT_RAISE takes integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    n as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sets() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("sys_admin"), Some(21));
        assert_eq!(number("nope"), None);
        let s = docker_set(&["NET_ADMIN".into()], &["chown".into()], false).unwrap();
        assert!(s.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!s.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(s.len(), DOCKER_DEFAULT.len());
        assert!(docker_set(&[], &["ALL".into()], false).unwrap().is_empty());
        let mut host = host_bounding();
        host.sort();
        assert_eq!(docker_set(&[], &[], true).unwrap(), host);
        assert!(docker_set(&["CAP_BOGUS".into()], &[], false).is_err());
    }
}
