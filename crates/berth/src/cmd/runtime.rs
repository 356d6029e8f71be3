//! `berth runtime …`, also installed as `berth-runtime …`: the
//! runc-compatible OCI runtime command line, for engines that drive a runtime
//! binary (podman through conmon, containerd shims). It has its own flags —
//! its `--root` is the runtime's state directory, not berth's store — so
//! `main` hands it the raw arguments before berth's own parser runs.
//!
//! Flags and output follow runc: global `--root`, `--log`, `--log-format`,
//! `--debug`, `--systemd-cgroup` (refused: berth has the cgroupfs driver
//! only); `state` prints the OCI state as JSON, `list` a table or JSON,
//! `ps --format json` a JSON array of PIDs. Errors go to stderr and, with
//! `--log`, to the log file (conmon reads it back to report why a create
//! failed).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_runtime::linux::{
    self,
    oci::{self, CreateOptions, ExecOptions, OciError, ProcessOverrides, Runtime},
};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The name the runtime answers to (and installs under).
pub const NAME: &str = "berth-runtime";

/// `berth runtime …` reached through berth's own parser (when berth's global
/// flags came first): the rest of the line goes to the runtime's parser.
#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct Passthrough {
    /// Arguments for the runtime (see `berth runtime --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

impl Passthrough {
    /// Runs the runtime with these arguments.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let mut argv = vec![OsString::from(NAME)];
        argv.extend(self.args);
        Ok(main(argv))
    }
}

/// The runtime's arguments when this process should be the runtime: invoked
/// as `berth-runtime`, or as `berth runtime …`. `None` otherwise.
pub fn argv() -> Option<Vec<OsString>> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name().map(|n| n.to_os_string()));
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new(NAME)) {
        return Some(args);
    }
    if args.get(1).is_some_and(|a| a == "runtime") {
        args.remove(0);
        args[0] = OsString::from(NAME);
        return Some(args);
    }
    None
}

/// runc-compatible OCI runtime (berth's `linux` runtime behind runc's command line).
#[derive(Parser)]
#[command(name = "berth-runtime", disable_help_subcommand = true)]
#[command(disable_version_flag = true)]
struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, value_name = "DIR", default_value = oci::DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write errors and warnings to this file.
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Format of the --log file.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log debug messages too.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd's cgroup driver (not supported: refused for create/run).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true, hide = true, value_name = "VALUE")]
    rootless: Option<String>,
    /// Accepted for runc compatibility; ignored.
    #[arg(long, global = true, hide = true, value_name = "PATH")]
    criu: Option<PathBuf>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container from a bundle; it waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start(IdArg),
    /// Create and start a container (in the foreground unless --detach).
    Run(RunArgs),
    /// Print a container's state as JSON.
    State(IdArg),
    /// Send a signal (default SIGTERM) to a container's init or all its processes.
    Kill(KillArgs),
    /// Delete a container (--force kills a running one).
    Delete(DeleteArgs),
    /// List containers.
    List(ListArgs),
    /// List a container's processes.
    Ps(PsArgs),
    /// Freeze all processes of a container.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// Run a process in a container.
    Exec(Box<ExecArgs>),
    /// Print the runtime's features as JSON (runtime-spec features.md).
    Features,
}

#[derive(Args)]
struct IdArg {
    /// Container ID.
    id: String,
}

