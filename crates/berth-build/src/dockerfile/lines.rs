//! First pass: physical lines to logical ones, as BuildKit's `parser.Parse`.
//!
//! Directives are recognised only until the first line that is not one (an
//! empty line, a plain comment or an instruction ends them). Comment lines
//! are dropped; inside a continuation they are skipped, and so are empty lines
//! (with a warning, as Docker gives). Each logical line is split into its
//! keyword, flags and arguments by the argument form of its instruction, and
//! RUN/COPY/ADD (also under ONBUILD) in shell form get their heredoc bodies.

use super::ast::{Directives, Heredoc, Warning};
use super::error::{ParseError, ParseErrorKind};
use super::flags;
use crate::shell_words::{Lexer, NoVars};

/// A logical line, split the way its instruction's argument form says.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The keyword as written.
    pub cmd: String,
    pub flags: Vec<String>,
    /// Arguments: JSON items, words, or alternating keys and values.
    pub args: Vec<String>,
    pub json: bool,
    pub original: String,
    pub line: usize,
    pub end_line: usize,
    pub heredocs: Vec<Heredoc>,
    /// The trigger of an ONBUILD.
    pub sub: Option<Box<Node>>,
}

pub(crate) struct Parsed {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}

struct DirectiveState {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveState {
    /// Looks at one line while directives are still possible.
    fn check(&mut self, line: &str, d: &mut Directives) -> Result<(), ParseErrorKind> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            // An unknown directive is a comment, and ends the directives.
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(ParseErrorKind::DuplicateDirective(name));
        }
        self.seen.push(name.clone());
        match name.as_str() {
            "escape" => match value {
                "\\" => d.escape = '\\',
                "`" => d.escape = '`',
                other => return Err(ParseErrorKind::BadEscape(other.into())),
            },
            "syntax" => d.syntax = Some(value.into()),
            _ => d.check = Some(value.into()),
        }
        Ok(())
    }
}

/// `# name = value` (BuildKit: `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`).
fn directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let value = rest.trim_start_matches(is_space).strip_prefix('=')?;
    let value = value.trim_matches(is_space);
    (!value.is_empty()).then_some((name, value))
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    trim_newline(s).trim_start().starts_with('#')
}

/// Removes a trailing continuation token; the bool is "the line ends here".
/// An escaped escape token (`\\`) at the end is not a continuation.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before.to_string(), false);
    }
    (line.to_string(), true)
}

