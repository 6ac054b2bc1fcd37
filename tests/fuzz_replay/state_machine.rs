//! The sans-IO socket machine `finwait::state::Conn`, driven the way the reactor drives it,
//! against an independent model of SEMANTICS.md part B.
//!
//! The harness plays both the program (write, end, destroy, destroy_soon, reset, pause,
//! resume) and the reactor: it hands queued bytes to a pretend kernel only when the machine
//! says it may (`may_send`), reads only when it `wants_read`, answers every
//! [`Action::Shutdown`] at once (before any other input, with the outcome the next operation
//! names, `Ok` by default), tracks armed deadlines from [`Action::ArmDeadline`] and fires only
//! those, and calls `after_end_delivered` once the `End` event's "handler" has made its calls.
//!
//! After every step it checks the exact events against the model, the machine's state and
//! every predicate, the byte accounting (`bytes_written`, `bytes_queued`, `unsent`), the queued
//! bytes themselves (a running pattern, so handed bytes are a prefix of accepted bytes), the
//! FIN (at most once, only with an empty queue, nothing sent after it), and the close protocol
//! (one `Close`, last, `Error` right before it, no action at all afterwards).

use std::io::{self, IoSlice};

use finwait::state::{Action, Actions, Conn, ConnOptions, Ending};
use finwait::write_queue::MAX_SLICES;
use finwait::{CloseInfo, CloseReason, Deadline, Error, Event, Fin, ReadyState, SocketId, State};

/// An I/O error kind the pretend kernel can report.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Reset,
    BrokenPipe,
    Aborted,
    TimedOut,
    Refused,
    NotConnected,
    Other,
}

impl IoKind {
    fn error(self) -> io::Error {
        let kind = match self {
            IoKind::Reset => io::ErrorKind::ConnectionReset,
            IoKind::BrokenPipe => io::ErrorKind::BrokenPipe,
            IoKind::Aborted => io::ErrorKind::ConnectionAborted,
            IoKind::TimedOut => io::ErrorKind::TimedOut,
            IoKind::Refused => io::ErrorKind::ConnectionRefused,
            IoKind::NotConnected => io::ErrorKind::NotConnected,
            IoKind::Other => io::ErrorKind::Other,
        };
        io::Error::from(kind)
    }

    /// SEMANTICS B2.7: resets are reported as resets, everything else as errors.
    fn reason(self) -> CloseReason {
        match self {
            IoKind::Reset | IoKind::BrokenPipe | IoKind::Aborted => CloseReason::PeerReset,
            _ => CloseReason::Error,
        }
    }
}

/// How the pretend kernel answers `shutdown(Write)`.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownResult {
    Ok,
    Err(IoKind),
}

/// A deadline kind (`finwait::Deadline` is not `Arbitrary`).
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineKind {
    Connect,
    FinWait,
    Linger,
    Shutdown,
}

impl DeadlineKind {
    fn deadline(self) -> Deadline {
        match self {
            DeadlineKind::Connect => Deadline::Connect,
            DeadlineKind::FinWait => Deadline::FinWait,
            DeadlineKind::Linger => Deadline::Linger,
            DeadlineKind::Shutdown => Deadline::Shutdown,
        }
    }
}

