//! The architectures berth compiles filters for.

use oci_spec::runtime::Arch;

use super::SeccompError;
use super::syscalls;

/// Everything the compiler needs to know about one native ABI.
#[derive(Debug)]
pub(crate) struct Target {
    /// Rust/uname name (`x86_64`), used in messages.
    pub name: &'static str,
    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`.
    pub audit_arch: u32,
    /// The OCI/libseccomp name of this ABI.
    pub oci: Arch,
    /// Go's `GOARCH` for it: what Docker profiles' `includes.arches` match.
    pub go_arch: &'static str,
    /// Syscall names → numbers, sorted by name.
    table: &'static [(&'static str, u32)],
    /// x86_64 only: syscall numbers with this bit set are x32 ABI calls,
    /// which arrive with the same `AUDIT_ARCH_X86_64` and must be told apart.
    pub x32_bit: Option<u32>,
}

impl Target {
    /// The syscall number of `name` on this architecture.
    pub fn nr(&self, name: &str) -> Option<u32> {
        self.table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| self.table[i].1)
    }
}

pub(crate) static X86_64: Target = Target {
    name: "x86_64",
    audit_arch: 0xc000_003e, // EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    oci: Arch::ScmpArchX86_64,
    go_arch: "amd64",
    table: syscalls::X86_64,
    x32_bit: Some(0x4000_0000), // __X32_SYSCALL_BIT
};

pub(crate) static AARCH64: Target = Target {
    name: "aarch64",
    audit_arch: 0xc000_00b7, // EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    oci: Arch::ScmpArchAarch64,
    go_arch: "arm64",
    table: syscalls::AARCH64,
    x32_bit: None,
};

/// The architecture this process runs on, if berth can filter for it.
pub(crate) fn host() -> Result<&'static Target, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(&X86_64)
    } else if cfg!(all(target_arch = "aarch64", target_endian = "little")) {
        Ok(&AARCH64)
    } else {
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

/// Is `name` a syscall on any Linux architecture berth knows of? Used to tell
/// a typo from a name that merely belongs to another architecture.
pub(crate) fn is_known_anywhere(name: &str) -> bool {
    X86_64.nr(name).is_some()
        || AARCH64.nr(name).is_some()
        || syscalls::OTHER_ARCH_NAMES.binary_search(&name).is_ok()
}

/// The OCI/libseccomp architecture names Docker profiles may list.
pub(crate) fn parse_oci_arch(s: &str) -> Option<Arch> {
    use Arch::*;
    Some(match s {
        "SCMP_ARCH_NATIVE" => ScmpArchNative,
        "SCMP_ARCH_X86" => ScmpArchX86,
        "SCMP_ARCH_X86_64" => ScmpArchX86_64,
        "SCMP_ARCH_X32" => ScmpArchX32,
        "SCMP_ARCH_ARM" => ScmpArchArm,
        "SCMP_ARCH_AARCH64" => ScmpArchAarch64,
        "SCMP_ARCH_MIPS" => ScmpArchMips,
        "SCMP_ARCH_MIPS64" => ScmpArchMips64,
        "SCMP_ARCH_MIPS64N32" => ScmpArchMips64n32,
        "SCMP_ARCH_MIPSEL" => ScmpArchMipsel,
        "SCMP_ARCH_MIPSEL64" => ScmpArchMipsel64,
        "SCMP_ARCH_MIPSEL64N32" => ScmpArchMipsel64n32,
        "SCMP_ARCH_PPC" => ScmpArchPpc,
        "SCMP_ARCH_PPC64" => ScmpArchPpc64,
        "SCMP_ARCH_PPC64LE" => ScmpArchPpc64le,
        "SCMP_ARCH_S390" => ScmpArchS390,
        "SCMP_ARCH_S390X" => ScmpArchS390x,
        "SCMP_ARCH_PARISC" => ScmpArchParisc,
        "SCMP_ARCH_PARISC64" => ScmpArchParisc64,
        "SCMP_ARCH_RISCV64" => ScmpArchRiscv64,
        "SCMP_ARCH_LOONGARCH64" => ScmpArchLoongarch64,
        "SCMP_ARCH_M68K" => ScmpArchM68k,
        "SCMP_ARCH_SH" => ScmpArchSh,
        "SCMP_ARCH_SHEB" => ScmpArchSheb,
        _ => return None,
    })
}

/// Go architecture names (`GOARCH`, plus the ABI names moby uses such as
/// `x32` and `x86`) accepted in Docker profiles' `includes/excludes.arches`.
pub(crate) const GO_ARCHES: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "arm64",
    "armbe",
    "arm64be",
    "loong64",
    "loongarch64",
    "mips",
    "mipsle",
    "mipsel",
    "mips64",
    "mips64le",
    "mipsel64",
    "mips64n32",
    "mips64len32",
    "mipsel64n32",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "x32",
    "x86",
    "x86_64",
    "aarch64",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique() {
        for t in [&X86_64, &AARCH64] {
            for w in t.table.windows(2) {
                assert!(w[0].0 < w[1].0, "{}: {:?} / {:?}", t.name, w[0], w[1]);
            }
            let mut nrs: Vec<u32> = t.table.iter().map(|e| e.1).collect();
            nrs.sort_unstable();
            nrs.dedup();
            assert_eq!(nrs.len(), t.table.len(), "{}: duplicate numbers", t.name);
        }
        for w in syscalls::OTHER_ARCH_NAMES.windows(2) {
            assert!(w[0] < w[1]);
        }
    }

    #[test]
    fn numbers_match_libc_for_the_host() {
        let t = host().unwrap();
        let known: &[(&str, libc::c_long)] = &[
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("mkdirat", libc::SYS_mkdirat),
            ("keyctl", libc::SYS_keyctl),
            ("unshare", libc::SYS_unshare),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("personality", libc::SYS_personality),
            ("getppid", libc::SYS_getppid),
            ("socket", libc::SYS_socket),
            ("execve", libc::SYS_execve),
            ("openat2", libc::SYS_openat2),
        ];
        for (name, nr) in known {
            assert_eq!(t.nr(name), Some(*nr as u32), "{name}");
        }
        assert_eq!(X86_64.nr("keyctl"), Some(250));
        assert_eq!(AARCH64.nr("keyctl"), Some(219));
        assert_eq!(AARCH64.nr("open"), None);
        assert!(is_known_anywhere("chown32"));
        assert!(is_known_anywhere("open"));
        assert!(!is_known_anywhere("mkdri"));
    }
}
