//! Stored registry credentials.
//!
//! berth's own file (`$BERTH_AUTH_FILE`, else
//! `${XDG_CONFIG_HOME:-~/.config}/berth/auth.json`) has Docker's shape,
//! `{"auths": {"host:port": {"auth": "base64(user:pass)"}}}`, and is written
//! atomically with mode 0600. Docker's `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`) is read too, after berth's own. Credential
//! helpers (`credsStore`) are not run.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::RegistryError;

/// The key Docker stores Docker Hub credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `base64(user:pass)`, as in an `Authorization: Basic` header and auth files.
    pub fn encoded(&self) -> String {
        STANDARD.encode(format!("{}:{}", self.username, self.password))
    }
}

/// The key a registry's credentials are stored under (Docker's choice).
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        r => r.to_string(),
    }
}

/// A stored key reduced to `host[:port]` (`https://host/v1/` → `host`).
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        k => k.to_string(),
    }
}

/// Where credentials are read from and written to.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    /// berth's own file (read first; the only one written).
    pub own: PathBuf,
    /// Docker's config.json, when a home or `$DOCKER_CONFIG` is known.
    pub docker: Option<PathBuf>,
}

impl AuthFiles {
    /// The files named by the environment (see the module documentation).
    pub fn from_env() -> AuthFiles {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let own = env("BERTH_AUTH_FILE").unwrap_or_else(|| {
            env("XDG_CONFIG_HOME")
                .or_else(|| home.as_ref().map(|h| h.join(".config")))
                .unwrap_or_else(|| PathBuf::from("/root/.config"))
                .join("berth/auth.json")
        });
        let docker = env("DOCKER_CONFIG")
            .or_else(|| home.map(|h| h.join(".docker")))
            .map(|d| d.join("config.json"));
        AuthFiles { own, docker }
    }

    /// Credentials for `registry` (`host[:port]` as in a reference), if any.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let want = normalise_key(&auth_key(registry));
        for path in std::iter::once(&self.own).chain(self.docker.as_ref()) {
            let Some(doc) = read_json(path)? else {
                continue;
            };
            let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
                continue;
            };
            // An exact key first, then any spelling of the same host.
            let entry = auths.get(&auth_key(registry)).or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| normalise_key(k) == want)
                    .map(|(_, v)| v)
            });
            if let Some(e) = entry
                && let Some(c) = decode_entry(e).map_err(|reason| RegistryError::Credentials {
                    path: path.clone(),
                    reason: format!("entry for {registry}: {reason}"),
                })?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Stores credentials for `registry` in berth's own file.
    pub fn store(&self, registry: &str, c: &Credentials) -> Result<(), RegistryError> {
        let mut doc = read_json(&self.own)?.unwrap_or_else(|| json!({}));
        let obj = doc
            .as_object_mut()
            .ok_or_else(|| RegistryError::Credentials {
                path: self.own.clone(),
                reason: "is not a JSON object".into(),
            })?;
        let auths = obj
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        auths
            .as_object_mut()
            .expect("object")
            .insert(auth_key(registry), json!({ "auth": c.encoded() }));
        write_private(&self.own, &doc)
    }

    /// Removes `registry`'s credentials from berth's own file. Returns false
    /// when there were none.
    pub fn remove(&self, registry: &str) -> Result<bool, RegistryError> {
        let Some(mut doc) = read_json(&self.own)? else {
            return Ok(false);
        };
        let want = normalise_key(&auth_key(registry));
        let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
            return Ok(false);
        };
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| normalise_key(k) == want)
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        for k in keys {
            auths.remove(&k);
        }
        write_private(&self.own, &doc)?;
        Ok(true)
    }
}

fn decode_entry(e: &Value) -> Result<Option<Credentials>, String> {
    if let Some(a) = e
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let raw = STANDARD
            .decode(a.trim())
            .map_err(|err| format!("\"auth\" is not base64: {err}"))?;
        let s = String::from_utf8(raw).map_err(|_| "\"auth\" is not UTF-8".to_string())?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| "\"auth\" is not user:password".to_string())?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    // Some tools write the two fields instead.
    match (
        e.get("username").and_then(Value::as_str),
        e.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })),
        _ => Ok(None),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::Credentials {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RegistryError::Credentials {
            path: path.to_path_buf(),
            reason: format!("malformed JSON: {e}"),
        })
}

/// Writes `doc` to `path` with mode 0600 via a temporary file and a rename,
/// so a crash leaves the old file or the new one.
fn write_private(path: &Path, doc: &Value) -> Result<(), RegistryError> {
    let err = |reason: String| RegistryError::Credentials {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    // tempfile creates the file 0600 already; the rename keeps that mode.
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth-")
        .tempfile_in(dir)
        .map_err(|e| err(e.to_string()))?;
    let mut text = serde_json::to_vec_pretty(doc).expect("json");
    text.push(b'\n');
    tmp.write_all(&text).map_err(|e| err(e.to_string()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn store_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let files = AuthFiles {
            own: dir.path().join("sub/auth.json"),
            docker: Some(dir.path().join("docker/config.json")),
        };
        assert_eq!(files.get("127.0.0.1:5000").unwrap(), None);
        files
            .store("127.0.0.1:5000", &creds("alice", "s:ecret"))
            .unwrap();
        files.store("docker.io", &creds("bob", "pw")).unwrap();
        let mode = std::fs::metadata(&files.own).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let doc: Value = serde_json::from_slice(&std::fs::read(&files.own).unwrap()).unwrap();
        assert_eq!(
            doc["auths"]["127.0.0.1:5000"]["auth"],
            json!(STANDARD.encode("alice:s:ecret"))
        );
        assert!(doc["auths"][DOCKER_HUB_KEY].is_object());
        assert_eq!(
            files.get("127.0.0.1:5000").unwrap(),
            Some(creds("alice", "s:ecret"))
        );
        assert_eq!(files.get("docker.io").unwrap(), Some(creds("bob", "pw")));
        assert!(files.remove("127.0.0.1:5000").unwrap());
        assert!(!files.remove("127.0.0.1:5000").unwrap());
        assert_eq!(files.get("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn docker_config_is_read_after_berths() {
        let dir = tempfile::tempdir().unwrap();
        let files = AuthFiles {
            own: dir.path().join("auth.json"),
            docker: Some(dir.path().join("config.json")),
        };
        std::fs::write(
            files.docker.as_ref().unwrap(),
            format!(
                r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{}"}},
                    "other.example": {{"username": "u", "password": "p"}}}}}}"#,
                STANDARD.encode("carol:x")
            ),
        )
        .unwrap();
        assert_eq!(
            files.get("reg.example:5000").unwrap(),
            Some(creds("carol", "x"))
        );
        assert_eq!(files.get("other.example").unwrap(), Some(creds("u", "p")));
        files
            .store("reg.example:5000", &creds("dave", "y"))
            .unwrap();
        assert_eq!(
            files.get("reg.example:5000").unwrap(),
            Some(creds("dave", "y"))
        );
        std::fs::write(&files.own, "{bad").unwrap();
        let e = files.get("x").unwrap_err().to_string();
        assert!(e.contains("auth.json"), "{e}");
    }

    #[test]
    fn keys() {
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(normalise_key(DOCKER_HUB_KEY), "docker.io");
        assert_eq!(normalise_key("http://h:1/v2/"), "h:1");
        assert!(!format!("{:?}", creds("u", "secret")).contains("secret"));
    }
}
