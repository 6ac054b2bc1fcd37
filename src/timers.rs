//! Per-socket timers whose re-arming is free.
//!
//! A reactor with hundreds of thousands of connections wants an idle timeout
//! on each, and every read or write "resets" it. Doing that eagerly (remove the
//! old heap entry, push a new one) costs a heap operation per I/O event.
//! [`Timers`] does it lazily, the way Node's socket timeouts and tokio's
//! `Sleep::reset` do:
//!
//! * [`Timers::touch`] only stores the time of the activity in the timer's
//!   slot. No heap operation, no allocation.
//! * The heap keeps, for each armed timer, the due time it had when it was last
//!   pushed. After touches that stored time is *earlier* than the real one,
//!   never later.
//! * When [`Timers::expire`] pops an entry it compares it with the real due
//!   time (last activity + period). If the timer was touched since, it is
//!   pushed back at its real due time and does not fire; otherwise it fires.
//!
//! # Cost model
//!
//! * `touch`: O(1): an index, a generation compare and a store.
//! * `arm_*`: one O(log n) heap push.
//! * `cancel`: O(1) amortised. The heap entry is left behind and skipped
//!   later (popping it is paid for by the push that made it); see *Memory*.
//! * `expire`: O(log n) per heap entry popped. A busy connection with idle
//!   period `P` costs at most one pop and one push per `P` of wall time, no
//!   matter how many reads and writes it did in that time. With nothing due it
//!   is one peek.
//! * `next_wakeup`: O(1). Because heap times can be stale, the reactor may
//!   wake up with nothing to fire (a re-push only). That happens at most once
//!   per idle period per busy timer, which is the price of a free `touch`.
//!
//! # Memory
//!
//! One slab slot per armed timer, and at most one *live* heap entry per armed
//! timer: a timer already in the heap is never pushed again, only moved when
//! its entry is popped. Cancelled timers leave a dead entry in the heap; once
//! the heap holds more than `2 * len() + 64` entries it is rebuilt in place
//! from the live ones. So the heap never exceeds that size after any call, and
//! since a rebuild at least halves the heap its cost is amortised over the
//! cancels that filled it.
//! Dead entries on top of the heap are dropped eagerly, so a cancelled timer
//! never causes a wakeup.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::table::{Key, Table};

/// Handle to one armed timer.
///
/// It holds the slot index plus that slot's generation, so a handle kept after
/// its timer was cancelled or fired never reaches a later timer that reuses the
/// slot. Generations are 30-bit and wrap: a handle would alias only if its slot
/// were reused 2³⁰ times while the handle was still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

impl Key for TimerId {
    fn from_parts(index: u32, generation: u32) -> Self {
        TimerId { index, generation }
    }
    fn index(self) -> u32 {
        self.index
    }
    fn generation(self) -> u32 {
        self.generation
    }
}

/// What an armed timer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// Fires once `period` has passed since the last [`Timers::touch`] (or
    /// since arming). After firing it stays armed but silent until the next
    /// `touch`; then it fires again after another idle `period` ("once per
    /// idle period", like Node's `setTimeout` on sockets).
    Idle {
        /// How long the timer must go without a `touch` before it fires.
        period: Duration,
    },
    /// Fires once at a fixed instant, then is removed (FIN wait, linger,
    /// connect timeout, shutdown grace).
    Deadline,
}

#[derive(Debug)]
enum State {
    Idle {
        period: Duration,
        last_active: Instant,
    },
    Deadline {
        at: Instant,
    },
}

#[derive(Debug)]
struct Entry<K> {
    key: K,
    // Unique for the life of the `Timers`: tells this timer's heap entry
    // apart from one left behind by an earlier timer in the same slot, and
    // orders timers due at the same instant by arming order.
    seq: u64,
    // Whether the heap holds this timer's (single) entry. An idle timer that
    // fired and was not touched since is simply not in the heap: that is
    // what keeps it silent.
    in_heap: bool,
    state: State,
}

impl<K> Entry<K> {
    /// The real due time; `None` when it is past what `Instant` can hold,
    /// which means "never".
    fn due(&self) -> Option<Instant> {
        match self.state {
            State::Idle {
                period,
                last_active,
                ..
            } => last_active.checked_add(period),
            State::Deadline { at } => Some(at),
        }
    }

    fn kind(&self) -> TimerKind {
        match self.state {
            State::Idle { period, .. } => TimerKind::Idle { period },
            State::Deadline { .. } => TimerKind::Deadline,
        }
    }
}

