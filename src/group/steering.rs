//! Which reactor of a group gets a new connection: the kernel's hash of the 4-tuple, or a
//! socket-reuseport BPF program that prefers a reactor that is awake.
//!
//! With one `SO_REUSEPORT` listener per reactor, the kernel picks the listener for each SYN by
//! a hash of the 4-tuple (socket(7)): even, and blind to load. At partial load that makes
//! every reactor sleep and wake for its share — a burst one reactor would take in one wake-up
//! costs N reactors a wake-up each, and each wakes to a cache its siblings evicted
//! (BENCHMARKS.md, "Why churn misses"). [`Steering::PreferAwake`] attaches a program
//! (`SO_ATTACH_REUSEPORT_EBPF`, socket(7); `bpf_sk_select_reuseport`, bpf-helpers(7)) that picks,
//! for each new connection, among the reactors within [`SLACK`] connections of the least
//! loaded one:
//!
//! 1. an awake reactor (one not blocked in `epoll_wait`), the least loaded of them — at
//!    saturation every reactor is awake and they take turns;
//! 2. else the reactor picked last (its cache is the warm one) — at low load one reactor
//!    serves while the others sleep;
//! 3. else the least loaded one.
//!
//! Each reactor publishes "awake" in a BPF array mapped into the process (two stores per
//! blocking `epoll_wait`, no syscall); the program counts its picks in the same array. So
//! the picks per reactor never drift more than [`SLACK`] apart (plus the SYNs that race on
//! other CPUs), and a group still spreads evenly over many connections. A reactor leaving
//! the group is taken out of the choice first; a pick the kernel cannot honour (a listener
//! closed meanwhile) falls back to the hash.
//!
//! Loading needs `CAP_BPF` (or `CAP_SYS_ADMIN`) where unprivileged BPF is off, the default
//! on most distributions, and Linux 5.5 for the mapped array: a kernel that refuses leaves
//! the group on the hash ([`Group::steering`](crate::Group::steering) says which is in
//! effect).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::{self, bpf};

/// How a [`Group`](crate::Group) spreads new connections over its reactors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Steering {
    /// The kernel's hash of the 4-tuple: even and independent of load.
    Hash,
    /// A BPF program prefers a reactor that is awake, then the one picked last, within
    /// [`SLACK`] connections of the least loaded reactor (the module docs of `group` say
    /// more). Falls back to [`Hash`](Steering::Hash) where the kernel refuses the program.
    #[default]
    PreferAwake,
}

/// How many connections more than the least loaded reactor a reactor may be given because
/// it is awake or was picked last: the bound on the imbalance [`Steering::PreferAwake`]
/// trades for fewer wake-ups.
pub const SLACK: u64 = 64;

/// The most reactors [`Steering::PreferAwake`] steers (the program is unrolled per
/// reactor); a larger group uses the hash.
pub(crate) const MAX_REACTORS: usize = 64;

/// Per reactor in the shared array: `awake: u32`, `present: u32`, `picks: u64`.
const ENTRY: usize = 16;
const AWAKE: usize = 0;
const PRESENT: usize = 4;
const PICKS: usize = 8;

/// The program and maps steering one group; dropped with the group's last reactor.
pub(crate) struct Steerer {
    state: MappedArray,
    // Kept so the maps and program live as long as the group (the attached program holds
    // them too; these make the lifetime ours rather than the kernel's).
    _sockets: OwnedFd,
    _prog: OwnedFd,
}

impl std::fmt::Debug for Steerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steerer")
            .field("reactors", &self.state.reactors)
            .finish()
    }
}

