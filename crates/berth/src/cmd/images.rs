//! Image commands: images, image inspect, tag, rmi, load, save, import, image prune.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use berth_engine::Engine;
use berth_engine::image::Removed;
use berth_engine::image::archive::Format as ArchiveFormat;
use berth_engine::image::reference::Reference;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show low-level information on images.
    Inspect(InspectArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Load images from a tar archive or stdin.
    Load(LoadArgs),
    /// Save images to a tar archive.
    Save(SaveArgs),
    /// Import a root file system tarball as an image.
    Import(ImportArgs),
    /// Remove unused images.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show all images (berth keeps no intermediate images, so the same as without).
    #[arg(short, long)]
    all: bool,
    /// Don't truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Output format: table, json, or a Go-style template.
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository (and tag).
    reference: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format the output with a Go-style template.
    #[arg(short, long)]
    format: Option<String>,
    /// Images to inspect.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

#[derive(Args)]
pub struct RmiArgs {
    /// Remove the image even if it has several names.
    #[arg(short, long)]
    force: bool,
    /// Images to remove.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Suppress progress output.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SaveFormat {
    Docker,
    Oci,
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to a file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value = "docker")]
    format: SaveFormat,
    /// Images to save.
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the image config (CMD, ENV, …).
    #[arg(short, long = "change")]
    changes: Vec<String>,
    /// Commit message recorded in the image history.
    #[arg(short, long)]
    message: Option<String>,
    /// Tarball to import, or - for stdin.
    file: String,
    /// REPOSITORY[:TAG] to name the image.
    reference: Option<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images no container uses, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub fn image(root: &Path, c: ImageCommand) -> anyhow::Result<ExitCode> {
    match c {
        ImageCommand::Ls(a) => list(root, a),
        ImageCommand::Inspect(a) => inspect(root, a),
        ImageCommand::Tag(a) => tag(root, a),
        ImageCommand::Rm(a) => rmi(root, a),
        ImageCommand::Load(a) => load(root, a),
        ImageCommand::Save(a) => save(root, a),
        ImageCommand::Import(a) => import(root, a),
        ImageCommand::Prune(a) => prune(root, a),
    }
}

fn engine(root: &Path) -> anyhow::Result<Engine> {
    Ok(Engine::open(root)?)
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Only the image ID of the entries that have one.
    #[arg(short, long)]
    quiet: bool,
    /// Do not shorten IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table, json, or a Go-style template.
    #[arg(long)]
    format: Option<String>,
    /// Image.
    name: String,
}

/// `history IMAGE`: how the image was made, newest first (Docker's columns; only the
/// top entry has an ID here, the others are `<missing>`, as for a pulled image).
pub fn history(root: &Path, a: HistoryArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let (img, entries) = e.images().history(&a.name)?;
    let id = if a.no_trunc {
        img.id.to_string()
    } else {
        img.id.short().to_string()
    };
    if a.quiet {
        println!("{id}");
        for _ in 1..entries.len() {
            println!("<missing>");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Value> = entries
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let by = h.created_by.replace('\t', " ");
            let shown = if a.no_trunc || by.chars().count() <= 45 {
                by
            } else {
                format!("{}…", by.chars().take(44).collect::<String>())
            };
            output::row(&[
                (
                    "ID",
                    if i == 0 {
                        id.clone()
                    } else {
                        "<missing>".into()
                    },
                ),
                ("CreatedAt", h.created.clone()),
                ("CreatedSince", output::ago(Some(&h.created))),
                ("CreatedBy", shown),
                ("Size", output::size(h.size)),
                ("Comment", h.comment.clone()),
            ])
        })
        .collect();
    let cols = [
        ("IMAGE", "ID"),
        ("CREATED", "CreatedSince"),
        ("CREATED BY", "CreatedBy"),
        ("SIZE", "Size"),
        ("COMMENT", "Comment"),
    ];
    output::print_rows(&Format::parse(a.format.as_deref()), &cols, &rows);
    Ok(ExitCode::SUCCESS)
}

