//! Second pass: a split logical line becomes a typed [`Instruction`], with
//! BuildKit's per-instruction checks (argument counts, flags, JSON-only
//! SHELL, ONBUILD triggers, HEALTHCHECK options) and its messages.

use std::time::Duration;

use super::ast::*;
use super::error::{ParseError, ParseErrorKind, suggest};
use super::flags::{FlagType, Flags};
use super::lines::Node;
use crate::shell_words::{Lexer, NoVars};

type R<T> = Result<T, ParseErrorKind>;

pub(crate) fn build(node: &Node, escape: char) -> Result<Instruction, ParseError> {
    let command = command(node, escape).map_err(|k| ParseError::new(node.line, k))?;
    Ok(Instruction {
        line: node.line,
        end_line: node.end_line,
        original: node.original.clone(),
        command,
    })
}

fn at_least_one(instruction: &'static str) -> ParseErrorKind {
    ParseErrorKind::Arguments {
        instruction,
        expected: "at least one argument",
    }
}

fn exactly_one(instruction: &'static str) -> ParseErrorKind {
    ParseErrorKind::Arguments {
        instruction,
        expected: "exactly one argument",
    }
}

/// Refuses words the lexer will not be able to process later (unterminated
/// quotes, bad `${...}`), so they fail here with their line number.
fn check_word(word: &str, escape: char) -> R<()> {
    let mut lex = Lexer::new(escape);
    lex.skip_unset = true;
    match lex.process_word(word, &NoVars) {
        Err(e) if e.error.is_syntax() => Err(ParseErrorKind::Word(e)),
        _ => Ok(()),
    }
}

