//! Docker's seccomp profile format (what `docker run --security-opt
//! seccomp=profile.json` takes) and its resolution into an OCI profile.
//!
//! Resolution follows moby's `setupSeccomp`: `architectures` or the `archMap`
//! entry for this machine; each syscall rule kept only if its `excludes` do
//! not match (any listed capability held, this architecture listed, kernel at
//! least `minKernel`) and its `includes` do (every listed capability held,
//! this architecture listed, kernel at least `minKernel`). Architectures in
//! `includes/excludes.arches` are Go names (`amd64`, `arm64`, …).
//!
//! Where berth is stricter than moby it is to catch mistakes early; every
//! error names the field at fault (`syscalls[3].action: unknown action
//! "SCMP_ACT_FOO"`):
//! - unknown actions, operators, flags, architectures and capability names are
//!   errors (moby passes some through to fail later, or never match);
//! - a syscall name in an applicable rule must exist on *some* Linux
//!   architecture. Names of this architecture are kept; names that exist only
//!   elsewhere (`chown32`, `_llseek` on x86_64) are dropped silently, exactly
//!   as libseccomp would ignore them; anything else is a typo and an error.

use serde::{Deserialize, Serialize};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::SeccompError;
use super::arch::{self, Target};
use super::default_profile::{self, Act, When};

/// A Docker-format profile as it appears on disk. Lists are `Option` because
/// Go writes (and accepts) `null` for empty ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Syscall>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    names: Option<Vec<String>>,
    /// Deprecated single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Vec<Arg>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    includes: Option<Filter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    excludes: Option<Filter>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    value: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_two: Option<u64>,
    #[serde(default)]
    op: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arches: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_kernel: Option<String>,
}

/// Every capability the kernel defines, without the `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// `chown`, `cap_chown`, `CAP_CHOWN` → `CHOWN`.
pub(crate) fn cap_key(s: &str) -> String {
    let up = s.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").unwrap_or(&up).to_string()
}

/// The host's kernel version (major, minor), if it can be read.
pub(crate) fn host_kernel() -> Option<(u32, u32)> {
    let uname = rustix::system::uname();
    let release = uname.release().to_str().ok()?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// moby's `minKernel` format: exactly `major.minor`.
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_action(s: &str) -> Option<LinuxSeccompAction> {
    use LinuxSeccompAction::*;
    Some(match s {
        "SCMP_ACT_KILL" => ScmpActKill,
        "SCMP_ACT_KILL_THREAD" => ScmpActKillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpActKillProcess,
        "SCMP_ACT_TRAP" => ScmpActTrap,
        "SCMP_ACT_ERRNO" => ScmpActErrno,
        "SCMP_ACT_TRACE" => ScmpActTrace,
        "SCMP_ACT_ALLOW" => ScmpActAllow,
        "SCMP_ACT_LOG" => ScmpActLog,
        "SCMP_ACT_NOTIFY" => ScmpActNotify,
        _ => return None,
    })
}

fn parse_op(s: &str) -> Option<LinuxSeccompOperator> {
    use LinuxSeccompOperator::*;
    Some(match s {
        "SCMP_CMP_NE" => ScmpCmpNe,
        "SCMP_CMP_LT" => ScmpCmpLt,
        "SCMP_CMP_LE" => ScmpCmpLe,
        "SCMP_CMP_EQ" => ScmpCmpEq,
        "SCMP_CMP_GE" => ScmpCmpGe,
        "SCMP_CMP_GT" => ScmpCmpGt,
        "SCMP_CMP_MASKED_EQ" => ScmpCmpMaskedEq,
        _ => return None,
    })
}

fn parse_flag(s: &str) -> Option<LinuxSeccompFilterFlag> {
    use LinuxSeccompFilterFlag::*;
    Some(match s {
        "SECCOMP_FILTER_FLAG_TSYNC" => SeccompFilterFlagTsync,
        "SECCOMP_FILTER_FLAG_LOG" => SeccompFilterFlagLog,
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => SeccompFilterFlagSpecAllow,
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => SeccompFilterFlagWaitKillableRecv,
        _ => return None,
    })
}

fn check_arch(at: String, s: &str) -> Result<Arch, SeccompError> {
    arch::parse_oci_arch(s)
        .ok_or_else(|| SeccompError::invalid(at, format!("unknown architecture {s:?}")))
}

/// What resolution needs to know about the machine.
pub(crate) struct Env<'a> {
    /// The architecture filtered for; `None` on hosts berth cannot filter
    /// (names are then kept unchecked).
    pub target: Option<&'a Target>,
    /// Go's name for this architecture (for `includes.arches`).
    pub go_arch: &'a str,
    /// Running kernel (major, minor); `None` counts as new enough.
    pub kernel: Option<(u32, u32)>,
    /// Capabilities the container holds, as `cap_key`s.
    pub caps: Vec<String>,
}