/// Heap key: (due time as pushed, arming sequence, slot index), smallest first.
type HeapItem = Reverse<(Instant, u64, u32)>;

/// Dead heap entries beyond `2 * len()` that are tolerated before a rebuild,
/// so that small timer sets do not rebuild on every cancel.
const COMPACT_SLACK: usize = 64;

/// A set of idle timers and deadlines, keyed by a caller-chosen `K` (a socket
/// token, typically), with a free [`touch`](Timers::touch).
///
/// Single-threaded and clock-agnostic: every method that needs the time takes
/// `now`, which the reactor reads once per loop turn from a [`Clock`].
///
/// Timers due at the same instant fire in the order they were armed (an idle
/// timer keeps its arming position across touches and re-fires).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use finwait::timers::{Clock, ManualClock, Timers};
///
/// let clock = ManualClock::new();
/// let mut timers = Timers::new();
/// let idle = timers.arm_idle("conn-1", Duration::from_secs(30), clock.now());
/// let fin = timers.arm_deadline("conn-2", clock.now() + Duration::from_secs(60));
///
/// // Traffic on conn-1 keeps pushing its timeout back, at no cost.
/// clock.advance(Duration::from_secs(20));
/// timers.touch(idle, clock.now());
///
/// clock.advance(Duration::from_secs(20)); // t = 40 s
/// let mut fired = Vec::new();
/// timers.expire(clock.now(), |id, key| fired.push((id, key)));
/// assert!(fired.is_empty()); // conn-1 was active at 20 s: due at 50 s
///
/// clock.advance(Duration::from_secs(20)); // t = 60 s
/// timers.expire(clock.now(), |id, key| fired.push((id, key)));
/// assert_eq!(fired, [(idle, "conn-1"), (fin, "conn-2")]);
/// assert!(timers.contains(idle)); // idle timers stay armed, silent
/// assert!(!timers.contains(fin)); // deadlines are gone once fired
/// ```
#[derive(Debug)]
pub struct Timers<K> {
    entries: Table<TimerId, Entry<K>>,
    heap: BinaryHeap<HeapItem>,
    next_seq: u64,
}

impl<K: Copy> Default for Timers<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy> Timers<K> {
    /// An empty set. Allocates nothing until the first timer is armed.
    pub fn new() -> Self {
        Self {
            entries: Table::default(),
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// An empty set with room for `capacity` armed timers before the slot
    /// table or the heap has to grow.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Table::with_capacity(capacity),
            heap: BinaryHeap::with_capacity(capacity),
            next_seq: 0,
        }
    }

    /// Arms an idle timer that fires `period` after `now` unless
    /// [`touch`](Self::touch)ed in the meantime.
    ///
    /// A zero `period` is accepted and fires at the next [`expire`](Self::expire)
    /// (and after every touch); callers that treat a zero timeout as
    /// "no timeout" must not arm a timer for it. A period so large that the
    /// due time is not representable means the timer never fires.
    ///
    /// # Panics
    ///
    /// Only if more than `u32::MAX` timers are armed at once, which would need
    /// hundreds of gigabytes first.
    pub fn arm_idle(&mut self, key: K, period: Duration, now: Instant) -> TimerId {
        self.insert(
            key,
            State::Idle {
                period,
                last_active: now,
            },
        )
    }

    /// Arms a one-shot deadline at `at`. An `at` already in the past fires at
    /// the next [`expire`](Self::expire).
    ///
    /// # Panics
    ///
    /// As for [`arm_idle`](Self::arm_idle).
    pub fn arm_deadline(&mut self, key: K, at: Instant) -> TimerId {
        self.insert(key, State::Deadline { at })
    }

    fn insert(&mut self, key: K, state: State) -> TimerId {
        let index = self.entries.next_key().index;
        let seq = self.next_seq;
        // 2^64 arms cannot happen; wrapping keeps debug builds panic-free.
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut entry = Entry {
            key,
            seq,
            in_heap: false,
            state,
        };
        if let Some(due) = entry.due() {
            self.heap.push(Reverse((due, seq, index)));
            entry.in_heap = true;
        }
        self.entries.insert(entry)
    }