fn command(node: &Node, escape: char) -> R<Command> {
    let args = &node.args;
    let no_flags = |name: &'static str| Flags::parse(name, &node.flags, &[]);
    let lower = node.cmd.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "from" => {
            let name = match args.len() {
                1 => None,
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let name = args[2].to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(ParseErrorKind::Invalid(format!(
                            "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                            args[2]
                        )));
                    }
                    Some(name)
                }
                _ => {
                    return Err(ParseErrorKind::Arguments {
                        instruction: "FROM",
                        expected: "either one or three arguments",
                    });
                }
            };
            let flags = Flags::parse("FROM", &node.flags, &[("platform", FlagType::String)])?;
            let platform = flags.string("platform");
            check_word(&args[0], escape)?;
            if let Some(p) = &platform {
                check_word(p, escape)?;
            }
            Command::From(From {
                image: args[0].clone(),
                name,
                platform,
            })
        }
        "run" => {
            let flags = Flags::parse(
                "RUN",
                &node.flags,
                &[
                    ("mount", FlagType::Strings),
                    ("network", FlagType::String),
                    ("security", FlagType::String),
                    ("device", FlagType::Strings),
                ],
            )?;
            if args.is_empty() {
                return Err(at_least_one("RUN"));
            }
            let mounts = flags
                .strings("mount")
                .iter()
                .map(|m| parse_mount(m))
                .collect::<R<Vec<_>>>()?;
            let network = match flags.string("network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => {
                    return Err(ParseErrorKind::Invalid(format!(
                        "unsupported network mode {other:?}"
                    )));
                }
            };
            let security = match flags.string("security").as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(other) => {
                    return Err(ParseErrorKind::Invalid(format!(
                        "unsupported security mode {other:?}"
                    )));
                }
            };
            Command::Run(Run {
                command: command_line(node),
                heredocs: node.heredocs.clone(),
                mounts,
                network,
                security,
                devices: flags.strings("device"),
            })
        }
        "cmd" => {
            no_flags("CMD")?;
            Command::Cmd(command_line(node))
        }
        "entrypoint" => {
            no_flags("ENTRYPOINT")?;
            Command::Entrypoint(command_line(node))
        }
        "env" | "label" => {
            let name = if lower == "env" { "ENV" } else { "LABEL" };
            no_flags(name)?;
            if args.is_empty() {
                return Err(at_least_one(name));
            }
            let mut pairs = Vec::new();
            for kv in args.chunks(2) {
                let [key, value] = kv else {
                    return Err(ParseErrorKind::Invalid(format!(
                        "Bad input to {name}, too many arguments"
                    )));
                };
                if key.is_empty() {
                    return Err(ParseErrorKind::Invalid(format!(
                        "{name} names can not be blank"
                    )));
                }
                check_word(key, escape)?;
                check_word(value, escape)?;
                pairs.push(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            if name == "ENV" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            }
        }
        "expose" => {
            no_flags("EXPOSE")?;
            if args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            for a in args {
                check_word(a, escape)?;
            }
            Command::Expose(args.clone())
        }
        "add" | "copy" => copy(node, lower == "add", escape)?,
        "arg" => {
            no_flags("ARG")?;
            if args.is_empty() {
                return Err(at_least_one("ARG"));
            }
            let mut decls = Vec::new();
            for a in args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => {
                        return Err(ParseErrorKind::Invalid("ARG names can not be blank".into()));
                    }
                    Some((k, v)) => {
                        check_word(v, escape)?;
                        ArgDecl {
                            name: k.into(),
                            default: Some(v.into()),
                        }
                    }
                    None => ArgDecl {
                        name: a.clone(),
                        default: None,
                    },
                };
                decls.push(decl);
            }
            Command::Arg(decls)
        }
        "workdir" | "user" | "stopsignal" | "maintainer" => {
            let name = match lower.as_str() {
                "workdir" => "WORKDIR",
                "user" => "USER",
                "stopsignal" => "STOPSIGNAL",
                _ => "MAINTAINER",
            };
            no_flags(name)?;
            if args.len() != 1 {
                return Err(exactly_one(name));
            }
            let v = args[0].clone();
            match name {
                "WORKDIR" => {
                    check_word(&v, escape)?;
                    Command::Workdir(v)
                }
                "USER" => {
                    check_word(&v, escape)?;
                    Command::User(v)
                }
                "STOPSIGNAL" => {
                    check_word(&v, escape)?;
                    Command::StopSignal(v)
                }
                _ => Command::Maintainer(v),
            }
        }
        "volume" => {
            no_flags("VOLUME")?;
            if args.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            let mut vols = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(ParseErrorKind::Invalid(
                        "VOLUME specified can not be an empty string".into(),
                    ));
                }
                check_word(v, escape)?;
                vols.push(v.to_string());
            }
            Command::Volume(vols)
        }
        "healthcheck" => healthcheck(node)?,
        "shell" => {
            no_flags("SHELL")?;
            if args.is_empty() {
                return Err(at_least_one("SHELL"));
            }
            if !node.json {
                return Err(ParseErrorKind::NotJson {
                    instruction: "SHELL",
                });
            }
            Command::Shell(args.clone())
        }
        "onbuild" => {
            no_flags("ONBUILD")?;
            let Some(sub) = &node.sub else {
                return Err(at_least_one("ONBUILD"));
            };
            let trigger = sub.cmd.to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(ParseErrorKind::Invalid(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(ParseErrorKind::Invalid(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                _ => {}
            }
            let mut sub = (**sub).clone();
            sub.heredocs = node.heredocs.clone();
            let inner = build(&sub, escape).map_err(|e| e.kind)?;
            // The config keeps the trigger text: the line without `ONBUILD`,
            // then any heredoc bodies.
            let trimmed = node.original.trim_start();
            let mut expression = trimmed[node.cmd.len()..].trim_start().to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            Command::Onbuild(Onbuild {
                expression,
                instruction: Box::new(inner),
            })
        }
        _ => {
            return Err(ParseErrorKind::UnknownInstruction {
                name: node.cmd.to_ascii_uppercase(),
                suggestion: suggest(&node.cmd, super::INSTRUCTIONS.iter().copied()),
            });
        }
    })
}

