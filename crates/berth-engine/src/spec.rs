//! From an image config and `run` options to an OCI runtime spec, merged the
//! way Docker does (entrypoint/cmd, env, user, workdir), with Docker's default
//! mounts, masked and read-only paths, and capability set.

use std::path::{Path, PathBuf};

use berth_runtime::linux::caps;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde_json::Value;

/// What a user asked `run` for (the subset the runtime honours so far).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// Command after the image name (replaces the image's Cmd).
    pub cmd: Vec<String>,
    /// `--entrypoint` (empty string clears the image's).
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE` / `-e KEY` (taken from berth's environment).
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u uid[:gid]|name[:group]`.
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--security-opt` (`seccomp=PROFILE.json|unconfined`, `no-new-privileges[:true]`).
    pub security_opt: Vec<String>,
    /// `--memory` (e.g. `64m`).
    pub memory: Option<String>,
    /// `--memory-swap` (memory plus swap; `-1` for unlimited).
    pub memory_swap: Option<String>,
    /// `--cpus` (e.g. `1.5`).
    pub cpus: Option<String>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--pids-limit`.
    pub pids_limit: Option<i64>,
    /// `--ulimit name=soft[:hard]`.
    pub ulimits: Vec<String>,
    /// `--cgroup-parent` (relative to berth's own cgroup).
    pub cgroup_parent: Option<String>,
    /// `--stop-signal` (else the image's StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--label KEY=VALUE` (on top of the image's labels).
    pub labels: Vec<String>,
    /// `-v`/`--volume`.
    pub volumes: Vec<String>,
    /// `--mount`.
    pub mounts: Vec<String>,
    /// `--tmpfs`.
    pub tmpfs: Vec<String>,
    /// `-t`: a pseudo-terminal.
    pub tty: bool,
    /// `--init`: an init process as PID 1 that reaps zombies and forwards signals.
    pub init: bool,
    /// `-i`: keep stdin open (Docker's OpenStdin); a detached container then takes
    /// input from `start -i`.
    pub open_stdin: bool,
    /// Close stdin when the first attached client hangs up (Docker's StdinOnce:
    /// `create -i`, but not `run -d -i`).
    pub stdin_once: bool,
    // Networking (see `network.rs`).
    /// `--network bridge|none|host|container:NAME|NETWORK` (absent: none).
    pub network: Option<String>,
    /// `-p/--publish`.
    pub publish: Vec<String>,
    /// `-P/--publish-all`: every EXPOSEd port on a random host port.
    pub publish_all: bool,
    /// `--ip`.
    pub ip: Option<String>,
    /// `--dns`.
    pub dns: Vec<String>,
    /// `--dns-search` (`.` for none).
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_option: Vec<String>,
    /// `--add-host NAME:IP` (IP may be `host-gateway`).
    pub add_host: Vec<String>,
    /// `--network-alias`.
    pub network_alias: Vec<String>,
    /// `--mac-address` of eth0 (set by the tuning plugin).
    pub mac_address: Option<String>,
    /// `--isolation container|vm`.
    pub isolation: crate::containers::vm::Isolation,
}

/// Parses Docker's byte sizes: `1024`, `512k`, `64m`, `1g`, `2gb` (binary units).
pub fn parse_size(flag: &str, v: &str) -> Result<i64, SpecError> {
    let bad = || {
        SpecError(format!(
            "invalid value \"{v}\" for {flag}: expected a size such as 64m, 512k or 1g"
        ))
    };
    let t = v.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok((n * mult as f64) as i64)
}