/// One input: a program call, an I/O outcome, a deadline, or the reactor's answer to a
/// `Shutdown` action.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum Operation {
    /// Only as the first operation: how the socket is created (default: accepted, no
    /// half-open, high-water mark 16).
    Config {
        connecting: bool,
        allow_half_open: bool,
        high_water_mark: u8,
    },
    /// `write` of `len` pattern bytes; when the reactor would try a direct send (queue empty,
    /// may send) the kernel takes `direct % (len + 1)` of them at once.
    Write {
        len: u8,
        direct: u8,
    },
    /// `queue_write_owned` of `len` pattern bytes.
    WriteOwned {
        len: u8,
    },
    /// `write` whose direct send fails: the bytes are accepted, then the error is reported.
    WriteFails {
        len: u8,
        kind: IoKind,
    },
    /// `end`.
    End,
    /// `end_with`: a write, then `end`.
    EndWith {
        len: u8,
        direct: u8,
    },
    /// `destroy`, with or without an error.
    Destroy {
        with_error: bool,
    },
    /// `destroy_soon`.
    DestroySoon,
    /// `reset_and_destroy`.
    Reset,
    Pause,
    Resume,
    /// The kernel took `n % (queued + 1)` queued bytes (0: WouldBlock, nothing happens).
    Written {
        n: u16,
    },
    /// The kernel took everything queued.
    WrittenAll,
    /// The vectored write failed.
    FlushError(IoKind),
    /// `n` bytes were read.
    Read {
        n: u16,
    },
    /// A zero-byte read: the peer's FIN.
    Eof,
    /// A zero-byte read with a pending reset (FIN + RST together): reported as a reset.
    EofReset,
    /// A read failed.
    ReadError(IoKind),
    /// The connect completed.
    Connected,
    /// The connect failed.
    ConnectFailed(IoKind),
    /// A deadline fired (only one the reactor has armed, or a reactor-wide shutdown grace).
    Deadline(DeadlineKind),
    /// The answer to an outstanding `Shutdown`; used only right after the step that asked.
    ShutdownOutcome(ShutdownResult),
    /// The `End` handler returns (the reactor then calls `after_end_delivered`).
    DeliverEnd,
}

/// Events in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Connect,
    End,
    Finish,
    Drain,
    Error,
    Close(CloseInfo),
}

