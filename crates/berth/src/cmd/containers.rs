//! Container lifecycle commands: create, start, stop, kill, rm, ps, logs,
//! wait, inspect, and the hidden monitor entry point.

use std::io::{BufRead, BufReader, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::Engine;
use berth_engine::containers::{Container, Status};
use berth_engine::run::signal_number;
use clap::Args;
use serde_json::{Value, json};

use crate::output::{self, Format};

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct CreateCmd {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    pub create: super::run::CreateArgs,
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the exit.
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin too (the container must have been created with -i); implies -a.
    #[arg(short, long)]
    interactive: bool,
    /// Containers to start.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    /// Containers to stop.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Containers to signal.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short, long)]
    force: bool,
    /// Remove the container's anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    /// Containers to remove.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate.
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table, json, or a Go-style template.
    #[arg(long)]
    format: Option<String>,
    /// Filter: status=, name=, id=, label=KEY[=VALUE], ancestor=IMAGE, exited=CODE.
    #[arg(short, long)]
    filter: Vec<String>,
}

/// Docker's `ps --filter` for the keys berth supports.
fn matches_filters(e: &Engine, c: &Container, filters: &[String]) -> anyhow::Result<bool> {
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad format of filter (expected name=value): {f}"))?;
        let ok = match k {
            "status" => state_name(c) == v,
            "name" => c.name.contains(v.trim_start_matches('/')),
            "id" => c.id.starts_with(v),
            "exited" => {
                c.state.status == Some(Status::Exited) && c.state.exit_code.to_string() == v
            }
            "ancestor" => {
                c.image == v
                    || e.images()
                        .resolve(v)
                        .is_ok_and(|img| img.id.as_str() == c.image_id)
            }
            "label" => {
                let (lk, lv) = v.split_once('=').map_or((v, None), |(a, b)| (a, Some(b)));
                c.options.labels.iter().any(|l| {
                    let (k2, v2) = l.split_once('=').unwrap_or((l, ""));
                    k2 == lk && lv.is_none_or(|lv| lv == v2)
                })
            }
            other => anyhow::bail!("invalid filter '{other}'"),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow the log.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines from the end ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Only entries at or after this RFC 3339 time or Unix timestamp.
    #[arg(long)]
    since: Option<String>,
    /// Container.
    name: String,
}

#[derive(Args)]
pub struct WaitArgs {
    /// Containers to wait for.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct MonitorArgs {
    /// Container ID.
    id: String,
    /// Set by berth-shim when it execs back: how the container's run ended.
    #[arg(long, requires = "ran_ms")]
    exit_status: Option<i32>,
    /// How long that run lasted.
    #[arg(long)]
    ran_ms: Option<u64>,
    /// The restart backoff in force.
    #[arg(long, default_value_t = 100)]
    backoff_ms: u64,
    /// The attach socket's descriptor, inherited (-1: none).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    listen_fd: i32,
}

fn engine(root: &Path) -> anyhow::Result<Engine> {
    Ok(Engine::open(root)?)
}

fn each(names: &[String], mut f: impl FnMut(&str) -> anyhow::Result<()>) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("Error: {e}");
            code = ExitCode::from(1);
        }
    }
    code
}

pub fn create(root: &Path, a: CreateCmd) -> anyhow::Result<ExitCode> {
    super::run::create(root, a.create)
}

pub fn start(root: &Path, a: StartArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    if a.attach || a.interactive {
        if a.names.len() > 1 {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        }
        let c = e.containers().resolve(&a.names[0])?;
        let (_, path) = e.log_path(&c.id)?;
        let from = std::fs::metadata(&path).map_or(0, |m| m.len());
        let c = e.start(&c.id)?;
        if a.interactive && c.options.open_stdin {
            // Our stdin goes to the container until it ends; the output comes back
            // through the log, as for -a. A container that already exited has no
            // socket left: nothing to send then.
            if let Ok(mut sock) = e.attach_stdin(&c.id) {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sock);
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                });
            }
        }
        follow(&e, &c.id, &path, None, false, None, Some(from))?;
        return Ok(ExitCode::from(e.wait(&c.id)? as u8));
    }
    Ok(each(&a.names, |n| {
        e.start(n)?;
        println!("{n}");
        Ok(())
    }))
}

pub fn stop(root: &Path, a: StopArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    Ok(each(&a.names, |n| {
        e.stop(n, Duration::from_secs(a.time))?;
        println!("{n}");
        Ok(())
    }))
}

