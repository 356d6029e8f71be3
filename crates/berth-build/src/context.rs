//! The build context: walking it under `.dockerignore`, and resolving COPY and
//! ADD sources into the files to copy, with a content hash for the cache.
//!
//! Source rules (Docker's, BuildKit flavour):
//! - Paths are relative to the context root; a leading `/` changes nothing,
//!   `..` that climbs out is refused ("forbidden path outside the build
//!   context"), and so is a source that is (or passes through) a symlink
//!   leading out of the context. Symlinks *inside* a copied directory are
//!   copied as symlinks, never followed.
//! - Globs are Go's `filepath.Match` per path component; `*` matches dotfiles.
//!   A glob that matches nothing is an error, as is a missing or excluded file.
//! - A directory source copies its *contents* into the destination.
//! - The destination is a directory when it ends in `/` (or is `.`); a single
//!   file to any other destination is written under that name. Several
//!   source arguments need a directory destination; a glob matching several
//!   things makes the destination a directory (as BuildKit does).
//!
//! The content hash covers what lands in the image: target paths, entry
//! kinds, permission bits, file contents and symlink targets. Not mtimes (so
//! touching a file changes nothing), not host owners (COPY sets 0:0 or
//! `--chown`, which is in the instruction text).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::dockerignore::{self, Dockerignore, IgnoreError, clean};
use crate::pattern;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("{}: {error}", path.display())]
    Ignore { path: PathBuf, error: IgnoreError },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: String },
    #[error("build context {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{instruction} failed: forbidden path outside the build context: {src}")]
    OutsideContext { instruction: String, src: String },
    #[error(
        "{instruction} failed: source {src:?} is outside the build context (a symlink to {target})"
    )]
    SymlinkOutside {
        instruction: String,
        src: String,
        target: String,
    },
    #[error(
        "{instruction} failed: file not found in build context or excluded by .dockerignore: stat {src}: file does not exist"
    )]
    NotFound { instruction: String, src: String },
    #[error("{instruction} failed: no files in the build context match {src:?}")]
    NoMatch { instruction: String, src: String },
    #[error("{instruction} failed: {src:?} is a URL, not a path in the build context")]
    Remote { instruction: String, src: String },
    #[error(
        "When using {instruction} with more than one source file, the destination must be a directory and end with a /"
    )]
    MultipleToFile { instruction: String },
    #[error("{instruction} failed: bad pattern {pattern:?}")]
    BadPattern {
        instruction: String,
        pattern: String,
    },
}

fn io_err(path: &Path, e: std::io::Error) -> ContextError {
    ContextError::Io {
        path: path.to_path_buf(),
        error: e.to_string(),
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink and its target, copied as is.
    Symlink(String),
}

/// One thing to create in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyEntry {
    /// Where to read it on the host.
    pub host_path: PathBuf,
    /// Where it lands in the image (absolute, clean).
    pub target: String,
    pub kind: EntryKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub size: u64,
    /// Host owner, for ADD of archives and for `--chown`-less Docker parity
    /// checks; COPY itself records 0:0 unless `--chown` says otherwise.
    pub uid: u32,
    pub gid: u32,
}

/// One resolved source (a glob gives several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyItem {
    /// The path in the context (`/`-separated, `""` for the root).
    pub source: String,
    /// A directory (its contents are copied) or a file.
    pub is_dir: bool,
    /// The file's path, or the directory whose contents are written.
    pub target: String,
    /// For a directory: the target directory itself first, then its
    /// contents (parents before children). For a file: the file.
    pub entries: Vec<CopyEntry>,
}

/// Everything a COPY/ADD from the context writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The destination, absolute and clean.
    pub dest: String,
    pub dest_is_dir: bool,
    pub items: Vec<CopyItem>,
    /// `sha256:<hex>` over the entries (see the module docs).
    pub digest: String,
}

