//! `berth build`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use berth_engine::Engine;
use berth_engine::build::{BuildError, BuildOptions};
use clap::Args;

#[derive(Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (NAME:TAG); may be repeated.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage and what it needs.
    #[arg(long)]
    target: Option<String>,
    /// Do not use the layer cache.
    #[arg(long)]
    no_cache: bool,
    /// Always pull base images, even those in the store (missing ones are
    /// always pulled).
    #[arg(long)]
    pull: bool,
    /// Set a label on the image (KEY=VALUE).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// Progress output: plain streams RUN output; tty folds it (shown only
    /// when a step fails); auto is tty when stderr is a terminal.
    #[arg(long, default_value = "auto", value_parser = ["auto", "plain", "tty"])]
    progress: String,
    /// The build context directory.
    context: PathBuf,
}

pub fn build(root: &Path, a: BuildArgs) -> anyhow::Result<ExitCode> {
    if a.context.to_string_lossy().contains("://") || a.context.as_os_str() == "-" {
        bail!(
            "only a local directory can be a build context: {}",
            a.context.display()
        );
    }
    let mut build_args = BTreeMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // A bare KEY takes its value from the environment, as Docker.
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
        }
    }
    let mut labels = Vec::new();
    for kv in &a.labels {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        labels.push((k.to_string(), v.to_string()));
    }
    let opts = BuildOptions {
        context: a.context.clone(),
        dockerfile: a.file.clone(),
        tags: a.tags.clone(),
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        labels,
        quiet: a.quiet,
        pull: a.pull,
        folded: match a.progress.as_str() {
            "tty" => true,
            "plain" => false,
            _ => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        },
    };
    let e = Engine::open(root)?;
    let mut sink = std::io::sink();
    let mut err = std::io::stderr();
    let out: &mut dyn Write = if a.quiet { &mut sink } else { &mut err };
    let id = match e.build(&opts, out) {
        Ok(id) => id,
        Err(BuildError::Run(msg, code)) => {
            eprintln!("ERROR: {msg}");
            // Docker exits 1 for a failed build, whatever the step's code.
            let _ = code;
            return Ok(ExitCode::from(1));
        }
        Err(err) => {
            eprintln!("ERROR: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(f) = &a.iidfile {
        std::fs::write(f, id.to_string())?;
    }
    if a.quiet {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}