pub fn restart(root: &Path, a: StopArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    Ok(each(&a.names, |n| {
        e.stop(n, Duration::from_secs(a.time))?;
        e.containers()
            .update(&e.containers().resolve(n)?.id, |c| c.state.stopping = false)?;
        e.start(n)?;
        println!("{n}");
        Ok(())
    }))
}

pub fn kill(root: &Path, a: KillArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let Some(sig) = signal_number(&a.signal) else {
        anyhow::bail!("invalid signal: {}", a.signal);
    };
    Ok(each(&a.names, |n| {
        e.kill(n, sig)?;
        println!("{n}");
        Ok(())
    }))
}

pub fn rm(root: &Path, a: RmArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    Ok(each(&a.names, |n| {
        e.remove_with_volumes(n, a.force, a.volumes)?;
        println!("{n}");
        Ok(())
    }))
}

pub fn wait(root: &Path, a: WaitArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    Ok(each(&a.names, |n| {
        println!("{}", e.wait(n)?);
        Ok(())
    }))
}

fn status_text(c: &Container) -> String {
    let since = |t: &str| output::ago(Some(t)).trim_end_matches(" ago").to_string();
    match c.state.status {
        Some(Status::Running) => format!("Up {}", since(&c.state.started_at)),
        Some(Status::Paused) => format!("Up {} (Paused)", since(&c.state.started_at)),
        Some(Status::Restarting) => format!("Restarting ({})", c.state.exit_code),
        Some(Status::Exited) if !c.state.finished_at.is_empty() => {
            format!(
                "Exited ({}) {}",
                c.state.exit_code,
                output::ago(Some(&c.state.finished_at))
            )
        }
        Some(Status::Dead) => "Dead".into(),
        _ => "Created".into(),
    }
}

fn state_name(c: &Container) -> String {
    serde_json::to_value(c.state.status.unwrap_or(Status::Created))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn ps(root: &Path, a: PsArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let mut rows = Vec::new();
    for c in e.containers().list()? {
        let running = matches!(
            c.state.status,
            Some(Status::Running | Status::Paused | Status::Restarting)
        );
        let status_filter = a
            .filter
            .iter()
            .any(|f| f.starts_with("status=") || f.starts_with("exited="));
        if !a.all && !running && !status_filter {
            continue;
        }
        if !matches_filters(&e, &c, &a.filter)? {
            continue;
        }
        let id = if a.no_trunc {
            c.id.clone()
        } else {
            c.short_id().to_string()
        };
        if a.quiet {
            println!("{id}");
            continue;
        }
        let mut cmd = c.args.join(" ");
        if !a.no_trunc && cmd.len() > 20 {
            cmd = format!("{}…", &cmd[..19]);
        }
        rows.push(output::row(&[
            ("ID", id),
            ("Image", c.image.clone()),
            ("Command", format!("\"{cmd}\"")),
            ("CreatedAt", c.created.clone()),
            ("RunningFor", output::ago(Some(&c.created))),
            ("Status", status_text(&c)),
            ("State", state_name(&c)),
            ("Ports", String::new()),
            ("Names", c.name.clone()),
            ("Isolation", c.options.isolation.as_str().to_string()),
        ]));
    }
    if a.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    output::print_rows(
        &Format::parse(a.format.as_deref()),
        &[
            ("CONTAINER ID", "ID"),
            ("IMAGE", "Image"),
            ("COMMAND", "Command"),
            ("CREATED", "RunningFor"),
            ("STATUS", "Status"),
            ("PORTS", "Ports"),
            ("NAMES", "Names"),
            ("ISOLATION", "Isolation"),
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// Docker-shaped `inspect` of a container.
pub fn container_json(e: &Engine, c: &Container) -> Value {
    let dir = e.containers().dir(&c.id);
    let spec: Value = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let st = &c.state;
    let mut labels = e
        .images()
        .resolve(&c.image_id)
        .and_then(|img| e.images().config_json(&img))
        .ok()
        .and_then(|cfg| cfg.pointer("/config/Labels").cloned())
        .and_then(|l| l.as_object().cloned())
        .unwrap_or_default();
    for l in &c.options.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), json!(v));
    }
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.args.first().cloned().unwrap_or_default(),
        "Args": c.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state_name(c),
            "Running": st.status == Some(Status::Running),
            "Paused": st.status == Some(Status::Paused),
            "Restarting": st.status == Some(Status::Restarting),
            "OOMKilled": st.oom_killed,
            "Dead": st.status == Some(Status::Dead),
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": if st.started_at.is_empty() { "0001-01-01T00:00:00Z" } else { &st.started_at },
            "FinishedAt": if st.finished_at.is_empty() { "0001-01-01T00:00:00Z" } else { &st.finished_at },
        },
        "Image": c.image_id,
        "Name": format!("/{}", c.name),
        "RestartCount": st.restart_count,
        "LogPath": dir.join("container.log"),
        "NetworkSettings": super::network::settings(e, c),
        "HostConfig": {
            "AutoRemove": c.auto_remove,
            "RestartPolicy": {
                "Name": c.restart.split(':').next().unwrap_or("no"),
                "MaximumRetryCount": c.restart.split_once(':').and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(0),
            },
            "Privileged": c.options.privileged,
            "ReadonlyRootfs": c.options.read_only,
            "CapAdd": c.options.cap_add,
            "CapDrop": c.options.cap_drop,
            "SecurityOpt": c.options.security_opt,
            "CgroupParent": c.options.cgroup_parent.clone().unwrap_or_default(),
            "Memory": spec.pointer("/linux/resources/memory/limit").cloned().unwrap_or(json!(0)),
            "MemorySwap": spec.pointer("/linux/resources/memory/swap").cloned().unwrap_or(json!(0)),
            "CpuShares": spec.pointer("/linux/resources/cpu/shares").cloned().unwrap_or(json!(0)),
            "CpuQuota": spec.pointer("/linux/resources/cpu/quota").cloned().unwrap_or(json!(0)),
            "CpuPeriod": spec.pointer("/linux/resources/cpu/period").cloned().unwrap_or(json!(0)),
            "PidsLimit": spec.pointer("/linux/resources/pids/limit").cloned().unwrap_or(Value::Null),
            "Isolation": c.options.isolation.as_str(),
        },
        "VM": st.vm.as_ref().map(|v| json!({
            "Hypervisor": v.hypervisor,
            "Kernel": v.kernel,
            "VCPUs": v.vcpus,
            "MemoryMiB": v.memory_mib,
        })),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
                "MergedDir": dir.join("rootfs"),
            },
        },
        "Config": {
            "Hostname": spec.get("hostname").cloned().unwrap_or(Value::Null),
            "User": c.options.user.clone().unwrap_or_default(),
            "Env": spec.pointer("/process/env").cloned().unwrap_or(json!([])),
            "Cmd": c.args,
            "Image": c.image,
            "WorkingDir": spec.pointer("/process/cwd").cloned().unwrap_or(json!("/")),
            "StopSignal": c.options.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            "Labels": labels,
            "Tty": c.options.tty,
            "OpenStdin": c.options.open_stdin,
            "StdinOnce": c.options.stdin_once,
        },
    })
}