/// The machine only logs its id.
fn socket_id() -> SocketId {
    SocketId::from_parts(0, 0)
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// The model: what SEMANTICS.md says the socket is, as plain facts.
#[derive(Debug)]
struct Model {
    allow_half_open: bool,
    high_water_mark: usize,
    connected: bool,
    /// `end`/`destroy_soon` asked before the connect completed.
    ending: Option<Ending>,
    /// Our side ended (`end`, `destroy_soon`, or the automatic end): writes refused.
    ended: bool,
    /// A lingering close (`destroy_soon`) is running: input is discarded.
    linger: bool,
    fin_sent: bool,
    peer_fin: bool,
    destroyed: bool,
    paused: bool,
    accepted: u64,
    handed: u64,
    dropped: u64,
    read: u64,
    drain_owed: bool,
    /// Events expected from the current step.
    events: Vec<Ev>,
    /// `Shutdown` actions expected in total.
    shutdowns: usize,
    /// Outcome of a `Shutdown` asked during the current step.
    outcome: ShutdownResult,
}

impl Model {
    fn queued(&self) -> u64 {
        self.accepted - self.handed - self.dropped
    }

    fn live(&self) -> bool {
        !self.destroyed
    }

    fn may_write(&self) -> bool {
        self.live()
            && if self.connected {
                !self.ended
            } else {
                self.ending.is_none()
            }
    }

    fn may_send(&self) -> bool {
        self.live() && self.connected && !self.fin_sent
    }

    fn may_recv(&self) -> bool {
        self.live() && self.connected && !self.peer_fin
    }

    fn delivers_data(&self) -> bool {
        self.may_recv() && !self.linger
    }

    fn wants_read(&self) -> bool {
        self.may_recv() && (!self.paused || !self.delivers_data())
    }

    fn closing(&self) -> bool {
        self.linger || (self.ended && self.peer_fin)
    }

    fn state(&self) -> State {
        let fin = if self.fin_sent {
            Fin::Sent
        } else {
            Fin::Pending
        };
        if self.destroyed {
            State::Destroyed
        } else if !self.connected {
            State::Connecting {
                ending: self.ending,
            }
        } else if self.closing() {
            State::Closing {
                fin,
                peer_fin: self.peer_fin,
            }
        } else if self.ended {
            State::HalfClosedLocal(fin)
        } else if self.peer_fin {
            State::HalfClosedRemote
        } else {
            State::Open
        }
    }

    fn ready_state(&self) -> ReadyState {
        if self.live() && !self.connected {
            return ReadyState::Opening;
        }
        let readable = self.may_recv();
        let writable = self.live() && self.connected && !self.ended;
        match (readable, writable) {
            (true, true) => ReadyState::Open,
            (true, false) => ReadyState::ReadOnly,
            (false, true) => ReadyState::WriteOnly,
            (false, false) => ReadyState::Closed,
        }
    }

    fn close(&mut self, reason: CloseReason, had_error: bool, error: bool) {
        let unsent = self.queued() as usize;
        self.dropped += unsent as u64;
        self.destroyed = true;
        self.drain_owed = false;
        if error {
            self.events.push(Ev::Error);
        }
        self.events.push(Ev::Close(CloseInfo {
            had_error,
            reason,
            unsent,
        }));
    }

    fn io_error(&mut self, kind: IoKind) {
        self.close(kind.reason(), true, true);
    }

    /// B2.1: the FIN follows the last queued byte, at once. When the peer's FIN is already
    /// in, `close` alone sends ours (crate docs: `Closing{Pending, true}` + queue empty):
    /// `Finish` and a graceful `Close`, no `Shutdown` asked.
    fn maybe_fin(&mut self) {
        if self.live() && self.connected && self.ended && !self.fin_sent && self.queued() == 0 {
            if self.peer_fin {
                self.fin_sent = true;
                self.events.push(Ev::Finish);
                self.close(CloseReason::Graceful, false, false);
                return;
            }
            self.shutdowns += 1;
            match self.outcome {
                ShutdownResult::Ok => {
                    self.fin_sent = true;
                    self.events.push(Ev::Finish);
                    if self.peer_fin {
                        self.close(CloseReason::Graceful, false, false);
                    }
                }
                ShutdownResult::Err(kind) => self.io_error(kind),
            }
        }
    }

    fn end(&mut self) -> Result<(), &'static str> {
        if self.destroyed {
            return Err("Destroyed");
        }
        if !self.connected {
            if self.ending.is_none() {
                self.ending = Some(Ending::End);
            }
        } else if !self.ended {
            self.ended = true;
            self.maybe_fin();
        }
        Ok(())
    }

    fn destroy_soon(&mut self) -> Result<(), &'static str> {
        if self.destroyed {
            return Err("Destroyed");
        }
        if !self.connected {
            self.ending = Some(Ending::DestroySoon);
        } else if !self.closing() {
            self.linger = true;
            self.ended = true;
            self.maybe_fin();
        }
        Ok(())
    }

    fn accept(&mut self, len: usize, sent: usize) -> bool {
        self.accepted += len as u64;
        self.handed += sent as u64;
        let below = (self.queued() as usize) < self.high_water_mark;
        if !below {
            self.drain_owed = true;
        }
        below
    }

    fn written(&mut self, n: u64) {
        let n = n.min(self.queued());
        if n == 0 {
            return;
        }
        self.handed += n;
        if self.queued() == 0 {
            if self.drain_owed {
                self.drain_owed = false;
                self.events.push(Ev::Drain);
            }
            self.maybe_fin();
        }
    }

    fn eof(&mut self) {
        let delivers = self.delivers_data();
        self.peer_fin = true;
        if delivers {
            self.events.push(Ev::End);
        }
        if self.fin_sent {
            self.close(CloseReason::Graceful, false, false);
        }
    }

    fn connected(&mut self) {
        self.connected = true;
        self.events.push(Ev::Connect);
        match self.ending.take() {
            None => {}
            Some(Ending::End) => {
                let _ = self.end();
            }
            Some(Ending::DestroySoon) => {
                let _ = self.destroy_soon();
            }
        }
    }

    fn after_end_delivered(&mut self) {
        if !self.allow_half_open && self.live() && self.connected && self.peer_fin && !self.ended {
            let _ = self.end();
        }
    }

    fn deadline(&mut self, which: DeadlineKind) {
        let applies = self.live()
            && match which {
                DeadlineKind::Connect => !self.connected,
                DeadlineKind::FinWait => self.connected && self.ended,
                DeadlineKind::Linger => self.connected && self.closing(),
                DeadlineKind::Shutdown => true,
            };
        if applies {
            let connect = which == DeadlineKind::Connect;
            self.close(CloseReason::Deadline(which.deadline()), connect, connect);
        }
    }
}

/// Where the close protocol stands, judged from the actions alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    /// `Action::Close` seen: only `Error` then `Close`, or `Close`, may follow.
    CloseAction,
    /// `Error` seen after the close action: only `Close` may follow.
    ErrorEvent,
    /// `Close` delivered: nothing may follow, ever.
    Closed,
}

