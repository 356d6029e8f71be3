//! Thin wrappers over the libc calls the agent makes.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Writes one line to the agent's stderr (the serial console). Never fails:
/// PID 1 has nowhere better to report that it cannot report.
pub fn log_line(args: fmt::Arguments) {
    let line = format!("berth-agent: {args}\n");
    let _ = io::stderr().write_all(line.as_bytes());
}

/// `log` with `format!` arguments.
macro_rules! log {
    ($($t:tt)*) => { $crate::agent::sys::log_line(format_args!($($t)*)) };
}
pub(crate) use log;

/// A C string for a path (paths never hold NUL bytes, the error says which
/// one did if it does).
pub fn cpath(p: &Path) -> io::Result<CString> {
    cstr_bytes(p.as_os_str().as_bytes())
}

/// A C string for text.
pub fn cstr(s: &str) -> io::Result<CString> {
    cstr_bytes(s.as_bytes())
}

fn cstr_bytes(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", String::from_utf8_lossy(b)),
        )
    })
}

/// `Err(errno)` when a libc call returned -1.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// mount(2). `fstype`/`data` may be empty.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let src = cstr(source)?;
    let tgt = cpath(target)?;
    let fst = cstr(fstype)?;
    let dat = cstr(data)?;
    let opt = |c: &CStr, empty: bool| if empty { std::ptr::null() } else { c.as_ptr() };
    // SAFETY: every pointer is either null (allowed for these arguments) or a
    // NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            opt(&src, source.is_empty()),
            tgt.as_ptr(),
            opt(&fst, fstype.is_empty()),
            flags,
            opt(&dat, data.is_empty()).cast(),
        )
    };
    check(r).map(drop)
}

/// Error text the way Go (and so runc and docker) prints it: glibc's
/// message with a lower-case first letter and no "(os error N)".
pub fn errno_text(errno: i32) -> String {
    let full = io::Error::from_raw_os_error(errno).to_string();
    let msg = match full.rfind(" (os error ") {
        Some(i) => &full[..i],
        None => &full,
    };
    let mut c = msg.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// [`errno_text`] for an `io::Error`.
pub fn err_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(n),
        None => e.to_string(),
    }
}

/// Blocks or unblocks SIGCHLD in the calling thread (threads started later
/// inherit the mask).
pub fn block_sigchld() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it
    // before pthread_sigmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data that uname fills in; on success its
    // fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we now own.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// With `berth.trace` on the kernel command line (`BERTH_VM_TRACE=1` on the
/// host), logs `step` with the time since boot, to see where a start goes.
pub fn trace(step: &str) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| {
        std::fs::read_to_string("/proc/cmdline")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "berth.trace"))
    });
    if on {
        // SAFETY: timespec is plain data; clock_gettime only writes it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and a pointer to our timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let ms = ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6;
        log_line(format_args!("trace {ms:9.1} ms {step}"));
    }
}

/// Sets the wall clock to `ns` nanoseconds since the epoch (0: leaves it).
pub fn set_clock(ns: u64) -> io::Result<()> {
    if ns == 0 {
        return Ok(());
    }
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec the kernel only reads.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })?;
    Ok(())
}

/// RNDADDENTROPY: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// RNDRESEEDCRNG: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Credits `seed` to the kernel's entropy pool and reseeds its generator at
/// once, so nothing after this sees random numbers another VM resumed from
/// the same snapshot also sees.
pub fn reseed(seed: &[u8]) -> io::Result<()> {
    if seed.is_empty() {
        return Ok(());
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    use std::os::fd::AsRawFd;
    // SAFETY: info is a rand_pool_info header followed by buf_size bytes.
    check(unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    check(unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG) })?;
    Ok(())
}

/// BLKFLSBUF: `_IO(0x12, 97)`.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Drops a block device's cached blocks: a VM resumed from a snapshot may
/// hold blocks of the template's blank disk behind the same device.
pub fn flush_block_cache(dev: &str) -> io::Result<()> {
    let f = std::fs::File::open(dev)?;
    use std::os::fd::AsRawFd;
    // SAFETY: BLKFLSBUF takes no argument besides the descriptor.
    check(unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_is_go_style() {
        assert_eq!(errno_text(libc::ENOENT), "no such file or directory");
        assert_eq!(errno_text(libc::EACCES), "permission denied");
        assert_eq!(errno_text(libc::ENOEXEC), "exec format error");
    }
}
