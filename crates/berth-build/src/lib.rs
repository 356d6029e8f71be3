//! berth-build: from a Dockerfile and a build context to what a builder needs.
//!
//! A pure library (no I/O beyond reading the context, no async):
//!
//! - [`dockerfile`]: the parser — directives, continuations, heredocs, every
//!   instruction into a typed AST with line numbers and Docker's errors.
//! - [`shell_words`]: Docker's word lexer (quotes, escapes, `${VAR:-x}`).
//! - [`expand`]: which words of which instruction expand, with which
//!   variables in scope (ENV, ARG, `--build-arg`, platform args), and which
//!   build args each step uses (for cache keys).
//! - [`stages`]: the stage graph, `--target`, what must be built and in which
//!   order (with independent stages in the same wave).
//! - [`dockerignore`]: `.dockerignore` with moby's pattern rules.
//! - [`context`]: walking the context and resolving COPY/ADD sources (globs,
//!   directory semantics, containment), with a content hash for the cache.
//! - [`pattern`]: Go's `filepath.Match`, shared by the above.

pub mod context;
pub mod dockerfile;
pub mod dockerignore;
pub mod expand;
pub mod pattern;
pub mod shell_words;
pub mod stages;

pub use dockerfile::{Dockerfile, ParseError, parse};
