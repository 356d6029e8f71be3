//! Registry commands: pull, push, login, logout, manifest inspect; and the
//! progress display `run --pull` shares.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, bail};
use berth_engine::Engine;
use berth_engine::image::{Digest, Reference};
use berth_engine::registry::{Credentials, Event};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

#[derive(Args)]
pub struct PullArgs {
    /// Print only the image reference.
    #[arg(short, long)]
    quiet: bool,
    /// Platform to pull from a multi-platform image: os/arch[/variant].
    #[arg(long)]
    platform: Option<String>,
    /// NAME[:TAG|@DIGEST]
    name: String,
}

#[derive(Args)]
pub struct PushArgs {
    /// Print only the final digest line.
    #[arg(short, long)]
    quiet: bool,
    /// NAME[:TAG]
    name: String,
}

#[derive(Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Registry (default: Docker Hub).
    server: Option<String>,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// Registry (default: Docker Hub).
    server: Option<String>,
}

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Show a manifest or image index as the registry serves it.
    Inspect(ManifestInspectArgs),
}

#[derive(Args)]
pub struct ManifestInspectArgs {
    /// NAME[:TAG|@DIGEST]
    name: String,
}

/// Where progress goes: `pull`/`push` write to stdout as Docker does;
/// `run --pull` to stderr, keeping stdout for the container.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Shows pull/push progress: a bar per layer on a terminal, plain lines
/// otherwise, nothing when quiet.
pub struct Progress {
    stream: Stream,
    quiet: bool,
    pushing: bool,
    bars: Option<(MultiProgress, Mutex<HashMap<Digest, ProgressBar>>)>,
}

impl Progress {
    pub fn new(stream: Stream, quiet: bool, pushing: bool) -> Progress {
        let tty = match stream {
            Stream::Stdout => io::stdout().is_terminal(),
            Stream::Stderr => io::stderr().is_terminal(),
        };
        let bars = (!quiet && tty).then(|| {
            let target = match stream {
                Stream::Stdout => ProgressDrawTarget::stdout(),
                Stream::Stderr => ProgressDrawTarget::stderr(),
            };
            (
                MultiProgress::with_draw_target(target),
                Mutex::new(HashMap::new()),
            )
        });
        Progress {
            stream,
            quiet,
            pushing,
            bars,
        }
    }

    /// The closing summary (bytes and time): in the progress display on a
    /// terminal, else on stderr, so stdout keeps Docker's lines.
    pub fn summary(&self, s: &str) {
        if self.quiet {
            return;
        }
        if self.bars.is_some() || self.stream == Stream::Stderr {
            self.line(s);
        } else {
            eprintln!("{s}");
        }
    }

    /// A line of its own (above the bars on a terminal).
    pub fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        if let Some((multi, _)) = &self.bars {
            let _ = multi.println(s);
            return;
        }
        match self.stream {
            Stream::Stdout => println!("{s}"),
            Stream::Stderr => eprintln!("{s}"),
        }
    }

    fn finish(&self, d: &Digest, what: &str) {
        if let Some((_, bars)) = &self.bars
            && let Some(pb) = bars.lock().expect("progress lock").remove(d)
        {
            pb.finish_and_clear();
        }
        self.line(&format!("{}: {what}", d.short()));
    }

    /// Handles one event (called from the client's worker threads).
    pub fn event(&self, ev: Event) {
        if self.quiet {
            return;
        }
        match ev {
            Event::LayerStart { digest, size } => {
                if let Some((multi, bars)) = &self.bars {
                    let pb = multi.add(ProgressBar::new(size));
                    pb.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("valid template"),
                    );
                    pb.set_prefix(digest.short().to_string());
                    pb.set_message(if self.pushing {
                        "Pushing"
                    } else {
                        "Downloading"
                    });
                    bars.lock().expect("progress lock").insert(digest, pb);
                }
            }
            Event::LayerProgress { digest, done, .. } => {
                if let Some((_, bars)) = &self.bars
                    && let Some(pb) = bars.lock().expect("progress lock").get(&digest)
                {
                    pb.set_position(done);
                }
            }
            Event::LayerVerified { digest } => {
                if let Some((_, bars)) = &self.bars
                    && let Some(pb) = bars.lock().expect("progress lock").get(&digest)
                {
                    pb.set_message("Verified");
                }
            }
            Event::LayerUnpacked { digest } => self.finish(&digest, "Pull complete"),
            Event::LayerExists { digest } => self.finish(
                &digest,
                if self.pushing {
                    "Layer already exists"
                } else {
                    "Already exists"
                },
            ),
            Event::LayerMounted { digest, from } => {
                self.finish(&digest, &format!("Mounted from {from}"))
            }
            Event::LayerPushed { digest, .. } => self.finish(&digest, "Pushed"),
            Event::Resolved { .. } | Event::Done { .. } => {}
        }
    }
}

fn engine(root: &Path) -> anyhow::Result<Engine> {
    Ok(Engine::open(root)?)
}

/// The `<tag>: Pulling from <repo>` line Docker starts with.
fn pulling_from(r: &Reference) -> String {
    let what = r
        .tag()
        .map(str::to_string)
        .or_else(|| r.digest().map(|d| d.to_string()))
        .unwrap_or_default();
    // Docker names the repository without its registry here.
    format!("{what}: Pulling from {}", r.path())
}