pub(crate) fn parse_nodes(text: &str) -> Result<Parsed, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let physical: Vec<&str> = text.split_inclusive('\n').collect();
    let mut directives = Directives::default();
    let mut state = DirectiveState {
        done: false,
        seen: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < physical.len() {
        let raw = trim_newline(physical[i]);
        i += 1;
        let start = i;
        let first = raw.trim_start();
        state
            .check(first, &mut directives)
            .map_err(|k| ParseError::new(start, k))?;
        let escape = directives.escape;
        let content = if first.starts_with('#') { "" } else { first };
        let (mut line, mut eol) = trim_continuation(content, escape);
        if eol && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !eol && i < physical.len() {
            let raw = trim_newline(physical[i]);
            i += 1;
            state
                .check(raw, &mut directives)
                .map_err(|k| ParseError::new(i, k))?;
            if is_comment(raw) {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (more, end) = trim_continuation(raw, escape);
            line.push_str(&more);
            eol = end;
        }
        if empty_continuation {
            warnings.push(Warning {
                line: start,
                message: format!("Empty continuation line found in: {line}"),
            });
        }
        let mut node = new_node(&line, escape).map_err(|k| ParseError::new(start, k))?;
        node.line = start;
        if can_contain_heredoc(&node) {
            for (name, chomp, expand, fd) in heredocs_in(&line) {
                let mut content = String::new();
                let mut terminated = false;
                while i < physical.len() {
                    let raw = physical[i];
                    i += 1;
                    let mut candidate = trim_newline(raw);
                    if chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    return Err(ParseError::new(
                        start,
                        ParseErrorKind::UnterminatedHeredoc { name },
                    ));
                }
                if chomp {
                    content = content
                        .split_inclusive('\n')
                        .map(|l| l.trim_start_matches('\t'))
                        .collect();
                }
                node.heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                    chomp,
                    fd,
                });
            }
        }
        node.end_line = i;
        if let Some(sub) = node.sub.as_mut() {
            sub.line = start;
            sub.end_line = i;
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError::new(
            physical.len().max(1),
            ParseErrorKind::Empty,
        ));
    }
    Ok(Parsed {
        directives,
        nodes,
        warnings,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match (&node.sub, node.cmd.eq_ignore_ascii_case("onbuild")) {
        (Some(sub), true) => sub,
        _ => node,
    };
    matches!(n.cmd.to_ascii_lowercase().as_str(), "run" | "copy" | "add") && !n.json
}

/// The heredoc markers on a logical line, in order.
fn heredocs_in(line: &str) -> Vec<(String, bool, bool, Option<u32>)> {
    // BuildKit lexes the whole line with quotes and escapes kept, then looks
    // at each word; lexing errors mean "no heredocs".
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset = true;
    let Ok(words) = lex.process_words(line, &NoVars) else {
        return Vec::new();
    };
    words
        .value
        .iter()
        .filter_map(|w| super::heredoc_word(w))
        .collect()
}

/// Docker's `[\t\v\f\r ]+` splitting.
fn ws_split(s: &str, limit: usize) -> Vec<String> {
    let is_ws = |c: char| matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ');
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if out.len() + 1 == limit {
            out.push(rest.to_string());
            break;
        }
        match rest.find(is_ws) {
            Some(i) => {
                out.push(rest[..i].to_string());
                rest = rest[i..].trim_start_matches(is_ws);
            }
            None => {
                out.push(rest.to_string());
                break;
            }
        }
    }
    out
}

/// Splits a logical line into keyword, flags and arguments.
pub(crate) fn new_node(line: &str, escape: char) -> Result<Node, ParseErrorKind> {
    let parts = ws_split(line.trim(), 2);
    let cmd = parts[0].clone();
    let (rest, flags) = match parts.get(1) {
        Some(rest) => {
            let (r, f) = flags::extract(rest);
            (r.trim().to_string(), f)
        }
        None => (String::new(), Vec::new()),
    };
    let mut node = Node {
        cmd: cmd.clone(),
        flags,
        args: Vec::new(),
        json: false,
        original: line.to_string(),
        line: 0,
        end_line: 0,
        heredocs: Vec::new(),
        sub: None,
    };
    match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => (node.args, node.json) = maybe_json_to_list(&rest)?,
        "cmd" | "entrypoint" | "run" | "shell" => (node.args, node.json) = maybe_json(&rest)?,
        "arg" => node.args = parse_words(&rest, escape),
        "env" => node.args = name_val(&rest, "ENV", escape)?,
        "label" => node.args = name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => {
            node.args = if rest.is_empty() {
                Vec::new()
            } else {
                ws_split(&rest, 0)
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            node.args = if rest.is_empty() {
                Vec::new()
            } else {
                vec![rest]
            }
        }
        "healthcheck" => {
            let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if sep > 0 {
                let (args, json) = maybe_json(rest[sep..].trim_start())?;
                node.args = std::iter::once(rest[..sep].to_string())
                    .chain(args)
                    .collect();
                node.json = json;
            }
        }
        "onbuild" if !rest.is_empty() => {
            let sub = new_node(&rest, escape)?;
            node.args = std::iter::once(sub.cmd.clone())
                .chain(sub.args.iter().cloned())
                .collect();
            node.sub = Some(Box::new(sub));
        }
        _ => {}
    }
    Ok(node)
}

