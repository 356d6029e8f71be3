//! The builder behind `berth build`: runs the steps the frontend
//! (`berth-build`) describes against the image store and the runtime.
//!
//! Each stage starts from an image in the store, `scratch` or an earlier
//! stage. Config-only steps change the config and add an `empty_layer`
//! history entry; COPY/ADD write a layer straight from the resolved source
//! entries; RUN runs in a container whose root is the current snapshots plus
//! a fresh upper directory, which then becomes the layer. Every layer goes
//! through the store's [`Ingest`] and is recorded (retained) as soon as its
//! step finishes, so a failed build tags nothing but leaves the finished
//! steps cached; the failing step leaves nothing. Steps are cached by key
//! (see [`cache::key`]).

/// `writeln!` in one write: lines of stages building at the same time
/// (forked children sharing the output) never interleave.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        $out.write_all(line.as_bytes())
    }};
}

mod cache;
mod layer;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_build::context::{BuildContext, CopyRequest};
use berth_build::dockerfile::{
    Command, CommandLine, Copy, CopySource, Instruction, Run, RunScript,
};
use berth_build::expand::{BuildArgs, GlobalScope, StageScope};
use berth_build::stages::{Base, StageGraph};
use berth_image::snapshot::chain_id;
use berth_image::{Digest, ImageError, Ingest, IngestedLayer, Reference, media, rfc3339};
use serde_json::{Map, Value, json};

use crate::Engine;
use crate::spec::{self, RunOptions};
use layer::{LayerWriter, LowerView, StagedLayer};

