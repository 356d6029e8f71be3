//! Registry authentication: `WWW-Authenticate` challenges, token scopes and
//! the bearer-token cache (pure logic; the HTTP side is in `transport`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a registry wants to be authenticated, from its `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send the credentials with every request.
    Basic,
    /// `Bearer realm=…,service=…[,scope=…]`: get a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter, when given.
        service: Option<String>,
        /// `scope` the failed request needed, when given.
        scope: Option<String>,
        /// `error` (e.g. `insufficient_scope`, `invalid_token`), when given.
        error: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value. Returns the first challenge
/// berth understands (Bearer or Basic), or None.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = match rest.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let (params, next) = parse_params(after);
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                if let Some(realm) = params.get("realm") {
                    return Some(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                        error: params.get("error").cloned(),
                    });
                }
            }
            "basic" => return Some(Challenge::Basic),
            _ => {}
        }
        rest = next.trim_start_matches([',', ' ']);
    }
    None
}

/// Parses `k=v, k="quoted, \"v\"", …` up to the start of the next challenge.
/// Keys are lower-cased. Returns the parameters and what follows them.
fn parse_params(s: &str) -> (HashMap<String, String>, &str) {
    let mut out = HashMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let Some(eq) = rest.find('=') else {
            return (out, rest);
        };
        let key = &rest[..eq];
        if key.is_empty() || key.contains([' ', ',', '"']) {
            // A new challenge's scheme: "Basic realm=…".
            return (out, rest);
        }
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end.min(q.len())..])
        } else {
            let end = after.find([',', ' ']).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(key.to_ascii_lowercase(), value);
        rest = tail;
    }
}

/// Access to one repository, as a token scope: `repository:NAME:pull,push`.
pub fn repository_scope(repo: &str, push: bool) -> String {
    if push {
        format!("repository:{repo}:pull,push")
    } else {
        format!("repository:{repo}:pull")
    }
}

/// The scopes of a request, joined in a stable order (the token-cache key).
pub fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.dedup();
    s.join(" ")
}

/// A token endpoint's answer.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The token (Docker's name).
    #[serde(default)]
    pub token: Option<String>,
    /// The token (OAuth2's name).
    #[serde(default)]
    pub access_token: Option<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it may be reused (60 s when not said, as the
    /// distribution spec prescribes; a little early, to allow for latency).
    pub fn token(&self) -> Option<(String, Duration)> {
        let t = self
            .token
            .clone()
            .or_else(|| self.access_token.clone())
            .filter(|t| !t.is_empty())?;
        let secs = self.expires_in.filter(|s| *s > 0).unwrap_or(60);
        Some((t, Duration::from_secs(secs.saturating_sub(5).max(1))))
    }
}

/// Bearer tokens by scope key, reused until they expire.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    /// A live token for the scope key.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &str, now: Instant) -> Option<String> {
        self.tokens
            .get(key)
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| t.clone())
    }

    /// Remembers a token for `ttl`.
    pub fn put(&mut self, key: &str, token: String, ttl: Duration) {
        self.tokens
            .insert(key.to_string(), (token, Instant::now() + ttl));
    }

    /// Forgets a token the registry refused.
    pub fn forget(&mut self, key: &str) {
        self.tokens.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
                error: None,
            }
        );
        let c = parse_challenge(
            r#"bearer realm="http://127.0.0.1:5001/auth", error="insufficient_scope", scope="repository:a:pull,push""#,
        )
        .unwrap();
        let Challenge::Bearer {
            scope,
            error,
            service,
            ..
        } = c
        else {
            panic!()
        };
        assert_eq!(scope.as_deref(), Some("repository:a:pull,push"));
        assert_eq!(error.as_deref(), Some("insufficient_scope"));
        assert_eq!(service, None);
        // Escapes and unquoted values.
        let c = parse_challenge(r#"Bearer realm="a\"b",service=svc"#).unwrap();
        assert!(matches!(c, Challenge::Bearer { realm, service, .. }
            if realm == "a\"b" && service.as_deref() == Some("svc")));
    }

    #[test]
    fn basic_and_unknown() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
        // Two challenges: an unknown one first.
        assert_eq!(
            parse_challenge(r#"Digest realm="x", nonce="y", Basic realm="z""#),
            Some(Challenge::Basic)
        );
        // Bearer without a realm is useless: fall through.
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(repository_scope("a/b", false), "repository:a/b:pull");
        assert_eq!(repository_scope("a/b", true), "repository:a/b:pull,push");
        assert_eq!(
            scope_key(&[
                "repository:z:pull,push".into(),
                "repository:a:pull".into(),
                "repository:a:pull".into()
            ]),
            "repository:a:pull repository:z:pull,push"
        );
    }

    #[test]
    fn tokens_expire() {
        let r: TokenResponse = serde_json::from_str(r#"{"token":"t1","expires_in":300}"#).unwrap();
        assert_eq!(r.token().unwrap(), ("t1".into(), Duration::from_secs(295)));
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"t2"}"#).unwrap();
        assert_eq!(r.token().unwrap(), ("t2".into(), Duration::from_secs(55)));
        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(r.token().is_none());
        let mut c = TokenCache::default();
        c.put("k", "t".into(), Duration::from_secs(10));
        assert_eq!(c.get("k").as_deref(), Some("t"));
        assert_eq!(
            c.get_at("k", Instant::now() + Duration::from_secs(11)),
            None
        );
        c.forget("k");
        assert_eq!(c.get("k"), None);
    }
}