/// What the harness, playing the reactor, knows from the actions.
#[derive(Debug)]
struct Reactorish {
    phase: Phase,
    /// The deadline the reactor has armed for this socket (one at a time).
    armed: Option<Deadline>,
    reset: Option<bool>,
    shutdowns: usize,
    fin_ok: bool,
    finishes: usize,
    ends: usize,
    connects: usize,
    closes: usize,
    /// An `End` was emitted and its handler has not returned yet.
    end_pending: bool,
    /// Events of the current step.
    events: Vec<Ev>,
}

/// Carries out the machine's actions in order, as `Context::apply` does: a `Shutdown` is
/// answered at once with `outcome`, its consequences joining the same queue.
fn apply(
    conn: &mut Conn,
    out: &mut Actions,
    r: &mut Reactorish,
    outcome: ShutdownResult,
    step: usize,
) {
    while let Some(action) = out.pop_front() {
        assert_ne!(
            r.phase,
            Phase::Closed,
            "step {step}: action after Close: {action:?}"
        );
        match action {
            Action::Shutdown => {
                assert_eq!(
                    r.phase,
                    Phase::Live,
                    "step {step}: Shutdown after the close action"
                );
                assert_eq!(r.shutdowns, 0, "step {step}: FIN asked for twice");
                assert_eq!(
                    conn.bytes_queued(),
                    0,
                    "step {step}: FIN asked with bytes queued"
                );
                assert!(
                    matches!(
                        conn.state(),
                        State::HalfClosedLocal(Fin::Pending)
                            | State::Closing {
                                fin: Fin::Pending,
                                ..
                            }
                    ),
                    "step {step}: FIN asked in state {:?}",
                    conn.state()
                );
                r.shutdowns += 1;
                let result = match outcome {
                    ShutdownResult::Ok => {
                        r.fin_ok = true;
                        Ok(())
                    }
                    ShutdownResult::Err(kind) => Err(kind.error()),
                };
                conn.on_shutdown(result, out);
            }
            Action::Close { reset } => {
                assert_eq!(r.phase, Phase::Live, "step {step}: second close action");
                assert!(
                    conn.is_destroyed(),
                    "step {step}: close action on a live machine"
                );
                r.phase = Phase::CloseAction;
                r.reset = Some(reset);
                r.armed = None;
            }
            Action::ArmDeadline(d) => {
                assert_eq!(
                    r.phase,
                    Phase::Live,
                    "step {step}: deadline armed after the close action"
                );
                // The reactor ignores an arm for a socket already destroyed in this batch.
                r.armed = if conn.is_destroyed() { None } else { Some(d) };
            }
            Action::Emit(event) => {
                let ev = match event {
                    Event::Connect => {
                        r.connects += 1;
                        Ev::Connect
                    }
                    Event::End => {
                        r.ends += 1;
                        r.end_pending = true;
                        Ev::End
                    }
                    Event::Finish => {
                        r.finishes += 1;
                        // Either `shutdown` succeeded, or the FIN goes with a graceful close.
                        assert!(
                            r.fin_ok || conn.is_destroyed(),
                            "step {step}: Finish without a successful FIN"
                        );
                        Ev::Finish
                    }
                    Event::Drain => Ev::Drain,
                    Event::Error(_) => {
                        assert_eq!(
                            r.phase,
                            Phase::CloseAction,
                            "step {step}: Error not right before Close"
                        );
                        r.phase = Phase::ErrorEvent;
                        Ev::Error
                    }
                    Event::Close(info) => {
                        assert!(
                            matches!(r.phase, Phase::CloseAction | Phase::ErrorEvent),
                            "step {step}: Close event without the close action"
                        );
                        assert_eq!(
                            info.had_error,
                            r.phase == Phase::ErrorEvent,
                            "step {step}: had_error disagrees with the Error event"
                        );
                        // B2.1: a close that drops queued bytes sends RST, never FIN.
                        assert_eq!(
                            r.reset,
                            Some(info.reason == CloseReason::LocalReset || info.unsent > 0),
                            "step {step}: RST exactly for reset_and_destroy and truncation"
                        );
                        r.phase = Phase::Closed;
                        r.closes += 1;
                        Ev::Close(info)
                    }
                    other => panic!("step {step}: unexpected event {other:?}"),
                };
                r.events.push(ev);
            }
        }
    }
}

