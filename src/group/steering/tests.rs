//! The steering program, run by a small interpreter of the instructions it uses against a
//! model of the policy in the module docs, and loaded into the kernel for every group size
//! (where the test may load BPF programs).

use super::*;

/// What the program sees and changes: per reactor (awake, present, picks), the reactor
/// picked last, and which sockarray slots hold a listener.
#[derive(Debug, Clone, PartialEq)]
struct State {
    awake: Vec<bool>,
    present: Vec<bool>,
    picks: Vec<u64>,
    pending: Vec<u64>,
    open: Vec<u64>,
    sticky: u32,
    listening: Vec<bool>,
}

impl State {
    fn bytes(&self) -> Vec<u8> {
        let n = self.awake.len();
        let mut v = vec![0u8; n * ENTRY + 8];
        for i in 0..n {
            v[i * ENTRY + AWAKE..][..4].copy_from_slice(&u32::from(self.awake[i]).to_ne_bytes());
            v[i * ENTRY + PRESENT..][..4]
                .copy_from_slice(&u32::from(self.present[i]).to_ne_bytes());
            v[i * ENTRY + PICKS..][..8].copy_from_slice(&self.picks[i].to_ne_bytes());
            v[i * ENTRY + PENDING..][..8].copy_from_slice(&self.pending[i].to_ne_bytes());
            v[i * ENTRY + OPEN..][..8].copy_from_slice(&self.open[i].to_ne_bytes());
        }
        v[n * ENTRY..][..4].copy_from_slice(&self.sticky.to_ne_bytes());
        v
    }
    fn read(&mut self, v: &[u8]) {
        let n = self.awake.len();
        for i in 0..n {
            self.picks[i] = u64::from_ne_bytes(v[i * ENTRY + PICKS..][..8].try_into().unwrap());
            self.pending[i] = u64::from_ne_bytes(v[i * ENTRY + PENDING..][..8].try_into().unwrap());
            self.open[i] = u64::from_ne_bytes(v[i * ENTRY + OPEN..][..8].try_into().unwrap());
        }
        self.sticky = u32::from_ne_bytes(v[n * ENTRY..][..4].try_into().unwrap());
    }
}

/// The policy: which reactor is asked for (None: the program leaves it to the hash).
fn model(s: &State) -> Option<usize> {
    let n = s.awake.len();
    let load = |i: usize| s.pending[i] + s.open[i];
    let present: Vec<usize> = (0..n).filter(|&i| s.present[i]).collect();
    let picks_bound = present.iter().map(|&i| s.picks[i]).min()? + SLACK;
    let load_bound = present.iter().map(|&i| load(i)).min()? + u64::from(LOAD_SLACK);
    let eligible = |i: usize| s.present[i] && s.picks[i] < picks_bound && load(i) < load_bound;
    let least_loaded = |it: &mut dyn Iterator<Item = usize>| {
        let mut best: Option<usize> = None;
        for i in it {
            if best.is_none_or(|b| load(i) < load(b)) {
                best = Some(i);
            }
        }
        best
    };
    if let Some(i) = least_loaded(&mut (0..n).filter(|&i| eligible(i) && s.awake[i])) {
        return Some(i);
    }
    let sticky = s.sticky as usize;
    if sticky < n && eligible(sticky) {
        return Some(sticky);
    }
    least_loaded(&mut (0..n).filter(|&i| eligible(i)))
        .or_else(|| least_loaded(&mut present.iter().copied()))
}

const STATE_FD: i32 = 7;
const SOCKETS_FD: i32 = 8;
const STACK: u64 = 0x1000_0000;
const VALUE: u64 = 0x2000_0000;
const CTX: u64 = 0x3000_0000;

