//! Parse errors: each with its 1-based line and a Docker-like message.

use crate::shell_words::WordError;

/// A Dockerfile that cannot be parsed. Shown as BuildKit shows it:
/// `dockerfile parse error on line 3: unknown instruction: RUNN (did you mean RUN?)`;
/// the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dockerfile parse error on line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("file with no instructions")]
    Empty,
    #[error("dockerfile contains no stages to build")]
    NoStages,
    #[error("no build stage in current context")]
    NoBuildStage,
    #[error("unknown instruction: {name}{}", did_you_mean(.suggestion))]
    UnknownInstruction {
        name: String,
        suggestion: Option<String>,
    },
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc { name: String },
    #[error("{instruction} cannot accept a heredoc as a destination")]
    HeredocDestination { instruction: &'static str },
    /// Unterminated quotes, bad `${...}`: the lexer's message with the word.
    #[error("{0}")]
    Word(WordError),
    #[error("{instruction} requires the arguments to be in JSON form")]
    NotJson { instruction: &'static str },
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStrings,
    #[error("unknown flag: {flag}{}", did_you_mean(.suggestion))]
    UnknownFlag {
        instruction: &'static str,
        flag: String,
        suggestion: Option<String>,
    },
    #[error("missing a value on flag: {flag}")]
    FlagMissingValue { flag: String },
    #[error("duplicate flag specified: {flag}")]
    DuplicateFlag { flag: String },
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    FlagNotBool { flag: String, value: String },
    #[error("{instruction} --{flag} is not supported")]
    UnsupportedFlag {
        instruction: &'static str,
        flag: &'static str,
    },
    #[error("{instruction} requires {expected}")]
    Arguments {
        instruction: &'static str,
        expected: &'static str,
    },
    #[error("invalid escape token '{0}' does not match ` or \\")]
    BadEscape(String),
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// Everything else, in BuildKit's words.
    #[error("{0}")]
    Invalid(String),
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

impl ParseError {
    pub(crate) fn new(line: usize, kind: ParseErrorKind) -> Self {
        ParseError { line, kind }
    }
}

/// The closest candidate to `word` (case-insensitive), if it is close enough
/// to be a plausible typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(&w, &c.to_ascii_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let (d, c) = best?;
    // One edit for short words, two for longer ones, never a whole rewrite.
    let limit = if w.chars().count() > 3 { 2 } else { 1 };
    (d > 0 && d <= limit).then(|| c.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let words = ["RUN", "COPY", "ENTRYPOINT", "WORKDIR"];
        assert_eq!(suggest("RUNN", words), Some("RUN".into()));
        assert_eq!(suggest("cpy", words), Some("COPY".into()));
        assert_eq!(suggest("ENTRYPONT", words), Some("ENTRYPOINT".into()));
        assert_eq!(suggest("XYZZY", words), None);
        assert_eq!(suggest("run", words), None); // exact (case-insensitive) is not a typo
    }
}
