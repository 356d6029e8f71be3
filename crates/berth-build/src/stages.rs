//! The stage graph: what each stage builds on, which stages `--target`
//! needs, and in which order (waves of stages that may build concurrently).
//!
//! A stage depends on the stage its `FROM` names (an earlier stage, as Docker
//! documents; stage names are case-insensitive), and on stages named by
//! `COPY --from=<name|index>` and `RUN --mount=...,from=<name|index>`. A
//! `--from` that names no stage is an image reference, as in BuildKit; one
//! that is neither is refused here rather than failing later as a pull.
//! `--from` values are expanded with the global scope (global ARGs, build
//! args, platform args) so the graph is known before anything runs.

use std::collections::{BTreeMap, BTreeSet};

use crate::dockerfile::{Command, Dockerfile};
use crate::expand::{ExpandError, GlobalScope};

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference (expanded, not normalised).
    Image(String),
}

/// One stage in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageNode {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform`, expanded.
    pub platform: Option<String>,
    /// Stages this one needs (base included).
    pub deps: BTreeSet<usize>,
    /// Images used by `COPY --from` / `RUN --mount from=` (not the base).
    pub images: BTreeSet<String>,
    /// Global args the `FROM` line used.
    pub from_build_args: BTreeMap<String, String>,
}

/// The stages to build for a target, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    pub target: usize,
    /// Every needed stage, by index (others are skipped).
    pub stages: Vec<usize>,
    /// Topological waves: each stage's dependencies are in earlier waves, so
    /// the stages of one wave can build concurrently.
    pub waves: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("target stage {0:?} could not be found")]
    TargetNotFound(String),
    #[error("line {line}: duplicate stage name {name:?}")]
    DuplicateName { line: usize, name: String },
    #[error("line {line}: invalid stage index {index}")]
    BadIndex { line: usize, index: String },
    #[error(
        "line {line}: --from={name}: no stage has that name and it is not a valid image reference"
    )]
    MissingStage { line: usize, name: String },
    #[error("line {line}: invalid reference format {reference:?}")]
    BadBase { line: usize, reference: String },
    #[error("circular dependency detected on stage: {0}")]
    Cycle(String),
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

/// All stages of a Dockerfile and their dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageGraph {
    pub nodes: Vec<StageNode>,
}

impl StageGraph {
    pub fn new(df: &Dockerfile, global: &GlobalScope) -> Result<Self, StageError> {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for s in &df.stages {
            if let Some(n) = &s.name
                && names.insert(n.clone(), s.index).is_some()
            {
                return Err(StageError::DuplicateName {
                    line: s.from.line,
                    name: n.clone(),
                });
            }
        }
        let lookup = |name: &str| names.get(&name.to_ascii_lowercase()).copied();
        let mut nodes = Vec::new();
        for s in &df.stages {
            let from = global.expand_from(s)?;
            let base = if from.image == "scratch" {
                Base::Scratch
            } else {
                match lookup(&from.image).filter(|&i| i < s.index) {
                    Some(i) => Base::Stage(i),
                    None if valid_reference(&from.image) => Base::Image(from.image.clone()),
                    None => {
                        return Err(StageError::BadBase {
                            line: s.from.line,
                            reference: from.image,
                        });
                    }
                }
            };
            let mut node = StageNode {
                index: s.index,
                name: s.name.clone(),
                base: base.clone(),
                platform: from.platform,
                deps: BTreeSet::new(),
                images: BTreeSet::new(),
                from_build_args: from.build_args,
            };
            if let Base::Stage(i) = base {
                node.deps.insert(i);
            }
            for inst in &s.instructions {
                let froms: Vec<&str> = match &inst.command {
                    Command::Copy(c) => c.from.iter().map(String::as_str).collect(),
                    Command::Run(r) => r.mounts.iter().filter_map(|m| m.from.as_deref()).collect(),
                    _ => Vec::new(),
                };
                for raw in froms {
                    let name = global.expand_word(raw, inst.line)?.value;
                    if name.is_empty() {
                        continue;
                    }
                    if let Ok(index) = name.parse::<i64>() {
                        match usize::try_from(index).ok().filter(|&i| i < df.stages.len()) {
                            Some(i) => node.deps.insert(i),
                            None => {
                                return Err(StageError::BadIndex {
                                    line: inst.line,
                                    index: name,
                                });
                            }
                        };
                    } else if let Some(i) = lookup(&name) {
                        node.deps.insert(i);
                    } else if valid_reference(&name) {
                        node.images.insert(name);
                    } else {
                        return Err(StageError::MissingStage {
                            line: inst.line,
                            name,
                        });
                    }
                }
            }
            nodes.push(node);
        }
        let graph = StageGraph { nodes };
        // Every stage, needed or not, must be acyclic (as BuildKit checks).
        graph.waves(&(0..graph.nodes.len()).collect::<Vec<_>>())?;
        Ok(graph)
    }

