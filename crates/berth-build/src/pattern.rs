//! Glob matching with Go's semantics, shared by the lexer, `.dockerignore` and
//! COPY source globs.
//!
//! Docker is written in Go, so its globs are Go's `path/filepath.Match`: `*`
//! and `?` never match `/`, classes are `[...]`/`[^...]` with ranges, and `\`
//! escapes. The `glob`/`globset` crates differ (`**`, `{a,b}`, `[!...]`,
//! separator rules), hence this small hand-written engine. The same tokens in
//! "shell" mode (`*` matches `/` too, `[!...]` negates) serve `${V#pattern}`.

/// A malformed pattern (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(char),
    /// Any run of characters (not `/` in path mode).
    Star,
    /// One character (not `/` in path mode).
    One,
    /// One character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `(.*/)?` of a `.dockerignore` `**/`: nothing, or anything ending in `/`.
    AnyDirs,
    /// `.*`: anything, `/` included.
    Any,
}

/// Parses a Go `filepath.Match` pattern into tokens.
pub(crate) fn parse_go(pattern: &str, shell: bool) -> Result<Vec<Tok>, BadPattern> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                toks.push(Tok::One);
                i += 1;
            }
            '\\' => {
                let c = *chars.get(i + 1).ok_or(BadPattern)?;
                toks.push(Tok::Lit(c));
                i += 2;
            }
            '[' => {
                let (tok, next) = parse_class(&chars, i + 1, shell)?;
                toks.push(tok);
                i = next;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Ok(toks)
}

/// Parses a class body starting after `[`; returns the token and the index after `]`.
pub(crate) fn parse_class(
    chars: &[char],
    mut i: usize,
    shell: bool,
) -> Result<(Tok, usize), BadPattern> {
    let mut negated = false;
    if matches!(chars.get(i), Some('^')) || (shell && matches!(chars.get(i), Some('!'))) {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    // Go: `]` closes the class only after at least one range; a leading `]`
    // or `-` (unescaped) is a bad pattern.
    let esc = |i: &mut usize| -> Result<char, BadPattern> {
        let c = *chars.get(*i).ok_or(BadPattern)?;
        if c == '-' || c == ']' {
            return Err(BadPattern);
        }
        if c == '\\' {
            *i += 1;
            let c = *chars.get(*i).ok_or(BadPattern)?;
            *i += 1;
            return Ok(c);
        }
        *i += 1;
        Ok(c)
    };
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Tok::Class { negated, ranges }, i + 1));
        }
        let lo = esc(&mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            hi = esc(&mut i)?;
        }
        ranges.push((lo, hi));
    }
}

/// Matches `text` against tokens; `sep` is the character `*`/`?` may not match.
pub(crate) fn match_toks(toks: &[Tok], text: &[char], sep: Option<char>) -> bool {
    // Memoised (token, position) search: linear-ish even for many stars.
    let mut memo = vec![None; (toks.len() + 1) * (text.len() + 1)];
    fn go(
        t: usize,
        s: usize,
        toks: &[Tok],
        text: &[char],
        sep: Option<char>,
        memo: &mut [Option<bool>],
    ) -> bool {
        let key = t * (text.len() + 1) + s;
        if let Some(r) = memo[key] {
            return r;
        }
        let r = match toks.get(t) {
            None => s == text.len(),
            Some(Tok::Lit(c)) => text.get(s) == Some(c) && go(t + 1, s + 1, toks, text, sep, memo),
            Some(Tok::One) => {
                text.get(s).is_some_and(|c| Some(*c) != sep)
                    && go(t + 1, s + 1, toks, text, sep, memo)
            }
            Some(Tok::Class { negated, ranges }) => {
                text.get(s)
                    .is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi) != *negated)
                    && go(t + 1, s + 1, toks, text, sep, memo)
            }
            Some(Tok::Star) => {
                let mut k = s;
                loop {
                    if go(t + 1, k, toks, text, sep, memo) {
                        break true;
                    }
                    if k == text.len() || Some(text[k]) == sep {
                        break false;
                    }
                    k += 1;
                }
            }
            Some(Tok::Any) => (s..=text.len()).any(|k| go(t + 1, k, toks, text, sep, memo)),
            Some(Tok::AnyDirs) => {
                go(t + 1, s, toks, text, sep, memo)
                    || (s..text.len())
                        .any(|k| text[k] == '/' && go(t + 1, k + 1, toks, text, sep, memo))
            }
        };
        memo[key] = Some(r);
        r
    }
    go(0, 0, toks, text, sep, &mut memo)
}

/// Go's `filepath.Match(pattern, name)` on Unix.
pub fn path_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let toks = parse_go(pattern, false)?;
    let text: Vec<char> = name.chars().collect();
    Ok(match_toks(&toks, &text, Some('/')))
}

