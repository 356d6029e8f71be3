//! The protocol between berth on the host and `berth-agent`, PID 1 of a microVM.
//!
//! One byte stream (a virtio-serial port named [`PORT_NAME`] in the guest, a
//! Unix socket on the host) carries frames:
//!
//! ```text
//! kind: u8 | session: u32 LE | length: u32 LE | payload (length bytes)
//! ```
//!
//! A session is one process: [`MAIN`] is the container's process, sessions
//! from [`FIRST_EXEC`] up are `exec`s, and [`VM`] is the machine itself.
//! Structured payloads are JSON; stdio payloads are raw bytes.
//!
//! The conversation:
//! 1. the agent boots and sends `Ready` (session [`VM`], payload [`Hello`]);
//! 2. the host sends `Boot` ([`Boot`]): the agent mounts the root file system,
//!    the volumes and the generated files, and answers `Ready` again with an
//!    empty payload (or `Error` with [`Failure`] when it cannot);
//! 3. the host sends `Start` ([`Process`]) for [`MAIN`] and later for exec
//!    sessions; the agent answers `Started` ([`Started`]) or `Error`
//!    ([`Failure`]: code 126/127 as a shell would, 125 otherwise);
//! 4. `Stdin`/`StdinEof`/`Signal`/`Resize` go in, `Stdout`/`Stderr` come out,
//!    and `Exit` ([`Exited`]) ends a session;
//! 5. after [`MAIN`]'s `Exit` the host sends `Shutdown` and the agent powers
//!    the VM off (it does so by itself if no `Shutdown` comes within a few
//!    seconds, so a vanished host never leaves a VM running).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The virtio-serial port's name (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "org.berth.agent.0";

/// Session of the machine itself (Ready, Boot, Shutdown).
pub const VM: u32 = 0;
/// Session of the container's main process.
pub const MAIN: u32 = 1;
/// First session number for exec'd processes.
pub const FIRST_EXEC: u32 = 2;

/// The largest payload accepted; bigger frames are a protocol error.
pub const MAX_PAYLOAD: usize = 4 << 20;

/// Frame kinds. Host to guest below 64, guest to host from 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Host: how to set up the machine ([`Boot`]).
    Boot = 1,
    /// Host: start a process ([`Process`]).
    Start = 2,
    /// Host: bytes for the process's stdin.
    Stdin = 3,
    /// Host: close the process's stdin.
    StdinEof = 4,
    /// Host: deliver a signal ([`Signal`]).
    Signal = 5,
    /// Host: the terminal's new size ([`WindowSize`]).
    Resize = 6,
    /// Host: power off now.
    Shutdown = 7,
    /// Guest: booted ([`Hello`]), or set up after `Boot` (empty payload).
    Ready = 64,
    /// Guest: the process runs ([`Started`]).
    Started = 65,
    /// Guest: bytes the process wrote to stdout (or its terminal).
    Stdout = 66,
    /// Guest: bytes the process wrote to stderr.
    Stderr = 67,
    /// Guest: the process ended ([`Exited`]).
    Exit = 68,
    /// Guest: a request failed ([`Failure`]).
    Error = 69,
}

impl Kind {
    /// The kind for a wire byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Boot,
            2 => Kind::Start,
            3 => Kind::Stdin,
            4 => Kind::StdinEof,
            5 => Kind::Signal,
            6 => Kind::Resize,
            7 => Kind::Shutdown,
            64 => Kind::Ready,
            65 => Kind::Started,
            66 => Kind::Stdout,
            67 => Kind::Stderr,
            68 => Kind::Exit,
            69 => Kind::Error,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// Which process (or [`VM`]).
    pub session: u32,
    /// Raw bytes or JSON, depending on `kind`.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame with a JSON payload.
    pub fn json<T: Serialize>(kind: Kind, session: u32, value: &T) -> Frame {
        Frame {
            kind,
            session,
            payload: serde_json::to_vec(value).expect("protocol types serialize"),
        }
    }

    /// A frame with no payload.
    pub fn empty(kind: Kind, session: u32) -> Frame {
        Frame {
            kind,
            session,
            payload: Vec::new(),
        }
    }

    /// The payload as JSON.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> io::Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{:?} frame: {e}", self.kind),
            )
        })
    }

    /// Encodes the frame (one write, so frames from several threads sharing
    /// a locked writer never interleave).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.payload.len());
        b.push(self.kind as u8);
        b.extend_from_slice(&self.session.to_le_bytes());
        b.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.payload);
        b
    }

    /// Writes the frame.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }

    /// Reads one frame; `None` at a clean end of stream (between frames).
    /// A kind this side does not know is an error (see [`read_raw`] to skip
    /// such frames instead).
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let Some((kind, session, payload)) = read_raw(r)? else {
            return Ok(None);
        };
        let kind = Kind::from_u8(kind).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown frame kind {kind}"),
            )
        })?;
        Ok(Some(Frame {
            kind,
            session,
            payload,
        }))
    }
}

/// Reads one frame as (kind byte, session, payload), whatever its kind;
/// `None` at a clean end of stream (between frames).
pub fn read_raw(r: &mut impl Read) -> io::Result<Option<(u8, u32, Vec<u8>)>> {
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let session = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_PAYLOAD}-byte limit"),
        ));
    }
    let mut payload = vec![0; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], session, payload)))
}

