//! Worker threads that create a layer's regular files and symlinks in parallel.
//!
//! Creating an inode is most of the cost of unpacking a layer, and the kernel does it for
//! several threads at once. The tar stream is still read in order by one thread (the
//! dispatcher, [`super::extract::Extractor`]), which creates directories, hard links,
//! devices and whiteouts itself and hands each small regular file (with its contents) and
//! each symlink to this pool as a [`Job`]: a name in a directory that the dispatcher has
//! already opened safely (beneath the destination, no symlinks followed).
//!
//! The dispatcher keeps the result identical to applying the entries one by one: a job is
//! only ever for a path that nothing earlier in the layer created or used, and before any
//! later entry touches a path that a job may still be writing (the same name again, a
//! whiteout or hard link or directory at it, or a path through it) the dispatcher waits
//! for the jobs in flight ([`Pool::barrier`]). A failed job is reported under its own
//! entry's name; when several entries fail, the earliest one in the stream is reported.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, Scope};

use super::LayerError;
use super::extract::{self, Failure, Meta, Xattrs};

/// Files up to this size are handed to the workers (their contents are buffered);
/// larger ones are written by the dispatcher as they stream past.
pub(super) const MAX_JOB_FILE: u64 = 1 << 20;
/// At most this many bytes of file contents wait in the pool...
const MAX_BYTES: usize = 16 << 20;
/// ...and at most this many jobs (each holds its directory open: with several layers
/// unpacking at once, the process must stay well below the usual limit of 1024 files).
const MAX_JOBS: usize = 64;

/// What a job creates.
pub(super) enum Leaf {
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symlink with this target.
    Symlink(Vec<u8>),
}

/// One file or symlink to create: `path[name_at..]` in `dir`.
pub(super) struct Job {
    /// Position of the entry in the stream.
    pub seq: u64,
    /// The entry's name as written in the tar, for errors.
    pub entry: String,
    /// The normalized path (the key of the claim the dispatcher holds on it).
    pub path: Box<[u8]>,
    /// Where the final component of `path` starts.
    pub name_at: usize,
    /// The parent directory, opened by the dispatcher.
    pub dir: Arc<OwnedFd>,
    pub leaf: Leaf,
    pub meta: Meta,
    /// Whether the new inode needs a chown to get `meta`'s owner.
    pub chown: bool,
    pub xattrs: Xattrs,
}

impl Job {
    fn bytes(&self) -> usize {
        match &self.leaf {
            Leaf::File(data) => data.len(),
            Leaf::Symlink(target) => target.len(),
        }
    }

    fn run(&self) -> Result<(), Failure> {
        let dir = self.dir.as_fd();
        let name = &self.path[self.name_at..];
        match &self.leaf {
            Leaf::File(data) => {
                // A directory removed here cannot be cached by the dispatcher: it only
                // hands out paths it has never opened as a directory.
                let (fd, _) = extract::create_file(dir, name)?;
                let mut file = File::from(fd);
                file.write_all(data).map_err(|e| ("writing the file", e))?;
                extract::finish_fd(file.as_fd(), &self.meta, self.chown, &self.xattrs)
            }
            Leaf::Symlink(target) => {
                extract::create_symlink(dir, name, target)?;
                extract::finish_at(dir, name, &self.meta, self.chown, false, &self.xattrs)
            }
        }
    }
}

/// A finished job.
struct Done {
    seq: u64,
    path: Box<[u8]>,
    bytes: usize,
    result: Result<(), LayerError>,
}

/// The dispatcher's handle on the workers.
pub(super) struct Pool {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    stop: Arc<AtomicBool>,
    /// Paths of the jobs not finished yet.
    in_flight: HashSet<Box<[u8]>>,
    bytes: usize,
    /// The earliest failed job seen so far.
    failed: Option<(u64, LayerError)>,
}

