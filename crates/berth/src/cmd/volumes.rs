//! `volume create|ls|inspect|rm|prune`.

use std::path::Path;
use std::process::ExitCode;

use berth_engine::Engine;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes.
    Inspect(NamesArgs),
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (all unused with -a).
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Labels (KEY=VALUE).
    #[arg(long)]
    label: Vec<String>,
    /// Name (random when omitted).
    name: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table, json, or a Go-style template.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    /// Volumes.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Remove even if in use.
    #[arg(short, long)]
    force: bool,
    /// Volumes.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// All unused volumes, not only anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt.
    #[arg(short, long)]
    force: bool,
}

fn users(e: &Engine, name: &str) -> Vec<String> {
    e.containers()
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.volumes.iter().any(|v| v == name))
        .map(|c| c.short_id().to_string())
        .collect()
}

fn volume_json(e: &Engine, v: &berth_engine::volumes::Volume) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": e.volumes().data(&v.name),
        "CreatedAt": v.created,
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
    })
}

pub fn volume(root: &Path, c: VolumeCommand) -> anyhow::Result<ExitCode> {
    let e = Engine::open(root)?;
    let vs = e.volumes();
    match c {
        VolumeCommand::Create(a) => {
            let v = vs.create(a.name.as_deref(), &a.label, false)?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls(a) => {
            let rows: Vec<Value> = vs
                .list()
                .iter()
                .map(|v| output::row(&[("Driver", "local".into()), ("Name", v.name.clone())]))
                .collect();
            if a.quiet {
                for r in &rows {
                    println!("{}", r["Name"].as_str().unwrap_or(""));
                }
            } else {
                output::print_rows(
                    &Format::parse(a.format.as_deref()),
                    &[("DRIVER", "Driver"), ("VOLUME NAME", "Name")],
                    &rows,
                );
            }
        }
        VolumeCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = ExitCode::SUCCESS;
            for n in &a.names {
                match vs.get(n) {
                    Ok(v) => out.push(volume_json(&e, &v)),
                    Err(err) => {
                        eprintln!("Error: {err}");
                        code = ExitCode::from(1);
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
            return Ok(code);
        }
        VolumeCommand::Rm(a) => {
            let mut code = ExitCode::SUCCESS;
            for n in &a.names {
                let u = users(&e, n);
                let r = if !u.is_empty() && !a.force {
                    Err(berth_engine::volumes::VolumeError::InUse {
                        name: n.clone(),
                        users: u.join(", "),
                    })
                } else {
                    vs.remove(n)
                };
                match r {
                    Ok(()) => println!("{n}"),
                    Err(err) => {
                        eprintln!("Error: {err}");
                        code = ExitCode::from(1);
                    }
                }
            }
            return Ok(code);
        }
        VolumeCommand::Prune(a) => {
            if !a.force {
                eprint!(
                    "WARNING! This will remove unused volumes.\nAre you sure you want to continue? [y/N] "
                );
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let mut removed = Vec::new();
            for v in vs.list() {
                if (a.all || v.anonymous) && users(&e, &v.name).is_empty() {
                    vs.remove(&v.name)?;
                    removed.push(v.name);
                }
            }
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: 0B");
        }
    }
    Ok(ExitCode::SUCCESS)
}