/// Pulls with Docker's output on `stream`; returns the full reference.
pub fn pull_with_progress(
    e: &Engine,
    name: &str,
    platform: Option<&str>,
    stream: Stream,
    quiet: bool,
) -> anyhow::Result<String> {
    let r = Reference::parse(name)?;
    let p = Progress::new(stream, quiet, false);
    if Reference::parse_name_only(name).is_ok_and(|n| n.tag().is_none() && n.digest().is_none()) {
        p.line("Using default tag: latest");
    }
    p.line(&pulling_from(&r));
    let pulled = e.pull(name, platform, &|ev| p.event(ev))?;
    if !pulled.up_to_date {
        p.summary(&format!(
            "Downloaded {} in {:.2}s",
            output::size(pulled.downloaded),
            pulled.elapsed.as_secs_f64()
        ));
    }
    p.line(&format!("Digest: {}", pulled.digest));
    let status = if pulled.up_to_date {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    p.line(&format!("Status: {status} {}", r.familiar()));
    Ok(r.to_string())
}

pub fn pull(root: &Path, a: PullArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let full = pull_with_progress(&e, &a.name, a.platform.as_deref(), Stream::Stdout, a.quiet)?;
    println!("{full}");
    Ok(ExitCode::SUCCESS)
}

pub fn push(root: &Path, a: PushArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let r = Reference::parse(&a.name)?;
    let p = Progress::new(Stream::Stdout, a.quiet, true);
    p.line(&format!(
        "The push refers to repository [{}]",
        r.repository()
    ));
    let uploaded = std::sync::atomic::AtomicU64::new(0);
    let pushed = e.push(&a.name, &|ev| {
        if let Event::LayerPushed { size, .. } = &ev {
            uploaded.fetch_add(*size, std::sync::atomic::Ordering::Relaxed);
        }
        p.event(ev)
    })?;
    p.summary(&format!(
        "Uploaded {} in {:.2}s",
        output::size(uploaded.into_inner()),
        pushed.elapsed.as_secs_f64()
    ));
    println!(
        "{}: digest: {} size: {}",
        r.tag().unwrap_or("latest"),
        pushed.digest,
        pushed.size
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a line from the terminal, without echo when `secret`.
fn prompt(label: &str, secret: bool) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = io::stdin();
    eprint!("{label}");
    io::stderr().flush().ok();
    let saved = if secret { tcgetattr(&stdin).ok() } else { None };
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, t);
        eprintln!();
    }
    r.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn login(root: &Path, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let server = a.server.unwrap_or_default();
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let tty = io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if tty && !a.password_stdin => prompt("Username: ", false)?,
        None => bail!("a user name is required: use --username"),
    };
    if username.is_empty() {
        bail!("a user name is required: use --username");
    }
    let password = if a.password_stdin {
        let mut s = String::new();
        io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if tty {
        prompt("Password: ", true)?
    } else {
        bail!("a password is required: use --password-stdin");
    };
    if password.is_empty() {
        bail!("a password is required: use --password-stdin");
    }
    e.login(&server, &Credentials { username, password })?;
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(root: &Path, a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let e = engine(root)?;
    let (registry, had) = e.logout(a.server.as_deref().unwrap_or_default())?;
    let shown = berth_engine::berth_registry::credentials::auth_key(&registry);
    if had {
        println!("Removing login credentials for {shown}");
    } else {
        println!("Not logged in to {shown}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn manifest(root: &Path, c: ManifestCommand) -> anyhow::Result<ExitCode> {
    match c {
        ManifestCommand::Inspect(a) => {
            let e = engine(root)?;
            let m = e.remote_manifest(&a.name)?;
            println!("{}", indent_json(&m.bytes));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Args)]
pub struct SearchArgs {
    /// List the tags of the repository (the only search berth does: registries'
    /// catalog search is Docker Hub's own API, not the distribution spec).
    #[arg(long)]
    list_tags: bool,
    /// Output format: table (default) or json.
    #[arg(long)]
    format: Option<String>,
    /// REGISTRY/REPOSITORY
    name: String,
}

/// `search --list-tags NAME`: the registry's tag list (`GET /v2/NAME/tags/list`).
pub fn search(root: &Path, a: SearchArgs) -> anyhow::Result<ExitCode> {
    if !a.list_tags {
        anyhow::bail!(
            "berth search only lists a repository's tags: use --list-tags {}",
            a.name
        );
    }
    let e = engine(root)?;
    let mut tags = e.remote_tags(&a.name)?;
    // Registries list tags in no promised order.
    tags.sort();
    let name = a.name.split(['@']).next().unwrap_or(&a.name);
    // A tag given with the name is not part of the repository.
    let repo = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => r,
        _ => name,
    };
    if a.format.as_deref() == Some("json") {
        let v = serde_json::json!([{ "Name": repo, "Tags": tags }]);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = repo.len().max(4) + 2;
    println!("{:width$}TAG", "NAME");
    for t in &tags {
        println!("{repo:width$}{t}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Re-indents JSON text (three spaces, as Docker prints manifests) keeping
/// its key order, which a parse and re-serialise would sort.
fn indent_json(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut chars = text.trim().chars().peekable();
    let nl = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"   ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Skip whitespace to see whether it is empty.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    nl(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                nl(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                nl(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_keeping_order() {
        let s = indent_json(br#"{"z":1,"a":{"b":[1, 2],"c":{}},"s":"x,{\"y\"}:","e":[]}"#);
        assert_eq!(
            s,
            "{\n   \"z\": 1,\n   \"a\": {\n      \"b\": [\n         1,\n         2\n      ],\n      \"c\": {}\n   },\n   \"s\": \"x,{\\\"y\\\"}:\",\n   \"e\": []\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"]["b"][1], 2);
    }

    #[test]
    fn pulling_from_lines() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(pulling_from(&r), "latest: Pulling from library/busybox");
        let r = Reference::parse("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(pulling_from(&r), "1: Pulling from a/b");
    }
}
