//! Variable scope and expansion: which words of which instruction are
//! expanded, with which variables, and which build args a step *uses*.
//!
//! The rules are BuildKit's:
//! - Global `ARG`s (before the first `FROM`) and the platform args
//!   (`TARGETPLATFORM`, `BUILDARCH`...) are visible in `FROM` lines only; a
//!   stage sees one only after redeclaring it with a bare `ARG NAME`, which
//!   inherits the global value.
//! - `--build-arg` overrides an ARG's default but never declares anything.
//! - Inside a stage, the base image's ENV, the stage's ENV and its ARGs form
//!   one environment where the last setter wins; ARG values are visible to
//!   RUN (as environment) but never stored in the image config.
//! - RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK/ONBUILD/MAINTAINER are never
//!   expanded (the container's shell does it); ENV values are expanded with
//!   the environment *before* the instruction (`ENV A=1 B=$A` gives B the old
//!   A); ARG defaults one after the other; EXPOSE splits into words.
//! - Cache keys: a RUN depends on every ARG value in its environment; other
//!   steps only on the ARGs their words referenced. The proxy args
//!   (`HTTP_PROXY`...) reach RUN without being declared and stay out of both.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::dockerfile::{Command, Copy, CopySource, Dockerfile, Instruction, Stage};
use crate::shell_words::{Expanded, Lexer, Vars, WordError};

/// Build args BuildKit passes to RUN without an `ARG`, and keeps out of the
/// cache key and history.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The automatic platform args of the global scope.
pub const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// An OCI platform (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The machine berth runs on, in OCI's names.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let arch = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            os: os.to_string(),
            arch: arch.to_string(),
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What the user gave: `--build-arg`s and the platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    pub values: BTreeMap<String, String>,
    pub build_platform: Platform,
    pub target_platform: Platform,
}

impl BuildArgs {
    /// Build args for a native build on this host.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        BuildArgs {
            values,
            build_platform: Platform::host(),
            target_platform: Platform::host(),
        }
    }

    fn platform_values(&self) -> Vec<(&'static str, String)> {
        let (b, t) = (&self.build_platform, &self.target_platform);
        vec![
            ("BUILDPLATFORM", b.to_string()),
            ("BUILDOS", b.os.clone()),
            ("BUILDARCH", b.arch.clone()),
            ("BUILDVARIANT", b.variant.clone().unwrap_or_default()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETARCH", t.arch.clone()),
            ("TARGETVARIANT", t.variant.clone().unwrap_or_default()),
        ]
    }
}

/// A word that could not be expanded, with its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct ExpandError {
    pub line: usize,
    #[source]
    pub error: WordError,
}

/// The scope of `FROM` lines: global ARGs, build args and platform args.
#[derive(Debug, Clone)]
pub struct GlobalScope {
    lexer: Lexer,
    args: BuildArgs,
    /// Global variables that have a value (platform args included).
    values: BTreeMap<String, String>,
    /// Names declared by global ARGs (whether or not they got a value).
    declared: BTreeSet<String>,
}

/// A `FROM` with its words expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedFrom {
    pub image: String,
    pub platform: Option<String>,
    /// Global args the line referenced, with their values.
    pub build_args: BTreeMap<String, String>,
}

