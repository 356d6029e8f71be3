//! version, info, system df, system check.

use std::path::Path;
use std::process::ExitCode;

use berth_engine::Engine;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::{self, Format};

#[derive(Args)]
pub struct VersionArgs {
    /// Output format: json, or a Go-style template.
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Output format: json, or a Go-style template.
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Show disk usage by images (and, later, containers and volumes).
    Df(DfArgs),
    /// Re-hash every blob and cross-check the metadata; report what is wrong.
    Check,
    /// Same as `berth info`.
    Info(InfoArgs),
    /// Remove stopped containers, dangling images, unused anonymous volumes,
    /// and leftovers of interrupted operations.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Remove unused named volumes too.
    #[arg(long)]
    volumes: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
pub struct DfArgs {
    /// Output format: table, json, or a Go-style template.
    #[arg(long)]
    format: Option<String>,
}

fn version_json() -> serde_json::Value {
    json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": "1.43",
        "Os": std::env::consts::OS,
        "Arch": berth_engine::image::config::host_arch(),
    })
}

pub fn version(a: VersionArgs) -> anyhow::Result<ExitCode> {
    let v = version_json();
    match Format::parse(a.format.as_deref()) {
        Format::Json => println!("{v}"),
        Format::Template(t) => println!("{}", output::template(&t, &v)),
        Format::Table => {
            println!("berth version {}", env!("CARGO_PKG_VERSION"));
            println!(
                " OS/Arch: {}/{}",
                v["Os"].as_str().unwrap_or(""),
                v["Arch"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn yes_no(c: &berth_engine::host::Capability) -> String {
    if c.usable {
        "yes".into()
    } else {
        format!("no ({})", c.detail)
    }
}

pub fn info(root: &Path, a: InfoArgs) -> anyhow::Result<ExitCode> {
    let e = Engine::open(root)?;
    let i = e.info()?;
    match Format::parse(a.format.as_deref()) {
        Format::Json => println!("{}", serde_json::to_string(&i)?),
        Format::Template(t) => println!("{}", output::template(&t, &serde_json::to_value(&i)?)),
        Format::Table => {
            let h = &i.host;
            println!("Version:          {}", i.version);
            println!("Root Dir:         {}", i.root.display());
            println!("Storage Driver:   {}", i.storage_driver);
            println!("Images:           {}", i.images);
            println!("Kernel Version:   {}", h.kernel);
            println!(
                "Cgroup Version:   {} ({})",
                h.cgroups.mode.version(),
                serde_json::to_value(h.cgroups.mode)?.as_str().unwrap_or("")
            );
            println!("Cgroup Controllers: {}", h.cgroups.controllers.join(" "));
            println!("Overlayfs:        {}", yes_no(&h.overlayfs));
            println!("User Namespaces:  {}", yes_no(&h.user_namespaces));
            println!("KVM:              {}", yes_no(&h.kvm));
            let v = &i.vm;
            println!("Default Isolation: {}", v.default_isolation);
            println!("MicroVM:");
            let none = |e: &Option<String>| e.clone().unwrap_or_default();
            match &v.kernel {
                Some(k) => println!(
                    "  Guest Kernel:   {} ({})",
                    k.path.display(),
                    k.release.as_deref().unwrap_or("release unknown")
                ),
                None => println!("  Guest Kernel:   none: {}", none(&v.kernel_error)),
            }
            match &v.agent {
                Some(p) => println!("  Agent:          {}", p.display()),
                None => println!("  Agent:          none: {}", none(&v.agent_error)),
            }
            match &v.hypervisor {
                Some(h) => println!("  Hypervisor:     {h}: {}", v.accel_reason),
                None => println!("  Hypervisor:     none: {}", none(&v.hypervisor_error)),
            }
            println!("Peers:");
            for (name, path) in &h.peers {
                match path {
                    Some(p) => println!("  {name:<20} {}", p.display()),
                    None => println!("  {name:<20} (not found)"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn system(root: &Path, c: SystemCommand) -> anyhow::Result<ExitCode> {
    match c {
        SystemCommand::Df(a) => df(root, a),
        SystemCommand::Check => check(root),
        SystemCommand::Info(a) => info(root, a),
        SystemCommand::Prune(a) => prune(root, a),
    }
}

fn prune(root: &Path, a: PruneArgs) -> anyhow::Result<ExitCode> {
    let e = Engine::open(root)?;
    if !a.force {
        eprint!(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all {}images without a container\n  - unused {}volumes\nAre you sure you want to continue? [y/N] ",
            if a.all { "" } else { "dangling " },
            if a.volumes { "" } else { "anonymous " }
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let r = e.prune_system(a.all, a.volumes)?;
    if !r.containers.is_empty() {
        println!("Deleted Containers:");
        for c in &r.containers {
            println!("{c}");
        }
        println!();
    }
    if !r.networks.is_empty() {
        println!("Deleted Networks:");
        for n in &r.networks {
            println!("{n}");
        }
        println!();
    }
    if !r.volumes.is_empty() {
        println!("Deleted Volumes:");
        for v in &r.volumes {
            println!("{v}");
        }
        println!();
    }
    if !r.images.is_empty() {
        println!("Deleted Images:");
        for i in &r.images {
            println!("{i}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", output::size(r.reclaimed));
    Ok(ExitCode::SUCCESS)
}

fn df(root: &Path, a: DfArgs) -> anyhow::Result<ExitCode> {
    let e = Engine::open(root)?;
    let u = e.disk_usage()?;
    let pct = |r: u64, s: u64| (r * 100).checked_div(s).unwrap_or(0);
    let im = &u.images;
    let rows = vec![
        output::row(&[
            ("Type", "Images".into()),
            ("TotalCount", im.images.to_string()),
            ("Active", im.active.to_string()),
            ("Size", output::size(im.size)),
            (
                "Reclaimable",
                format!(
                    "{} ({}%)",
                    output::size(im.reclaimable),
                    pct(im.reclaimable, im.size)
                ),
            ),
        ]),
        output::row(&[
            ("Type", "Containers".into()),
            ("TotalCount", "0".into()),
            ("Active", "0".into()),
            ("Size", "0B".into()),
            ("Reclaimable", "0B".into()),
        ]),
        output::row(&[
            ("Type", "Local Volumes".into()),
            ("TotalCount", "0".into()),
            ("Active", "0".into()),
            ("Size", "0B".into()),
            ("Reclaimable", "0B".into()),
        ]),
    ];
    output::print_rows(
        &Format::parse(a.format.as_deref()),
        &[
            ("TYPE", "Type"),
            ("TOTAL", "TotalCount"),
            ("ACTIVE", "Active"),
            ("SIZE", "Size"),
            ("RECLAIMABLE", "Reclaimable"),
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn check(root: &Path) -> anyhow::Result<ExitCode> {
    let e = Engine::open(root)?;
    let problems = e.check()?;
    if problems.is_empty() {
        println!("no problems found");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("{}: {}", p.object, p.problem);
    }
    eprintln!("{} problem(s) found", problems.len());
    Ok(ExitCode::from(1))
}