#[derive(Args)]
struct CreateArgs {
    /// The bundle directory (with config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket to send the pseudo-terminal's master to (process.terminal).
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Write the init's PID here.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility (berth always uses pivot_root).
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc compatibility (no session keyring is created).
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N extra descriptors (3…) to the container (only 0 is supported).
    #[arg(long, default_value_t = 0, value_name = "N")]
    preserve_fds: u32,
    /// Container ID.
    id: String,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    create: CreateArgs,
    /// Start it and return (do not wait for it).
    #[arg(short, long)]
    detach: bool,
    /// Keep the container's state after it exits (foreground only).
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct KillArgs {
    /// Signal every process of the container, not only its init.
    #[arg(short, long)]
    all: bool,
    /// Container ID.
    id: String,
    /// Signal name or number.
    #[arg(default_value = "SIGTERM")]
    signal: String,
}

#[derive(Args)]
struct DeleteArgs {
    /// Kill the container first if it is running or paused.
    #[arg(short, long)]
    force: bool,
    /// Container ID.
    id: String,
}

#[derive(Args)]
struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    format: String,
    /// IDs only.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct PsArgs {
    /// table (ps output) or json (PIDs).
    #[arg(short, long, default_value = "table")]
    format: String,
    /// Container ID.
    id: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

#[derive(Args)]
struct ExecArgs {
    /// Unix socket to send the pseudo-terminal's master to.
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE).
    #[arg(short, long)]
    env: Vec<String>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
    /// Additional group IDs.
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// A runtime-spec process JSON file (replaces the command and flags).
    #[arg(short, long, value_name = "FILE")]
    process: Option<PathBuf>,
    /// Start the process and return.
    #[arg(short, long)]
    detach: bool,
    /// Write the process's PID here.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility; ignored (no SELinux support).
    #[arg(long)]
    process_label: Option<String>,
    /// Accepted for runc compatibility; ignored (no AppArmor support).
    #[arg(long)]
    apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long)]
    no_new_privs: bool,
    /// Add a capability.
    #[arg(short, long)]
    cap: Vec<String>,
    /// Pass N extra descriptors (only 0 is supported).
    #[arg(long, default_value_t = 0, value_name = "N")]
    preserve_fds: u32,
    /// Accepted for runc compatibility; the process joins the container's cgroup.
    #[arg(long)]
    cgroup: Option<String>,
    /// Allow exec in a paused container.
    #[arg(long)]
    ignore_paused: bool,
    /// Container ID.
    id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Errors and warnings: stderr, and the --log file in text or JSON lines.
struct Logger {
    file: Option<File>,
    json: bool,
    debug: bool,
}

impl Logger {
    fn open(cli: &Cli) -> Logger {
        let file = cli.log.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Logger {
            file,
            json: matches!(cli.log_format, LogFormat::Json),
            debug: cli.debug,
        }
    }

    fn write(&mut self, level: &str, msg: &str) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let time = now();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("time={time:?} level={level} msg={msg:?}")
        };
        let _ = writeln!(f, "{line}");
    }

    fn error(&mut self, msg: &str) {
        self.write("error", msg);
        eprintln!("Error: {msg}");
    }

    /// Warnings go to the log file when there is one: a container created
    /// by conmon shares our stderr, so they would land in its output.
    /// Seccomp notes (syscall names of other architectures that a
    /// multi-architecture profile lists) are routine: debug level.
    fn warn(&mut self, msg: &str) {
        if msg.starts_with("seccomp: ") {
            self.debug(msg);
        } else if self.file.is_some() {
            self.write("warning", msg);
        } else {
            eprintln!("{NAME}: WARNING: {msg}");
        }
    }

    fn debug(&mut self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    berth_engine::image::rfc3339(d.as_secs())
}

/// Runs the runtime with `args` (`args[0]` is the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    oci::default_sigpipe();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let mut log = Logger::open(&cli);
    log.debug(&format!("{args:?}"));
    if cli.version {
        println!("{NAME} version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {}", oci::OCI_VERSION);
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::from(125);
    };
    let rt = Runtime::new(&cli.root);
    match dispatch(&rt, command, cli.systemd_cgroup, &mut log) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            log.error(&e.to_string());
            ExitCode::from(e.exit_code().clamp(1, 255) as u8)
        }
    }
}

fn dispatch(
    rt: &Runtime,
    command: Command,
    systemd_cgroup: bool,
    log: &mut Logger,
) -> Result<i32, OciError> {
    let refuse_systemd = || {
        if systemd_cgroup {
            Err(OciError::Unsupported(
                "--systemd-cgroup: berth-runtime has no systemd cgroup driver; \
                 use the cgroupfs manager (podman --cgroup-manager cgroupfs)"
                    .into(),
            ))
        } else {
            Ok(())
        }
    };
    match command {
        Command::Create(a) => {
            refuse_systemd()?;
            let socket = connect(a.console_socket.as_deref())?;
            create(rt, &a, socket, log)?;
            Ok(0)
        }
        Command::Run(a) => {
            refuse_systemd()?;
            run(rt, a, log)
        }
        Command::Start(a) => {
            rt.start(&a.id, &mut |w| log.warn(&w))?;
            Ok(0)
        }
        Command::State(a) => {
            let s = rt.state(&a.id)?;
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            Ok(0)
        }
        Command::Kill(a) => {
            let sig = berth_engine::run::signal_number(&a.signal)
                .ok_or_else(|| OciError::Unsupported(format!("unknown signal {:?}", a.signal)))?;
            rt.kill(&a.id, sig, a.all)?;
            Ok(0)
        }
        Command::Delete(a) => {
            rt.delete(&a.id, a.force, &mut |w| log.warn(&w))?;
            Ok(0)
        }
        Command::List(a) => list(rt, &a),
        Command::Ps(a) => ps(rt, &a),
        Command::Pause(a) => {
            rt.pause(&a.id)?;
            Ok(0)
        }
        Command::Resume(a) => {
            rt.resume(&a.id)?;
            Ok(0)
        }
        Command::Exec(a) => exec(rt, *a, log),
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&oci::features()).unwrap_or_default()
            );
            Ok(0)
        }
    }
}