impl GlobalScope {
    /// Evaluates the global ARGs of `df` in order.
    pub fn new(df: &Dockerfile, args: &BuildArgs) -> Result<Self, ExpandError> {
        let mut values: BTreeMap<String, String> = args
            .platform_values()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let lexer = Lexer::new(df.directives.escape);
        let mut declared = BTreeSet::new();
        for inst in &df.global_args {
            let Command::Arg(decls) = &inst.command else {
                continue;
            };
            for d in decls {
                declared.insert(d.name.clone());
                let value = match (args.values.get(&d.name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => Some(
                        lexer
                            .process_word(def, &values)
                            .map_err(|error| ExpandError {
                                line: inst.line,
                                error,
                            })?
                            .value,
                    ),
                    (None, None) => None,
                };
                match value {
                    Some(v) => {
                        values.insert(d.name.clone(), v);
                    }
                    // A bare global ARG without a build arg is unset, even
                    // over a platform arg of the same name.
                    None => {
                        values.remove(&d.name);
                    }
                }
            }
        }
        Ok(GlobalScope {
            lexer,
            args: args.clone(),
            values,
            declared,
        })
    }

    /// The value a bare `ARG name` in a stage inherits, if any.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// True when a global `ARG` declares `name` (with or without a value).
    pub fn declares(&self, name: &str) -> bool {
        self.declared.contains(name)
    }

    pub fn build_args(&self) -> &BuildArgs {
        &self.args
    }

    /// Expands a word of a `FROM` line (or a `--from` value) in this scope.
    pub fn expand_word(&self, word: &str, line: usize) -> Result<Expanded<String>, ExpandError> {
        self.lexer
            .process_word(word, &self.values)
            .map_err(|error| ExpandError { line, error })
    }

    /// The stage's `FROM` with build args substituted.
    pub fn expand_from(&self, stage: &Stage) -> Result<ExpandedFrom, ExpandError> {
        let line = stage.from.line;
        let image = self.expand_word(stage.base(), line)?;
        let mut used = image.matched.clone();
        let platform = match stage.platform() {
            Some(p) => {
                let e = self.expand_word(p, line)?;
                used.extend(e.matched);
                Some(e.value)
            }
            None => None,
        };
        Ok(ExpandedFrom {
            image: image.value,
            platform,
            build_args: used
                .into_iter()
                .filter_map(|k| self.values.get(&k).map(|v| (k, v.clone())))
                .collect(),
        })
    }
}

/// Where a variable's current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Env,
    Arg,
}

/// The variables of one stage as its instructions run.
#[derive(Debug, Clone)]
pub struct StageScope<'g> {
    global: &'g GlobalScope,
    lexer: Lexer,
    /// The image config's Env, in order.
    env: Vec<(String, String)>,
    /// What expansion and RUN see: last setter wins.
    vars: BTreeMap<String, (String, Origin)>,
    /// ARGs declared so far in this stage (value `None`: declared, unset).
    declared: Vec<(String, Option<String>)>,
}

struct ScopeVars<'a>(&'a BTreeMap<String, (String, Origin)>);

impl Vars for ScopeVars<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|(v, _)| v.as_str())
    }
}

/// Expands one word, recording the variables it used.
type WordFn<'a> = dyn Fn(&str, &mut BTreeSet<String>) -> Result<String, ExpandError> + 'a;

/// An instruction with its words expanded, and what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The instruction with expanded words (RUN & co. unchanged).
    pub instruction: Instruction,
    /// Build args this step depends on, with values: part of its cache key.
    pub build_args: BTreeMap<String, String>,
}