/// Runs `insns` on `state`: returns the program's return value and the reactor selected.
fn run(insns: &[Insn], state: &mut State) -> (u64, Option<u32>) {
    let mut value = state.bytes();
    let mut stack = [0u8; 512];
    let mut r = [0u64; 11];
    r[1] = CTX;
    r[10] = STACK + 512;
    let mut selected = None;
    let mut pc = 0usize;
    let mut steps = 0;
    let mem = |value: &mut Vec<u8>, stack: &mut [u8; 512], addr: u64, len: usize| -> *mut u8 {
        if (VALUE..VALUE + value.len() as u64).contains(&addr) {
            assert!(
                addr + len as u64 <= VALUE + value.len() as u64,
                "value out of bounds"
            );
            assert_eq!(addr % len as u64, 0, "misaligned");
            unsafe { value.as_mut_ptr().add((addr - VALUE) as usize) }
        } else if (STACK..STACK + 512).contains(&addr) {
            unsafe { stack.as_mut_ptr().add((addr - STACK) as usize) }
        } else {
            panic!("access outside the value and the stack: {addr:#x}")
        }
    };
    loop {
        steps += 1;
        assert!(steps < 100_000, "no exit");
        let i = insns[pc];
        pc += 1;
        let (d, s) = (i.dst as usize, i.src as usize);
        let addr = |base: u64| base.wrapping_add(i.off as i64 as u64);
        let jump = |taken: bool, pc: &mut usize| {
            if taken {
                *pc = (*pc as isize + i.off as isize) as usize;
            }
        };
        match i.code {
            op::MOV64_IMM => r[d] = i.imm as i64 as u64,
            op::MOV64_REG => r[d] = r[s],
            op::ADD64_IMM => r[d] = r[d].wrapping_add(i.imm as i64 as u64),
            op::ADD64_REG => r[d] = r[d].wrapping_add(r[s]),
            op::LDX_W => {
                let p = mem(&mut value, &mut stack, addr(r[s]), 4);
                r[d] = u32::from_ne_bytes(unsafe { *(p as *const [u8; 4]) }) as u64;
            }
            op::LDX_DW => {
                let p = mem(&mut value, &mut stack, addr(r[s]), 8);
                r[d] = u64::from_ne_bytes(unsafe { *(p as *const [u8; 8]) });
            }
            op::ST_W => {
                let p = mem(&mut value, &mut stack, addr(r[d]), 4);
                unsafe { *(p as *mut [u8; 4]) = (i.imm as u32).to_ne_bytes() };
            }
            op::STX_W => {
                let p = mem(&mut value, &mut stack, addr(r[d]), 4);
                unsafe { *(p as *mut [u8; 4]) = (r[s] as u32).to_ne_bytes() };
            }
            op::XADD_DW => {
                let p = mem(&mut value, &mut stack, addr(r[d]), 8);
                let old = u64::from_ne_bytes(unsafe { *(p as *const [u8; 8]) });
                unsafe { *(p as *mut [u8; 8]) = old.wrapping_add(r[s]).to_ne_bytes() };
            }
            op::LD_IMM64 => {
                assert_eq!(i.src, op::PSEUDO_MAP_FD);
                r[d] = i.imm as u64;
                pc += 1;
            }
            op::JA => jump(true, &mut pc),
            op::JEQ_IMM => jump(r[d] == i.imm as i64 as u64, &mut pc),
            op::JNE_IMM => jump(r[d] != i.imm as i64 as u64, &mut pc),
            op::JGE_REG => jump(r[d] >= r[s], &mut pc),
            op::CALL => {
                r[0] = match i.imm {
                    op::HELPER_MAP_LOOKUP_ELEM => {
                        assert_eq!(r[1], STATE_FD as u64);
                        let p = mem(&mut value, &mut stack, r[2], 4);
                        let key = u32::from_ne_bytes(unsafe { *(p as *const [u8; 4]) });
                        if key == 0 { VALUE } else { 0 }
                    }
                    op::HELPER_SK_SELECT_REUSEPORT => {
                        assert_eq!(r[1], CTX);
                        assert_eq!(r[2], SOCKETS_FD as u64);
                        assert_eq!(r[4], 0);
                        let p = mem(&mut value, &mut stack, r[3], 4);
                        let key = u32::from_ne_bytes(unsafe { *(p as *const [u8; 4]) });
                        if state.listening.get(key as usize) == Some(&true) {
                            selected = Some(key);
                            0
                        } else {
                            (-(libc::ENOENT as i64)) as u64
                        }
                    }
                    other => panic!("helper {other}"),
                };
                // Calls clobber r1-r5.
                for reg in &mut r[1..=5] {
                    *reg = 0xdead_beef;
                }
            }
            op::EXIT => {
                state.read(&value);
                return (r[0], selected);
            }
            other => panic!("opcode {other:#x}"),
        }
    }
}

