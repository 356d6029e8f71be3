//! The monitor: one small, single-threaded process per running container
//! (berth re-executed, or the CLI itself for a foreground `run`). It places
//! the container in its cgroup, starts it, copies its stdout and stderr into
//! the log (and to the terminal in the foreground), records the exit status
//! and OOM kills, applies the restart policy, and removes `--rm` containers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::cgroups::{self, CgroupConfig, CgroupManager};
use berth_runtime::linux::{self, SpawnOptions};
use oci_spec::runtime::Spec;

use super::Status;
use super::stdio::{self, Input, Output};
use crate::Engine;

/// Rotate the log when it grows past this many bytes (one old file kept).
pub const LOG_MAX: u64 = 10 << 20;

/// Start time of a process in clock ticks since boot (field 22 of stat).
pub fn start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is still the process that started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let base = berth_image::rfc3339(d.as_secs());
    format!("{}.{:09}Z", base.trim_end_matches('Z'), d.subsec_nanos())
}

/// Appends Docker json-file log lines.
pub(super) struct Log {
    path: std::path::PathBuf,
    file: File,
    size: u64,
    partial: [Vec<u8>; 2],
}

impl Log {
    pub(super) fn open(path: &Path) -> io::Result<Log> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Log {
            path: path.to_path_buf(),
            file,
            size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    pub(super) fn write(&mut self, stream: usize, data: &[u8]) -> io::Result<()> {
        self.partial[stream].extend_from_slice(data);
        while let Some(i) = self.partial[stream].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[stream].drain(..=i).collect();
            self.record(stream, &line)?;
        }
        // Very long lines are split, as Docker does at 16 KiB.
        if self.partial[stream].len() >= 16 << 10 {
            let line = std::mem::take(&mut self.partial[stream]);
            self.record(stream, &line)?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let line = std::mem::take(&mut self.partial[s]);
                self.record(s, &line)?;
            }
        }
        Ok(())
    }

    pub(super) fn record(&mut self, stream: usize, line: &[u8]) -> io::Result<()> {
        let entry = serde_json::json!({
            "log": String::from_utf8_lossy(line),
            "stream": if stream == 0 { "stdout" } else { "stderr" },
            "time": now(),
        });
        let mut bytes = serde_json::to_vec(&entry).expect("json");
        bytes.push(b'\n');
        if self.size + bytes.len() as u64 > LOG_MAX {
            let old = self.path.with_extension("log.1");
            fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

impl stdio::Sink for Log {
    fn write(&mut self, stream: usize, data: &[u8]) {
        // A log that cannot be written must not stop the container.
        let _ = Log::write(self, stream, data);
    }
}

/// Whether the restart policy asks for another run.
pub fn should_restart(policy: &str, code: i32, restarts: u32, stopping: bool) -> bool {
    if stopping {
        return false;
    }
    let (name, max) = policy.split_once(':').unwrap_or((policy, ""));
    match name {
        "always" | "unless-stopped" => true,
        "on-failure" => code != 0 && max.parse::<u32>().map_or(true, |m| restarts < m),
        _ => false,
    }
}

/// How the monitor reports back.
pub enum Mode<'a> {
    /// Detached: report "started" (or the error) on this pipe, then keep going.
    Detached(Option<OwnedFd>),
    /// Foreground: also copy output to our stdout/stderr and forward signals;
    /// the container's stdin is ours when `stdin` is set.
    Foreground {
        /// Attach stdin.
        stdin: bool,
        /// Warnings go here.
        warn: &'a mut dyn FnMut(String),
    },
}

/// Runs a created container to completion (including restarts) and returns
/// its last exit code. Errors before the first start are returned as such.
pub fn run(
    engine: &Engine,
    id: &str,
    mut mode: Mode<'_>,
    resume: Option<Resume>,
) -> Result<i32, crate::run::RunError> {
    let cs = engine.containers();
    let dir = cs.dir(id);
    let rec = cs.read(id)?;
    let mut spec: Spec =
        serde_json::from_slice(&fs::read(dir.join("config.json")).map_err(|source| {
            crate::run::RunError::Io {
                path: dir.join("config.json"),
                source,
            }
        })?)
        .map_err(|e| crate::run::RunError::Io {
            path: dir.join("config.json"),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
    if let Some(p) = spec.process_mut()
        && p.terminal() == Some(true)
    {
        let (rows, cols) = stdio::our_size();
        let size = oci_spec::runtime::BoxBuilder::default()
            .height(u32::from(rows))
            .width(u32::from(cols))
            .build()
            .expect("a box with both sides");
        p.set_console_size(Some(size));
    }
    let overlay = engine.overlay_for(&rec)?;
    let me = std::process::id() as i32;
    let my_start = start_time(me).unwrap_or(0);
    let mut log =
        Log::open(&dir.join("container.log")).map_err(|source| crate::run::RunError::Io {
            path: dir.join("container.log"),
            source,
        })?;
    let mut first = resume.is_none();
    let mut backoff = resume
        .as_ref()
        .map_or(Duration::from_millis(100), |r| r.backoff);
    // A detached container with an open stdin (-i) takes input from `start -i`
    // clients through this socket; it lives as long as the monitor, across restarts
    // (and through the shim), but each run gets its own stdin.
    let attach_socket = match (&resume, &mode) {
        (Some(r), _) => r.listener.take_listener(),
        (None, Mode::Detached(_)) if rec.options.open_stdin => {
            Some(stdio::bind_attach(&dir).map_err(io_err(&dir))?)
        }
        _ => None,
    };
    let mut resumed = resume.map(|r| (r.status, r.ran));
    let code = loop {
        let cg = cgroups::manager(&CgroupConfig {
            name: id.to_string(),
            parent: rec.options.cgroup_parent.clone(),
        })?;
        let cleanup = |cg: &dyn CgroupManager| {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.remove();
        };
        let (code, ran) = match resumed.take() {
            // The shim watched the run; here is how it ended.
            Some(ended) => ended,
            None if rec.options.isolation == super::vm::Isolation::Vm => {
                let attach = match &attach_socket {
                    Some(l) => Some(l.try_clone().map_err(io_err(&dir))?),
                    None => None,
                };
                // The hypervisor joins the cgroup (for `stop`'s last resort, stats and
                // cleanup); the limits are the guest's own (vCPUs, RAM), not the cgroup's.
                cg.create()?;
                let mut running = |pid: i32, info: &super::vm::VmInfo| {
                    mark_running(engine, id, pid, (me, my_start), Some(info))
                };
                let outcome = super::vm::run_once(
                    engine,
                    &rec,
                    &spec,
                    &mut mode,
                    &mut log,
                    cg.as_ref(),
                    attach,
                    &mut running,
                );
                match outcome {
                    Ok(r) => r,
                    Err(e) => {
                        cleanup(cg.as_ref());
                        crate::network::detach(engine, id);
                        match start_failed(engine, id, e, first, &mut mode) {
                            Ok(code) => break code,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            None => {
                let mut attach = match &attach_socket {
                    Some(l) => Some(l.try_clone().map_err(io_err(&dir))?),
                    None => None,
                };
                cg.create()?;
                if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref())
                    && let Err(e) = cg.apply(r)
                {
                    cleanup(cg.as_ref());
                    return Err(e.into());
                }
                let tty = spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.terminal())
                    .unwrap_or(false);
                let interactive = matches!(mode, Mode::Foreground { stdin: true, .. });
                // With -t the process gets a pty slave as stdin/stdout/stderr and we
                // keep the master; without, two pipes (stdout, stderr), and for a
                // detached container with an open stdin (-i) a third pipe fed from
                // the attach socket.
                // The pty is allocated by the container's init from the container's own
                // devpts (so the process finds its terminal under /dev/pts, as with runc)
                // and its master sent back over this socket pair.
                let mut console: Option<UnixStream> = None;
                let mut init_options = None;
                let (output, input, stdio) = if tty {
                    let (ours, theirs) = UnixStream::pair().map_err(io_err(&dir))?;
                    console = Some(ours);
                    init_options = Some(linux::oci::InitOptions {
                        console_socket: Some(theirs.into()),
                        ..Default::default()
                    });
                    (None, Input::None, [None, None, None])
                } else {
                    let (out_r, out_w) = std::io::pipe().map_err(io_err(&dir))?;
                    let (err_r, err_w) = std::io::pipe().map_err(io_err(&dir))?;
                    let (input, stdin): (Input, Option<OwnedFd>) = match attach.take() {
                        Some(listener) => {
                            let (r, w) = std::io::pipe().map_err(io_err(&dir))?;
                            let input = Input::Attach {
                                listener,
                                to: Some(File::from(OwnedFd::from(w))),
                                once: rec.options.stdin_once,
                            };
                            (input, Some(r.into()))
                        }
                        // The process reads our own stdin directly.
                        None if interactive => (Input::None, None),
                        None => (
                            Input::None,
                            Some(File::open("/dev/null").map_err(io_err(&dir))?.into()),
                        ),
                    };
                    (
                        Some(Output::Pipes(
                            File::from(OwnedFd::from(out_r)),
                            File::from(OwnedFd::from(err_r)),
                        )),
                        input,
                        [stdin, Some(out_w.into()), Some(err_w.into())],
                    )
                };
                let mut warnings = Vec::new();
                let started = linux::spawn(SpawnOptions {
                    spec: &spec,
                    rootfs: dir.join("rootfs"),
                    overlay: Some(overlay.clone()),
                    before_start: &mut |pid| {
                        cg.add_process(pid).map_err(|e| e.to_string())?;
                        // Network: pin the namespace, CNI ADD (network.rs).
                        crate::network::attach(engine, &rec, pid)
                    },
                    warn: &mut |w| warnings.push(w),
                    stdio,
                    oci: init_options,
                });
                for w in warnings {
                    match &mut mode {
                        Mode::Foreground { warn, .. } => warn(w),
                        Mode::Detached(_) => {
                            let _ = log.record(1, format!("berth: WARNING: {w}\n").as_bytes());
                        }
                    }
                }
                let pid = match started {
                    Ok(pid) => pid,
                    Err(e) => {
                        cleanup(cg.as_ref());
                        crate::network::detach(engine, id);
                        match start_failed(engine, id, e.into(), first, &mut mode) {
                            Ok(code) => break code,
                            Err(e) => return Err(e),
                        }
                    }
                };
                mark_running(engine, id, pid, (me, my_start), None)?;
                if first && let Mode::Detached(fd) = &mut mode {
                    // Closing the pipe with nothing written means "started".
                    drop(fd.take());
                }
                if let Mode::Foreground { .. } = mode {
                    linux::forward_signals(pid);
                }
                let ran_since = Instant::now();
                let foreground = matches!(mode, Mode::Foreground { .. });
                let (output, input) = match console {
                    Some(sock) => match tty_streams(&sock, attach.take(), interactive, &rec) {
                        Ok(streams) => streams,
                        Err(e) => {
                            // Without its terminal the process cannot be watched: end it.
                            // SAFETY: kill takes integers; `pid` is our child.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                            let _ = log.record(
                                1,
                                format!("berth: the container's terminal: {e}\n").as_bytes(),
                            );
                            (
                                Output::Pipes(
                                    File::open("/dev/null").map_err(io_err(&dir))?,
                                    File::open("/dev/null").map_err(io_err(&dir))?,
                                ),
                                Input::None,
                            )
                        }
                    },
                    None => (output.expect("pipes without a pty"), input),
                };
                if !foreground {
                    // From here until the process exits the monitor only relays and logs:
                    // the small shim does that instead of all of berth, or, without it,
                    // berth lets go of what starting the container needed.
                    if let Some(shim) = shim_path() {
                        let e = exec_shim(&shim, engine, id, pid, &output, &input, backoff);
                        let _ = log.record(
                            1,
                            format!("berth: WARNING: {}: {e}\n", shim.display()).as_bytes(),
                        );
                    }
                    berth_runtime::memory::shed_startup_pages();
                }
                stdio::relay(output, input, &mut log, foreground);
                let _ = log.flush();
                let code = linux::wait(pid).map_err(io_err(&dir))?;
                (code, ran_since.elapsed())
            }
        };
        let oom = cg
            .stats()
            .is_ok_and(|s| s.memory.is_some_and(|m| m.oom_kills > 0));
        cleanup(cg.as_ref());
        // Network: CNI DEL, unpin (network.rs).
        crate::network::detach(engine, id);
        let c = cs.update(id, |c| {
            c.state.status = Some(Status::Exited);
            c.state.pid = 0;
            c.state.exit_code = code;
            c.state.oom_killed = oom;
            c.state.finished_at = now();
        })?;
        if oom && let Mode::Foreground { warn, .. } = &mut mode {
            warn("the container was killed because it ran out of memory (OOM)".into());
        }
        first = false;
        if !should_restart(&c.restart, code, c.state.restart_count, c.state.stopping) {
            break code;
        }
        // Exponential backoff, reset after a run that lasted 10 s (as Docker).
        if ran > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        cs.update(id, |c| {
            c.state.status = Some(Status::Restarting);
            c.state.restart_count += 1;
        })?;
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(60));
        if cs.read(id).map(|c| c.state.stopping).unwrap_or(true) {
            cs.update(id, |c| c.state.status = Some(Status::Exited))?;
            break code;
        }
    };
    if attach_socket.is_some() {
        let _ = fs::remove_file(dir.join(stdio::ATTACH_SOCKET));
    }
    if let Ok(c) = cs.read(id)
        && c.auto_remove
    {
        let _ = cs.delete(id);
        // --rm also removes the container's anonymous volumes, as Docker does.
        for v in &c.anonymous_volumes {
            let _ = engine.volumes().remove(v);
        }
    }
    Ok(code)
}

/// Records that the process runs: its PID (a VM's: the hypervisor's), the
/// monitor (PID, start time) watching it, and for a VM what it runs on.
fn mark_running(
    engine: &Engine,
    id: &str,
    pid: i32,
    monitor: (i32, u64),
    vm: Option<&super::vm::VmInfo>,
) -> Result<(), crate::run::RunError> {
    engine.containers().update(id, |c| {
        c.state.status = Some(Status::Running);
        c.state.pid = pid;
        (c.state.monitor_pid, c.state.monitor_start) = monitor;
        c.state.started_at = now();
        c.state.error.clear();
        c.state.oom_killed = false;
        c.state.vm = vm.cloned();
    })?;
    Ok(())
}

/// Records a failed start. The first start's error goes back to `start`
/// (on the pipe, detached) and is returned; a restart's ends the loop with
/// its exit code.
fn start_failed(
    engine: &Engine,
    id: &str,
    e: crate::run::RunError,
    first: bool,
    mode: &mut Mode<'_>,
) -> Result<i32, crate::run::RunError> {
    let code = e.exit_code();
    let msg = e.to_string();
    engine.containers().update(id, |c| {
        c.state.status = Some(Status::Exited);
        c.state.exit_code = code;
        c.state.error = msg.clone();
        c.state.finished_at = now();
    })?;
    if !first {
        return Ok(code);
    }
    if let Mode::Detached(Some(fd)) = mode {
        let dir = engine.containers().dir(id);
        let _ = File::from(fd.try_clone().map_err(io_err(&dir))?)
            .write_all(format!("{code}:{msg}").as_bytes());
    }
    Err(e)
}

/// Where a monitor that execs back from the shim picks up (`__monitor ID
/// --exit-status N --ran-ms MS --backoff-ms MS --listen-fd FD`).
pub struct Resume {
    /// The container's exit code (128 + signal when killed).
    pub status: i32,
    /// How long the run lasted.
    pub ran: Duration,
    /// The restart backoff in force.
    pub backoff: Duration,
    /// The attach socket, inherited through the shim.
    pub listener: InheritedListener,
}

/// A listening socket inherited across `execve` by descriptor number.
pub struct InheritedListener(std::cell::Cell<Option<std::os::fd::RawFd>>);

impl InheritedListener {
    /// Descriptor `fd` (negative: none).
    pub fn new(fd: i32) -> InheritedListener {
        InheritedListener(std::cell::Cell::new((fd >= 0).then_some(fd)))
    }

    fn take_listener(&self) -> Option<std::os::unix::net::UnixListener> {
        use std::os::fd::FromRawFd;
        let fd = self.0.take()?;
        // SAFETY: the shim passed this descriptor on for us by number and nothing
        // else in this process owns it.
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        // Not inherited by the container we may start again.
        rustix::io::fcntl_setfd(&l, rustix::io::FdFlags::CLOEXEC).ok()?;
        Some(l)
    }
}

/// `berth-shim` next to this executable, if it is there.
fn shim_path() -> Option<std::path::PathBuf> {
    let p = std::env::current_exe().ok()?.with_file_name("berth-shim");
    p.is_file().then_some(p)
}

/// Replaces this process with the shim, which relays `output`/`input` for `pid` and
/// execs back into `berth __monitor ID` with the exit status. Returns only on failure.
fn exec_shim(
    shim: &Path,
    engine: &Engine,
    id: &str,
    pid: i32,
    output: &Output,
    input: &Input,
    backoff: Duration,
) -> io::Error {
    use std::ffi::CString;
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::ffi::OsStrExt;
    let inherit = |fd: std::os::fd::BorrowedFd<'_>| -> io::Result<i32> {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        Ok(fd.as_raw_fd())
    };
    let run = || -> io::Result<io::Error> {
        let (out, err) = match output {
            Output::Tty(m) => (inherit(m.as_fd())?, -1),
            Output::Pipes(o, e) => (inherit(o.as_fd())?, inherit(e.as_fd())?),
        };
        let (listen, to, once) = match input {
            Input::Attach { listener, to, once } => (
                inherit(listener.as_fd())?,
                match to {
                    Some(t) => inherit(t.as_fd())?,
                    None => -1,
                },
                *once,
            ),
            // A detached monitor never reads its own stdin.
            _ => (-1, -1, false),
        };
        let exe = std::env::current_exe()?;
        let dir = engine.containers().dir(id);
        let mut args: Vec<Vec<u8>> = vec![shim.as_os_str().as_bytes().to_vec()];
        for a in [
            pid.to_string(),
            dir.join("container.log").display().to_string(),
            out.to_string(),
            err.to_string(),
            listen.to_string(),
            to.to_string(),
            u8::from(once).to_string(),
        ] {
            args.push(a.into_bytes());
        }
        args.push(b"--".to_vec());
        args.push(exe.as_os_str().as_bytes().to_vec());
        args.push(b"--root".to_vec());
        args.push(engine.root().as_os_str().as_bytes().to_vec());
        for a in [
            "__monitor".to_string(),
            id.to_string(),
            "--backoff-ms".into(),
            backoff.as_millis().to_string(),
            "--listen-fd".into(),
            listen.to_string(),
        ] {
            args.push(a.into_bytes());
        }
        let args: Vec<CString> = args
            .into_iter()
            .map(|a| CString::new(a).map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: a NULL-terminated array of pointers to live C strings; execv only
        // returns on failure. The monitor is single-threaded here.
        unsafe { libc::execv(args[0].as_ptr(), ptrs.as_ptr()) };
        Ok(io::Error::last_os_error())
    };
    run().unwrap_or_else(|e| e)
}

/// The master of the pty the init sent over `sock`, sized like our terminal, and
/// where its input comes from.
fn tty_streams(
    sock: &UnixStream,
    attach: Option<std::os::unix::net::UnixListener>,
    interactive: bool,
    rec: &super::Container,
) -> io::Result<(Output, Input)> {
    let (master, _) = linux::oci::recv_fd(sock)?;
    stdio::size_like_ours(&master);
    let to = File::from(master.try_clone()?);
    let input = match attach {
        Some(listener) => Input::Attach {
            listener,
            to: Some(to),
            once: rec.options.stdin_once,
        },
        None if interactive => Input::Stdin { to },
        None => Input::None,
    };
    Ok((Output::Tty(File::from(master)), input))
}

fn io_err(p: &Path) -> impl Fn(io::Error) -> crate::run::RunError + '_ {
    move |source| crate::run::RunError::Io {
        path: p.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(!should_restart("no", 1, 0, false));
        assert!(should_restart("always", 0, 5, false));
        assert!(!should_restart("always", 0, 5, true));
        assert!(should_restart("on-failure", 1, 100, false));
        assert!(!should_restart("on-failure", 0, 0, false));
        assert!(should_restart("on-failure:3", 1, 2, false));
        assert!(!should_restart("on-failure:3", 1, 3, false));
        assert!(should_restart("unless-stopped", 0, 0, false));
    }

    #[test]
    fn own_start_time() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
    }
}
