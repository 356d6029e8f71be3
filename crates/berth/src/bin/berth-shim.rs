//! `berth-shim`: what a detached container's monitor becomes while its container runs.
//!
//! The monitor (`berth __monitor ID`, the whole berth binary) sets the container up and
//! starts it, then `execve`s this small program in the same process — same PID, still
//! the container's parent — so that what stays resident for the container's whole life
//! is only a relay loop: the container's output into its log (Docker's json-file lines,
//! rotated at 10 MiB), `start -i` clients' input into its stdin, and a `waitpid`. When
//! the container has exited it `execve`s back into the monitor with the exit status,
//! which records it, cleans up and applies the restart policy (and may start the
//! container and come back here).
//!
//! It uses std and libc (and one function of berth-runtime to give back its start-up
//! pages), nothing that is not needed in the loop, so berth's per-container cost
//! stays under 1 MiB (the berth binary, even after shedding its start-up pages, stays
//! near 1.6 MiB).
//!
//! Usage (argument order fixed; written by the monitor, not meant for people):
//!   berth-shim PID LOG OUT_FD ERR_FD LISTEN_FD TO_FD ONCE -- MONITOR_ARGV...
//! `ERR_FD` is -1 for a pty (one stream); `LISTEN_FD`/`TO_FD` are -1 without `-i`;
//! `ONCE` is 1 for Docker's StdinOnce. When the container is gone it runs
//! `MONITOR_ARGV... --exit-status STATUS --ran-ms MS`.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Rotate the log past this size, keeping one old file (as the monitor does).
const LOG_MAX: u64 = 10 << 20;
/// Docker splits lines longer than this.
const MAX_LINE: usize = 16 << 10;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        die("usage: berth-shim PID LOG OUT ERR LISTEN TO ONCE -- MONITOR_ARGV...");
    };
    let (ours, back) = (&args[..split], &args[split + 1..]);
    if ours.len() != 7 || back.is_empty() {
        die("usage: berth-shim PID LOG OUT ERR LISTEN TO ONCE -- MONITOR_ARGV...");
    }
    let num = |i: usize| -> i32 {
        ours[i]
            .to_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| die("bad numeric argument"))
    };
    let pid = num(0);
    let log_path = PathBuf::from(&ours[1]);
    let fd = |n: i32| (n >= 0).then_some(n as RawFd);
    let started = Instant::now();

    let mut log = Log::open(log_path);
    // Only the relay loop from here on: drop what loading and starting touched
    // (most of all, libc pages the dynamic loader faulted in).
    berth_runtime::memory::shed_startup_pages();
    relay(
        [fd(num(2)), fd(num(3))],
        fd(num(4)),
        fd(num(5)),
        num(6) == 1,
        &mut log,
    );
    log.flush();
    drop(log);
    let status = wait(pid);

    // Back to the monitor, which records the status and decides what comes next.
    let mut argv: Vec<CString> = back
        .iter()
        .map(|a| CString::new(a.clone().into_vec()).unwrap_or_else(|_| die("NUL in argv")))
        .collect();
    argv.push(c"--exit-status".into());
    argv.push(CString::new(status.to_string()).expect("digits"));
    argv.push(c"--ran-ms".into());
    argv.push(CString::new(started.elapsed().as_millis().to_string()).expect("digits"));
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv is a NULL-terminated array of pointers to live C strings; on
    // success execv does not return.
    unsafe { libc::execv(argv[0].as_ptr(), ptrs.as_ptr()) };
    die(&format!(
        "cannot return to the monitor {:?}: {}",
        argv[0],
        io::Error::last_os_error()
    ));
}

fn die(msg: &str) -> ! {
    let _ = writeln!(io::stderr(), "berth-shim: {msg}");
    std::process::exit(125);
}

/// Waits for the container's init; its exit code, or 128 + the signal that ended it.
fn wait(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
            continue;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // Not our child any more (cannot happen) or already reaped: unknown.
            return 255;
        }
    }
}