fn data(model: &Model, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|k| pattern(model.accepted + k))
        .collect()
}

fn error_name(e: &Error) -> &'static str {
    match e {
        Error::Destroyed => "Destroyed",
        Error::WriteAfterEnd => "WriteAfterEnd",
        Error::StaleId => "StaleId",
        _ => "other",
    }
}

fn check_write_expected(m: &Model) -> Result<(), &'static str> {
    if m.may_write() {
        Ok(())
    } else if m.destroyed {
        Err("Destroyed")
    } else {
        Err("WriteAfterEnd")
    }
}

/// The queue holds exactly the accepted bytes not yet handed, in order.
fn check_queue(conn: &Conn, m: &Model, step: usize) {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let n = conn.queue().fill(&mut slices);
    let mut offset = m.handed;
    for s in &slices[..n] {
        for (k, &b) in s.iter().enumerate() {
            assert_eq!(
                b,
                pattern(offset + k as u64),
                "step {step}: queued byte at stream offset {} is wrong",
                offset + k as u64
            );
        }
        offset += s.len() as u64;
    }
    if n < MAX_SLICES {
        assert_eq!(
            offset - m.handed,
            m.queued(),
            "step {step}: fill misses queued bytes"
        );
    }
}

fn check_facts(conn: &Conn, m: &Model, r: &Reactorish, step: usize, op: &Operation) {
    let ctx = || format!("step {step} ({op:?}), model {m:?}");
    assert_eq!(conn.state(), m.state(), "state: {}", ctx());
    assert_eq!(conn.may_write(), m.may_write(), "may_write: {}", ctx());
    assert_eq!(conn.may_send(), m.may_send(), "may_send: {}", ctx());
    assert_eq!(conn.may_recv(), m.may_recv(), "may_recv: {}", ctx());
    assert_eq!(
        conn.delivers_data(),
        m.delivers_data(),
        "delivers_data: {}",
        ctx()
    );
    assert_eq!(conn.wants_read(), m.wants_read(), "wants_read: {}", ctx());
    assert_eq!(conn.is_destroyed(), m.destroyed, "is_destroyed: {}", ctx());
    assert_eq!(
        conn.ready_state(),
        m.ready_state(),
        "ready_state: {}",
        ctx()
    );
    assert_eq!(conn.is_paused(), m.paused, "is_paused: {}", ctx());
    assert_eq!(conn.bytes_written(), m.handed, "bytes_written: {}", ctx());
    assert_eq!(
        conn.bytes_queued() as u64,
        m.queued(),
        "bytes_queued: {}",
        ctx()
    );
    assert_eq!(conn.bytes_read(), m.read, "bytes_read: {}", ctx());
    assert_eq!(
        conn.check_write().map_err(|e| error_name(&e)),
        check_write_expected(m),
        "check_write: {}",
        ctx()
    );
    check_queue(conn, m, step);

    // Counts over the whole life.
    assert_eq!(r.shutdowns, m.shutdowns, "FIN requests: {}", ctx());
    assert!(
        r.shutdowns <= 1 && r.finishes <= 1 && r.ends <= 1 && r.connects <= 1,
        "{}",
        ctx()
    );
    assert!(r.closes <= 1, "more than one Close: {}", ctx());
    assert_eq!(
        r.closes == 1,
        m.destroyed,
        "Close event iff destroyed: {}",
        ctx()
    );
    assert_eq!(
        m.accepted,
        m.handed + m.queued() + m.dropped,
        "byte accounting: {}",
        ctx()
    );
    // Nothing reaches the kernel after the FIN or the close.
    if m.fin_sent || m.destroyed {
        assert!(!conn.may_send(), "may send after FIN/close: {}", ctx());
    }
    if m.live() && m.connected && m.ended {
        // B2.1: the FIN follows the last byte at once.
        if m.queued() == 0 {
            assert!(m.fin_sent, "queue empty after end but no FIN: {}", ctx());
        }
        // B2.5: an ended socket never waits without a deadline.
        assert!(
            matches!(r.armed, Some(Deadline::FinWait | Deadline::Linger)),
            "ended socket with no FIN-wait/linger deadline armed ({:?}): {}",
            r.armed,
            ctx()
        );
        if m.linger {
            assert_eq!(
                r.armed,
                Some(Deadline::Linger),
                "lingering without the linger deadline: {}",
                ctx()
            );
        }
    }
    if let Some(Ev::Close(info)) = r.events.last() {
        if info.reason == CloseReason::Graceful {
            assert!(
                r.finishes == 1 && m.peer_fin && info.unsent == 0,
                "graceful close without both FINs: {}",
                ctx()
            );
        } else {
            assert!(
                !r.events.contains(&Ev::Finish),
                "Finish in the same step as a {:?} close: {}",
                info.reason,
                ctx()
            );
        }
    }
}

