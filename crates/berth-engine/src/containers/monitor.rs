//! The monitor: one small, single-threaded process per running container
//! (berth re-executed, or the CLI itself for a foreground `run`). It places
//! the container in its cgroup, starts it, copies its stdout and stderr into
//! the log (and to the terminal in the foreground), records the exit status
//! and OOM kills, applies the restart policy, and removes `--rm` containers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::cgroups::{self, CgroupConfig, CgroupManager};
use berth_runtime::linux::{self, SpawnOptions};
use oci_spec::runtime::Spec;

use super::Status;
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
struct Log {
    path: std::path::PathBuf,
    file: File,
    size: u64,
    partial: [Vec<u8>; 2],
}

impl Log {
    fn open(path: &Path) -> io::Result<Log> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Log {
            path: path.to_path_buf(),
            file,
            size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn write(&mut self, stream: usize, data: &[u8]) -> io::Result<()> {
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

    fn flush(&mut self) -> io::Result<()> {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let line = std::mem::take(&mut self.partial[s]);
                self.record(s, &line)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, stream: usize, line: &[u8]) -> io::Result<()> {
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
pub fn run(engine: &Engine, id: &str, mut mode: Mode<'_>) -> Result<i32, crate::run::RunError> {
    let cs = engine.containers();
    let dir = cs.dir(id);
    let rec = cs.read(id)?;
    let spec: Spec =
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
    let overlay = engine.overlay_for(&rec)?;
    let me = std::process::id() as i32;
    let my_start = start_time(me).unwrap_or(0);
    let mut log =
        Log::open(&dir.join("container.log")).map_err(|source| crate::run::RunError::Io {
            path: dir.join("container.log"),
            source,
        })?;
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    let code = loop {
        let cg = cgroups::manager(&CgroupConfig {
            name: id.to_string(),
            parent: rec.options.cgroup_parent.clone(),
        })?;
        cg.create()?;
        let cleanup = |cg: &dyn CgroupManager| {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.remove();
        };
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
        // keep the master; without, two pipes (stdout, stderr).
        let (streams, stdio) = if tty {
            let (master, slave) = open_pty().map_err(io_err(&dir))?;
            let s0 = slave.try_clone().map_err(io_err(&dir))?;
            let s1 = slave.try_clone().map_err(io_err(&dir))?;
            (Streams::Tty(master), [Some(s0), Some(s1), Some(slave)])
        } else {
            let (out_r, out_w) = std::io::pipe().map_err(io_err(&dir))?;
            let (err_r, err_w) = std::io::pipe().map_err(io_err(&dir))?;
            let stdin: Option<OwnedFd> = if interactive {
                None
            } else {
                Some(File::open("/dev/null").map_err(io_err(&dir))?.into())
            };
            (
                Streams::Pipes(out_r.into(), err_r.into()),
                [stdin, Some(out_w.into()), Some(err_w.into())],
            )
        };
        let mut warnings = Vec::new();
        let started = linux::spawn(SpawnOptions {
            spec: &spec,
            rootfs: dir.join("rootfs"),
            overlay: Some(overlay.clone()),
            before_start: &mut |pid| cg.add_process(pid).map_err(|e| e.to_string()),
            warn: &mut |w| warnings.push(w),
            stdio,
            oci: None,
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
                let code = e.exit_code();
                let msg = e.to_string();
                cs.update(id, |c| {
                    c.state.status = Some(Status::Exited);
                    c.state.exit_code = code;
                    c.state.error = msg.clone();
                    c.state.finished_at = now();
                })?;
                if first {
                    if let Mode::Detached(Some(fd)) = &mut mode {
                        let _ = File::from(fd.try_clone().map_err(io_err(&dir))?)
                            .write_all(format!("{code}:{msg}").as_bytes());
                    }
                    return Err(e.into());
                }
                break code;
            }
        };
        cs.update(id, |c| {
            c.state.status = Some(Status::Running);
            c.state.pid = pid;
            c.state.monitor_pid = me;
            c.state.monitor_start = my_start;
            c.state.started_at = now();
            c.state.error.clear();
            c.state.oom_killed = false;
        })?;
        if first && let Mode::Detached(fd) = &mut mode {
            // Closing the pipe with nothing written means "started".
            drop(fd.take());
        }
        if let Mode::Foreground { .. } = mode {
            linux::forward_signals(pid);
        }
        let ran_since = Instant::now();
        let foreground = matches!(mode, Mode::Foreground { .. });
        match streams {
            Streams::Pipes(out, err) => relay(out, err, &mut log, foreground),
            Streams::Tty(master) => relay_tty(master, &mut log, foreground, interactive),
        }
        let _ = log.flush();
        let code = linux::wait(pid).map_err(io_err(&dir))?;
        let oom = cg
            .stats()
            .is_ok_and(|s| s.memory.is_some_and(|m| m.oom_kills > 0));
        cleanup(cg.as_ref());
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
        if ran_since.elapsed() > Duration::from_secs(10) {
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

fn io_err(p: &Path) -> impl Fn(io::Error) -> crate::run::RunError + '_ {
    move |source| crate::run::RunError::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// The container's output channels.
enum Streams {
    /// stdout and stderr pipes.
    Pipes(OwnedFd, OwnedFd),
    /// The pty master (stdout and stderr are one stream).
    Tty(OwnedFd),
}

/// A new pty pair: (master, slave), sized like our own terminal if we have one.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?
        .into();
    if rustix::termios::tcgetwinsize(io::stdin())
        .or_else(|_| rustix::termios::tcgetwinsize(io::stdout()))
        .is_err()
    {
        // No terminal of ours to follow: a classic 24x80.
        let ws = rustix::termios::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(&master, ws);
    }
    copy_winsize(&master);
    Ok((master, slave))
}

/// Copies our terminal's window size (stdin or stdout) to the pty.
fn copy_winsize(master: &OwnedFd) {
    use rustix::termios::{tcgetwinsize, tcsetwinsize};
    let ws = tcgetwinsize(io::stdin()).or_else(|_| tcgetwinsize(io::stdout()));
    if let Ok(ws) = ws {
        let _ = tcsetwinsize(master, ws);
    }
}

static WINCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Puts our stdin terminal into raw mode until dropped.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let Ok(orig) = tcgetattr(io::stdin()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        raw.make_raw();
        let _ = tcsetattr(io::stdin(), OptionalActions::Now, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ =
                rustix::termios::tcsetattr(io::stdin(), rustix::termios::OptionalActions::Now, t);
        }
    }
}

/// Copies the pty's output to the log (and our stdout), our stdin to the pty
/// when interactive, and our window size changes to it, until the pty closes.
fn relay_tty(master: OwnedFd, log: &mut Log, echo: bool, interactive: bool) {
    let _raw = (echo && interactive && rustix::termios::isatty(io::stdin())).then(RawMode::enter);
    if echo {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t) };
    }
    let mut m = File::from(master);
    let mut stdin_open = echo && interactive;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if WINCH.swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Ok(fd) = m.try_clone()
        {
            copy_winsize(&OwnedFd::from(fd));
        }
        let stdin = io::stdin();
        let mut polls = vec![rustix::event::PollFd::new(&m, rustix::event::PollFlags::IN)];
        if stdin_open {
            polls.push(rustix::event::PollFd::new(
                &stdin,
                rustix::event::PollFlags::IN,
            ));
        }
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        match rustix::event::poll(&mut polls, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
        let master_ready = !polls[0].revents().is_empty();
        let stdin_ready = polls.get(1).is_some_and(|p| !p.revents().is_empty());
        drop(polls);
        if master_ready {
            match m.read(&mut buf) {
                // EIO: every slave descriptor is closed — the container is gone.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = log.write(0, &buf[..n]);
                    if echo {
                        let mut out = io::stdout().lock();
                        let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                    }
                }
            }
        }
        if stdin_ready {
            match io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = m.write_all(&buf[..n]);
                }
            }
        }
    }
}