/// True when `s` has an unescaped `*`, `?` or `[` (BuildKit's `containsWildcards`).
pub fn has_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Shell-pattern tokens for `${V#p}` and friends; `escape` is the Dockerfile's escape token.
fn shell_toks(pattern: &str, escape: char) -> Vec<Tok> {
    // Normalise the escape token to `\` so one parser serves both.
    let normalised: String = if escape == '\\' {
        pattern.to_string()
    } else {
        let mut out = String::new();
        for c in pattern.chars() {
            match c {
                c if c == escape => out.push('\\'),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out
    };
    // A malformed pattern matches literally, as a shell would.
    parse_go(&normalised, true).unwrap_or_else(|_| normalised.chars().map(Tok::Lit).collect())
}

/// `${V#p}` (shortest) / `${V##p}` (greedy): removes a matching prefix.
pub(crate) fn trim_prefix(pattern: &str, value: &str, greedy: bool, escape: char) -> String {
    let toks = shell_toks(pattern, escape);
    let chars: Vec<char> = value.chars().collect();
    let ends: Box<dyn Iterator<Item = usize>> = if greedy {
        Box::new((0..=chars.len()).rev())
    } else {
        Box::new(0..=chars.len())
    };
    for end in ends {
        if match_toks(&toks, &chars[..end], None) {
            return chars[end..].iter().collect();
        }
    }
    value.to_string()
}

/// `${V%p}` (shortest) / `${V%%p}` (greedy): removes a matching suffix.
pub(crate) fn trim_suffix(pattern: &str, value: &str, greedy: bool, escape: char) -> String {
    let toks = shell_toks(pattern, escape);
    let chars: Vec<char> = value.chars().collect();
    let starts: Box<dyn Iterator<Item = usize>> = if greedy {
        Box::new(0..=chars.len())
    } else {
        Box::new((0..=chars.len()).rev())
    };
    for start in starts {
        if match_toks(&toks, &chars[start..], None) {
            return chars[..start].iter().collect();
        }
    }
    value.to_string()
}

/// `${V/p/r}` and `${V//p/r}`: leftmost, longest matches replaced.
pub(crate) fn replace(pattern: &str, value: &str, rep: &str, all: bool, escape: char) -> String {
    let toks = shell_toks(pattern, escape);
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i <= chars.len() {
        let found = if replaced && !all {
            None
        } else {
            (i..=chars.len())
                .rev()
                .find(|&end| match_toks(&toks, &chars[i..end], None))
        };
        match found {
            Some(end) if end > i || !toks.is_empty() => {
                out.push_str(rep);
                replaced = true;
                if end == i {
                    // An empty match: keep the character and move on.
                    if let Some(c) = chars.get(i) {
                        out.push(*c);
                    }
                    i += 1;
                } else {
                    i = end;
                }
            }
            _ => {
                if let Some(c) = chars.get(i) {
                    out.push(*c);
                }
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_table() {
        // Cases from Go's filepath.Match documentation and tests.
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            // Go negates classes with `^` only: `!` is an ordinary member.
            ("a[!a]b", "a!b", Ok(true)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadPattern)),
            ("[-]", "-", Err(BadPattern)),
            ("[x-]", "x", Err(BadPattern)),
            ("[a-b-c]", "a", Err(BadPattern)),
            ("[", "a", Err(BadPattern)),
            ("[^", "a", Err(BadPattern)),
            ("[^bc", "a", Err(BadPattern)),
            ("a\\", "a", Err(BadPattern)),
            ("*x", "xxx", Ok(true)),
            (".*", "main.go", Ok(false)),
            ("*.go", ".hidden.go", Ok(true)),
        ];
        for (p, s, want) in cases {
            assert_eq!(path_match(p, s), *want, "Match({p:?}, {s:?})");
        }
    }

    #[test]
    fn wildcards_detection() {
        assert!(has_wildcards("*.txt"));
        assert!(has_wildcards("a/b?"));
        assert!(has_wildcards("[ab]"));
        assert!(!has_wildcards("plain/path"));
        assert!(!has_wildcards("esc\\*aped"));
    }

    #[test]
    fn shell_trims_and_replace() {
        assert_eq!(trim_prefix("*/", "a/b/c", false, '\\'), "b/c");
        assert_eq!(trim_prefix("*/", "a/b/c", true, '\\'), "c");
        assert_eq!(trim_suffix(".*", "f.tar.gz", false, '\\'), "f.tar");
        assert_eq!(trim_suffix(".*", "f.tar.gz", true, '\\'), "f");
        assert_eq!(trim_prefix("x", "abc", false, '\\'), "abc");
        assert_eq!(trim_prefix("[!a]", "abc", false, '\\'), "abc");
        assert_eq!(trim_prefix("[!b]", "abc", false, '\\'), "bc");
        assert_eq!(trim_prefix("\\*", "*abc", false, '\\'), "abc");
        assert_eq!(replace("o", "foo boo", "0", true, '\\'), "f00 b00");
        assert_eq!(replace("o", "foo boo", "0", false, '\\'), "f0o boo");
        assert_eq!(replace("o*", "foo boo", "X", false, '\\'), "fX");
    }
}