/// cgroup resources from `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`, `--pids-limit`.
pub fn resources(o: &RunOptions) -> Result<Option<oci_spec::runtime::LinuxResources>, SpecError> {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    let mut r = LinuxResourcesBuilder::default();
    let mut any = false;
    let memory = o
        .memory
        .as_deref()
        .map(|m| parse_size("--memory", m))
        .transpose()?;
    if let Some(m) = memory
        && m < 6 << 20
    {
        return Err(SpecError(
            "invalid value for --memory: minimum memory limit allowed is 6MB".into(),
        ));
    }
    let swap = match o.memory_swap.as_deref() {
        Some("-1") => Some(-1),
        Some(v) => Some(parse_size("--memory-swap", v)?),
        None => None,
    };
    if swap.is_some() && memory.is_none() {
        return Err(SpecError(
            "--memory-swap requires --memory to be set too".into(),
        ));
    }
    if let (Some(m), Some(sw)) = (memory, swap)
        && sw != -1
        && sw < m
    {
        return Err(SpecError(
            "--memory-swap must be at least as large as --memory".into(),
        ));
    }
    if let Some(m) = memory {
        // Docker's default: as much swap as memory (memory+swap = 2 x memory).
        let sw = swap.unwrap_or(m * 2);
        let mut mb = LinuxMemoryBuilder::default();
        mb = mb.limit(m).swap(sw);
        r = r.memory(mb.build().map_err(|e| SpecError(e.to_string()))?);
        any = true;
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(c) = &o.cpus {
        let n: f64 = c
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)
            .ok_or_else(|| {
                SpecError(format!(
                    "invalid value \"{c}\" for --cpus: expected a positive number such as 1.5"
                ))
            })?;
        cpu = cpu.quota((n * 100_000.0) as i64).period(100_000u64);
        any_cpu = true;
    }
    if let Some(sh) = o.cpu_shares {
        cpu = cpu.shares(sh);
        any_cpu = true;
    }
    if any_cpu {
        r = r.cpu(cpu.build().map_err(|e| SpecError(e.to_string()))?);
        any = true;
    }
    if let Some(p) = o.pids_limit {
        let limit = if p <= 0 { -1 } else { p };
        r = r.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(|e| SpecError(e.to_string()))?,
        );
        any = true;
    }
    if !any {
        return Ok(None);
    }
    r.build().map(Some).map_err(|e| SpecError(e.to_string()))
}

/// `--ulimit nofile=1024:2048` as OCI rlimits.
pub fn ulimits(list: &[String]) -> Result<Vec<oci_spec::runtime::PosixRlimit>, SpecError> {
    use oci_spec::runtime::{PosixRlimitBuilder, PosixRlimitType};
    list.iter()
        .map(|u| {
            let bad = |why: &str| SpecError(format!("invalid --ulimit \"{u}\": {why}"));
            let (name, vals) = u
                .split_once('=')
                .ok_or_else(|| bad("expected name=soft[:hard]"))?;
            let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
            let num = |v: &str| -> Result<u64, SpecError> {
                if v == "-1" || v == "unlimited" {
                    Ok(u64::MAX)
                } else {
                    v.parse().map_err(|_| bad("limits must be numbers"))
                }
            };
            let (soft, hard) = (num(soft)?, num(hard)?);
            if soft > hard {
                return Err(bad("soft limit exceeds hard limit"));
            }
            let typ: PosixRlimitType = format!("RLIMIT_{}", name.to_ascii_uppercase())
                .parse()
                .map_err(|_| bad("unknown limit name"))?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(soft)
                .hard(hard)
                .build()
                .map_err(|e| bad(&e.to_string()))
        })
        .collect()
}

/// A `run` request that cannot be honoured, with the flag at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The program and its arguments: Docker's ENTRYPOINT/CMD rules.
pub fn command(cfg: &Value, o: &RunOptions) -> Result<Vec<String>, SpecError> {
    let c = cfg.get("config");
    let (entry, cmd) = match &o.entrypoint {
        // An explicit entrypoint resets the image's CMD too.
        Some(e) if e.is_empty() => (vec![], o.cmd.clone()),
        Some(e) => (vec![e.clone()], o.cmd.clone()),
        None => {
            let cmd = if o.cmd.is_empty() {
                strs(c.and_then(|c| c.get("Cmd")))
            } else {
                o.cmd.clone()
            };
            (strs(c.and_then(|c| c.get("Entrypoint"))), cmd)
        }
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError("no command specified".into()));
    }
    Ok(args)
}

