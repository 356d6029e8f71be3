//! Docker's shell-word lexer: quote removal, escapes and `$VAR` substitution.
//!
//! This owns the rules of BuildKit's `shell/lex.go`, which Dockerfile
//! instructions use for their words (not RUN/CMD/ENTRYPOINT shell forms: the
//! shell in the container expands those). It is deliberately *not* a POSIX
//! shell: no command substitution, no arithmetic, no globbing.
//!
//! - [`Lexer::process_word`] expands one word and keeps its whitespace
//!   (ENV/LABEL values, WORKDIR, USER, COPY sources, FROM...).
//! - [`Lexer::process_words`] also splits on unquoted whitespace, including
//!   whitespace that comes out of an unquoted variable (EXPOSE).
//!
//! Supported substitutions: `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`,
//! `${V+w}`, `${V:?w}`, `${V?w}`, `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`,
//! `${V/p/r}` and `${V//p/r}` (patterns are shell globs). Every lookup is
//! recorded, so callers know which variables a word *used* (cache keys).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::pattern;

/// Where the lexer looks variables up.
pub trait Vars {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn var(&self, name: &str) -> Option<&str>;
}

impl Vars for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Vars for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// `KEY=VALUE` lists, as image configs store environments; the last one wins.
impl Vars for Vec<String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }
}

/// No variables at all.
pub struct NoVars;

impl Vars for NoVars {
    fn var(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Why a word could not be processed. Messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${V:?message}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
}

impl ShellError {
    /// True for syntax errors (quotes, braces), as opposed to `${V:?}` failures.
    pub fn is_syntax(&self) -> bool {
        !matches!(self, ShellError::Required { .. })
    }
}

/// A failure together with the word it happened in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {error}")]
pub struct WordError {
    pub word: String,
    #[source]
    pub error: ShellError,
}

/// The result of expanding a word: the text and what it looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded<T> {
    pub value: T,
    /// Variables referenced that were set.
    pub matched: BTreeSet<String>,
    /// Variables referenced that were not set.
    pub unmatched: BTreeSet<String>,
}

/// Lexer settings; [`Lexer::new`] gives Docker's defaults for a Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// `\` or `` ` `` (the `# escape=` directive).
    pub escape: char,
    /// Leave `$V` / `${V...}` text alone when `V` is unset (heredoc detection).
    pub skip_unset: bool,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_quotes: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            skip_unset: false,
            raw_quotes: false,
            raw_escapes: false,
            skip_quotes: false,
        }
    }

    /// Expands `word` as one word (whitespace kept).
    pub fn process_word(&self, word: &str, vars: &dyn Vars) -> Result<Expanded<String>, WordError> {
        let (value, _, m) = self.run(word, vars)?;
        Ok(Expanded {
            value,
            matched: m.matched,
            unmatched: m.unmatched,
        })
    }

    /// Expands `word` and splits it into words on unquoted whitespace.
    pub fn process_words(
        &self,
        word: &str,
        vars: &dyn Vars,
    ) -> Result<Expanded<Vec<String>>, WordError> {
        let (_, words, m) = self.run(word, vars)?;
        Ok(Expanded {
            value: words,
            matched: m.matched,
            unmatched: m.unmatched,
        })
    }

    fn run(
        &self,
        word: &str,
        vars: &dyn Vars,
    ) -> Result<(String, Vec<String>, Lookups), WordError> {
        let mut st = State {
            chars: word.chars().collect(),
            pos: 0,
            lex: *self,
            vars,
            lookups: Lookups::default(),
        };
        let raw = self.raw_escapes;
        match st.process_stop_on(None, raw) {
            Ok((s, w)) => Ok((s, w, st.lookups)),
            Err(error) => Err(WordError {
                word: word.to_string(),
                error,
            }),
        }
    }
}

#[derive(Default)]
struct Lookups {
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Word splitting state: a word only ends at unquoted whitespace, and quoted
/// empty strings do not make a word (BuildKit's `wordsStruct`).
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct State<'a> {
    chars: Vec<char>,
    pos: usize,
    lex: Lexer,
    vars: &'a dyn Vars,
    lookups: Lookups,
}

