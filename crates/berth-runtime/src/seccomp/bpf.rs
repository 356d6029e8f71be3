//! A small classic-BPF assembler, just big enough for seccomp filters.
//!
//! Code is emitted as a list of items with symbolic [`Label`]s; [`Asm::assemble`]
//! lays it out and resolves the labels. Classic BPF only jumps forwards, and a
//! conditional jump reaches at most 255 instructions, so a conditional whose
//! target is further away gets a trampoline — an unconditional `ja` (32-bit
//! offset) placed right after it. Inserting trampolines moves later code, which
//! can push other jumps out of range, so layout repeats until nothing changes
//! (it only ever adds trampolines, so it terminates).
//!
//! The test build also carries an interpreter ([`run`]) so the code generator
//! can be checked exhaustively without the kernel.

use std::fmt;

/// One classic-BPF instruction, laid out exactly as the kernel's
/// `struct sock_filter` (`{ u16 code; u8 jt; u8 jf; u32 k; }`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockFilter {
    /// Opcode (class | size/op | mode/source).
    pub code: u16,
    /// Relative jump when the condition holds.
    pub jt: u8,
    /// Relative jump when it does not.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

// `install` hands a `*const SockFilter` to the kernel as a `struct sock_filter *`.
const _: () =
    assert!(std::mem::size_of::<SockFilter>() == std::mem::size_of::<libc::sock_filter>());
const _: () =
    assert!(std::mem::align_of::<SockFilter>() == std::mem::align_of::<libc::sock_filter>());

impl fmt::Debug for SockFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            LD_W_ABS => write!(f, "ld [{}]", self.k),
            ALU_AND_K => write!(f, "and #{:#x}", self.k),
            JA => write!(f, "ja +{}", self.k),
            RET_K => write!(f, "ret #{:#010x}", self.k),
            code => {
                let op = match code {
                    JEQ_K => "jeq",
                    JGT_K => "jgt",
                    JGE_K => "jge",
                    JSET_K => "jset",
                    _ => "?",
                };
                write!(f, "{op} #{:#x} +{} +{}", self.k, self.jt, self.jf)
            }
        }
    }
}

/// The longest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

// Opcodes used (see <linux/bpf_common.h>).
pub const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
pub const ALU_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
pub const JA: u16 = 0x05; // BPF_JMP | BPF_JA
pub const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
pub const JGT_K: u16 = 0x05 | 0x20; // BPF_JMP | BPF_JGT | BPF_K
pub const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
pub const JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
pub const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// A conditional jump's comparison (of the accumulator with a constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `A == k`
    Eq,
    /// `A > k` (unsigned)
    Gt,
    /// `A >= k` (unsigned)
    Ge,
}

impl Cmp {
    fn code(self) -> u16 {
        match self {
            Cmp::Eq => JEQ_K,
            Cmp::Gt => JGT_K,
            Cmp::Ge => JGE_K,
        }
    }
}

/// A position in the program, bound later with [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(usize);

#[derive(Debug)]
enum Item {
    Plain(SockFilter),
    Jump {
        cmp: Cmp,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Ja(Label),
    Bind(Label),
}

/// Why a program could not be laid out. These are bugs in the code generator
/// (or an over-long program), never the fault of a profile.
#[derive(Debug, PartialEq, Eq)]
pub enum AsmError {
    /// A label was used but never bound.
    Unbound(usize),
    /// A label was bound twice.
    Rebound(usize),
    /// A jump targets a label bound before it (BPF only jumps forwards).
    Backward(usize),
    /// The program is longer than the kernel accepts.
    TooLong(usize),
}

/// Builds a program from instructions and labels.
#[derive(Debug, Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    /// Binds `l` to the next instruction emitted.
    pub fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    /// `A = *(u32 *)(seccomp_data + off)`
    pub fn load(&mut self, off: u32) {
        self.plain(LD_W_ABS, off);
    }

    /// `A &= k`
    pub fn and(&mut self, k: u32) {
        self.plain(ALU_AND_K, k);
    }

    /// `return k`
    pub fn ret(&mut self, k: u32) {
        self.plain(RET_K, k);
    }

    /// `if (A <cmp> k) goto jt; else goto jf;`
    pub fn jump(&mut self, cmp: Cmp, k: u32, jt: Label, jf: Label) {
        self.items.push(Item::Jump { cmp, k, jt, jf });
    }