impl Steerer {
    /// Loads the program for `listeners` (one per reactor, in index order, all of one
    /// `SO_REUSEPORT` group) and attaches it to their group. No reactor is present yet: until
    /// one [`joins`](Steerer::join), the hash decides.
    pub(crate) fn install(listeners: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<Arc<Steerer>> {
        let n = listeners.len();
        if !(2..=MAX_REACTORS).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("steering takes 2 to {MAX_REACTORS} reactors, not {n}"),
            ));
        }
        let value_size = (n * ENTRY + 8) as u32;
        let state_fd = sys::bpf_map_create(bpf::MAP_TYPE_ARRAY, 4, value_size, 1, bpf::F_MMAPABLE)?;
        let len = (value_size as usize).div_ceil(sys::page_size()) * sys::page_size();
        let ptr = sys::mmap_shared(state_fd.as_fd(), len)?;
        let state = MappedArray {
            _fd: state_fd,
            ptr,
            len,
            reactors: n,
        };
        let sockets = sys::bpf_map_create(bpf::MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, n as u32, 0)?;
        for (i, l) in listeners.iter().enumerate() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(l) as u64;
            sys::bpf_map_update(
                sockets.as_fd(),
                &(i as u32).to_ne_bytes(),
                &fd.to_ne_bytes(),
            )?;
        }
        let insns = program(
            n,
            std::os::fd::AsRawFd::as_raw_fd(&state._fd),
            std::os::fd::AsRawFd::as_raw_fd(&sockets),
        );
        let prog = sys::bpf_prog_load(
            bpf::PROG_TYPE_SK_REUSEPORT,
            bpf::SK_REUSEPORT_SELECT,
            &insns,
            "finwait_steer",
        )?;
        sys::attach_reuseport_prog(listeners[0], prog.as_fd())?;
        Ok(Arc::new(Steerer {
            state,
            _sockets: sockets,
            _prog: prog,
        }))
    }

    /// Reactor `index` takes part in the choice from now on (awake: it has not polled yet).
    pub(crate) fn join(self: &Arc<Self>, index: usize) -> SteeringSlot {
        let slot = SteeringSlot {
            steerer: Arc::clone(self),
            index,
        };
        slot.word(AWAKE).store(1, Ordering::Relaxed);
        slot.word(PRESENT).store(1, Ordering::Relaxed);
        slot
    }
}

/// The array shared with the program, mapped into the process.
struct MappedArray {
    _fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
    reactors: usize,
}

// SAFETY: the mapping is only accessed through atomics (here) and by the kernel's program.
unsafe impl Send for MappedArray {}
// SAFETY: as above.
unsafe impl Sync for MappedArray {}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `install`; no slot outlives the `Steerer` holding it.
        unsafe { sys::munmap(self.ptr, self.len) }
    }
}

/// One reactor's place in its group's steering: it says when it sleeps and wakes, and
/// leaves the choice when its listener stops accepting (or it is dropped).
#[derive(Debug)]
pub(crate) struct SteeringSlot {
    steerer: Arc<Steerer>,
    index: usize,
}

impl SteeringSlot {
    fn word(&self, field: usize) -> &AtomicU32 {
        debug_assert!(self.index < self.steerer.state.reactors);
        let offset = self.index * ENTRY + field;
        // SAFETY: in bounds of the mapping (index < reactors, the array holds `ENTRY` bytes
        // per reactor), 4-aligned (page-aligned mapping, 4-aligned offsets), and shared only
        // through atomic accesses and the kernel's aligned loads.
        unsafe { &*(self.steerer.state.ptr.as_ptr().add(offset) as *const AtomicU32) }
    }

    /// Called around a blocking `epoll_wait`: `false` before, `true` after.
    #[inline]
    pub(crate) fn set_awake(&self, awake: bool) {
        self.word(AWAKE).store(u32::from(awake), Ordering::Relaxed);
    }

    /// This reactor takes no new connections any more (its listener closes or is handed
    /// over).
    pub(crate) fn leave(&self) {
        self.word(PRESENT).store(0, Ordering::Relaxed);
        self.word(AWAKE).store(0, Ordering::Relaxed);
    }
}

impl Drop for SteeringSlot {
    fn drop(&mut self) {
        self.leave();
    }
}