pub fn list(root: &Path, a: ListArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let filter = a
        .reference
        .as_deref()
        .map(Reference::parse_name_only)
        .transpose()?;
    let mut rows = Vec::new();
    for img in e.images().list()? {
        let id = if a.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        let names: Vec<Option<Reference>> = if img.tags.is_empty() {
            vec![None]
        } else {
            img.tags.iter().map(|t| Reference::parse(t).ok()).collect()
        };
        for r in names {
            if let Some(f) = &filter {
                let Some(r) = &r else { continue };
                if r.repository() != f.repository() || f.tag().is_some_and(|t| Some(t) != r.tag()) {
                    continue;
                }
            }
            let (repo, tag) = match &r {
                Some(r) => (
                    r.familiar_repository(),
                    r.tag().unwrap_or("<none>").to_string(),
                ),
                None => ("<none>".into(), "<none>".into()),
            };
            rows.push(output::row(&[
                ("Repository", repo),
                ("Tag", tag),
                ("ID", id.clone()),
                ("Digest", img.manifest.to_string()),
                ("CreatedAt", img.created.clone().unwrap_or_default()),
                ("CreatedSince", output::ago(img.created.as_deref())),
                ("Size", output::size(img.size)),
                ("VirtualSize", output::size(img.size)),
                ("Containers", "N/A".into()),
                ("SharedSize", "N/A".into()),
                ("UniqueSize", "N/A".into()),
            ]));
        }
    }
    if a.quiet {
        let mut seen = BTreeSet::new();
        for r in &rows {
            let id = r["ID"].as_str().unwrap_or_default().to_string();
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut cols = vec![("REPOSITORY", "Repository"), ("TAG", "Tag")];
    if a.digests {
        cols.push(("DIGEST", "Digest"));
    }
    cols.extend([
        ("IMAGE ID", "ID"),
        ("CREATED", "CreatedSince"),
        ("SIZE", "Size"),
    ]);
    output::print_rows(&Format::parse(a.format.as_deref()), &cols, &rows);
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(root: &Path, a: InspectArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let mut out = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for n in &a.names {
        match e.images().inspect(n) {
            Ok(v) => out.push(v),
            Err(err) => {
                eprintln!("Error: {err}");
                code = ExitCode::from(1);
            }
        }
    }
    match a.format.as_deref() {
        Some(t) => {
            for v in &out {
                println!("{}", output::template(t, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(out))?),
    }
    Ok(code)
}

/// Top-level `inspect`: containers first, then images.
pub fn inspect_any(root: &Path, a: InspectArgs) -> anyhow::Result<ExitCode> {
    super::containers::inspect(root, &a.names, a.format.as_deref())
}

pub fn tag(root: &Path, a: TagArgs) -> anyhow::Result<ExitCode> {
    engine(root)?.images().tag(&a.source, &a.target)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(root: &Path, a: RmiArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let mut code = ExitCode::SUCCESS;
    for n in &a.names {
        match e.remove_image(n, a.force) {
            Ok(done) => print_removed(&done, false),
            Err(err) => {
                eprintln!("Error: {err}");
                code = ExitCode::from(1);
            }
        }
    }
    Ok(code)
}

fn print_removed(done: &[Removed], lower: bool) {
    for r in done {
        match (r, lower) {
            (Removed::Untagged(t), false) => println!("Untagged: {t}"),
            (Removed::Deleted(d), false) => println!("Deleted: {d}"),
            (Removed::Untagged(t), true) => println!("untagged: {t}"),
            (Removed::Deleted(d), true) => println!("deleted: {d}"),
        }
    }
}

pub fn load(root: &Path, a: LoadArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    // An archive is indexed by offset, so stdin is first spooled to a file.
    let spooled;
    let path = match &a.input {
        Some(p) => p.clone(),
        None => {
            if io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty (use -i FILE)");
            }
            let dir = e.root().join("image").join("tmp");
            let mut f = tempfile::NamedTempFile::new_in(&dir)?;
            io::copy(&mut io::stdin().lock(), &mut f).context("reading stdin")?;
            spooled = f;
            spooled.path().to_path_buf()
        }
    };
    let progress = crate::progress::Layers::new(a.quiet);
    let loaded = e
        .images()
        .load(&path, &|ev| progress.event(ev))
        .with_context(|| format!("loading {}", shown(&a.input)))?;
    for l in loaded {
        if l.tags.is_empty() {
            println!("Loaded image ID: {}", l.image.id);
        }
        for t in l.tags {
            println!("Loaded image: {}", t.familiar());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdin".into())
}

pub fn save(root: &Path, a: SaveArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let format = match a.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    match &a.output {
        Some(p) => e.images().save(&a.names, p, format)?,
        None => {
            if io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = io::stdout().lock();
            e.images().write_archive(&a.names, out, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn import(root: &Path, a: ImportArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let img = if a.file == "-" {
        e.images().import(
            io::stdin().lock(),
            "stdin",
            a.reference.as_deref(),
            &a.changes,
            a.message.as_deref(),
        )?
    } else {
        if a.file.contains("://") {
            bail!("importing from a URL is not supported: {}", a.file);
        }
        let f = File::open(&a.file).with_context(|| format!("opening {}", a.file))?;
        e.images().import(
            f,
            &a.file,
            a.reference.as_deref(),
            &a.changes,
            a.message.as_deref(),
        )?
    };
    println!("{}", img.id);
    Ok(ExitCode::SUCCESS)
}

pub fn prune(root: &Path, a: PruneArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    if !a.force {
        let what = if a.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        io::stderr().flush()?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let (removed, freed) = e.prune_images(a.all)?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        print_removed(&removed, true);
        println!();
    }
    println!("Total reclaimed space: {}", output::size(freed));
    Ok(ExitCode::SUCCESS)
}