impl CopyPlan {
    /// Docker writes a single file *into* a destination that already exists
    /// as a directory in the image; the builder knows, and calls this.
    pub fn retarget_into_existing_dir(&mut self) {
        if self.dest_is_dir {
            return;
        }
        self.dest_is_dir = true;
        for item in self.items.iter_mut().filter(|i| !i.is_dir) {
            let name = item.source.rsplit('/').next().unwrap_or_default();
            item.target = join(&self.dest, name);
            for e in &mut item.entries {
                e.target = item.target.clone();
            }
        }
    }
}

/// A COPY/ADD request against the context.
#[derive(Debug, Clone, Copy)]
pub struct CopyRequest<'a> {
    /// `COPY` or `ADD`, for messages.
    pub instruction: &'a str,
    /// Path sources, expanded.
    pub sources: &'a [String],
    /// Other sources of the same instruction (heredocs, URLs), for the
    /// "several sources need a directory" rule.
    pub other_sources: usize,
    /// The destination, expanded.
    pub dest: &'a str,
    /// The WORKDIR that relative destinations are under.
    pub workdir: &'a str,
    /// `--exclude` patterns, relative to each source.
    pub excludes: &'a [String],
}

/// A build context directory with its ignore rules.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    ignore: Dockerignore,
}

impl BuildContext {
    /// A context at `root` with `ignore` rules.
    pub fn new(root: &Path, ignore: Dockerignore) -> Result<Self, ContextError> {
        let root = fs::canonicalize(root).map_err(|e| io_err(root, e))?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory(root));
        }
        Ok(BuildContext { root, ignore })
    }

    /// A context at `root`, with the ignore file BuildKit would use for
    /// `dockerfile` (`<Dockerfile>.dockerignore`, else `<root>/.dockerignore`).
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<Self, ContextError> {
        let dockerfile = dockerfile
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("Dockerfile"));
        let ignore = match dockerignore::ignore_file_for(root, &dockerfile) {
            Some(p) => Dockerignore::read(&p)?,
            None => Dockerignore::default(),
        };
        Self::new(root, ignore)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ignore(&self) -> &Dockerignore {
        &self.ignore
    }

    /// Is the context-relative `path` left out of the context?
    pub fn is_excluded(&self, path: &str) -> bool {
        let p = clean(path.trim_start_matches('/'));
        p != "." && self.ignore.is_excluded(&p)
    }

    /// Everything the context holds, as (relative path, kind), parents first.
    pub fn walk(&self) -> Result<Vec<(String, EntryKind)>, ContextError> {
        let mut entries = Vec::new();
        self.walk_dir(&self.root, "", "/", &Dockerignore::default(), &mut entries)?;
        Ok(entries
            .into_iter()
            .map(|e| (e.target.trim_start_matches('/').to_string(), e.kind))
            .collect())
    }

    /// Resolves the sources of a COPY/ADD into what it writes.
    pub fn resolve(&self, req: &CopyRequest<'_>) -> Result<CopyPlan, ContextError> {
        let inst = req.instruction.to_string();
        let (dest, mut dest_is_dir) = resolve_dest(req.dest, req.workdir);
        if req.sources.len() + req.other_sources > 1 && !dest_is_dir {
            return Err(ContextError::MultipleToFile { instruction: inst });
        }
        let excludes =
            Dockerignore::from_patterns(req.excludes).map_err(|_| ContextError::BadPattern {
                instruction: inst.clone(),
                pattern: req.excludes.join(" "),
            })?;
        let mut matches: Vec<(String, String)> = Vec::new(); // (source as written, context path)
        for src in req.sources {
            if is_url(src) {
                return Err(ContextError::Remote {
                    instruction: inst,
                    src: src.clone(),
                });
            }
            let rel = normalize_source(src).ok_or_else(|| ContextError::OutsideContext {
                instruction: inst.clone(),
                src: src.clone(),
            })?;
            if pattern::has_wildcards(&rel) {
                let found = self.glob(&inst, src, &rel)?;
                if found.is_empty() {
                    return Err(ContextError::NoMatch {
                        instruction: inst,
                        src: src.clone(),
                    });
                }
                matches.extend(found.into_iter().map(|m| (src.clone(), m)));
            } else {
                matches.push((src.clone(), rel));
            }
        }
        if matches.len() > 1 {
            // A glob with several matches writes into a directory (BuildKit).
            dest_is_dir = true;
        }
        let mut items = Vec::new();
        for (src, rel) in matches {
            items.push(self.item(&inst, &src, &rel, &dest, dest_is_dir, &excludes)?);
        }
        let digest = digest(&items)?;
        Ok(CopyPlan {
            dest,
            dest_is_dir,
            items,
            digest,
        })
    }

    /// Follows `rel` (symlinks included) and checks it stays in the context.
    fn contained(
        &self,
        inst: &str,
        src: &str,
        rel: &str,
    ) -> Result<(PathBuf, String), ContextError> {
        let host = self.root.join(rel);
        let not_found = || ContextError::NotFound {
            instruction: inst.to_string(),
            src: src.to_string(),
        };
        let canon = match fs::canonicalize(&host) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink pointing outside is still an escape.
                if let Ok(target) = fs::read_link(&host) {
                    let abs = host.parent().unwrap_or(&self.root).join(&target);
                    if !lexically_within(&abs, &self.root) {
                        return Err(ContextError::SymlinkOutside {
                            instruction: inst.to_string(),
                            src: src.to_string(),
                            target: target.display().to_string(),
                        });
                    }
                }
                return Err(not_found());
            }
            Err(e) => return Err(io_err(&host, e)),
        };
        let Ok(inside) = canon.strip_prefix(&self.root) else {
            return Err(ContextError::SymlinkOutside {
                instruction: inst.to_string(),
                src: src.to_string(),
                target: canon.display().to_string(),
            });
        };
        let canon_rel = inside
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        Ok((canon, canon_rel))
    }

    fn item(
        &self,
        inst: &str,
        src: &str,
        rel: &str,
        dest: &str,
        dest_is_dir: bool,
        excludes: &Dockerignore,
    ) -> Result<CopyItem, ContextError> {
        let (host, canon_rel) = self.contained(inst, src, rel)?;
        let meta = fs::metadata(&host).map_err(|e| io_err(&host, e))?;
        let not_found = || ContextError::NotFound {
            instruction: inst.to_string(),
            src: src.to_string(),
        };
        // Excluded paths are not in the context, whichever name reaches them;
        // an excluded directory still holds what exceptions re-include.
        for r in [rel, canon_rel.as_str()] {
            if self.is_excluded(r) && !(meta.is_dir() && self.ignore.may_reinclude_under(r)) {
                return Err(not_found());
            }
        }
        if meta.is_dir() {
            let mut entries = vec![entry(&host, dest, EntryKind::Dir, &meta)];
            let any = self.walk_dir(&host, &canon_rel, dest, excludes, &mut entries)?;
            if !any && self.is_excluded(&canon_rel) {
                return Err(not_found());
            }
            Ok(CopyItem {
                source: rel.to_string(),
                is_dir: true,
                target: dest.to_string(),
                entries,
            })
        } else {
            let name = rel.rsplit('/').next().unwrap_or_default();
            let target = if dest_is_dir {
                join(dest, name)
            } else {
                dest.to_string()
            };
            Ok(CopyItem {
                source: rel.to_string(),
                is_dir: false,
                target: target.clone(),
                entries: vec![entry(&host, &target, EntryKind::File, &meta)],
            })
        }
    }

    /// Appends the included entries under `dir` (context path `ctx_rel`) with
    /// targets under `target`; returns whether anything was included.
    fn walk_dir(
        &self,
        dir: &Path,
        ctx_rel: &str,
        target: &str,
        excludes: &Dockerignore,
        out: &mut Vec<CopyEntry>,
    ) -> Result<bool, ContextError> {
        self.walk_inner(dir, ctx_rel, "", target, excludes, out)
    }

    fn walk_inner(
        &self,
        dir: &Path,
        ctx_rel: &str,
        item_rel: &str,
        target: &str,
        excludes: &Dockerignore,
        out: &mut Vec<CopyEntry>,
    ) -> Result<bool, ContextError> {
        let mut any = false;
        for (name, path) in sorted_children(dir)? {
            let c_rel = join_rel(ctx_rel, &name);
            let i_rel = join_rel(item_rel, &name);
            let c_target = join(target, &name);
            let meta = fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
            let excluded = self.is_excluded(&c_rel) || excludes.is_excluded(&i_rel);
            let ft = meta.file_type();
            if ft.is_dir() {
                let descend = !excluded
                    || self.ignore.may_reinclude_under(&c_rel)
                    || excludes.may_reinclude_under(&i_rel);
                if !descend {
                    continue;
                }
                let mut children = Vec::new();
                let inner =
                    self.walk_inner(&path, &c_rel, &i_rel, &c_target, excludes, &mut children)?;
                if !excluded || inner {
                    out.push(entry(&path, &c_target, EntryKind::Dir, &meta));
                    out.extend(children);
                    any = true;
                }
            } else if excluded {
                continue;
            } else if ft.is_symlink() {
                let link = fs::read_link(&path).map_err(|e| io_err(&path, e))?;
                out.push(entry(
                    &path,
                    &c_target,
                    EntryKind::Symlink(link.to_string_lossy().into()),
                    &meta,
                ));
                any = true;
            } else if ft.is_file() {
                out.push(entry(&path, &c_target, EntryKind::File, &meta));
                any = true;
            }
            // Sockets, FIFOs and devices are not part of a build context.
        }
        Ok(any)
    }

    /// Context paths matching the glob `rel` (lexical order, directories not
    /// entered once matched).
    fn glob(&self, inst: &str, src: &str, rel: &str) -> Result<Vec<String>, ContextError> {
        let comps: Vec<&str> = rel.split('/').collect();
        let first_wild = comps
            .iter()
            .position(|c| pattern::has_wildcards(c))
            .unwrap_or(0);
        let base_rel = comps[..first_wild].join("/");
        let pat = comps[first_wild..].join("/");
        pattern::path_match(&pat, "").map_err(|_| ContextError::BadPattern {
            instruction: inst.to_string(),
            pattern: src.to_string(),
        })?;
        let (base, base_canon) = match self.contained(inst, src, &base_rel) {
            Ok(b) => b,
            Err(ContextError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if !base.is_dir()
            || (self.is_excluded(&base_canon) && !self.ignore.may_reinclude_under(&base_canon))
        {
            return Ok(Vec::new());
        }
        let depth = pat.split('/').count();
        let mut found = Vec::new();
        self.glob_walk(&base, &base_canon, &base_rel, "", &pat, depth, &mut found)?;
        Ok(found)
    }

    #[allow(clippy::too_many_arguments)]
    fn glob_walk(
        &self,
        dir: &Path,
        ctx_rel: &str,
        written_rel: &str,
        rel: &str,
        pat: &str,
        depth: usize,
        found: &mut Vec<String>,
    ) -> Result<(), ContextError> {
        for (name, path) in sorted_children(dir)? {
            let r = join_rel(rel, &name);
            let c_rel = join_rel(ctx_rel, &name);
            let meta = fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
            let is_dir = meta.is_dir();
            let excluded = self.is_excluded(&c_rel);
            let reinclude = is_dir && self.ignore.may_reinclude_under(&c_rel);
            if pattern::path_match(pat, &r).unwrap_or(false) {
                if !excluded || reinclude {
                    found.push(join_rel(written_rel, &r));
                }
                continue;
            }
            if is_dir && r.split('/').count() < depth && (!excluded || reinclude) {
                self.glob_walk(&path, &c_rel, written_rel, &r, pat, depth, found)?;
            }
        }
        Ok(())
    }
}

fn sorted_children(dir: &Path) -> Result<Vec<(String, PathBuf)>, ContextError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

fn entry(host: &Path, target: &str, kind: EntryKind, meta: &fs::Metadata) -> CopyEntry {
    CopyEntry {
        host_path: host.to_path_buf(),
        target: target.to_string(),
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        kind,
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

/// The content hash of a plan's entries.
fn digest(items: &[CopyItem]) -> Result<String, ContextError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    for item in items {
        for e in &item.entries {
            let (kind, extra) = match &e.kind {
                EntryKind::File => {
                    let mut fh = Sha256::new();
                    let mut f =
                        fs::File::open(&e.host_path).map_err(|err| io_err(&e.host_path, err))?;
                    loop {
                        let n = f.read(&mut buf).map_err(|err| io_err(&e.host_path, err))?;
                        if n == 0 {
                            break;
                        }
                        fh.update(&buf[..n]);
                    }
                    ("f", hex::encode(fh.finalize()))
                }
                EntryKind::Dir => ("d", String::new()),
                EntryKind::Symlink(t) => ("l", t.clone()),
            };
            // NUL-separated so no path or link target can fake another entry.
            h.update(format!("{}\0{kind}\0{:o}\0{extra}\n", e.target, e.mode).as_bytes());
        }
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Where a COPY writes: absolute and clean, and whether it is a directory.
pub fn resolve_dest(dest: &str, workdir: &str) -> (String, bool) {
    let is_dir = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
    let abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        let wd = if workdir.is_empty() { "/" } else { workdir };
        format!("{wd}/{dest}")
    };
    let abs = if abs.starts_with('/') {
        abs
    } else {
        format!("/{abs}")
    };
    (clean(&abs), is_dir)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://")
        || s.starts_with("https://")
        || s.starts_with("git@")
        || s.contains("://")
}

/// The source as a context-relative path, or `None` when `..` climbs out.
fn normalize_source(src: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn lexically_within(path: &Path, root: &Path) -> bool {
    let mut parts: Vec<std::path::Component> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            c => parts.push(c),
        }
    }
    parts.iter().collect::<PathBuf>().starts_with(root)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A context with: a.txt, b.txt, .hidden, src/{main.rs, lib/mod.rs},
    /// docs/readme.md, tar.tar, exe (0755), link -> a.txt, dirlink -> src.
    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let w = |rel: &str, body: &str| {
            let f = p.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, body).unwrap();
        };
        w("a.txt", "a");
        w("b.txt", "b");
        w(".hidden", "h");
        w("src/main.rs", "fn main() {}");
        w("src/lib/mod.rs", "mod x;");
        w("docs/readme.md", "# docs");
        w("exe", "#!/bin/sh");
        fs::set_permissions(p.join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("a.txt", p.join("link")).unwrap();
        symlink("src", p.join("dirlink")).unwrap();
        d
    }

    fn ctx(d: &tempfile::TempDir, ignore: &str) -> BuildContext {
        BuildContext::new(d.path(), Dockerignore::parse(ignore).unwrap()).unwrap()
    }

    fn plan(c: &BuildContext, sources: &[&str], dest: &str) -> Result<CopyPlan, ContextError> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        c.resolve(&CopyRequest {
            instruction: "COPY",
            sources: &sources,
            other_sources: 0,
            dest,
            workdir: "/work",
            excludes: &[],
        })
    }

    fn targets(p: &CopyPlan) -> Vec<String> {
        p.items
            .iter()
            .flat_map(|i| i.entries.iter().map(|e| e.target.clone()))
            .collect()
    }

    #[test]
    fn destinations() {
        let cases = [
            ("/abs", "/", "/abs", false),
            ("/abs/", "/", "/abs", true),
            ("rel", "/work", "/work/rel", false),
            ("rel/", "/work", "/work/rel", true),
            (".", "/work", "/work", true),
            ("./", "/", "/", true),
            ("../up", "/work/dir", "/work/up", false),
            ("x", "", "/x", false),
        ];
        for (dest, wd, want, dir) in cases {
            assert_eq!(
                resolve_dest(dest, wd),
                (want.to_string(), dir),
                "{dest:?} in {wd:?}"
            );
        }
    }

    #[test]
    fn file_and_directory_semantics() {
        let d = fixture();
        let c = ctx(&d, "");
        // One file to a non-directory destination: that is the file's name.
        let p = plan(&c, &["a.txt"], "/dst/renamed").unwrap();
        assert_eq!(targets(&p), ["/dst/renamed"]);
        // To a directory: keeps its name; relative to WORKDIR.
        let p = plan(&c, &["a.txt"], "sub/").unwrap();
        assert_eq!(targets(&p), ["/work/sub/a.txt"]);
        // A directory copies its contents, with or without the slash.
        for dest in ["/app", "/app/"] {
            let p = plan(&c, &["src"], dest).unwrap();
            assert_eq!(
                targets(&p),
                ["/app", "/app/lib", "/app/lib/mod.rs", "/app/main.rs"],
                "{dest}"
            );
        }
        // Several sources need a directory destination.
        assert_eq!(
            plan(&c, &["a.txt", "b.txt"], "/file")
                .unwrap_err()
                .to_string(),
            "When using COPY with more than one source file, the destination must be a directory and end with a /"
        );
        let p = plan(&c, &["a.txt", "src", "/b.txt"], "/d/").unwrap();
        assert_eq!(
            targets(&p),
            [
                "/d/a.txt",
                "/d",
                "/d/lib",
                "/d/lib/mod.rs",
                "/d/main.rs",
                "/d/b.txt"
            ]
        );
        // A single file into an existing directory (the builder knows).
        let mut p = plan(&c, &["a.txt"], "/etc").unwrap();
        p.retarget_into_existing_dir();
        assert_eq!(targets(&p), ["/etc/a.txt"]);
    }

    #[test]
    fn dot_copies_the_whole_context() {
        let d = fixture();
        let c = ctx(&d, "docs\nsrc/lib\n");
        let p = plan(&c, &["."], "/app/").unwrap();
        assert_eq!(
            targets(&p),
            [
                "/app",
                "/app/.hidden",
                "/app/a.txt",
                "/app/b.txt",
                "/app/dirlink",
                "/app/exe",
                "/app/link",
                "/app/src",
                "/app/src/main.rs"
            ]
        );
        let kinds: Vec<&EntryKind> = p.items[0].entries.iter().map(|e| &e.kind).collect();
        assert_eq!(kinds[4], &EntryKind::Symlink("src".into()));
        assert_eq!(p.items[0].entries[5].mode, 0o755);
    }

    #[test]
    fn globs() {
        let d = fixture();
        let c = ctx(&d, "");
        let p = plan(&c, &["*.txt"], "/g/").unwrap();
        assert_eq!(targets(&p), ["/g/a.txt", "/g/b.txt"]);
        // Several matches make the destination a directory.
        let p = plan(&c, &["*.txt"], "/g").unwrap();
        assert!(p.dest_is_dir);
        assert_eq!(targets(&p), ["/g/a.txt", "/g/b.txt"]);
        // One match to a file name is a file name.
        let p = plan(&c, &["a.*"], "/one").unwrap();
        assert_eq!(targets(&p), ["/one"]);
        // Per component; `*` does not cross `/`, and matches dotfiles.
        let p = plan(&c, &["src/*/mod.rs"], "/m/").unwrap();
        assert_eq!(targets(&p), ["/m/mod.rs"]);
        let p = plan(&c, &["*hidden"], "/h/").unwrap();
        assert_eq!(targets(&p), ["/h/.hidden"]);
        let p = plan(&c, &["s?c"], "/s/").unwrap();
        assert!(p.items[0].is_dir);
        let p = plan(&c, &["[ab].txt"], "/c/").unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(
            plan(&c, &["*.nothing"], "/x/").unwrap_err().to_string(),
            "COPY failed: no files in the build context match \"*.nothing\""
        );
        assert!(matches!(
            plan(&c, &["[bad"], "/x/"),
            Err(ContextError::BadPattern { .. })
        ));
    }

    #[test]
    fn outside_the_context() {
        let d = fixture();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path().join("secret"), d.path().join("escape")).unwrap();
        symlink("../../../../../../../../etc/passwd", d.path().join("climb")).unwrap();
        symlink(outside.path(), d.path().join("outdir")).unwrap();
        symlink("/nonexistent/dangling", d.path().join("dangling")).unwrap();
        let c = ctx(&d, "");
        let e = plan(&c, &["../x"], "/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "COPY failed: forbidden path outside the build context: ../x"
        );
        assert!(matches!(
            plan(&c, &["a/../../x"], "/x"),
            Err(ContextError::OutsideContext { .. })
        ));
        for src in [
            "escape",
            "climb",
            "outdir",
            "outdir/secret",
            "dangling",
            "escap*",
        ] {
            let e = plan(&c, &[src], "/x").unwrap_err();
            assert!(
                matches!(e, ContextError::SymlinkOutside { .. }),
                "{src}: {e}"
            );
            assert!(
                e.to_string().contains("is outside the build context"),
                "{e}"
            );
        }
        // Absolute sources are relative to the context root.
        assert_eq!(targets(&plan(&c, &["/a.txt"], "/x").unwrap()), ["/x"]);
        // Symlinks inside the context are followed at the top level.
        let p = plan(&c, &["link"], "/l/").unwrap();
        assert_eq!(targets(&p), ["/l/link"]);
        assert_eq!(p.items[0].entries[0].host_path, c.root().join("a.txt"));
        let p = plan(&c, &["dirlink"], "/dl").unwrap();
        assert_eq!(
            targets(&p)[1..],
            ["/dl/lib", "/dl/lib/mod.rs", "/dl/main.rs"]
        );
        // Symlinks inside a copied directory are copied as links (no escape).
        let p = plan(&c, &["."], "/all/").unwrap();
        assert!(p.items[0].entries.iter().any(|e| e.target == "/all/escape"));
    }

    #[test]
    fn missing_and_excluded() {
        let d = fixture();
        let c = ctx(&d, "b.txt\ndocs\n*.md\n!docs/keep.md\nsrc\n!src/main.rs\n");
        fs::write(d.path().join("docs/keep.md"), "k").unwrap();
        let nf = |src: &str| {
            let e = plan(&c, &[src], "/x/").unwrap_err();
            assert!(matches!(e, ContextError::NotFound { .. }), "{src}: {e}");
            e.to_string()
        };
        assert_eq!(
            nf("nope"),
            "COPY failed: file not found in build context or excluded by .dockerignore: stat nope: file does not exist"
        );
        nf("b.txt");
        nf("docs/readme.md");
        nf("src/lib/mod.rs");
        // Exceptions inside an excluded directory are still there.
        assert_eq!(
            targets(&plan(&c, &["docs"], "/d").unwrap()),
            ["/d", "/d/keep.md"]
        );
        assert_eq!(
            targets(&plan(&c, &["src"], "/s").unwrap()),
            ["/s", "/s/main.rs"]
        );
        assert_eq!(targets(&plan(&c, &["docs/keep.md"], "/k").unwrap()), ["/k"]);
        // Excluded files do not match globs either.
        assert_eq!(targets(&plan(&c, &["*.txt"], "/t/").unwrap()), ["/t/a.txt"]);
        // The link's target is excluded: not found through the link either.
        symlink("b.txt", d.path().join("tob")).unwrap();
        nf("tob");
        let walked: Vec<String> = c.walk().unwrap().into_iter().map(|(p, _)| p).collect();
        assert!(walked.contains(&"docs/keep.md".to_string()));
        assert!(
            !walked
                .iter()
                .any(|p| p == "b.txt" || p == "docs/readme.md" || p == "src/lib")
        );
    }

    #[test]
    fn excludes_flag() {
        let d = fixture();
        let c = ctx(&d, "");
        let sources = vec!["src".to_string()];
        let p = c
            .resolve(&CopyRequest {
                instruction: "COPY",
                sources: &sources,
                other_sources: 0,
                dest: "/s",
                workdir: "/",
                excludes: &["lib".to_string()],
            })
            .unwrap();
        assert_eq!(targets(&p), ["/s", "/s/main.rs"]);
    }

    #[test]
    fn urls_are_not_context_paths() {
        let d = fixture();
        let c = ctx(&d, "");
        assert!(matches!(
            plan(&c, &["https://example.com/x.tar.gz"], "/x"),
            Err(ContextError::Remote { .. })
        ));
    }

    #[test]
    fn content_hash_ignores_mtime_and_sees_content_modes_links() {
        let d = fixture();
        let c = ctx(&d, "ignored.txt\n");
        let h = |c: &BuildContext| plan(c, &["."], "/app/").unwrap().digest;
        let base = h(&c);
        assert!(base.starts_with("sha256:") && base.len() == 71);
        // mtime only: unchanged.
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        assert_eq!(h(&c), base);
        // An ignored file: unchanged.
        fs::write(d.path().join("ignored.txt"), "x").unwrap();
        assert_eq!(h(&c), base);
        // Contents, modes, links and new files: changed.
        fs::write(d.path().join("a.txt"), "A").unwrap();
        let after_content = h(&c);
        assert_ne!(after_content, base);
        fs::set_permissions(d.path().join("b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        let after_mode = h(&c);
        assert_ne!(after_mode, after_content);
        fs::remove_file(d.path().join("link")).unwrap();
        symlink("b.txt", d.path().join("link")).unwrap();
        let after_link = h(&c);
        assert_ne!(after_link, after_mode);
        // The same bytes at a different destination differ too.
        assert_ne!(
            plan(&c, &["a.txt"], "/x").unwrap().digest,
            plan(&c, &["a.txt"], "/y").unwrap().digest
        );
        // The hash of one file does not depend on unrelated files.
        let one = plan(&c, &["a.txt"], "/x").unwrap().digest;
        fs::write(d.path().join("b.txt"), "changed").unwrap();
        assert_eq!(plan(&c, &["a.txt"], "/x").unwrap().digest, one);
    }

    #[test]
    fn open_reads_the_right_ignore_file() {
        let d = fixture();
        fs::write(d.path().join(".dockerignore"), "a.txt\n").unwrap();
        let c = BuildContext::open(d.path(), None).unwrap();
        assert!(c.is_excluded("a.txt"));
        fs::write(d.path().join("web.Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(d.path().join("web.Dockerfile.dockerignore"), "b.txt\n").unwrap();
        let c = BuildContext::open(d.path(), Some(&d.path().join("web.Dockerfile"))).unwrap();
        assert!(c.is_excluded("b.txt") && !c.is_excluded("a.txt"));
        fs::write(d.path().join(".dockerignore"), "!\n").unwrap();
        assert!(matches!(
            BuildContext::open(d.path(), None),
            Err(ContextError::Ignore { .. })
        ));
        assert!(matches!(
            BuildContext::new(&d.path().join("a.txt"), Dockerignore::default()),
            Err(ContextError::NotADirectory(_))
        ));
    }
}
