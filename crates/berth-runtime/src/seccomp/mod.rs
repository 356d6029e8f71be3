//! seccomp: Docker's default profile, Docker-format profiles, and OCI seccomp
//! compiled to BPF and installed.
//!
//! ```text
//! docker_default(caps) ─┐
//!                       ├─► oci_spec LinuxSeccomp ─► compile() ─► Program ─► install()
//! from_docker_json(..) ─┘      (config.json form)     (BPF, host arch)      (container init,
//!                                                                           just before execve)
//! ```
//!
//! * [`docker_default`] — moby's `profiles/seccomp/default.json`, kept as a
//!   Rust table (`default_profile.rs`) and resolved for a capability set, this
//!   architecture and the running kernel, exactly as Docker resolves it.
//! * [`from_docker_json`] — a Docker-format profile (`--security-opt
//!   seccomp=profile.json`) resolved the same way. Errors name the field at
//!   fault: `syscalls[3].action: unknown action "SCMP_ACT_FOO"`, JSON syntax
//!   errors carry line and column.
//! * [`compile`] — an OCI profile to a BPF [`Program`] for the host
//!   architecture (x86_64 or aarch64).
//! * [`install`] — loads a [`Program`] on the calling thread.
//!
//! # Semantics
//!
//! **Why berth generates its own BPF.** seccompiler 0.5 compiles a filter with
//! one "match" action and one "mismatch" action. An OCI profile needs many
//! actions in one filter (ALLOW here, ERRNO(ENOSYS) there, EPERM by default).
//! Stacking one seccompiler filter per action only gets part of the way: the
//! kernel runs *every* installed filter and keeps the most restrictive answer
//! (KILL > TRAP > ERRNO > TRACE > LOG > ALLOW; for two ERRNOs, the errno of
//! the most recently installed filter), so an ALLOW in one filter can never
//! override a deny in another. "ALLOW `personality` if arg0 is one of five
//! values, else EPERM" would have to be rewritten as deny filters over the
//! negation of an OR of ANDs, and the errno a call gets would depend on
//! install order. One program with a return value per rule is simpler and
//! exactly right, so `filter.rs` generates it, on a small label-resolving
//! assembler (`bpf.rs`, whose interpreter lets the unit tests check every
//! operator at its boundaries). seccompiler's `apply_filter` is not used
//! either: it always sets `no_new_privs`, which a privileged container must
//! not get.
//!
//! **Rules and precedence**, for one syscall:
//! 1. rules with argument conditions, in profile order; conditions within a
//!    rule are ANDed; the first rule whose conditions all hold decides;
//! 2. otherwise the syscall's unconditional rule, if it has one;
//! 3. otherwise the default action.
//!
//! So several rules for a syscall are ORed, and a specific rule beats a
//! blanket one ("allow `mkdir`, but EPERM when mode is 0777" works in either
//! order). For profiles whose rules for a syscall share one action — all of
//! Docker's — this is libseccomp's behaviour too. Two *unconditional* rules
//! giving one syscall different actions are an error
//! ([`SeccompError::Conflict`]) rather than a silent first-wins.
//!
//! **Arguments** are compared as unsigned 64-bit values (high half, then low
//! half), for all of `SCMP_CMP_NE/LT/LE/EQ/GE/GT/MASKED_EQ`; for `MASKED_EQ`,
//! `value` is the mask and `valueTwo` the expected result, as in libseccomp.
//!
//! **Actions**: ALLOW, ERRNO(`errnoRet`, default EPERM), KILL and KILL_THREAD
//! (the thread), KILL_PROCESS, TRAP, LOG, TRACE(`errnoRet`). NOTIFY needs a
//! seccomp agent, which berth does not have: it is rejected.
//!
//! **Architecture.** Only the native ABI is filtered. A syscall made through
//! any other ABI — i386 `int 0x80`, x32 (same `AUDIT_ARCH_X86_64`, told
//! apart by bit 30 of the number), arm32 compat — kills the process. Other
//! architectures listed in an OCI profile are noted in [`Program::notes`];
//! [`docker_default`] and [`from_docker_json`] validate Docker's
//! `architectures`/`archMap` but output only the native one, since that is
//! all that is enforced (Docker would also allow i386/x32/arm32 binaries).
//!
//! **Unknown syscall names.** [`compile`] skips a name that is not a syscall on
//! this architecture and says so in [`Program::notes`] (libseccomp/runc
//! ignore such names silently). [`from_docker_json`] is stricter because it
//! sees the author's intent: a name from another architecture (`chown32`,
//! `_llseek`, `s390_runtime_instr`) is dropped silently, a name that is not a
//! syscall anywhere is an error naming the entry.
//!
//! **Newer syscalls get ENOSYS** (runc's "ENOSYS stub"): when the default
//! action is not ALLOW/LOG/TRACE, a syscall numbered above every syscall the
//! profile names returns ENOSYS instead of the default action, so libc falls
//! back to an older call instead of failing with EPERM. `nr == -1` (a tracer
//! cancelling a call) reaches the dispatch as in libseccomp, and gets ENOSYS
//! or the default.
//!
//! **Installing.** [`install`] calls `seccomp(SECCOMP_SET_MODE_FILTER)` with
//! the profile's flags (TSYNC, LOG, SPEC_ALLOW) and nothing else: it does not
//! set `no_new_privs` (the caller does that first unless the process keeps
//! CAP_SYS_ADMIN, else the kernel refuses with EACCES). It does not allocate,
//! so it is safe between `fork` and `execve` of a multi-threaded parent.
//! Compile in the parent, install in the child.