impl State<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_var(&mut self, name: &str) -> Option<String> {
        match self.vars.var(name) {
            Some(v) => {
                self.lookups.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.lookups.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        let saved = self.lex.raw_escapes;
        self.lex.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.lex.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let quote = !self.lex.skip_quotes && (ch == '\'' || ch == '"');
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                // Unquoted substitutions are subject to word splitting.
                words.add_string(&tmp);
            } else if quote {
                let tmp = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                let mut ch = self.next().unwrap_or_default();
                if ch == self.lex.escape {
                    if self.lex.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // An escape at the very end is dropped.
                    match self.next() {
                        Some(c) => ch = c,
                        None => break,
                    }
                    words.add_raw_char(ch);
                } else {
                    words.add_char(ch);
                }
                result.push(ch);
            }
        }
        if let Some(c) = stop {
            return Err(ShellError::Unterminated(c));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        // Everything up to the next ' is literal; ' itself cannot be escaped.
        let mut out = String::new();
        let open = self.next().unwrap_or('\'');
        if self.lex.raw_quotes {
            out.push(open);
        }
        loop {
            match self.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ShellError> {
        // Literal except `$` and escapes of `"`, `$` and the escape token.
        let mut out = String::new();
        let open = self.next().unwrap_or('"');
        if self.lex.raw_quotes {
            out.push(open);
        }
        loop {
            match self.peek() {
                None => return Err(ShellError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    out.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        if self.lex.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                // Positional parameters: all the digits.
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_var(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(ShellError::MissingBrace);
        };
        let mut modifier = ch.to_string();
        match ch {
            '}' => Ok(match self.get_var(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    ch = self.next().ok_or(ShellError::MissingBrace)?;
                    modifier.push(ch);
                }
                let pattern_op = ch == '#' || ch == '%';
                if null_is_unset && pattern_op || !matches!(ch, '+' | '-' | '?' | '#' | '%') {
                    return Err(ShellError::UnsupportedModifier(modifier));
                }
                let word = match self.process_stop_on(Some('}'), pattern_op) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        return Err(if self.peek().is_none() {
                            ShellError::MissingBrace
                        } else {
                            e
                        });
                    }
                };
                let value = self.get_var(&name);
                if self.lex.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match ch {
                    '-' => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => {
                        if value.is_none() || empty {
                            let message = if !word.is_empty() {
                                word
                            } else if value.is_none() {
                                "is not allowed to be unset".into()
                            } else {
                                "is not allowed to be empty".into()
                            };
                            return Err(ShellError::Required { name, message });
                        }
                        Ok(value.unwrap_or_default())
                    }
                    _ => {
                        // %/# trim the shortest match, %%/## the longest.
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        Ok(if ch == '%' {
                            pattern::trim_suffix(&pat, &value, greedy, self.lex.escape)
                        } else {
                            pattern::trim_prefix(&pat, &value, greedy, self.lex.escape)
                        })
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let (pat, _) = self.process_stop_on(Some('/'), true)?;
                let (rep, _) = self.process_stop_on(Some('}'), true)?;
                let value = self.get_var(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset {
                        return Ok(format!("${{{name}/{pat}/{rep}}}"));
                    }
                    return Ok(String::new());
                };
                Ok(pattern::replace(&pat, &value, &rep, all, self.lex.escape))
            }
            _ => Err(ShellError::UnsupportedModifier(modifier)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("A", "a"),
            ("EMPTY", ""),
            ("SP", "x y  z"),
            ("PATHV", "/usr/local/bin/app.tar.gz"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn process_word_table() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("$A", "a"),
            ("${A}", "a"),
            ("x${A}y", "xay"),
            ("$Ab", ""),
            ("${UNSET}", ""),
            ("${UNSET:-def}", "def"),
            ("${UNSET-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${A:-def}", "a"),
            ("${A:+alt}", "alt"),
            ("${A+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${UNSET:-$A}", "a"),
            ("${UNSET:-${A:+nested}}", "nested"),
            ("\\$A", "$A"),
            ("'$A'", "$A"),
            ("\"$A\"", "a"),
            ("\"\\$A\"", "$A"),
            ("\"a\\b\"", "a\\b"),
            ("\"q\\\"q\"", "q\"q"),
            ("'it''s'", "its"),
            ("a\\ b", "a b"),
            ("trailing\\", "trailing"),
            ("$", "$"),
            ("a$", "a$"),
            ("$1x", "x"),
            ("${PATHV##*/}", "app.tar.gz"),
            ("${PATHV#*/}", "usr/local/bin/app.tar.gz"),
            ("${PATHV%.*}", "/usr/local/bin/app.tar"),
            ("${PATHV%%.*}", "/usr/local/bin/app"),
            ("${PATHV/local/opt}", "/usr/opt/bin/app.tar.gz"),
            ("${SP// /_}", "x_y__z"),
            ("${SP/ /_}", "x_y  z"),
            ("  spaced  out ", "  spaced  out "),
        ];
        let lex = Lexer::new('\\');
        let vars = env();
        for (input, want) in cases {
            let got = lex
                .process_word(input, &vars)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.value, *want, "input {input:?}");
        }
    }

    #[test]
    fn process_words_splits_unquoted_only() {
        let lex = Lexer::new('\\');
        let vars = env();
        let cases: &[(&str, &[&str])] = &[
            ("a b  c", &["a", "b", "c"]),
            ("$SP", &["x", "y", "z"]),
            ("\"$SP\"", &["x y  z"]),
            ("'a b' c", &["a b", "c"]),
            ("\"\" x", &["x"]),
            ("a\\ b c", &["a b", "c"]),
            ("80/tcp ${UNSET:-443}", &["80/tcp", "443"]),
        ];
        for (input, want) in cases {
            let got = lex.process_words(input, &vars).unwrap();
            assert_eq!(got.value, *want, "input {input:?}");
        }
    }

    #[test]
    fn errors_match_buildkit() {
        let lex = Lexer::new('\\');
        let vars = env();
        let cases: &[(&str, &str)] = &[
            (
                "'open",
                "unexpected end of statement while looking for matching single-quote",
            ),
            (
                "\"open",
                "unexpected end of statement while looking for matching double-quote",
            ),
            ("${A", "syntax error: missing '}'"),
            ("${A:-x", "syntax error: missing '}'"),
            ("${}", "syntax error: bad substitution"),
            ("${:x}", "syntax error: bad substitution"),
            ("${A:#x}", "unsupported modifier (:#) in substitution"),
            ("${A*}", "unsupported modifier (*) in substitution"),
            ("${UNSET:?}", "UNSET: is not allowed to be unset"),
            ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
            ("${UNSET?must set}", "UNSET: must set"),
        ];
        for (input, want) in cases {
            let err = lex.process_word(input, &vars).unwrap_err();
            assert_eq!(err.error.to_string(), *want, "input {input:?}");
            assert!(err.to_string().starts_with("failed to process"));
        }
        // `${V?}` only fails when unset, not when empty.
        assert_eq!(lex.process_word("${EMPTY?}", &vars).unwrap().value, "");
    }

    #[test]
    fn records_lookups() {
        let lex = Lexer::new('\\');
        let got = lex
            .process_word("$A ${UNSET:-x} '$NOTLOOKED'", &env())
            .unwrap();
        assert_eq!(got.matched.into_iter().collect::<Vec<_>>(), ["A"]);
        assert_eq!(got.unmatched.into_iter().collect::<Vec<_>>(), ["UNSET"]);
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let vars = env();
        assert_eq!(lex.process_word("`$A", &vars).unwrap().value, "$A");
        assert_eq!(lex.process_word("C:\\dir", &vars).unwrap().value, "C:\\dir");
    }

    #[test]
    fn skip_unset_and_raw_modes() {
        let mut lex = Lexer::new('\\');
        lex.skip_unset = true;
        let vars = env();
        assert_eq!(
            lex.process_word("$NOPE ${NOPE:-x} $A", &vars)
                .unwrap()
                .value,
            "$NOPE ${NOPE:-x} a"
        );
        lex.raw_quotes = true;
        assert_eq!(
            lex.process_words("'E O F' \"x\"", &NoVars).unwrap().value,
            ["'E O F'", "\"x\""]
        );
        let mut lex = Lexer::new('\\');
        lex.skip_quotes = true;
        assert_eq!(
            lex.process_word("it's \"$A\"", &vars).unwrap().value,
            "it's \"a\""
        );
    }

    #[test]
    fn env_list_lookup_last_wins() {
        let list = vec!["A=1".to_string(), "B=2".to_string(), "A=3".to_string()];
        let lex = Lexer::new('\\');
        assert_eq!(lex.process_word("$A$B", &list).unwrap().value, "32");
    }
}
