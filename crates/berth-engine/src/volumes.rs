//! Volumes: named and anonymous directories under `<root>/volumes/<name>/_data`
//! that outlive containers, plus parsing of `-v`, `--mount` and `--tmpfs` into
//! OCI mounts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containers::valid_name;

/// A volume's record (`volume.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    /// Name (64 hex digits for anonymous volumes).
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Created implicitly for one container (image VOLUME or `-v /path`).
    #[serde(default)]
    pub anonymous: bool,
    /// Filled from the image on first use already.
    #[serde(default)]
    pub populated: bool,
}

/// Volume errors, naming the volume or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Unknown volume.
    #[error("get {0}: no such volume")]
    NotFound(String),
    /// Bad name.
    #[error(
        "\"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
    )]
    BadName(String),
    /// Still used.
    #[error("remove {name}: volume is in use - [{users}]")]
    InUse {
        /// Volume.
        name: String,
        /// Containers.
        users: String,
    },
    /// A bad `-v`/`--mount`/`--tmpfs` value.
    #[error("{0}")]
    Spec(String),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn io_at(p: &Path) -> impl FnOnce(io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: p.to_path_buf(),
        source,
    }
}

/// The volumes of one root.
#[derive(Clone, Debug)]
pub struct Volumes {
    dir: PathBuf,
}

impl Volumes {
    /// Volumes under `<root>/volumes`.
    pub fn new(root: &Path) -> Volumes {
        Volumes {
            dir: root.join("volumes"),
        }
    }

    /// The data directory of a volume.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Reads a volume's record.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        let p = self.dir.join(name).join("volume.json");
        let b = fs::read(&p).map_err(|_| VolumeError::NotFound(name.to_string()))?;
        serde_json::from_slice(&b).map_err(|e| VolumeError::Io {
            path: p,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    fn put(&self, v: &Volume) -> Result<(), VolumeError> {
        let d = self.dir.join(&v.name);
        let tmp = d.join("volume.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(v).expect("json")).map_err(io_at(&tmp))?;
        fs::rename(&tmp, d.join("volume.json")).map_err(io_at(&d))
    }

    /// Creates a volume (or returns the existing one of that name).
    pub fn create(
        &self,
        name: Option<&str>,
        labels: &[String],
        anonymous: bool,
    ) -> Result<Volume, VolumeError> {
        let name = match name {
            Some(n) if !valid_name(n) => return Err(VolumeError::BadName(n.to_string())),
            Some(n) => n.to_string(),
            None => crate::run::new_id(),
        };
        if let Ok(v) = self.get(&name) {
            return Ok(v);
        }
        let data = self.data(&name);
        fs::create_dir_all(&data).map_err(io_at(&data))?;
        let v = Volume {
            name,
            created: berth_image::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
            labels: labels
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            anonymous,
            populated: false,
        };
        self.put(&v)?;
        Ok(v)
    }

    /// All volumes, by name.
    pub fn list(&self) -> Vec<Volume> {
        let mut out: Vec<Volume> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Deletes a volume and its data.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let d = self.dir.join(name);
        fs::remove_dir_all(&d).map_err(io_at(&d))
    }

    /// Fills an empty volume with the image's content at `path` the first
    /// time it is used, as Docker does. `lowerdirs` are the image layers, top first.
    pub fn populate(
        &self,
        name: &str,
        lowerdirs: &[PathBuf],
        path: &str,
    ) -> Result<(), VolumeError> {
        let mut v = self.get(name)?;
        if v.populated {
            return Ok(());
        }
        let data = self.data(name);
        let empty = fs::read_dir(&data).map_err(io_at(&data))?.next().is_none();
        if empty && !lowerdirs.is_empty() {
            copy_from_image(lowerdirs, path, &data)?;
        }
        v.populated = true;
        self.put(&v)
    }
}

/// Copies `path` of the image's merged view into `dest`: a read-only overlay
/// of the layers is mounted in a private temporary directory, copied with
/// `cp -a` (owners, modes, links, xattrs), and unmounted.
fn copy_from_image(lowerdirs: &[PathBuf], path: &str, dest: &Path) -> Result<(), VolumeError> {
    let tmp = tempfile::Builder::new()
        .prefix(".populate-")
        .tempdir_in(dest.parent().unwrap_or(dest))
        .map_err(io_at(dest))?;
    let mnt = tmp.path().join("m");
    fs::create_dir(&mnt).map_err(io_at(&mnt))?;
    let lower: Vec<String> = lowerdirs.iter().map(|p| p.display().to_string()).collect();
    // An overlay needs two lower dirs to be read-only without an upper dir.
    let lower = if lower.len() == 1 {
        let extra = tmp.path().join("e");
        fs::create_dir(&extra).map_err(io_at(&extra))?;
        format!("{}:{}", lower[0], extra.display())
    } else {
        lower.join(":")
    };
    berth_runtime::linux::rootfs::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        libc::MS_RDONLY,
        Some(&format!("lowerdir={lower}")),
    )
    .map_err(io_at(&mnt))?;
    let src = mnt.join(path.trim_start_matches('/'));
    let result = if src.is_dir() {
        std::process::Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(format!("{}/.", src.display()))
            .arg(dest)
            .status()
            .map_err(io_at(dest))
            .and_then(|s| {
                if s.success() {
                    Ok(())
                } else {
                    Err(VolumeError::Spec(format!(
                        "copying {path} from the image into the volume failed"
                    )))
                }
            })
    } else {
        Ok(())
    };
    let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    result
}

/// One mount a container asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    /// A host path.
    Bind {
        /// Host path (absolute).
        source: String,
        /// Container path.
        target: String,
        /// Read-only.
        ro: bool,
    },
    /// A named volume (None: anonymous).
    Volume {
        /// Name.
        name: Option<String>,
        /// Container path.
        target: String,
        /// Read-only.
        ro: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Container path.
        target: String,
        /// Extra options (size=…, mode=…).
        options: Vec<String>,
    },
}

impl MountSpec {
    /// The container path.
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Volume { target, .. }
            | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

fn absolute(what: &str, p: &str) -> Result<String, VolumeError> {
    if !p.starts_with('/') {
        return Err(VolumeError::Spec(format!(
            "invalid {what} \"{p}\": mount path must be absolute"
        )));
    }
    Ok(p.to_string())
}

/// Parses `-v SRC:DST[:OPTS]`, `-v NAME:DST`, `-v DST`.
pub fn parse_volume_flag(v: &str) -> Result<MountSpec, VolumeError> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [s, d] => (Some(*s), *d, ""),
        [s, d, o] => (Some(*s), *d, *o),
        _ => {
            return Err(VolumeError::Spec(format!(
                "invalid volume specification: \"{v}\""
            )));
        }
    };
    let mut ro = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" | "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave"
            | "rslave" | "nocopy" | "consistent" | "cached" | "delegated" => {}
            other => {
                return Err(VolumeError::Spec(format!(
                    "invalid volume specification: \"{v}\": unknown option \"{other}\""
                )));
            }
        }
    }
    let target = absolute("volume destination", dst)?;
    match src {
        None => Ok(MountSpec::Volume {
            name: None,
            target,
            ro,
        }),
        Some(s) if s.starts_with('/') => Ok(MountSpec::Bind {
            source: s.to_string(),
            target,
            ro,
        }),
        Some(s) if s.starts_with('.') || s.contains('/') => Err(VolumeError::Spec(format!(
            "invalid volume specification: \"{v}\": the host path \"{s}\" must be absolute"
        ))),
        Some(s) if !valid_name(s) => Err(VolumeError::BadName(s.to_string())),
        Some(s) => Ok(MountSpec::Volume {
            name: Some(s.to_string()),
            target,
            ro,
        }),
    }
}

