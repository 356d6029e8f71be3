//! Tests: the generated BPF run through the interpreter (every operator at its
//! boundaries, both architectures, the whole default profile), the Docker
//! format, and real filters installed by the real kernel in forked children.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::arch::{self, AARCH64, Target, X86_64};
use super::bpf::{SeccompData, run};
use super::docker::{self, Env};
use super::filter::{RET_BAD_ARCH, RET_ENOSYS, compile_for};
use super::*;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}
const EPERM: u32 = errno(libc::EPERM);

/// Docker's default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

// ---------------------------------------------------------------- helpers

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    b.build().unwrap()
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.iter().map(|s| s.to_string()).collect());
    r.set_action(action);
    r.set_errno_ret(errno_ret);
    r.set_args((!args.is_empty()).then_some(args));
    r
}

fn profile(
    default: LinuxSeccompAction,
    default_errno: Option<u32>,
    rules: Vec<LinuxSyscall>,
) -> LinuxSeccomp {
    let mut s = LinuxSeccomp::default();
    s.set_default_action(default);
    s.set_default_errno_ret(default_errno);
    s.set_syscalls(Some(rules));
    s
}

/// What `p` answers for syscall `name` on `t` with `args`.
fn eval(p: &Program, t: &Target, name: &str, args: [u64; 6]) -> u32 {
    let nr = t.nr(name).unwrap_or_else(|| panic!("{name} on {}", t.name));
    eval_nr(p, t.audit_arch, nr, args)
}

fn eval_nr(p: &Program, audit_arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    run(
        p.instructions(),
        &SeccompData {
            nr,
            arch: audit_arch,
            instruction_pointer: 0x7fff_1234_5678,
            args,
        },
    )
}

fn a0(x: u64) -> [u64; 6] {
    [x, 0, 0, 0, 0, 0]
}

