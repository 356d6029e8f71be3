//! OCI seccomp profile → classic BPF, for one native architecture.
//!
//! The program has four parts, in this order (BPF only jumps forwards):
//!
//! 1. **Arch check.** `seccomp_data.arch` must be the native `AUDIT_ARCH_*`;
//!    on x86_64 the syscall number must also lack the x32 bit (x32 calls arrive
//!    with the x86_64 arch value). `nr == -1` (a tracer skipping a call) is let
//!    through to the dispatch, like libseccomp does. Anything else is killed
//!    with `SECCOMP_RET_KILL_PROCESS`.
//! 2. **Dispatch.** Syscall numbers are partitioned into intervals that share
//!    an outcome (runs of allowed calls, gaps that take the default action, one
//!    interval per call with argument rules) and found by a balanced tree of
//!    `jge` tests: about log₂(intervals) ≈ 7 comparisons for Docker's profile.
//! 3. **Per-syscall blocks** for calls with argument rules: the rules' argument
//!    tests in profile order, first full match wins, then the fallback (the
//!    call's unconditional rule, else the default action).
//! 4. **Shared returns**, one `ret` per distinct action value.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};

use super::arch::Target;
use super::bpf::{Asm, AsmError, Cmp, Label};
use super::{Program, SeccompError};

const RET_KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_TRAP: u32 = libc::SECCOMP_RET_TRAP;
const RET_ERRNO: u32 = libc::SECCOMP_RET_ERRNO;
const RET_TRACE: u32 = libc::SECCOMP_RET_TRACE;
const RET_LOG: u32 = libc::SECCOMP_RET_LOG;
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

/// What a foreign-ABI syscall gets.
pub(crate) const RET_BAD_ARCH: u32 = RET_KILL_PROCESS;
/// What a syscall newer than anything the profile names gets (see `compile_for`).
pub(crate) const RET_ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

/// Largest errno the kernel will return (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// `offsetof(struct seccomp_data, …)`
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// The kernel return value for an OCI action.
fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    at: &str,
) -> Result<u32, SeccompError> {
    use LinuxSeccompAction::*;
    Ok(match action {
        ScmpActAllow => RET_ALLOW,
        ScmpActLog => RET_LOG,
        ScmpActKill | ScmpActKillThread => RET_KILL_THREAD,
        ScmpActKillProcess => RET_KILL_PROCESS,
        ScmpActTrap => RET_TRAP,
        ScmpActErrno => {
            let errno = errno_ret.unwrap_or(libc::EPERM as u32);
            if errno > MAX_ERRNO {
                return Err(SeccompError::invalid(
                    at,
                    format!("errno {errno} is out of range (at most {MAX_ERRNO})"),
                ));
            }
            RET_ERRNO | errno
        }
        ScmpActTrace => {
            let msg = errno_ret.unwrap_or(libc::EPERM as u32);
            if msg > 0xffff {
                return Err(SeccompError::invalid(
                    at,
                    format!("trace value {msg} does not fit in 16 bits"),
                ));
            }
            RET_TRACE | msg
        }
        ScmpActNotify => {
            return Err(SeccompError::invalid(
                at,
                "SCMP_ACT_NOTIFY is not supported (berth has no seccomp agent)",
            ));
        }
    })
}

/// Actions that let the call run (runc's "allow-like" set): no ENOSYS stub
/// is added under them.
fn is_allow_like(ret: u32) -> bool {
    let action = ret & libc::SECCOMP_RET_ACTION_FULL;
    action == RET_ALLOW || action == RET_LOG || action == RET_TRACE
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CondRule {
    conds: Vec<LinuxSeccompArg>,
    ret: u32,
}

#[derive(Debug, Default)]
struct Entry {
    conditional: Vec<CondRule>,
    /// (value, index of the rule that set it)
    unconditional: Option<(u32, usize)>,
}

/// The code for one syscall with argument rules (deduplicated: several calls
/// with the same rules share one block).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    rules: Vec<CondRule>,
    fallback: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ret(u32),
    Block(usize),
}