fn connect(path: Option<&Path>) -> Result<Option<OwnedFd>, OciError> {
    path.map(|p| {
        UnixStream::connect(p)
            .map(OwnedFd::from)
            .map_err(|source| OciError::Io {
                path: p.into(),
                source,
            })
    })
    .transpose()
}

fn create(
    rt: &Runtime,
    a: &CreateArgs,
    console_socket: Option<OwnedFd>,
    log: &mut Logger,
) -> Result<i32, OciError> {
    if a.preserve_fds > 0 {
        return Err(OciError::Unsupported(
            "--preserve-fds is not supported by berth-runtime".into(),
        ));
    }
    rt.create(
        &a.id,
        CreateOptions {
            bundle: a.bundle.clone(),
            pid_file: a.pid_file.clone(),
            console_socket,
        },
        &mut |w| log.warn(&w),
    )
}

/// Whether the bundle's process wants a terminal.
fn wants_terminal(bundle: &Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| v["process"]["terminal"].as_bool())
        .unwrap_or(false)
}

fn run(rt: &Runtime, a: RunArgs, log: &mut Logger) -> Result<i32, OciError> {
    let id = a.create.id.clone();
    // In the foreground without --console-socket, a terminal is ours to relay.
    let relay = !a.detach && a.create.console_socket.is_none() && wants_terminal(&a.create.bundle);
    let (socket, ours) = if relay {
        let (ours, theirs) = UnixStream::pair().map_err(|source| OciError::Io {
            path: "socketpair".into(),
            source,
        })?;
        (Some(OwnedFd::from(theirs)), Some(ours))
    } else {
        (connect(a.create.console_socket.as_deref())?, None)
    };
    let pid = create(rt, &a.create, socket, log)?;
    let master = match &ours {
        Some(s) => match oci::recv_fd(s) {
            Ok((m, _)) => Some(m),
            Err(source) => {
                let _ = rt.delete(&id, true, &mut |_| {});
                return Err(OciError::Io {
                    path: "console".into(),
                    source,
                });
            }
        },
        None => None,
    };
    if let Err(e) = rt.start(&id, &mut |w| log.warn(&w)) {
        let _ = rt.delete(&id, true, &mut |_| {});
        return Err(e);
    }
    if a.detach {
        return Ok(0);
    }
    linux::forward_signals(pid);
    let code = match master {
        Some(m) => relay_tty(m, pid),
        None => linux::wait(pid),
    }
    .map_err(|source| OciError::Io {
        path: format!("/proc/{pid}").into(),
        source,
    })?;
    if !a.keep {
        rt.delete(&id, true, &mut |w| log.warn(&w))?;
    }
    Ok(code)
}

