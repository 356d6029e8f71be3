//! Image configs: the `config` section Docker and OCI share, Dockerfile-style
//! changes to it (`import --change`, later `commit --change`), and whole config
//! documents for new images.

use serde_json::{Map, Value, json};

/// The runtime section of an image config (`Env`, `Cmd`, …), kept as JSON so
/// unknown fields survive.
pub type Config = Map<String, Value>;

/// Default PATH Docker gives processes whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Applies one Dockerfile instruction (`CMD ["sh"]`, `ENV A=1`, …) to `cfg`.
/// Only the instructions Docker allows in `--change` are accepted.
pub fn apply_change(cfg: &mut Config, change: &str) -> Result<(), String> {
    let change = change.trim();
    let (word, rest) = change
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((change, ""));
    let instr = word.to_ascii_uppercase();
    if rest.is_empty() && !matches!(instr.as_str(), "CMD" | "ENTRYPOINT") {
        return Err(format!("{instr} requires at least one argument"));
    }
    match instr.as_str() {
        "CMD" => {
            cfg.insert("Cmd".into(), json!(command_form(rest)));
        }
        "ENTRYPOINT" => {
            let v = command_form(rest);
            cfg.insert("Entrypoint".into(), json!(v));
            // Docker resets an inherited CMD when ENTRYPOINT changes.
            cfg.remove("Cmd");
        }
        "ENV" => {
            let env = cfg
                .entry("Env")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or("Env is not a list")?;
            for (k, v) in key_values(rest, "ENV")? {
                let prefix = format!("{k}=");
                env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                env.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let labels = obj(cfg, "Labels")?;
            for (k, v) in key_values(rest, "LABEL")? {
                labels.insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            let ports = obj(cfg, "ExposedPorts")?;
            for p in words(rest)? {
                let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                let valid = !num.is_empty()
                    && num
                        .split('-')
                        .all(|n| n.parse::<u16>().is_ok_and(|n| n > 0));
                if !valid || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(format!("invalid port {p:?}"));
                }
                ports.insert(format!("{num}/{proto}"), json!({}));
            }
        }
        "VOLUME" => {
            let list: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|e| format!("VOLUME: {e}"))?
            } else {
                words(rest)?
            };
            let vols = obj(cfg, "Volumes")?;
            for v in list {
                vols.insert(v, json!({}));
            }
        }
        "USER" => {
            cfg.insert("User".into(), json!(rest));
        }
        "WORKDIR" => {
            let base = cfg.get("WorkingDir").and_then(Value::as_str).unwrap_or("/");
            let wd = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("{}/{}", base.trim_end_matches('/'), rest)
            };
            cfg.insert("WorkingDir".into(), json!(wd));
        }
        "STOPSIGNAL" => {
            cfg.insert("StopSignal".into(), json!(rest));
        }
        "ONBUILD" => {
            let list = cfg
                .entry("OnBuild")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or("OnBuild is not a list")?;
            list.push(json!(rest));
        }
        other => {
            return Err(format!(
                "{other} is not a valid change command (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)"
            ));
        }
    }
    Ok(())
}

fn obj<'a>(cfg: &'a mut Config, key: &str) -> Result<&'a mut Map<String, Value>, String> {
    let v = cfg.entry(key).or_insert_with(|| json!({}));
    if v.is_null() {
        *v = json!({});
    }
    v.as_object_mut()
        .ok_or_else(|| format!("{key} is not a map"))
}

/// Exec form (`["a","b"]`) or shell form (`a b` → `/bin/sh -c "a b"`); invalid
/// JSON falls back to the shell form, as Docker does.
pub fn command_form(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return vec![];
    }
    if rest.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(rest)
    {
        return v;
    }
    vec!["/bin/sh".into(), "-c".into(), rest.into()]
}

/// `K=V K2="a b"` pairs, or the legacy `K value with spaces` form.
fn key_values(rest: &str, instr: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{instr} {rest:?}: expected KEY=VALUE or KEY VALUE"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words(rest)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{instr}: {w:?} is not KEY=VALUE")),
        })
        .collect()
}

/// Splits on whitespace honouring quotes and backslash escapes.
pub fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(chars.next().ok_or("trailing backslash")?);
                in_word = true;
            }
            '"' | '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated quote in {s:?}")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => {
                            cur.push(chars.next().ok_or("trailing backslash")?)
                        }
                        Some(x) => cur.push(x),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A whole image config document for a new image.
pub fn image_config_json(
    cfg: &Config,
    created: &str,
    diff_ids: &[crate::digest::Digest],
    history: &[Value],
) -> Value {
    json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": created,
        "config": cfg,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    })
}

/// The host's architecture in GOARCH spelling, as images name it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(changes: &[&str]) -> Config {
        let mut c = Config::new();
        for ch in changes {
            apply_change(&mut c, ch).unwrap();
        }
        c
    }

    #[test]
    fn changes() {
        let c = apply(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENV A=1 B=\"two words\"",
            "ENV C three four",
            "ENV A=5",
            "LABEL org.x=y",
            "EXPOSE 80 53/udp",
            "VOLUME /data",
            "WORKDIR /app",
            "WORKDIR sub",
            "USER 1000:1000",
            "STOPSIGNAL SIGINT",
        ]);
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["Env"], json!(["B=two words", "C=three four", "A=5"]));
        assert_eq!(c["Labels"], json!({"org.x": "y"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["WorkingDir"], json!("/app/sub"));
        assert_eq!(c["User"], json!("1000:1000"));
        assert_eq!(c["StopSignal"], json!("SIGINT"));
        let c = apply(&["CMD echo hi"]);
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
    }

    #[test]
    fn bad_changes() {
        let mut c = Config::new();
        for bad in ["RUN echo", "FROM x", "ENV", "EXPOSE 99999", "ENV A=\"open"] {
            assert!(apply_change(&mut c, bad).is_err(), "{bad}");
        }
    }
}