fn test_env(t: &'static Target, caps: &[&str]) -> Env<'static> {
    Env {
        target: Some(t),
        go_arch: t.go_arch,
        kernel: Some((6, 1)),
        caps: caps.iter().map(|c| docker::cap_key(c)).collect(),
    }
}

fn default_for(t: &'static Target, caps: &[&str]) -> Program {
    let s = docker::resolve(&docker::default_profile(), &test_env(t, caps)).unwrap();
    let p = compile_for(&s, t).unwrap();
    assert!(p.notes().is_empty(), "{:?}", p.notes());
    p
}

fn holds(op: LinuxSeccompOperator, x: u64, v: u64, v2: u64) -> bool {
    use LinuxSeccompOperator::*;
    match op {
        ScmpCmpNe => x != v,
        ScmpCmpLt => x < v,
        ScmpCmpLe => x <= v,
        ScmpCmpEq => x == v,
        ScmpCmpGe => x >= v,
        ScmpCmpGt => x > v,
        ScmpCmpMaskedEq => x & v == v2,
    }
}

const OPS: [LinuxSeccompOperator; 7] = [
    LinuxSeccompOperator::ScmpCmpNe,
    LinuxSeccompOperator::ScmpCmpLt,
    LinuxSeccompOperator::ScmpCmpLe,
    LinuxSeccompOperator::ScmpCmpEq,
    LinuxSeccompOperator::ScmpCmpGe,
    LinuxSeccompOperator::ScmpCmpGt,
    LinuxSeccompOperator::ScmpCmpMaskedEq,
];

/// 64-bit values around every boundary the two-halves comparison has.
const VALUES: [u64; 16] = [
    0,
    1,
    4,
    5,
    6,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0004,
    0x1_0000_0005,
    0x1_0000_0006,
    0x2_0000_0000,
    0xffff_ffff_0000_0005,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

// ------------------------------------------------- compiler, interpreted

#[test]
fn every_operator_matches_its_64_bit_meaning() {
    use LinuxSeccompAction::*;
    for t in [&X86_64, &AARCH64] {
        for op in OPS {
            for v in VALUES {
                // For MASKED_EQ, `v` is the mask; try datums in and out of it.
                let v2s: &[u64] = if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
                    &[0, v, v & 0xffff_0000_0000_00ff, 5, 0x1_0000_0005]
                } else {
                    &[0]
                };
                for &v2 in v2s {
                    for index in [0, 3, 5] {
                        let s = profile(
                            ScmpActAllow,
                            None,
                            vec![rule(
                                &["getppid"],
                                ScmpActErrno,
                                Some(77),
                                vec![arg(index, op, v, Some(v2))],
                            )],
                        );
                        let p = compile_for(&s, t).unwrap();
                        for x in VALUES {
                            let mut args = [0x5555_5555_5555_5555; 6];
                            args[index] = x;
                            let want = if holds(op, x, v, v2) {
                                errno(77)
                            } else {
                                ALLOW
                            };
                            assert_eq!(
                                eval(&p, t, "getppid", args),
                                want,
                                "{}: arg{index}={x:#x} {op:?} {v:#x} (two {v2:#x})",
                                t.name
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn conditions_are_anded_and_rules_ored_first_match_wins() {
    use LinuxSeccompAction::*;
    use LinuxSeccompOperator::*;
    let t = &X86_64;
    let s = profile(
        ScmpActErrno,
        Some(13),
        vec![
            // 1 < arg0 <= 10 and arg1 == 7 → ERRNO(20)
            rule(
                &["getppid"],
                ScmpActErrno,
                Some(20),
                vec![
                    arg(0, ScmpCmpGt, 1, None),
                    arg(0, ScmpCmpLe, 10, None),
                    arg(1, ScmpCmpEq, 7, None),
                ],
            ),
            // arg0 == 5 → ERRNO(21): shadowed by the rule above when arg1 == 7
            rule(
                &["getppid"],
                ScmpActErrno,
                Some(21),
                vec![arg(0, ScmpCmpEq, 5, None)],
            ),
            // arg0 >= 100 → ALLOW
            rule(
                &["getppid"],
                ScmpActAllow,
                None,
                vec![arg(0, ScmpCmpGe, 100, None)],
            ),
            // and the same syscall's blanket rule, listed last, comes last
            rule(&["getppid"], ScmpActTrap, None, vec![]),
        ],
    );
    let p = compile_for(&s, t).unwrap();
    let g = |x0, x1| eval(&p, t, "getppid", [x0, x1, 0, 0, 0, 0]);
    assert_eq!(g(5, 7), errno(20));
    assert_eq!(g(10, 7), errno(20));
    assert_eq!(g(11, 7), libc::SECCOMP_RET_TRAP);
    assert_eq!(g(5, 8), errno(21));
    assert_eq!(g(1, 7), libc::SECCOMP_RET_TRAP);
    assert_eq!(g(100, 0), ALLOW);
    assert_eq!(g(u64::MAX, 7), ALLOW);
    // unrelated syscalls take the default (ERRNO 13)
    assert_eq!(eval(&p, t, "getpid", a0(0)), errno(13));
}

#[test]
fn a_specific_rule_beats_a_blanket_one_in_either_order() {
    use LinuxSeccompAction::*;
    use LinuxSeccompOperator::*;
    let t = &X86_64;
    let blanket = rule(&["mkdir"], ScmpActAllow, None, vec![]);
    let specific = rule(
        &["mkdir"],
        ScmpActErrno,
        Some(1),
        vec![arg(1, ScmpCmpEq, 0o777, None)],
    );
    for rules in [
        vec![blanket.clone(), specific.clone()],
        vec![specific, blanket],
    ] {
        let p = compile_for(&profile(ScmpActKillProcess, None, rules), t).unwrap();
        assert_eq!(eval(&p, t, "mkdir", [0, 0o777, 0, 0, 0, 0]), EPERM);
        assert_eq!(eval(&p, t, "mkdir", [0, 0o755, 0, 0, 0, 0]), ALLOW);
        // (read is numbered below mkdir, so it is not under the ENOSYS stub)
        assert_eq!(eval(&p, t, "read", a0(0)), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(eval(&p, t, "rmdir", a0(0)), RET_ENOSYS);
    }
}

#[test]
fn every_action_compiles_to_its_kernel_value() {
    use LinuxSeccompAction::*;
    let t = &X86_64;
    let cases = [
        (ScmpActAllow, None, ALLOW),
        (ScmpActErrno, None, EPERM),
        (ScmpActErrno, Some(38), errno(38)),
        (ScmpActKill, None, libc::SECCOMP_RET_KILL_THREAD),
        (ScmpActKillThread, None, libc::SECCOMP_RET_KILL_THREAD),
        (ScmpActKillProcess, None, libc::SECCOMP_RET_KILL_PROCESS),
        (ScmpActTrap, None, libc::SECCOMP_RET_TRAP),
        (ScmpActLog, None, libc::SECCOMP_RET_LOG),
        (ScmpActTrace, Some(9), libc::SECCOMP_RET_TRACE | 9),
    ];
    for (action, e, want) in cases {
        let s = profile(
            ScmpActAllow,
            None,
            vec![rule(&["mkdir"], action, e, vec![])],
        );
        let p = compile_for(&s, t).unwrap();
        assert_eq!(eval(&p, t, "mkdir", a0(0)), want, "{action:?}");
        // and as the default action
        // (read is numbered below close, so it is not under the ENOSYS stub)
        let s = profile(
            action,
            e,
            vec![rule(&["close"], ScmpActAllow, None, vec![])],
        );
        let p = compile_for(&s, t).unwrap();
        assert_eq!(eval(&p, t, "close", a0(0)), ALLOW);
        assert_eq!(eval(&p, t, "read", a0(0)), want, "default {action:?}");
    }
}

#[test]
fn bad_profiles_are_refused_with_the_field_named() {
    use LinuxSeccompAction::*;
    use LinuxSeccompOperator::*;
    let t = &X86_64;
    let err = |s: LinuxSeccomp| compile_for(&s, t).unwrap_err().to_string();

    let e = err(profile(
        ScmpActAllow,
        None,
        vec![
            rule(&["read"], ScmpActAllow, None, vec![]),
            rule(&["mkdir"], ScmpActNotify, None, vec![]),
        ],
    ));
    assert!(
        e.contains("syscalls[1].action") && e.contains("SCMP_ACT_NOTIFY"),
        "{e}"
    );

    let e = err(profile(ScmpActErrno, Some(5000), vec![]));
    assert!(e.contains("defaultAction") && e.contains("5000"), "{e}");

    let e = err(profile(
        ScmpActAllow,
        None,
        vec![rule(
            &["read"],
            ScmpActErrno,
            None,
            vec![arg(6, ScmpCmpEq, 0, None)],
        )],
    ));
    assert!(e.contains("syscalls[0].args[0].index"), "{e}");

    let e = err(profile(
        ScmpActAllow,
        None,
        vec![
            rule(&["read", "mkdir"], ScmpActErrno, Some(1), vec![]),
            rule(&["mkdir"], ScmpActErrno, Some(2), vec![]),
        ],
    ));
    assert!(
        e.contains("syscalls[0]") && e.contains("syscalls[1]") && e.contains("\"mkdir\""),
        "{e}"
    );

    // the same unconditional action twice is fine
    compile_for(
        &profile(
            ScmpActAllow,
            None,
            vec![
                rule(&["mkdir"], ScmpActErrno, Some(2), vec![]),
                rule(&["mkdir"], ScmpActErrno, Some(2), vec![]),
            ],
        ),
        t,
    )
    .unwrap();
}

#[test]
fn unknown_names_are_skipped_with_a_note() {
    use LinuxSeccompAction::*;
    let s = profile(
        ScmpActErrno,
        None,
        vec![rule(
            &["read", "chown32", "nonsense"],
            ScmpActAllow,
            None,
            vec![],
        )],
    );
    let p = compile_for(&s, &X86_64).unwrap();
    assert_eq!(p.notes().len(), 2, "{:?}", p.notes());
    assert!(p.notes()[0].contains("syscalls[0].names[1]") && p.notes()[0].contains("chown32"));
    assert_eq!(eval(&p, &X86_64, "read", a0(0)), ALLOW);
    // `open` exists on x86_64 only
    let s = profile(
        ScmpActErrno,
        None,
        vec![rule(&["open", "openat"], ScmpActAllow, None, vec![])],
    );
    let p = compile_for(&s, &AARCH64).unwrap();
    assert_eq!(p.notes().len(), 1);
    assert_eq!(eval(&p, &AARCH64, "openat", a0(0)), ALLOW);
}

#[test]
fn foreign_architectures_and_x32_are_killed() {
    let p = default_for(&X86_64, DEFAULT_CAPS);
    let read = X86_64.nr("read").unwrap();
    assert_eq!(eval_nr(&p, X86_64.audit_arch, read, a0(0)), ALLOW);
    // i386 (AUDIT_ARCH_I386) and aarch64 values on an x86_64 filter
    assert_eq!(eval_nr(&p, 0x4000_0003, 3, a0(0)), RET_BAD_ARCH);
    assert_eq!(eval_nr(&p, AARCH64.audit_arch, read, a0(0)), RET_BAD_ARCH);
    // x32: same arch value, bit 30 set in the number
    assert_eq!(
        eval_nr(&p, X86_64.audit_arch, 0x4000_0000 | read, a0(0)),
        RET_BAD_ARCH
    );
    assert_eq!(
        eval_nr(&p, X86_64.audit_arch, 0x4000_0000 | 39, a0(0)),
        RET_BAD_ARCH
    );
    // nr -1 (a tracer skipping a call) is not an x32 call
    assert_eq!(eval_nr(&p, X86_64.audit_arch, u32::MAX, a0(0)), RET_ENOSYS);

    let p = default_for(&AARCH64, DEFAULT_CAPS);
    assert_eq!(eval_nr(&p, X86_64.audit_arch, 63, a0(0)), RET_BAD_ARCH);
    assert_eq!(eval_nr(&p, 0x4000_0028 /* ARM */, 3, a0(0)), RET_BAD_ARCH);
    assert_eq!(eval(&p, &AARCH64, "read", a0(0)), ALLOW);
}

#[test]
fn syscalls_newer_than_the_profile_get_enosys() {
    use LinuxSeccompAction::*;
    let p = default_for(&X86_64, DEFAULT_CAPS);
    // futex_waitv (449) is the highest Docker names; later ones are "new".
    assert_eq!(eval(&p, &X86_64, "futex_waitv", a0(0)), ALLOW);
    for new in [
        "cachestat",
        "fchmodat2",
        "mseal",
        "setxattrat",
        "file_getattr",
    ] {
        assert_eq!(eval(&p, &X86_64, new, a0(0)), RET_ENOSYS, "{new}");
    }
    assert_eq!(eval_nr(&p, X86_64.audit_arch, 10_000, a0(0)), RET_ENOSYS);
    // Older unlisted calls still get the default (EPERM).
    assert_eq!(eval(&p, &X86_64, "keyctl", a0(0)), EPERM);
    // No stub under an allow-by-default profile.
    let s = profile(
        ScmpActAllow,
        None,
        vec![rule(&["read"], ScmpActErrno, None, vec![])],
    );
    let p = compile_for(&s, &X86_64).unwrap();
    assert_eq!(eval(&p, &X86_64, "mseal", a0(0)), ALLOW);
}

// -------------------------------------------------- the default profile

#[test]
fn default_profile_denies_what_docker_denies() {
    for t in [&X86_64, &AARCH64] {
        let p = default_for(t, DEFAULT_CAPS);
        assert!(p.len() < 1000, "{} instructions", p.len());
        let ev = |name: &str, args| eval(&p, t, name, args);
        for denied in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "setns",
            "mount",
            "umount2",
            "reboot",
            "kexec_load",
            "bpf",
            "perf_event_open",
            "init_module",
            "finit_module",
            "delete_module",
            "clock_settime",
            "settimeofday",
            "syslog",
            "acct",
            "swapon",
            "pivot_root",
            "open_by_handle_at",
            "kcmp",
            "process_madvise",
            "pidfd_getfd",
            "mbind",
            "fsopen",
            "move_mount",
            "open_tree",
            "quotactl",
            "sethostname",
            "userfaultfd",
            "vhangup",
            "lookup_dcookie",
            "name_to_handle_at_nonexistent",
        ] {
            if t.nr(denied).is_none() {
                continue;
            }
            assert_eq!(ev(denied, a0(0)), EPERM, "{}: {denied}", t.name);
        }
        for allowed in [
            "read",
            "write",
            "openat",
            "close",
            "execve",
            "exit_group",
            "mmap",
            "mprotect",
            "rt_sigaction",
            "futex",
            "clone",
            "wait4",
            "chroot",
            "getdents64",
            "statx",
            "io_uring_setup",
            "ptrace",
            "process_vm_readv",
            "seccomp",
            "prctl",
        ] {
            assert_eq!(ev(allowed, a0(0)), ALLOW, "{}: {allowed}", t.name);
        }
        if t.name == "x86_64" {
            assert_eq!(ev("arch_prctl", a0(0)), ALLOW);
            assert_eq!(ev("modify_ldt", a0(0)), ALLOW);
        }
        // clone: plain fork/thread flags pass, namespace flags do not
        let sigchld = libc::SIGCHLD as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(ev("clone", a0(sigchld)), ALLOW);
        assert_eq!(ev("clone", a0(thread)), ALLOW);
        for ns in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(ev("clone", a0(sigchld | ns as u64)), EPERM, "clone {ns:#x}");
        }
        assert_eq!(ev("clone3", a0(0)), errno(libc::ENOSYS));
        // socket: anything but AF_VSOCK
        assert_eq!(ev("socket", a0(libc::AF_INET as u64)), ALLOW);
        assert_eq!(ev("socket", a0(libc::AF_UNIX as u64)), ALLOW);
        assert_eq!(ev("socket", a0(libc::AF_VSOCK as u64)), EPERM);
        // personality: only the harmless personas
        for ok in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(ev("personality", a0(ok)), ALLOW, "personality {ok:#x}");
        }
        for bad in [
            0x0040000u64, /* ADDR_NO_RANDOMIZE */
            1,
            0x1_0000_0000,
            u64::MAX,
        ] {
            assert_eq!(ev("personality", a0(bad)), EPERM, "personality {bad:#x}");
        }
    }
}

#[test]
fn capabilities_unlock_their_syscalls() {
    let cases: &[(&str, &[&str])] = &[
        (
            "CAP_SYS_ADMIN",
            &[
                "mount",
                "umount2",
                "unshare",
                "setns",
                "bpf",
                "sethostname",
                "fsopen",
                "syslog",
            ],
        ),
        (
            "CAP_SYS_PTRACE",
            &["kcmp", "pidfd_getfd", "process_madvise"],
        ),
        (
            "CAP_SYS_MODULE",
            &["init_module", "finit_module", "delete_module"],
        ),
        ("CAP_SYS_BOOT", &["reboot"]),
        ("CAP_SYS_TIME", &["clock_settime", "settimeofday"]),
        ("CAP_SYSLOG", &["syslog"]),
        ("CAP_BPF", &["bpf"]),
        ("CAP_PERFMON", &["perf_event_open"]),
        ("CAP_SYS_PACCT", &["acct"]),
        ("CAP_SYS_NICE", &["mbind", "set_mempolicy"]),
        ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
        ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ];
    for t in [&X86_64, &AARCH64] {
        for (cap, calls) in cases {
            let mut caps = DEFAULT_CAPS.to_vec();
            caps.push(cap);
            let p = default_for(t, &caps);
            for c in *calls {
                assert_eq!(eval(&p, t, c, a0(0)), ALLOW, "{}: {cap} → {c}", t.name);
            }
            // ... and nothing else
            if *cap != "CAP_SYS_ADMIN" {
                assert_eq!(eval(&p, t, "mount", a0(0)), EPERM, "{cap}");
            }
        }
        // CAP_SYS_ADMIN lifts the clone/clone3 restrictions
        let mut caps = DEFAULT_CAPS.to_vec();
        caps.push("SYS_ADMIN");
        let p = default_for(t, &caps);
        assert_eq!(eval(&p, t, "clone", a0(libc::CLONE_NEWUSER as u64)), ALLOW);
        assert_eq!(eval(&p, t, "clone3", a0(0)), ALLOW);
        // without CAP_SYS_CHROOT, no chroot
        let caps: Vec<&str> = DEFAULT_CAPS
            .iter()
            .copied()
            .filter(|c| *c != "SYS_CHROOT")
            .collect();
        let p = default_for(t, &caps);
        assert_eq!(eval(&p, t, "chroot", a0(0)), EPERM);
    }
}

#[test]
fn ptrace_follows_min_kernel() {
    let mut env = test_env(&X86_64, DEFAULT_CAPS);
    env.kernel = Some((4, 4));
    let s = docker::resolve(&docker::default_profile(), &env).unwrap();
    let p = compile_for(&s, &X86_64).unwrap();
    assert_eq!(eval(&p, &X86_64, "ptrace", a0(0)), EPERM);
    env.kernel = Some((4, 8));
    let s = docker::resolve(&docker::default_profile(), &env).unwrap();
    let p = compile_for(&s, &X86_64).unwrap();
    assert_eq!(eval(&p, &X86_64, "ptrace", a0(0)), ALLOW);
}

#[test]
fn docker_default_is_its_json_resolved() {
    let json = docker_default_json();
    for caps in [DEFAULT_CAPS, &["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"][..], &[]] {
        assert_eq!(
            from_docker_json(json.as_bytes(), caps).unwrap(),
            docker_default(caps)
        );
    }
    let s = docker_default(DEFAULT_CAPS);
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(1));
    assert_eq!(
        s.architectures().as_deref(),
        Some(&[arch::host().unwrap().oci][..])
    );
    let p = compile(&s).unwrap();
    assert!(p.notes().is_empty(), "{:?}", p.notes());
    // the JSON has moby's shape
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["archMap"][0]["architecture"], "SCMP_ARCH_X86_64");
    let clone = v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"][0] == "clone" && r["args"].is_array())
        .unwrap();
    assert_eq!(clone["args"][0]["value"], 2114060288u64);
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["excludes"]["caps"][0], "CAP_SYS_ADMIN");
}

// -------------------------------------------------------- Docker format

const SMALL: &str = r#"{
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": null},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null}
    ],
    "syscalls": [
        {"names": ["read", "write", "chown32", "_llseek"], "action": "SCMP_ACT_ALLOW", "args": null,
         "comment": "", "includes": {}, "excludes": {}},
        {"name": "getppid", "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
         "args": [{"index": 1, "value": 255, "valueTwo": 7, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["umount2"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}},
        {"names": ["s390_runtime_instr"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
        {"names": ["arch_prctl", "uname"], "action": "SCMP_ACT_LOG", "excludes": {"arches": ["arm64"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["kexec_load"], "action": "SCMP_ACT_KILL_PROCESS", "excludes": {"minKernel": "3.0"}}
    ]
}"#;

fn names_of(s: &LinuxSeccomp) -> Vec<Vec<String>> {
    s.syscalls()
        .iter()
        .flatten()
        .map(|r| r.names().clone())
        .collect()
}

#[test]
fn docker_profile_is_resolved_like_docker() {
    let p = docker::parse(SMALL.as_bytes()).unwrap();

    let s = docker::resolve(&p, &test_env(&X86_64, DEFAULT_CAPS)).unwrap();
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(38));
    assert_eq!(
        s.architectures().as_deref(),
        Some(&[oci_spec::runtime::Arch::ScmpArchX86_64][..])
    );
    assert_eq!(
        names_of(&s),
        vec![
            vec!["read".to_string(), "write".into()], // chown32, _llseek: other arches
            vec!["getppid".into()],
            vec!["umount2".into()],
            vec!["arch_prctl".into(), "uname".into()],
            vec!["ptrace".into()],
        ]
    );
    let rules = s.syscalls().as_ref().unwrap();
    assert_eq!(rules[1].errno_ret(), Some(5));
    let a = rules[1].args().as_ref().unwrap()[0];
    assert_eq!(
        (a.index(), a.value(), a.value_two(), a.op()),
        (1, 255, Some(7), LinuxSeccompOperator::ScmpCmpMaskedEq)
    );

    let with_admin: Vec<&str> = DEFAULT_CAPS.iter().copied().chain(["sys_admin"]).collect();
    let s = docker::resolve(&p, &test_env(&X86_64, &with_admin)).unwrap();
    let n = names_of(&s);
    assert!(
        n.contains(&vec!["mount".to_string()]) && !n.contains(&vec!["umount2".to_string()]),
        "{n:?}"
    );

    let s = docker::resolve(&p, &test_env(&AARCH64, DEFAULT_CAPS)).unwrap();
    let n = names_of(&s);
    assert!(
        !n.iter()
            .flatten()
            .any(|x| x == "arch_prctl" || x == "uname"),
        "{n:?}"
    );

    // and it compiles to what it says
    let s = docker::resolve(&p, &test_env(&X86_64, DEFAULT_CAPS)).unwrap();
    let prog = compile_for(&s, &X86_64).unwrap();
    assert_eq!(eval(&prog, &X86_64, "read", a0(0)), ALLOW);
    assert_eq!(
        eval(&prog, &X86_64, "getppid", [0, 0x1207, 0, 0, 0, 0]),
        errno(5)
    );
    assert_eq!(
        eval(&prog, &X86_64, "getppid", [0, 0x1208, 0, 0, 0, 0]),
        errno(38)
    );
    assert_eq!(eval(&prog, &X86_64, "uname", a0(0)), libc::SECCOMP_RET_LOG);
    assert_eq!(eval(&prog, &X86_64, "mkdir", a0(0)), errno(38));
}

fn json_err(json: &str) -> String {
    from_docker_json(json.as_bytes(), DEFAULT_CAPS)
        .unwrap_err()
        .to_string()
}

#[test]
fn docker_profile_errors_name_the_culprit() {
    // malformed JSON: line and column
    let e = from_docker_json(b"{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [\n    {\"names\": [\"read\"] \"action\": 1}\n  ]\n}", &[])
        .unwrap_err();
    match &e {
        SeccompError::Json { line, column, .. } => assert_eq!((*line, *column), (4, 24), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("line 4"), "{e}");
    // wrong type: still a JSON error with a position
    let e = json_err(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": "zero"}]}]}"#,
    );
    assert!(e.contains("line 1") && e.contains("column"), "{e}");

    let cases: &[(&str, &str)] = &[
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["close"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_FOO"}]}"#,
            r#"syscalls[3].action: unknown action "SCMP_ACT_FOO""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_DENY"}"#,
            r#"defaultAction: unknown action "SCMP_ACT_DENY""#,
        ),
        (r#"{"syscalls": []}"#, "defaultAction: missing"),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 8, "op": "SCMP_CMP_EQUAL"}]}]}"#,
            r#"syscalls[0].args[1].op: unknown operator "SCMP_CMP_EQUAL""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 6, "value": 8, "op": "SCMP_CMP_EQ"}]}]}"#,
            "syscalls[0].args[0].index: argument index 6 is out of range",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]}"#,
            r#"architectures[1]: unknown architecture "SCMP_ARCH_Z80""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X68"]}]}"#,
            r#"archMap[0].subArchitectures[0]: unknown architecture "SCMP_ARCH_X68""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
            "archMap: both",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd46"]}}]}"#,
            r#"syscalls[0].includes.arches[0]: unknown architecture "amd46""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "mkdri"], "action": "SCMP_ACT_ALLOW"}]}"#,
            r#"syscalls[0].names[1]: unknown syscall "mkdri""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                "excludes": {"caps": ["CAP_SYS_ADMN"]}}]}"#,
            r#"syscalls[0].excludes.caps[0]: unknown capability "CAP_SYS_ADMN""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW",
                "includes": {"minKernel": "4.8.0"}}]}"#,
            r#"syscalls[0].includes.minKernel: invalid kernel version "4.8.0""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#,
            r#"syscalls[0]: both "name" and "names""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0]: no syscall named",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}"#,
            "syscalls[0].action: missing",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}"#,
            "syscalls[0].errnoRet: errno 70000 is out of range",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_FAST"]}"#,
            r#"flags[1]: unknown flag "SECCOMP_FILTER_FLAG_FAST""#,
        ),
    ];
    for (json, want) in cases {
        let e = json_err(json);
        assert!(e.contains(want), "got {e:?}, want {want:?}");
    }
    // Unknown names in rules that do not apply here are not checked.
    from_docker_json(
        br#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["frobnicate"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}}]}"#,
        &[],
    )
    .unwrap();
}

// ------------------------------------------------------ the real kernel

/// `cmd` run under `prog`, with no_new_privs set, output captured.
fn confined(prog: &Program, cmd: &[&str]) -> Output {
    let prog = prog.clone();
    let mut c = Command::new(cmd[0]);
    c.args(&cmd[1..]).stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before execve. It only
    // makes two syscalls (prctl, seccomp) and builds no heap data on success
    // (`install` does not allocate), so it is safe after fork even though the
    // test harness is multi-threaded.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            install(&prog).map_err(|e| match e {
                SeccompError::Install(io) => io,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })
        });
    }
    c.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn host_default() -> Program {
    let p = compile(&docker_default(DEFAULT_CAPS)).unwrap();
    assert!(p.notes().is_empty(), "{:?}", p.notes());
    p
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn kernel_default_profile_runs_ordinary_programs() {
    let p = host_default();
    let o = confined(&p, &["/bin/true"]);
    assert!(o.status.success(), "{}", show(&o));

    let o = confined(&p, &["ls", "/"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == "usr"),
        "{}",
        show(&o)
    );

    let o = confined(
        &p,
        &[
            "sh",
            "-c",
            "echo hi; (echo sub) | cat; ls /proc/self/ > /dev/null",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\nsub\n");

    // The filter really is on, in filter mode.
    let o = confined(&p, &["grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).split_whitespace().last(),
        Some("2"),
        "{}",
        show(&o)
    );
}

#[test]
fn kernel_default_profile_runs_python() {
    let Some(py) = python() else {
        eprintln!("no python3: skipping");
        return;
    };
    // Start-up, threads, a subprocess (posix_spawn: clone3 → ENOSYS → clone),
    // sockets.
    let code = "import json, threading, subprocess, socket, os\n\
                t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
                r = subprocess.run(['/bin/true']); assert r.returncode == 0\n\
                s = socket.socket(); s.close()\n\
                pid = os.fork()\n\
                if pid == 0: os._exit(7)\n\
                assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7\n\
                print(json.dumps({'ok': True}))";
    let o = confined(&host_default(), &[py, "-c", code]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), r#"{"ok": true}"#);
}

#[test]
fn kernel_default_profile_denies_unshare() {
    let o = confined(&host_default(), &["unshare", "--user", "true"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{}",
        show(&o)
    );
}

/// Runs `syscall(nr, args…)` in python under `prog`; returns errno (0 = ok).
fn python_syscall_errno(prog: &Program, nr: libc::c_long, args: &[u64]) -> Option<i32> {
    let py = python()?;
    let args: Vec<String> = args
        .iter()
        .map(|a| format!("ctypes.c_ulong({a:#x})"))
        .collect();
    let code = format!(
        "import ctypes, sys\n\
         l = ctypes.CDLL(None, use_errno=True)\n\
         l.syscall.restype = ctypes.c_long\n\
         r = l.syscall(ctypes.c_long({nr}), {})\n\
         sys.exit(ctypes.get_errno() if r == -1 else 0)",
        args.join(", ")
    );
    let o = confined(prog, &[py, "-c", &code]);
    assert!(o.status.code().is_some(), "{}", show(&o));
    Some(o.status.code().unwrap())
}

#[test]
fn kernel_default_profile_denies_keyctl_and_friends() {
    let p = host_default();
    let cases: &[(&str, libc::c_long, &[u64], i32)] = &[
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
        (
            "keyctl",
            libc::SYS_keyctl,
            &[0, (-3i64) as u64, 0, 0, 0],
            libc::EPERM,
        ),
        ("add_key", libc::SYS_add_key, &[0, 0, 0, 0, 0], libc::EPERM),
        (
            "request_key",
            libc::SYS_request_key,
            &[0, 0, 0, 0],
            libc::EPERM,
        ),
        ("bpf", libc::SYS_bpf, &[0, 0, 0], libc::EPERM),
        ("mount", libc::SYS_mount, &[0, 0, 0, 0, 0], libc::EPERM),
        ("clone3", libc::SYS_clone3, &[0, 0], libc::ENOSYS),
        (
            "clone(CLONE_NEWUSER)",
            libc::SYS_clone,
            &[(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0],
            libc::EPERM,
        ),
        (
            "socket(AF_VSOCK)",
            libc::SYS_socket,
            &[libc::AF_VSOCK as u64, libc::SOCK_STREAM as u64, 0],
            libc::EPERM,
        ),
        (
            "personality(ADDR_NO_RANDOMIZE)",
            libc::SYS_personality,
            &[0x0040000],
            libc::EPERM,
        ),
        (
            "personality(query)",
            libc::SYS_personality,
            &[0xffff_ffff],
            0,
        ),
    ];
    for (what, nr, args, want) in cases {
        let Some(got) = python_syscall_errno(&p, *nr, args) else {
            eprintln!("no python3: skipping");
            return;
        };
        assert_eq!(got, *want, "{what}");
    }
    if cfg!(target_arch = "x86_64") {
        assert_eq!(libc::SYS_keyctl, 250);
    }
}

#[test]
fn kernel_custom_profile_errno_for_mkdir_only() {
    use LinuxSeccompAction::*;
    let s = profile(
        ScmpActAllow,
        None,
        vec![rule(&["mkdir", "mkdirat"], ScmpActErrno, Some(38), vec![])],
    );
    let p = compile(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("x");
    let o = confined(&p, &["mkdir", target.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Function not implemented"),
        "{}",
        show(&o)
    );
    assert!(!target.exists());
    // other calls work: create a file, list the directory
    let file = dir.path().join("f");
    let o = confined(
        &p,
        &[
            "sh",
            "-c",
            &format!(
                "echo x > {0} && ls {1}",
                file.display(),
                dir.path().display()
            ),
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "f\n");
}

#[test]
fn kernel_kill_and_trap_actions_deliver_sigsys() {
    use LinuxSeccompAction::*;
    for action in [ScmpActKillProcess, ScmpActTrap, ScmpActKill] {
        let s = profile(
            ScmpActAllow,
            None,
            vec![rule(&["mkdir", "mkdirat"], action, None, vec![])],
        );
        let p = compile(&s).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let o = confined(&p, &["mkdir", dir.path().join("x").to_str().unwrap()]);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGSYS),
            "{action:?}: {}",
            show(&o)
        );
    }
    // LOG lets the call through
    let s = profile(
        ScmpActAllow,
        None,
        vec![rule(&["mkdir", "mkdirat"], ScmpActLog, None, vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let o = confined(
        &compile(&s).unwrap(),
        &["mkdir", dir.path().join("x").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", show(&o));
}

/// In a forked child (no exec): installs `prog`, makes `syscall(nr, args…)`
/// for every case and reports `ret` or `-errno` for each.
fn raw_syscalls_under(prog: &Program, nr: libc::c_long, cases: &[[u64; 6]]) -> Vec<i64> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let mut results = vec![0i64; cases.len()];
    // SAFETY: fork in a multi-threaded process; the child below only makes
    // raw syscalls (prctl, seccomp, the syscall under test, write, _exit),
    // writes into memory allocated before the fork, and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: plain syscalls on valid arguments; `results` and `cases`
        // are this child's copies of the parent's buffers.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install(prog).is_err() {
                libc::_exit(90);
            }
            for (i, a) in cases.iter().enumerate() {
                let r = libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
                results[i] = if r == -1 {
                    -i64::from(*libc::__errno_location())
                } else {
                    r
                };
            }
            let bytes = results.len() * 8;
            let n = libc::write(wr, results.as_ptr().cast(), bytes);
            libc::_exit(if n == bytes as isize { 0 } else { 91 });
        }
    }
    // SAFETY: closing our copy of the write end, which we own.
    unsafe { libc::close(wr) };
    let mut status = 0;
    // SAFETY: waiting for the child we forked; `status` is a valid int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    let mut buf = vec![0u8; cases.len() * 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe { libc::read(rd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        assert!(n > 0, "short read from child");
        got += n as usize;
    }
    // SAFETY: closing the read end, which we own.
    unsafe { libc::close(rd) };
    buf.chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn kernel_argument_operators_with_64_bit_values() {
    use LinuxSeccompAction::*;
    use LinuxSeccompOperator::*;
    // One rule per (operator, value), told apart by a magic arg1 (or arg5),
    // each returning its own errno; getppid ignores its arguments.
    const MAGIC: u64 = 0xdead_beef_0000_0000;
    let mut specs = Vec::new(); // (op, value, value_two, magic index)
    for op in OPS {
        for v in [5u64, 0x1_0000_0005] {
            let v2 = if op == ScmpCmpMaskedEq {
                0x1_0000_0004
            } else {
                0
            };
            specs.push((op, v, v2, 1usize));
        }
    }
    specs.push((
        ScmpCmpMaskedEq,
        0xffff_0000_0000_00ff,
        0x8000_0000_0000_0005,
        5,
    ));
    specs.push((ScmpCmpLe, u64::MAX - 1, 0, 5));
    let rules = specs
        .iter()
        .enumerate()
        .map(|(k, (op, v, v2, mi))| {
            rule(
                &["getppid"],
                ScmpActErrno,
                Some(100 + k as u32),
                vec![
                    arg(*mi, ScmpCmpEq, MAGIC + k as u64, None),
                    arg(0, *op, *v, Some(*v2)),
                ],
            )
        })
        .collect();
    let p = compile(&profile(ScmpActAllow, None, rules)).unwrap();

    let mut cases = Vec::new();
    let mut want = Vec::new();
    for (k, (op, v, v2, mi)) in specs.iter().enumerate() {
        for x in VALUES
            .iter()
            .copied()
            .chain([0x8000_0000_0000_0005, 0x8000_0001_0000_0005])
        {
            let mut a = [0u64; 6];
            a[0] = x;
            a[*mi] = MAGIC + k as u64;
            cases.push(a);
            want.push(holds(*op, x, *v, *v2).then_some(-(100 + k as i64)));
        }
    }
    let got = raw_syscalls_under(&p, libc::SYS_getppid, &cases);
    // The child's parent is this process.
    // SAFETY: getpid has no preconditions.
    let ppid = i64::from(unsafe { libc::getpid() });
    for ((c, w), g) in cases.iter().zip(&want).zip(&got) {
        match w {
            Some(e) => assert_eq!(g, e, "case {c:x?}"),
            None => assert_eq!(*g, ppid, "case {c:x?}"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn kernel_x32_syscalls_are_killed() {
    use LinuxSeccompAction::*;
    let p = compile(&profile(
        ScmpActAllow,
        None,
        vec![rule(&["mkdir"], ScmpActErrno, None, vec![])],
    ))
    .unwrap();
    // SAFETY: as in raw_syscalls_under: the child only makes raw syscalls.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: plain syscalls; the x32 getpid should never return.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install(&p).is_err() {
                libc::_exit(90);
            }
            libc::syscall(0x4000_0000 | libc::SYS_getpid);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "status {status:#x}"
    );
}

#[test]
fn kernel_tsync_flag_installs() {
    let mut s = docker_default(DEFAULT_CAPS);
    s.set_flags(Some(vec![
        oci_spec::runtime::LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
    ]));
    let p = compile(&s).unwrap();
    assert_eq!(p.flags(), libc::SECCOMP_FILTER_FLAG_TSYNC);
    let o = confined(&p, &["/bin/true"]);
    assert!(o.status.success(), "{}", show(&o));
}