/// Copies both pipes into the log (and our own stdout/stderr) until both close.
fn relay(out: OwnedFd, err: OwnedFd, log: &mut Log, echo: bool) {
    let mut fds = [Some(File::from(out)), Some(File::from(err))];
    let mut buf = vec![0u8; 64 << 10];
    while fds.iter().any(Option::is_some) {
        let mut polls: Vec<rustix::event::PollFd> = Vec::new();
        let mut which = Vec::new();
        for (i, f) in fds.iter().enumerate() {
            if let Some(f) = f {
                polls.push(rustix::event::PollFd::new(f, rustix::event::PollFlags::IN));
                which.push(i);
            }
        }
        match rustix::event::poll(&mut polls, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<(usize, bool)> = polls
            .iter()
            .zip(&which)
            .map(|(p, i)| (*i, !p.revents().is_empty()))
            .collect();
        drop(polls);
        for (i, is_ready) in ready {
            if !is_ready {
                continue;
            }
            let f = fds[i].as_mut().expect("polled fd is open");
            match f.read(&mut buf) {
                Ok(0) | Err(_) => fds[i] = None,
                Ok(n) => {
                    let _ = log.write(i, &buf[..n]);
                    if echo {
                        let _ = if i == 0 {
                            io::stdout()
                                .write_all(&buf[..n])
                                .and_then(|_| io::stdout().flush())
                        } else {
                            io::stderr().write_all(&buf[..n])
                        };
                    }
                }
            }
        }
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