/// A small deterministic generator (no dependency for one test).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn the_program_picks_what_the_policy_says_and_counts_its_pick() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..20_000 {
        let n = 2 + rng.below(5) as usize;
        let base = rng.below(1 << 40);
        let mut s = State {
            awake: (0..n).map(|_| rng.below(2) == 0).collect(),
            present: (0..n).map(|_| rng.below(5) != 0).collect(),
            picks: (0..n).map(|_| base + rng.below(2 * SLACK + 2)).collect(),
            pending: (0..n).map(|_| rng.below(4)).collect(),
            open: (0..n)
                .map(|_| rng.below(2 * u64::from(LOAD_SLACK) + 4))
                .collect(),
            sticky: rng.below(n as u64 + 2) as u32,
            listening: (0..n).map(|_| rng.below(10) != 0).collect(),
        };
        let before = s.clone();
        let want = model(&before);
        let insns = program_insns(n, LOAD_SLACK, STATE_FD, SOCKETS_FD);
        let (ret, selected) = run(&insns, &mut s);
        assert_eq!(ret, op::SK_PASS as u64, "case {case}: {before:?}");
        assert_eq!(
            selected.map(|i| i as usize),
            want.filter(|&i| before.listening[i]),
            "case {case}: {before:?}"
        );
        let mut after = before.clone();
        if let Some(i) = selected {
            after.picks[i as usize] += 1;
            after.pending[i as usize] += 1;
            after.sticky = i;
        }
        assert_eq!(
            s, after,
            "case {case}: only the pick is counted and remembered"
        );
    }
}

#[test]
fn a_quiet_group_stays_on_one_reactor_until_it_is_slack_ahead_then_moves() {
    // Nobody awake (each connection served and slept before the next): the reactor picked
    // last keeps them until it is SLACK ahead, then the least loaded takes over.
    let n = 3;
    let mut s = State {
        awake: vec![false; n],
        present: vec![true; n],
        picks: vec![0; n],
        pending: vec![0; n],
        open: vec![0; n],
        sticky: 0,
        listening: vec![true; n],
    };
    let insns = program_insns(n, LOAD_SLACK, STATE_FD, SOCKETS_FD);
    let mut order = Vec::new();
    for _ in 0..(3 * SLACK as usize) {
        let (_, selected) = run(&insns, &mut s);
        order.push(selected.expect("a pick"));
        // Accepted, served and closed before the next one.
        s.pending = vec![0; n];
    }
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(&order[..SLACK as usize], &vec![0; SLACK as usize][..]);
    assert_eq!(order[SLACK as usize], 1);
    assert!(switches <= 4, "{switches} switches: {order:?}");
    let (max, min) = (s.picks.iter().max().unwrap(), s.picks.iter().min().unwrap());
    assert!(max - min <= SLACK, "{:?}", s.picks);
}

#[test]
fn the_awake_reactor_wins_over_the_sticky_one_and_nobody_present_means_the_hash() {
    let n = 2;
    let insns = program_insns(n, LOAD_SLACK, STATE_FD, SOCKETS_FD);
    let mut s = State {
        awake: vec![false, true],
        present: vec![true, true],
        picks: vec![10, 12],
        pending: vec![0, 0],
        open: vec![3, 4],
        sticky: 0,
        listening: vec![true, true],
    };
    assert_eq!(run(&insns, &mut s).1, Some(1));
    let mut gone = State {
        present: vec![false, false],
        ..s.clone()
    };
    assert_eq!(run(&insns, &mut gone).1, None);
}

#[test]
fn long_lived_connections_spread_within_the_load_slack_even_with_one_reactor_awake() {
    // Eight connections arrive while reactor 0 is awake and none closes: the awake one takes
    // them only while it is less than LOAD_SLACK ahead of the least loaded.
    let n = 2;
    let insns = program_insns(n, LOAD_SLACK, STATE_FD, SOCKETS_FD);
    let mut s = State {
        awake: vec![true, false],
        present: vec![true, true],
        picks: vec![0, 0],
        pending: vec![0, 0],
        open: vec![0, 0],
        sticky: 0,
        listening: vec![true, true],
    };
    for _ in 0..8 {
        run(&insns, &mut s).1.expect("a pick");
    }
    let (a, b) = (s.pending[0], s.pending[1]);
    assert_eq!(a + b, 8);
    assert!(a.abs_diff(b) <= u64::from(LOAD_SLACK), "{a} / {b}");
}

