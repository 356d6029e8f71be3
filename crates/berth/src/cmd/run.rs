//! `run`: a container in the foreground, stdio attached, exit code passed on.

use std::path::Path;
use std::process::ExitCode;

use berth_engine::Engine;
use berth_engine::registry::PullPolicy;
use berth_engine::run::CreateOptions;
use berth_engine::spec::RunOptions;
use clap::Args;

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    create: CreateArgs,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Keep stdin open (attached in the foreground; for `start -i` otherwise).
    #[arg(short, long)]
    interactive: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Name of the container.
    #[arg(long)]
    name: Option<String>,
    /// Restart policy: no, always, unless-stopped, on-failure[:max-retries].
    #[arg(long)]
    restart: Option<String>,
    /// Signal to stop the container (default: the image's, else SIGTERM).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to pass berth's own value).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set metadata (KEY=VALUE).
    #[arg(short, long)]
    label: Vec<String>,
    /// Bind mount or volume: /host:/ctr[:ro], name:/ctr[:ro], or /ctr.
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly].
    #[arg(long)]
    mount: Vec<String>,
    /// tmpfs mount: /path[:options].
    #[arg(long)]
    tmpfs: Vec<String>,
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
    /// Network: bridge, none, host, container:NAME or a network's name (default: bridge).
    #[arg(long = "network", visible_alias = "net")]
    network: Option<String>,
    /// Publish a container's port(s) on the host: [IP:][HOSTPORT:]PORT[/tcp|udp], ranges too.
    #[arg(short = 'p', long)]
    publish: Vec<String>,
    /// Publish every EXPOSEd port on a random host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// IPv4 address on the network.
    #[arg(long)]
    ip: Option<String>,
    /// DNS servers for /etc/resolv.conf.
    #[arg(long)]
    dns: Vec<String>,
    /// DNS search domains for /etc/resolv.conf (`.` for none).
    #[arg(long)]
    dns_search: Vec<String>,
    /// DNS options for /etc/resolv.conf (e.g. ndots:2).
    #[arg(long, alias = "dns-opt")]
    dns_option: Vec<String>,
    /// Extra /etc/hosts entries (NAME:IP; IP `host-gateway` is the host's
    /// address on the default bridge).
    #[arg(long)]
    add_host: Vec<String>,
    /// Network-scoped aliases of the container.
    #[arg(long)]
    network_alias: Vec<String>,
    /// MAC address of the container's interface (e.g. 02:42:ac:11:00:02).
    #[arg(long)]
    mac_address: Option<String>,
    /// Isolation: container (shared kernel) or vm (its own kernel in a microVM);
    /// default from the `isolation` key of berth's config file, else container.
    #[arg(long)]
    isolation: Option<String>,
    /// Pull the image first: always, missing (when not stored) or never.
    #[arg(long, default_value = "missing", value_parser = ["always", "missing", "never"])]
    pull: String,
    /// Image to run, then the command and its arguments (replacing the image's
    /// CMD). One list, so that options stop at the image, as with Docker:
    /// `--entrypoint sh IMAGE -c 'echo hi'` passes `-c` to the command.
    #[arg(
        value_name = "IMAGE [COMMAND] [ARG...]",
        trailing_var_arg = true,
        required = true,
        num_args = 1..
    )]
    image_and_command: Vec<String>,
}

/// Docker's --env-file: KEY=VALUE or KEY lines; blank lines and # comments skipped.
fn read_env_files(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("open {}: {e}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let l = line.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.starts_with('=')
                || l.split('=')
                    .next()
                    .unwrap_or("")
                    .contains(char::is_whitespace)
            {
                anyhow::bail!(
                    "{}:{}: invalid environment variable: {line}",
                    f.display(),
                    n + 1
                );
            }
            out.push(l.to_string());
        }
    }
    Ok(out)
}

