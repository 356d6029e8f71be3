//! `.dockerignore`: reading the file and deciding what the build context holds.
//!
//! The rules are those of moby's `patternmatcher` (what BuildKit's context
//! transfer uses): `#` comments only at the start of a line, surrounding
//! whitespace trimmed, paths `Clean`ed with a leading `/` dropped, Go glob
//! syntax plus `**` for any number of directories, and `!` exceptions where
//! the *last* pattern that matches a path (or one of its parent directories)
//! decides. Excluded directories are still walked when an exception could
//! match inside them.
//!
//! The Dockerfile and `.dockerignore` get no special treatment here, as in
//! BuildKit: the Dockerfile is read on its own (so excluding it does not stop
//! the build), but an excluded Dockerfile is not in the context and cannot be
//! COPYed.

use std::path::{Path, PathBuf};

use crate::pattern::{self, Tok};

/// A `.dockerignore` that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"")]
    BareExclusion,
    #[error("invalid .dockerignore pattern {pattern:?}: syntax error in pattern")]
    BadPattern { pattern: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

/// One cleaned pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    text: String,
    exclusion: bool,
    kind: Kind,
    toks: Vec<Tok>,
}

impl IgnorePattern {
    /// The cleaned pattern, without its `!`.
    pub fn pattern(&self) -> &str {
        &self.text
    }
    /// True for `!` exceptions (they re-include).
    pub fn is_exception(&self) -> bool {
        self.exclusion
    }

    fn compile(text: String, exclusion: bool) -> Result<Self, IgnoreError> {
        // Go's New() rejects what filepath.Match rejects.
        pattern::path_match(&text, ".").map_err(|_| IgnoreError::BadPattern {
            pattern: text.clone(),
        })?;
        let chars: Vec<char> = text.chars().collect();
        let mut kind = Kind::Exact;
        let mut toks = Vec::new();
        let mut i = 0;
        let mut first = true;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        // Trailing `**` (gitignore style): everything below.
                        if kind == Kind::Exact {
                            kind = Kind::Prefix;
                        } else {
                            toks.push(Tok::Any);
                            kind = Kind::Glob;
                        }
                    } else {
                        toks.push(Tok::AnyDirs);
                        kind = Kind::Glob;
                    }
                    if first {
                        kind = Kind::Suffix;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    kind = Kind::Glob;
                }
                '?' => {
                    toks.push(Tok::One);
                    kind = Kind::Glob;
                }
                '\\' => match chars.get(i) {
                    Some(c) => {
                        toks.push(Tok::Lit(*c));
                        i += 1;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    let (tok, next) = pattern::parse_class(&chars, i, false).map_err(|_| {
                        IgnoreError::BadPattern {
                            pattern: text.clone(),
                        }
                    })?;
                    toks.push(tok);
                    i = next;
                    kind = Kind::Glob;
                }
                ']' => {
                    toks.push(Tok::Lit(']'));
                    kind = Kind::Glob;
                }
                c => toks.push(Tok::Lit(c)),
            }
            first = false;
        }
        Ok(IgnorePattern {
            text,
            exclusion,
            kind,
            toks,
        })
    }

    /// Does the pattern match `path` itself (slash-separated, relative)?
    fn matches_path(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => path.starts_with(&self.text[..self.text.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.text[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            Kind::Glob => {
                let text: Vec<char> = path.chars().collect();
                pattern::match_toks(&self.toks, &text, Some('/'))
            }
        }
    }

    /// Does the pattern match `path` or one of its parent directories?
    fn matches_or_parent(&self, path: &str) -> bool {
        if self.matches_path(path) {
            return true;
        }
        path.match_indices('/')
            .any(|(i, _)| self.matches_path(&path[..i]))
    }
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dockerignore {
    patterns: Vec<IgnorePattern>,
}

impl Dockerignore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = Vec::new();
        for line in text.lines() {
            // Only a `#` in the first column starts a comment.
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let invert = p.starts_with('!');
            if invert {
                p = p[1..].trim();
            }
            let mut p = if p.is_empty() {
                String::new()
            } else {
                clean(p)
            };
            if p.len() > 1 && p.starts_with('/') {
                p.remove(0);
            }
            lines.push(if invert { format!("!{p}") } else { p });
        }
        Self::from_patterns(&lines)
    }

    /// Builds a matcher from patterns as `.dockerignore` lines (`!` allowed).
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Self, IgnoreError> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, body) = match p.strip_prefix('!') {
                Some("") => return Err(IgnoreError::BareExclusion),
                Some(rest) => (true, rest.to_string()),
                None => (false, p),
            };
            out.push(IgnorePattern::compile(body, exclusion)?);
        }
        Ok(Dockerignore { patterns: out })
    }

    /// Reads `path`; a missing file is an empty matcher.
    pub fn read(path: &Path) -> Result<Self, crate::context::ContextError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| crate::context::ContextError::Ignore {
                path: path.to_path_buf(),
                error: e,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(crate::context::ContextError::Io {
                path: path.to_path_buf(),
                error: e.to_string(),
            }),
        }
    }

    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Is `path` (relative to the context, `/`-separated) excluded?
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path.trim_start_matches('/'));
        let mut excluded = false;
        for p in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exception an
            // included one; skipping them is only an optimisation.
            if p.exclusion != excluded {
                continue;
            }
            if p.matches_or_parent(&path) {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Must the walk enter the excluded directory `dir` to look for exceptions?
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let exceptions: Vec<&IgnorePattern> =
            self.patterns.iter().filter(|p| p.exclusion).collect();
        if exceptions.is_empty() {
            return false;
        }
        // With literal exceptions only, enter just the directories on their way
        // (as BuildKit's fsutil does); a wildcard exception could match anywhere.
        if exceptions.iter().any(|p| pattern::has_wildcards(&p.text)) {
            return true;
        }
        let dir_slash = format!("{}/", clean(dir));
        exceptions
            .iter()
            .any(|p| format!("{}/", p.text).starts_with(&dir_slash))
    }
}