fn valid_stage_name(name: &str) -> bool {
    // ^[a-z][a-z0-9-_\.]*$
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn command_line(node: &Node) -> CommandLine {
    if node.json || node.args.is_empty() {
        CommandLine::Exec(node.args.clone())
    } else {
        CommandLine::Shell(node.args.join(" "))
    }
}

fn copy(node: &Node, add: bool, escape: char) -> R<Command> {
    let name = if add { "ADD" } else { "COPY" };
    let mut spec = vec![
        ("chown", FlagType::String),
        ("chmod", FlagType::String),
        ("link", FlagType::Bool),
        ("exclude", FlagType::Strings),
    ];
    if add {
        spec.extend([
            ("checksum", FlagType::String),
            ("keep-git-dir", FlagType::Bool),
            ("unpack", FlagType::Bool),
        ]);
    } else {
        spec.extend([("from", FlagType::String), ("parents", FlagType::Bool)]);
    }
    let flags = Flags::parse(name, &node.flags, &spec)?;
    if flags.bool("parents") == Some(true) {
        return Err(ParseErrorKind::UnsupportedFlag {
            instruction: name,
            flag: "parents",
        });
    }
    let args = &node.args;
    if args.len() < 2 {
        return Err(ParseErrorKind::Arguments {
            instruction: name,
            expected: "at least two arguments, but only one was provided. Destination could not be determined.",
        });
    }
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    let heredocs_allowed = !node.json;
    if heredocs_allowed && super::heredoc_word(&dest).is_some() {
        return Err(ParseErrorKind::HeredocDestination { instruction: name });
    }
    let mut sources = Vec::new();
    let mut docs = node.heredocs.iter();
    for s in srcs {
        let doc = if heredocs_allowed && super::heredoc_word(s).is_some() {
            docs.next()
        } else {
            None
        };
        match doc {
            Some(h) => sources.push(CopySource::Heredoc(h.clone())),
            None => {
                check_word(s, escape)?;
                sources.push(CopySource::Path(s.clone()));
            }
        }
    }
    check_word(&dest, escape)?;
    for f in ["chown", "chmod", "from"] {
        if let Some(v) = flags.string(f) {
            check_word(&v, escape)?;
        }
    }
    let c = Copy {
        sources,
        dest,
        json: node.json,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        excludes: flags.strings("exclude"),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
    };
    Ok(if add {
        Command::Add(c)
    } else {
        Command::Copy(c)
    })
}

fn healthcheck(node: &Node) -> R<Command> {
    let args = &node.args;
    let Some(typ) = args.first() else {
        return Err(at_least_one("HEALTHCHECK"));
    };
    let typ = typ.to_ascii_uppercase();
    let rest = &args[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(ParseErrorKind::Invalid(
                "HEALTHCHECK NONE takes no arguments".into(),
            ));
        }
        // BuildKit ignores options given with NONE.
        return Ok(Command::Healthcheck(Healthcheck::None));
    }
    let flags = Flags::parse(
        "HEALTHCHECK",
        &node.flags,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if typ != "CMD" {
        return Err(ParseErrorKind::Invalid(format!(
            "Unknown type {typ:?} in HEALTHCHECK (try CMD)"
        )));
    }
    if rest.is_empty() {
        return Err(ParseErrorKind::Invalid(
            "Missing command after HEALTHCHECK CMD".into(),
        ));
    }
    let test = if node.json {
        CommandLine::Exec(rest.to_vec())
    } else {
        CommandLine::Shell(rest.join(" "))
    };
    let interval = |name: &str| -> R<Option<Duration>> {
        let Some(v) = flags.string(name) else {
            return Ok(None);
        };
        let (negative, d) = parse_go_duration(&v).map_err(ParseErrorKind::Invalid)?;
        if d.is_zero() {
            return Ok(None);
        }
        if negative || d < Duration::from_millis(1) {
            return Err(ParseErrorKind::Invalid(format!(
                "Interval {name:?} cannot be less than 1ms"
            )));
        }
        Ok(Some(d))
    };
    let retries = match flags.string("retries") {
        None => None,
        Some(v) => {
            let n: i64 = v
                .parse()
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    ParseErrorKind::Invalid(format!(
                        "strconv.ParseInt: parsing {v:?}: invalid syntax"
                    ))
                })?;
            if n < 0 {
                return Err(ParseErrorKind::Invalid(format!(
                    "--retries cannot be negative ({n})"
                )));
            }
            Some(n as u32)
        }
    };
    Ok(Command::Healthcheck(Healthcheck::Cmd {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}

/// Go's `time.ParseDuration`; returns (negative, magnitude).
pub(crate) fn parse_go_duration(s: &str) -> Result<(bool, Duration), String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok((false, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.chars().take_while(char::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.chars().take_while(char::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut frac_ns = 0u128;
        let mut scale = unit;
        for d in frac_part.chars().take(18) {
            scale /= 10;
            frac_ns += u128::from(d.to_digit(10).unwrap_or(0)) * scale;
        }
        total = total
            .checked_add(int.checked_mul(unit).ok_or_else(bad)? + frac_ns)
            .ok_or_else(bad)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok((
        negative,
        Duration::new(secs, (total % 1_000_000_000) as u32),
    ))
}

/// Parses one `--mount` value (comma-separated `key=value` fields, CSV quoting).
fn parse_mount(spec: &str) -> R<Mount> {
    let mut m = Mount {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        readonly: false,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: None,
        env: None,
        spec: spec.to_string(),
    };
    let mut readonly: Option<bool> = None;
    let bool_value = |key: &str, v: &str| -> R<bool> {
        match v.to_ascii_lowercase().as_str() {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ParseErrorKind::Invalid(format!(
                "invalid value for {key}: {v}"
            ))),
        }
    };
    for field in csv_fields(spec) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |v: Option<String>| {
            v.ok_or_else(|| {
                ParseErrorKind::Invalid(format!("invalid field '{field}' must be a key=value pair"))
            })
        };
        match key.as_str() {
            "type" => {
                m.kind = match need(value)?.as_str() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    "secret" => MountKind::Secret,
                    "ssh" => MountKind::Ssh,
                    other => {
                        return Err(ParseErrorKind::Invalid(format!(
                            "unsupported mount type {other:?}"
                        )));
                    }
                }
            }
            "target" | "dst" | "destination" => m.target = Some(need(value)?),
            "source" | "src" => m.source = Some(need(value)?),
            "from" => m.from = Some(need(value)?),
            "readonly" | "ro" => readonly = Some(bool_value(&key, value.as_deref().unwrap_or(""))?),
            "readwrite" | "rw" => {
                readonly = Some(!bool_value(&key, value.as_deref().unwrap_or(""))?)
            }
            "required" => m.required = Some(bool_value(&key, value.as_deref().unwrap_or(""))?),
            "id" => m.id = Some(need(value)?),
            "sharing" => {
                let v = need(value)?;
                if !matches!(v.as_str(), "shared" | "private" | "locked") {
                    return Err(ParseErrorKind::Invalid(format!(
                        "unsupported sharing value {v:?}"
                    )));
                }
                m.sharing = Some(v);
            }
            "mode" => m.mode = Some(need(value)?),
            "uid" => m.uid = Some(need(value)?),
            "gid" => m.gid = Some(need(value)?),
            "size" => m.size = Some(need(value)?),
            "env" => m.env = Some(need(value)?),
            _ => {
                return Err(ParseErrorKind::Invalid(format!(
                    "unexpected key '{key}' in '{field}'"
                )));
            }
        }
    }
    // Bind, secret and ssh mounts are read-only unless told otherwise.
    m.readonly = readonly.unwrap_or(matches!(
        m.kind,
        MountKind::Bind | MountKind::Secret | MountKind::Ssh
    ));
    if m.target.is_none()
        && matches!(
            m.kind,
            MountKind::Bind | MountKind::Cache | MountKind::Tmpfs
        )
    {
        return Err(ParseErrorKind::Invalid(format!(
            "mount target is required in '{spec}'"
        )));
    }
    Ok(m)
}

/// Comma-separated fields with CSV double-quote rules.
fn csv_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|f| !f.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("30s"), (false, Duration::from_secs(30)));
        assert_eq!(ok("1m30s"), (false, Duration::from_secs(90)));
        assert_eq!(ok("1.5h"), (false, Duration::from_secs(5400)));
        assert_eq!(ok("100ms"), (false, Duration::from_millis(100)));
        assert_eq!(ok("2us"), (false, Duration::from_micros(2)));
        assert_eq!(ok(".5s"), (false, Duration::from_millis(500)));
        assert_eq!(ok("0"), (false, Duration::ZERO));
        assert_eq!(ok("-1s"), (true, Duration::from_secs(1)));
        assert!(
            parse_go_duration("10")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            parse_go_duration("5x")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn mounts() {
        let m = parse_mount("type=cache,target=/root/.cache,id=pip,sharing=locked").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing.as_deref(), Some("locked"));
        assert!(!m.readonly);
        let m = parse_mount("target=/src,from=builder,source=/out").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert!(m.readonly);
        assert_eq!(m.from.as_deref(), Some("builder"));
        let m = parse_mount("type=bind,target=/x,rw").unwrap();
        assert!(!m.readonly);
        let m = parse_mount("type=secret,id=tok,required").unwrap();
        assert_eq!(m.required, Some(true));
        let m = parse_mount("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(
            parse_mount("type=nfs,target=/x")
                .unwrap_err()
                .to_string()
                .contains("unsupported mount type")
        );
        assert!(
            parse_mount("type=cache")
                .unwrap_err()
                .to_string()
                .contains("target is required")
        );
        assert!(
            parse_mount("target=/x,bogus=1")
                .unwrap_err()
                .to_string()
                .contains("unexpected key 'bogus'")
        );
        assert!(parse_mount("target=/x,sharing=weird").is_err());
    }
}