/// Copies output to the log and attach clients' input to the container's stdin until
/// every output is closed.
fn relay(
    outs: [Option<RawFd>; 2],
    listener: Option<RawFd>,
    to: Option<RawFd>,
    once: bool,
    log: &mut Log,
) {
    // SAFETY: the monitor passed these descriptors to us and nothing else here owns them.
    let mut outs: [Option<File>; 2] = outs.map(|f| f.map(|fd| unsafe { File::from_raw_fd(fd) }));
    // SAFETY: as above.
    let mut to: Option<File> = to.map(|fd| unsafe { File::from_raw_fd(fd) });
    let tty = outs[1].is_none();
    let mut client: Option<File> = None;
    let mut buf = vec![0u8; 16 << 10];
    while outs.iter().any(Option::is_some) {
        use std::os::fd::AsRawFd;
        let mut polls: Vec<libc::pollfd> = Vec::with_capacity(3);
        let mut slots: Vec<u8> = Vec::with_capacity(3);
        for (i, f) in outs.iter().enumerate() {
            if let Some(f) = f {
                polls.push(pollfd(f.as_raw_fd()));
                slots.push(i as u8);
            }
        }
        match (&client, listener) {
            (Some(c), _) => {
                polls.push(pollfd(c.as_raw_fd()));
                slots.push(b'c');
            }
            (None, Some(l)) if to.is_some() => {
                polls.push(pollfd(l));
                slots.push(b'l');
            }
            _ => {}
        }
        // SAFETY: `polls` is a live array of `polls.len()` pollfd structs.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for (p, slot) in polls.iter().zip(&slots) {
            if p.revents == 0 {
                continue;
            }
            match slot {
                0 | 1 => {
                    let i = *slot as usize;
                    let f = outs[i].as_mut().expect("polled output is open");
                    match f.read(&mut buf) {
                        // A pty master reads EIO once every slave is closed.
                        Ok(0) | Err(_) => outs[i] = None,
                        Ok(n) => log.write(i, &buf[..n]),
                    }
                }
                b'l' => {
                    let l = listener.expect("polled listener");
                    // SAFETY: accept4 on our listening socket; no address wanted.
                    let c = unsafe {
                        libc::accept4(
                            l,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    if c >= 0 {
                        // SAFETY: accept4 just gave us this descriptor.
                        client = Some(unsafe { File::from_raw_fd(c) });
                    }
                }
                _ => {
                    let c = client.as_mut().expect("polled client");
                    let n = c.read(&mut buf).unwrap_or(0);
                    let written =
                        n > 0 && to.as_mut().is_some_and(|t| t.write_all(&buf[..n]).is_ok());
                    if !written {
                        client = None;
                        if once && !tty {
                            to = None; // StdinOnce: the process sees the end of its input.
                        }
                    }
                }
            }
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Docker json-file log lines, exactly as the monitor writes them.
struct Log {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    partial: [Vec<u8>; 2],
}

impl Log {
    fn open(path: PathBuf) -> Log {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Log {
            path,
            file,
            size,
            partial: [Vec::new(), Vec::new()],
        }
    }

    fn write(&mut self, stream: usize, data: &[u8]) {
        self.partial[stream].extend_from_slice(data);
        while let Some(i) = self.partial[stream].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial[stream].drain(..=i).collect();
            self.record(stream, &line);
        }
        if self.partial[stream].len() >= MAX_LINE {
            let line = std::mem::take(&mut self.partial[stream]);
            self.record(stream, &line);
        }
    }

    fn flush(&mut self) {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                let line = std::mem::take(&mut self.partial[s]);
                self.record(s, &line);
            }
        }
    }

    fn record(&mut self, stream: usize, line: &[u8]) {
        let mut entry = String::with_capacity(line.len() + 80);
        entry.push_str("{\"log\":");
        json_string(&mut entry, &String::from_utf8_lossy(line));
        entry.push_str(if stream == 0 {
            ",\"stream\":\"stdout\",\"time\":\""
        } else {
            ",\"stream\":\"stderr\",\"time\":\""
        });
        entry.push_str(&now());
        entry.push_str("\"}\n");
        if self.size + entry.len() as u64 > LOG_MAX {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            if std::fs::rename(&self.path, &old).is_ok() {
                self.file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .ok();
                self.size = 0;
            }
        }
        // A log that cannot be written must not stop the container.
        if let Some(f) = &mut self.file
            && f.write_all(entry.as_bytes()).is_ok()
        {
            self.size += entry.len() as u64;
        }
    }
}

/// Appends `s` as a JSON string (what serde_json writes: `"`, `\`, and control
/// characters escaped; everything else as is).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 UTC with nanoseconds, as the monitor writes it.
fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = berth_engine::image::rfc3339(d.as_secs());
    format!("{}.{:09}Z", secs.trim_end_matches('Z'), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde() {
        for s in [
            "plain",
            "q\"b\\",
            "tab\tnl\ncr\r",
            "\u{1}\u{1f}",
            "ünï",
            "\u{7f}",
        ] {
            let mut ours = String::new();
            json_string(&mut ours, s);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn time_is_rfc3339() {
        let t = now();
        assert_eq!(t.len(), "2026-11-23T07:39:55.123456789Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
