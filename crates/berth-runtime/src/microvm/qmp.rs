//! A small client for QMP, QEMU's JSON control protocol: one command at a
//! time over a Unix socket, events skipped. Enough to stop a VM and save
//! its state; no QMP crate is needed for that.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A QMP session past the capabilities handshake.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the QMP socket at `path`, waiting up to `timeout` for
    /// QEMU to create it, and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Qmp> {
        let until = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < until && retryable(&e) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_read_timeout(Some(timeout))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        // The greeting: {"QMP": {"version": …, "capabilities": […]}}.
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::other(format!("not a QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Runs one command; its `return` value, or its `error` as an error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> io::Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("unknown");
                return Err(io::Error::other(format!("QMP {command}: {desc}")));
            }
            // An event ({"event": …}): not what we wait for.
        }
    }

    fn read(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QEMU closed the QMP socket",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| io::Error::other(format!("bad QMP message {line:?}: {e}")))
    }
}

/// QEMU has not made or not yet listens on its socket.
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QMP server speaking the protocol's framing: greeting,
    /// capabilities, an event before a reply, and an error.
    #[test]
    fn handshake_events_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("\"stop\""));
            w.write_all(b"{\"event\": \"STOP\"}\n{\"return\": {}}\n")
                .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("\"uri\":\"exec:true\""), "{line}");
            w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n")
                .unwrap();
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.execute("stop", None).unwrap(), json!({}));
        let e = q
            .execute("migrate", Some(json!({ "uri": "exec:true" })))
            .unwrap_err();
        assert_eq!(e.to_string(), "QMP migrate: no");
        server.join().unwrap();
    }
}