fn exec(rt: &Runtime, a: ExecArgs, log: &mut Logger) -> Result<i32, OciError> {
    if a.preserve_fds > 0 {
        return Err(OciError::Unsupported(
            "--preserve-fds is not supported by berth-runtime".into(),
        ));
    }
    let process = match &a.process {
        Some(p) => Runtime::read_process(p)?,
        None => rt.exec_process(
            &a.id,
            ProcessOverrides {
                args: a.command.clone(),
                env: a.env.clone(),
                cwd: a.cwd.clone(),
                user: a.user.clone(),
                additional_gids: a.additional_gids.clone(),
                tty: a.tty,
                no_new_privs: a.no_new_privs,
                caps: a.cap.clone(),
            },
        )?,
    };
    let terminal = process.terminal().unwrap_or(false);
    let relay = terminal && !a.detach && a.console_socket.is_none();
    let (socket, ours) = if relay {
        let (ours, theirs) = UnixStream::pair().map_err(|source| OciError::Io {
            path: "socketpair".into(),
            source,
        })?;
        (Some(OwnedFd::from(theirs)), Some(ours))
    } else {
        (connect(a.console_socket.as_deref())?, None)
    };
    let pid = rt.exec(
        &a.id,
        ExecOptions {
            process,
            pid_file: a.pid_file.clone(),
            console_socket: socket,
            ignore_paused: a.ignore_paused,
        },
        &mut |w| log.warn(&w),
    )?;
    if a.detach {
        return Ok(0);
    }
    linux::forward_signals(pid);
    let code = match ours {
        Some(s) => {
            let (m, _) = oci::recv_fd(&s).map_err(|source| OciError::Io {
                path: "console".into(),
                source,
            })?;
            relay_tty(m, pid)
        }
        None => linux::wait(pid),
    };
    code.map_err(|source| OciError::Io {
        path: format!("/proc/{pid}").into(),
        source,
    })
}

/// Relays our stdin to the terminal's master and its output to our stdout
/// (our terminal in raw mode meanwhile) until it closes; then reaps `pid`.
fn relay_tty(master: OwnedFd, pid: i32) -> io::Result<i32> {
    use rustix::event::{PollFd, PollFlags, poll};
    use rustix::termios::{OptionalActions, isatty, tcgetattr, tcgetwinsize, tcsetattr};
    if let Ok(ws) = tcgetwinsize(io::stdin()).or_else(|_| tcgetwinsize(io::stdout())) {
        let _ = rustix::termios::tcsetwinsize(&master, ws);
    }
    let saved = isatty(io::stdin())
        .then(|| tcgetattr(io::stdin()).ok())
        .flatten();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        raw.make_raw();
        let _ = tcsetattr(io::stdin(), OptionalActions::Now, &raw);
    }
    let mut m = File::from(master);
    let mut buf = vec![0u8; 32 << 10];
    let mut stdin_open = true;
    loop {
        let stdin = io::stdin();
        let mut fds = vec![PollFd::new(&m, PollFlags::IN)];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let (m_ready, in_ready) = (
            !fds[0].revents().is_empty(),
            fds.get(1).is_some_and(|f| !f.revents().is_empty()),
        );
        drop(fds);
        if m_ready {
            // EIO once every slave descriptor is closed: the process is gone.
            match m.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut out = io::stdout();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }
        if in_ready {
            match io::stdin().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = m.write_all(&buf[..n]);
                }
            }
        }
    }
    if let Some(t) = &saved {
        let _ = tcsetattr(io::stdin(), OptionalActions::Now, t);
    }
    linux::wait(pid)
}

fn list(rt: &Runtime, a: &ListArgs) -> Result<i32, OciError> {
    let all = rt.list()?;
    if a.quiet {
        for s in &all {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    if a.format == "json" {
        println!("{}", serde_json::to_string(&all).unwrap_or_default());
        return Ok(0);
    }
    if a.format != "table" {
        return Err(OciError::Unsupported(format!(
            "invalid --format {:?} (table or json)",
            a.format
        )));
    }
    let mut rows = vec![[
        "ID".to_string(),
        "PID".into(),
        "STATUS".into(),
        "BUNDLE".into(),
        "CREATED".into(),
        "OWNER".into(),
    ]];
    for s in &all {
        rows.push([
            s.id.clone(),
            s.pid.to_string(),
            s.status.to_string(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// runc's tabwriter layout: columns at least 12 wide, 3 spaces of padding.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count() + 3).max(12);
        }
    }
    let mut out = io::stdout().lock();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn ps(rt: &Runtime, a: &PsArgs) -> Result<i32, OciError> {
    let pids = rt.pids(&a.id)?;
    if a.format == "json" {
        println!("{}", serde_json::to_string(&pids).unwrap_or_default());
        return Ok(0);
    }
    if a.format != "table" {
        return Err(OciError::Unsupported(format!(
            "invalid --format {:?} (table or json)",
            a.format
        )));
    }
    let args: Vec<String> = if a.ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        a.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|source| OciError::Io {
            path: "ps".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(OciError::Unsupported(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| OciError::Unsupported("ps output has no PID column".into()))?;
    println!("{header}");
    for l in lines {
        if let Some(p) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
            && pids.contains(&p)
        {
            println!("{l}");
        }
    }
    Ok(0)
}