    /// The stage called `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.nodes
            .iter()
            .position(|n| n.name.as_deref() == Some(lower.as_str()))
    }

    /// What building `target` (default: the last stage) takes.
    pub fn plan(&self, target: Option<&str>) -> Result<BuildPlan, StageError> {
        let target = match target {
            None => self.nodes.len() - 1,
            Some(t) => self
                .find(t)
                .ok_or_else(|| StageError::TargetNotFound(t.to_string()))?,
        };
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(self.nodes[i].deps.iter().copied());
            }
        }
        let stages: Vec<usize> = needed.into_iter().collect();
        let waves = self.waves(&stages)?;
        Ok(BuildPlan {
            target,
            stages,
            waves,
        })
    }

    fn waves(&self, stages: &[usize]) -> Result<Vec<Vec<usize>>, StageError> {
        let mut done: BTreeSet<usize> = BTreeSet::new();
        let mut left: Vec<usize> = stages.to_vec();
        let mut waves = Vec::new();
        while !left.is_empty() {
            let (ready, rest): (Vec<usize>, Vec<usize>) = left
                .iter()
                .partition(|&&i| self.nodes[i].deps.iter().all(|d| done.contains(d)));
            if ready.is_empty() {
                let i = rest[0];
                let name = self.nodes[i]
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{i}"));
                return Err(StageError::Cycle(name));
            }
            done.extend(ready.iter().copied());
            waves.push(ready);
            left = rest;
        }
        Ok(waves)
    }
}