/// `Ready` at boot: what the guest is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// `uname -r` of the guest kernel.
    pub kernel: String,
    /// The agent's version.
    pub agent: String,
}

/// `Boot`: the machine's set-up, applied once before any process starts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Boot {
    /// Host name (`uname -n`).
    pub hostname: String,
    /// The root file system.
    pub rootfs: Rootfs,
    /// Mounts inside the root file system, in order, after the standard
    /// ones (/proc, /sys, /dev, /dev/pts, /dev/shm) the agent always makes.
    pub mounts: Vec<Mount>,
    /// Files written into the root file system before the mounts (e.g. the
    /// generated /etc/hosts, /etc/hostname, /etc/resolv.conf), each bind
    /// mounted from the agent's own tmpfs so a read-only root still gets them.
    pub files: Vec<FileContent>,
    /// Network interfaces to configure (none: only `lo`).
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// The host's wall clock when it sent this, in nanoseconds since the
    /// epoch (0: keep the guest's). A VM resumed from a snapshot would
    /// otherwise live at the time the snapshot was taken.
    #[serde(default)]
    pub clock_ns: u64,
    /// Host entropy the guest's random number generator is reseeded with
    /// before anything else runs (every VM resumed from one snapshot starts
    /// with the same random state).
    #[serde(default)]
    pub seed: Vec<u8>,
}

/// A network interface of the guest, as the host's network gave it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interface {
    /// The MAC address the hypervisor gave the NIC (how the agent finds it).
    pub mac: String,
    /// IPv4 address.
    pub address: String,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway ("" for none).
    pub gateway: String,
    /// MTU (0: leave the device's).
    #[serde(default)]
    pub mtu: u32,
}

/// Where the root file system comes from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rootfs {
    /// Block device holding the image's file system (erofs), read-only.
    pub image: String,
    /// File system type of `image` ("erofs").
    pub image_fstype: String,
    /// Block device holding the VM's writable layer (ext4), the overlay's
    /// upper and work directories live in it; `None`: a tmpfs upper.
    pub writable: Option<String>,
    /// `--read-only`: the image alone, no overlay.
    pub read_only: bool,
}

/// One mount inside the root file system.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    /// Path inside the container.
    pub target: String,
    /// What is mounted.
    pub source: MountSource,
    /// Read-only.
    pub read_only: bool,
    /// Extra options (tmpfs: `size=…`, `mode=…`; flags such as `nosuid`,
    /// `nodev`, `noexec`).
    pub options: Vec<String>,
}

/// The source of a [`Mount`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// A host directory shared over virtio-9p under this mount tag; `path`
    /// is a path inside the share ("" for its top): a file bind shares its
    /// parent directory.
    Share {
        /// The 9p mount tag.
        tag: String,
        /// Relative path inside the share.
        path: String,
    },
    /// A fresh tmpfs.
    Tmpfs,
}

/// A file the agent writes and bind mounts at `target`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileContent {
    /// Path inside the container.
    pub target: String,
    /// The file's contents.
    pub contents: String,
}

/// `Start`: a process to run (the main one or an exec).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Process {
    /// argv; `args[0]` is looked up in the process's PATH inside the root.
    pub args: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    /// Working directory inside the root (created if missing, as runc does).
    pub cwd: String,
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Resource limits (`RLIMIT_NOFILE`, …), clamped to what the guest allows.
    pub rlimits: Vec<Rlimit>,
    /// Give the process a pty (stdout carries its output; no stderr).
    pub terminal: bool,
    /// The pty's size.
    pub size: Option<WindowSize>,
    /// The process's stdin is fed by `Stdin` frames (else /dev/null).
    pub stdin: bool,
}

/// One resource limit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// OCI name, e.g. `RLIMIT_NOFILE`.
    #[serde(rename = "type")]
    pub typ: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A terminal size.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// `Signal`: a signal number.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signal {
    /// e.g. 15.
    pub signal: i32,
}

/// `Started`: the process runs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Started {
    /// Its PID in the guest.
    pub pid: i32,
}

/// `Exit`: how the process ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exited {
    /// Exit status as a shell reports it: the code, or 128 + signal.
    pub code: i32,
}

/// `Error`: why a request failed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// 127: command not found, 126: not executable, 125: anything else.
    pub code: i32,
    /// What went wrong, naming the thing at fault.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::json(Kind::Start, MAIN, &Process::default()),
            Frame {
                kind: Kind::Stdout,
                session: 7,
                payload: b"hello\n".to_vec(),
            },
            Frame::empty(Kind::Shutdown, VM),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.write_to(&mut wire).unwrap();
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(Frame::read_from(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read_from(&mut r).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_errors() {
        // Unknown kind.
        let mut r = &[200u8, 0, 0, 0, 0, 0, 0, 0, 0][..];
        assert!(Frame::read_from(&mut r).is_err());
        // Oversize.
        let mut b = vec![Kind::Stdout as u8, 1, 0, 0, 0];
        b.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(Frame::read_from(&mut &b[..]).is_err());
        // Cut in the header.
        assert!(Frame::read_from(&mut &[Kind::Stdout as u8, 1][..]).is_err());
        // Cut in the payload.
        let mut f = Frame::empty(Kind::Stdout, 1);
        f.payload = b"abc".to_vec();
        let e = f.encode();
        assert!(Frame::read_from(&mut &e[..e.len() - 1]).is_err());
    }
}
