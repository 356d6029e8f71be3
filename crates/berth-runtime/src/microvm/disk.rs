//! A VM's disks: the image's root file system as a read-only erofs image,
//! exported once per chain ID and shared by every VM of the image, and a
//! per-VM writable layer, a qcow2 overlay over one empty ext4 template (a
//! new VM's layer costs a few hundred KiB on disk, not a file system).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{VmError, io_at};

/// Size of the writable layer a VM sees (sparse: it costs what is written).
pub const WRITABLE_SIZE: &str = "16G";
/// [`WRITABLE_SIZE`] in bytes; also the least size of the image's disk, so
/// VMs of different images have disks of one size (one shape for
/// [`super::snapshot`]).
pub const DISK_BYTES: u64 = 16 << 30;

/// Runs a tool and turns a failure into [`VmError::Tool`] with its stderr.
fn run(cmd: &mut Command, tool: &str) -> Result<(), VmError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| VmError::Tool {
            tool: tool.into(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(VmError::Tool {
        tool: tool.into(),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Exports the union of `lowerdirs` (overlay order, top first) as an erofs
/// image at `out`, unless it exists. Written under a temporary name and
/// renamed, so a crash never leaves a half image under the final name. The
/// layers are merged by a read-only overlay mount in a private mount
/// namespace of the `mkfs.erofs` process, so no mount outlives it.
pub fn export_erofs(lowerdirs: &[PathBuf], out: &Path) -> Result<(), VmError> {
    if out.is_file() {
        return Ok(());
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".export-")
        .tempdir_in(dir)
        .map_err(io_at(dir))?;
    let tmp_img = scratch.path().join("image.erofs");
    let mut cmd = Command::new("mkfs.erofs");
    match lowerdirs {
        [] => {
            let empty = scratch.path().join("empty");
            std::fs::create_dir(&empty).map_err(io_at(&empty))?;
            cmd.arg(&tmp_img).arg(&empty);
        }
        [one] => {
            cmd.arg(&tmp_img).arg(one);
        }
        many => {
            let mnt = scratch.path().join("merged");
            std::fs::create_dir(&mnt).map_err(io_at(&mnt))?;
            let data = format!(
                "lowerdir={}",
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            );
            let cstr = |s: &str| {
                CString::new(s).map_err(|_| VmError::Config(format!("a NUL byte in {s:?}")))
            };
            let (target, data) = (cstr(&mnt.display().to_string())?, cstr(&data)?);
            let (overlay, root) = (c"overlay", c"/");
            // SAFETY: runs in the forked child before exec; unshare and mount are
            // async-signal-safe system calls on strings prepared before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    let fail = || Err(std::io::Error::last_os_error());
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return fail();
                    }
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                    if libc::mount(
                        overlay.as_ptr(),
                        target.as_ptr(),
                        overlay.as_ptr(),
                        libc::MS_RDONLY,
                        data.as_ptr().cast(),
                    ) != 0
                    {
                        return fail();
                    }
                    Ok(())
                });
            }
            cmd.arg(&tmp_img).arg(&mnt);
        }
    }
    run(&mut cmd, "mkfs.erofs")?;
    std::fs::rename(&tmp_img, out).map_err(io_at(out))?;
    Ok(())
}

/// The image's disk as a VM sees it: a read-only qcow2 over the erofs
/// export, [`DISK_BYTES`] large (more for an image that does not fit),
/// made once beside the export and shared by its VMs. Reads past the end of
/// the export are zeroes. Returns the file and its virtual size.
pub fn image_disk(erofs: &Path) -> Result<(PathBuf, u64), VmError> {
    let len = std::fs::metadata(erofs).map_err(io_at(erofs))?.len();
    let size = DISK_BYTES.max(len.next_multiple_of(1 << 20));
    let mut name = erofs.as_os_str().to_owned();
    name.push(".qcow2");
    let out = PathBuf::from(name);
    if out.is_file() {
        return Ok((out, size));
    }
    // A name of its own: VMs of one image may start together.
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .suffix(".qcow2")
        .tempfile_in(dir)
        .map_err(io_at(dir))?;
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(erofs)
            .arg(tmp.path())
            .arg(size.to_string()),
        "qemu-img",
    )?;
    tmp.persist(&out).map_err(|e| VmError::Io {
        path: out.clone(),
        source: e.error,
    })?;
    Ok((out, size))
}

/// An empty qcow2 disk of `size` bytes (a template VM's stand-in for a
/// real disk of that size).
pub fn blank(path: &Path, size: u64) -> Result<(), VmError> {
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(path)
            .arg(size.to_string()),
        "qemu-img",
    )
}

/// The empty ext4 every writable layer starts from (`upper/` and `work/`
/// already made), created once in `dir`.
pub fn writable_template(dir: &Path) -> Result<PathBuf, VmError> {
    let out = dir.join(format!("writable-{WRITABLE_SIZE}.ext4"));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".template-")
        .tempdir_in(dir)
        .map_err(io_at(dir))?;
    let tree = scratch.path().join("tree");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(tree.join(d)).map_err(io_at(tree.join(d)))?;
    }
    let img = scratch.path().join("writable.ext4");
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "berth-rw", "-m", "0"])
            // Lazy init: the template stays sparse; the agent mounts it with
            // noinit_itable so the guest does not fill it in either.
            .args([
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
            ])
            .arg("-d")
            .arg(&tree)
            .arg(&img)
            .arg(WRITABLE_SIZE),
        "mkfs.ext4",
    )?;
    std::fs::rename(&img, &out).map_err(io_at(&out))?;
    Ok(out)
}

/// A VM's writable layer at `out`: a qcow2 file over `template`; kept if it
/// exists (a restarted VM finds its changes, as a container does).
pub fn writable_layer(template: &Path, out: &Path) -> Result<(), VmError> {
    if out.is_file() {
        return Ok(());
    }
    let tmp = out.with_extension("qcow2.tmp");
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(template)
            .arg(&tmp),
        "qemu-img",
    )?;
    std::fs::rename(&tmp, out).map_err(io_at(out))
}
