//! The container lifecycle the front ends call: create, start (detached, under
//! a monitor process), run in the foreground, stop, kill, remove, wait.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::cgroups::{self, CgroupConfig, CgroupError};
use berth_runtime::linux::StartError;

use crate::containers::monitor::{self, Mode};
use crate::containers::stdio;
use crate::containers::{Container, ContainerError, State, Status};
use crate::spec::{self, RunOptions};
use crate::{Engine, EngineError};

/// Why a lifecycle operation failed.
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
    /// Container records.
    #[error(transparent)]
    Container(#[from] ContainerError),
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
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `exec` options.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// `-e`.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-d`.
    pub detach: bool,
    /// `-i`.
    pub interactive: bool,
    /// `-t`: a pseudo-terminal.
    pub tty: bool,
}

/// OCI mounts, every volume used, and the anonymous volumes created.
type ResolvedMounts = (Vec<oci_spec::runtime::Mount>, Vec<String>, Vec<String>);

/// Options of `create` beyond the process: name, `--rm`, `--restart`.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// `--name`.
    pub name: Option<String>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--restart`.
    pub restart: Option<String>,
}

fn check_restart(r: &str, auto_remove: bool) -> Result<String, spec::SpecError> {
    let (name, max) = r.split_once(':').unwrap_or((r, ""));
    let ok = match name {
        "no" | "always" | "unless-stopped" => max.is_empty(),
        "on-failure" => max.is_empty() || max.parse::<u32>().is_ok(),
        _ => false,
    };
    if !ok {
        return Err(spec::SpecError(format!(
            "invalid restart policy \"{r}\": use no, always, unless-stopped or on-failure[:max-retries]"
        )));
    }
    if auto_remove && name != "no" {
        return Err(spec::SpecError(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    Ok(r.to_string())
}

impl Engine {
    /// Overlay mount data for a container's root file system.
    pub fn overlay_for(&self, c: &Container) -> Result<String, RunError> {
        let img = self
            .images()
            .resolve(&c.image_id)
            .map_err(EngineError::from)?;
        let dir = self.containers().dir(&c.id);
        let lower = self.images().lowerdirs(&img);
        let lowerdir = if lower.is_empty() {
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).map_err(|source| RunError::Io {
                path: empty.clone(),
                source,
            })?;
            empty.display().to_string()
        } else {
            lower
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        Ok(format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            dir.join("upper").display(),
            dir.join("work").display()
        ))
    }

    /// `create`: a container record, its OCI bundle and writable layer.
    pub fn create(
        &self,
        image: &str,
        opts: &RunOptions,
        c: &CreateOptions,
    ) -> Result<Container, RunError> {
        let img = self.images().resolve(image).map_err(EngineError::from)?;
        let cfg = self.images().config_json(&img).map_err(EngineError::from)?;
        let restart = check_restart(c.restart.as_deref().unwrap_or("no"), c.auto_remove)?;
        let mut opts = opts.clone();
        if opts.stop_signal.is_none() {
            opts.stop_signal = cfg
                .pointer("/config/StopSignal")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string);
        }
        if let Some(s) = &opts.stop_signal
            && signal_number(s).is_none()
        {
            return Err(spec::SpecError(format!("invalid stop signal: {s}")).into());
        }
        if opts.publish_all
            && let Some(exposed) = cfg
                .pointer("/config/ExposedPorts")
                .and_then(serde_json::Value::as_object)
        {
            // -P: every EXPOSEd port on a random host port.
            opts.publish.extend(exposed.keys().cloned());
        }
        crate::network::resolve_host_gateway(self, &mut opts)?;
        let opts = &opts;
        if opts.isolation == crate::containers::vm::Isolation::Vm {
            crate::containers::vm::resources(opts)?;
            if let m @ (crate::network::Mode::Host | crate::network::Mode::Container(_)) =
                crate::network::Mode::parse(opts.network.as_deref())
            {
                return Err(spec::SpecError(format!(
                    "--network {} with --isolation vm: a VM has its own network stack (use none, bridge or a network's name)",
                    m.name()
                ))
                .into());
            }
        }
        let net_plan = crate::network::plan(self, opts)?;
        let id = new_id();
        let cs = self.containers();
        let dir = cs.dir(&id);
        let lower = self.images().lowerdirs(&img);
        let name = cs.name_for(c.name.as_deref(), &id)?;
        let (mut user_mounts, volumes, anonymous) = self.resolve_mounts(&cfg, opts, &lower)?;
        user_mounts.extend(net_plan.mounts(&dir, &user_mounts));
        let spec = match spec::build(&cfg, opts, &id, Path::new("rootfs"), &lower, user_mounts) {
            Ok(mut s) => {
                net_plan.apply(&mut s);
                s
            }
            Err(e) => {
                for v in &anonymous {
                    let _ = self.volumes().remove(v);
                }
                return Err(e.into());
            }
        };
        let rec = Container {
            id: id.clone(),
            name,
            image: image.to_string(),
            image_id: img.id.to_string(),
            created: monitor_now(),
            options: opts.clone(),
            args: spec
                .process()
                .as_ref()
                .and_then(|p| p.args().clone())
                .unwrap_or_default(),
            auto_remove: c.auto_remove,
            restart,
            volumes,
            anonymous_volumes: anonymous.clone(),
            state: State {
                status: Some(Status::Created),
                ..Default::default()
            },
        };
        let io = |p: PathBuf| move |source| RunError::Io { path: p, source };
        let result = (|| {
            cs.create(&rec)?;
            for d in ["upper", "work", "rootfs"] {
                fs::create_dir_all(dir.join(d)).map_err(io(dir.join(d)))?;
            }
            let hostname = spec.hostname().clone().unwrap_or_default();
            net_plan.write_files(&dir, opts, &hostname)?;
            // The runtime resolves the relative root path against the bundle.
            let mut spec = spec;
            if let Some(root) = spec.root_mut() {
                root.set_path(dir.join("rootfs"));
            }
            let json = serde_json::to_vec_pretty(&spec).expect("specs serialize");
            fs::write(dir.join("config.json"), json).map_err(io(dir.join("config.json")))?;
            Ok::<(), RunError>(())
        })();
        if let Err(e) = result {
            let _ = cs.delete(&id);
            for v in &anonymous {
                let _ = self.volumes().remove(v);
            }
            return Err(e);
        }
        Ok(rec)
    }

    /// Turns `-v`, `--mount`, `--tmpfs` and the image's VOLUMEs into OCI
    /// mounts, creating (and populating) volumes as needed. Returns the
    /// mounts, every volume used, and the anonymous ones created.
    fn resolve_mounts(
        &self,
        cfg: &serde_json::Value,
        o: &RunOptions,
        lower: &[PathBuf],
    ) -> Result<ResolvedMounts, RunError> {
        use crate::volumes::{self, MountSpec};
        use oci_spec::runtime::MountBuilder;
        let bad = |e: volumes::VolumeError| RunError::Spec(spec::SpecError(e.to_string()));
        let mut specs = Vec::new();
        for v in &o.volumes {
            specs.push(volumes::parse_volume_flag(v).map_err(bad)?);
        }
        for m in &o.mounts {
            specs.push(volumes::parse_mount_flag(m).map_err(bad)?);
        }
        for t in &o.tmpfs {
            specs.push(volumes::parse_tmpfs_flag(t).map_err(bad)?);
        }
        // The image's VOLUMEs not covered by the user get anonymous volumes.
        if let Some(vols) = cfg.pointer("/config/Volumes").and_then(|v| v.as_object()) {
            for target in vols.keys() {
                if !specs.iter().any(|s| s.target() == target) {
                    specs.push(MountSpec::Volume {
                        name: None,
                        target: target.clone(),
                        ro: false,
                    });
                }
            }
        }
        let mut mounts = Vec::new();
        let mut used = Vec::new();
        let mut anonymous = Vec::new();
        let vs = self.volumes();
        let fail = |e: RunError, anonymous: &[String]| {
            for v in anonymous {
                let _ = vs.remove(v);
            }
            e
        };
        for s in specs {
            let m = match s {
                MountSpec::Bind { source, target, ro } => {
                    // -v creates a missing host directory, as Docker does.
                    if !Path::new(&source).exists()
                        && let Err(e) = fs::create_dir_all(&source)
                    {
                        return Err(fail(
                            RunError::Io {
                                path: source.into(),
                                source: e,
                            },
                            &anonymous,
                        ));
                    }
                    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
                    if ro {
                        opts.push("ro".into());
                    }
                    MountBuilder::default()
                        .destination(target)
                        .typ("bind")
                        .source(source)
                        .options(opts)
                        .build()
                }
                MountSpec::Volume { name, target, ro } => {
                    let anon = name.is_none();
                    let v = match vs.create(name.as_deref(), &[], anon) {
                        Ok(v) => v,
                        Err(e) => return Err(fail(bad(e), &anonymous)),
                    };
                    if anon {
                        anonymous.push(v.name.clone());
                    }
                    if let Err(e) = vs.populate(&v.name, lower, &target) {
                        return Err(fail(bad(e), &anonymous));
                    }
                    used.push(v.name.clone());
                    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
                    if ro {
                        opts.push("ro".into());
                    }
                    MountBuilder::default()
                        .destination(target)
                        .typ("bind")
                        .source(vs.data(&v.name))
                        .options(opts)
                        .build()
                }
                MountSpec::Tmpfs { target, options } => {
                    let mut opts: Vec<String> =
                        vec!["nosuid".into(), "nodev".into(), "noexec".into()];
                    opts.extend(options);
                    MountBuilder::default()
                        .destination(target)
                        .typ("tmpfs")
                        .source("tmpfs")
                        .options(opts)
                        .build()
                }
            };
            mounts.push(
                m.map_err(|e| fail(RunError::Spec(spec::SpecError(e.to_string())), &anonymous))?,
            );
        }
        Ok((mounts, used, anonymous))
    }

    /// `start`: launches the container under its own monitor process and
    /// returns once the program runs (or failed to start).
    pub fn start(&self, name: &str) -> Result<Container, RunError> {
        let c = self.containers().resolve(name)?;
        if let Some(Status::Running | Status::Restarting | Status::Paused) = c.state.status {
            return Ok(c);
        }
        let (r, w) = std::io::pipe().map_err(|source| RunError::Io {
            path: "pipe".into(),
            source,
        })?;
        let w: OwnedFd = w.into();
        // The monitor inherits the write end (not close-on-exec) as fd 3.
        let exe = std::env::current_exe().map_err(|source| RunError::Io {
            path: "/proc/self/exe".into(),
            source,
        })?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--root")
            .arg(self.root())
            .arg("__monitor")
            .arg(&c.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let raw = w.as_raw_fd();
            // SAFETY: runs in the forked child before exec: dup2 and setsid are
            // async-signal-safe and touch only this child's descriptors/session.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(raw, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|source| RunError::Io {
            path: "berth monitor".into(),
            source,
        })?;
        drop(w);
        drop(cmd);
        let mut msg = String::new();
        let mut r = r;
        let _ = r.read_to_string(&mut msg);
        // The monitor lives on; reap it if it already exited.
        let _ = child.try_wait();
        if !msg.is_empty() {
            let (code, text) = msg.split_once(':').unwrap_or(("125", &msg));
            return Err(RunError::Start(match code {
                "127" => StartError::NotFound(text.to_string()),
                "126" => StartError::NotExecutable(text.to_string()),
                _ => StartError::Setup(text.to_string()),
            }));
        }
        Ok(self.containers().read(&c.id)?)
    }

    /// The monitor's entry point (`berth __monitor ID`, fd 3 = start pipe).
    pub fn monitor(&self, id: &str, ready: OwnedFd) -> Result<i32, RunError> {
        monitor::run(self, id, Mode::Detached(Some(ready)), None)
    }

    /// The detached monitor again, after the shim saw the container exit.
    pub fn monitor_resume(&self, id: &str, resume: monitor::Resume) -> Result<i32, RunError> {
        monitor::run(self, id, Mode::Detached(None), Some(resume))
    }

    /// `run` in the foreground: create, then this process is the monitor.
    pub fn run_foreground(
        &self,
        image: &str,
        opts: &RunOptions,
        c: &CreateOptions,
        stdin: bool,
        warn: &mut dyn FnMut(String),
    ) -> Result<i32, RunError> {
        let rec = self.create(image, opts, c)?;
        let r = monitor::run(self, &rec.id, Mode::Foreground { stdin, warn }, None);
        if r.is_err() && c.auto_remove {
            let _ = self.containers().delete(&rec.id);
        }
        r
    }

    /// Sends a signal to the container's process.
    pub fn kill(&self, name: &str, signal: i32) -> Result<Container, RunError> {
        let c = self.containers().resolve(name)?;
        if c.state.status != Some(Status::Running) || c.state.pid <= 0 {
            return Err(
                ContainerError::State(format!("container {} is not running", c.name)).into(),
            );
        }
        if c.options.isolation == crate::containers::vm::Isolation::Vm {
            // The PID is the hypervisor's: the signal goes to the process in the guest.
            crate::containers::vm::signal(&self.containers().dir(&c.id), signal)?;
            return Ok(c);
        }
        // SAFETY: kill takes integers; the PID is the container's init, owned by its monitor.
        if unsafe { libc::kill(c.state.pid, signal) } != 0 {
            return Err(RunError::Io {
                path: format!("pid {}", c.state.pid).into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(c)
    }

    /// `stop -t N`: the stop signal, then SIGKILL after the timeout.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<Container, RunError> {
        let c = self.containers().resolve(name)?;
        let c = self
            .containers()
            .update(&c.id, |c| c.state.stopping = true)?;
        if c.state.status != Some(Status::Running) {
            return Ok(c);
        }
        let sig = c
            .options
            .stop_signal
            .as_deref()
            .and_then(signal_number)
            .unwrap_or(libc::SIGTERM);
        let _ = self.kill(&c.id, sig);
        if !self.wait_until_stopped(&c.id, timeout)? {
            let cg = cgroups::manager(&CgroupConfig {
                name: c.id.clone(),
                parent: c.options.cgroup_parent.clone(),
            })?;
            let _ = cg.kill_all(libc::SIGKILL);
            self.wait_until_stopped(&c.id, Duration::from_secs(10))?;
        }
        Ok(self.containers().read(&c.id)?)
    }

    fn wait_until_stopped(&self, id: &str, timeout: Duration) -> Result<bool, RunError> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = match self.containers().read(id) {
                Ok(c) => self.containers().reconcile(c),
                // Removed (--rm): stopped.
                Err(ContainerError::NotFound(_)) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            if !matches!(
                c.state.status,
                Some(Status::Running | Status::Restarting | Status::Paused)
            ) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `wait`: blocks until the container stops; returns its exit code.
    pub fn wait(&self, name: &str) -> Result<i32, RunError> {
        let c = self.containers().resolve(name)?;
        loop {
            if self.wait_until_stopped(&c.id, Duration::from_secs(3600))? {
                return Ok(self
                    .containers()
                    .read(&c.id)
                    .map(|c| c.state.exit_code)
                    .unwrap_or(c.state.exit_code));
            }
        }
    }

    /// `rm [-f] [-v]`: refuses a running container unless forced; `-v` also
    /// removes its anonymous volumes.
    pub fn remove_with_volumes(
        &self,
        name: &str,
        force: bool,
        volumes: bool,
    ) -> Result<Container, RunError> {
        let c = self.remove(name, force)?;
        if volumes {
            for v in &c.anonymous_volumes {
                let _ = self.volumes().remove(v);
            }
        }
        Ok(c)
    }

    /// `rm [-f]`: refuses a running container unless forced.
    pub fn remove(&self, name: &str, force: bool) -> Result<Container, RunError> {
        let c = self.containers().resolve(name)?;
        let running = matches!(
            c.state.status,
            Some(Status::Running | Status::Restarting | Status::Paused)
        );
        if running && !force {
            return Err(ContainerError::State(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                c.name
            ))
            .into());
        }
        if running {
            self.containers()
                .update(&c.id, |c| c.state.stopping = true)?;
        }
        // A dead container (its monitor gone) may still have processes: the
        // cgroup finds every one of them.
        let cg = cgroups::manager(&CgroupConfig {
            name: c.id.clone(),
            parent: c.options.cgroup_parent.clone(),
        })?;
        let _ = cg.kill_all(libc::SIGKILL);
        if running {
            self.wait_until_stopped(&c.id, Duration::from_secs(10))?;
        }
        let _ = cg.remove();
        // A container whose monitor died still holds its network.
        crate::network::detach(self, &c.id);
        self.containers().delete(&c.id)?;
        Ok(c)
    }

    fn cgroup_of(&self, c: &Container) -> Result<Box<dyn cgroups::CgroupManager>, RunError> {
        Ok(cgroups::manager(&CgroupConfig {
            name: c.id.clone(),
            parent: c.options.cgroup_parent.clone(),
        })?)
    }

    fn running(&self, name: &str) -> Result<Container, RunError> {
        let c = self.containers().resolve(name)?;
        if !matches!(c.state.status, Some(Status::Running | Status::Paused)) {
            return Err(
                ContainerError::State(format!("container {} is not running", c.name)).into(),
            );
        }
        Ok(c)
    }

    /// `pause`: freezes every process of the container.
    pub fn pause(&self, name: &str) -> Result<Container, RunError> {
        let c = self.running(name)?;
        if c.state.status == Some(Status::Paused) {
            return Err(
                ContainerError::State(format!("container {} is already paused", c.name)).into(),
            );
        }
        self.cgroup_of(&c)?.freeze()?;
        Ok(self
            .containers()
            .update(&c.id, |c| c.state.status = Some(Status::Paused))?)
    }

    /// `unpause`.
    pub fn unpause(&self, name: &str) -> Result<Container, RunError> {
        let c = self.running(name)?;
        if c.state.status != Some(Status::Paused) {
            return Err(
                ContainerError::State(format!("container {} is not paused", c.name)).into(),
            );
        }
        self.cgroup_of(&c)?.thaw()?;
        Ok(self
            .containers()
            .update(&c.id, |c| c.state.status = Some(Status::Running))?)
    }

    /// cgroup statistics of a running container.
    pub fn stats(&self, name: &str) -> Result<(Container, cgroups::Stats), RunError> {
        let c = self.running(name)?;
        let s = self.cgroup_of(&c)?.stats()?;
        Ok((c, s))
    }

    /// PIDs of every process in the container.
    pub fn pids(&self, name: &str) -> Result<Vec<i32>, RunError> {
        let c = self.running(name)?;
        Ok(self.cgroup_of(&c)?.pids()?)
    }

    /// `exec`: runs `cmd` inside a running container with its capabilities,
    /// seccomp filter and cgroup; returns the exit code (0 at once with `detach`).
    pub fn exec(&self, name: &str, o: &ExecOptions) -> Result<i32, RunError> {
        let c = self.running(name)?;
        if c.state.status == Some(Status::Paused) {
            return Err(ContainerError::State(format!(
                "container {} is paused, unpause the container before exec",
                c.name
            ))
            .into());
        }
        let dir = self.containers().dir(&c.id);
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&fs::read(dir.join("config.json")).map_err(|source| {
                RunError::Io {
                    path: dir.join("config.json"),
                    source,
                }
            })?)
            .map_err(|e| RunError::Io {
                path: dir.join("config.json"),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| spec::SpecError("the container has no process".into()))?;
        if o.cmd.is_empty() {
            return Err(spec::SpecError("exec needs a command".into()).into());
        }
        process.set_args(Some(o.cmd.clone()));
        let mut env = process.env().clone().unwrap_or_default();
        for e in &o.env {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            if e.contains('=') {
                env.push(e.clone());
            } else if let Ok(v) = std::env::var(e) {
                env.push(format!("{e}={v}"));
            }
        }
        process.set_env(Some(env));
        if let Some(w) = &o.workdir {
            process.set_cwd(w.into());
        }
        if let Some(u) = &o.user {
            let img = self
                .images()
                .resolve(&c.image_id)
                .map_err(EngineError::from)?;
            let (uid, gid, _, extra) = spec::resolve_user(u, &self.images().lowerdirs(&img))?;
            let mut user = process.user().clone();
            user.set_uid(uid);
            user.set_gid(gid);
            user.set_additional_gids(Some(extra));
            process.set_user(user);
        }
        if c.options.isolation == crate::containers::vm::Isolation::Vm {
            let mut p = berth_runtime::microvm::spec::process_from_spec(&process, o.interactive);
            p.terminal = o.tty && !o.detach;
            p.stdin = o.interactive && !o.detach;
            if p.terminal {
                let (rows, cols) = stdio::our_size();
                p.size = Some(berth_agent::WindowSize { rows, cols });
            }
            return crate::containers::vm::exec(&dir, &p, o.detach);
        }
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(s) => Some(
                berth_runtime::seccomp::compile(s)
                    .map_err(|e| StartError::Setup(format!("seccomp: {e}")))?,
            ),
            None => None,
        };
        let cg = self.cgroup_of(&c)?;
        let io_err = |what: &str| {
            let path = std::path::PathBuf::from(what);
            move |source| RunError::Io { path, source }
        };
        let null = |w: bool| -> Result<Option<std::os::fd::OwnedFd>, RunError> {
            let f = fs::OpenOptions::new()
                .read(!w)
                .write(w)
                .open("/dev/null")
                .map_err(io_err("/dev/null"))?;
            Ok(Some(f.into()))
        };
        // -t (not detached): the process gets a pty slave as its terminal and we
        // relay between the master and our own stdin/stdout, as the monitor does.
        let mut master = None;
        // The container's own -t says nothing about this process's terminal.
        process.set_terminal(Some(false));
        let stdio = if o.detach {
            [null(false)?, null(true)?, null(true)?]
        } else if o.tty {
            // From the container's own devpts instance, so the process finds its
            // terminal under /dev/pts (`tty`, ttyname), as runc does.
            let ptmx = format!("/proc/{}/root/dev/pts/ptmx", c.state.pid);
            let (m, slave, _) =
                berth_runtime::linux::oci::open_pty(Path::new(&ptmx)).map_err(io_err(&ptmx))?;
            stdio::size_like_ours(&m);
            let _ = rustix::fs::fchown(
                &slave,
                Some(rustix::process::Uid::from_raw(process.user().uid())),
                None,
            );
            master = Some(m);
            let s0 = slave.try_clone().map_err(io_err("pty"))?;
            let s1 = slave.try_clone().map_err(io_err("pty"))?;
            process.set_terminal(Some(true));
            [Some(s0), Some(s1), Some(slave)]
        } else if o.interactive {
            [None, None, None]
        } else {
            [null(false)?, None, None]
        };
        let pid = berth_runtime::linux::exec::exec(
            c.state.pid,
            &process,
            seccomp.as_ref(),
            &mut |p| cg.add_process(p).map_err(|e| e.to_string()),
            stdio,
        )?;
        if o.detach {
            return Ok(0);
        }
        berth_runtime::linux::forward_signals(pid);
        if let Some(m) = master {
            let to = fs::File::from(m.try_clone().map_err(io_err("pty"))?);
            let input = if o.interactive {
                stdio::Input::Stdin { to }
            } else {
                stdio::Input::None
            };
            stdio::relay(stdio::Output::Tty(m.into()), input, &mut stdio::NoLog, true);
        }
        berth_runtime::linux::wait(pid).map_err(|source| RunError::Io {
            path: format!("pid {pid}").into(),
            source,
        })
    }

    /// A connection to the stdin of a running container created with `-i`
    /// (`start -i`): what is written to it reaches the process.
    pub fn attach_stdin(&self, name: &str) -> Result<std::os::unix::net::UnixStream, RunError> {
        let c = self.running(name)?;
        if !c.options.open_stdin {
            return Err(ContainerError::State(format!(
                "container {} was not created with -i: its stdin is closed",
                c.name
            ))
            .into());
        }
        let dir = self.containers().dir(&c.id);
        stdio::connect_attach(&dir).map_err(|source| RunError::Io {
            path: dir.join(stdio::ATTACH_SOCKET),
            source,
        })
    }

    /// `rename OLD NEW`.
    pub fn rename(&self, name: &str, new: &str) -> Result<Container, RunError> {
        let c = self.containers().resolve(name)?;
        let new = self.containers().name_for(Some(new), &c.id)?;
        Ok(self.containers().update(&c.id, |c| c.name = new)?)
    }

    /// `container prune`: removes every stopped container; returns their IDs.
    pub fn prune_containers(&self) -> Result<Vec<String>, RunError> {
        let mut out = Vec::new();
        for c in self.containers().list()? {
            if !matches!(
                c.state.status,
                Some(Status::Running | Status::Paused | Status::Restarting)
            ) {
                self.remove(&c.id, false)?;
                out.push(c.id);
            }
        }
        crate::network::clean_leftovers(self);
        Ok(out)
    }

    /// The log file of a container.
    pub fn log_path(&self, name: &str) -> Result<(Container, PathBuf), RunError> {
        let c = self.containers().resolve(name)?;
        let p = self.containers().dir(&c.id).join("container.log");
        Ok((c, p))
    }
}

fn monitor_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let base = berth_image::rfc3339(d.as_secs());
    format!("{}.{:09}Z", base.trim_end_matches('Z'), d.subsec_nanos())
}

/// `SIGTERM`, `TERM`, `15` → 15.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (n > 0 && n < 65).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_policies() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("kill"), Some(9));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("NOPE"), None);
        assert!(check_restart("on-failure:3", false).is_ok());
        assert!(check_restart("sometimes", false).is_err());
        assert!(check_restart("always", true).is_err());
    }
}
