//! Image references, parsed and normalised the way Docker does.
//!
//! `busybox` → `docker.io/library/busybox:latest`, `localhost:5000/a/b:tag`,
//! `name@sha256:…`. The grammar follows the distribution project's reference
//! package; the first path component is a registry host only when it contains a
//! `.` or a `:` or is `localhost`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Default registry for names without one.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A fully normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reference format \"{input}\": {reason}")]
pub struct ReferenceError {
    /// The string as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Reference {
    /// Parses and normalises `s`; adds `:latest` when neither tag nor digest is given.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_name_only(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses without adding a default tag (for `repo` filters and `image prune`).
    pub fn parse_name_only(s: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("cannot specify 64-byte hexadecimal strings"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| err("invalid digest"))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(err("invalid tag"));
        }
        if name.is_empty() {
            return Err(err("empty repository name"));
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain
            && !valid_domain(d)
        {
            return Err(err("invalid registry host"));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(err("invalid repository name"));
        }
        let mut domain = domain.unwrap_or(DEFAULT_DOMAIN).to_string();
        if domain == LEGACY_DOMAIN {
            domain = DEFAULT_DOMAIN.to_string();
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_string()
        };
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(err("repository name longer than 255 characters"));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Registry host, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }
    /// Repository path within the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// Tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// Digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// `domain/path` — the full repository name.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
    /// The repository as Docker shows it: `busybox`, `myorg/app`, `localhost:5000/x`.
    pub fn familiar_repository(&self) -> String {
        familiar(&self.repository())
    }
    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
    /// `repository:tag` or `repository@digest` form used as a key in the store.
    pub fn familiar(&self) -> String {
        familiar(&self.to_string())
    }
}

/// Shortens a normalised name the way Docker prints it.
pub fn familiar(full: &str) -> String {
    let s = full
        .strip_prefix("docker.io/")
        .map(|rest| rest.strip_prefix(OFFICIAL_PREFIX).unwrap_or(rest))
        .unwrap_or(full);
    s.to_string()
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("myorg/app"), "docker.io/myorg/app:latest");
        assert_eq!(norm("index.docker.io/x"), "docker.io/library/x:latest");
        assert_eq!(norm("localhost:5000/a/b:tag"), "localhost:5000/a/b:tag");
        assert_eq!(norm("localhost/a"), "localhost/a:latest");
        assert_eq!(norm("ghcr.io/o/r:v1.2-rc_3"), "ghcr.io/o/r:v1.2-rc_3");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("localhost:5000/x:t@{d}")),
            format!("localhost:5000/x:t@{d}")
        );
    }

    #[test]
    fn familiar_names() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.familiar_repository(), "busybox");
        assert_eq!(r.familiar(), "busybox:latest");
        let r = Reference::parse("myorg/app:1").unwrap();
        assert_eq!(r.familiar(), "myorg/app:1");
        let r = Reference::parse("localhost:5000/a").unwrap();
        assert_eq!(r.familiar_repository(), "localhost:5000/a");
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "UPPER/case",
            "Busybox",
            "a:b:c",
            "",
            ":tag",
            "a/",
            "a//b",
            "-a",
            "a-",
            "a:",
            "a@sha256:zz",
            "a b",
            "a:-tag",
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("invalid reference format"), "{e}");
        }
        let e = Reference::parse(&"a".repeat(64)).unwrap_err();
        assert!(e.to_string().contains("64-byte"));
        let long = format!("x/{}", "a".repeat(300));
        assert!(Reference::parse(&long).is_err());
    }

    #[test]
    fn separators() {
        assert!(Reference::parse("a__b").is_ok());
        assert!(Reference::parse("a---b").is_ok());
        assert!(Reference::parse("a.b_c").is_ok());
        assert!(Reference::parse("a..b").is_err());
        assert!(Reference::parse("a___b").is_err());
    }
}
