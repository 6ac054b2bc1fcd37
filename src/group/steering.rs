//! Which reactor of a group gets a new connection: the kernel's hash of the 4-tuple, or a
//! socket-reuseport BPF program that prefers a reactor that is awake.
//!
//! With one `SO_REUSEPORT` listener per reactor, the kernel picks the listener for each SYN by
//! a hash of the 4-tuple (socket(7)): even, and blind to load. At partial load that makes
//! every reactor sleep and wake for its share — a burst one reactor would take in one wake-up
//! costs N reactors a wake-up each, and each wakes to a cache its siblings evicted
//! (BENCHMARKS.md, "Why churn misses"). [`Steering::PreferAwake`] attaches a program
//! (`SO_ATTACH_REUSEPORT_EBPF`, socket(7); `bpf_sk_select_reuseport`, bpf-helpers(7)) that
//! picks, for each new connection, among the reactors within two bounds — a load
//! (connections picked and not closed yet) less than the least loaded reactor's plus the load
//! slack (default [`LOAD_SLACK`]), and picks fewer than the least picked one's plus
//! [`SLACK`]:
//!
//! 1. the least loaded awake reactor (one not blocked in `epoll_wait`) — at saturation every
//!    reactor is awake and the load decides;
//! 2. else the reactor picked last (its cache is the warm one) — at low load one reactor
//!    serves while the others sleep;
//! 3. else the least loaded one within the bounds, and if the two bounds leave none (a
//!    reactor with long-lived connections that was picked less), the least loaded.
//!
//! Each reactor publishes in a BPF array mapped into the process (no syscall): "awake", set
//! around each blocking `epoll_wait`, and after each turn how many accepted connections it
//! holds open; the program counts its picks, and the picks not accepted yet, in the same
//! array (the reactor takes off what it accepts, and clears picks left pending for
//! [`PENDING_EXPIRY`]: lost SYNs). So a few long-lived connections spread within the load
//! slack, and many short ones within [`SLACK`] picks (plus the SYNs that race on other
//! CPUs). A reactor whose listeners stop accepting (it leaves the group, shuts down or hands
//! over) is taken out of the choice; a pick the kernel cannot honour (a listener closed
//! meanwhile) falls back to the hash.
//!
//! Loading needs `CAP_BPF` (or `CAP_SYS_ADMIN`: socket-reuseport programs and their socket
//! arrays are never allowed unprivileged) and Linux 5.5 for the mapped array: a kernel that
//! refuses leaves the group on the hash ([`Group::steering`](crate::Group::steering) says
//! which is in effect, [`Group::steering_error`](crate::Group::steering_error) why).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::sys::{self, bpf};

/// How a [`Group`](crate::Group) spreads new connections over its reactors
/// ([`GroupOptions::steering`](crate::GroupOptions::steering)).
///
/// The kernel picks a group member's listener at each connection's SYN. With the hash it is
/// even and blind to load: at partial load every reactor sleeps and wakes for its share, and
/// each wake-up costs CPU (scheduling, a cache its siblings evicted). With
/// [`PreferAwake`](Steering::PreferAwake), one reactor serves a quiet group while the others
/// sleep, busy reactors share by load, no reactor is given a connection while it holds
/// the load slack ([`GroupOptions::steering_load_slack`](crate::GroupOptions::steering_load_slack),
/// default [`LOAD_SLACK`]) more than the least loaded one, and none while it was given [`SLACK`]
/// more than the least picked one — unless the least loaded is that one.
///
/// ```no_run
/// use finwait::{Context, Event, Group, GroupOptions, SocketId, Steering};
///
/// let group = Group::listen("127.0.0.1:0", GroupOptions::new(2), |_| {
///     |_: &mut Context, _: SocketId, _: Event<'_>| {}
/// })?;
/// // Without CAP_BPF the kernel refuses the program, and the hash decides.
/// println!("steering: {:?}", group.steering());
/// # Ok::<(), finwait::Error>(())
/// ```
///
/// Not guaranteed: which reactor serves a given connection, or an exact spread over a short
/// run; the hash's spread is statistical, the program's bounded as above, give or take the
/// SYNs that race with each other on different CPUs and the turn a reactor takes to publish
/// its closes. The program decides for the whole port: a
/// socket another process binds to it with `SO_REUSEPORT` gets connections only while no
/// reactor of this group takes them, or once that process attaches a program of its own
/// (the last one attached decides). A handover takes the sockets out of this group's program
/// when it offers them (a socket belongs to one program's array at a time), so that the
/// successor can steer them; from then on — also if the handover fails — this group spreads
/// by the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Steering {
    /// The kernel's hash of the 4-tuple: even and independent of load.
    Hash,
    /// A socket-reuseport BPF program (`SO_ATTACH_REUSEPORT_EBPF`, socket(7);
    /// `bpf_sk_select_reuseport`, bpf-helpers(7)) picks, among the reactors fewer than
    /// the load slack in connections of load (picked and not closed yet) and [`SLACK`] picks
    /// ahead of the least: the least loaded awake reactor (one not blocked in `epoll_wait`),
    /// else the reactor picked last, else the least loaded. Reactors publish "awake" and
    /// their open connections in memory shared with the program (no syscall). Needs
    /// `CAP_BPF` or `CAP_SYS_ADMIN` (never allowed unprivileged) and Linux 5.5; falls back to
    /// [`Hash`](Steering::Hash) where the kernel refuses it, for groups of more than 32
    /// reactors, and once a handover has been offered.
    #[default]
    PreferAwake,
}