/// A dispatch tree over intervals `[start, next start)`.
enum Node {
    Leaf(Outcome),
    Split {
        at: u32,
        below: Box<Node>,
        from: Box<Node>,
    },
}

fn tree(iv: &[(u32, Outcome)]) -> Node {
    if iv.len() == 1 {
        return Node::Leaf(iv[0].1);
    }
    let mid = iv.len() / 2;
    Node::Split {
        at: iv[mid].0,
        below: Box::new(tree(&iv[..mid])),
        from: Box::new(tree(&iv[mid..])),
    }
}

/// Appends `[start, …) → o`, merging with the previous interval when equal.
fn push_interval(iv: &mut Vec<(u32, Outcome)>, start: u32, o: Outcome) {
    if let Some(last) = iv.last_mut() {
        if last.0 == start {
            last.1 = o;
            if iv.len() >= 2 && iv[iv.len() - 2].1 == o {
                iv.pop();
            }
            return;
        }
        if last.1 == o {
            return;
        }
    }
    iv.push((start, o));
}

struct Gen<'a> {
    asm: Asm,
    rets: Vec<(u32, Label)>,
    blocks: &'a [Block],
    block_labels: Vec<Label>,
}

impl Gen<'_> {
    fn ret_label(&mut self, value: u32) -> Label {
        if let Some((_, l)) = self.rets.iter().find(|(v, _)| *v == value) {
            return *l;
        }
        let l = self.asm.label();
        self.rets.push((value, l));
        l
    }

    fn target(&mut self, o: Outcome) -> Label {
        match o {
            Outcome::Ret(v) => self.ret_label(v),
            Outcome::Block(i) => self.block_labels[i],
        }
    }

    fn node_label(&mut self, n: &Node) -> Label {
        match n {
            Node::Leaf(o) => self.target(*o),
            Node::Split { .. } => self.asm.label(),
        }
    }

    /// Emits a split node at `me` and its split children after it (the
    /// `below` side first, so its `jf` is a fall-through).
    fn emit_tree(&mut self, n: &Node, me: Label) {
        let Node::Split { at, below, from } = n else {
            return;
        };
        self.asm.bind(me);
        let (b, f) = (self.node_label(below), self.node_label(from));
        self.asm.jump(Cmp::Ge, *at, f, b);
        self.emit_tree(below, b);
        self.emit_tree(from, f);
    }

    fn emit_block(&mut self, i: usize) {
        let label = self.block_labels[i];
        self.asm.bind(label);
        let block = &self.blocks[i];
        for rule in &block.rules {
            let next = self.asm.label();
            for c in &rule.conds {
                emit_cond(&mut self.asm, c, next);
            }
            self.asm.ret(rule.ret);
            self.asm.bind(next);
        }
        self.asm.ret(block.fallback);
    }
}

/// Offsets of the high and low 32-bit halves of argument `index`.
fn arg_halves(index: usize) -> (u32, u32) {
    let base = OFF_ARGS + 8 * index as u32;
    if cfg!(target_endian = "little") {
        (base + 4, base)
    } else {
        (base, base + 4)
    }
}

