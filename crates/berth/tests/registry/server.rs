//! Real registries for the tests: Debian's `docker-registry` (distribution
//! 2.8) with a temporary config and storage, and a token server for its
//! token auth.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::scratch;
use crate::net::{self, LOCALHOST, Request, Response, Server, b64_decode};
use crate::pki::Signer;

/// How clients must authenticate to a registry.
pub enum Auth {
    None,
    /// Basic auth against an htpasswd file (bcrypt entries).
    Htpasswd {
        user: String,
        password: String,
    },
    /// Bearer tokens from `token`.
    Token(Arc<TokenServer>),
}

/// A `docker-registry` process with its config and storage in a scratch dir.
/// Dropping it kills the process (by PID) and removes the dir.
pub struct Registry {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    // Last: removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Plain HTTP on 127.0.0.1, no auth.
    pub fn plain() -> Registry {
        Registry::start(LOCALHOST, Auth::None, None)
    }

    /// Starts a registry on `ip` (a free port) with `auth`, serving TLS when
    /// `tls` = (certificate, key) is given; returns once it accepts
    /// connections.
    pub fn start(ip: Ipv4Addr, auth: Auth, tls: Option<(&Path, &Path)>) -> Registry {
        let dir = scratch();
        let d = dir.path();
        let mut auth_yaml = String::new();
        match &auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let path = d.join("htpasswd");
                // -B bcrypt (what distribution accepts); -C 4: cheapest cost.
                let o = Command::new("htpasswd")
                    .args(["-nbB", "-C", "4", user, password])
                    .output()
                    .expect("htpasswd not found; run scripts/deps.sh (apache2-utils)");
                assert!(o.status.success(), "htpasswd failed");
                std::fs::write(&path, o.stdout).unwrap();
                write!(
                    auth_yaml,
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    path.display()
                )
                .unwrap();
            }
            Auth::Token(t) => {
                write!(
                    auth_yaml,
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                     rootcertbundle: {}\n",
                    t.realm(),
                    t.service,
                    t.issuer,
                    t.signer.cert.display()
                )
                .unwrap();
            }
        }
        let tls_yaml = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let log = d.join("registry.log");
        // Another test may take the port between free_port and the registry's
        // bind; then the registry exits and we try another.
        for _attempt in 0..5 {
            let port = net::free_port(ip);
            let addr = SocketAddr::from((ip, port));
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: berth-test-secret\n{tls_yaml}\
                 {auth_yaml}",
                root = d.join("data").display(),
            );
            let cfg = d.join("config.yml");
            std::fs::write(&cfg, config).unwrap();
            let logf = std::fs::File::create(&log).unwrap();
            let mut cmd = Command::new("docker-registry");
            // It reads REGISTRY_* variables as config overrides: none of ours.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().unwrap())
                .stderr(logf)
                .spawn()
                .expect("docker-registry not found; run scripts/deps.sh");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if net::accepting(addr) {
                    return Registry {
                        addr,
                        child,
                        log,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "docker-registry did not start; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `host:port`, as it appears in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log so far (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- registry {} log (last lines) ---", self.addr);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A token server (distribution's token auth): HTTP on 127.0.0.1, checks
/// Basic credentials (or OAuth2 password-grant form fields), grants every
/// scope asked for, signs with its own key.
pub struct TokenServer {
    pub server: Server,
    pub service: String,
    pub issuer: String,
    pub signer: Arc<Signer>,
    /// Every scope asked for, in order (`repository:NAME:ACTIONS`).
    pub scopes: Arc<Mutex<Vec<String>>>,
    /// Requests refused for bad or missing credentials.
    pub refused: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(user: &str, password: &str) -> Arc<TokenServer> {
        let dir = scratch();
        let signer = Arc::new(Signer::new(dir.path()));
        let service = "berth-test-registry".to_string();
        let issuer = "berth-test-issuer".to_string();
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let (s2, sc2, rf2, svc2, iss2) = (
            signer.clone(),
            scopes.clone(),
            refused.clone(),
            service.clone(),
            issuer.clone(),
        );
        let (user, password) = (user.to_string(), password.to_string());
        let server = net::serve(LOCALHOST, move |req: &Request| {
            token_reply(req, &user, &password, &s2, &sc2, &rf2, &svc2, &iss2)
        });
        Arc::new(TokenServer {
            server,
            service,
            issuer,
            signer,
            scopes,
            refused,
            _dir: dir,
        })
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr)
    }

    pub fn scopes(&self) -> Vec<String> {
        self.scopes.lock().unwrap().clone()
    }
}

#[allow(clippy::too_many_arguments)]
fn token_reply(
    req: &Request,
    user: &str,
    password: &str,
    signer: &Signer,
    scopes: &Mutex<Vec<String>>,
    refused: &AtomicU64,
    service: &str,
    issuer: &str,
) -> Response {
    if req.path() != "/token" {
        return Response::new(404);
    }
    // GET ?service=&scope=... with Basic auth (Docker's and containers/image's
    // usual flow), or POST grant_type=password form (containerd's).
    let mut params = req.query();
    let mut creds = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| b64_decode(b.trim()))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    if req.method == "POST" {
        params.extend(Request::pairs(&String::from_utf8_lossy(&req.body)));
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(u), Some(p)) = (get("username"), get("password")) {
            creds = Some((u, p));
        }
    }
    if creds.as_ref() != Some(&(user.to_string(), password.to_string())) {
        refused.fetch_add(1, Ordering::SeqCst);
        return Response::json(
            401,
            &json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}),
        )
        .header("WWW-Authenticate", "Basic realm=\"berth-test-token\"");
    }
    let mut access = Vec::new();
    for (k, v) in &params {
        if k != "scope" {
            continue;
        }
        // A scope parameter may hold several space-separated scopes.
        for scope in v.split(' ').filter(|s| !s.is_empty()) {
            scopes.lock().unwrap().push(scope.to_string());
            // type:name:actions, where the name may itself contain ':'.
            let Some((typ, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            access.push(json!({
                "type": typ,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    static JTI: AtomicU64 = AtomicU64::new(0);
    let claims = json!({
        "iss": issuer,
        "sub": user,
        "aud": service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let token = signer.jwt(&claims);
    Response::json(
        200,
        &json!({"token": token, "access_token": token, "expires_in": 300}),
    )
}