pub fn replay(ops: &[Operation]) {
    let (connecting, allow_half_open, high_water_mark, start) = match ops.first() {
        Some(&Operation::Config {
            connecting,
            allow_half_open,
            high_water_mark,
        }) => (
            connecting,
            allow_half_open,
            1 + usize::from(high_water_mark % 64),
            1,
        ),
        _ => (false, false, 16, 0),
    };
    let options = ConnOptions {
        allow_half_open,
        high_water_mark,
        ..ConnOptions::default()
    };
    let id = socket_id();
    let mut conn = if connecting {
        Conn::connecting(id, options)
    } else {
        Conn::accepted(id, options)
    };
    assert_eq!(conn.options(), options);
    let mut m = Model {
        allow_half_open,
        high_water_mark,
        connected: !connecting,
        ending: None,
        ended: false,
        linger: false,
        fin_sent: false,
        peer_fin: false,
        destroyed: false,
        paused: false,
        accepted: 0,
        handed: 0,
        dropped: 0,
        read: 0,
        drain_owed: false,
        events: Vec::new(),
        shutdowns: 0,
        outcome: ShutdownResult::Ok,
    };
    let mut r = Reactorish {
        phase: Phase::Live,
        // A connect timeout, as `ConnectOptions::connect_timeout` arms it.
        armed: connecting.then_some(Deadline::Connect),
        reset: None,
        shutdowns: 0,
        fin_ok: false,
        finishes: 0,
        ends: 0,
        connects: 0,
        closes: 0,
        end_pending: false,
        events: Vec::new(),
    };
    let mut out = Actions::new();

    let mut i = start;
    while i < ops.len() {
        let op = ops[i];
        let step = i;
        i += 1;
        // The reactor answers a Shutdown before anything else: with the next operation's
        // outcome if it names one (then consumed), else Ok.
        let named = match ops.get(i) {
            Some(&Operation::ShutdownOutcome(o)) => Some(o),
            _ => None,
        };
        let outcome = named.unwrap_or(ShutdownResult::Ok);
        m.outcome = outcome;
        m.events.clear();
        r.events.clear();
        let shutdowns_before = r.shutdowns;

        let is_user_call = matches!(
            op,
            Operation::Write { .. }
                | Operation::WriteOwned { .. }
                | Operation::WriteFails { .. }
                | Operation::End
                | Operation::EndWith { .. }
                | Operation::Destroy { .. }
                | Operation::DestroySoon
                | Operation::Reset
                | Operation::Pause
                | Operation::Resume
        );
        // Anything but a call from the `End` handler means the handler returned first.
        if r.end_pending && !is_user_call {
            r.end_pending = false;
            conn.after_end_delivered(&mut out);
            m.after_end_delivered();
            apply(&mut conn, &mut out, &mut r, outcome, step);
            if matches!(op, Operation::DeliverEnd) {
                compare_events(&m, &r, step, &op);
                check_facts(&conn, &m, &r, step, &op);
                if r.shutdowns > shutdowns_before && named.is_some() {
                    i += 1;
                }
                continue;
            }
        }

        if m.destroyed {
            destroyed_step(&mut conn, &mut out, &m, &op, step);
            check_facts(&conn, &m, &r, step, &op);
            continue;
        }

        match op {
            Operation::Config { .. } | Operation::ShutdownOutcome(_) | Operation::DeliverEnd => {}
            Operation::Write { len, direct } => user_write(
                &mut conn,
                &mut out,
                &mut m,
                &mut r,
                usize::from(len),
                direct,
                outcome,
                step,
            ),
            Operation::WriteOwned { len } => {
                let expect = check_write_expected(&m);
                assert_eq!(
                    conn.check_write().map_err(|e| error_name(&e)),
                    expect,
                    "step {step}"
                );
                if expect.is_ok() {
                    let bytes = data(&m, usize::from(len));
                    let below = conn.queue_write_owned(bytes);
                    assert_eq!(
                        below,
                        m.accept(usize::from(len), 0),
                        "step {step}: write() result"
                    );
                }
            }
            Operation::WriteFails { len, kind } => {
                let len = usize::from(len);
                if conn.check_write().is_ok()
                    && len > 0
                    && conn.may_send()
                    && conn.bytes_queued() == 0
                {
                    let bytes = data(&m, len);
                    conn.queue_write(&bytes, 0);
                    m.accept(len, 0);
                    conn.on_io_error(kind.error(), &mut out);
                    m.io_error(kind);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::End => {
                let got = conn.end(&mut out).map_err(|e| error_name(&e));
                assert_eq!(got, m.end(), "step {step}: end()");
                apply(&mut conn, &mut out, &mut r, outcome, step);
            }
            Operation::EndWith { len, direct } => {
                // `end_with` = write, then end only if the write was accepted.
                if conn.check_write().is_ok() {
                    user_write(
                        &mut conn,
                        &mut out,
                        &mut m,
                        &mut r,
                        usize::from(len),
                        direct,
                        outcome,
                        step,
                    );
                    if !m.destroyed {
                        let got = conn.end(&mut out).map_err(|e| error_name(&e));
                        assert_eq!(got, m.end(), "step {step}: end_with's end()");
                        apply(&mut conn, &mut out, &mut r, outcome, step);
                    }
                }
            }
            Operation::Destroy { with_error } => {
                let error = with_error.then(|| Error::Io(io::Error::other("fuzz")));
                conn.destroy(error, &mut out)
                    .expect("destroy on a live socket");
                m.close(CloseReason::LocalDestroy, with_error, with_error);
                apply(&mut conn, &mut out, &mut r, outcome, step);
            }
            Operation::DestroySoon => {
                let got = conn.destroy_soon(&mut out).map_err(|e| error_name(&e));
                assert_eq!(got, m.destroy_soon(), "step {step}: destroy_soon()");
                apply(&mut conn, &mut out, &mut r, outcome, step);
            }
            Operation::Reset => {
                conn.reset(&mut out).expect("reset on a live socket");
                m.close(CloseReason::LocalReset, false, false);
                apply(&mut conn, &mut out, &mut r, outcome, step);
            }
            Operation::Pause => {
                conn.pause().expect("pause on a live socket");
                m.paused = true;
            }
            Operation::Resume => {
                conn.resume().expect("resume on a live socket");
                m.paused = false;
            }
            Operation::Written { n } => {
                if conn.may_send() && conn.bytes_queued() > 0 {
                    let n = u64::from(n) % (m.queued() + 1);
                    conn.on_written(n as usize, &mut out);
                    m.written(n);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::WrittenAll => {
                if conn.may_send() && conn.bytes_queued() > 0 {
                    let n = m.queued();
                    conn.on_written(n as usize, &mut out);
                    m.written(n);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::FlushError(kind) => {
                if conn.may_send() && conn.bytes_queued() > 0 {
                    conn.on_io_error(kind.error(), &mut out);
                    m.io_error(kind);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::Read { n } => {
                if conn.wants_read() && n > 0 {
                    let deliver = conn.on_read(usize::from(n));
                    assert_eq!(deliver, m.delivers_data(), "step {step}: Data delivery");
                    m.read += u64::from(n);
                }
            }
            Operation::Eof => {
                if conn.wants_read() {
                    conn.on_eof(&mut out);
                    m.eof();
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::EofReset => {
                if conn.wants_read() {
                    conn.on_io_error(IoKind::Reset.error(), &mut out);
                    m.io_error(IoKind::Reset);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::ReadError(kind) => {
                if conn.wants_read() {
                    conn.on_io_error(kind.error(), &mut out);
                    m.io_error(kind);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::Connected => {
                if !m.connected {
                    conn.on_connected(&mut out);
                    m.connected();
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::ConnectFailed(kind) => {
                if !m.connected {
                    conn.on_io_error(kind.error(), &mut out);
                    m.io_error(kind);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
            Operation::Deadline(kind) => {
                let which = kind.deadline();
                let armed = r.armed == Some(which);
                if kind == DeadlineKind::Shutdown || armed {
                    if armed {
                        r.armed = None; // the reactor forgets a timer that fired
                    }
                    conn.on_deadline(which, &mut out);
                    m.deadline(kind);
                    apply(&mut conn, &mut out, &mut r, outcome, step);
                }
            }
        }
        compare_events(&m, &r, step, &op);
        check_facts(&conn, &m, &r, step, &op);
        if r.shutdowns > shutdowns_before && named.is_some() {
            i += 1;
        }
    }
    if r.end_pending {
        conn.after_end_delivered(&mut out);
        m.events.clear();
        r.events.clear();
        m.after_end_delivered();
        apply(&mut conn, &mut out, &mut r, m.outcome, ops.len());
        compare_events(&m, &r, ops.len(), &Operation::DeliverEnd);
        check_facts(&conn, &m, &r, ops.len(), &Operation::DeliverEnd);
    }
}

#[allow(clippy::too_many_arguments)]
fn user_write(
    conn: &mut Conn,
    out: &mut Actions,
    m: &mut Model,
    r: &mut Reactorish,
    len: usize,
    direct: u8,
    outcome: ShutdownResult,
    step: usize,
) {
    let expect = check_write_expected(m);
    assert_eq!(
        conn.check_write().map_err(|e| error_name(&e)),
        expect,
        "step {step}: check_write"
    );
    if expect.is_err() {
        return;
    }
    let bytes = data(m, len);
    // The reactor sends directly only when nothing is queued and sending is allowed.
    let sent = if conn.may_send() && conn.bytes_queued() == 0 {
        usize::from(direct) % (len + 1)
    } else {
        0
    };
    let below = conn.queue_write(&bytes, sent);
    assert_eq!(below, m.accept(len, sent), "step {step}: write() result");
    apply(conn, out, r, outcome, step);
}

/// Every input to a destroyed machine changes nothing and produces no action.
fn destroyed_step(conn: &mut Conn, out: &mut Actions, m: &Model, op: &Operation, step: usize) {
    let destroyed = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::Destroyed)),
            "step {step} ({op:?}): call on a destroyed socket gave {r:?}"
        );
    };
    match *op {
        Operation::Write { .. }
        | Operation::WriteOwned { .. }
        | Operation::WriteFails { .. }
        | Operation::EndWith { .. } => destroyed(conn.check_write()),
        Operation::End => destroyed(conn.end(out)),
        Operation::Destroy { with_error } => {
            destroyed(conn.destroy(with_error.then(|| Error::Io(io::Error::other("x"))), out))
        }
        Operation::DestroySoon => destroyed(conn.destroy_soon(out)),
        Operation::Reset => destroyed(conn.reset(out)),
        Operation::Pause => destroyed(conn.pause()),
        Operation::Resume => destroyed(conn.resume()),
        Operation::Written { n } => conn.on_written(usize::from(n), out),
        Operation::WrittenAll => conn.on_written(usize::MAX, out),
        Operation::FlushError(kind)
        | Operation::ReadError(kind)
        | Operation::ConnectFailed(kind) => conn.on_io_error(kind.error(), out),
        Operation::EofReset => conn.on_io_error(IoKind::Reset.error(), out),
        Operation::Eof => conn.on_eof(out),
        Operation::Connected => conn.on_connected(out),
        Operation::Deadline(kind) => conn.on_deadline(kind.deadline(), out),
        Operation::ShutdownOutcome(ShutdownResult::Ok) => conn.on_shutdown(Ok(()), out),
        Operation::ShutdownOutcome(ShutdownResult::Err(kind)) => {
            conn.on_shutdown(Err(kind.error()), out)
        }
        Operation::DeliverEnd => conn.after_end_delivered(out),
        Operation::Read { .. } | Operation::Config { .. } => {}
    }
    assert!(
        out.is_empty(),
        "step {step} ({op:?}): actions after Close: {out:?}"
    );
    assert!(m.destroyed);
}

fn compare_events(m: &Model, r: &Reactorish, step: usize, op: &Operation) {
    assert_eq!(
        r.events, m.events,
        "step {step} ({op:?}): events differ from the model (left: machine, right: model); model {m:?}"
    );
}