fn split(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// Emits a test of one 64-bit argument condition: falls through when it
/// holds, jumps to `fail` when not. Comparisons are unsigned, like
/// libseccomp's: the high halves decide unless equal, then the low halves.
fn emit_cond(asm: &mut Asm, c: &LinuxSeccompArg, fail: Label) {
    use LinuxSeccompOperator::*;
    let (hi, lo) = arg_halves(c.index());
    let (vhi, vlo) = split(c.value());
    let pass = asm.label();
    let (l0, l1) = (asm.label(), asm.label());
    match c.op() {
        ScmpCmpEq => {
            asm.load(hi);
            asm.jump(Cmp::Eq, vhi, l1, fail);
            asm.bind(l1);
            asm.load(lo);
            asm.jump(Cmp::Eq, vlo, pass, fail);
        }
        ScmpCmpNe => {
            asm.load(hi);
            asm.jump(Cmp::Eq, vhi, l1, pass);
            asm.bind(l1);
            asm.load(lo);
            asm.jump(Cmp::Eq, vlo, fail, pass);
        }
        ScmpCmpMaskedEq => {
            // OCI/libseccomp: `value` is the mask, `valueTwo` the datum.
            let (mhi, mlo) = (vhi, vlo);
            let (dhi, dlo) = split(c.value_two().unwrap_or(0));
            asm.load(hi);
            if mhi != u32::MAX {
                asm.and(mhi);
            }
            asm.jump(Cmp::Eq, dhi, l1, fail);
            asm.bind(l1);
            asm.load(lo);
            if mlo != u32::MAX {
                asm.and(mlo);
            }
            asm.jump(Cmp::Eq, dlo, pass, fail);
        }
        ScmpCmpGt | ScmpCmpGe => {
            asm.load(hi);
            asm.jump(Cmp::Gt, vhi, pass, l0);
            asm.bind(l0);
            asm.jump(Cmp::Eq, vhi, l1, fail);
            asm.bind(l1);
            asm.load(lo);
            let cmp = if c.op() == ScmpCmpGt {
                Cmp::Gt
            } else {
                Cmp::Ge
            };
            asm.jump(cmp, vlo, pass, fail);
        }
        ScmpCmpLt | ScmpCmpLe => {
            asm.load(hi);
            asm.jump(Cmp::Ge, vhi, l0, pass);
            asm.bind(l0);
            asm.jump(Cmp::Eq, vhi, l1, fail);
            asm.bind(l1);
            asm.load(lo);
            // lt: fail when lo >= v; le: fail when lo > v
            let cmp = if c.op() == ScmpCmpLt {
                Cmp::Ge
            } else {
                Cmp::Gt
            };
            asm.jump(cmp, vlo, fail, pass);
        }
    }
    // (l0 stays unbound for the equality operators; unused labels are fine.)
    asm.bind(pass);
}

/// Compiles `s` for `t`. See the module docs of [`super`] for the semantics.
pub(crate) fn compile_for(s: &LinuxSeccomp, t: &Target) -> Result<Program, SeccompError> {
    let mut notes = Vec::new();
    let default = action_value(s.default_action(), s.default_errno_ret(), "defaultAction")?;

    for (i, a) in s.architectures().iter().flatten().enumerate() {
        if *a != t.oci && *a != oci_spec::runtime::Arch::ScmpArchNative {
            notes.push(format!(
                "architectures[{i}]: {a} is not filtered (berth compiles for the native {} ABI \
                 only); its syscalls are killed",
                t.name
            ));
        }
    }

    let mut flags: libc::c_ulong = 0;
    for f in s.flags().iter().flatten() {
        use oci_spec::runtime::LinuxSeccompFilterFlag::*;
        match f {
            SeccompFilterFlagTsync => flags |= libc::SECCOMP_FILTER_FLAG_TSYNC,
            SeccompFilterFlagLog => flags |= libc::SECCOMP_FILTER_FLAG_LOG,
            SeccompFilterFlagSpecAllow => flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            SeccompFilterFlagWaitKillableRecv => notes.push(
                "flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored (it only applies to \
                 SCMP_ACT_NOTIFY, which berth does not support)"
                    .to_string(),
            ),
        }
    }

    // Group the rules by syscall number.
    let mut per: BTreeMap<u32, Entry> = BTreeMap::new();
    let mut highest: Option<u32> = None;
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let at = format!("syscalls[{i}]");
        let ret = action_value(rule.action(), rule.errno_ret(), &format!("{at}.action"))?;
        let args: Vec<LinuxSeccompArg> = rule.args().clone().unwrap_or_default();
        for (j, a) in args.iter().enumerate() {
            if a.index() > 5 {
                return Err(SeccompError::invalid(
                    format!("{at}.args[{j}].index"),
                    format!("argument index {} is out of range (0-5)", a.index()),
                ));
            }
        }
        if rule.names().is_empty() {
            notes.push(format!("{at}: names no syscall; ignored"));
        }
        for (j, name) in rule.names().iter().enumerate() {
            let Some(nr) = t.nr(name) else {
                notes.push(format!(
                    "{at}.names[{j}]: {name:?} is not a syscall on {}; skipped",
                    t.name
                ));
                continue;
            };
            highest = highest.max(Some(nr));
            let e = per.entry(nr).or_default();
            if args.is_empty() {
                match e.unconditional {
                    None => e.unconditional = Some((ret, i)),
                    Some((v, first)) if v != ret => {
                        return Err(SeccompError::Conflict {
                            syscall: name.clone(),
                            first: format!("syscalls[{first}]"),
                            second: at,
                        });
                    }
                    Some(_) => {}
                }
            } else {
                let r = CondRule {
                    conds: args.clone(),
                    ret,
                };
                if !e.conditional.contains(&r) {
                    e.conditional.push(r);
                }
            }
        }
    }

    // Outcome of every syscall the profile names.
    let mut blocks: Vec<Block> = Vec::new();
    let mut iv: Vec<(u32, Outcome)> = vec![(0, Outcome::Ret(default))];
    for (nr, e) in per {
        let fallback = e.unconditional.map_or(default, |u| u.0);
        let mut rules = e.conditional;
        // Trailing argument rules that end where the fallback would: dead.
        while rules.last().is_some_and(|r| r.ret == fallback) {
            rules.pop();
        }
        let outcome = if rules.is_empty() {
            Outcome::Ret(fallback)
        } else {
            let b = Block { rules, fallback };
            let i = blocks.iter().position(|x| *x == b).unwrap_or_else(|| {
                blocks.push(b);
                blocks.len() - 1
            });
            Outcome::Block(i)
        };
        push_interval(&mut iv, nr, outcome);
        if let Some(next) = nr.checked_add(1) {
            push_interval(&mut iv, next, Outcome::Ret(default));
        }
    }
    // runc's ENOSYS stub: under a deny-by-default profile, syscalls numbered
    // above everything the profile names are presumably newer than the
    // profile, so they get ENOSYS (which libc treats as "fall back to the old
    // call") instead of the default errno.
    if !is_allow_like(default)
        && default != RET_ENOSYS
        && let Some(next) = highest.and_then(|h| h.checked_add(1))
    {
        push_interval(&mut iv, next, Outcome::Ret(RET_ENOSYS));
    }

    let root = tree(&iv);
    let mut g = Gen {
        asm: Asm::new(),
        rets: Vec::new(),
        blocks: &blocks,
        block_labels: Vec::new(),
    };
    g.block_labels = (0..blocks.len()).map(|_| g.asm.label()).collect();

    // 1. arch check
    let bad_arch = g.ret_label(RET_BAD_ARCH);
    let arch_ok = g.asm.label();
    g.asm.load(OFF_ARCH);
    g.asm.jump(Cmp::Eq, t.audit_arch, arch_ok, bad_arch);
    g.asm.bind(arch_ok);
    g.asm.load(OFF_NR);
    // 2. dispatch
    let root_label = g.node_label(&root);
    if let Some(bit) = t.x32_bit {
        let high = g.asm.label();
        g.asm.jump(Cmp::Ge, bit, high, root_label);
        g.asm.bind(high);
        g.asm.jump(Cmp::Eq, u32::MAX, root_label, bad_arch);
    } else if matches!(root, Node::Leaf(_)) {
        g.asm.ja(root_label);
    }
    g.emit_tree(&root, root_label);
    // 3. blocks
    for i in 0..blocks.len() {
        g.emit_block(i);
    }
    // 4. returns
    for (v, l) in std::mem::take(&mut g.rets) {
        g.asm.bind(l);
        g.asm.ret(v);
    }

    let filter = g.asm.assemble().map_err(|e| match e {
        AsmError::TooLong(n) => SeccompError::TooLarge(n),
        other => SeccompError::Internal(format!("BPF layout failed: {other:?}")),
    })?;
    Ok(Program {
        filter,
        flags,
        notes,
    })
}