/// Parses `--mount type=bind|volume|tmpfs,source=…,target=…,readonly`.
pub fn parse_mount_flag(v: &str) -> Result<MountSpec, VolumeError> {
    let mut kind = "volume".to_string();
    let (mut src, mut dst, mut ro) = (None, None, false);
    let mut tmpfs = Vec::new();
    for field in v.split(',') {
        let (k, val) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = val.to_string(),
            "source" | "src" => src = Some(val.to_string()),
            "target" | "destination" | "dst" => dst = Some(val.to_string()),
            "readonly" | "ro" => ro = val.is_empty() || val == "true" || val == "1",
            "tmpfs-size" => tmpfs.push(format!("size={val}")),
            "tmpfs-mode" => tmpfs.push(format!("mode={val}")),
            "bind-propagation" | "volume-nocopy" | "consistency" => {}
            other => {
                return Err(VolumeError::Spec(format!(
                    "invalid field \"{other}\" in --mount \"{v}\""
                )));
            }
        }
    }
    let target = absolute(
        "--mount target",
        &dst.ok_or_else(|| VolumeError::Spec(format!("--mount \"{v}\": target is required")))?,
    )?;
    match kind.as_str() {
        "bind" => {
            let s = src
                .ok_or_else(|| VolumeError::Spec(format!("--mount \"{v}\": source is required")))?;
            let s = absolute("--mount source", &s)?;
            if !Path::new(&s).exists() {
                return Err(VolumeError::Spec(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {s}"
                )));
            }
            Ok(MountSpec::Bind {
                source: s,
                target,
                ro,
            })
        }
        "volume" => Ok(MountSpec::Volume {
            name: src.filter(|s| !s.is_empty()),
            target,
            ro,
        }),
        "tmpfs" => Ok(MountSpec::Tmpfs {
            target,
            options: tmpfs,
        }),
        other => Err(VolumeError::Spec(format!(
            "--mount \"{v}\": unknown type \"{other}\""
        ))),
    }
}

/// Parses `--tmpfs /path[:opts]`.
pub fn parse_tmpfs_flag(v: &str) -> Result<MountSpec, VolumeError> {
    let (p, opts) = v.split_once(':').unwrap_or((v, ""));
    Ok(MountSpec::Tmpfs {
        target: absolute("--tmpfs path", p)?,
        options: opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(
            parse_volume_flag("/h:/c:ro").unwrap(),
            MountSpec::Bind {
                source: "/h".into(),
                target: "/c".into(),
                ro: true
            }
        );
        assert_eq!(
            parse_volume_flag("data:/c").unwrap(),
            MountSpec::Volume {
                name: Some("data".into()),
                target: "/c".into(),
                ro: false
            }
        );
        assert_eq!(
            parse_volume_flag("/c").unwrap(),
            MountSpec::Volume {
                name: None,
                target: "/c".into(),
                ro: false
            }
        );
        let e = parse_volume_flag("data:relative").unwrap_err().to_string();
        assert!(e.contains("relative") && e.contains("absolute"), "{e}");
        assert!(parse_volume_flag("./x:/c").is_err());
        assert!(parse_volume_flag("/h:/c:bogus").is_err());
        assert_eq!(
            parse_mount_flag("type=tmpfs,target=/t,tmpfs-size=1m").unwrap(),
            MountSpec::Tmpfs {
                target: "/t".into(),
                options: vec!["size=1m".into()]
            }
        );
        assert!(parse_mount_flag("type=bind,source=/nonexistent-berth,target=/x").is_err());
        assert!(parse_mount_flag("type=volume,target=x").is_err());
        assert_eq!(parse_tmpfs_flag("/run:size=1m").unwrap().target(), "/run");
        assert!(parse_tmpfs_flag("run").is_err());
    }
}
