//! `run`: a container in the foreground, stdio attached, exit code passed on.

use std::path::Path;
use std::process::ExitCode;

use berth_engine::Engine;
use berth_engine::spec::RunOptions;
use clap::Args;

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container when it exits (foreground containers are always removed for now).
    #[arg(long)]
    rm: bool,
    /// Set environment variables (KEY=VALUE, or KEY to pass berth's own value).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: uid[:gid] or name[:group].
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Mount the container's root file system read-only.
    #[arg(long)]
    read_only: bool,
    /// Add Linux capabilities.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Give the container every capability and no masked paths.
    #[arg(long)]
    privileged: bool,
    /// Security options: seccomp=PROFILE.json|unconfined, no-new-privileges.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap.
    #[arg(long)]
    memory_swap: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    cpus: Option<String>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    cpu_shares: Option<u64>,
    /// Maximum number of processes (-1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Resource limits: name=soft[:hard], e.g. nofile=1024:2048.
    #[arg(long)]
    ulimit: Vec<String>,
    /// cgroup to create the container's cgroup under (relative to berth's own).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Image to run.
    image: String,
    /// Command and arguments (replace the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(root: &Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let fail = |msg: String, code: i32| {
        eprintln!("berth: {msg}");
        Ok(ExitCode::from(code as u8))
    };
    let e = match Engine::open(root) {
        Ok(e) => e,
        Err(err) => return fail(err.to_string(), 125),
    };
    let opts = RunOptions {
        cmd: a.command,
        entrypoint: a.entrypoint,
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        hostname: a.hostname,
        read_only: a.read_only,
        cap_add: a.cap_add,
        cap_drop: a.cap_drop,
        privileged: a.privileged,
        security_opt: a.security_opt,
        memory: a.memory,
        memory_swap: a.memory_swap,
        cpus: a.cpus,
        cpu_shares: a.cpu_shares,
        pids_limit: a.pids_limit,
        ulimits: a.ulimit,
        cgroup_parent: a.cgroup_parent,
    };
    let _ = a.rm;
    match e.run_foreground(&a.image, &opts, &mut |w| eprintln!("WARNING: {w}")) {
        Ok(code) => Ok(ExitCode::from(code as u8)),
        Err(err) => fail(err.to_string(), err.exit_code()),
    }
}
