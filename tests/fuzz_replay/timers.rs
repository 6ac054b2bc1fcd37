//! `finwait::timers::Timers` against a `BTreeMap` model of every armed timer.
//!
//! Checked after every call: what `expire` fires (exactly the model's due timers, in
//! nondecreasing due time, ties in arming order; cancelled and stale ids never fire; an idle
//! timer fires once per idle period), `len`, `contains`/`kind` for live and dead ids, and that
//! `next_wakeup` is never later than the earliest due time (and `None` only when nothing can
//! fire).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use finwait::timers::{TimerId, TimerKind, Timers};

/// One call on the timer set, or a clock move.
#[derive(arbitrary::Arbitrary, Debug)]
pub enum Operation {
    /// `arm_idle` with a period of `period_ms` (0 included).
    ArmIdle { period_ms: u8 },
    /// `arm_idle` with `Duration::MAX`: a due time past what `Instant` holds, never fires.
    ArmIdleForever,
    /// `arm_deadline` at `now + offset_ms` (negative: already in the past).
    ArmDeadline { offset_ms: i8 },
    /// `touch` the `pick`-th live timer at the current time.
    Touch { pick: u8 },
    /// `touch` the `pick`-th live timer `back_ms` before the current time (never before its
    /// last recorded activity: the reactor's clock does not go backwards).
    TouchEarlier { pick: u8, back_ms: u8 },
    /// `cancel` the `pick`-th live timer (must return true).
    Cancel { pick: u8 },
    /// `touch` and `cancel` a dead id (cancelled or fired deadline): no effect, false.
    Stale { pick: u8 },
    /// Moves the clock forward by `ms` (0 included).
    Advance { ms: u8 },
    /// Moves the clock to the time `next_wakeup` reports (what the reactor's sleep does).
    AdvanceToWakeup,
    /// `expire` at the current time.
    Expire,
}

#[derive(Debug)]
enum Model {
    Idle {
        period: Duration,
        last: Instant,
        /// Fired and not touched since.
        silent: bool,
    },
    Deadline {
        at: Instant,
    },
}