impl Pool {
    /// Starts up to `workers` threads in `scope`; `None` if none could be started.
    pub(super) fn start<'scope>(scope: &'scope Scope<'scope, '_>, workers: usize) -> Option<Pool> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let stop = Arc::new(AtomicBool::new(false));
        let mut started = 0;
        for i in 0..workers {
            let (jobs, done, stop) = (jobs_rx.clone(), done_tx.clone(), stop.clone());
            let spawned = thread::Builder::new()
                .name(format!("berth-layer-{i}"))
                .spawn_scoped(scope, move || work(&jobs, &done, &stop));
            if spawned.is_ok() {
                started += 1;
            }
        }
        (started > 0).then(|| Pool {
            jobs: jobs_tx,
            done: done_rx,
            stop,
            in_flight: HashSet::new(),
            bytes: 0,
            failed: None,
        })
    }

    /// Hands a job to the workers, first waiting for earlier ones if too much is queued.
    /// Reports a failed job, if any has failed by now.
    pub(super) fn submit(&mut self, job: Job) -> Result<(), LayerError> {
        let bytes = job.bytes();
        while !self.in_flight.is_empty()
            && (self.bytes + bytes > MAX_BYTES || self.in_flight.len() >= MAX_JOBS)
        {
            self.wait_one();
        }
        self.poll()?;
        self.bytes += bytes;
        self.in_flight.insert(job.path.clone());
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // Every worker is gone (they only stop early by panicking, which the scope
            // passes on); report the job as failed rather than lose it.
            self.in_flight.remove(&job.path);
            self.bytes -= bytes;
            return Err(worker_gone(&job.entry));
        }
        Ok(())
    }

    /// Whether a job for exactly `path` is in flight.
    pub(super) fn is_pending(&mut self, path: &[u8]) -> bool {
        self.collect();
        self.in_flight.contains(path)
    }

    /// Whether a job is in flight for `dir` or for any directory on the way to it.
    pub(super) fn is_pending_on_path(&mut self, dir: &[u8]) -> bool {
        self.collect();
        if self.in_flight.is_empty() {
            return false;
        }
        self.in_flight.contains(dir)
            || dir
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'/' && self.in_flight.contains(&dir[..i]))
    }

    /// Reports a failed job, if any has finished by now.
    pub(super) fn poll(&mut self) -> Result<(), LayerError> {
        self.collect();
        if self.failed.is_some() {
            // Let the others finish, so that the earliest failure is the one reported.
            return self.barrier();
        }
        Ok(())
    }

    /// Waits until every job handed out so far has finished; reports the earliest failed
    /// one, if any failed.
    pub(super) fn barrier(&mut self) -> Result<(), LayerError> {
        while !self.in_flight.is_empty() {
            if !self.wait_one() {
                let path = self.in_flight.iter().next().cloned().unwrap_or_default();
                self.in_flight.clear();
                return Err(worker_gone(&String::from_utf8_lossy(&path)));
            }
        }
        match self.failed.take() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes in the jobs finished so far, without waiting.
    fn collect(&mut self) {
        while let Ok(done) = self.done.try_recv() {
            self.finished(done);
        }
    }

    /// Waits for one job to finish; false if no worker is left to finish it.
    fn wait_one(&mut self) -> bool {
        match self.done.recv() {
            Ok(done) => {
                self.finished(done);
                true
            }
            Err(mpsc::RecvError) => false,
        }
    }

    fn finished(&mut self, done: Done) {
        self.in_flight.remove(&done.path);
        self.bytes -= done.bytes;
        if let Err(e) = done.result
            && self.failed.as_ref().is_none_or(|(seq, _)| done.seq < *seq)
        {
            self.failed = Some((done.seq, e));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // On the way out after an error: the workers skip what is still queued. (After
        // success nothing is queued.) Dropping `jobs` then closes the queue, and they exit.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn worker_gone(entry: &str) -> LayerError {
    LayerError::Apply {
        entry: entry.to_owned(),
        op: "creating the file",
        source: std::io::Error::other("the worker thread creating it exited"),
    }
}

/// A worker: runs jobs until the queue is closed.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>, done: &mpsc::Sender<Done>, stop: &AtomicBool) {
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match jobs.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            }
        };
        let (result, panic) = if stop.load(Ordering::Relaxed) {
            (Ok(()), None)
        } else {
            match panic::catch_unwind(AssertUnwindSafe(|| job.run())) {
                Ok(result) => (
                    result.map_err(|(op, source)| LayerError::Apply {
                        entry: job.entry.clone(),
                        op,
                        source,
                    }),
                    None,
                ),
                // Reported first, so that the dispatcher does not wait for this job
                // forever; the scope passes the panic on when it joins this thread.
                Err(panic) => (Err(worker_gone(&job.entry)), Some(panic)),
            }
        };
        let bytes = job.bytes();
        let Job { seq, path, .. } = job;
        let done_msg = Done {
            seq,
            path,
            bytes,
            result,
        };
        let sent = done.send(done_msg);
        if let Some(panic) = panic {
            panic::resume_unwind(panic);
        }
        if sent.is_err() {
            return;
        }
    }
}