/// Applies `--pull` (progress on stderr); an error is Docker's exit 125.
fn pull_first(e: &Engine, image: &str, policy: &str) -> Result<(), String> {
    let policy: PullPolicy = policy.parse()?;
    let need = match policy {
        PullPolicy::Never => false,
        PullPolicy::Always => true,
        PullPolicy::Missing => {
            matches!(
                e.images().resolve(image),
                Err(berth_engine::image::ImageError::NotFound(_))
            ) && berth_engine::image::Reference::parse(image).is_ok()
        }
    };
    if !need {
        return Ok(());
    }
    if policy == PullPolicy::Missing {
        let shown = berth_engine::image::Reference::parse(image)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| image.to_string());
        eprintln!("Unable to find image '{shown}' locally");
    }
    super::registry::pull_with_progress(e, image, None, super::registry::Stream::Stderr, false)
        .map(|_| ())
        .map_err(|err| crate::chain(&err))
}

impl CreateArgs {
    fn split(mut self) -> anyhow::Result<(String, RunOptions, CreateOptions)> {
        let image = self.image_and_command.remove(0);
        let mut env = read_env_files(&self.env_file)?;
        env.extend(self.env);
        let opts = RunOptions {
            cmd: self.image_and_command,
            entrypoint: self.entrypoint,
            env,
            labels: self.label,
            tty: self.tty,
            init: self.init,
            open_stdin: self.interactive,
            stdin_once: self.interactive,
            volumes: self.volume,
            mounts: self.mount,
            tmpfs: self.tmpfs,
            workdir: self.workdir,
            user: self.user,
            hostname: self.hostname,
            read_only: self.read_only,
            cap_add: self.cap_add,
            cap_drop: self.cap_drop,
            privileged: self.privileged,
            security_opt: self.security_opt,
            memory: self.memory,
            memory_swap: self.memory_swap,
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
            pids_limit: self.pids_limit,
            ulimits: self.ulimit,
            cgroup_parent: self.cgroup_parent,
            stop_signal: self.stop_signal,
            network: self.network,
            publish: self.publish,
            publish_all: self.publish_all,
            ip: self.ip,
            dns: self.dns,
            dns_search: self.dns_search,
            dns_option: self.dns_option,
            add_host: self.add_host,
            network_alias: self.network_alias,
            mac_address: self.mac_address,
            isolation: match self.isolation.as_deref() {
                Some(i) => berth_engine::containers::vm::Isolation::parse(i)?,
                None => berth_engine::containers::vm::default_isolation()?,
            },
        };
        let c = CreateOptions {
            name: self.name,
            auto_remove: self.rm,
            restart: self.restart,
        };
        Ok((image, opts, c))
    }
}

fn fail(msg: String, code: i32) -> anyhow::Result<ExitCode> {
    eprintln!("berth: {msg}");
    Ok(ExitCode::from(code as u8))
}

pub fn run(root: &Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let e = match Engine::open(root) {
        Ok(e) => e,
        Err(err) => return fail(err.to_string(), 125),
    };
    let interactive = a.create.interactive;
    let pull = a.create.pull.clone();
    let (image, mut opts, c) = match a.create.split() {
        Ok(v) => v,
        Err(err) => return fail(err.to_string(), 125),
    };
    if let Err(err) = pull_first(&e, &image, &pull) {
        return fail(err, 125);
    }
    if a.detach {
        // `run -d -i`: stdin stays open for every `start -i`, never closed by one.
        opts.stdin_once = false;
        let rec = match e.create(&image, &opts, &c) {
            Ok(r) => r,
            Err(err) => return fail(err.to_string(), err.exit_code()),
        };
        return match e.start(&rec.id) {
            Ok(_) => {
                println!("{}", rec.id);
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => fail(err.to_string(), err.exit_code()),
        };
    }
    match e.run_foreground(&image, &opts, &c, interactive, &mut |w| {
        eprintln!("WARNING: {w}")
    }) {
        Ok(code) => Ok(ExitCode::from(code as u8)),
        Err(err) => fail(err.to_string(), err.exit_code()),
    }
}

pub fn create(root: &Path, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let e = match Engine::open(root) {
        Ok(e) => e,
        Err(err) => return fail(err.to_string(), 125),
    };
    let pull = a.pull.clone();
    let (image, opts, c) = match a.split() {
        Ok(v) => v,
        Err(err) => return fail(err.to_string(), 125),
    };
    if let Err(err) = pull_first(&e, &image, &pull) {
        return fail(err, 125);
    }
    match e.create(&image, &opts, &c) {
        Ok(rec) => {
            println!("{}", rec.id);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => fail(err.to_string(), err.exit_code()),
    }
}
