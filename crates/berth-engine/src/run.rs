//! `run` in the foreground: a container from an image, attached to berth's
//! own stdio, removed when it exits. (Detached containers, records and the
//! lifecycle commands build on this.)

use std::fs;
use std::path::{Path, PathBuf};

use berth_runtime::cgroups::{self, CgroupConfig, CgroupError, CgroupManager};
use berth_runtime::linux::{self, SpawnOptions, StartError};

use crate::spec::{self, RunOptions};
use crate::{Engine, EngineError};

/// Why `run` did not run the program.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Engine-level failure (unknown image…).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Bad options.
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    /// The runtime could not start the process.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The container's cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// File-system trouble in the container's directory.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// Docker's exit code for this failure: 125, or 126/127 from the runtime.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Start(s) => s.exit_code(),
            _ => 125,
        }
    }
}

/// A new random container ID (64 hex digits).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Kills whatever is left in a cgroup and removes it when dropped.
struct CgroupGuard(Box<dyn CgroupManager>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.0.kill_all(libc::SIGKILL);
        let _ = self.0.remove();
    }
}

/// Removes the container's directory when dropped (also on errors).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Engine {
    /// Runs `image` in the foreground and returns the process's exit code.
    pub fn run_foreground(
        &self,
        image: &str,
        opts: &RunOptions,
        warn: &mut dyn FnMut(String),
    ) -> Result<i32, RunError> {
        let img = self.images().resolve(image).map_err(EngineError::from)?;
        let cfg = self.images().config_json(&img).map_err(EngineError::from)?;
        let id = new_id();
        let dir = self.root().join("containers").join(&id);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| RunError::Io { path: p, source }
        };
        let lower = self.images().lowerdirs(&img);
        let rootfs = dir.join("rootfs");
        let spec = spec::build(&cfg, opts, &id, &rootfs, &lower)?;
        let _scratch = Scratch(dir.clone());
        for d in ["upper", "work", "rootfs"] {
            fs::create_dir_all(dir.join(d)).map_err(io(&dir.join(d)))?;
        }
        // Which image this container uses, so `rmi` refuses to pull it away.
        fs::write(dir.join("image"), img.id.as_str()).map_err(io(&dir.join("image")))?;
        let lowerdir = if lower.is_empty() {
            // An image with no layers still needs one lower dir.
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).map_err(io(&empty))?;
            empty.display().to_string()
        } else {
            lower
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        let overlay = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let cg = CgroupGuard(cgroups::manager(&CgroupConfig {
            name: id.clone(),
            parent: opts.cgroup_parent.clone(),
        })?);
        cg.0.create()?;
        if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cg.0.apply(r)?;
        }
        let pid = linux::spawn(SpawnOptions {
            spec: &spec,
            rootfs: rootfs.clone(),
            overlay: Some(overlay),
            before_start: &mut |pid| cg.0.add_process(pid).map_err(|e| e.to_string()),
            warn,
        })?;
        linux::forward_signals(pid);
        let code = linux::wait(pid).map_err(io(&dir))?;
        if cg
            .0
            .stats()
            .is_ok_and(|s| s.memory.is_some_and(|m| m.oom_kills > 0))
        {
            warn("the container was killed because it ran out of memory (OOM)".into());
        }
        Ok(code)
    }
}