    /// Records activity on an idle timer at `now`, postponing it to
    /// `now + period`.
    ///
    /// O(1): stores the time and nothing else. The one exception is the first
    /// touch after the timer fired, which pushes it back into the heap so it
    /// can fire again after another idle period.
    ///
    /// Activity recorded before [`expire`](Self::expire) runs wins, even if the
    /// old due time had already passed: the timer is then postponed, not
    /// fired. A `now` earlier than the last recorded activity is ignored, so
    /// the due time never moves backwards. Stale ids and deadline timers are
    /// ignored.
    pub fn touch(&mut self, id: TimerId, now: Instant) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let State::Idle {
            period,
            last_active,
        } = &mut entry.state
        else {
            return;
        };
        if now > *last_active {
            *last_active = now;
        }
        // While the timer is in the heap its entry there is at or before the
        // new due time, and expire will move it; pushing again here would
        // make touch cost a heap operation, which is what this type avoids.
        if !entry.in_heap
            && let Some(due) = last_active.checked_add(*period)
        {
            self.heap.push(Reverse((due, entry.seq, id.index)));
            entry.in_heap = true;
        }
    }

    /// Cancels a timer. A cancelled timer never fires.
    ///
    /// Returns `false`, and does nothing, for an id that is not armed: already
    /// cancelled, a deadline that fired, or from another `Timers`.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        if self.entries.remove(id).is_none() {
            return false;
        }
        self.drop_dead_entries();
        true
    }

    /// Earliest instant at which [`expire`](Self::expire) may have something
    /// to do, or `None` when nothing can fire until a timer is armed or
    /// touched.
    ///
    /// Never later than the real due time of any timer that can fire. It may be
    /// earlier when a timer was touched since it was pushed: expire then only
    /// moves that timer, and this moves to its real due time.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Fires everything due at `now`.
    ///
    /// Idle timers whose last activity + period is at or before `now` fire;
    /// those touched since their heap entry was pushed are moved to their real
    /// due time without firing. `fire(id, key)` is called for each firing
    /// timer in nondecreasing due-time order; timers due at the same instant
    /// fire in arming order. Deadlines are removed before their `fire` call
    /// (their id is already stale there); idle timers stay armed but silent
    /// until touched.
    ///
    /// `fire` cannot reach `self`; a reactor that needs to re-arm or cancel in
    /// response collects the ids into a reused `Vec` and acts afterwards. If
    /// `fire` panics, the timers already fired and the one being fired are
    /// consistently marked fired, and the rest stay due.
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(TimerId, K)) {
        // Every method leaves a live entry on top, so a call that pops
        // nothing has no dead entries to clean up: the common idle wakeup
        // stays a single peek.
        let mut popped = false;
        while let Some(&Reverse((pushed_due, seq, index))) = self.heap.peek() {
            if pushed_due > now {
                break;
            }
            self.heap.pop();
            popped = true;
            let Some(id) = self.entries.key_at(index) else {
                continue;
            };
            let Some(entry) = self.entries.get_mut(id) else {
                continue;
            };
            if entry.seq != seq {
                continue; // left behind by a cancelled timer
            }
            entry.in_heap = false;
            match &mut entry.state {
                State::Deadline { .. } => {
                    if let Some(entry) = self.entries.remove(id) {
                        fire(id, entry.key);
                    }
                }
                State::Idle {
                    period,
                    last_active,
                } => match last_active.checked_add(*period) {
                    // The pushed time is never later than the real one, so
                    // equality means "not touched since". Firing leaves the
                    // timer out of the heap until the next touch.
                    Some(due) if due <= pushed_due => fire(id, entry.key),
                    // Touched since: re-pushing at the real due time (even if
                    // that is also <= now) keeps the firing order by due time.
                    Some(due) => {
                        self.heap.push(Reverse((due, seq, index)));
                        entry.in_heap = true;
                    }
                    None => {} // due beyond the representable: never
                },
            }
        }
        if popped {
            self.drop_dead_entries();
        }
    }

    /// Number of armed timers, idle and deadline (silent idle timers count).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is still armed: not cancelled, and not a deadline that
    /// fired.
    pub fn contains(&self, id: TimerId) -> bool {
        self.entries.contains(id)
    }

    /// The kind of an armed timer, or `None` for a stale id.
    pub fn kind(&self, id: TimerId) -> Option<TimerKind> {
        self.entries.get(id).map(Entry::kind)
    }

    /// Drops dead entries on top of the heap, so `next_wakeup` never points at
    /// a cancelled timer, and rebuilds the heap when dead entries pile up.
    fn drop_dead_entries(&mut self) {
        while let Some(&Reverse((_, seq, index))) = self.heap.peek() {
            if is_live(&self.entries, seq, index) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.entries.len() + COMPACT_SLACK {
            let entries = &self.entries;
            self.heap
                .retain(|&Reverse((_, seq, index))| is_live(entries, seq, index));
        }
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    fn top_is_live(&self) -> bool {
        self.heap
            .peek()
            .is_none_or(|&Reverse((_, seq, index))| is_live(&self.entries, seq, index))
    }
}

/// Whether a heap entry belongs to the timer now in its slot. A live timer has
/// at most one heap entry, so matching the sequence number is enough.
fn is_live<K>(entries: &Table<TimerId, Entry<K>>, seq: u64, index: u32) -> bool {
    entries.get_at(index).is_some_and(|e| e.seq == seq)
}

/// Where the reactor gets "now"; tests inject a [`ManualClock`].
///
/// `Debug` is a supertrait so that a reactor holding a `Box<dyn Clock>` can
/// still derive `Debug`; `Send` so that a reactor can be built on one thread
/// and run on another.
pub trait Clock: std::fmt::Debug + Send {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

impl<C: Clock + Sync + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// The real monotonic clock: [`Instant::now`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told.
///
/// Clones share the same time: clone it into the reactor and keep one to
/// advance (from any thread).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use finwait::timers::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let reactor_clock = clock.clone();
/// let start = reactor_clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(reactor_clock.now() - start, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock that starts at the real `Instant::now()` and stays there.
    pub fn new() -> Self {
        Self {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Moves the time forward by `d`. A step past what `Instant` can hold is
    /// ignored rather than panicking.
    pub fn advance(&self, d: Duration) {
        let mut now = self.lock();
        if let Some(t) = now.checked_add(d) {
            *now = t;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        // A panic while holding this lock cannot leave the Instant half-written.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the time to `t`. An earlier `t` is ignored: a clock that the
    /// reactor trusts must not go backwards.
    pub fn set(&self, t: Instant) {
        let mut now = self.lock();
        if t > *now {
            *now = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fired<K: Copy>(timers: &mut Timers<K>, now: Instant) -> Vec<(TimerId, K)> {
        let mut out = Vec::new();
        timers.expire(now, |id, key| out.push((id, key)));
        out
    }

    fn keys<K: Copy>(timers: &mut Timers<K>, now: Instant) -> Vec<K> {
        fired(timers, now).into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn idle_fires_after_period_without_activity() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(7, ms(100), t0);
        assert!(keys(&mut timers, t0 + ms(99)).is_empty());
        assert_eq!(fired(&mut timers, t0 + ms(100)), [(id, 7)]);
    }

    #[test]
    fn idle_fires_once_per_idle_period() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        assert_eq!(keys(&mut timers, t0 + ms(150)), [1]);
        for step in 2..50 {
            assert!(keys(&mut timers, t0 + ms(100 * step)).is_empty());
        }
        assert!(timers.contains(id), "a fired idle timer stays armed");
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_wakeup(), None, "a silent timer needs no wakeup");
    }

    #[test]
    fn touch_postpones_idle_timer() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        timers.touch(id, t0 + ms(60));
        assert!(keys(&mut timers, t0 + ms(100)).is_empty());
        assert!(keys(&mut timers, t0 + ms(159)).is_empty());
        assert_eq!(keys(&mut timers, t0 + ms(160)), [1]);
    }

    #[test]
    fn touched_after_fire_fires_again_after_period() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        assert_eq!(keys(&mut timers, t0 + ms(100)), [1]);
        timers.touch(id, t0 + ms(130));
        assert_eq!(timers.next_wakeup(), Some(t0 + ms(230)));
        assert!(keys(&mut timers, t0 + ms(229)).is_empty());
        assert_eq!(fired(&mut timers, t0 + ms(230)), [(id, 1)]);
    }

    #[test]
    fn activity_recorded_before_expire_wins_over_passed_due_time() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        // The reactor handled I/O at 120 ms before getting round to expire.
        timers.touch(id, t0 + ms(120));
        assert!(keys(&mut timers, t0 + ms(125)).is_empty());
        assert_eq!(keys(&mut timers, t0 + ms(220)), [1]);
    }

    #[test]
    fn touch_does_not_push_while_timer_is_in_heap() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let ids: Vec<_> = (0..100).map(|k| timers.arm_idle(k, ms(1000), t0)).collect();
        let before = timers.heap_len();
        for round in 1..=1000u64 {
            for &id in &ids {
                timers.touch(id, t0 + Duration::from_micros(round));
            }
        }
        assert_eq!(timers.heap_len(), before);
    }

    #[test]
    fn busy_timer_costs_one_repush_per_period_not_per_touch() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        let mut now = t0;
        let mut wakeups = 0;
        for _ in 0..10_000 {
            now += ms(1);
            timers.touch(id, now);
            if timers.next_wakeup().is_some_and(|w| w <= now) {
                wakeups += 1;
                assert!(keys(&mut timers, now).is_empty());
            }
            assert_eq!(timers.heap_len(), 1);
        }
        // 10 s of activity with a 100 ms period: about one wakeup per period.
        assert!(wakeups <= 10_000 / 99, "{wakeups} wakeups");
    }

    #[test]
    fn deadline_fires_once_and_is_removed() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_deadline('d', t0 + ms(50));
        assert!(keys(&mut timers, t0 + ms(49)).is_empty());
        assert_eq!(fired(&mut timers, t0 + ms(50)), [(id, 'd')]);
        assert!(!timers.contains(id));
        assert!(timers.is_empty());
        assert!(keys(&mut timers, t0 + ms(500)).is_empty());
        assert_eq!(timers.next_wakeup(), None);
    }

    #[test]
    fn deadline_in_the_past_fires_on_next_expire() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.arm_deadline(1, t0);
        assert_eq!(keys(&mut timers, t0 + ms(10)), [1]);
    }

    #[test]
    fn touch_on_deadline_does_not_move_it() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_deadline(1, t0 + ms(50));
        timers.touch(id, t0 + ms(40));
        assert_eq!(keys(&mut timers, t0 + ms(50)), [1]);
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let idle = timers.arm_idle(1, ms(10), t0);
        let deadline = timers.arm_deadline(2, t0 + ms(10));
        let touched = timers.arm_idle(3, ms(10), t0);
        timers.touch(touched, t0 + ms(5));
        assert!(timers.cancel(idle));
        assert!(timers.cancel(deadline));
        assert!(timers.cancel(touched));
        timers.touch(touched, t0 + ms(6));
        assert!(keys(&mut timers, t0 + ms(1000)).is_empty());
        assert!(timers.is_empty());
        assert_eq!(timers.heap_len(), 0, "dead entries on top are dropped");
    }

    #[test]
    fn cancel_of_fired_idle_timer_disarms_it() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(10), t0);
        assert_eq!(keys(&mut timers, t0 + ms(10)), [1]);
        assert!(timers.cancel(id));
        timers.touch(id, t0 + ms(20));
        assert!(keys(&mut timers, t0 + ms(1000)).is_empty());
    }

    #[test]
    fn cancel_returns_false_for_stale_or_unknown_id() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(10), t0);
        assert!(timers.cancel(id));
        assert!(!timers.cancel(id), "double cancel");
        let deadline = timers.arm_deadline(2, t0);
        assert_eq!(keys(&mut timers, t0), [2]);
        assert!(!timers.cancel(deadline), "deadline that fired");
        let unknown = TimerId {
            index: u32::MAX,
            generation: 0,
        };
        assert!(!timers.cancel(unknown));
        assert!(!timers.contains(unknown));
        timers.touch(unknown, t0);
        assert_eq!(timers.kind(unknown), None);
    }

    #[test]
    fn stale_id_after_slot_reuse_is_ignored() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let old = timers.arm_idle(1, ms(10), t0);
        assert!(timers.cancel(old));
        let new = timers.arm_idle(2, ms(10), t0);
        assert_eq!(old.index, new.index, "the slot is reused");
        assert_ne!(old, new);
        assert!(!timers.contains(old));
        assert!(!timers.cancel(old));
        timers.touch(old, t0 + ms(9)); // must not postpone `new`
        assert_eq!(fired(&mut timers, t0 + ms(10)), [(new, 2)]);
        assert!(timers.contains(new));
    }

    #[test]
    fn kind_reports_armed_kind() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let idle = timers.arm_idle(1, ms(10), t0);
        let deadline = timers.arm_deadline(2, t0);
        assert_eq!(timers.kind(idle), Some(TimerKind::Idle { period: ms(10) }));
        assert_eq!(timers.kind(deadline), Some(TimerKind::Deadline));
    }

    #[test]
    fn firing_order_is_monotonic() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        // Each key is the timer's real due time in ms, so fire order must
        // be sorted by key. Touches move half the idle timers past others.
        for i in 0..50u64 {
            let period = 10 + (i * 37) % 90;
            let touch_at = (i * 7) % 40;
            let touched = i % 2 == 0;
            let due = if touched { touch_at + period } else { period };
            let id = timers.arm_idle(due, ms(period), t0);
            if touched {
                timers.touch(id, t0 + ms(touch_at));
            }
            let at = 5 + (i * 53) % 200;
            timers.arm_deadline(at, t0 + ms(at));
        }
        let order = keys(&mut timers, t0 + ms(10_000));
        assert_eq!(order.len(), 100);
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    }

    #[test]
    fn ties_fire_in_arming_order() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.arm_idle('a', ms(20), t0);
        timers.arm_deadline('b', t0 + ms(30));
        timers.arm_idle('c', ms(30), t0);
        timers.arm_deadline('d', t0 + ms(30));
        timers.touch(a, t0 + ms(10)); // now also due at 30 ms
        assert_eq!(keys(&mut timers, t0 + ms(30)), ['a', 'b', 'c', 'd']);
    }

    #[test]
    fn next_wakeup_never_later_than_real_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.arm_idle(1, ms(100), t0);
        let b = timers.arm_idle(2, ms(300), t0);
        timers.arm_deadline(3, t0 + ms(250));
        timers.touch(a, t0 + ms(90));
        timers.touch(b, t0 + ms(10));
        let real = [t0 + ms(190), t0 + ms(310), t0 + ms(250)];
        let earliest = real.iter().min().copied();
        assert!(timers.next_wakeup() <= earliest);
        assert!(timers.next_wakeup().is_some());
    }

    #[test]
    fn reactor_sleeping_until_next_wakeup_fires_exactly_on_time() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        // I/O every 30 ms until 1 s, then silence; the loop sleeps exactly
        // until next_wakeup, so it must fire one period after the last I/O.
        let mut last_io = t0;
        let mut fired_at = None;
        let mut spins = 0;
        while fired_at.is_none() && spins < 1000 {
            spins += 1;
            let next = timers.next_wakeup().expect("a timer is pending");
            let io_at = clock.now() + ms(30);
            if io_at < next && io_at <= t0 + ms(1000) {
                clock.set(io_at);
                timers.touch(id, clock.now());
                last_io = io_at;
                continue;
            }
            clock.set(next);
            timers.expire(clock.now(), |_, _| fired_at = Some(clock.now()));
        }
        assert!(last_io > t0 + ms(900));
        assert_eq!(fired_at, Some(last_io + ms(100)));
    }

    #[test]
    fn next_wakeup_skips_cancelled_timers() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let first = timers.arm_deadline(1, t0 + ms(10));
        timers.arm_deadline(2, t0 + ms(20));
        assert_eq!(timers.next_wakeup(), Some(t0 + ms(10)));
        timers.cancel(first);
        assert_eq!(timers.next_wakeup(), Some(t0 + ms(20)));
    }

    #[test]
    fn entry_stays_small() {
        // touch walks these; a bigger entry means more cache misses per touch.
        assert!(std::mem::size_of::<Entry<u64>>() <= 64);
    }

    #[test]
    fn empty_timers_report_nothing() {
        let mut timers: Timers<u8> = Timers::default();
        assert!(timers.is_empty());
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_wakeup(), None);
        assert!(keys(&mut timers, Instant::now()).is_empty());
    }

    #[test]
    fn heap_stays_bounded_under_arm_cancel_churn() {
        let t0 = Instant::now();
        let mut timers = Timers::with_capacity(16);
        // Long-lived timers below the churn, so dead entries are not on top.
        let live: Vec<_> = (0..1000).map(|k| timers.arm_idle(k, ms(10), t0)).collect();
        let mut max_heap = 0;
        for k in 0..100_000u32 {
            let id = timers.arm_idle(k, ms(1_000_000), t0 + ms(u64::from(k)));
            assert!(timers.cancel(id));
            max_heap = max_heap.max(timers.heap_len());
            assert!(timers.heap_len() <= 2 * timers.len() + COMPACT_SLACK + 1);
        }
        assert_eq!(timers.len(), live.len());
        assert!(max_heap <= 2 * live.len() + COMPACT_SLACK + 1, "{max_heap}");
        assert_eq!(keys(&mut timers, t0 + ms(10)).len(), live.len());
    }

    #[test]
    fn heap_stays_bounded_when_deadlines_fire_among_dead_entries() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for round in 0..100u64 {
            let base = t0 + ms(round * 100);
            let ids: Vec<_> = (0..200)
                .map(|k| timers.arm_deadline(k, base + ms(50 + k % 7)))
                .collect();
            for id in ids.iter().skip(1).step_by(2) {
                timers.cancel(*id);
            }
            timers.expire(base + ms(99), |_, _| {});
            assert!(timers.heap_len() <= 2 * timers.len() + COMPACT_SLACK);
        }
        assert!(timers.is_empty());
    }

    #[test]
    fn now_earlier_than_due_or_last_activity_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, ms(100), t0);
        timers.touch(id, t0 - ms(50)); // clock glitch: must not shorten
        assert!(keys(&mut timers, t0 - Duration::from_secs(5)).is_empty());
        assert!(keys(&mut timers, t0 + ms(99)).is_empty());
        assert_eq!(keys(&mut timers, t0 + ms(100)), [1]);
        // A late touch that arrives after a later one keeps the later one.
        timers.touch(id, t0 + ms(150));
        timers.touch(id, t0 + ms(120));
        assert_eq!(timers.next_wakeup(), Some(t0 + ms(250)));
        timers.touch(id, t0 + ms(200));
        timers.touch(id, t0 + ms(160));
        assert!(keys(&mut timers, t0 + ms(299)).is_empty());
        assert_eq!(keys(&mut timers, t0 + ms(300)), [1]);
    }

    #[test]
    fn unrepresentable_due_time_never_fires_and_never_panics() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, Duration::MAX, t0);
        timers.touch(id, t0 + ms(1));
        assert_eq!(timers.next_wakeup(), None);
        assert!(keys(&mut timers, t0 + Duration::from_secs(1 << 40)).is_empty());
        assert!(timers.contains(id));
        assert!(timers.cancel(id));
    }

    #[test]
    fn zero_period_fires_at_next_expire() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let id = timers.arm_idle(1, Duration::ZERO, t0);
        assert_eq!(keys(&mut timers, t0), [1]);
        assert!(keys(&mut timers, t0 + ms(1)).is_empty());
        timers.touch(id, t0 + ms(2));
        assert_eq!(keys(&mut timers, t0 + ms(2)), [1]);
    }

    #[test]
    fn state_is_consistent_when_fire_panics() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.arm_deadline(1, t0 + ms(1));
        let b = timers.arm_idle(2, ms(2), t0);
        let c = timers.arm_deadline(3, t0 + ms(3));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            timers.expire(t0 + ms(3), |_, key| assert_ne!(key, 2));
        }));
        assert!(result.is_err());
        assert!(!timers.contains(a));
        assert!(timers.contains(b));
        assert!(timers.contains(c));
        assert_eq!(keys(&mut timers, t0 + ms(3)), [3], "b is not fired twice");
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::default();
        let other = clock.clone();
        let start = other.now();
        clock.advance(ms(250));
        assert_eq!(other.now(), start + ms(250));
        other.set(start + ms(300));
        assert_eq!(clock.now(), start + ms(300));
    }

    #[test]
    fn manual_clock_never_goes_backwards_or_panics() {
        let clock = ManualClock::new();
        let start = clock.now();
        clock.set(start - ms(1));
        assert_eq!(clock.now(), start);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn system_clock_is_monotonic_and_usable_by_reference() {
        fn read(c: impl Clock) -> Instant {
            c.now()
        }
        let a = read(SystemClock);
        let b = read(SystemClock);
        assert!(b >= a);
        let manual = ManualClock::new();
        assert_eq!(read(&manual), manual.now());
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[derive(Debug)]
    enum Model {
        Idle {
            period: Duration,
            last: Instant,
            silent: bool,
        },
        Deadline {
            at: Instant,
        },
    }

    impl Model {
        fn pending_due(&self) -> Option<Instant> {
            match *self {
                Model::Idle {
                    period,
                    last,
                    silent: false,
                } => Some(last + period),
                Model::Idle { .. } => None,
                Model::Deadline { at } => Some(at),
            }
        }
    }

    #[test]
    fn matches_reference_model_under_random_ops() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let t0 = Instant::now();
        let mut now = t0;
        let mut timers: Timers<u64> = Timers::new();
        // Keyed by the arming sequence, which is also the timer's key, so
        // iterating the map visits timers in arming order.
        let mut model: BTreeMap<u64, (TimerId, Model)> = BTreeMap::new();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut next_key = 0u64;
        let mut total_fired = 0usize;
        let mut expires_with_fire = 0usize;

        for step in 0..50_000 {
            let mut op = rng.below(100);
            if model.len() > 256 && op < 30 {
                op = 65; // keep the live set small and slots churning
            }
            match op {
                0..=14 => {
                    let period = ms(1 + rng.below(40));
                    let id = timers.arm_idle(next_key, period, now);
                    let m = Model::Idle {
                        period,
                        last: now,
                        silent: false,
                    };
                    model.insert(next_key, (id, m));
                    next_key += 1;
                }
                15..=29 => {
                    // Some deadlines are already in the past.
                    let offset = rng.below(45);
                    let at = (now + ms(offset)).checked_sub(ms(5)).unwrap_or(t0).max(t0);
                    let id = timers.arm_deadline(next_key, at);
                    model.insert(next_key, (id, Model::Deadline { at }));
                    next_key += 1;
                }
                30..=59 => {
                    if let Some(key) = pick(&mut rng, &model) {
                        let (id, m) = model.get_mut(&key).unwrap();
                        timers.touch(*id, now);
                        if let Model::Idle { last, silent, .. } = m {
                            *last = (*last).max(now);
                            *silent = false;
                        }
                    } else if let Some(&id) = dead.last() {
                        timers.touch(id, now);
                    }
                }
                60..=69 => {
                    if rng.below(4) == 0 && !dead.is_empty() {
                        let id = dead[rng.below(dead.len() as u64) as usize];
                        assert!(!timers.cancel(id), "stale cancel at step {step}");
                    } else if let Some(key) = pick(&mut rng, &model) {
                        let (id, _) = model.remove(&key).unwrap();
                        assert!(timers.cancel(id), "live cancel at step {step}");
                        dead.push(id);
                    }
                }
                70..=84 => now += Duration::from_micros(rng.below(4) * 500),
                _ => {
                    let mut expected: BTreeMap<(Instant, u64), TimerId> = BTreeMap::new();
                    for (&key, (id, m)) in &model {
                        if let Some(due) = m.pending_due().filter(|&d| d <= now) {
                            expected.insert((due, key), *id);
                        }
                    }
                    let expected: Vec<(TimerId, u64)> =
                        expected.iter().map(|(&(_, key), &id)| (id, key)).collect();
                    for &(id, key) in &expected {
                        match &mut model.get_mut(&key).unwrap().1 {
                            Model::Idle { silent, .. } => *silent = true,
                            Model::Deadline { .. } => {
                                model.remove(&key);
                                dead.push(id);
                            }
                        }
                    }
                    let got = fired(&mut timers, now);
                    assert_eq!(got, expected, "expire at step {step}");
                    total_fired += got.len();
                    expires_with_fire += usize::from(!got.is_empty());
                }
            }
            if dead.len() > 1024 {
                dead.drain(..512);
            }

            assert_eq!(timers.len(), model.len(), "len at step {step}");
            assert!(timers.heap_len() <= 2 * timers.len() + COMPACT_SLACK);
            assert!(timers.top_is_live(), "dead entry on top at step {step}");
            let earliest = model.values().filter_map(|(_, m)| m.pending_due()).min();
            let wakeup = timers.next_wakeup();
            assert_eq!(wakeup.is_some(), earliest.is_some(), "step {step}");
            assert!(wakeup <= earliest, "wakeup later than a due at step {step}");
            if step % 1000 == 0 {
                for (id, _) in model.values() {
                    assert!(timers.contains(*id));
                }
                for id in &dead {
                    assert!(!timers.contains(*id));
                }
            }
        }
        // The run must actually exercise firing, not pass vacuously.
        assert!(total_fired > 5_000, "{total_fired}");
        assert!(expires_with_fire > 1_000, "{expires_with_fire}");
    }

    fn pick(rng: &mut Rng, model: &BTreeMap<u64, (TimerId, Model)>) -> Option<u64> {
        if model.is_empty() {
            return None;
        }
        let n = rng.below(model.len() as u64) as usize;
        model.keys().nth(n).copied()
    }
}
