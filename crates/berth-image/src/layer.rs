//! Applying image layers to snapshot directories.
//!
//! A layer is a tar stream (optionally gzip- or zstd-compressed). [`apply_layer`] unpacks one
//! layer into an empty directory that will later serve as an overlayfs lower directory, in the
//! style of Docker's overlay2 driver: each snapshot holds only its own layer's diff, and the
//! snapshots are stacked with `lowerdir=snapN:...:snap1`. OCI whiteouts are therefore converted
//! to their overlayfs form while unpacking:
//!
//! * `dir/.wh.name` becomes a character device 0:0 named `dir/name`;
//! * `dir/.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on `dir`.
//!
//! Extraction is done entirely relative to directory file descriptors, and every path is
//! resolved without following symlinks, so no entry can create, follow or link anything outside
//! the destination, whatever the entries before it created.

mod extract;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::mem;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use crate::digest::Digest;
use sha2::Digest as _;

/// Capacity of the buffers wrapped around the compressed and decompressed streams.
const BUF_SIZE: usize = 256 * 1024;

/// Compression of a layer stream, as recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a stream. Anything that is neither
    /// gzip nor zstd is taken to be an uncompressed tar.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// What applying a layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the whole uncompressed tar stream (the layer's DiffID).
    pub diff_id: Digest,
    /// Sum of the sizes of the regular files written (hard links not counted twice).
    pub unpacked_size: u64,
    /// Number of tar entries applied (extension headers such as PAX or GNU long names are
    /// not counted; whiteouts are).
    pub entries: u64,
}

/// Why a layer could not be applied.
#[derive(thiserror::Error, Debug)]
pub enum LayerError {
    /// The destination directory could not be opened.
    #[error("cannot open layer destination {}: {source}", path.display())]
    Destination {
        /// The destination given to [`apply_layer`].
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or decompressing the layer stream, or parsing a tar header, failed.
    #[error("reading layer stream failed {}: {source}", After(after.as_deref()))]
    Stream {
        /// The last entry read successfully before the failure, if any.
        after: Option<String>,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A tar entry's header (or its PAX extensions) is invalid.
    #[error("tar entry `{entry}`: invalid header: {reason}")]
    InvalidHeader {
        /// The entry at fault.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tar entry's path would reach outside the destination.
    #[error("tar entry `{entry}`: unsafe path: {reason}")]
    UnsafePath {
        /// The entry at fault.
        entry: String,
        /// What makes its path unsafe.
        reason: &'static str,
    },
    /// A hard link entry whose target is unsafe or not part of this layer.
    #[error("tar entry `{entry}`: hard link to `{target}` refused: {reason}")]
    HardLink {
        /// The entry at fault.
        entry: String,
        /// The link target as written in the tar.
        target: String,
        /// Why the link was refused.
        reason: &'static str,
    },
    /// A tar entry of a type that cannot be applied.
    #[error("tar entry `{entry}`: unsupported entry type {kind:?}")]
    Unsupported {
        /// The entry at fault.
        entry: String,
        /// The raw type flag.
        kind: char,
    },
    /// A filesystem operation failed while applying an entry.
    #[error("tar entry `{entry}`: {op} failed: {source}")]
    Apply {
        /// The entry at fault.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

struct After<'a>(Option<&'a str>);

impl fmt::Display for After<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(entry) => write!(f, "after tar entry `{entry}`"),
            None => f.write_str("before the first tar entry"),
        }
    }
}

/// Opens a decompressing reader over `r`, choosing the decompressor from the stream's magic
/// bytes (see [`Compression::detect`]).
pub fn decompress<'a, R: BufRead + 'a>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + 'a>), LayerError> {
    let stream_err = |source| LayerError::Stream {
        after: None,
        source,
    };
    let head = r.fill_buf().map_err(stream_err)?;
    if head.len() >= 4 || head.is_empty() {
        let compression = Compression::detect(head);
        return Ok((compression, wrap(compression, r).map_err(stream_err)?));
    }
    // The first read came back short: gather the magic bytes by hand and put them back in
    // front of the rest of the stream.
    let mut magic = Vec::with_capacity(4);
    (&mut r)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(stream_err)?;
    let compression = Compression::detect(&magic);
    let r = io::Cursor::new(magic).chain(r);
    Ok((compression, wrap(compression, r).map_err(stream_err)?))
}

