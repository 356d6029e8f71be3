//! Keys and certificates for the registry tests, made with the `openssl`
//! command (no crypto crates to build): a CA and a server certificate for TLS,
//! and an RSA key with a self-signed certificate that signs the token server's
//! JWTs (RS256, the certificate in the `x5c` header; distribution verifies it
//! against `rootcertbundle`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::net::b64;

/// Runs `openssl ARGS` (split at whitespace) in `dir` with `stdin`; returns
/// stdout.
fn openssl(dir: &Path, args: &str, stdin: &[u8]) -> Vec<u8> {
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut c = Command::new("openssl");
    c.current_dir(dir)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("spawn openssl (scripts/deps.sh installs it): {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A certificate authority made for one test.
pub struct Ca {
    dir: PathBuf,
    pub cert: PathBuf,
}

impl Ca {
    /// A P-256 CA in `dir` (created).
    pub fn new(dir: &Path) -> Ca {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            "req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
             -keyout ca.key -out ca.crt -days 2 -subj /CN=berth-test-CA \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign",
            b"",
        );
        Ca {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.crt"),
        }
    }

    /// A server certificate for the IP address `ip` (as an IP SAN, what
    /// clients check); returns (certificate, key) paths.
    pub fn server_cert(&self, ip: &str) -> (PathBuf, PathBuf) {
        let d = &self.dir;
        std::fs::write(
            d.join("server.ext"),
            format!(
                "subjectAltName=IP:{ip}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(
            d,
            &format!(
                "req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                 -keyout server.key -out server.csr -subj /CN={ip}"
            ),
            b"",
        );
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
             -out server.crt -extfile server.ext",
            b"",
        );
        (d.join("server.crt"), d.join("server.key"))
    }
}

/// The token server's signing key and its self-signed certificate.
pub struct Signer {
    dir: PathBuf,
    /// PEM certificate: the registry's `rootcertbundle`.
    pub cert: PathBuf,
    /// The certificate, DER in standard base64: the JWT header's `x5c`.
    x5c: String,
}

impl Signer {
    pub fn new(dir: &Path) -> Signer {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            "req -x509 -new -nodes -newkey rsa:2048 -keyout sign.key -out sign.crt -days 2 \
             -subj /CN=berth-test-token-signer",
            b"",
        );
        let der = openssl(dir, "x509 -in sign.crt -outform DER", b"");
        Signer {
            dir: dir.to_path_buf(),
            cert: dir.join("sign.crt"),
            x5c: b64(&der, false),
        }
    }

    /// A compact RS256 JWT carrying `claims`.
    pub fn jwt(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let signing_input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap(), true),
            b64(&serde_json::to_vec(claims).unwrap(), true)
        );
        // RS256 is RSASSA-PKCS1-v1_5 over SHA-256: exactly `dgst -sign`.
        let sig = openssl(
            &self.dir,
            "dgst -sha256 -sign sign.key",
            signing_input.as_bytes(),
        );
        format!("{signing_input}.{}", b64(&sig, true))
    }
}
