//! Containers: records, names, and the lifecycle verbs.
//!
//! Each container is a directory `<root>/containers/<id>/` holding its record
//! (`record.json`, rewritten atomically under `record.lock`), its OCI spec
//! (`config.json`), its writable layer (`upper/`, `work/`), its mount point
//! (`rootfs/`) and its log (`container.log`, JSON lines as Docker's json-file
//! driver). One file per container rather than a shared database: the
//! monitor of every running container writes its own record without
//! contending with the others.

pub mod monitor;
pub mod stdio;
pub mod vm;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::RunOptions;

/// Lifecycle states, as Docker names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    Created,
    /// The process runs.
    Running,
    /// Frozen.
    Paused,
    /// Waiting for its restart policy's next attempt.
    Restarting,
    /// The process ended.
    Exited,
    /// berth lost track of it (its monitor died).
    Dead,
}

/// What the runtime knows about the process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Lifecycle state.
    pub status: Option<Status>,
    /// Container process PID (host namespace), 0 when not running.
    pub pid: i32,
    /// PID of the monitor supervising it.
    pub monitor_pid: i32,
    /// The monitor's start time (clock ticks since boot) to detect PID reuse.
    pub monitor_start: u64,
    /// Last exit code.
    pub exit_code: i32,
    /// Killed by the kernel's OOM killer.
    pub oom_killed: bool,
    /// Why it could not start, if so.
    pub error: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub finished_at: String,
    /// Restarts done by the restart policy.
    pub restart_count: u32,
    /// `stop` was asked for: no restart.
    pub stopping: bool,
    /// The VM it runs in (`--isolation vm`), while it runs or since it last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<vm::VmInfo>,
}

/// A container's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    /// 64-hex ID.
    pub id: String,
    /// Name (without Docker's leading `/`).
    pub name: String,
    /// Image as the user named it.
    pub image: String,
    /// Image ID.
    pub image_id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The options it was created with.
    pub options: RunOptions,
    /// Program and arguments.
    pub args: Vec<String>,
    /// Remove when it exits (`--rm`).
    pub auto_remove: bool,
    /// `--restart` policy: no, always, unless-stopped, on-failure[:N].
    pub restart: String,
    /// Volumes it mounts (named and anonymous).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Anonymous volumes created for it (removed by `rm -v` and `--rm`).
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// Runtime state.
    pub state: State,
}

impl Container {
    /// The 12-character ID Docker prints.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// Container errors, each naming the container concerned.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container by that name or ID.
    #[error("No such container: {0}")]
    NotFound(String),
    /// An ID prefix matched several.
    #[error("multiple containers match {0}: use more of the ID")]
    Ambiguous(String),
    /// The name is taken.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse {
        /// Name.
        name: String,
        /// Holder.
        id: String,
    },
    /// An invalid name.
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    /// Wrong state for the operation.
    #[error("{0}")]
    State(String),
    /// File-system trouble.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// The container directories under a root.
#[derive(Clone, Debug)]
pub struct Containers {
    dir: PathBuf,
}

/// A held lock on one container's record.
pub struct Locked {
    _f: File,
}

const ADJECTIVES: &[&str] = &[
    "admiring", "brave", "calm", "clever", "eager", "elegant", "festive", "gallant", "happy",
    "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene", "sharp", "stoic", "tender",
    "vibrant", "wizardly", "zealous",
];
const NOUNS: &[&str] = &[
    "albattani",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "fermat",
    "galileo",
    "hopper",
    "hypatia",
    "kepler",
    "lovelace",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wozniak",
];

