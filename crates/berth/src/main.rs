//! `berth`: the command line. It parses flags, calls the engine, and prints
//! what comes back the way Docker's CLI does. Nothing here knows how images
//! are stored.

mod cmd;
mod output;
mod progress;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// berth runs OCI images as containers or microVMs.
#[derive(Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
#[command(disable_help_subcommand = true)]
pub struct Cli {
    /// Root of berth's state (images, containers, volumes).
    #[arg(long, global = true, env = "BERTH_ROOT", default_value = berth_engine::DEFAULT_ROOT)]
    root: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show berth's version.
    Version(cmd::system::VersionArgs),
    /// Show the store, the storage driver and what the host supports.
    Info(cmd::system::InfoArgs),
    /// List images.
    Images(cmd::images::ListArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(cmd::images::ImageCommand),
    /// Show low-level information on containers or images.
    Inspect(cmd::images::InspectArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(cmd::images::TagArgs),
    /// Show how an image was made.
    History(cmd::images::HistoryArgs),
    /// Remove one or more images.
    Rmi(cmd::images::RmiArgs),
    /// Load images from a tar archive (docker-archive or oci-archive) or stdin.
    Load(cmd::images::LoadArgs),
    /// Save images to a tar archive (stdout by default).
    Save(cmd::images::SaveArgs),
    /// Import a root file system tarball as a one-layer image.
    Import(cmd::images::ImportArgs),
    /// Build an image from a Dockerfile.
    Build(cmd::build::BuildArgs),
    /// Download an image from a registry.
    Pull(cmd::registry::PullArgs),
    /// Upload an image to a registry.
    Push(cmd::registry::PushArgs),
    /// Log in to a registry.
    Login(cmd::registry::LoginArgs),
    /// Log out from a registry.
    Logout(cmd::registry::LogoutArgs),
    /// Inspect manifests and image indexes in registries.
    #[command(subcommand)]
    Manifest(cmd::registry::ManifestCommand),
    /// List a repository's tags in its registry (`--list-tags`, as podman).
    Search(cmd::registry::SearchArgs),
    /// Run a command in a new container.
    Run(Box<cmd::run::RunArgs>),
    /// Create a new container.
    Create(Box<cmd::containers::CreateCmd>),
    /// Start stopped containers.
    Start(cmd::containers::StartArgs),
    /// Stop running containers (stop signal, then SIGKILL).
    Stop(cmd::containers::StopArgs),
    /// Restart containers.
    Restart(cmd::containers::StopArgs),
    /// Send a signal to running containers.
    Kill(cmd::containers::KillArgs),
    /// Remove containers.
    Rm(cmd::containers::RmArgs),
    /// List containers.
    Ps(cmd::containers::PsArgs),
    /// Show a container's output.
    Logs(cmd::containers::LogsArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(cmd::containers::WaitArgs),
    /// Run a command in a running container.
    Exec(cmd::containers::ExecArgs),
    /// Copy files between a container and the host.
    Cp(cmd::containers::CpArgs),
    /// Pause all processes of containers.
    Pause(cmd::containers::NamesArgs),
    /// Unpause containers.
    Unpause(cmd::containers::NamesArgs),
    /// Resource usage of containers.
    Stats(cmd::containers::StatsArgs),
    /// Processes of a container.
    Top(cmd::containers::TopArgs),
    /// Rename a container.
    Rename(cmd::containers::RenameArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(cmd::containers::ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(cmd::volumes::VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(cmd::network::NetworkCommand),
    /// List a container's published ports.
    Port(cmd::network::PortArgs),
    /// runc-compatible OCI runtime (also installed as `berth-runtime`).
    Runtime(cmd::runtime::Passthrough),
    /// The per-container monitor (internal).
    #[command(name = "__monitor", hide = true)]
    Monitor(cmd::containers::MonitorArgs),
    /// A user network's DNS responder (internal).
    #[command(name = "__dns", hide = true)]
    Dns(cmd::network::DnsArgs),
    /// Manage berth's state as a whole.
    #[command(subcommand)]
    System(cmd::system::SystemCommand),
}

fn main() -> ExitCode {
    // `berth runtime …` and a binary named `berth-runtime`: the runc-compatible
    // OCI runtime, whose own flags (its --root above all) are not berth's.
    if let Some(args) = cmd::runtime::argv() {
        return cmd::runtime::main(args);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 125 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use cmd::images as i;
    use cmd::system as s;
    let root = cli.root;
    match cli.command {
        Command::Version(a) => s::version(a),
        Command::Info(a) => s::info(&root, a),
        Command::Images(a) => i::list(&root, a),
        Command::Image(c) => i::image(&root, c),
        Command::Inspect(a) => i::inspect_any(&root, a),
        Command::Tag(a) => i::tag(&root, a),
        Command::History(a) => i::history(&root, a),
        Command::Rmi(a) => i::rmi(&root, a),
        Command::Load(a) => i::load(&root, a),
        Command::Save(a) => i::save(&root, a),
        Command::Import(a) => i::import(&root, a),
        Command::Build(a) => cmd::build::build(&root, a),
        Command::Pull(a) => cmd::registry::pull(&root, a),
        Command::Push(a) => cmd::registry::push(&root, a),
        Command::Login(a) => cmd::registry::login(&root, a),
        Command::Logout(a) => cmd::registry::logout(&root, a),
        Command::Manifest(c) => cmd::registry::manifest(&root, c),
        Command::Search(a) => cmd::registry::search(&root, a),
        Command::Run(a) => cmd::run::run(&root, *a),
        Command::Create(a) => cmd::containers::create(&root, *a),
        Command::Start(a) => cmd::containers::start(&root, a),
        Command::Stop(a) => cmd::containers::stop(&root, a),
        Command::Restart(a) => cmd::containers::restart(&root, a),
        Command::Kill(a) => cmd::containers::kill(&root, a),
        Command::Rm(a) => cmd::containers::rm(&root, a),
        Command::Ps(a) => cmd::containers::ps(&root, a),
        Command::Logs(a) => cmd::containers::logs(&root, a),
        Command::Wait(a) => cmd::containers::wait(&root, a),
        Command::Monitor(a) => cmd::containers::monitor(&root, a),
        Command::Dns(a) => cmd::network::dns(&root, a),
        Command::Runtime(a) => a.run(),
        Command::Exec(a) => cmd::containers::exec(&root, a),
        Command::Cp(a) => cmd::containers::cp(&root, a),
        Command::Pause(a) => cmd::containers::pause(&root, a),
        Command::Unpause(a) => cmd::containers::unpause(&root, a),
        Command::Stats(a) => cmd::containers::stats(&root, a),
        Command::Top(a) => cmd::containers::top(&root, a),
        Command::Rename(a) => cmd::containers::rename(&root, a),
        Command::Container(c) => cmd::containers::container(&root, c),
        Command::Volume(c) => cmd::volumes::volume(&root, c),
        Command::Network(c) => cmd::network::network(&root, c),
        Command::Port(a) => cmd::network::port(&root, a),
        Command::System(c) => s::system(&root, c),
    }
}

/// The error and its causes on one line, skipping causes a message already quotes.
pub(crate) fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}