    /// `goto l;`
    pub fn ja(&mut self, l: Label) {
        self.items.push(Item::Ja(l));
    }

    fn plain(&mut self, code: u16, k: u32) {
        self.items.push(Item::Plain(SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }));
    }

    /// Lays the program out, inserting trampolines for far conditional jumps.
    pub fn assemble(self) -> Result<Vec<SockFilter>, AsmError> {
        // far[i] = (jt needs a trampoline, jf needs a trampoline) for item i.
        let mut far = vec![(false, false); self.items.len()];
        loop {
            let pos = self.positions(&far)?;
            let mut changed = false;
            let mut at = 0usize;
            for (i, item) in self.items.iter().enumerate() {
                match item {
                    Item::Bind(_) => {}
                    Item::Plain(_) | Item::Ja(_) => at += 1,
                    Item::Jump { jt, jf, .. } => {
                        let (ft, ff) = far[i];
                        let after = at + 1 + usize::from(ft) + usize::from(ff);
                        for (is_far, target, which) in [(ft, *jt, 0), (ff, *jf, 1)] {
                            let t = pos[target.0].ok_or(AsmError::Unbound(target.0))?;
                            if t < after {
                                return Err(AsmError::Backward(target.0));
                            }
                            if !is_far && t - (at + 1) > 255 {
                                if which == 0 {
                                    far[i].0 = true;
                                } else {
                                    far[i].1 = true;
                                }
                                changed = true;
                            }
                        }
                        at = after;
                    }
                }
            }
            if !changed {
                return self.emit(&far, &pos);
            }
        }
    }

    /// Position of every label given the current trampoline choices.
    fn positions(&self, far: &[(bool, bool)]) -> Result<Vec<Option<usize>>, AsmError> {
        let mut pos = vec![None; self.labels];
        let mut at = 0usize;
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Bind(l) => {
                    if pos[l.0].is_some() {
                        return Err(AsmError::Rebound(l.0));
                    }
                    pos[l.0] = Some(at);
                }
                Item::Plain(_) | Item::Ja(_) => at += 1,
                Item::Jump { .. } => at += 1 + usize::from(far[i].0) + usize::from(far[i].1),
            }
        }
        if at > MAX_INSNS {
            return Err(AsmError::TooLong(at));
        }
        Ok(pos)
    }

    fn emit(
        &self,
        far: &[(bool, bool)],
        pos: &[Option<usize>],
    ) -> Result<Vec<SockFilter>, AsmError> {
        let target = |l: Label| pos[l.0].ok_or(AsmError::Unbound(l.0));
        let mut out: Vec<SockFilter> = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Bind(_) => {}
                Item::Plain(insn) => out.push(*insn),
                Item::Ja(l) => {
                    let at = out.len();
                    let t = target(*l)?;
                    if t <= at {
                        return Err(AsmError::Backward(l.0));
                    }
                    out.push(ja(t - at - 1));
                }
                Item::Jump { cmp, k, jt, jf } => {
                    let at = out.len();
                    let (ft, ff) = far[i];
                    // Trampolines sit right after the jump: first jt's, then jf's.
                    let t_tramp = at + 1;
                    let f_tramp = at + 1 + usize::from(ft);
                    let (t, f) = (target(*jt)?, target(*jf)?);
                    let jt_off = if ft { t_tramp - at - 1 } else { t - at - 1 };
                    let jf_off = if ff { f_tramp - at - 1 } else { f - at - 1 };
                    out.push(SockFilter {
                        code: cmp.code(),
                        jt: u8::try_from(jt_off).expect("layout keeps near jumps near"),
                        jf: u8::try_from(jf_off).expect("layout keeps near jumps near"),
                        k: *k,
                    });
                    if ft {
                        out.push(ja(t - t_tramp - 1));
                    }
                    if ff {
                        out.push(ja(f - f_tramp - 1));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn ja(off: usize) -> SockFilter {
    SockFilter {
        code: JA,
        jt: 0,
        jf: 0,
        k: u32::try_from(off).expect("programs are at most 4096 instructions"),
    }
}

/// The kernel's `struct seccomp_data`, for the interpreter.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

#[cfg(test)]
impl SeccompData {
    fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        b[8..16].copy_from_slice(&self.instruction_pointer.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

/// Runs `prog` over `data` the way the kernel would; panics on anything the
/// kernel's checker would have refused (bad opcode, out-of-range jump or load,
/// falling off the end).
#[cfg(test)]
pub fn run(prog: &[SockFilter], data: &SeccompData) -> u32 {
    let bytes = data.bytes();
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = prog
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the end at {pc}"));
        pc += 1;
        let cond = |c: bool| if c { insn.jt } else { insn.jf } as usize;
        match insn.code {
            LD_W_ABS => {
                let off = insn.k as usize;
                assert!(
                    off.is_multiple_of(4) && off + 4 <= 64,
                    "bad load offset {off}"
                );
                a = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap());
            }
            ALU_AND_K => a &= insn.k,
            JA => pc += insn.k as usize,
            JEQ_K => pc += cond(a == insn.k),
            JGT_K => pc += cond(a > insn.k),
            JGE_K => pc += cond(a >= insn.k),
            JSET_K => pc += cond(a & insn.k != 0),
            RET_K => return insn.k,
            c => panic!("unknown opcode {c:#x}"),
        }
        assert!(pc < prog.len(), "jump past the end");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_jumps_need_no_trampolines() {
        let mut asm = Asm::new();
        let (yes, no) = (asm.label(), asm.label());
        asm.load(0);
        asm.jump(Cmp::Eq, 7, yes, no);
        asm.bind(no);
        asm.ret(1);
        asm.bind(yes);
        asm.ret(2);
        let p = asm.assemble().unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!((p[1].jt, p[1].jf), (1, 0));
        let d = |nr| SeccompData {
            nr,
            ..Default::default()
        };
        assert_eq!(run(&p, &d(7)), 2);
        assert_eq!(run(&p, &d(8)), 1);
    }

    #[test]
    fn far_jumps_get_trampolines_and_still_land() {
        // Several jumps over a long body, some of them nested, so inserting
        // one trampoline pushes others out of range.
        for body in [250usize, 254, 255, 256, 300, 1000] {
            let mut asm = Asm::new();
            let labels: Vec<Label> = (0..4).map(|_| asm.label()).collect();
            let skip = asm.label();
            asm.load(0);
            for (i, l) in labels.iter().enumerate() {
                let next = asm.label();
                asm.jump(Cmp::Eq, i as u32, *l, next);
                asm.bind(next);
            }
            asm.jump(Cmp::Gt, 100, skip, labels[3]);
            for _ in 0..body {
                asm.and(0xffff_ffff);
            }
            asm.ret(99);
            for (i, l) in labels.iter().enumerate() {
                asm.bind(*l);
                asm.ret(10 + i as u32);
            }
            asm.bind(skip);
            asm.ret(50);
            let p = asm.assemble().unwrap();
            for nr in 0..4 {
                let d = SeccompData {
                    nr,
                    ..Default::default()
                };
                assert_eq!(run(&p, &d), 10 + nr, "body {body}, nr {nr}");
            }
            let d = SeccompData {
                nr: 101,
                ..Default::default()
            };
            assert_eq!(run(&p, &d), 50);
            let d = SeccompData {
                nr: 5,
                ..Default::default()
            };
            assert_eq!(run(&p, &d), 13);
            for insn in &p {
                if insn.code != JA && insn.code & 0x07 == 0x05 {
                    // every conditional offset fits (u8 already guarantees) and lands inside
                    assert!(insn.jt as usize <= 255 && insn.jf as usize <= 255);
                }
            }
        }
    }

    #[test]
    fn layout_errors_are_reported() {
        let mut asm = Asm::new();
        let l = asm.label();
        asm.ja(l);
        assert_eq!(asm.assemble().unwrap_err(), AsmError::Unbound(0));

        let mut asm = Asm::new();
        let l = asm.label();
        asm.bind(l);
        asm.ret(0);
        asm.ja(l);
        assert_eq!(asm.assemble().unwrap_err(), AsmError::Backward(0));

        let mut asm = Asm::new();
        for _ in 0..=MAX_INSNS {
            asm.ret(0);
        }
        assert_eq!(
            asm.assemble().unwrap_err(),
            AsmError::TooLong(MAX_INSNS + 1)
        );
    }
}