/// One `struct bpf_insn` (linux/bpf.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u8,
    pub(crate) dst: u8,
    pub(crate) src: u8,
    pub(crate) off: i16,
    pub(crate) imm: i32,
}

impl Insn {
    /// The kernel's encoding: `dst_reg:4, src_reg:4` share one byte in bit-field order.
    fn encode(self) -> u64 {
        #[cfg(target_endian = "little")]
        let regs = (self.dst & 0xf) | (self.src << 4);
        #[cfg(target_endian = "big")]
        let regs = (self.dst << 4) | (self.src & 0xf);
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        u64::from_ne_bytes([
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ])
    }
}

/// Opcodes (linux/bpf_common.h, linux/bpf.h).
pub(crate) mod op {
    pub(crate) const MOV64_IMM: u8 = 0xb7;
    pub(crate) const MOV64_REG: u8 = 0xbf;
    pub(crate) const ADD64_IMM: u8 = 0x07;
    pub(crate) const LDX_W: u8 = 0x61;
    pub(crate) const LDX_DW: u8 = 0x79;
    pub(crate) const ST_W: u8 = 0x62;
    pub(crate) const STX_W: u8 = 0x63;
    /// `BPF_STX | BPF_ATOMIC | BPF_DW` with `imm = BPF_ADD` (the older `BPF_XADD`).
    pub(crate) const XADD_DW: u8 = 0xdb;
    pub(crate) const LD_IMM64: u8 = 0x18;
    pub(crate) const JA: u8 = 0x05;
    pub(crate) const JEQ_IMM: u8 = 0x15;
    pub(crate) const JNE_IMM: u8 = 0x55;
    /// Unsigned `>=` between registers.
    pub(crate) const JGE_REG: u8 = 0x3d;
    pub(crate) const CALL: u8 = 0x85;
    pub(crate) const EXIT: u8 = 0x95;
    /// `src_reg` of an `LD_IMM64` whose `imm` is a map fd.
    pub(crate) const PSEUDO_MAP_FD: u8 = 1;
    pub(crate) const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
    pub(crate) const HELPER_SK_SELECT_REUSEPORT: i32 = 82;
    /// `SK_PASS`: go on with the connection (the kernel falls back to the hash when the
    /// program selected nothing).
    pub(crate) const SK_PASS: i32 = 1;
}

/// A label in [`Asm`].
#[derive(Debug, Clone, Copy)]
struct Label(usize);

/// A minimal assembler: instructions, jumps to labels resolved at the end.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }
    fn i(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            dst,
            src,
            off,
            imm,
        });
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.i(code, dst, src, 0, imm);
    }
    fn load_map(&mut self, dst: u8, fd: i32) {
        self.i(op::LD_IMM64, dst, op::PSEUDO_MAP_FD, 0, fd);
        self.i(0, 0, 0, 0, 0);
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, Label(l)) in &self.jumps {
            let target = self.labels[l].expect("every label is bound");
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}

/// The steering program for `n` reactors, as described in the module docs: `state` is the
/// mapped array's fd, `sockets` the `REUSEPORT_SOCKARRAY` of the listeners.
///
/// Registers: r6 the context, r7 the array value, r8 the bound (least picks + [`SLACK`]),
/// r9 the reactor chosen (-1: none yet), r4 the picks of the best candidate.
pub(crate) fn program(n: usize, state: i32, sockets: i32) -> Vec<u64> {
    program_insns(n, state, sockets)
        .into_iter()
        .map(Insn::encode)
        .collect()
}