mod arch;
mod bpf;
mod default_profile;
mod docker;
mod filter;
mod syscalls;

#[cfg(test)]
mod tests;

use oci_spec::runtime::LinuxSeccomp;

pub use bpf::SockFilter;

/// What can go wrong reading, compiling or installing a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not well-formed JSON of the expected shape.
    #[error("seccomp profile: {message}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description (which repeats line and column).
        message: String,
    },
    /// A field of the profile is invalid; `at` is its path, e.g.
    /// `syscalls[3].args[0].op`.
    #[error("seccomp profile: {at}: {message}")]
    Invalid {
        /// Path of the offending field.
        at: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two unconditional rules give one syscall different actions.
    #[error("seccomp profile: {first} and {second} give syscall {syscall:?} different actions")]
    Conflict {
        /// The syscall.
        syscall: String,
        /// Path of the first rule (`syscalls[4]`).
        first: String,
        /// Path of the second rule.
        second: String,
    },
    /// This machine's architecture has no syscall table in berth.
    #[error("seccomp filters cannot be compiled for {0} (berth supports x86_64 and aarch64)")]
    UnsupportedArch(&'static str),
    /// The compiled program exceeds the kernel's limit.
    #[error("compiled seccomp filter has {0} instructions; the kernel accepts at most 4096")]
    TooLarge(usize),
    /// A bug in the code generator.
    #[error("seccomp filter generation failed: {0}")]
    Internal(String),
    /// `seccomp(2)` refused the filter.
    #[error("installing the seccomp filter: {0}{hint}", hint = install_hint(.0))]
    Install(#[source] std::io::Error),
    /// With TSYNC, another thread could not be synchronised.
    #[error("installing the seccomp filter: thread {0} could not be synchronised (TSYNC)")]
    ThreadSync(i64),
}

fn install_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) => " (set no_new_privs first, or keep CAP_SYS_ADMIN)",
        Some(libc::EINVAL) => " (a flag or action this kernel does not support?)",
        _ => "",
    }
}

impl SeccompError {
    fn invalid(at: impl Into<String>, message: impl Into<String>) -> Self {
        SeccompError::Invalid {
            at: at.into(),
            message: message.into(),
        }
    }
}

