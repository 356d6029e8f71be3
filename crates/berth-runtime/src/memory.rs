//! Keeping long-lived helper processes small.
//!
//! Call [`shed_startup_pages`] from a single-threaded process once its start-up is
//! over and it settles into a loop.

use std::fs;

/// Gives back the memory that starting up needed and a long-lived loop does not.
///
/// For the processes that live as long as a container (its monitor, `berth-shim`):
/// starting up — the dynamic loader binding symbols, parsing a spec, setting up
/// cgroups and mounts — touched pages of the executable and of libc that would stay
/// resident (and counted in the process's RSS) for the container's whole life. Read-only file-backed mappings whose pages are all still the file's
/// (no anonymous copy-on-write pages: that excludes RELRO, which the loader wrote)
/// are dropped with `MADV_DONTNEED`; the few pages the relay loop runs are faulted
/// back in from the page cache. Freed heap is returned with `malloc_trim`.
pub fn shed_startup_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut range: Option<(usize, usize)> = None;
    let mut candidate = false;
    let shed = |range: Option<(usize, usize)>, candidate: bool| {
        if let (Some((start, end)), true) = (range, candidate) {
            // SAFETY: the range is a whole mapping of ours that is read-only and
            // backed by an unmodified file, so dropping its pages loses nothing: the
            // next access reads them from the file again.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            // A new mapping: "start-end perms offset dev inode [path]".
            shed(range.take(), candidate);
            let perms = f.next().unwrap_or("");
            let inode = f.nth(2).unwrap_or("0");
            let path = f.next().unwrap_or("");
            range = Some((start, end));
            if path == "[stack]" {
                shed_stack_below_us(start);
            }
            candidate = perms.starts_with('r')
                && perms.as_bytes().get(1) == Some(&b'-')
                && inode != "0"
                && path.starts_with('/');
        } else if first == "Anonymous:" && f.next() != Some("0") {
            candidate = false;
        } else if first == "VmFlags:" && line.split_whitespace().any(|fl| fl == "lo") {
            candidate = false; // mlocked
        }
    }
    shed(range, candidate);
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Drops the stack pages more than 16 KiB below our own frame: starting the container
/// went deep (spec parsing, setup), the relay loop does not; those pages hold only
/// dead frames, and fault back in as zero pages if ever needed.
#[inline(never)]
fn shed_stack_below_us(stack_start: usize) {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let end = sp.saturating_sub(16 << 10) & !4095;
    if end > stack_start {
        // SAFETY: [stack_start, end) is the part of our stack below every live frame
        // (ours and our callers' are above `sp`), and this thread runs no signal
        // handlers on it while we call madvise.
        unsafe {
            libc::madvise(
                stack_start as *mut libc::c_void,
                end - stack_start,
                libc::MADV_DONTNEED,
            )
        };
    }
}