/// How many picks (connections given) more than the least picked reactor a reactor may be
/// given because it is awake or was picked last: over many short connections, the bound on
/// the imbalance [`Steering::PreferAwake`] trades for fewer wake-ups.
pub const SLACK: u64 = 64;

/// The most reactors [`Steering::PreferAwake`] steers; a larger group uses the hash. The
/// program is unrolled per reactor and the verifier follows each reactor the choice can
/// land on: for 64 it gives up (over its million instructions checked); for 32 loading
/// takes about 1 s at the group's start, for 16 about 0.16 s, for 4 about 6 ms (measured
/// here, Linux 6.18).
pub(crate) const MAX_REACTORS: usize = 32;

/// The default of [`GroupOptions::steering_load_slack`](crate::GroupOptions::steering_load_slack):
/// how much more load (connections given and not closed yet) than the least loaded reactor a
/// reactor may have and still be given one because it is awake or was picked last. Small,
/// so that a few long-lived connections spread over the group.
pub const LOAD_SLACK: u32 = 2;

/// Per reactor in the shared array. Written by the program: `picks` (connections given to
/// it, ever) and `pending` (given, not accepted yet). Written by the reactor: `awake`,
/// `present`, `open` (accepted connections not closed yet), and `pending` again, which it
/// lowers by what it accepts — and clears when it accepted nothing for [`PENDING_EXPIRY`]:
/// a pick that never becomes a connection (a SYN dropped by a full accept queue, a failed
/// handshake, the second pick of a syncookie's ACK) must not count as load for good. A
/// reactor's load is `pending + open`.
///
/// One cache line per reactor: each reactor writes its own entry around every `epoll_wait`
/// and after every turn, and two reactors on different cores sharing a line would bounce it
/// between them at that rate (false sharing). The program's `sticky` word follows the
/// entries, on a line of its own.
const ENTRY: usize = 64;
const AWAKE: usize = 0;
const PRESENT: usize = 4;
const PICKS: usize = 8;
const PENDING: usize = 16;
const OPEN: usize = 24;

/// How long picks may stay pending while the reactor accepts nothing before they are taken
/// for lost: far longer than a handshake on any network a server sees, shorter than anyone
/// would notice a reactor passed over.
pub(crate) const PENDING_EXPIRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The poll timeout of a group reactor: `timeout` (`None`: until an event), no longer than
/// [`PENDING_EXPIRY`] while picks are `pending` at it, so that lost ones expire even when
/// nothing else wakes it.
pub(crate) fn poll_timeout(
    timeout: Option<std::time::Duration>,
    pending: bool,
) -> Option<std::time::Duration> {
    if pending {
        Some(timeout.map_or(PENDING_EXPIRY, |t| t.min(PENDING_EXPIRY)))
    } else {
        timeout
    }
}