pub(crate) fn program_insns(n: usize, state: i32, sockets: i32) -> Vec<Insn> {
    use op::*;
    let at = |i: usize, field: usize| (i * ENTRY + field) as i16;
    let sticky = (n * ENTRY) as i16;
    let mut a = Asm::default();
    let pass = a.label();
    let select = a.label();
    a.i(MOV64_REG, 6, 1, 0, 0);
    a.i(ST_W, 10, 0, -4, 0);
    a.load_map(1, state);
    a.i(MOV64_REG, 2, 10, 0, 0);
    a.i(ADD64_IMM, 2, 0, 0, -4);
    a.i(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM);
    a.jump(JEQ_IMM, 0, 0, 0, pass);
    a.i(MOV64_REG, 7, 0, 0, 0);
    // r8 = the least picks of a present reactor.
    a.i(MOV64_IMM, 8, 0, 0, -1);
    for i in 0..n {
        let next = a.label();
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_DW, 1, 7, at(i, PICKS), 0);
        a.jump(JGE_REG, 1, 8, 0, next);
        a.i(MOV64_REG, 8, 1, 0, 0);
        a.bind(next);
    }
    a.jump(JEQ_IMM, 8, 0, -1, pass);
    a.i(ADD64_IMM, 8, 0, 0, SLACK as i32);
    a.i(MOV64_IMM, 9, 0, 0, -1);
    a.i(MOV64_IMM, 4, 0, 0, -1);
    // 1. The least loaded awake reactor within the bound.
    for i in 0..n {
        let next = a.label();
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_W, 1, 7, at(i, AWAKE), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_DW, 1, 7, at(i, PICKS), 0);
        a.jump(JGE_REG, 1, 8, 0, next);
        a.jump(JGE_REG, 1, 4, 0, next);
        a.i(MOV64_REG, 4, 1, 0, 0);
        a.i(MOV64_IMM, 9, 0, 0, i as i32);
        a.bind(next);
    }
    a.jump(JNE_IMM, 9, 0, -1, select);
    // 2. The reactor picked last, if within the bound.
    a.i(LDX_W, 2, 7, sticky, 0);
    for i in 0..n {
        let next = a.label();
        a.jump(JNE_IMM, 2, 0, i as i32, next);
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_DW, 1, 7, at(i, PICKS), 0);
        a.jump(JGE_REG, 1, 8, 0, next);
        a.i(MOV64_IMM, 9, 0, 0, i as i32);
        a.jump(JA, 0, 0, 0, select);
        a.bind(next);
    }
    // 3. The least loaded reactor.
    for i in 0..n {
        let next = a.label();
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_DW, 1, 7, at(i, PICKS), 0);
        a.jump(JGE_REG, 1, 8, 0, next);
        a.jump(JGE_REG, 1, 4, 0, next);
        a.i(MOV64_REG, 4, 1, 0, 0);
        a.i(MOV64_IMM, 9, 0, 0, i as i32);
        a.bind(next);
    }
    a.jump(JEQ_IMM, 9, 0, -1, pass);
    a.bind(select);
    a.i(STX_W, 10, 9, -8, 0);
    a.i(MOV64_REG, 1, 6, 0, 0);
    a.load_map(2, sockets);
    a.i(MOV64_REG, 3, 10, 0, 0);
    a.i(ADD64_IMM, 3, 0, 0, -8);
    a.i(MOV64_IMM, 4, 0, 0, 0);
    a.i(CALL, 0, 0, 0, HELPER_SK_SELECT_REUSEPORT);
    a.jump(JNE_IMM, 0, 0, 0, pass);
    // Count the pick (atomically: SYNs for the port are handled on every CPU) and remember it.
    let counted = a.label();
    a.i(MOV64_IMM, 1, 0, 0, 1);
    for i in 0..n {
        let next = a.label();
        a.jump(JNE_IMM, 9, 0, i as i32, next);
        a.i(XADD_DW, 7, 1, at(i, PICKS), 0);
        a.jump(JA, 0, 0, 0, counted);
        a.bind(next);
    }
    a.bind(counted);
    a.i(STX_W, 7, 9, sticky, 0);
    a.bind(pass);
    a.i(MOV64_IMM, 0, 0, 0, SK_PASS);
    a.i(EXIT, 0, 0, 0, 0);
    a.finish()
}

#[cfg(test)]
mod tests;