/// The ignore file BuildKit uses for `dockerfile`: `<Dockerfile>.dockerignore`
/// next to it wins over `<context>/.dockerignore`.
pub fn ignore_file_for(context: &Path, dockerfile: &Path) -> Option<PathBuf> {
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let candidate = dockerfile.with_file_name(specific);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let default = context.join(".dockerignore");
    default.is_file().then_some(default)
}

/// Go's `path.Clean`: lexical normalisation of a slash-separated path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./a", "a"),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b/..", "a"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn reading_the_file() {
        let ig = Dockerignore::parse(
            "\u{feff}# comment\n  \n /abs/path/ \n./rel\n!  /keep \n  # not a comment\n**/*.log\n",
        )
        .unwrap();
        let pats: Vec<(bool, &str)> = ig
            .patterns()
            .iter()
            .map(|p| (p.is_exception(), p.pattern()))
            .collect();
        assert_eq!(
            pats,
            [
                (false, "abs/path"),
                (false, "rel"),
                (true, "keep"),
                (false, "# not a comment"),
                (false, "**/*.log")
            ]
        );
        assert_eq!(Dockerignore::parse("!\n"), Err(IgnoreError::BareExclusion));
        assert!(matches!(
            Dockerignore::parse("[\n"),
            Err(IgnoreError::BadPattern { .. })
        ));
    }

    /// (patterns, path, excluded?) — cases follow moby's patternmatcher tests.
    #[test]
    fn exclusion_table() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["*.go"], "sub/fileutils.go", false),
            (&["**/*.go"], "sub/fileutils.go", true),
            (&["**/*.go"], "fileutils.go", true),
            (&["**"], "anything/at/all", true),
            (&["**/"], "anything", true),
            (&["docs"], "docs/readme.md", true),
            (&["docs"], "docsfile", false),
            (&["docs/"], "docs/a/b", true),
            (&["docs/**"], "docs/a/b", true),
            (&["docs/**"], "docs", false),
            (&["dir/**/x"], "dir/x", true),
            (&["dir/**/x"], "dir/a/b/x", true),
            (&["dir/**/x"], "dir/a/b/y", false),
            (&["**/foo"], "foo", true),
            (&["**/foo"], "a/b/foo", true),
            (&["**/foo"], "a/bfoo", false),
            (&["**/foo/**"], "a/foo/b", true),
            (&["**/foo/**"], "foo/b", true),
            (&["a?c"], "abc", true),
            (&["a?c"], "a/c", false),
            (&["[a-c]x"], "bx", true),
            (&["[^a-c]x"], "dx", true),
            (&["[^a-c]x"], "ax", false),
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep"], "other", true),
            (&["*", "!keep", "keep"], "keep", true),
            (&["dir", "!dir/keep.txt"], "dir/keep.txt", false),
            (&["dir", "!dir/keep.txt"], "dir/other.txt", true),
            (&["dir/*", "!dir/sub"], "dir/sub/deep/file", false),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README.md",
                false,
            ),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README-secret.md",
                true,
            ),
            (&["/abs"], "abs", true),
            (&["./dot"], "dot", true),
            (&["a/../b"], "b", true),
            (&["Dockerfile"], "Dockerfile", true),
            (&[".dockerignore"], ".dockerignore", true),
            (&["foo\\*"], "foo*", false), // moby quirk: an escape alone keeps exact matching
            (&["foo\\*?"], "foo*x", true),
        ];
        for (pats, path, want) in cases {
            let text = pats.join("\n");
            let ig = Dockerignore::parse(&text).unwrap();
            assert_eq!(
                ig.is_excluded(path),
                *want,
                "patterns {pats:?} path {path:?}"
            );
        }
    }

    #[test]
    fn walking_into_excluded_dirs() {
        let ig = Dockerignore::parse("node_modules\nbuild\n!build/keep/me.txt\n").unwrap();
        assert!(ig.may_reinclude_under("build"));
        assert!(ig.may_reinclude_under("build/keep"));
        assert!(!ig.may_reinclude_under("node_modules"));
        let ig = Dockerignore::parse("node_modules\n").unwrap();
        assert!(!ig.may_reinclude_under("node_modules"));
        let ig = Dockerignore::parse("*\n!**/*.rs\n").unwrap();
        assert!(ig.may_reinclude_under("anything"));
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let df = dir.path().join("web.Dockerfile");
        std::fs::write(&df, "FROM scratch\n").unwrap();
        assert_eq!(ignore_file_for(dir.path(), &df), None);
        std::fs::write(dir.path().join(".dockerignore"), "x\n").unwrap();
        assert_eq!(
            ignore_file_for(dir.path(), &df),
            Some(dir.path().join(".dockerignore"))
        );
        std::fs::write(dir.path().join("web.Dockerfile.dockerignore"), "y\n").unwrap();
        assert_eq!(
            ignore_file_for(dir.path(), &df),
            Some(dir.path().join("web.Dockerfile.dockerignore"))
        );
    }
}
