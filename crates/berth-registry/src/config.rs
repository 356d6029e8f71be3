//! berth's configuration file (JSON, shaped like Docker's `daemon.json`).
//!
//! `$BERTH_CONFIG`, else `/etc/berth/config.json`. A missing file means the
//! defaults; a malformed one is an error naming the file. Unknown keys are
//! ignored, so later issues can add their own (a default isolation, networks)
//! to [`Config`] without breaking older files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::RegistryError;

/// Where the configuration file is when `$BERTH_CONFIG` is not set.
pub const DEFAULT_CONFIG: &str = "/etc/berth/config.json";
/// Default per-registry certificate directory (Docker's `certs.d` layout).
pub const DEFAULT_CERTS_DIR: &str = "/etc/berth/certs.d";

/// The configuration file's contents.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct Config {
    /// Registries (`host[:port]`) that may be reached over plain HTTP, or
    /// over HTTPS without certificate verification.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates and client certificates, per registry:
    /// `<certs-dir>/<host[:port]>/*.crt`, `client.cert` + `client.key`.
    pub certs_dir: PathBuf,
    /// Layers downloaded at once by a pull.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once by a push.
    pub max_concurrent_uploads: usize,
    /// Connect timeout, and how long a request may go without progress.
    pub registry_timeout_seconds: u64,
    /// Default isolation of `run`/`create`: `container` or `vm` (read by the
    /// engine, which checks the value).
    pub isolation: Option<String>,
    /// Where the file was read from (not a key).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            insecure_registries: Vec::new(),
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            registry_timeout_seconds: 30,
            isolation: None,
            path: PathBuf::from(DEFAULT_CONFIG),
        }
    }
}

impl Config {
    /// The file named by `$BERTH_CONFIG`, else [`DEFAULT_CONFIG`].
    pub fn path_from_env() -> PathBuf {
        std::env::var_os("BERTH_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// Reads the configuration from [`Config::path_from_env`].
    pub fn load() -> Result<Config, RegistryError> {
        Self::from_path(&Self::path_from_env())
    }

    /// Reads the configuration at `path`; a missing file gives the defaults.
    pub fn from_path(path: &Path) -> Result<Config, RegistryError> {
        let bad = |reason: String| RegistryError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config {
                    path: path.to_path_buf(),
                    ..Config::default()
                });
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut c = Self::parse(&text).map_err(bad)?;
        c.path = path.to_path_buf();
        Ok(c)
    }

    /// Parses the file's bytes (an empty file is the defaults).
    pub fn parse(text: &[u8]) -> Result<Config, String> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let c: Config =
            serde_json::from_slice(text).map_err(|e| format!("malformed configuration: {e}"))?;
        if c.max_concurrent_downloads == 0 || c.max_concurrent_uploads == 0 {
            return Err(
                "max-concurrent-downloads and max-concurrent-uploads must be at least 1".into(),
            );
        }
        if c.registry_timeout_seconds == 0 {
            return Err("registry-timeout-seconds must be at least 1".into());
        }
        Ok(c)
    }

    /// The registry timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.registry_timeout_seconds)
    }

    /// True when `host` (as in a reference: `host[:port]`) may use plain HTTP:
    /// `localhost` and `127.0.0.1` on any port, and the insecure registries.
    pub fn allows_http(&self, host: &str) -> bool {
        let name = host_name(host);
        name == "localhost" || name == "127.0.0.1" || self.is_insecure(host)
    }

    /// True when `host` is listed in `insecure-registries` (by `host:port`, or
    /// by host name alone, which then covers every port).
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_registries.iter().any(|r| {
            let r = r
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            r == host || r == host_name(host)
        })
    }
}

/// `host` without its `:port` (IPv6 brackets kept).
pub(crate) fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_keys() {
        let c = Config::parse(b"").unwrap();
        assert_eq!(c.max_concurrent_downloads, 3);
        assert_eq!(c.max_concurrent_uploads, 5);
        assert_eq!(c.registry_timeout_seconds, 30);
        assert_eq!(c.certs_dir, PathBuf::from(DEFAULT_CERTS_DIR));
        let c = Config::parse(
            br#"{"insecure-registries": ["reg.example:5000", "other.example"],
                 "certs-dir": "/x/certs.d", "max-concurrent-downloads": 7,
                 "registry-timeout-seconds": 2, "some-later-key": true}"#,
        )
        .unwrap();
        assert_eq!(c.max_concurrent_downloads, 7);
        assert_eq!(c.max_concurrent_uploads, 5);
        assert_eq!(c.timeout(), Duration::from_secs(2));
        assert_eq!(c.certs_dir, PathBuf::from("/x/certs.d"));
        assert!(c.allows_http("reg.example:5000"));
        assert!(!c.allows_http("reg.example:5001"));
        assert!(c.allows_http("other.example:1234"));
        assert!(c.allows_http("localhost:5000"));
        assert!(c.allows_http("127.0.0.1:1"));
        assert!(c.allows_http("127.0.0.1"));
        assert!(!c.allows_http("127.0.0.2:5000"));
        assert!(!c.allows_http("docker.io"));
    }

    #[test]
    fn errors_name_the_file() {
        assert!(Config::parse(b"{not json").is_err());
        assert!(Config::parse(br#"{"max-concurrent-downloads": 0}"#).is_err());
        assert!(Config::parse(br#"{"insecure-registries": "x"}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let c = Config::from_path(&p).unwrap();
        assert_eq!(c.path, p);
        std::fs::write(&p, "{oops").unwrap();
        let e = Config::from_path(&p).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("a.b:5000"), "a.b");
        assert_eq!(host_name("a.b"), "a.b");
        assert_eq!(host_name("[::1]:5000"), "[::1]");
    }
}
