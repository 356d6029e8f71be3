//! The typed Dockerfile syntax tree.
//!
//! Words are kept as written (quotes and `$VAR`s intact): which of them are
//! expanded, and how, is [`crate::expand`]'s business, because it depends on
//! build arguments and on the environment of the stage at that point.

use std::time::Duration;

use serde::Serialize;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// `ARG` instructions before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    /// Things Docker accepts but warns about (empty continuation lines...).
    pub warnings: Vec<Warning>,
}

/// Parser directives (`# syntax=`, `# escape=`) from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    /// `\` unless `# escape=`` ` `` says otherwise.
    pub escape: char,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

/// One build stage: a `FROM` and the instructions up to the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position among the stages (for `COPY --from=<index>`).
    pub index: usize,
    /// `AS name`, lowercased (stage names are case-insensitive).
    pub name: Option<String>,
    /// The `FROM` instruction itself (its command is [`Command::From`]).
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The base image (or stage) as written, before build-arg expansion.
    pub fn base(&self) -> &str {
        match &self.from.command {
            Command::From(f) => &f.image,
            _ => "",
        }
    }
    /// `FROM --platform=...` as written.
    pub fn platform(&self) -> Option<&str> {
        match &self.from.command {
            Command::From(f) => f.platform.as_deref(),
            _ => None,
        }
    }
    /// The name for messages: `name` or `stage-N`, as BuildKit says.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// 1-based line of its last line (continuations and heredocs included).
    pub end_line: usize,
    /// The logical line as written (continuations joined, comments dropped).
    pub original: String,
    pub command: Command,
}

impl Instruction {
    /// The instruction keyword, upper case (`RUN`, `COPY`...).
    pub fn keyword(&self) -> &'static str {
        self.command.keyword()
    }

    /// The full source of the instruction for history and cache keys: the
    /// logical line followed by each heredoc's body and terminator.
    pub fn source_text(&self) -> String {
        let mut out = self.original.clone();
        for h in self.command.heredocs() {
            out.push('\n');
            out.push_str(&h.content);
            out.push_str(&h.name);
        }
        out
    }
}

/// What an instruction says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", content = "args", rename_all = "UPPERCASE")]
pub enum Command {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Label(Vec<KeyValue>),
    Expose(Vec<String>),
    Env(Vec<KeyValue>),
    Add(Copy),
    Copy(Copy),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
    Onbuild(Onbuild),
    /// Deprecated, kept: it sets the image's `author`.
    Maintainer(String),
}

impl Command {
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Label(_) => "LABEL",
            Command::Expose(_) => "EXPOSE",
            Command::Env(_) => "ENV",
            Command::Add(_) => "ADD",
            Command::Copy(_) => "COPY",
            Command::Arg(_) => "ARG",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Volume(_) => "VOLUME",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Shell(_) => "SHELL",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Heredocs attached to this instruction, in order.
    pub fn heredocs(&self) -> Vec<&Heredoc> {
        match self {
            Command::Run(r) => r.heredocs.iter().collect(),
            Command::Add(c) | Command::Copy(c) => c
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Heredoc(h) => Some(h),
                    CopySource::Path(_) => None,
                })
                .collect(),
            Command::Onbuild(o) => o.instruction.command.heredocs(),
            _ => Vec::new(),
        }
    }
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    pub image: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// Shell form (run through `SHELL`, default `/bin/sh -c`) or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CommandLine {
    Shell(String),
    Exec(Vec<String>),
}

/// `RUN [--mount=...] [--network=...] [--security=...] command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: CommandLine,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
    pub devices: Vec<String>,
}

/// How a builder should run a RUN that has heredocs (BuildKit's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript {
    /// No heredocs: the command as written.
    Plain(CommandLine),
    /// `RUN <<EOF` whose body has no `#!`: the body is the shell script.
    Script(String),
    /// `RUN <<EOF` whose body starts with `#!`: write it to a file, run it.
    Executable(String),
    /// Heredocs inside a longer command: the shell gets the command line
    /// followed by each body and terminator, and handles them itself.
    Compound(String),
}

impl Run {
    /// The script to run, resolving heredocs the way BuildKit does.
    pub fn script(&self) -> RunScript {
        let CommandLine::Shell(cmd) = &self.command else {
            return RunScript::Plain(self.command.clone());
        };
        if self.heredocs.is_empty() {
            return RunScript::Plain(self.command.clone());
        }
        let only_heredoc = self.heredocs.len() == 1 && super::heredoc_word(cmd.trim()).is_some();
        if only_heredoc {
            let body = self.heredocs[0].content.clone();
            if body.starts_with("#!") {
                return RunScript::Executable(body);
            }
            return RunScript::Script(body);
        }
        let mut full = cmd.clone();
        for h in &self.heredocs {
            full.push('\n');
            full.push_str(&h.content);
            full.push_str(&h.name);
        }
        RunScript::Compound(full)
    }
}

/// `RUN --mount=type=...,...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountKind,
    pub target: Option<String>,
    pub source: Option<String>,
    /// A stage name or index, or an image.
    pub from: Option<String>,
    pub readonly: bool,
    pub id: Option<String>,
    pub sharing: Option<String>,
    pub mode: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub size: Option<String>,
    pub required: Option<bool>,
    pub env: Option<String>,
    /// The flag value as written.
    pub spec: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

/// A `key=value` of ENV or LABEL, as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// As written (quotes kept); expanded when the ARG is reached.
    pub default: Option<String>,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub sources: Vec<CopySource>,
    pub dest: String,
    /// Written in JSON form.
    pub json: bool,
    /// COPY only: `--from=stage|index|image`.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub excludes: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: Option<bool>,
    /// ADD only: `--unpack`.
    pub unpack: Option<bool>,
}

impl Copy {
    /// The path sources (not heredocs), as written.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|s| match s {
            CopySource::Path(p) => Some(p.as_str()),
            CopySource::Heredoc(_) => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CopySource {
    Path(String),
    /// `COPY <<EOF /dest`: a file named after the heredoc, with its body.
    Heredoc(Heredoc),
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The terminator word, quotes removed.
    pub name: String,
    /// The body with its line endings (leading tabs already removed for `<<-`).
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`): no expansion in the body.
    pub expand: bool,
    /// `<<-`: leading tabs stripped from body and terminator.
    pub chomp: bool,
    /// `2<<EOF`: the file descriptor, when given.
    pub fd: Option<u32>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [opts] CMD ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Healthcheck {
    None,
    Cmd {
        /// Shell form becomes `CMD-SHELL` in the config, exec form `CMD`.
        test: CommandLine,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

impl Healthcheck {
    /// The config's `Test` array, as Docker records it.
    pub fn test(&self) -> Vec<String> {
        match self {
            Healthcheck::None => vec!["NONE".into()],
            Healthcheck::Cmd {
                test: CommandLine::Shell(s),
                ..
            } => vec!["CMD-SHELL".into(), s.clone()],
            Healthcheck::Cmd {
                test: CommandLine::Exec(v),
                ..
            } => std::iter::once("CMD".to_string())
                .chain(v.iter().cloned())
                .collect(),
        }
    }
}

/// `ONBUILD <instruction>`: recorded in the image, run by builds FROM it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Onbuild {
    /// The trigger as the image config stores it (`RUN echo hi`).
    pub expression: String,
    /// The trigger parsed (its line is the ONBUILD's).
    pub instruction: Box<Instruction>,
}