fn wrap<'a, R: BufRead + 'a>(compression: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(r),
        // Multi-member gzip streams are valid (and what Go's reader accepts by default).
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Applies one layer (compressed or not; detected from its magic bytes) into `dest`, an
/// existing empty directory that will become an overlayfs lower directory.
///
/// The caller is expected to create `dest` as a temporary directory, rename it into place
/// when this returns `Ok`, and remove it when this returns an error (which may leave it
/// partially written).
///
/// Whiteouts are converted to overlayfs form (see the module documentation); ownership,
/// permissions (including setuid/setgid/sticky), modification times and `SCHILY.xattr.*`
/// extended attributes are preserved, except `trusted.overlay.*` attributes, which are
/// dropped because only whiteout conversion may produce overlayfs metadata. Hard link
/// entries only add a name: the inode keeps the metadata of the entry that created it.
///
/// The calling thread reads, decompresses and hashes the stream while a scoped helper
/// thread writes the files (falling back to doing both in the calling thread if no thread
/// can be started); the helper is joined before this returns.
pub fn apply_layer<R: Read>(layer: R, dest: &Path) -> Result<Applied, LayerError> {
    let dest_error = |e: io::Error| LayerError::Destination {
        path: dest.to_owned(),
        source: e,
    };
    let root = rustix::fs::open(
        dest,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| dest_error(e.into()))?;
    let root_gid =
        extract::inherit_gid(&rustix::fs::fstat(&root).map_err(|e| dest_error(e.into()))?);
    let worker_root = root.try_clone().map_err(dest_error)?;

    let (_, mut decoded) = decompress(BufReader::with_capacity(BUF_SIZE, layer))?;

    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Chunk>>(QUEUE_DEPTH);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    let (hash, (unpacked_size, entries)) = thread::scope(|s| {
        let worker = thread::Builder::new()
            .name("berth-layer".into())
            .spawn_scoped(s, move || {
                let stream = ChunkReader {
                    full: full_rx,
                    empty: empty_tx,
                    chunk: Chunk {
                        buf: Vec::new(),
                        len: 0,
                    },
                    pos: 0,
                };
                extract(stream, worker_root, root_gid).map(|(counts, _)| counts)
            });
        let Ok(worker) = worker else {
            // No thread to be had: do everything here.
            return apply_serially(decoded, root, root_gid);
        };

        let mut hasher = sha2::Sha256::new();
        loop {
            let mut buf = empty_rx.try_recv().unwrap_or_else(|_| vec![0; BUF_SIZE]);
            let (len, result) = fill(&mut decoded, &mut buf);
            hasher.update(&buf[..len]);
            if len > 0 && full_tx.send(Ok(Chunk { buf, len })).is_err() {
                break; // The writer gave up; it has the error to report.
            }
            match result {
                // The writer reports read errors, naming the entry it was reading.
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    break;
                }
                Ok(()) if len < BUF_SIZE => break, // End of the stream.
                Ok(()) => {}
            }
        }
        drop(full_tx);
        let counts = match worker.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        Ok((hasher.finalize().into(), counts))
    })?;

    let diff_id = Digest::from_hex(&hex::encode(hash)).expect("sha256 output is 64 hex digits");
    Ok(Applied {
        diff_id,
        unpacked_size,
        entries,
    })
}

type Sha256Output = [u8; 32];

/// [`apply_layer`]'s work in the calling thread alone.
fn apply_serially(
    decoded: Box<dyn Read + '_>,
    root: OwnedFd,
    root_gid: Option<u32>,
) -> Result<(Sha256Output, (u64, u64)), LayerError> {
    let stream = BufReader::with_capacity(
        BUF_SIZE,
        HashingReader {
            inner: decoded,
            hasher: sha2::Sha256::new(),
        },
    );
    let (counts, stream) = extract(stream, root, root_gid)?;
    Ok((stream.into_inner().hasher.finalize().into(), counts))
}

/// How many decompressed chunks may wait for the writer.
const QUEUE_DEPTH: usize = 16;

/// Reads from `r` until `buf` is full or the stream ends; returns how much was read and
/// whether reading stopped on an error.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> (usize, io::Result<()>) {
    let mut len = 0;
    while len < buf.len() {
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (len, Err(e)),
        }
    }
    (len, Ok(()))
}

/// A piece of the decompressed stream: `buf[..len]`.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// The writer's end of the pipeline: reads the chunks the calling thread sends, and sends
/// the emptied buffers back for reuse. The stream ends when the sender is dropped.
struct ChunkReader {
    full: mpsc::Receiver<io::Result<Chunk>>,
    empty: mpsc::Sender<Vec<u8>>,
    chunk: Chunk,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len {
            match self.full.recv() {
                Ok(Ok(chunk)) => {
                    let used = mem::replace(&mut self.chunk, chunk);
                    if !used.buf.is_empty() {
                        let _ = self.empty.send(used.buf);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len - self.pos);
        out[..n].copy_from_slice(&self.chunk.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Applies the tar stream `stream` beneath `root`, then reads the stream to its end.
/// Returns (unpacked size, entries) and the stream.
fn extract<S: Read>(
    stream: S,
    root: OwnedFd,
    root_gid: Option<u32>,
) -> Result<((u64, u64), S), LayerError> {
    let mut archive = tar::Archive::new(stream);
    let mut extractor = extract::Extractor::new(root, root_gid);
    let entries = archive
        .entries()
        .map_err(|source| extractor.stream_error(source))?;
    for entry in entries {
        let mut entry = entry.map_err(|source| extractor.stream_error(source))?;
        extractor.apply(&mut entry)?;
    }
    // The tar reader stops at the end-of-archive marker; the DiffID covers the whole stream,
    // so read whatever follows (padding) to the end.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| extractor.stream_error(source))?;
    let counts = extractor.finish()?;
    Ok((counts, rest))
}