/// The kernel's verifier accepts the program for every group size steering takes (a log
/// that overflowed its buffer used to fail the load for large groups).
#[test]
fn the_kernel_loads_the_program_for_every_group_size() {
    for n in [2, 3, 4, 8, 16, MAX_REACTORS] {
        let started = std::time::Instant::now();
        let value_size = (n * ENTRY + 8) as u32;
        let state =
            match sys::bpf_map_create(bpf::MAP_TYPE_ARRAY, 4, value_size, 1, bpf::F_MMAPABLE) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    eprintln!("skipped: no permission to make BPF maps ({e})");
                    return;
                }
                Err(e) => panic!("array map for {n}: {e}"),
            };
        let sockets = sys::bpf_map_create(bpf::MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, n as u32, 0)
            .unwrap_or_else(|e| panic!("socket array for {n}: {e}"));
        let insns = program(
            n,
            LOAD_SLACK,
            std::os::fd::AsRawFd::as_raw_fd(&state),
            std::os::fd::AsRawFd::as_raw_fd(&sockets),
        );
        sys::bpf_prog_load(
            bpf::PROG_TYPE_SK_REUSEPORT,
            bpf::SK_REUSEPORT_SELECT,
            &insns,
            "finwait_test",
        )
        .unwrap_or_else(|e| panic!("{n} reactors, {} instructions: {e}", insns.len()));
        eprintln!(
            "{n} reactors: {} instructions, loaded in {:?}",
            insns.len(),
            started.elapsed()
        );
    }
}

/// Picks a reactor accepts are taken off its pending count; picks left pending while it
/// accepts nothing for `PENDING_EXPIRY` (SYNs that never became connections) are cleared.
#[test]
fn a_reactor_takes_accepts_off_its_pending_picks_and_clears_lost_ones() {
    let first = sys::listen_std("127.0.0.1:0".parse().unwrap(), 16, true, true).unwrap();
    let addr = first.local_addr().unwrap();
    let second = sys::listen_std(addr, 16, true, true).unwrap();
    let steerer = match Steerer::install(&[first.as_fd(), second.as_fd()], LOAD_SLACK) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: no permission to load BPF programs ({e})");
            return;
        }
        Err(e) => panic!("install: {e}"),
    };
    let mut slot = steerer.join(0);
    let start = slot.progress;
    // The program gave this reactor 5 connections.
    slot.word64(PENDING).store(5, Ordering::Relaxed);
    // It accepted 3 of them, 3 still open.
    slot.publish(3, 3, start);
    assert_eq!(slot.word64(PENDING).load(Ordering::Relaxed), 2);
    assert_eq!(slot.word64(OPEN).load(Ordering::Relaxed), 3);
    assert!(slot.has_pending());
    // Nothing more accepted, but not for long: still pending.
    slot.publish(3, 3, start + PENDING_EXPIRY / 2);
    assert_eq!(slot.word64(PENDING).load(Ordering::Relaxed), 2);
    // Nothing accepted for the whole expiry: those two were lost.
    slot.publish(3, 1, start + PENDING_EXPIRY);
    assert_eq!(slot.word64(PENDING).load(Ordering::Relaxed), 0);
    assert_eq!(slot.word64(OPEN).load(Ordering::Relaxed), 1);
    assert!(!slot.has_pending());
    // Leaving takes the reactor out of the choice; the others stay in it.
    let other = steerer.join(1);
    assert!(steerer.is_present(1));
    assert!(steerer.is_present(0));
    drop(slot);
    assert!(!steerer.is_present(0));
    assert!(steerer.is_present(1));
    drop(other);
}

#[test]
fn pending_picks_cap_the_poll_timeout_at_the_expiry() {
    let second = std::time::Duration::from_secs(1);
    let hour = std::time::Duration::from_secs(3600);
    // Nothing pending: the reactor's own timeout, even none (until an event).
    assert_eq!(poll_timeout(None, false), None);
    assert_eq!(poll_timeout(Some(hour), false), Some(hour));
    // Pending picks: looked at again within the expiry, never later than asked.
    assert_eq!(poll_timeout(None, true), Some(PENDING_EXPIRY));
    assert_eq!(poll_timeout(Some(hour), true), Some(PENDING_EXPIRY));
    assert_eq!(poll_timeout(Some(second), true), Some(second));
    assert_eq!(
        poll_timeout(Some(std::time::Duration::ZERO), true),
        Some(std::time::Duration::ZERO)
    );
}