/// Environment: image Env, then `-e` (a bare `-e KEY` copies berth's own value),
/// PATH and HOSTNAME and HOME defaults as Docker adds them.
pub fn environment(cfg: &Value, o: &RunOptions, hostname: &str, home: &str) -> Vec<String> {
    let mut env: Vec<String> = strs(cfg.get("config").and_then(|c| c.get("Env")));
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(&key));
        env.push(kv);
    };
    for e in &o.env {
        if e.contains('=') {
            set(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set(format!("{e}={v}"));
        }
    }
    let has = |env: &[String], k: &str| env.iter().any(|e| e.starts_with(&format!("{k}=")));
    let mut out = Vec::new();
    if !has(&env, "PATH") {
        out.push(format!("PATH={}", berth_image::config::DEFAULT_PATH));
    }
    out.push(format!("HOSTNAME={hostname}"));
    out.extend(env);
    if !has(&out, "HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// A file of the image's root file system: the top-most layer that has it.
fn image_file(lowerdirs: &[PathBuf], rel: &str) -> Option<String> {
    lowerdirs
        .iter()
        .map(|d| d.join(rel))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read_to_string(p).ok())
}

/// Resolves `user[:group]` (names or numbers) against the image's
/// /etc/passwd and /etc/group. Returns (uid, gid, home, additional gids).
pub fn resolve_user(
    spec: &str,
    lowerdirs: &[PathBuf],
) -> Result<(u32, u32, String, Vec<u32>), SpecError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = image_file(lowerdirs, "etc/passwd").unwrap_or_default();
    let group = image_file(lowerdirs, "etc/group").unwrap_or_default();
    let entry = |name: &str, by_uid: bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 7 && if by_uid { f[2] == name } else { f[0] == name })
    };
    let (uid, mut gid, home, uname) = if let Ok(n) = u.parse::<u32>() {
        match entry(u, true) {
            Some(f) => (
                n,
                f[3].parse().unwrap_or(0),
                f[5].to_string(),
                Some(f[0].to_string()),
            ),
            None => (n, 0, "/".to_string(), None),
        }
    } else {
        let f = entry(u, false).ok_or_else(|| {
            SpecError(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        })?;
        (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
            Some(u.to_string()),
        )
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    SpecError(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    // Supplementary groups the user is a member of, as `id` would list them.
    let extra: Vec<u32> = match &uname {
        Some(name) => group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => vec![],
    };
    Ok((uid, gid, home, extra))
}

fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> oci_spec::runtime::Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("valid mount")
}

/// Builds the spec for a container of an image whose root file system is
/// `rootfs` and whose layers are `lowerdirs` (top first).
pub fn build(
    cfg: &Value,
    o: &RunOptions,
    id: &str,
    rootfs: &Path,
    lowerdirs: &[PathBuf],
    user_mounts: Vec<oci_spec::runtime::Mount>,
) -> Result<Spec, SpecError> {
    let args = command(cfg, o)?;
    let c = cfg.get("config");
    let hostname = o
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12.min(id.len())].to_string());
    let user_spec = o
        .user
        .clone()
        .or_else(|| {
            c.and_then(|c| c.get("User"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "0".into());
    let (uid, gid, home, extra) = resolve_user(&user_spec, lowerdirs)?;
    let mut env = environment(cfg, o, &hostname, if home.is_empty() { "/" } else { &home });
    if o.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = o
        .workdir
        .clone()
        .or_else(|| {
            c.and_then(|c| c.get("WorkingDir"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let capset: Vec<Capability> = caps::docker_set(&o.cap_add, &o.cap_drop, o.privileged)
        .map_err(SpecError)?
        .iter()
        .filter_map(|c| c.trim_start_matches("CAP_").parse().ok())
        .collect();
    let capset: std::collections::HashSet<Capability> = capset.into_iter().collect();
    let cap_names: Vec<String> = capset.iter().map(|c| format!("CAP_{c}")).collect();
    let cap_refs: Vec<&str> = cap_names.iter().map(String::as_str).collect();
    let mut seccomp_opt: Option<String> = None;
    let mut nnp = false;
    for so in &o.security_opt {
        let (k, v) = so.split_once(['=', ':']).unwrap_or((so.as_str(), ""));
        match (k, v) {
            ("seccomp", v) if !v.is_empty() => seccomp_opt = Some(v.to_string()),
            ("no-new-privileges", "" | "true") => nnp = true,
            ("no-new-privileges", "false") => nnp = false,
            // Labels and AppArmor do not apply on this host; Docker accepts and ignores them too.
            ("label" | "apparmor", _) => {}
            _ => return Err(SpecError(format!("invalid --security-opt: \"{so}\""))),
        }
    }
    let seccomp = match seccomp_opt.as_deref() {
        Some("unconfined") => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| SpecError(format!("opening seccomp profile ({path}) failed: {e}")))?;
            Some(
                berth_runtime::seccomp::from_docker_json(&bytes, &cap_refs)
                    .map_err(|e| SpecError(format!("seccomp profile {path}: {e}")))?,
            )
        }
        None if o.privileged => None,
        None => Some(berth_runtime::seccomp::docker_default(&cap_refs)),
    };
    let rlimits = ulimits(&o.ulimits)?;
    let resources = resources(o)?;
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(extra)
        .build()
        .map_err(|e| SpecError(e.to_string()))?;
    let process = ProcessBuilder::default()
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(user)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capset.clone())
                .effective(capset.clone())
                .permitted(capset.clone())
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .map_err(|e| SpecError(e.to_string()))?,
        )
        .no_new_privileges(nnp)
        .terminal(o.tty)
        .rlimits(rlimits)
        .build()
        .map_err(|e| SpecError(e.to_string()))?;
    let ns = |t| {
        LinuxNamespaceBuilder::default()
            .typ(t)
            .build()
            .expect("namespace")
    };
    let mut linux = LinuxBuilder::default();
    if let Some(sc) = seccomp {
        linux = linux.seccomp(sc);
    }
    if let Some(r) = resources {
        linux = linux.resources(r);
    }
    let linux = linux
        .namespaces(vec![
            ns(LinuxNamespaceType::Mount),
            ns(LinuxNamespaceType::Pid),
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::Ipc),
            ns(LinuxNamespaceType::Network),
            ns(LinuxNamespaceType::Cgroup),
        ])
        .masked_paths(if o.privileged {
            vec![]
        } else {
            MASKED.iter().map(|s| s.to_string()).collect()
        })
        .readonly_paths(if o.privileged {
            vec![]
        } else {
            READONLY.iter().map(|s| s.to_string()).collect()
        })
        .build()
        .map_err(|e| SpecError(e.to_string()))?;
    let sys_opts: &[&str] = if o.privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount("/sys", "sysfs", "sysfs", sys_opts),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    ];
    // User mounts replace defaults at the same destination (e.g. /dev/shm).
    mounts.retain(|m| {
        !user_mounts
            .iter()
            .any(|u| u.destination() == m.destination())
    });
    mounts.extend(user_mounts);

    let mut annotations = std::collections::HashMap::new();
    if o.init {
        annotations.insert(
            berth_runtime::linux::INIT_ANNOTATION.to_string(),
            "true".to_string(),
        );
    }
    SpecBuilder::default()
        .version("1.0.2")
        .annotations(annotations)
        .hostname(hostname)
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(o.read_only)
                .build()
                .map_err(|e| SpecError(e.to_string()))?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(|e| SpecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entrypoint_and_cmd_merge_like_docker() {
        let cfg = json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}});
        let o = |cmd: &[&str], ep: Option<&str>| RunOptions {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            entrypoint: ep.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(command(&cfg, &o(&[], None)).unwrap(), ["/ep", "a", "b"]);
        assert_eq!(command(&cfg, &o(&["x"], None)).unwrap(), ["/ep", "x"]);
        assert_eq!(command(&cfg, &o(&[], Some("sh"))).unwrap(), ["sh"]);
        assert_eq!(
            command(&cfg, &o(&["-c", "x"], Some("sh"))).unwrap(),
            ["sh", "-c", "x"]
        );
        assert_eq!(command(&cfg, &o(&["ls"], Some(""))).unwrap(), ["ls"]);
        assert!(command(&json!({}), &o(&[], None)).is_err());
    }

    #[test]
    fn environment_merge() {
        let cfg = json!({"config": {"Env": ["PATH=/bin", "A=1"]}});
        let o = RunOptions {
            env: vec!["A=2".into(), "B=3".into()],
            ..Default::default()
        };
        let env = environment(&cfg, &o, "h", "/root");
        assert_eq!(env, ["HOSTNAME=h", "PATH=/bin", "A=2", "B=3", "HOME=/root"]);
        let env = environment(&json!({}), &RunOptions::default(), "h", "/");
        assert!(env[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn sizes_and_resources() {
        assert_eq!(parse_size("--memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("--memory", "1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("--memory", "512KB").unwrap(), 512 << 10);
        assert_eq!(parse_size("--memory", "1000").unwrap(), 1000);
        let e = parse_size("--memory", "12q").unwrap_err().to_string();
        assert!(e.contains("12q") && e.contains("--memory"), "{e}");
        let o = RunOptions {
            memory: Some("32m".into()),
            cpus: Some("0.5".into()),
            pids_limit: Some(10),
            ..Default::default()
        };
        let r = resources(&o).unwrap().unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(r.memory().as_ref().unwrap().swap(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        assert!(
            resources(&RunOptions {
                memory: Some("1m".into()),
                ..Default::default()
            })
            .is_err()
        );
        let l = ulimits(&["nofile=100:200".into()]).unwrap();
        assert_eq!((l[0].soft(), l[0].hard()), (100, 200));
        assert!(ulimits(&["nofile=300:200".into()]).is_err());
        assert!(ulimits(&["bogus=1".into()]).is_err());
    }

    #[test]
    fn users_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1000:\n",
        )
        .unwrap();
        let l = vec![dir.path().to_path_buf()];
        assert_eq!(
            resolve_user("app", &l).unwrap(),
            (1000, 1000, "/home/app".into(), vec![50])
        );
        assert_eq!(resolve_user("nobody:staff", &l).unwrap().1, 50);
        assert_eq!(
            resolve_user("4242:4343", &l).unwrap(),
            (4242, 4343, "/".into(), vec![])
        );
        assert!(
            resolve_user("ghost", &l)
                .unwrap_err()
                .to_string()
                .contains("ghost")
        );
        assert!(resolve_user("app:nogroup", &l).is_err());
    }
}
