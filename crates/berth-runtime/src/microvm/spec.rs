//! From the OCI bundle to what the agent is told: the same `config.json`
//! the `linux` backend runs, translated to the protocol's [`Boot`] and
//! [`Process`], and the host directories the VM must share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_agent::{Boot, FileContent, Mount, MountSource, Process, Rlimit, Rootfs, WindowSize};
use oci_spec::runtime::Spec;

use super::{Share, VmError, io_at};

/// What a bundle becomes for a VM.
#[derive(Debug, Default)]
pub struct Translated {
    /// The machine's set-up.
    pub boot: Boot,
    /// Directories to share, by tag.
    pub shares: Vec<Share>,
    /// Mounts the VM cannot honour (skipped), for the user to see.
    pub warnings: Vec<String>,
}

/// Mounts the agent always makes itself.
fn is_standard(typ: &str, dest: &str) -> bool {
    matches!(
        typ,
        "proc" | "sysfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2"
    ) || (typ == "tmpfs" && matches!(dest, "/dev" | "/dev/shm"))
}

/// Translates `spec`'s root and mounts. Bind mounts of files under
/// `generated` (the container's own /etc/hosts, hostname, resolv.conf) are
/// sent as contents; other binds become 9p shares (a file's parent
/// directory is shared and the file bound from it).
pub fn boot_from_spec(
    spec: &Spec,
    generated: &Path,
    rootfs: Rootfs,
) -> Result<Translated, VmError> {
    let mut t = Translated::default();
    t.boot.hostname = spec.hostname().clone().unwrap_or_default();
    t.boot.rootfs = rootfs;
    t.boot.rootfs.read_only = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    // Host directory → tag, in order of first use.
    let mut tags: BTreeMap<PathBuf, (String, bool)> = BTreeMap::new();
    for m in spec.mounts().iter().flatten() {
        let typ = m.typ().clone().unwrap_or_default();
        let dest = m.destination().display().to_string();
        if is_standard(&typ, &dest) {
            continue;
        }
        let options = m.options().clone().unwrap_or_default();
        let read_only = options.iter().any(|o| o == "ro");
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if typ == "tmpfs" {
            t.boot.mounts.push(Mount {
                target: dest,
                source: MountSource::Tmpfs,
                read_only,
                options: options
                    .into_iter()
                    .filter(|o| o != "ro" && o != "rw")
                    .collect(),
            });
            continue;
        }
        if !bind {
            t.warnings.push(format!(
                "mount of type {typ:?} on {dest} is not supported in a VM: skipped"
            ));
            continue;
        }
        let Some(source) = m.source().clone() else {
            continue;
        };
        let meta = std::fs::metadata(&source).map_err(io_at(&source))?;
        if meta.is_file() && source.starts_with(generated) {
            let contents = std::fs::read_to_string(&source).map_err(io_at(&source))?;
            t.boot.files.push(FileContent {
                target: dest,
                contents,
            });
            continue;
        }
        let (dir, path) = if meta.is_dir() {
            (source.clone(), String::new())
        } else {
            let name = source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                source.parent().unwrap_or(Path::new("/")).to_path_buf(),
                name,
            )
        };
        let n = tags.len();
        let entry = tags
            .entry(dir.clone())
            .or_insert_with(|| (format!("berth{n}"), read_only));
        // Shared read-only only if every use is read-only.
        entry.1 &= read_only;
        t.boot.mounts.push(Mount {
            target: dest,
            source: MountSource::Share {
                tag: entry.0.clone(),
                path,
            },
            read_only,
            options: Vec::new(),
        });
    }
    let mut shares: Vec<Share> = tags
        .into_iter()
        .map(|(path, (tag, read_only))| Share {
            tag,
            path,
            read_only,
        })
        .collect();
    shares.sort_by(|a, b| a.tag.cmp(&b.tag));
    t.shares = shares;
    Ok(t)
}

/// The process of `spec` as the agent runs it.
pub fn process_from_spec(p: &oci_spec::runtime::Process, stdin: bool) -> Process {
    let user = p.user();
    Process {
        args: p.args().clone().unwrap_or_default(),
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().display().to_string(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        rlimits: p
            .rlimits()
            .iter()
            .flatten()
            .map(|r| Rlimit {
                typ: serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                soft: r.soft(),
                hard: r.hard(),
            })
            .collect(),
        terminal: p.terminal().unwrap_or(false),
        size: p.console_size().as_ref().map(|b| WindowSize {
            rows: b.height() as u16,
            cols: b.width() as u16,
        }),
        stdin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder};

    #[test]
    fn mounts_become_shares_files_and_tmpfs() {
        let tmp = tempfile::tempdir().unwrap();
        let generated = tmp.path().join("ctr");
        std::fs::create_dir_all(&generated).unwrap();
        std::fs::write(generated.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("one.txt"), "1").unwrap();
        let bind = |src: &Path, dst: &str, ro: bool| {
            let mut o = vec!["rbind".to_string()];
            if ro {
                o.push("ro".into());
            }
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src)
                .options(o)
                .build()
                .unwrap()
        };
        let spec = SpecBuilder::default()
            .hostname("h1")
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(true)
                    .build()
                    .unwrap(),
            )
            .mounts(vec![
                MountBuilder::default()
                    .destination("/proc")
                    .typ("proc")
                    .source("proc")
                    .build()
                    .unwrap(),
                bind(&generated.join("hosts"), "/etc/hosts", false),
                bind(&data, "/data", false),
                bind(&data.join("one.txt"), "/one.txt", true),
                MountBuilder::default()
                    .destination("/scratch")
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(vec!["nosuid".into(), "size=1m".into()])
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let t = boot_from_spec(&spec, &generated, Rootfs::default()).unwrap();
        assert_eq!(t.boot.hostname, "h1");
        assert!(t.boot.rootfs.read_only);
        assert_eq!(t.boot.files.len(), 1);
        assert_eq!(t.boot.files[0].target, "/etc/hosts");
        assert_eq!(t.shares.len(), 1, "one directory, shared once");
        assert!(!t.shares[0].read_only, "one use writes");
        assert_eq!(t.boot.mounts.len(), 3);
        assert_eq!(
            t.boot.mounts[1].source,
            MountSource::Share {
                tag: "berth0".into(),
                path: "one.txt".into()
            }
        );
        assert!(t.boot.mounts[1].read_only);
        assert_eq!(t.boot.mounts[2].source, MountSource::Tmpfs);
        assert_eq!(t.boot.mounts[2].options, ["nosuid", "size=1m"]);
    }

    #[test]
    fn process_fields() {
        let p = ProcessBuilder::default()
            .args(vec!["sh".to_string()])
            .env(vec!["A=1".to_string()])
            .cwd("/w")
            .terminal(true)
            .build()
            .unwrap();
        let q = process_from_spec(&p, true);
        assert_eq!(q.args, ["sh"]);
        assert_eq!(q.cwd, "/w");
        assert!(q.terminal && q.stdin);
    }
}