impl Env<'_> {
    pub fn host(caps: &[&str]) -> Env<'static> {
        let target = arch::host().ok();
        Env {
            target,
            go_arch: target.map_or(std::env::consts::ARCH, |t| t.go_arch),
            kernel: host_kernel(),
            caps: caps.iter().map(|c| cap_key(c)).collect(),
        }
    }
}

/// Validates a filter and says whether it matches, in moby's sense: for
/// `includes`, whether *every* given condition holds; for `excludes`, whether
/// *any* does.
fn filter_matches(
    f: &Filter,
    at: &str,
    env: &Env<'_>,
    excludes: bool,
) -> Result<bool, SeccompError> {
    let mut results = Vec::new();
    if let Some(caps) = f.caps.as_ref().filter(|c| !c.is_empty()) {
        let mut held = Vec::new();
        for (k, c) in caps.iter().enumerate() {
            let key = cap_key(c);
            if !CAPABILITIES.contains(&key.as_str()) {
                return Err(SeccompError::invalid(
                    format!("{at}.caps[{k}]"),
                    format!("unknown capability {c:?}"),
                ));
            }
            held.push(env.caps.contains(&key));
        }
        // includes: all held; excludes: any held.
        results.push(if excludes {
            held.iter().any(|h| *h)
        } else {
            held.iter().all(|h| *h)
        });
    }
    if let Some(arches) = f.arches.as_ref().filter(|a| !a.is_empty()) {
        for (k, a) in arches.iter().enumerate() {
            if !arch::GO_ARCHES.contains(&a.as_str()) {
                return Err(SeccompError::invalid(
                    format!("{at}.arches[{k}]"),
                    format!("unknown architecture {a:?}"),
                ));
            }
        }
        results.push(arches.iter().any(|a| a == env.go_arch));
    }
    if let Some(v) = &f.min_kernel {
        let want = parse_kernel(v).ok_or_else(|| {
            SeccompError::invalid(
                format!("{at}.minKernel"),
                format!("invalid kernel version {v:?} (expected \"major.minor\")"),
            )
        })?;
        results.push(env.kernel.is_none_or(|k| k >= want));
    }
    Ok(if excludes {
        results.iter().any(|r| *r)
    } else {
        results.iter().all(|r| *r)
    })
}