/// Is `s` a valid image reference (distribution's grammar)? Uppercase is
/// refused in the repository path, as Docker does.
pub fn valid_reference(s: &str) -> bool {
    if s.is_empty() || (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())) {
        return false;
    }
    let (rest, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return false;
        };
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag follows the last ':' unless a '/' comes after it (then it is a port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let mut b = t.bytes();
        let first_ok = b
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !first_ok
            || t.len() > 128
            || !b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return false;
        }
    }
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if parts.len() > 1
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()))
    {
        if !valid_domain(first) {
            return false;
        }
        parts.remove(0);
    }
    !parts.is_empty() && parts.iter().all(|p| valid_path_component(p))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') {
        return host.ends_with(']') && host.len() > 2;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;
    use crate::expand::BuildArgs;

    fn graph(text: &str) -> Result<StageGraph, StageError> {
        graph_with(text, &[])
    }

    fn graph_with(text: &str, args: &[(&str, &str)]) -> Result<StageGraph, StageError> {
        let df = parse(text).unwrap();
        let a = BuildArgs::new(
            args.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let g = GlobalScope::new(&df, &a).unwrap();
        StageGraph::new(&df, &g)
    }

    const MULTI: &str = "\
FROM debian AS base
RUN setup
FROM base AS deps
RUN install
FROM golang AS tools
RUN build tools
FROM scratch AS unused
COPY --from=nginx:1 /etc/nginx /x
FROM base AS Final
COPY --from=DEPS /d /d
COPY --from=2 /t /t
RUN --mount=type=bind,from=tools,target=/m true
";

    #[test]
    fn bases_and_deps() {
        let g = graph(MULTI).unwrap();
        assert_eq!(g.nodes[0].base, Base::Image("debian".into()));
        assert_eq!(g.nodes[1].base, Base::Stage(0));
        assert_eq!(g.nodes[3].base, Base::Scratch);
        assert_eq!(g.nodes[3].images, BTreeSet::from(["nginx:1".to_string()]));
        assert_eq!(g.nodes[4].deps, BTreeSet::from([0, 1, 2]));
        assert_eq!(g.find("final"), Some(4));
        assert_eq!(g.find("FINAL"), Some(4));
    }

    #[test]
    fn plans_skip_unneeded_and_group_waves() {
        let g = graph(MULTI).unwrap();
        let p = g.plan(None).unwrap();
        assert_eq!(p.target, 4);
        assert_eq!(p.stages, [0, 1, 2, 4]);
        assert_eq!(p.waves, [vec![0, 2], vec![1], vec![4]]);
        let p = g.plan(Some("Deps")).unwrap();
        assert_eq!(p.stages, [0, 1]);
        assert_eq!(p.waves, [vec![0], vec![1]]);
        let p = g.plan(Some("unused")).unwrap();
        assert_eq!(p.waves, [vec![3]]);
        assert_eq!(
            g.plan(Some("nope")),
            Err(StageError::TargetNotFound("nope".into()))
        );
        assert_eq!(
            g.plan(Some("nope")).unwrap_err().to_string(),
            "target stage \"nope\" could not be found"
        );
    }

    #[test]
    fn from_uses_build_args_and_only_earlier_stages() {
        let g = graph_with("ARG B=base\nFROM alpine AS base\nFROM ${B}\n", &[]).unwrap();
        assert_eq!(g.nodes[1].base, Base::Stage(0));
        assert_eq!(
            g.nodes[1].from_build_args.get("B").map(String::as_str),
            Some("base")
        );
        let g = graph_with(
            "ARG B=base\nFROM alpine AS base\nFROM ${B}\n",
            &[("B", "busybox")],
        )
        .unwrap();
        assert_eq!(g.nodes[1].base, Base::Image("busybox".into()));
        // `FROM alpine AS alpine` is the image, not itself.
        let g = graph("FROM alpine AS alpine\nRUN x\n").unwrap();
        assert_eq!(g.nodes[0].base, Base::Image("alpine".into()));
    }

    #[test]
    fn errors() {
        let e = |t: &str| graph(t).unwrap_err().to_string();
        assert_eq!(
            e("FROM a AS x\nFROM b AS X\n"),
            "line 2: duplicate stage name \"x\""
        );
        assert_eq!(
            e("FROM a\nCOPY --from=5 /a /b\n"),
            "line 2: invalid stage index 5"
        );
        assert_eq!(
            e("FROM a\nCOPY --from=-1 /a /b\n"),
            "line 2: invalid stage index -1"
        );
        assert_eq!(
            e("FROM a\nCOPY --from=Not/Valid! /a /b\n"),
            "line 2: --from=Not/Valid!: no stage has that name and it is not a valid image reference"
        );
        assert_eq!(
            e("FROM a AS one\nCOPY --from=one /a /b\n"),
            "circular dependency detected on stage: one"
        );
        assert_eq!(
            e("FROM a AS x\nCOPY --from=y /a /b\nFROM b AS y\nCOPY --from=x /a /b\n"),
            "circular dependency detected on stage: x"
        );
        assert_eq!(
            e("FROM UPPER\n"),
            "line 1: invalid reference format \"UPPER\""
        );
        assert!(matches!(
            graph("ARG X\nFROM ${X:?}\n"),
            Err(StageError::Expand(_))
        ));
        // An index copy from an earlier stage is fine; a forward name too.
        assert!(graph("FROM a\nFROM b\nCOPY --from=0 /a /b\n").is_ok());
        assert!(graph("FROM a\nCOPY --from=later /a /b\nFROM b AS later\n").is_ok());
    }

    #[test]
    fn reference_grammar() {
        for ok in [
            "busybox",
            "library/busybox:1.36",
            "docker.io/library/debian:bookworm",
            "localhost:5000/a/b:tag",
            "registry.example.com/x_y/z-w.q:v1.0-rc_1",
            "Registry.Example.com/x",
            "[::1]:5000/x",
            "a__b",
            "a---b",
            "name@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "UPPER",
            "a/UPPER",
            "-a",
            "a-",
            "a..b",
            "a:",
            "a:-tag",
            "a/b:t/c",
            "name@sha256:short",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a b",
            "a/",
        ] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }
}