impl<'g> StageScope<'g> {
    /// A stage starting from a base image whose config has `base_env`
    /// (`KEY=VALUE` strings).
    pub fn new(global: &'g GlobalScope, base_env: &[String]) -> Self {
        let mut scope = StageScope {
            global,
            lexer: global.lexer,
            env: Vec::new(),
            vars: BTreeMap::new(),
            declared: Vec::new(),
        };
        for kv in base_env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            scope.set_env(k, v);
        }
        scope
    }

    fn set_env(&mut self, key: &str, value: &str) {
        // Docker replaces a variable in place, keeping the order of first definition.
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
        self.vars
            .insert(key.to_string(), (value.to_string(), Origin::Env));
    }

    /// The image config's Env after the steps so far.
    pub fn env(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The environment a RUN gets: the config env with ARG values on top
    /// (not recorded in the image), plus proxy build args.
    pub fn run_env(&self) -> Vec<String> {
        let mut out: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, _)| {
                (
                    k.clone(),
                    self.vars.get(k).map(|(v, _)| v.clone()).unwrap_or_default(),
                )
            })
            .collect();
        for (k, (v, origin)) in &self.vars {
            if *origin == Origin::Arg && !self.env.iter().any(|(ek, _)| ek == k) {
                out.push((k.clone(), v.clone()));
            }
        }
        for p in PROXY_ARGS {
            if let Some(v) = self.global.args.values.get(*p)
                && !out.iter().any(|(k, _)| k == p)
            {
                out.push((p.to_string(), v.clone()));
            }
        }
        out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// ARGs declared in the stage so far, with their values (for history).
    pub fn declared_args(&self) -> &[(String, Option<String>)] {
        &self.declared
    }

    /// The ARG values a RUN depends on now.
    fn arg_values(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .filter(|(_, (_, o))| *o == Origin::Arg)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Expands `inst` in the current scope and applies its effect on the
    /// scope (ENV, ARG); returns the expanded instruction and the build args
    /// it used.
    pub fn step(&mut self, inst: &Instruction) -> Result<Step, ExpandError> {
        let line = inst.line;
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut out = inst.clone();
        let lexer = self.lexer;
        let vars = self.vars.clone();
        let word = |w: &str, used: &mut BTreeSet<String>| -> Result<String, ExpandError> {
            let e = lexer
                .process_word(w, &ScopeVars(&vars))
                .map_err(|error| ExpandError { line, error })?;
            used.extend(e.matched);
            Ok(e.value)
        };
        let mut build_args = BTreeMap::new();
        match &mut out.command {
            Command::Env(pairs) => {
                // All pairs see the environment from before the instruction.
                for kv in pairs.iter_mut() {
                    kv.key = word(&kv.key, &mut used)?;
                    kv.value = word(&kv.value, &mut used)?;
                }
                for kv in pairs.iter() {
                    self.set_env(&kv.key, &kv.value);
                }
            }
            Command::Label(pairs) => {
                for kv in pairs.iter_mut() {
                    kv.key = word(&kv.key, &mut used)?;
                    kv.value = word(&kv.value, &mut used)?;
                }
            }
            Command::Arg(decls) => {
                for d in decls.iter_mut() {
                    let value = self.arg_value(&d.name, d.default.as_deref(), line, &mut used)?;
                    if let Some(v) = &value {
                        self.vars.insert(d.name.clone(), (v.clone(), Origin::Arg));
                        build_args.insert(d.name.clone(), v.clone());
                    }
                    d.default = value.clone();
                    self.declared.push((d.name.clone(), value));
                }
            }
            Command::Expose(ports) => {
                let mut words = Vec::new();
                for p in ports.iter() {
                    let e = lexer
                        .process_words(p, &ScopeVars(&vars))
                        .map_err(|error| ExpandError { line, error })?;
                    used.extend(e.matched);
                    words.extend(e.value);
                }
                *ports = words;
            }
            Command::Volume(vols) => {
                for v in vols.iter_mut() {
                    *v = word(v, &mut used)?;
                }
            }
            Command::Workdir(w) | Command::User(w) | Command::StopSignal(w) => {
                *w = word(w, &mut used)?
            }
            Command::Add(c) | Command::Copy(c) => self.expand_copy(c, &word, &mut used, line)?,
            Command::Run(r) => {
                for m in r.mounts.iter_mut() {
                    for v in [&mut m.target, &mut m.source, &mut m.from, &mut m.id]
                        .into_iter()
                        .flatten()
                    {
                        *v = word(v, &mut used)?;
                    }
                }
                // Every ARG value is in the RUN's environment.
                build_args.extend(self.arg_values());
            }
            Command::From(_)
            | Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Healthcheck(_)
            | Command::Shell(_)
            | Command::Onbuild(_)
            | Command::Maintainer(_) => {}
        }
        for name in used {
            if let Some((v, Origin::Arg)) = vars.get(&name) {
                build_args.insert(name, v.clone());
            }
        }
        Ok(Step {
            instruction: out,
            build_args,
        })
    }

    fn arg_value(
        &self,
        name: &str,
        default: Option<&str>,
        line: usize,
        used: &mut BTreeSet<String>,
    ) -> Result<Option<String>, ExpandError> {
        if let Some(v) = self.global.args.values.get(name) {
            return Ok(Some(v.clone()));
        }
        match default {
            Some(def) => {
                let e = self
                    .lexer
                    .process_word(def, &ScopeVars(&self.vars))
                    .map_err(|error| ExpandError { line, error })?;
                used.extend(e.matched);
                Ok(Some(e.value))
            }
            // A bare ARG inherits the global value (default or build arg).
            None => Ok(self.global.value(name).map(str::to_string)),
        }
    }

    fn expand_copy(
        &self,
        c: &mut Copy,
        word: &WordFn<'_>,
        used: &mut BTreeSet<String>,
        line: usize,
    ) -> Result<(), ExpandError> {
        for s in c.sources.iter_mut() {
            match s {
                CopySource::Path(p) => *p = word(p, used)?,
                CopySource::Heredoc(h) if h.expand => {
                    // Heredoc bodies expand variables but keep their quotes.
                    let mut lex = self.lexer;
                    lex.skip_quotes = true;
                    let e = lex
                        .process_word(&h.content, &ScopeVars(&self.vars))
                        .map_err(|error| ExpandError { line, error })?;
                    used.extend(e.matched);
                    h.content = e.value;
                }
                CopySource::Heredoc(_) => {}
            }
        }
        c.dest = word(&c.dest, used)?;
        for v in [&mut c.chown, &mut c.chmod, &mut c.from]
            .into_iter()
            .flatten()
        {
            *v = word(v, used)?;
        }
        Ok(())
    }
}