/// Resolves a Docker profile for one machine into the OCI form.
pub(crate) fn resolve(p: &Profile, env: &Env<'_>) -> Result<LinuxSeccomp, SeccompError> {
    let default_action = match &p.default_action {
        None => return Err(SeccompError::invalid("defaultAction", "missing")),
        Some(a) => parse_action(a).ok_or_else(|| {
            SeccompError::invalid("defaultAction", format!("unknown action {a:?}"))
        })?,
    };

    let architectures = p.architectures.as_deref().unwrap_or_default();
    let arch_map = p.arch_map.as_deref().unwrap_or_default();
    if !architectures.is_empty() && !arch_map.is_empty() {
        return Err(SeccompError::invalid(
            "archMap",
            "both \"architectures\" and \"archMap\" are given; use one",
        ));
    }
    for (i, a) in architectures.iter().enumerate() {
        check_arch(format!("architectures[{i}]"), a)?;
    }
    for (i, m) in arch_map.iter().enumerate() {
        check_arch(format!("archMap[{i}].architecture"), &m.architecture)?;
        for (j, s) in m.sub_architectures.iter().flatten().enumerate() {
            check_arch(format!("archMap[{i}].subArchitectures[{j}]"), s)?;
        }
    }

    let mut flags = Vec::new();
    for (i, f) in p.flags.iter().flatten().enumerate() {
        flags.push(parse_flag(f).ok_or_else(|| {
            SeccompError::invalid(format!("flags[{i}]"), format!("unknown flag {f:?}"))
        })?);
    }

    let mut out_rules = Vec::new();
    for (i, sc) in p.syscalls.iter().flatten().enumerate() {
        let at = format!("syscalls[{i}]");
        let names: Vec<String> = match (&sc.name, &sc.names) {
            (Some(n), Some(ns)) if !n.is_empty() && !ns.is_empty() => {
                return Err(SeccompError::invalid(
                    at,
                    "both \"name\" and \"names\" are given; use \"names\"",
                ));
            }
            (_, Some(ns)) if !ns.is_empty() => ns.clone(),
            (Some(n), _) if !n.is_empty() => vec![n.clone()],
            _ => {
                return Err(SeccompError::invalid(
                    at,
                    "no syscall named (\"names\" is empty)",
                ));
            }
        };
        let action = match &sc.action {
            None => return Err(SeccompError::invalid(format!("{at}.action"), "missing")),
            Some(a) => parse_action(a).ok_or_else(|| {
                SeccompError::invalid(format!("{at}.action"), format!("unknown action {a:?}"))
            })?,
        };
        if let Some(e) = sc.errno_ret
            && e > 4095
        {
            return Err(SeccompError::invalid(
                format!("{at}.errnoRet"),
                format!("errno {e} is out of range (at most 4095)"),
            ));
        }
        let mut args = Vec::new();
        for (j, a) in sc.args.iter().flatten().enumerate() {
            let op = parse_op(&a.op).ok_or_else(|| {
                SeccompError::invalid(
                    format!("{at}.args[{j}].op"),
                    format!("unknown operator {:?}", a.op),
                )
            })?;
            if a.index > 5 {
                return Err(SeccompError::invalid(
                    format!("{at}.args[{j}].index"),
                    format!("argument index {} is out of range (0-5)", a.index),
                ));
            }
            let mut b = LinuxSeccompArgBuilder::default()
                .index(a.index as usize)
                .value(a.value)
                .op(op);
            if let Some(v2) = a.value_two {
                b = b.value_two(v2);
            }
            args.push(
                b.build()
                    .map_err(|e| SeccompError::Internal(e.to_string()))?,
            );
        }

        // Evaluate both filters fully so that errors in them are reported
        // whether or not the rule applies here.
        let excluded = match &sc.excludes {
            Some(f) => filter_matches(f, &format!("{at}.excludes"), env, true)?,
            None => false,
        };
        let included = match &sc.includes {
            Some(f) => filter_matches(f, &format!("{at}.includes"), env, false)?,
            None => true,
        };
        if excluded || !included {
            continue;
        }

        let mut kept = Vec::new();
        for (j, n) in names.iter().enumerate() {
            match env.target {
                Some(t) if t.nr(n).is_some() => kept.push(n.clone()),
                Some(_) if arch::is_known_anywhere(n) => {}
                Some(t) => {
                    return Err(SeccompError::invalid(
                        format!("{at}.names[{j}]"),
                        format!(
                            "unknown syscall {n:?} (not a syscall on {} or any other Linux architecture berth knows)",
                            t.name
                        ),
                    ));
                }
                None => kept.push(n.clone()),
            }
        }
        if kept.is_empty() {
            continue;
        }
        let mut rule = LinuxSyscall::default();
        rule.set_names(kept);
        rule.set_action(action);
        rule.set_errno_ret(sc.errno_ret);
        rule.set_args((!args.is_empty()).then_some(args));
        out_rules.push(rule);
    }

    let mut s = LinuxSeccomp::default();
    s.set_default_action(default_action);
    s.set_default_errno_ret(p.default_errno_ret);
    s.set_architectures(env.target.map(|t| vec![t.oci]));
    s.set_flags((!flags.is_empty()).then_some(flags));
    s.set_listener_path(p.listener_path.clone().map(Into::into));
    s.set_listener_metadata(p.listener_metadata.clone());
    s.set_syscalls(Some(out_rules));
    Ok(s)
}

/// Parses Docker-format JSON; syntax and type errors carry line and column.
pub(crate) fn parse(bytes: &[u8]) -> Result<Profile, SeccompError> {
    serde_json::from_slice(bytes).map_err(|e| SeccompError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

fn when_filter(w: &When) -> Option<Filter> {
    let f = Filter {
        caps: (!w.caps.is_empty()).then(|| w.caps.iter().map(|s| s.to_string()).collect()),
        arches: (!w.arches.is_empty()).then(|| w.arches.iter().map(|s| s.to_string()).collect()),
        min_kernel: w.min_kernel.map(str::to_string),
    };
    (f != Filter::default()).then_some(f)
}

/// Docker's default profile in Docker's own format.
pub(crate) fn default_profile() -> Profile {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let syscalls = default_profile::GROUPS
        .iter()
        .map(|g| {
            let (action, errno_ret) = match g.action {
                Act::Allow => ("SCMP_ACT_ALLOW", None),
                Act::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
            };
            Syscall {
                names: Some(strings(g.names)),
                name: None,
                action: Some(action.to_string()),
                errno_ret,
                args: (!g.args.is_empty()).then(|| {
                    g.args
                        .iter()
                        .map(|a| Arg {
                            index: u64::from(a.index),
                            value: a.value,
                            value_two: (a.value_two != 0).then_some(a.value_two),
                            op: a.op.to_string(),
                        })
                        .collect()
                }),
                comment: (!g.comment.is_empty()).then(|| g.comment.to_string()),
                includes: when_filter(&g.includes),
                excludes: when_filter(&g.excludes),
            }
        })
        .collect();
    Profile {
        default_action: Some("SCMP_ACT_ERRNO".to_string()),
        default_errno_ret: Some(default_profile::DEFAULT_ERRNO),
        arch_map: Some(
            default_profile::ARCH_MAP
                .iter()
                .map(|(a, subs)| ArchMap {
                    architecture: a.to_string(),
                    sub_architectures: (!subs.is_empty()).then(|| strings(subs)),
                })
                .collect(),
        ),
        syscalls: Some(syscalls),
        ..Profile::default()
    }
}
