//! Docker's default seccomp profile as Rust data.
//!
//! Mirrors moby's `profiles/seccomp/default.json` group for group (same order,
//! same names, same conditions), so a diff against upstream stays readable.
//! Names that do not exist on the architecture being filtered (`chown32` on
//! x86_64, `open` on aarch64) are dropped when the profile is resolved; groups
//! for other architectures are kept so [`super::docker_default_json`] is the
//! whole profile.
//!
//! The shape of it: deny by default with EPERM; allow one big list of ordinary
//! syscalls; allow the dangerous ones (mount, namespaces, modules, clock,
//! reboot, BPF, perf, …) only when the container holds the capability that
//! would make the kernel allow them anyway; `clone` only without namespace
//! flags (unless CAP_SYS_ADMIN); `clone3` answers ENOSYS (its flags live in
//! memory seccomp cannot read, so libc is made to fall back to `clone`);
//! `socket` anything but AF_VSOCK; `personality` only harmless personas.

/// A syscall rule group, with the conditions under which it applies.
#[derive(Clone, Copy, Debug)]
pub(super) struct Group {
    pub names: &'static [&'static str],
    pub action: Act,
    pub args: &'static [Arg],
    pub includes: When,
    pub excludes: When,
    pub comment: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Act {
    Allow,
    Errno(u32),
}

/// An argument condition, in Docker's terms (`op` is an `SCMP_CMP_*` name).
#[derive(Clone, Copy, Debug)]
pub(super) struct Arg {
    pub index: u32,
    pub value: u64,
    pub value_two: u64,
    pub op: &'static str,
}

/// Docker's include/exclude filter: capabilities (all must be held to
/// include; any held excludes), Go architecture names, minimum kernel.
#[derive(Clone, Copy, Debug)]
pub(super) struct When {
    pub caps: &'static [&'static str],
    pub arches: &'static [&'static str],
    pub min_kernel: Option<&'static str>,
}

const ALWAYS: When = When {
    caps: &[],
    arches: &[],
    min_kernel: None,
};

const fn allow(names: &'static [&'static str]) -> Group {
    Group {
        names,
        action: Act::Allow,
        args: &[],
        includes: ALWAYS,
        excludes: ALWAYS,
        comment: "",
    }
}

const fn errno(names: &'static [&'static str], errno: u32) -> Group {
    Group {
        action: Act::Errno(errno),
        ..allow(names)
    }
}

impl Group {
    /// Only when all of `caps` are held.
    const fn with_caps(self, caps: &'static [&'static str]) -> Self {
        Group {
            includes: When {
                caps,
                ..self.includes
            },
            ..self
        }
    }
    /// Not when any of `caps` is held.
    const fn without_caps(self, caps: &'static [&'static str]) -> Self {
        Group {
            excludes: When {
                caps,
                ..self.excludes
            },
            ..self
        }
    }
    /// Only on these (Go) architectures.
    const fn on(self, arches: &'static [&'static str]) -> Self {
        Group {
            includes: When {
                arches,
                ..self.includes
            },
            ..self
        }
    }
    /// Not on these (Go) architectures.
    const fn not_on(self, arches: &'static [&'static str]) -> Self {
        Group {
            excludes: When {
                arches,
                ..self.excludes
            },
            ..self
        }
    }
    /// Only on kernels at least this new.
    const fn since_kernel(self, v: &'static str) -> Self {
        Group {
            includes: When {
                min_kernel: Some(v),
                ..self.includes
            },
            ..self
        }
    }
    const fn args(self, args: &'static [Arg]) -> Self {
        Group { args, ..self }
    }
    const fn comment(self, comment: &'static str) -> Self {
        Group { comment, ..self }
    }
}

const fn eq(index: u32, value: u64) -> Arg {
    Arg {
        index,
        value,
        value_two: 0,
        op: "SCMP_CMP_EQ",
    }
}

const fn ne(index: u32, value: u64) -> Arg {
    Arg {
        op: "SCMP_CMP_NE",
        ..eq(index, value)
    }
}

/// `(arg & mask) == value`
const fn masked_eq(index: u32, mask: u64, value: u64) -> Arg {
    Arg {
        index,
        value: mask,
        value_two: value,
        op: "SCMP_CMP_MASKED_EQ",
    }
}

const SYS_ADMIN: &[&str] = &["CAP_SYS_ADMIN"];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
/// | CLONE_NEWPID | CLONE_NEWNET
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;
const ENOSYS: u32 = 38;