/// `inspect`: containers first, then images (as Docker).
pub fn inspect(root: &Path, names: &[String], format: Option<&str>) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let mut out = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for n in names {
        match e.containers().resolve(n) {
            Ok(c) => out.push(container_json(&e, &c)),
            Err(_) => match e.images().inspect(n) {
                Ok(v) => out.push(v),
                Err(_) => {
                    eprintln!("Error: No such object: {n}");
                    code = ExitCode::from(1);
                }
            },
        }
    }
    match format {
        Some(t) => {
            for v in &out {
                println!("{}", output::template(t, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(out))?),
    }
    Ok(code)
}

/// Prints log entries; with `follow`, keeps going until the container stops.
fn follow(
    e: &Engine,
    id: &str,
    path: &Path,
    tail: Option<usize>,
    timestamps: bool,
    since: Option<i64>,
    from: Option<u64>,
) -> anyhow::Result<()> {
    let print = |line: &str| {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let time = v["time"].as_str().unwrap_or("");
        if let Some(s) = since
            && output::parse_time(time).is_some_and(|t| t < s)
        {
            return;
        }
        let msg = v["log"].as_str().unwrap_or("");
        let text = if timestamps {
            format!("{time} {msg}")
        } else {
            msg.to_string()
        };
        if v["stream"] == "stderr" {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    };
    let mut f = loop {
        match std::fs::File::open(path) {
            Ok(f) => break f,
            Err(_) if e.containers().read(id).is_ok() => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => return Err(err.into()),
        }
    };
    // `from`: only what was logged after that offset (attaching, as Docker's attach
    // shows no history); a log rotated since is read from its start.
    if let Some(off) = from {
        let off = if f.metadata()?.len() >= off { off } else { 0 };
        f.seek(std::io::SeekFrom::Start(off))?;
    } else {
        let lines: Vec<String> = BufReader::new(&f).lines().map_while(Result::ok).collect();
        let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
        for l in &lines[skip..] {
            print(l);
        }
    }
    let Some(follow_id) = Some(id) else {
        return Ok(());
    };
    let mut pos = f.stream_position()?;
    let mut partial = String::new();
    loop {
        let running = e.containers().read(follow_id).is_ok_and(|c| {
            matches!(
                c.state.status,
                Some(Status::Running | Status::Restarting | Status::Created)
            )
        });
        f.seek(std::io::SeekFrom::Start(pos))?;
        let mut r = BufReader::new(&f);
        let mut buf = String::new();
        while r.read_line(&mut buf)? > 0 {
            if buf.ends_with('\n') {
                partial.push_str(&buf);
                print(partial.trim_end_matches('\n'));
                partial.clear();
            } else {
                partial.push_str(&buf);
            }
            buf.clear();
        }
        pos = r.stream_position()?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn logs(root: &Path, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let (c, path) = e.log_path(&a.name)?;
    let tail = if a.tail == "all" {
        None
    } else {
        Some(
            a.tail
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("invalid --tail value: {}", a.tail))?,
        )
    };
    let since = match &a.since {
        None => None,
        Some(s) => Some(
            output::parse_time(s)
                .or_else(|| s.parse::<i64>().ok())
                .ok_or_else(|| anyhow::anyhow!("invalid --since value: {s}"))?,
        ),
    };
    if a.follow {
        follow(&e, &c.id, &path, tail, a.timestamps, since, None)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !path.exists() {
        return Ok(ExitCode::SUCCESS);
    }
    let f = std::fs::File::open(&path)?;
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    for l in &lines[skip..] {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        let time = v["time"].as_str().unwrap_or("");
        if since.is_some_and(|s| output::parse_time(time).is_some_and(|t| t < s)) {
            continue;
        }
        let msg = v["log"].as_str().unwrap_or("");
        let text = if a.timestamps {
            format!("{time} {msg}")
        } else {
            msg.to_string()
        };
        if v["stream"] == "stderr" {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth __monitor ID`: the detached monitor; fd 3 reports the start.
pub fn monitor(root: &Path, a: MonitorArgs) -> anyhow::Result<ExitCode> {
    if let (Some(status), Some(ran)) = (a.exit_status, a.ran_ms) {
        use berth_engine::containers::monitor::{InheritedListener, Resume};
        let e = engine(root)?;
        let code = e.monitor_resume(
            &a.id,
            Resume {
                status,
                ran: Duration::from_millis(ran),
                backoff: Duration::from_millis(a.backoff_ms),
                listener: InheritedListener::new(a.listen_fd),
            },
        )?;
        return Ok(ExitCode::from(code as u8));
    }
    // SAFETY: `start` passes the start pipe's write end as fd 3 and nothing
    // else in this process owns it.
    let ready = unsafe { OwnedFd::from_raw_fd(3) };
    // Not inherited by anything the monitor starts.
    rustix::io::fcntl_setfd(&ready, rustix::io::FdFlags::CLOEXEC)?;
    let e = engine(root)?;
    let code = e.monitor(&a.id, ready)?;
    Ok(ExitCode::from(code as u8))
}

#[derive(Args)]
pub struct NamesArgs {
    /// Containers.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    no_stream: bool,
    /// Output format: table, json, or a Go-style template.
    #[arg(long)]
    format: Option<String>,
    /// Containers (default: all running).
    names: Vec<String>,
}

#[derive(Args)]
pub struct TopArgs {
    /// Container.
    name: String,
}

#[derive(Args)]
pub struct RenameArgs {
    /// Container.
    name: String,
    /// New name.
    new_name: String,
}

#[derive(clap::Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    #[command(alias = "list")]
    Ls(PsArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub fn pause(root: &Path, a: NamesArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    Ok(each(&a.names, |n| {
        e.pause(n)?;
        println!("{n}");
        Ok(())
    }))
}

pub fn unpause(root: &Path, a: NamesArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    Ok(each(&a.names, |n| {
        e.unpause(n)?;
        println!("{n}");
        Ok(())
    }))
}

pub fn rename(root: &Path, a: RenameArgs) -> anyhow::Result<ExitCode> {
    engine(root)?.rename(&a.name, &a.new_name)?;
    Ok(ExitCode::SUCCESS)
}

pub fn container(root: &Path, c: ContainerCommand) -> anyhow::Result<ExitCode> {
    match c {
        ContainerCommand::Ls(a) => ps(root, a),
        ContainerCommand::Prune(a) => {
            let e = engine(root)?;
            if !a.force {
                eprint!(
                    "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
                );
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let removed = e.prune_containers()?;
            if !removed.is_empty() {
                println!("Deleted Containers:");
                for id in &removed {
                    println!("{id}");
                }
                println!();
            }
            println!("Total reclaimed space: 0B");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn stats_row(c: &Container, st: &berth_engine::cgroups::Stats) -> Value {
    let mem = st.memory.as_ref();
    let usage = mem.map(|m| m.usage.saturating_sub(m.cache)).unwrap_or(0);
    let limit = mem.and_then(|m| m.limit).unwrap_or(0);
    let pct = if limit > 0 && limit < u64::MAX / 2 {
        usage as f64 * 100.0 / limit as f64
    } else {
        0.0
    };
    let limit_txt = if limit > 0 && limit < u64::MAX / 2 {
        output::size(limit)
    } else {
        "unlimited".into()
    };
    output::row(&[
        ("ID", c.short_id().to_string()),
        ("Name", c.name.clone()),
        (
            "CPUTime",
            format!(
                "{:.2}s",
                st.cpu.as_ref().map(|c| c.usage_ns).unwrap_or(0) as f64 / 1e9
            ),
        ),
        ("MemUsage", format!("{} / {limit_txt}", output::size(usage))),
        ("MemPerc", format!("{pct:.2}%")),
        (
            "PIDs",
            st.pids.as_ref().map(|p| p.current).unwrap_or(0).to_string(),
        ),
    ])
}

pub fn stats(root: &Path, a: StatsArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    loop {
        let names: Vec<String> = if a.names.is_empty() {
            e.containers()
                .list()?
                .into_iter()
                .filter(|c| matches!(c.state.status, Some(Status::Running | Status::Paused)))
                .map(|c| c.id)
                .collect()
        } else {
            a.names.clone()
        };
        let mut rows = Vec::new();
        for n in &names {
            let (c, st) = e.stats(n)?;
            rows.push(stats_row(&c, &st));
        }
        output::print_rows(
            &Format::parse(a.format.as_deref()),
            &[
                ("CONTAINER ID", "ID"),
                ("NAME", "Name"),
                ("CPU TIME", "CPUTime"),
                ("MEM USAGE / LIMIT", "MemUsage"),
                ("MEM %", "MemPerc"),
                ("PIDS", "PIDs"),
            ],
            &rows,
        );
        if a.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub fn top(root: &Path, a: TopArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let mut rows = Vec::new();
    for pid in e.pids(&a.name)? {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
            .to_string();
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|u| u.split_whitespace().next().unwrap_or("?").to_string())
            })
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        rows.push(output::row(&[
            ("UID", uid),
            ("PID", pid.to_string()),
            ("PPID", ppid),
            ("CMD", cmd),
        ]));
    }
    output::print_rows(
        &Format::Table,
        &[
            ("UID", "UID"),
            ("PID", "PID"),
            ("PPID", "PPID"),
            ("CMD", "CMD"),
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: uid[:gid] or name[:group].
    #[arg(short, long)]
    user: Option<String>,
    /// Container.
    name: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(root: &Path, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let o = berth_engine::run::ExecOptions {
        cmd: a.command,
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        detach: a.detach,
        interactive: a.interactive,
        tty: a.tty,
    };
    match e.exec(&a.name, &o) {
        Ok(code) => Ok(ExitCode::from(code as u8)),
        Err(err) => {
            eprintln!("berth: {err}");
            Ok(ExitCode::from(err.exit_code() as u8))
        }
    }
}

#[derive(Args)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a host path.
    src: String,
    /// A host path or CONTAINER:DEST_PATH.
    dest: String,
}

fn split_container_path(s: &str) -> Option<(&str, &str)> {
    // A host path never has a ':' before its first '/' here (Docker's rule).
    let (c, p) = s.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

pub fn cp(root: &Path, a: CpArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    match (split_container_path(&a.src), split_container_path(&a.dest)) {
        (Some((c, p)), None) => e.copy_from(c, p, Path::new(&a.dest))?,
        (None, Some((c, p))) => e.copy_to(c, Path::new(&a.src), p)?,
        (Some(_), Some(_)) => anyhow::bail!("copying between containers is not supported"),
        (None, None) => anyhow::bail!("must specify at least one container source"),
    }
    Ok(ExitCode::SUCCESS)
}