/// The program and maps steering one group; dropped with the group's last reactor.
pub(crate) struct Steerer {
    state: MappedArray,
    /// The `REUSEPORT_SOCKARRAY` of the listeners. A socket can be in one such array at a
    /// time (`EBUSY` otherwise), which is why a handover [withdraws](Steerer::withdraw) them.
    sockets: OwnedFd,
    // Kept so the program lives as long as the group (the kernel holds it while attached).
    _prog: OwnedFd,
    /// The listeners were withdrawn (a handover was offered): the hash decides from then on.
    withdrawn: AtomicBool,
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
    pub(crate) fn install(
        listeners: &[std::os::fd::BorrowedFd<'_>],
        load_slack: u32,
    ) -> io::Result<Arc<Steerer>> {
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
            load_slack,
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
            sockets,
            _prog: prog,
            withdrawn: AtomicBool::new(false),
        }))
    }

    /// Takes the listeners out of this group's choice for good (the kernel's hash decides
    /// from now on), so that a successor the sockets are handed to can steer them with its
    /// own program: a socket sits in one `REUSEPORT_SOCKARRAY` at a time.
    pub(crate) fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Relaxed);
        for i in 0..self.state.reactors {
            if let Err(e) = sys::bpf_map_delete(self.sockets.as_fd(), &(i as u32).to_ne_bytes()) {
                log::warn!("group steering: cannot withdraw listener {i}: {e}");
            }
        }
    }

    /// Whether reactor `index` takes part in the choice.
    #[cfg(test)]
    fn is_present(&self, index: usize) -> bool {
        self.state.word(index, PRESENT).load(Ordering::Relaxed) == 1
    }

    /// Whether [`withdraw`](Steerer::withdraw) was called.
    pub(crate) fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Relaxed)
    }

    /// Reactor `index` takes part in the choice from now on (awake: it has not polled yet).
    pub(crate) fn join(self: &Arc<Self>, index: usize) -> SteeringSlot {
        let slot = SteeringSlot {
            steerer: Arc::clone(self),
            index,
            accepted: 0,
            progress: std::time::Instant::now(),
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

impl MappedArray {
    /// The 32-bit `field` of reactor `index`'s entry.
    fn word(&self, index: usize, field: usize) -> &AtomicU32 {
        assert!(index < self.reactors && field + 4 <= ENTRY);
        // SAFETY: in bounds of the mapping (`ENTRY` bytes per reactor, checked above),
        // 4-aligned (page-aligned mapping, 4-aligned fields), and shared only through atomic
        // accesses and the kernel's aligned loads and atomic adds.
        unsafe { &*(self.ptr.as_ptr().add(index * ENTRY + field) as *const AtomicU32) }
    }

    /// The 64-bit `field` of reactor `index`'s entry.
    fn word64(&self, index: usize, field: usize) -> &AtomicU64 {
        assert!(index < self.reactors && field.is_multiple_of(8) && field + 8 <= ENTRY);
        // SAFETY: as in `word`, 8-aligned.
        unsafe { &*(self.ptr.as_ptr().add(index * ENTRY + field) as *const AtomicU64) }
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `install`; no slot outlives the `Steerer` holding it.
        unsafe { sys::munmap(self.ptr, self.len) }
    }
}

/// One reactor's place in its group's steering: it says when it sleeps and wakes, what it
/// accepted and closed, and leaves the choice when its listener stops accepting (or it is
/// dropped).
#[derive(Debug)]
pub(crate) struct SteeringSlot {
    steerer: Arc<Steerer>,
    index: usize,
    /// Accepts already taken off `pending`.
    accepted: u64,
    /// The last accept (or expiry) seen by [`publish`](SteeringSlot::publish).
    progress: std::time::Instant,
}

impl SteeringSlot {
    fn word(&self, field: usize) -> &AtomicU32 {
        self.steerer.state.word(self.index, field)
    }

    fn word64(&self, field: usize) -> &AtomicU64 {
        self.steerer.state.word64(self.index, field)
    }

    /// Publishes this reactor's load after a turn: `accepted` connections it has taken off
    /// its listeners so far, `open` of them not closed yet, at `now`. `open` first: in
    /// between, the program counts a connection accepted this turn twice (pending and open)
    /// rather than not at all, which errs toward spreading.
    pub(crate) fn publish(&mut self, accepted: u64, open: u64, now: std::time::Instant) {
        self.word64(OPEN).store(open, Ordering::Release);
        let new = accepted - self.accepted;
        if new > 0 {
            self.accepted = accepted;
            self.progress = now;
            let _ = self
                .word64(PENDING)
                .fetch_update(Ordering::Release, Ordering::Relaxed, |p| {
                    Some(p.saturating_sub(new))
                });
        } else if now.saturating_duration_since(self.progress) >= PENDING_EXPIRY {
            self.progress = now;
            let pending = self.word64(PENDING);
            let p = pending.load(Ordering::Relaxed);
            if p > 0 {
                // Unless the program gave it one more meanwhile: then next time.
                let _ = pending.compare_exchange(p, 0, Ordering::Release, Ordering::Relaxed);
            }
        }
    }

    /// Whether connections given to this reactor are still pending: it must look again
    /// within [`PENDING_EXPIRY`], even when nothing else wakes it.
    pub(crate) fn has_pending(&self) -> bool {
        self.word64(PENDING).load(Ordering::Relaxed) > 0
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
    pub(crate) const ADD64_REG: u8 = 0x0f;
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
pub(crate) fn program(n: usize, load_slack: u32, state: i32, sockets: i32) -> Vec<u64> {
    program_insns(n, load_slack, state, sockets)
        .into_iter()
        .map(Insn::encode)
        .collect()
}

/// [`program`] before encoding.
///
/// Registers: r6 the context, r7 the array value, r8 the picks bound (least picks +
/// [`SLACK`]), r5 the load bound (least load + `load_slack`), r9 the reactor chosen
/// (-1: none yet), r4 the load of the best candidate so far; r1-r3 scratch.
pub(crate) fn program_insns(n: usize, load_slack: u32, state: i32, sockets: i32) -> Vec<Insn> {
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
    // r1 = the load of reactor i: given and not accepted yet, plus accepted and open.
    let load = |a: &mut Asm, i: usize| {
        a.i(LDX_DW, 1, 7, at(i, PENDING), 0);
        a.i(LDX_DW, 3, 7, at(i, OPEN), 0);
        a.i(ADD64_REG, 1, 3, 0, 0);
    };
    // r8 = the least picks, r5 the least load, of a present reactor.
    a.i(MOV64_IMM, 8, 0, 0, -1);
    a.i(MOV64_IMM, 5, 0, 0, -1);
    for i in 0..n {
        let next = a.label();
        let fewer_picks_done = a.label();
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_DW, 1, 7, at(i, PICKS), 0);
        a.jump(JGE_REG, 1, 8, 0, fewer_picks_done);
        a.i(MOV64_REG, 8, 1, 0, 0);
        a.bind(fewer_picks_done);
        load(&mut a, i);
        a.jump(JGE_REG, 1, 5, 0, next);
        a.i(MOV64_REG, 5, 1, 0, 0);
        a.bind(next);
    }
    a.jump(JEQ_IMM, 8, 0, -1, pass);
    a.i(ADD64_IMM, 8, 0, 0, SLACK as i32);
    a.i(ADD64_IMM, 5, 0, 0, load_slack.min(i32::MAX as u32) as i32);
    a.i(MOV64_IMM, 9, 0, 0, -1);
    a.i(MOV64_IMM, 4, 0, 0, -1);
    // Jumps to `next` unless reactor i is present and within both bounds; leaves its load
    // in r1.
    let eligible = |a: &mut Asm, i: usize, next: Label| {
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        a.i(LDX_DW, 1, 7, at(i, PICKS), 0);
        a.jump(JGE_REG, 1, 8, 0, next);
        load(a, i);
        a.jump(JGE_REG, 1, 5, 0, next);
    };
    // Makes reactor i (load in r1) the choice if its load is below the best so far.
    let keep_least = |a: &mut Asm, i: usize, next: Label| {
        a.jump(JGE_REG, 1, 4, 0, next);
        a.i(MOV64_REG, 4, 1, 0, 0);
        a.i(MOV64_IMM, 9, 0, 0, i as i32);
    };
    // 1. The least loaded awake reactor within the bounds.
    for i in 0..n {
        let next = a.label();
        a.i(LDX_W, 1, 7, at(i, AWAKE), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        eligible(&mut a, i, next);
        keep_least(&mut a, i, next);
        a.bind(next);
    }
    a.jump(JNE_IMM, 9, 0, -1, select);
    // 2. The reactor picked last, if within the bounds.
    a.i(LDX_W, 2, 7, sticky, 0);
    for i in 0..n {
        let next = a.label();
        a.jump(JNE_IMM, 2, 0, i as i32, next);
        eligible(&mut a, i, next);
        a.i(MOV64_IMM, 9, 0, 0, i as i32);
        a.jump(JA, 0, 0, 0, select);
        a.bind(next);
    }
    // 3. The least loaded reactor within the bounds.
    for i in 0..n {
        let next = a.label();
        eligible(&mut a, i, next);
        keep_least(&mut a, i, next);
        a.bind(next);
    }
    a.jump(JNE_IMM, 9, 0, -1, select);
    // 4. The bounds disagree (the least loaded reactor is ahead in picks): the least loaded.
    for i in 0..n {
        let next = a.label();
        a.i(LDX_W, 1, 7, at(i, PRESENT), 0);
        a.jump(JEQ_IMM, 1, 0, 0, next);
        load(&mut a, i);
        keep_least(&mut a, i, next);
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
        a.i(XADD_DW, 7, 1, at(i, PENDING), 0);
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