/// (architecture, sub-architectures), as Docker's `archMap`.
pub(super) const ARCH_MAP: &[(&str, &[&str])] = &[
    ("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
    (
        "SCMP_ARCH_MIPS64",
        &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"],
    ),
    (
        "SCMP_ARCH_MIPS64N32",
        &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"],
    ),
    (
        "SCMP_ARCH_MIPSEL64",
        &["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"],
    ),
    (
        "SCMP_ARCH_MIPSEL64N32",
        &["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"],
    ),
    ("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
    ("SCMP_ARCH_RISCV64", &[]),
];

/// The default action: EPERM for everything not listed.
pub(super) const DEFAULT_ERRNO: u32 = 1;

/// Ordinary syscalls every program may make.
const BASE: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// What CAP_SYS_ADMIN unlocks: mounts, namespaces, BPF, perf, host names,
/// quotas, the kernel log, unrestricted clone/clone3.
const SYS_ADMIN_CALLS: &[&str] = &[
    "bpf",
    "clone",
    "clone3",
    "fanotify_init",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "perf_event_open",
    "quotactl",
    "quotactl_fd",
    "setdomainname",
    "sethostname",
    "setns",
    "syslog",
    "umount",
    "umount2",
    "unshare",
];

/// The groups, in moby's order.
pub(super) static GROUPS: &[Group] = &[
    allow(BASE),
    // Before 4.8, ptrace could be used to bypass seccomp.
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]).since_kernel("4.8"),
    // Any address family but AF_VSOCK (host/guest channels).
    allow(&["socket"]).args(&[ne(0, AF_VSOCK)]),
    // personality: PER_LINUX, PER_LINUX32, UNAME26 (± PER_LINUX32), query.
    allow(&["personality"]).args(&[eq(0, 0x0)]),
    allow(&["personality"]).args(&[eq(0, 0x8)]),
    allow(&["personality"]).args(&[eq(0, 0x20000)]),
    allow(&["personality"]).args(&[eq(0, 0x20008)]),
    allow(&["personality"]).args(&[eq(0, 0xffff_ffff)]),
    allow(&["sync_file_range2", "swapcontext"]).on(&["ppc64le"]),
    allow(&[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ])
    .on(&["arm", "arm64"]),
    allow(&["arch_prctl"]).on(&["amd64", "x32"]),
    allow(&["modify_ldt"]).on(&["amd64", "x32", "x86"]),
    allow(&[
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ])
    .on(&["s390", "s390x"]),
    allow(&["riscv_flush_icache"]).on(&["riscv64"]),
    allow(&["open_by_handle_at"]).with_caps(&["CAP_DAC_READ_SEARCH"]),
    allow(SYS_ADMIN_CALLS).with_caps(SYS_ADMIN),
    // Without CAP_SYS_ADMIN, clone may not create namespaces.
    allow(&["clone"])
        .args(&[masked_eq(0, CLONE_NAMESPACE_FLAGS, 0)])
        .without_caps(SYS_ADMIN)
        .not_on(&["s390", "s390x"]),
    allow(&["clone"])
        .args(&[masked_eq(1, CLONE_NAMESPACE_FLAGS, 0)])
        .comment("s390 parameter ordering for clone is different")
        .on(&["s390", "s390x"])
        .without_caps(SYS_ADMIN),
    // clone3's flags are behind a pointer seccomp cannot follow: answer ENOSYS
    // so libc falls back to clone, whose flags the rule above can check.
    errno(&["clone3"], ENOSYS).without_caps(SYS_ADMIN),
    allow(&["reboot"]).with_caps(&["CAP_SYS_BOOT"]),
    allow(&["chroot"]).with_caps(&["CAP_SYS_CHROOT"]),
    allow(&["delete_module", "init_module", "finit_module"]).with_caps(&["CAP_SYS_MODULE"]),
    allow(&["acct"]).with_caps(&["CAP_SYS_PACCT"]),
    allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .with_caps(&["CAP_SYS_PTRACE"]),
    allow(&["iopl", "ioperm"]).with_caps(&["CAP_SYS_RAWIO"]),
    allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
        .with_caps(&["CAP_SYS_TIME"]),
    allow(&["vhangup"]).with_caps(&["CAP_SYS_TTY_CONFIG"]),
    allow(&[
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
    ])
    .with_caps(&["CAP_SYS_NICE"]),
    allow(&["syslog"]).with_caps(&["CAP_SYSLOG"]),
    allow(&["bpf"]).with_caps(&["CAP_BPF"]),
    allow(&["perf_event_open"]).with_caps(&["CAP_PERFMON"]),
];