/// Expands every instruction of `stage` from a base with `base_env`.
pub fn expand_stage(
    global: &GlobalScope,
    stage: &Stage,
    base_env: &[String],
) -> Result<Vec<Step>, ExpandError> {
    let mut scope = StageScope::new(global, base_env);
    stage.instructions.iter().map(|i| scope.step(i)).collect()
}

/// Build args that no ARG declares anywhere (Docker warns "One or more
/// build-args [...] were not consumed"). Proxy args are always consumed.
pub fn unconsumed_build_args(df: &Dockerfile, args: &BuildArgs) -> Vec<String> {
    let mut declared: BTreeSet<&str> = PROXY_ARGS.iter().copied().collect();
    let all = df
        .global_args
        .iter()
        .chain(df.stages.iter().flat_map(|s| s.instructions.iter()));
    for inst in all {
        if let Command::Arg(decls) = &inst.command {
            declared.extend(decls.iter().map(|d| d.name.as_str()));
        }
    }
    args.values
        .keys()
        .filter(|k| !declared.contains(k.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{CommandLine, parse};

    fn args(kv: &[(&str, &str)]) -> BuildArgs {
        let mut a = BuildArgs::new(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        a.build_platform = Platform::parse("linux/amd64").unwrap();
        a.target_platform = Platform::parse("linux/arm64/v8").unwrap();
        a
    }

    fn steps(text: &str, build_args: &[(&str, &str)], base_env: &[&str]) -> Vec<Step> {
        let df = parse(text).unwrap();
        let a = args(build_args);
        let g = GlobalScope::new(&df, &a).unwrap();
        let env: Vec<String> = base_env.iter().map(|s| s.to_string()).collect();
        expand_stage(&g, df.stages.last().unwrap(), &env).unwrap()
    }

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_lines_use_global_args() {
        let df = parse(
            "ARG BASE=debian\nARG TAG\nARG V=${BASE}-x\nFROM ${BASE}:${TAG:-bookworm} AS a\nFROM --platform=$BUILDPLATFORM busybox:$V\nFROM $TARGETARCH/img\n",
        )
        .unwrap();
        let g = GlobalScope::new(&df, &args(&[])).unwrap();
        let f = g.expand_from(&df.stages[0]).unwrap();
        assert_eq!(f.image, "debian:bookworm");
        assert_eq!(f.build_args, map(&[("BASE", "debian")]));
        assert!(g.declares("TAG") && !g.declares("TARGETARCH"));
        let f = g.expand_from(&df.stages[1]).unwrap();
        assert_eq!(f.image, "busybox:debian-x");
        assert_eq!(f.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(g.expand_from(&df.stages[2]).unwrap().image, "arm64/img");
        // Build args override defaults, and reach dependent defaults.
        let g = GlobalScope::new(&df, &args(&[("BASE", "ubuntu"), ("TAG", "24.04")])).unwrap();
        assert_eq!(g.expand_from(&df.stages[0]).unwrap().image, "ubuntu:24.04");
        assert_eq!(
            g.expand_from(&df.stages[1]).unwrap().image,
            "busybox:ubuntu-x"
        );
    }

    #[test]
    fn global_args_invisible_in_stage_until_redeclared() {
        let s = steps(
            "ARG G=global\nARG P\nFROM scratch\nENV A=[$G]\nARG G\nENV B=[$G]\nARG P\nENV C=[$P]\nARG TARGETOS\nENV D=$TARGETOS\n",
            &[("P", "fromcli")],
            &[],
        );
        let envs: Vec<String> = s
            .iter()
            .filter_map(|st| match &st.instruction.command {
                Command::Env(kv) => Some(format!("{}={}", kv[0].key, kv[0].value)),
                _ => None,
            })
            .collect();
        assert_eq!(envs, ["A=[]", "B=[global]", "C=[fromcli]", "D=linux"]);
    }

    #[test]
    fn env_uses_previous_environment_and_base_env() {
        let s = steps(
            "FROM scratch\nENV A=1 B=$A\nENV C=$A PATH=/x:$PATH\n",
            &[],
            &["PATH=/usr/bin", "A=base"],
        );
        let Command::Env(kv) = &s[0].instruction.command else {
            panic!()
        };
        assert_eq!((kv[1].key.as_str(), kv[1].value.as_str()), ("B", "base"));
        let Command::Env(kv) = &s[1].instruction.command else {
            panic!()
        };
        assert_eq!(kv[0].value, "1");
        assert_eq!(kv[1].value, "/x:/usr/bin");
        assert!(s.iter().all(|st| st.build_args.is_empty()));
    }

    #[test]
    fn which_instructions_expand() {
        let s = steps(
            "FROM scratch\nARG D=/data P=\"80 443\" U=app N=none\nRUN echo $D\nCMD echo $D\nENTRYPOINT [\"$D\"]\nWORKDIR $D\nUSER ${U}:${U}\nVOLUME $D [\"x\"]\nEXPOSE $P 8080/udp\nSTOPSIGNAL SIG${N:+TERM}\nLABEL \"k $U\"=\"v $U\"\nCOPY --chown=$U:$U --from=${N} $D/a* '$D/lit' $D/\nHEALTHCHECK CMD echo $D\nONBUILD RUN echo $D\nSHELL [\"$D\"]\nMAINTAINER $U\n",
            &[],
            &[],
        );
        let c = |i: usize| &s[i].instruction.command;
        let Command::Run(r) = c(1) else { panic!() };
        assert_eq!(r.command, CommandLine::Shell("echo $D".into()));
        assert_eq!(c(2), &Command::Cmd(CommandLine::Shell("echo $D".into())));
        assert_eq!(
            c(3),
            &Command::Entrypoint(CommandLine::Exec(vec!["$D".into()]))
        );
        assert_eq!(c(4), &Command::Workdir("/data".into()));
        assert_eq!(c(5), &Command::User("app:app".into()));
        assert_eq!(c(6), &Command::Volume(vec!["/data".into(), "[x]".into()]));
        assert_eq!(
            c(7),
            &Command::Expose(vec!["80".into(), "443".into(), "8080/udp".into()])
        );
        assert_eq!(c(8), &Command::StopSignal("SIGTERM".into()));
        let Command::Label(kv) = c(9) else { panic!() };
        assert_eq!(
            (kv[0].key.as_str(), kv[0].value.as_str()),
            ("k app", "v app")
        );
        let Command::Copy(cp) = c(10) else { panic!() };
        assert_eq!(cp.paths().collect::<Vec<_>>(), ["/data/a*", "$D/lit"]);
        assert_eq!(cp.dest, "/data/");
        assert_eq!(cp.chown.as_deref(), Some("app:app"));
        assert_eq!(cp.from.as_deref(), Some("none"));
        let Command::Healthcheck(h) = c(11) else {
            panic!()
        };
        assert_eq!(h.test(), ["CMD-SHELL", "echo $D"]);
        let Command::Onbuild(o) = c(12) else { panic!() };
        assert_eq!(o.expression, "RUN echo $D");
        assert_eq!(c(13), &Command::Shell(vec!["$D".into()]));
        assert_eq!(c(14), &Command::Maintainer("$U".into()));
    }

    #[test]
    fn build_args_used_per_step() {
        let s = steps(
            "FROM scratch\nARG A=1 B\nARG C=3\nENV E=$A\nCOPY $C /x\nRUN true\nLABEL l=$E\nENV A=shadow\nRUN true\nCOPY $A /y\n",
            &[("B", "2"), ("HTTP_PROXY", "http://proxy")],
            &[],
        );
        assert_eq!(s[0].build_args, map(&[("A", "1"), ("B", "2")]));
        assert_eq!(s[2].build_args, map(&[("A", "1")])); // ENV E=$A
        assert_eq!(s[3].build_args, map(&[("C", "3")])); // COPY $C
        assert_eq!(s[4].build_args, map(&[("A", "1"), ("B", "2"), ("C", "3")])); // RUN: all
        assert_eq!(s[5].build_args, map(&[])); // LABEL l=$E: ENV, not an arg
        // ENV after ARG shadows it: A is no longer an arg value.
        assert_eq!(s[7].build_args, map(&[("B", "2"), ("C", "3")]));
        assert_eq!(s[8].build_args, map(&[]));
        let Command::Copy(c) = &s[8].instruction.command else {
            panic!()
        };
        assert_eq!(c.paths().collect::<Vec<_>>(), ["shadow"]);
    }

    #[test]
    fn arg_after_env_wins_for_run_but_not_config() {
        let df = parse("FROM scratch\nENV V=env\nARG V=arg\nRUN true\n").unwrap();
        let a = args(&[("HTTP_PROXY", "http://p")]);
        let g = GlobalScope::new(&df, &a).unwrap();
        let mut scope = StageScope::new(&g, &["PATH=/bin".to_string()]);
        for i in &df.stages[0].instructions {
            scope.step(i).unwrap();
        }
        assert_eq!(scope.env(), ["PATH=/bin", "V=env"]);
        assert_eq!(
            scope.run_env(),
            ["PATH=/bin", "V=arg", "HTTP_PROXY=http://p"]
        );
        assert_eq!(
            scope.declared_args(),
            [("V".to_string(), Some("arg".to_string()))]
        );
    }

    #[test]
    fn arg_defaults_expand_in_order_and_errors_have_lines() {
        let s = steps("FROM scratch\nARG A=x B=${A}y\nRUN true\n", &[], &[]);
        assert_eq!(s[1].build_args, map(&[("A", "x"), ("B", "xy")]));
        let df = parse("FROM scratch\nENV A=1\nWORKDIR ${NOPE:?must be set}\n").unwrap();
        let g = GlobalScope::new(&df, &args(&[])).unwrap();
        let e = expand_stage(&g, &df.stages[0], &[]).unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            e.to_string(),
            "line 3: failed to process \"${NOPE:?must be set}\": NOPE: must be set"
        );
    }

    #[test]
    fn copy_heredoc_bodies_expand_unless_quoted() {
        let s = steps(
            "FROM scratch\nARG N=world\nCOPY <<EOF <<\"RAW\" /d/\nhello \"$N\"\nEOF\nraw $N\nRAW\n",
            &[],
            &[],
        );
        let Command::Copy(c) = &s[1].instruction.command else {
            panic!()
        };
        let bodies: Vec<&str> = c
            .sources
            .iter()
            .map(|s| match s {
                CopySource::Heredoc(h) => h.content.as_str(),
                CopySource::Path(p) => p.as_str(),
            })
            .collect();
        assert_eq!(bodies, ["hello \"world\"\n", "raw $N\n"]);
        assert_eq!(s[1].build_args, map(&[("N", "world")]));
    }

    #[test]
    fn unconsumed() {
        let df = parse("ARG G\nFROM scratch\nARG S\n").unwrap();
        let a = args(&[("G", "1"), ("S", "2"), ("X", "3"), ("no_proxy", "x")]);
        assert_eq!(unconsumed_build_args(&df, &a), ["X"]);
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("a/b/c/d").is_none());
        assert_eq!(Platform::host().os, "linux");
    }
}