/// Docker's rule for container and volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Containers {
    /// Containers under `<root>/containers`.
    pub fn new(root: &Path) -> Containers {
        Containers {
            dir: root.join("containers"),
        }
    }

    /// A container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Takes the record lock of a container (blocking).
    pub fn lock(&self, id: &str) -> Result<Locked, ContainerError> {
        let p = self.dir(id).join("record.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_at(&p))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            ContainerError::Io {
                path: p.clone(),
                source: e.into(),
            }
        })?;
        Ok(Locked { _f: f })
    }

    /// Reads a record (no lock: writes are atomic renames).
    pub fn read(&self, id: &str) -> Result<Container, ContainerError> {
        let p = self.dir(id).join("record.json");
        let data = fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContainerError::NotFound(id.to_string())
            } else {
                ContainerError::Io {
                    path: p.clone(),
                    source: e,
                }
            }
        })?;
        serde_json::from_slice(&data).map_err(|e| ContainerError::Io {
            path: p,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// Writes a record atomically (temp file + rename).
    pub fn write(&self, c: &Container) -> Result<(), ContainerError> {
        let dir = self.dir(&c.id);
        let tmp = dir.join("record.json.tmp");
        let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(&serde_json::to_vec_pretty(c).expect("records serialize"))
            .map_err(io_at(&tmp))?;
        f.sync_data().map_err(io_at(&tmp))?;
        fs::rename(&tmp, dir.join("record.json")).map_err(io_at(&dir))?;
        Ok(())
    }

    /// Read-modify-write under the record lock.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container),
    ) -> Result<Container, ContainerError> {
        let _l = self.lock(id)?;
        let mut c = self.read(id)?;
        f(&mut c);
        self.write(&c)?;
        Ok(c)
    }

    /// Every container, newest first, with stale states reconciled.
    pub fn list(&self) -> Result<Vec<Container>, ContainerError> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(c) = self.read(&id) {
                out.push(self.reconcile(c));
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// A record whose monitor died is reported truthfully: the container is
    /// dead (its processes died with the monitor's cgroup kill or are orphans).
    pub fn reconcile(&self, c: Container) -> Container {
        let live = matches!(
            c.state.status,
            Some(Status::Running | Status::Paused | Status::Restarting)
        );
        if live && !monitor::alive(c.state.monitor_pid, c.state.monitor_start) {
            return self
                .update(&c.id, |c| {
                    if !monitor::alive(c.state.monitor_pid, c.state.monitor_start) {
                        c.state.status = Some(Status::Dead);
                        c.state.pid = 0;
                        c.state.error = "the container's monitor is gone".into();
                    }
                })
                .unwrap_or(c);
        }
        c
    }

    /// Finds a container by name, full ID or unique ID prefix.
    pub fn resolve(&self, name: &str) -> Result<Container, ContainerError> {
        let name = name.strip_prefix('/').unwrap_or(name);
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.name == name || c.id == name) {
            return Ok(c.clone());
        }
        let matches: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(name)).collect();
        match matches.len() {
            1 if !name.is_empty() => Ok(matches[0].clone()),
            0 | 1 => Err(ContainerError::NotFound(name.to_string())),
            _ => Err(ContainerError::Ambiguous(name.to_string())),
        }
    }

    /// Checks a requested name, or makes one up as Docker does.
    pub fn name_for(&self, requested: Option<&str>, id: &str) -> Result<String, ContainerError> {
        let all = self.list()?;
        if let Some(n) = requested {
            let n = n.strip_prefix('/').unwrap_or(n);
            if !valid_name(n) {
                return Err(ContainerError::BadName(n.to_string()));
            }
            if let Some(c) = all.iter().find(|c| c.name == n) {
                return Err(ContainerError::NameInUse {
                    name: n.to_string(),
                    id: c.id.clone(),
                });
            }
            return Ok(n.to_string());
        }
        let seed = u64::from_str_radix(&id[..15], 16).unwrap_or(0);
        for i in 0.. {
            let a = ADJECTIVES[((seed >> 8) as usize + i) % ADJECTIVES.len()];
            let n = NOUNS[(seed as usize + i / ADJECTIVES.len()) % NOUNS.len()];
            let name = if i < ADJECTIVES.len() * NOUNS.len() {
                format!("{a}_{n}")
            } else {
                format!("{a}_{n}{i}")
            };
            if !all.iter().any(|c| c.name == name) {
                return Ok(name);
            }
        }
        unreachable!("the name loop always finds a free name")
    }

    /// Creates a container's directory and first record.
    pub fn create(&self, c: &Container) -> Result<(), ContainerError> {
        let dir = self.dir(&c.id);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        self.write(c)
    }

    /// Deletes a container's directory (after its mounts and cgroup are gone).
    pub fn delete(&self, id: &str) -> Result<(), ContainerError> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContainerError::Io {
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
        let dir = tempfile::tempdir().unwrap();
        let cs = Containers::new(dir.path());
        let id = "0123456789abcdef".repeat(4);
        let n = cs.name_for(None, &id).unwrap();
        assert!(n.contains('_'));
        assert_eq!(cs.name_for(Some("/web"), &id).unwrap(), "web");
        assert!(matches!(
            cs.name_for(Some("bad name"), &id),
            Err(ContainerError::BadName(_))
        ));
    }
}