/// What `berth build` asks for.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// `-f` (default `<context>/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// `-t`.
    pub tags: Vec<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--label` (on the final image).
    pub labels: Vec<(String, String)>,
    /// `-q`: RUN output is discarded.
    pub quiet: bool,
    /// `--pull`: pull every base image, even one in the store. Without it,
    /// only images missing from the store are pulled (Docker's behaviour).
    pub pull: bool,
    /// TTY progress: RUN output is folded (kept back, shown only when the
    /// step fails) instead of streamed.
    pub folded: bool,
}

/// A failed build; the message names the file, line and step at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A RUN step exited non-zero.
    #[error("{0}")]
    Run(String, i32),
}

fn fail(msg: impl Into<String>) -> BuildError {
    BuildError::Failed(msg.into())
}

/// A stage's image as the steps so far left it.
#[derive(Clone)]
struct State {
    /// The image config's `config` object.
    config: Map<String, Value>,
    author: Option<String>,
    layers: Vec<IngestedLayer>,
    history: Vec<Value>,
    /// Cache key of the last step (or the base).
    key: String,
}

impl State {
    fn lowers(&self, e: &Engine) -> Vec<PathBuf> {
        self.layers
            .iter()
            .rev()
            .map(|l| e.images().snapshots().path(&l.record.chain_id))
            .collect()
    }

    fn view(&self, e: &Engine) -> LowerView {
        LowerView(self.lowers(e))
    }

    fn str(&self, k: &str) -> Option<String> {
        self.config
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn workdir(&self) -> String {
        self.str("WorkingDir")
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn shell(&self) -> Vec<String> {
        match self.config.get("Shell").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }
}

/// A stage built in a forked child, as it sends it back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Forked {
    config: Map<String, Value>,
    author: Option<String>,
    layers: Vec<berth_image::meta::LayerRecord>,
    history: Vec<Value>,
    key: String,
    /// Steps its base's ONBUILD triggers added.
    triggers: usize,
}

impl Forked {
    fn from(st: &State, triggers: usize) -> Self {
        Forked {
            config: st.config.clone(),
            author: st.author.clone(),
            layers: st.layers.iter().map(|l| l.record.clone()).collect(),
            history: st.history.clone(),
            key: st.key.clone(),
            triggers,
        }
    }

    fn into_state(self, ingest: &Ingest) -> State {
        State {
            config: self.config,
            author: self.author,
            layers: self
                .layers
                .iter()
                .map(|l| {
                    ingest.existing_layer(
                        (&l.digest, l.size),
                        &l.media_type,
                        &l.diff_id,
                        &l.chain_id,
                    )
                })
                .collect(),
            history: self.history,
            key: self.key,
        }
    }
}

/// Whether independent stages build at the same time (forked children);
/// `BERTH_BUILD_CONCURRENT=0` builds them one after another.
fn concurrent_stages() -> bool {
    std::env::var("BERTH_BUILD_CONCURRENT").map_or(true, |v| v != "0")
}

/// Removes a directory tree when dropped (the RUN scratch space).
struct TempTree(PathBuf);

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A read-only overlay of a stage's snapshots, unmounted when dropped.
struct Merged {
    path: PathBuf,
    mounted: bool,
    _tree: Option<TempTree>,
}

impl Drop for Merged {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

struct Builder<'a> {
    engine: &'a Engine,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    dockerfile: String,
    ctx: BuildContext,
    ingest: Ingest,
    cache: cache::Cache,
    tmp: PathBuf,
    step_no: usize,
    total: usize,
    /// Images pulled by this build (each is pulled once).
    pulled: std::collections::HashSet<String>,
}

impl Engine {
    /// Builds an image; progress goes to `out`. Returns the image ID.
    pub fn build(&self, opts: &BuildOptions, out: &mut dyn Write) -> Result<Digest, BuildError> {
        let dockerfile = opts
            .dockerfile
            .clone()
            .unwrap_or_else(|| opts.context.join("Dockerfile"));
        let dname = dockerfile.display().to_string();
        let text = fs::read_to_string(&dockerfile)
            .map_err(|e| fail(format!("failed to read dockerfile {dname}: {e}")))?;
        let df = berth_build::parse(&text).map_err(|e| fail(format!("{dname}:{}: {e}", e.line)))?;
        let tags = opts
            .tags
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ImageError::from)?;
        let ctx = BuildContext::open(&opts.context, Some(&dockerfile))
            .map_err(|e| fail(format!("build context: {e}")))?;
        let args = BuildArgs::new(opts.build_args.clone());
        let global = GlobalScope::new(&df, &args).map_err(|e| fail(format!("{dname}:{e}")))?;
        let graph = StageGraph::new(&df, &global).map_err(|e| fail(format!("{dname}: {e}")))?;
        let plan = graph
            .plan(opts.target.as_deref())
            .map_err(|e| fail(format!("{dname}: {e}")))?;
        let total = plan
            .stages
            .iter()
            .map(|&i| 1 + df.stages[i].instructions.len())
            .sum();
        let tmp = self.root().join("build-tmp");
        fs::create_dir_all(&tmp).map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        let mut b = Builder {
            engine: self,
            opts,
            out,
            dockerfile: dname,
            ctx,
            ingest: self.images().ingest()?,
            cache: cache::Cache::open(self.root()),
            tmp,
            step_no: 0,
            total,
            pulled: Default::default(),
        };
        let started = Instant::now();
        let mut done: HashMap<usize, State> = HashMap::new();
        let steps = |i: usize| 1 + df.stages[i].instructions.len();
        for wave in &plan.waves {
            // Missing bases are pulled here, before any fork: the registry
            // client's threads are gone again when stages fork or spawn.
            for &i in wave {
                if let Base::Image(r) = &graph.nodes[i].base {
                    let from = &df.stages[i].from;
                    b.ensure_image(r)
                        .map_err(|e| fail(format!("{}: FROM {r}: {e}", b.at(from))))?;
                }
            }
            let first = b.step_no;
            let mut offsets = Vec::new();
            let mut next = first;
            for &i in wave {
                offsets.push(next);
                next += steps(i);
            }
            if wave.len() == 1 || !concurrent_stages() {
                for &i in wave {
                    let st = b.stage(&df, &graph, &global, i, &done)?;
                    done.insert(i, st);
                }
            } else {
                for (i, st) in b.wave(&df, &graph, &global, wave, &offsets, &done)? {
                    done.insert(i, st);
                }
                b.step_no = next;
            }
        }
        let mut st = done.remove(&plan.target).expect("target built");
        if !opts.labels.is_empty() {
            let labels = st
                .config
                .entry("Labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if !labels.is_object() {
                *labels = Value::Object(Map::new());
            }
            for (k, v) in &opts.labels {
                labels[k] = Value::String(v.clone());
            }
        }
        let id = b.commit(st, &tags)?;
        say!(
            b.out,
            "#{} writing image {id} done ({:.1}s)",
            b.total + 1,
            started.elapsed().as_secs_f64()
        )
        .ok();
        for t in &tags {
            say!(b.out, "#{} naming to {t} done", b.total + 1).ok();
        }
        say!(b.out, "Successfully built {}", id.short()).ok();
        for t in &tags {
            say!(b.out, "Successfully tagged {}", t.familiar()).ok();
        }
        Ok(id)
    }
}

impl Builder<'_> {
    fn at(&self, inst: &Instruction) -> String {
        format!("{}:{}", self.dockerfile, inst.line)
    }

    fn header(&mut self, stage: &str, k: usize, n: usize, text: &str) {
        self.step_no += 1;
        let text = text.lines().next().unwrap_or_default().trim();
        say!(self.out, "#{} [{stage} {k}/{n}] {text}", self.step_no).ok();
    }

    fn stage(
        &mut self,
        df: &berth_build::Dockerfile,
        graph: &StageGraph,
        global: &GlobalScope,
        index: usize,
        done: &HashMap<usize, State>,
    ) -> Result<State, BuildError> {
        let stage = &df.stages[index];
        let node = &graph.nodes[index];
        let sname = stage.display_name();
        let mut n = 1 + stage.instructions.len();
        self.header(&sname, 1, n, &stage.from.original);
        let mut st = match &node.base {
            Base::Scratch => State {
                config: Map::new(),
                author: None,
                layers: Vec::new(),
                history: Vec::new(),
                key: "scratch".into(),
            },
            Base::Stage(i) => done.get(i).cloned().expect("stages build in order"),
            Base::Image(r) => {
                self.ensure_image(r)
                    .map_err(|e| fail(format!("{}: FROM {r}: {e}", self.at(&stage.from))))?;
                self.image_state(r)
                    .map_err(|e| fail(format!("{}: FROM {r}: {e}", self.at(&stage.from))))?
            }
        };
        // BuildKit gives every image a PATH.
        let mut env: Vec<String> = st
            .config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={}", berth_image::config::DEFAULT_PATH));
            st.config.insert("Env".into(), json!(env));
        }
        // The base's ONBUILD triggers run first, and are not inherited.
        let triggers = self.triggers(&mut st, &stage.from)?;
        n += triggers.len();
        self.total += triggers.len();
        let mut scope = StageScope::new(global, &env);
        let mut cmd_set = false;
        for (k, inst) in triggers.iter().chain(&stage.instructions).enumerate() {
            self.header(&sname, k + 2, n, &inst.original);
            let t0 = Instant::now();
            let step = scope
                .step(inst)
                .map_err(|e| fail(format!("{}: {}", self.dockerfile, e)))?;
            let cached = self.step(
                &mut st,
                &scope,
                &step.instruction,
                &step.build_args,
                done,
                graph,
                &mut cmd_set,
            )?;
            if cached == Some(true) {
                say!(self.out, "#{} CACHED", self.step_no).ok();
            } else if cached == Some(false) {
                say!(
                    self.out,
                    "#{} DONE {:.1}s",
                    self.step_no,
                    t0.elapsed().as_secs_f64()
                )
                .ok();
            }
        }
        Ok(st)
    }

    /// Takes the base's ONBUILD triggers out of its config, parsed.
    fn triggers(&self, st: &mut State, from: &Instruction) -> Result<Vec<Instruction>, BuildError> {
        let Some(list) = st.config.remove("OnBuild") else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for t in list.as_array().into_iter().flatten() {
            let Some(t) = t.as_str() else { continue };
            let bad = |e: String| {
                fail(format!(
                    "{}: ONBUILD trigger {t:?} of the base image: {e}",
                    self.at(from)
                ))
            };
            let df = berth_build::parse(&format!("FROM scratch\n{t}\n"))
                .map_err(|e| bad(e.to_string()))?;
            let Some(stage) = df.stages.into_iter().next() else {
                return Err(bad("not an instruction".into()));
            };
            for mut inst in stage.instructions {
                if matches!(
                    inst.command,
                    Command::Onbuild(_) | Command::From(_) | Command::Maintainer(_)
                ) {
                    return Err(bad(format!(
                        "{} is not allowed as an ONBUILD trigger",
                        inst.keyword()
                    )));
                }
                inst.line = from.line;
                out.push(inst);
            }
        }
        Ok(out)
    }

    /// Pulls `r` when it is not in the store, or (`--pull`) once per build.
    fn ensure_image(&mut self, r: &str) -> Result<(), String> {
        let missing = matches!(
            self.engine.images().resolve(r),
            Err(ImageError::NotFound(_))
        );
        if !missing && (!self.opts.pull || self.pulled.contains(r)) {
            return Ok(());
        }
        let Ok(reference) = Reference::parse(r) else {
            // Not a name a registry knows: the store lookup reports it.
            return Ok(());
        };
        let t0 = Instant::now();
        say!(self.out, "#{} pulling {reference}", self.step_no).ok();
        let pulled = self
            .engine
            .pull(r, None, &|_| {})
            .map_err(|e| format!("pull {}: {}", reference.familiar(), chain(&e)))?;
        self.pulled.insert(r.to_string());
        say!(
            self.out,
            "#{} pulled {} {} {:.1}s",
            self.step_no,
            pulled.digest,
            if pulled.up_to_date {
                "(up to date)"
            } else {
                "(downloaded)"
            },
            t0.elapsed().as_secs_f64()
        )
        .ok();
        Ok(())
    }

    /// Builds the stages of one wave at the same time: every stage but the
    /// last in a forked child (the runtime spawns containers only from a
    /// single-threaded process, so stages cannot be threads), the last one
    /// here. A child sends its finished stage back as JSON on a pipe; its
    /// layers are already recorded in the store (see [`Ingest::retain`]).
    fn wave(
        &mut self,
        df: &berth_build::Dockerfile,
        graph: &StageGraph,
        global: &GlobalScope,
        wave: &[usize],
        offsets: &[usize],
        done: &HashMap<usize, State>,
    ) -> Result<Vec<(usize, State)>, BuildError> {
        use std::io::Read;
        let (last, forked) = wave.split_last().expect("a wave has stages");
        let mut children = Vec::new();
        let mut res: Result<(), BuildError> = Ok(());
        for (k, &i) in forked.iter().enumerate() {
            let (r, w) = match std::io::pipe() {
                Ok(p) => p,
                Err(e) => {
                    res = Err(fail(format!("build: pipe: {e}")));
                    break;
                }
            };
            self.out.flush().ok();
            // SAFETY: this process is single-threaded (the runtime insists
            // on it for every RUN); the child only runs this stage, then
            // leaves with _exit, running no destructor of the parent's state.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(r);
                self.step_no = offsets[k];
                let before = self.total;
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.stage(df, graph, global, i, done)
                }));
                let msg = match out {
                    Ok(Ok(st)) => json!({ "ok": Forked::from(&st, self.total - before) }),
                    Ok(Err(BuildError::Run(m, code))) => json!({ "err": m, "code": code }),
                    Ok(Err(e)) => json!({ "err": e.to_string() }),
                    Err(_) => json!({ "err": "internal error: a build stage panicked" }),
                };
                self.out.flush().ok();
                let mut w = w;
                let _ = w.write_all(&serde_json::to_vec(&msg).expect("json"));
                drop(w);
                // SAFETY: ends the child without unwinding into the parent's frames.
                unsafe { libc::_exit(0) };
            }
            drop(w);
            if pid < 0 {
                res = Err(fail(format!(
                    "build: fork: {}",
                    std::io::Error::last_os_error()
                )));
                break;
            }
            children.push((i, pid, r));
        }
        let mut states = Vec::new();
        if res.is_ok() {
            self.step_no = offsets[wave.len() - 1];
            match self.stage(df, graph, global, *last, done) {
                Ok(st) => states.push((*last, st)),
                Err(e) => res = Err(e),
            }
        }
        // Every child is waited for, whatever happened here.
        for (i, pid, mut r) in children {
            let mut buf = Vec::new();
            let read = r.read_to_end(&mut buf);
            let code = berth_runtime::linux::wait(pid);
            let msg: Option<Value> = serde_json::from_slice(&buf).ok();
            let got = match (read, code, msg) {
                (Ok(_), _, Some(m)) if m.get("ok").is_some() => {
                    match serde_json::from_value::<Forked>(m["ok"].clone()) {
                        Ok(f) => {
                            self.total += f.triggers;
                            Ok(f.into_state(&self.ingest))
                        }
                        Err(e) => Err(fail(format!("internal error: stage result: {e}"))),
                    }
                }
                (_, _, Some(m)) => {
                    let text = m["err"].as_str().unwrap_or("stage failed").to_string();
                    Err(match m.get("code").and_then(Value::as_i64) {
                        Some(c) => BuildError::Run(text, c as i32),
                        None => fail(text),
                    })
                }
                (_, code, None) => Err(fail(format!(
                    "internal error: stage {} ended without a result ({code:?})",
                    df.stages[i].display_name()
                ))),
            };
            match got {
                Ok(st) => states.push((i, st)),
                Err(e) if res.is_ok() => res = Err(e),
                Err(_) => {}
            }
        }
        res.map(|()| states)
    }

    fn image_state(&self, r: &str) -> Result<State, ImageError> {
        let store = self.engine.images();
        let rec = store.resolve(r)?;
        let cfg = store.config_json(&rec)?;
        let layers = rec
            .layers
            .iter()
            .map(|l| {
                self.ingest.existing_layer(
                    (&l.digest, l.size),
                    &l.media_type,
                    &l.diff_id,
                    &l.chain_id,
                )
            })
            .collect();
        Ok(State {
            config: cfg
                .get("config")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            author: cfg
                .get("author")
                .and_then(Value::as_str)
                .map(str::to_string),
            layers,
            history: cfg
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            key: format!("image:{}", rec.id),
        })
    }

    /// Runs one expanded step; `Some(true)` when it came from the cache,
    /// `None` for ARG (nothing to build or reuse).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        st: &mut State,
        scope: &StageScope<'_>,
        inst: &Instruction,
        build_args: &BTreeMap<String, String>,
        done: &HashMap<usize, State>,
        graph: &StageGraph,
        cmd_set: &mut bool,
    ) -> Result<Option<bool>, BuildError> {
        let text = serde_json::to_string(&inst.command).expect("json");
        let args = serde_json::to_string(build_args).expect("json");
        let created_by = created_by(inst, st);
        // Sources of a COPY/ADD: the content hash of what it copies.
        let mut content = String::new();
        let mut from_state: Option<State> = None;
        if let Command::Copy(c) | Command::Add(c) = &inst.command {
            match &c.from {
                Some(f) => {
                    if graph.find(f).is_none() && f.parse::<usize>().is_err() {
                        self.ensure_image(f).map_err(|e| {
                            fail(format!(
                                "{}: {} --from={f}: {e}",
                                self.at(inst),
                                inst.keyword()
                            ))
                        })?;
                    }
                    let s = self.source_state(f, done, graph).map_err(|e| {
                        fail(format!(
                            "{}: {} --from={f}: {e}",
                            self.at(inst),
                            inst.keyword()
                        ))
                    })?;
                    content = format!("from:{}", s.key);
                    from_state = Some(s);
                }
                None => {
                    if c.paths().next().is_some() {
                        let plan = self.plan(st, inst, c, &self.ctx)?;
                        content = plan.digest;
                    }
                }
            }
        }
        let key = cache::key(&st.key, &text, &args, &content);
        // Config changes are recomputed (cheap and deterministic); only the
        // layer and the history entry come from the cache.
        self.apply_config(st, scope, inst, cmd_set);
        if matches!(inst.command, Command::Arg(_)) {
            // BuildKit records no history for ARG; its values reach later
            // keys through the build args those steps use.
            return Ok(None);
        }
        let makes_layer = match &inst.command {
            Command::Run(_) | Command::Copy(_) | Command::Add(_) => true,
            Command::Workdir(_) => !st.view(self.engine).is_dir(&st.workdir()),
            _ => false,
        };
        if !self.opts.no_cache
            && let Some(hit) = self.cache.get(&key)
            && hit.layer.is_some() == makes_layer
            && self.reuse(st, &hit)?
        {
            st.key = key;
            return Ok(Some(true));
        }
        let created = rfc3339(now_secs());
        let mut history = json!({
            "created": created,
            "created_by": created_by,
            "comment": "buildkit.dockerfile.v0",
        });
        let mut cached_layer = None;
        if makes_layer {
            let staged = match &inst.command {
                Command::Run(r) => self.run(st, scope, inst, r)?,
                Command::Copy(c) | Command::Add(c) => {
                    self.copy(st, inst, c, from_state.as_ref())?
                }
                _ => {
                    let mut w = LayerWriter::new(&self.tmp).map_err(|e| self.io(inst, e))?;
                    let wd = st.workdir();
                    let view = st.view(self.engine);
                    w.parents(&format!("{wd}/x"), (0, 0), &|p| view.exists(p))
                        .and_then(|_| w.finish())
                        .map_err(|e| self.io(inst, e))?
                }
            };
            let l = self.add_layer(st, &staged)?;
            cached_layer = Some(cache::CachedLayer {
                digest: l.record.digest.clone(),
                size: l.record.size,
                media_type: l.record.media_type.clone(),
                diff_id: l.record.diff_id.clone(),
            });
        } else {
            history["empty_layer"] = json!(true);
        }
        st.history.push(history.clone());
        let _ = self.cache.put(
            &key,
            &cache::Entry {
                layer: cached_layer,
                history,
            },
        );
        st.key = key;
        Ok(Some(false))
    }

    fn io(&self, inst: &Instruction, e: std::io::Error) -> BuildError {
        fail(format!("{}: {}: {e}", self.at(inst), inst.keyword()))
    }

    /// Applies a cache hit; false when its layer blob is gone (a miss).
    fn reuse(&mut self, st: &mut State, hit: &cache::Entry) -> Result<bool, BuildError> {
        if let Some(l) = &hit.layer {
            let parent = st.layers.last().map(|l| l.record.chain_id.clone());
            let chain = chain_id(parent.as_ref(), &l.diff_id);
            let layer = if self.ingest.has_layer(&l.digest, &chain) {
                self.ingest
                    .existing_layer((&l.digest, l.size), &l.media_type, &l.diff_id, &chain)
            } else if self.engine.images().content().contains(&l.digest) {
                // The blob is kept but its snapshot is not (another chain):
                // unpack it again.
                let f = self.engine.images().content().open_blob(&l.digest);
                let Ok(f) = f else { return Ok(false) };
                let layer = self.ingest.layer(
                    BufReader::with_capacity(1 << 18, f),
                    (&l.digest, l.size),
                    &l.media_type,
                    &l.diff_id,
                    &chain,
                )?;
                st.layers.push(layer);
                self.ingest.retain(&st.layers)?;
                st.history.push(hit.history.clone());
                return Ok(true);
            } else {
                return Ok(false);
            };
            st.layers.push(layer);
        }
        st.history.push(hit.history.clone());
        Ok(true)
    }

    fn add_layer(
        &mut self,
        st: &mut State,
        staged: &StagedLayer,
    ) -> Result<IngestedLayer, BuildError> {
        let parent = st.layers.last().map(|l| l.record.chain_id.clone());
        let chain = chain_id(parent.as_ref(), &staged.diff_id);
        let f = File::open(staged.file.path())
            .map_err(|e| fail(format!("{}: {e}", staged.file.path().display())))?;
        let l = self.ingest.layer(
            BufReader::with_capacity(1 << 18, f),
            (&staged.digest, staged.size),
            media::OCI_LAYER_GZIP,
            &staged.diff_id,
            &chain,
        )?;
        st.layers.push(l.clone());
        // Kept even if a later step fails: the next build reuses it.
        self.ingest.retain(&st.layers)?;
        Ok(l)
    }

    fn apply_config(
        &self,
        st: &mut State,
        scope: &StageScope<'_>,
        inst: &Instruction,
        cmd_set: &mut bool,
    ) {
        let c = &mut st.config;
        let obj = |c: &mut Map<String, Value>, k: &str| -> Map<String, Value> {
            c.get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let shell = st_shell(c);
        let line = |l: &CommandLine| -> Value {
            match l {
                CommandLine::Exec(v) => json!(v),
                CommandLine::Shell(s) => {
                    let mut v = shell.clone();
                    v.push(s.clone());
                    json!(v)
                }
            }
        };
        match &inst.command {
            Command::Env(_) => {
                c.insert("Env".into(), json!(scope.env()));
            }
            Command::Label(kvs) => {
                let mut m = obj(c, "Labels");
                for kv in kvs {
                    m.insert(kv.key.clone(), json!(kv.value));
                }
                c.insert("Labels".into(), Value::Object(m));
            }
            Command::Cmd(l) => {
                c.insert("Cmd".into(), line(l));
                *cmd_set = true;
            }
            Command::Entrypoint(l) => {
                c.insert("Entrypoint".into(), line(l));
                // An ENTRYPOINT resets a CMD inherited from the base.
                if !*cmd_set {
                    c.insert("Cmd".into(), Value::Null);
                }
            }
            Command::Expose(ports) => {
                let mut m = obj(c, "ExposedPorts");
                for p in ports {
                    let p = if p.contains('/') {
                        p.to_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    m.insert(p, json!({}));
                }
                c.insert("ExposedPorts".into(), Value::Object(m));
            }
            Command::Volume(vols) => {
                let mut m = obj(c, "Volumes");
                for v in vols {
                    m.insert(v.clone(), json!({}));
                }
                c.insert("Volumes".into(), Value::Object(m));
            }
            Command::Workdir(w) => {
                let cur = c
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/");
                let joined = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", cur.trim_end_matches('/'))
                };
                let clean = berth_build::dockerignore::clean(&joined);
                c.insert("WorkingDir".into(), json!(clean));
            }
            Command::User(u) => {
                c.insert("User".into(), json!(u));
            }
            Command::StopSignal(s) => {
                c.insert("StopSignal".into(), json!(s));
            }
            Command::Healthcheck(h) => {
                let mut m = Map::new();
                m.insert("Test".into(), json!(h.test()));
                if let berth_build::dockerfile::Healthcheck::Cmd {
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                    ..
                } = h
                {
                    for (k, d) in [
                        ("Interval", interval),
                        ("Timeout", timeout),
                        ("StartPeriod", start_period),
                        ("StartInterval", start_interval),
                    ] {
                        if let Some(d) = d {
                            m.insert(k.into(), json!(d.as_nanos() as u64));
                        }
                    }
                    if let Some(r) = retries {
                        m.insert("Retries".into(), json!(r));
                    }
                }
                c.insert("Healthcheck".into(), Value::Object(m));
            }
            Command::Shell(v) => {
                c.insert("Shell".into(), json!(v));
            }
            Command::Onbuild(o) => {
                let mut v = c
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                v.push(json!(o.expression));
                c.insert("OnBuild".into(), Value::Array(v));
            }
            Command::Maintainer(m) => st.author = Some(m.clone()),
            Command::From(_)
            | Command::Run(_)
            | Command::Add(_)
            | Command::Copy(_)
            | Command::Arg(_) => {}
        }
    }

    /// The state a `--from` names: an earlier stage, or an image in the store.
    fn source_state(
        &self,
        f: &str,
        done: &HashMap<usize, State>,
        graph: &StageGraph,
    ) -> Result<State, String> {
        if let Some(i) = graph.find(f).or_else(|| f.parse::<usize>().ok()) {
            return done
                .get(&i)
                .cloned()
                .ok_or_else(|| format!("stage {f} is not built before this step"));
        }
        self.image_state(f)
            .map_err(|e| format!("no stage named {f:?} and no such image ({e})"))
    }

    fn plan(
        &self,
        st: &State,
        inst: &Instruction,
        c: &Copy,
        ctx: &BuildContext,
    ) -> Result<berth_build::context::CopyPlan, BuildError> {
        let sources: Vec<String> = c.paths().map(str::to_string).collect();
        let heredocs = c.sources.len() - sources.len();
        let wd = st.workdir();
        let req = CopyRequest {
            instruction: inst.keyword(),
            sources: &sources,
            other_sources: heredocs,
            dest: &c.dest,
            workdir: &wd,
            excludes: &c.excludes,
        };
        let mut plan = ctx
            .resolve(&req)
            .map_err(|e| fail(format!("{}: {e}", self.at(inst))))?;
        if !plan.dest_is_dir && st.view(self.engine).is_dir(&plan.dest) {
            plan.retarget_into_existing_dir();
        }
        Ok(plan)
    }

    fn copy(
        &mut self,
        st: &State,
        inst: &Instruction,
        c: &Copy,
        from: Option<&State>,
    ) -> Result<StagedLayer, BuildError> {
        let view = st.view(self.engine);
        let owner = match &c.chown {
            Some(u) => {
                let (uid, gid, _, _) = spec::resolve_user(u, &view.0)
                    .map_err(|e| fail(format!("{}: --chown={u}: {e}", self.at(inst))))?;
                // Docker: a user without a group gets the same number as GID.
                (uid, if u.contains(':') { gid } else { uid })
            }
            None => (0, 0),
        };
        let chmod = match &c.chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                fail(format!(
                    "{}: invalid --chmod={m}: not an octal mode",
                    self.at(inst)
                ))
            })?),
            None => None,
        };
        let _merged;
        let plan = match from {
            Some(s) => {
                let m = self.merged(s).map_err(|e| self.io(inst, e))?;
                let ctx = BuildContext::new(&m.path, Default::default())
                    .map_err(|e| fail(format!("{}: {e}", self.at(inst))))?;
                let plan = if c.paths().next().is_some() {
                    Some(self.plan(st, inst, c, &ctx)?)
                } else {
                    None
                };
                _merged = m;
                plan
            }
            None if c.paths().next().is_some() => Some(self.plan(st, inst, c, &self.ctx)?),
            None => None,
        };
        let mut w = LayerWriter::new(&self.tmp).map_err(|e| self.io(inst, e))?;
        let exists = |p: &str| view.exists(p);
        let res = (|| -> std::io::Result<()> {
            let (dest, dest_is_dir) = match &plan {
                Some(p) => (p.dest.clone(), p.dest_is_dir),
                None => berth_build::context::resolve_dest(&c.dest, &st.workdir()),
            };
            if let Some(plan) = &plan {
                for item in &plan.items {
                    let is_add = matches!(inst.command, Command::Add(_));
                    if is_add && !item.is_dir && c.unpack != Some(false) {
                        let host = &item.entries[0].host_path;
                        w.parents(&format!("{dest}/x"), (0, 0), &exists)?;
                        if w.extract_archive(host, &dest, c.chown.as_ref().map(|_| owner))? {
                            continue;
                        }
                    }
                    w.parents(&item.target, (0, 0), &exists)?;
                    let mut entries = &item.entries[..];
                    // Copying a directory's contents into an existing
                    // directory keeps that directory as it is.
                    if item.is_dir && view.is_dir(&item.target) && !entries.is_empty() {
                        entries = &entries[1..];
                    }
                    w.copy_entries(entries, owner, chmod)?;
                }
            }
            for s in &c.sources {
                if let CopySource::Heredoc(h) = s {
                    let target = if dest_is_dir || plan.is_some() {
                        format!("{}/{}", dest.trim_end_matches('/'), h.name)
                    } else {
                        dest.clone()
                    };
                    w.parents(&target, (0, 0), &exists)?;
                    let data = h.content.as_bytes();
                    w.file(
                        &target,
                        chmod.unwrap_or(0o644),
                        owner.0,
                        owner.1,
                        0,
                        data.len() as u64,
                        data,
                    )?;
                }
            }
            Ok(())
        })();
        res.map_err(|e| self.io(inst, e))?;
        w.finish().map_err(|e| self.io(inst, e))
    }

    /// A directory showing a stage's file system: its one snapshot, or a
    /// read-only overlay of several.
    fn merged(&self, s: &State) -> std::io::Result<Merged> {
        let lowers = s.lowers(self.engine);
        match lowers.len() {
            0 | 1 => {
                let tree = if lowers.is_empty() {
                    let d = tempfile::Builder::new()
                        .prefix("empty-")
                        .tempdir_in(&self.tmp)?
                        .keep();
                    Some(TempTree(d))
                } else {
                    None
                };
                Ok(Merged {
                    path: tree
                        .as_ref()
                        .map(|t| t.0.clone())
                        .unwrap_or_else(|| lowers[0].clone()),
                    mounted: false,
                    _tree: tree,
                })
            }
            _ => {
                let d = tempfile::Builder::new()
                    .prefix("from-")
                    .tempdir_in(&self.tmp)?
                    .keep();
                let data = format!(
                    "lowerdir={}",
                    lowers
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                );
                let mut m = Merged {
                    path: d.clone(),
                    mounted: false,
                    _tree: Some(TempTree(d.clone())),
                };
                let data = std::ffi::CString::new(data)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                rustix::mount::mount(
                    "overlay",
                    &d,
                    "overlay",
                    rustix::mount::MountFlags::RDONLY,
                    Some(data.as_c_str()),
                )?;
                m.mounted = true;
                Ok(m)
            }
        }
    }

    fn run(
        &mut self,
        st: &State,
        scope: &StageScope<'_>,
        inst: &Instruction,
        r: &Run,
    ) -> Result<StagedLayer, BuildError> {
        let shell = st.shell();
        let with_shell = |s: String| {
            let mut v = shell.clone();
            v.push(s);
            v
        };
        let args = match r.script() {
            RunScript::Plain(CommandLine::Exec(v)) => v,
            RunScript::Plain(CommandLine::Shell(s)) => with_shell(s),
            RunScript::Script(s) | RunScript::Executable(s) | RunScript::Compound(s) => {
                with_shell(s)
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&self.tmp)
            .map_err(|e| self.io(inst, e))?
            .keep();
        let tree = TempTree(dir.clone());
        for d in ["upper", "work", "rootfs", "empty"] {
            fs::create_dir_all(dir.join(d)).map_err(|e| self.io(inst, e))?;
        }
        let mut lowers = st.lowers(self.engine);
        let view = LowerView(lowers.clone());
        let wd = st.workdir();
        if !view.is_dir(&wd) {
            // Docker creates a missing WORKDIR for the RUN.
            fs::create_dir_all(dir.join("upper").join(wd.trim_start_matches('/')))
                .map_err(|e| self.io(inst, e))?;
        }
        if lowers.is_empty() {
            lowers.push(dir.join("empty"));
        }
        let cfg = json!({ "config": {
            "Env": scope.run_env(),
            "WorkingDir": wd,
            "User": st.str("User").unwrap_or_default(),
        }});
        let opts = RunOptions {
            cmd: args.clone(),
            entrypoint: Some(String::new()),
            ..Default::default()
        };
        let id = crate::run::new_id();
        let mut spec = spec::build(&cfg, &opts, &id, Path::new("rootfs"), &view.0, Vec::new())
            .map_err(|e| fail(format!("{}: RUN: {e}", self.at(inst))))?;
        if let Some(root) = spec.root_mut() {
            root.set_path(dir.join("rootfs"));
        }
        let overlay = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        // Folded output: the step's output goes to a file, shown if it fails.
        let log = if self.opts.folded && !self.opts.quiet {
            Some(tempfile::tempfile_in(&self.tmp).map_err(|e| self.io(inst, e))?)
        } else {
            None
        };
        let mut stdio = self.run_stdio().map_err(|e| self.io(inst, e))?;
        if let Some(f) = &log {
            let fd = f.as_fd_owned().map_err(|e| self.io(inst, e))?;
            stdio[1] = Some(fd.try_clone().map_err(|e| self.io(inst, e))?);
            stdio[2] = Some(fd);
        }
        let mut warn = |w: String| {
            eprintln!("berth: WARNING: {w}");
        };
        let pid = berth_runtime::linux::spawn(berth_runtime::linux::SpawnOptions {
            spec: &spec,
            rootfs: dir.join("rootfs"),
            overlay: Some(overlay),
            before_start: &mut |_| Ok(()),
            warn: &mut warn,
            stdio,
            oci: None,
        })
        .map_err(|e| {
            BuildError::Run(
                format!(
                    "{}: process {:?} did not complete successfully: {e}",
                    self.at(inst),
                    args.join(" ")
                ),
                e.exit_code(),
            )
        })?;
        let code = berth_runtime::linux::wait(pid).map_err(|e| self.io(inst, e))?;
        if code != 0
            && let Some(mut f) = log
        {
            use std::io::{Read, Seek};
            let mut text = String::new();
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = f.read_to_string(&mut text);
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(FOLDED_TAIL);
            for l in &lines[skip..] {
                say!(self.out, "#{} {l}", self.step_no).ok();
            }
        }
        if code != 0 {
            return Err(BuildError::Run(
                format!(
                    "{}: {}: process {:?} did not complete successfully: exit code: {code}",
                    self.at(inst),
                    inst.original.lines().next().unwrap_or_default().trim(),
                    args.join(" ")
                ),
                code,
            ));
        }
        let mut w = LayerWriter::new(&self.tmp).map_err(|e| self.io(inst, e))?;
        w.upper(&dir.join("upper")).map_err(|e| self.io(inst, e))?;
        let staged = w.finish().map_err(|e| self.io(inst, e))?;
        drop(tree);
        Ok(staged)
    }

    /// stdin from /dev/null; stdout and stderr to ours (the build output),
    /// or to /dev/null with `-q`.
    fn run_stdio(&self) -> std::io::Result<[Option<OwnedFd>; 3]> {
        let null = || -> std::io::Result<OwnedFd> {
            Ok(File::options()
                .read(true)
                .write(true)
                .open("/dev/null")?
                .into())
        };
        if self.opts.quiet {
            return Ok([Some(null()?), Some(null()?), Some(null()?)]);
        }
        let err = std::io::stderr().as_fd_owned()?;
        Ok([Some(null()?), Some(err.try_clone()?), Some(err)])
    }

    fn commit(&mut self, st: State, tags: &[Reference]) -> Result<Digest, BuildError> {
        let created = st
            .history
            .iter()
            .rev()
            .find_map(|h| h.get("created").and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| rfc3339(0));
        let diff_ids: Vec<Digest> = st.layers.iter().map(|l| l.record.diff_id.clone()).collect();
        let mut doc =
            berth_image::config::image_config_json(&st.config, &created, &diff_ids, &st.history);
        if let Some(a) = &st.author {
            doc["author"] = json!(a);
        }
        let config_bytes = serde_json::to_vec(&doc).expect("json");
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": media::OCI_CONFIG,
                "digest": Digest::of(&config_bytes),
                "size": config_bytes.len(),
            },
            "layers": st.layers.iter().map(|l| json!({
                "mediaType": l.record.media_type,
                "digest": l.record.digest,
                "size": l.record.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).expect("json");
        let rec = self.ingest.commit(
            &manifest,
            media::OCI_MANIFEST,
            &config_bytes,
            media::OCI_CONFIG,
            &st.layers,
            tags,
        )?;
        Ok(rec.id)
    }
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}

impl<T: std::os::fd::AsFd> AsFdOwned for T {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

fn st_shell(c: &Map<String, Value>) -> Vec<String> {
    match c.get("Shell").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec!["/bin/sh".into(), "-c".into()],
    }
}

/// The history line, as BuildKit writes it.
fn created_by(inst: &Instruction, st: &State) -> String {
    match &inst.command {
        Command::Run(r) => {
            let cmd = match &r.command {
                CommandLine::Exec(v) => v.join(" "),
                CommandLine::Shell(s) => format!("{} {s}", st.shell().join(" ")),
            };
            format!("RUN {cmd} # buildkit")
        }
        Command::Copy(_) | Command::Add(_) => {
            format!(
                "{} # buildkit",
                inst.original.lines().next().unwrap_or_default().trim()
            )
        }
        _ => inst
            .original
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Lines of a failed step's folded output that are shown.
const FOLDED_TAIL: usize = 40;

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