/// A compiled seccomp filter for the host architecture, ready for [`install`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    filter: Vec<SockFilter>,
    flags: libc::c_ulong,
    notes: Vec<String>,
}

impl Program {
    /// The BPF instructions.
    pub fn instructions(&self) -> &[SockFilter] {
        &self.filter
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    /// Never true for a compiled program (it always checks the architecture).
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }

    /// `SECCOMP_FILTER_FLAG_*` bits [`install`] passes to `seccomp(2)`.
    pub fn flags(&self) -> u64 {
        #[allow(clippy::useless_conversion)] // c_ulong is u32 on some targets
        u64::from(self.flags)
    }

    /// What the compiler skipped or could not honour (unknown syscall names,
    /// foreign architectures, ignored flags). Worth a log line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// Docker's default seccomp profile for a container holding `caps` (names
/// with or without `CAP_`, any case), on this architecture and kernel.
///
/// With Docker's default capability set this denies (EPERM) among others
/// `mount`, `umount2`, `unshare`, `setns`, `keyctl`, `add_key`,
/// `request_key`, `bpf`, `perf_event_open`, `reboot`, `kexec_load`,
/// `init_module`, `clock_settime`, `socket(AF_VSOCK)`, `clone` with namespace
/// flags, and answers ENOSYS for `clone3`. `ptrace` is allowed, as in Docker,
/// on kernels from 4.8 on. CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE,
/// CAP_SYS_BOOT, CAP_SYS_TIME, CAP_SYSLOG, CAP_BPF, CAP_PERFMON, … each unlock
/// their syscalls as in Docker.
///
/// The result names only syscalls of this architecture, lists only the native
/// architecture (see the module docs), and compiles without notes.
pub fn docker_default(caps: &[&str]) -> LinuxSeccomp {
    docker::resolve(&docker::default_profile(), &docker::Env::host(caps))
        .expect("the built-in default profile is valid (checked by tests)")
}

/// Docker's default profile as Docker-format JSON (all architectures'
/// groups, with their conditions) — a starting point for custom profiles.
pub fn docker_default_json() -> String {
    serde_json::to_string_pretty(&docker::default_profile())
        .expect("serialising plain data cannot fail")
}

/// Parses a Docker-format seccomp profile and resolves it for a container
/// holding `caps`, on this architecture and kernel, as Docker would.
pub fn from_docker_json(bytes: &[u8], caps: &[&str]) -> Result<LinuxSeccomp, SeccompError> {
    docker::resolve(&docker::parse(bytes)?, &docker::Env::host(caps))
}

/// Compiles an OCI seccomp profile to BPF for the host architecture.
pub fn compile(s: &LinuxSeccomp) -> Result<Program, SeccompError> {
    filter::compile_for(s, arch::host()?)
}

/// Installs `p` on the calling thread (on every thread of the process if the
/// profile asked for `SECCOMP_FILTER_FLAG_TSYNC`).
///
/// Does not set `no_new_privs`: without it the caller needs CAP_SYS_ADMIN.
/// Does not allocate, so it may run in a child between `fork` and `execve`.
pub fn install(p: &Program) -> Result<(), SeccompError> {
    if p.filter.is_empty() || p.filter.len() > bpf::MAX_INSNS {
        return Err(SeccompError::TooLarge(p.filter.len()));
    }
    let prog = libc::sock_fprog {
        // At most 4096, checked above.
        len: p.filter.len() as libc::c_ushort,
        filter: p.filter.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` describes `p.filter`, a live slice of `SockFilter`, whose
    // layout is that of `struct sock_filter` (asserted in bpf.rs). The kernel
    // only reads it (copies it in) during this call and keeps no pointer; the
    // `cast_mut` is only to fit the C declaration. seccomp(2) touches no other
    // memory of this process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            p.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        rc if rc < 0 => Err(SeccompError::Install(std::io::Error::last_os_error())),
        tid => Err(SeccompError::ThreadSync(tid)),
    }
}
