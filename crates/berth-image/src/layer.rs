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
mod pool;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::mem;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
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
/// The work is a pipeline of scoped threads: the calling thread reads `layer` (which may
/// be a tee into the content store), a helper decompresses it, and another (the writer)
/// hashes the uncompressed stream and applies the tar entries in order, creating
/// directories, links and special files itself and handing regular files and symlinks to
/// [`WORKERS`] threads that create them in parallel (see the `pool` module for how the
/// result stays that of applying the entries one by one). Where a thread cannot be
/// started its work is done by the one before it, down to doing everything in the
/// calling thread. All of them are joined before this returns.
pub fn apply_layer<R: Read>(mut layer: R, dest: &Path) -> Result<Applied, LayerError> {
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
    let writer_root = root.try_clone().map_err(dest_error)?;

    let (decoded_tx, decoded_rx) = pipe(true);
    let (raw_tx, raw_rx) = pipe(false);
    // Taken by the decompressing thread when it starts, or by this one if it cannot start.
    let decoded_tx = Mutex::new(Some(decoded_tx));
    let (hash, (unpacked_size, entries)) = thread::scope(|s| {
        let writer = thread::Builder::new()
            .name("berth-layer".into())
            .spawn_scoped(s, move || {
                let (counts, stream) = extract(decoded_rx, writer_root, root_gid, WORKERS)?;
                let hash = stream.hasher.expect("the pipe to the writer hashes");
                Ok::<_, LayerError>((hash.finalize().into(), counts))
            });
        let Ok(writer) = writer else {
            // No thread to be had: do everything here.
            let (_, decoded) = decompress(BufReader::with_capacity(BUF_SIZE, layer))?;
            return apply_serially(decoded, root, root_gid);
        };
        drop(root);

        let inflater = thread::Builder::new()
            .name("berth-inflate".into())
            .spawn_scoped(s, || {
                let decoded_tx = take(&decoded_tx);
                let mut raw = raw_rx;
                match decompress(&mut raw) {
                    Ok((_, mut decoded)) => decoded_tx.pump(&mut decoded),
                    // Reported by the writer, as if it had failed to read the stream.
                    Err(e) => decoded_tx.fail(e.into_io()),
                }
                // What the decompressor left unread (trailing padding) is not waited for:
                // dropping the pipe stops the calling thread, and apply_layer's caller
                // reads the layer stream to its end itself.
                drop(raw);
            });
        match inflater {
            Ok(inflater) => {
                raw_tx.pump(&mut layer);
                drop(raw_tx);
                if let Err(panic) = inflater.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(_) => {
                // No thread to be had: decompress here.
                let decoded_tx = take(&decoded_tx);
                match decompress(BufReader::with_capacity(BUF_SIZE, layer)) {
                    Ok((_, mut decoded)) => decoded_tx.pump(&mut decoded),
                    Err(e) => decoded_tx.fail(e.into_io()),
                }
            }
        }
        match writer.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;

    let diff_id = Digest::from_hex(&hex::encode(hash)).expect("sha256 output is 64 hex digits");
    Ok(Applied {
        diff_id,
        unpacked_size,
        entries,
    })
}

/// Takes the writing end of the pipe to the last stage (exactly one thread does).
fn take(slot: &Mutex<Option<ChunkWriter>>) -> ChunkWriter {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
        .expect("the pipe to the writer is taken once")
}

impl LayerError {
    /// The I/O error inside a [`LayerError::Stream`] (what [`decompress`] returns), to be
    /// passed down the pipeline as a failure to read the stream.
    fn into_io(self) -> io::Error {
        match self {
            LayerError::Stream { source, .. } => source,
            other => io::Error::other(other.to_string()),
        }
    }
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
    let (counts, stream) = extract(stream, root, root_gid, 0)?;
    Ok((stream.into_inner().hasher.finalize().into(), counts))
}

/// How many chunks may wait between two stages of the pipeline.
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

/// A piece of a stream: `buf[..len]`.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// The sending end of a pipe between two stages: full chunks go one way, emptied buffers
/// come back for reuse.
struct ChunkWriter {
    full: mpsc::SyncSender<io::Result<Chunk>>,
    empty: mpsc::Receiver<Vec<u8>>,
}

/// The receiving end: reads the chunks (hashing them, when `hasher` is set) and sends
/// the emptied buffers back. The stream ends when the sender is dropped.
struct ChunkReader {
    full: mpsc::Receiver<io::Result<Chunk>>,
    empty: mpsc::Sender<Vec<u8>>,
    chunk: Chunk,
    pos: usize,
    hasher: Option<sha2::Sha256>,
}

/// A pipe between two pipeline stages; the reading end hashes what passes when `hash`.
fn pipe(hash: bool) -> (ChunkWriter, ChunkReader) {
    let (full_tx, full_rx) = mpsc::sync_channel(QUEUE_DEPTH);
    let (empty_tx, empty_rx) = mpsc::channel();
    (
        ChunkWriter {
            full: full_tx,
            empty: empty_rx,
        },
        ChunkReader {
            full: full_rx,
            empty: empty_tx,
            chunk: Chunk {
                buf: Vec::new(),
                len: 0,
            },
            pos: 0,
            hasher: hash.then(sha2::Sha256::new),
        },
    )
}

impl ChunkWriter {
    /// Copies `r` to the pipe until it ends, fails, or the reading end goes away (a later
    /// stage gave up; it has the error to report). A read error is passed on, for the
    /// last stage to report.
    fn pump(&self, r: &mut dyn Read) {
        loop {
            let mut buf = self.empty.try_recv().unwrap_or_else(|_| vec![0; BUF_SIZE]);
            let (len, result) = fill(r, &mut buf);
            if len > 0 && self.full.send(Ok(Chunk { buf, len })).is_err() {
                return;
            }
            match result {
                Err(e) => return self.fail(e),
                Ok(()) if len < BUF_SIZE => return, // End of the stream.
                Ok(()) => {}
            }
        }
    }

    /// Passes a read error on.
    fn fail(&self, e: io::Error) {
        let _ = self.full.send(Err(e));
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.chunk.len {
            match self.full.recv() {
                Ok(Ok(chunk)) => {
                    if let Some(hasher) = &mut self.hasher {
                        hasher.update(&chunk.buf[..chunk.len]);
                    }
                    let used = mem::replace(&mut self.chunk, chunk);
                    if !used.buf.is_empty() {
                        let _ = self.empty.send(used.buf);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(&[]),
            }
        }
        Ok(&self.chunk.buf[self.pos..self.chunk.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len);
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = out.len().min(available.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// How many threads create regular files and symlinks while the writer reads the tar
/// stream (see the `pool` module). Creating inodes is most of the kernel's work; on the
/// 2-core machine of docs/benchmarks.md two workers were as fast as three.
const WORKERS: usize = 2;

/// Applies the tar stream `stream` beneath `root` (with up to `workers` threads creating
/// files; none: everything in this thread), then reads the stream to its end. Returns
/// (unpacked size, entries) and the stream.
fn extract<S: Read>(
    stream: S,
    root: OwnedFd,
    root_gid: Option<u32>,
    workers: usize,
) -> Result<((u64, u64), S), LayerError> {
    thread::scope(|s| {
        let pool = if workers > 0 {
            pool::Pool::start(s, workers)
        } else {
            None
        };
        let mut archive = tar::Archive::new(stream);
        let mut extractor = extract::Extractor::new(root, root_gid, pool);
        let result = (|| {
            let entries = archive
                .entries()
                .map_err(|source| extractor.stream_error(source))?;
            for entry in entries {
                let mut entry = entry.map_err(|source| extractor.stream_error(source))?;
                extractor.apply(&mut entry)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            return Err(extractor.first_error(e));
        }
        // The tar reader stops at the end-of-archive marker; the DiffID covers the whole
        // stream, so read whatever follows (padding) to the end.
        let mut rest = archive.into_inner();
        if let Err(source) = io::copy(&mut rest, &mut io::sink()) {
            let e = extractor.stream_error(source);
            return Err(extractor.first_error(e));
        }
        let counts = extractor.finish()?;
        Ok((counts, rest))
    })
}
