//! The virtio-serial port to the host.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_agent::{Failure, Frame, Kind, PORT_NAME};

use super::sys::log;

/// How long to wait for the port's device to show up.
const PORT_WAIT: Duration = Duration::from_secs(10);

/// The port's writing side, shared by every thread.
pub struct Port {
    w: Mutex<File>,
}

impl Port {
    /// Wraps the open port.
    pub fn new(f: File) -> Port {
        Port { w: Mutex::new(f) }
    }

    /// Sends a frame in one write under the lock, so frames never interleave.
    /// A failure means the host is gone; the reading side notices that too,
    /// so it is only logged here.
    pub fn send(&self, f: &Frame) {
        let bytes = f.encode();
        let mut w = self.w.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.write_all(&bytes) {
            log!("writing a {:?} frame to the host: {e}", f.kind);
        }
    }

    /// Sends `Error` for `session`.
    pub fn error(&self, session: u32, code: i32, message: String) {
        self.send(&Frame::json(
            Kind::Error,
            session,
            &Failure { code, message },
        ));
    }
}

/// Finds the port named [`PORT_NAME`] and opens its device read+write,
/// waiting a little for it to appear.
pub fn open_port() -> io::Result<File> {
    let until = Instant::now() + PORT_WAIT;
    loop {
        if let Some(dev) = find_port()
            && let Ok(f) = OpenOptions::new().read(true).write(true).open(&dev)
        {
            return Ok(f);
        }
        if Instant::now() > until {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {PORT_NAME}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// /dev/<vportNpM> of the port named [`PORT_NAME`], if it is there yet.
fn find_port() -> Option<PathBuf> {
    for entry in fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim_end() == PORT_NAME {
            return Some(PathBuf::from("/dev").join(entry.file_name()));
        }
    }
    None
}

/// Reads the next frame the agent knows; frames of unknown kinds (a newer
/// host) are skipped whole, so the stream stays in step. `None`: the host
/// closed the port.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    loop {
        let Some((kind, session, payload)) = berth_agent::read_raw(r)? else {
            return Ok(None);
        };
        match Kind::from_u8(kind) {
            Some(kind) => {
                return Ok(Some(Frame {
                    kind,
                    session,
                    payload,
                }));
            }
            None => log!("skipping a frame of unknown kind {kind}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_are_skipped() {
        let mut wire = vec![200u8, 1, 0, 0, 0, 3, 0, 0, 0, b'x', b'y', b'z'];
        let f = Frame::empty(Kind::Shutdown, 0);
        wire.extend(f.encode());
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some(f));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert!(read_frame(&mut &[1u8, 0][..]).is_err());
    }
}
