//! The Dockerfile frontend: text in, typed syntax tree out.
//!
//! It owns the *syntax* rules of BuildKit's parser: parser directives at the
//! top only, comments, line continuations with the escape token (comment and
//! empty lines inside a continuation skipped), heredocs, per-instruction
//! argument forms (JSON or shell, `key=value` or legacy `key value`),
//! instruction flags, and the errors with their line numbers. Meaning (which
//! words expand, stage graph, build context) lives in the sibling modules.
//!
//! Parsing is two passes, as in BuildKit: [`lines`] turns physical lines into
//! logical ones (with heredoc bodies attached), then [`instructions`] turns
//! each into a typed [`Instruction`].

mod ast;
mod error;
mod flags;
mod instructions;
mod lines;
#[cfg(test)]
mod tests;

pub use ast::*;
pub use error::{ParseError, ParseErrorKind};

use crate::shell_words::{Lexer, NoVars};

/// The instruction keywords, upper case.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let parsed = lines::parse_nodes(text)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut last_line = 1;
    for node in &parsed.nodes {
        last_line = node.end_line;
        let inst = instructions::build(node, parsed.directives.escape)?;
        match inst.command {
            Command::From(ref f) => stages.push(Stage {
                index: stages.len(),
                name: f.name.clone(),
                from: inst,
                instructions: Vec::new(),
            }),
            Command::Arg(_) if stages.is_empty() => global_args.push(inst),
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(inst),
                None => return Err(ParseError::new(inst.line, ParseErrorKind::NoBuildStage)),
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError::new(last_line, ParseErrorKind::NoStages));
    }
    Ok(Dockerfile {
        directives: parsed.directives,
        global_args,
        stages,
        warnings: parsed.warnings,
    })
}

/// A heredoc marker word (`<<EOF`, `<<-"EOF"`, `2<<EOF`) parsed, or `None`.
pub(crate) fn heredoc_word(word: &str) -> Option<(String, bool, bool, Option<u32>)> {
    // BuildKit: ^(\d*)<<(-?)([^<]*)$
    let digits = word.chars().take_while(char::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = if digits > 0 {
        word[..digits].parse().ok()
    } else {
        None
    };
    // The name with quotes removed; quoting any part disables expansion,
    // which shows as the quote count changing when quotes are kept.
    let mut lex = Lexer::new('\\');
    lex.skip_unset = true;
    let words = lex.process_words(rest, &NoVars).ok()?.value;
    if words.len() != 1 {
        return None;
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoVars).ok()?.value;
    if raw.len() != 1 {
        return None;
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Some((words[0].clone(), chomp, expand, fd))
}
