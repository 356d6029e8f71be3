//! Instruction flags (`--from=...`, `--link`): splitting them off the line and
//! checking them against what each instruction accepts (BuildKit's `BFlags`).

use std::collections::BTreeMap;

use super::error::{ParseErrorKind, suggest};

/// Splits leading `--flag[=value]` words off `line`; returns the rest and the
/// flags. Quotes inside flags are removed, `\` escapes one character, and a
/// bare `--` ends the flags.
pub(crate) fn extract(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut i = 0;
    while i < chars.len() {
        let (pos, ch) = chars[i];
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    i += 1;
                    continue;
                }
                let next = chars.get(i + 1).map(|c| c.1);
                if ch != '-' || next != Some('-') {
                    return (line[pos..].to_string(), words);
                }
                phase = Phase::Word;
                continue;
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    if word == "--" {
                        return (line[pos..].to_string(), words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    phase = Phase::Spaces;
                } else if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                } else if ch == '\\' {
                    if let Some(&(_, c)) = chars.get(i + 1) {
                        word.push(c);
                        i += 1;
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                } else if ch == '\\' {
                    match chars.get(i + 1) {
                        Some(&(_, c)) => {
                            word.push(c);
                            i += 1;
                        }
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
        i += 1;
    }
    if word != "--" && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    (String::new(), words)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagType {
    Bool,
    String,
    /// May be repeated (`--mount`).
    Strings,
}

/// The parsed flags of one instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Checks `raw` against `spec` (name, type) for `instruction`.
    pub(crate) fn parse(
        instruction: &'static str,
        raw: &[String],
        spec: &[(&'static str, FlagType)],
    ) -> Result<Flags, ParseErrorKind> {
        let mut flags = Flags::default();
        for arg in raw {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(ParseErrorKind::Invalid(format!(
                    "arg should start with -- : {arg}"
                )));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, ty)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(ParseErrorKind::UnknownFlag {
                    instruction,
                    flag: name.to_string(),
                    suggestion: suggest(name, spec.iter().map(|(n, _)| *n)),
                });
            };
            let seen = flags.values.entry(key).or_default();
            if !seen.is_empty() && ty != FlagType::Strings {
                return Err(ParseErrorKind::DuplicateFlag { flag: name.into() });
            }
            match ty {
                FlagType::Bool => {
                    let v = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => "true",
                        Some("false") => "false",
                        Some("") => {
                            return Err(ParseErrorKind::FlagMissingValue { flag: name.into() });
                        }
                        Some(_) => {
                            return Err(ParseErrorKind::FlagNotBool {
                                flag: name.into(),
                                value: value.unwrap_or_default().into(),
                            });
                        }
                    };
                    seen.push(v.into());
                }
                FlagType::String | FlagType::Strings => match value {
                    Some(v) => seen.push(v.into()),
                    None => return Err(ParseErrorKind::FlagMissingValue { flag: name.into() }),
                },
            }
        }
        Ok(flags)
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.first().cloned())
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_table() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("a b", "a b", &[]),
            ("--from=x a b", "a b", &["--from=x"]),
            (
                "--from=x   --chown=1:1 a",
                "a",
                &["--from=x", "--chown=1:1"],
            ),
            ("--a=\"x y\" rest", "rest", &["--a=x y"]),
            ("--a='x' rest", "rest", &["--a=x"]),
            ("--a=x\\ y rest", "rest", &["--a=x y"]),
            ("-- --notflag", "--notflag", &[]),
            ("--link", "", &["--link"]),
            ("-x", "-x", &[]),
            (
                "--mount=type=cache,target=/c --mount=type=tmpfs,target=/t make",
                "make",
                &[
                    "--mount=type=cache,target=/c",
                    "--mount=type=tmpfs,target=/t",
                ],
            ),
        ];
        for (line, rest, flags) in cases {
            let (r, f) = extract(line);
            assert_eq!(r.trim(), *rest, "line {line:?}");
            assert_eq!(f, *flags, "line {line:?}");
        }
    }

    #[test]
    fn parse_checks_flags() {
        let spec = [
            ("from", FlagType::String),
            ("link", FlagType::Bool),
            ("mount", FlagType::Strings),
        ];
        let raw = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = Flags::parse(
            "COPY",
            &raw(&["--from=a", "--link", "--mount=x", "--mount=y"]),
            &spec,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.bool("link"), Some(true));
        assert_eq!(f.strings("mount"), ["x", "y"]);
        let err = |v: &[&str]| {
            Flags::parse("COPY", &raw(v), &spec)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["--form=a"]),
            "unknown flag: form (did you mean from?)"
        );
        assert_eq!(err(&["--zzz"]), "unknown flag: zzz");
        assert_eq!(err(&["--from"]), "missing a value on flag: from");
        assert_eq!(
            err(&["--from=a", "--from=b"]),
            "duplicate flag specified: from"
        );
        assert_eq!(
            err(&["--link=maybe"]),
            "expecting boolean value for flag link, not: maybe"
        );
        assert_eq!(err(&["--link="]), "missing a value on flag: link");
        assert_eq!(
            Flags::parse("COPY", &raw(&["--link=FALSE"]), &spec)
                .unwrap()
                .bool("link"),
            Some(false)
        );
    }
}