impl Model {
    /// When this timer will fire if nothing else happens; `None`: it cannot fire.
    fn pending_due(&self) -> Option<Instant> {
        match *self {
            Model::Idle { silent: true, .. } => None,
            Model::Idle { period, last, .. } => last.checked_add(period),
            Model::Deadline { at } => Some(at),
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn nth_key<V>(map: &BTreeMap<u64, V>, pick: u8) -> Option<u64> {
    if map.is_empty() {
        return None;
    }
    map.keys().nth(usize::from(pick) % map.len()).copied()
}

pub fn replay(ops: &[Operation]) {
    // Far enough from the process start that "in the past" never underflows.
    let t0 = Instant::now() + Duration::from_secs(3600);
    let mut now = t0;
    let mut timers: Timers<u64> = Timers::new();
    // Keyed by arming sequence, which is also the timer's key: map order = arming order.
    let mut model: BTreeMap<u64, (TimerId, Model)> = BTreeMap::new();
    let mut dead: Vec<TimerId> = Vec::new();
    let mut next_key = 0u64;

    for (step, op) in ops.iter().enumerate() {
        match *op {
            Operation::ArmIdle { period_ms } => {
                let period = ms(u64::from(period_ms));
                let id = timers.arm_idle(next_key, period, now);
                let m = Model::Idle {
                    period,
                    last: now,
                    silent: false,
                };
                model.insert(next_key, (id, m));
                next_key += 1;
            }
            Operation::ArmIdleForever => {
                let id = timers.arm_idle(next_key, Duration::MAX, now);
                let m = Model::Idle {
                    period: Duration::MAX,
                    last: now,
                    silent: false,
                };
                model.insert(next_key, (id, m));
                next_key += 1;
            }
            Operation::ArmDeadline { offset_ms } => {
                let offset = i64::from(offset_ms);
                let at = if offset >= 0 {
                    now + ms(offset as u64)
                } else {
                    now - ms(offset.unsigned_abs())
                };
                let id = timers.arm_deadline(next_key, at);
                model.insert(next_key, (id, Model::Deadline { at }));
                next_key += 1;
            }
            Operation::Touch { pick } | Operation::TouchEarlier { pick, .. } => {
                let Some(key) = nth_key(&model, pick) else {
                    continue;
                };
                let (id, m) = model.get_mut(&key).expect("picked from the map");
                let at = match (op, &*m) {
                    (Operation::TouchEarlier { back_ms, .. }, Model::Idle { last, .. }) => now
                        .checked_sub(ms(u64::from(*back_ms)))
                        .unwrap_or(*last)
                        .max(*last),
                    _ => now,
                };
                timers.touch(*id, at);
                if let Model::Idle { last, silent, .. } = m {
                    *last = (*last).max(at);
                    *silent = false;
                }
            }
            Operation::Cancel { pick } => {
                let Some(key) = nth_key(&model, pick) else {
                    continue;
                };
                let (id, _) = model.remove(&key).expect("picked from the map");
                assert!(
                    timers.cancel(id),
                    "step {step}: cancel of a live timer returned false"
                );
                dead.push(id);
            }
            Operation::Stale { pick } => {
                if dead.is_empty() {
                    continue;
                }
                let id = dead[usize::from(pick) % dead.len()];
                timers.touch(id, now);
                assert!(
                    !timers.cancel(id),
                    "step {step}: cancel of a dead id returned true"
                );
            }
            Operation::Advance { ms: d } => now += ms(u64::from(d)),
            Operation::AdvanceToWakeup => {
                if let Some(at) = timers.next_wakeup() {
                    now = now.max(at);
                }
            }
            Operation::Expire => {
                let mut expected: BTreeMap<(Instant, u64), TimerId> = BTreeMap::new();
                for (&key, (id, m)) in &model {
                    if let Some(due) = m.pending_due().filter(|&d| d <= now) {
                        expected.insert((due, key), *id);
                    }
                }
                let expected: Vec<(TimerId, u64)> =
                    expected.iter().map(|(&(_, key), &id)| (id, key)).collect();
                for &(id, key) in &expected {
                    match &mut model.get_mut(&key).expect("expected from the map").1 {
                        Model::Idle { silent, .. } => *silent = true,
                        Model::Deadline { .. } => {
                            model.remove(&key);
                            dead.push(id);
                        }
                    }
                }
                let mut got = Vec::new();
                timers.expire(now, |id, key| got.push((id, key)));
                for (id, key) in &got {
                    assert!(
                        !dead.contains(id) || expected.contains(&(*id, *key)),
                        "step {step}: a cancelled or stale timer fired: {id:?} (key {key})"
                    );
                }
                assert_eq!(
                    got, expected,
                    "step {step}: expire fired the wrong timers or order"
                );
            }
        }
        if dead.len() > 256 {
            dead.drain(..128);
        }

        assert_eq!(timers.len(), model.len(), "step {step} ({op:?}): len");
        assert_eq!(timers.is_empty(), model.is_empty(), "step {step}: is_empty");
        for (id, m) in model.values() {
            assert!(
                timers.contains(*id),
                "step {step}: live timer {id:?} not contained"
            );
            let kind = timers.kind(*id);
            match m {
                Model::Idle { period, .. } => {
                    assert_eq!(
                        kind,
                        Some(TimerKind::Idle { period: *period }),
                        "step {step}"
                    )
                }
                Model::Deadline { .. } => {
                    assert_eq!(kind, Some(TimerKind::Deadline), "step {step}")
                }
            }
        }
        for id in &dead {
            assert!(
                !timers.contains(*id),
                "step {step}: dead timer {id:?} still contained"
            );
            assert_eq!(timers.kind(*id), None, "step {step}: dead timer has a kind");
        }
        let earliest = model.values().filter_map(|(_, m)| m.pending_due()).min();
        let wakeup = timers.next_wakeup();
        assert_eq!(
            wakeup.is_some(),
            earliest.is_some(),
            "step {step} ({op:?}): next_wakeup {wakeup:?} vs model earliest {earliest:?}"
        );
        assert!(
            wakeup <= earliest,
            "step {step} ({op:?}): next_wakeup later than the earliest due timer"
        );
    }
}