enum JsonError {
    NotJson,
    NotStrings,
}

/// A JSON array of strings; like Go's decoder, text after the array is ignored.
fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Err(JsonError::NotJson);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Vec<serde_json::Value>>();
    match stream.next() {
        Some(Ok(items)) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(JsonError::NotStrings),
            })
            .collect(),
        _ => Err(JsonError::NotJson),
    }
}

fn maybe_json(rest: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonError::NotStrings) => Err(ParseErrorKind::JsonNotStrings),
        // Not JSON after all: the shell form, as Docker does for `CMD [ oops`.
        Err(JsonError::NotJson) => Ok((vec![rest.to_string()], false)),
    }
}

fn maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), ParseErrorKind> {
    match parse_json(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonError::NotStrings) => Err(ParseErrorKind::JsonNotStrings),
        Err(JsonError::NotJson) if rest.is_empty() => Ok((Vec::new(), false)),
        Err(JsonError::NotJson) => Ok((ws_split(rest, 0), false)),
    }
}

/// Words split on whitespace outside quotes; quotes and escapes are kept for
/// the lexer to process later (BuildKit's `parseWords`).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if !in_word {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    in_word = false;
                    i += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if i + 1 == chars.len() {
                        // A lone escape at the very end is dropped.
                        i += 1;
                        continue;
                    }
                    word.push(ch);
                    i += 1;
                }
                word.push(chars[i]);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        quote = None;
                        i += 1;
                        continue;
                    }
                    word.push(ch);
                    i += 1;
                }
                word.push(chars[i]);
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// ENV and LABEL: `k=v ...`, or the legacy `k value with spaces`.
fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, ParseErrorKind> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts = ws_split(rest, 2);
        if parts.len() < 2 {
            return Err(ParseErrorKind::Invalid(format!(
                "{key} must have two arguments"
            )));
        }
        return Ok(parts);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(ParseErrorKind::Invalid(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            )));
        };
        out.push(k.to_string());
        out.push(v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(
            directive("#syntax = docker/dockerfile:1  "),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(directive("# ESCAPE=\\"), Some(("ESCAPE", "\\")));
        assert_eq!(directive("# escape="), None);
        assert_eq!(directive("# 1x=y"), None);
        assert_eq!(directive("# just a comment"), None);
        assert_eq!(directive("escape=`"), None);
    }

    #[test]
    fn continuation_table() {
        let cases = [
            ("RUN a \\", '\\', "RUN a ", false),
            ("RUN a \\  \t", '\\', "RUN a ", false),
            ("RUN a \\\\", '\\', "RUN a \\\\", true),
            ("\\", '\\', "", false),
            ("RUN a `", '`', "RUN a ", false),
            ("RUN a \\", '`', "RUN a \\", true),
            ("RUN a", '\\', "RUN a", true),
        ];
        for (line, esc, want, want_eol) in cases {
            assert_eq!(
                trim_continuation(line, esc),
                (want.to_string(), want_eol),
                "{line:?}"
            );
        }
    }

    #[test]
    fn words_keep_quotes() {
        let cases: &[(&str, &[&str])] = &[
            ("a b", &["a", "b"]),
            ("a=\"x y\" b='p q'", &["a=\"x y\"", "b='p q'"]),
            ("a\\ b c", &["a\\ b", "c"]),
            ("\"\"", &["\"\""]),
            ("x=\"a\\\"b\"", &["x=\"a\\\"b\""]),
            ("x='a\\'", &["x='a\\'"]),
            ("end\\", &["end"]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_words(input, '\\'), *want, "{input:?}");
        }
    }

    #[test]
    fn ws_split_limits() {
        assert_eq!(ws_split("a  b\tc", 0), ["a", "b", "c"]);
        assert_eq!(
            ws_split("KEY value with  spaces", 2),
            ["KEY", "value with  spaces"]
        );
        assert_eq!(ws_split("one", 2), ["one"]);
    }
}
