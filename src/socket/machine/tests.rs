//! Per-state fixtures and transition tests for the sans-IO socket machine.
//!
//! Every fixture is reached by driving a fresh [`Conn`] through its public inputs (and asserts
//! the actions of the way there), so no test starts from a state the machine cannot reach.
//! Actions are compared as compact strings (see [`describe_action`]) so that every test pins
//! the exact sequence the reactor would perform.

use super::*;

// ---- helpers -------------------------------------------------------------------------------

/// Bytes the `*_pending`, `closing_draining` and `destroyed` fixtures leave queued (or dropped).
const Q: usize = 100;

fn id() -> SocketId {
    SocketId {
        index: 0,
        generation: 0,
    }
}

fn opts(allow_half_open: bool) -> ConnOptions {
    ConnOptions {
        allow_half_open,
        ..ConnOptions::default()
    }
}

fn hwm(high_water_mark: usize) -> ConnOptions {
    ConnOptions {
        high_water_mark,
        ..ConnOptions::default()
    }
}

fn describe_error(e: &Error) -> String {
    match e {
        Error::Io(io) => format!("Io({:?})", io.kind()),
        other => format!("{other:?}"),
    }
}

fn describe_event(e: Event<'_>) -> String {
    match e {
        Event::Accepted(l) => format!("Accepted({l:?})"),
        Event::Connect => "Connect".into(),
        Event::Data(d) => format!("Data({})", d.len()),
        Event::End => "End".into(),
        Event::Finish => "Finish".into(),
        Event::Drain => "Drain".into(),
        Event::Timeout => "Timeout".into(),
        Event::Error(err) => format!("Error({})", describe_error(&err)),
        Event::Close(CloseInfo {
            had_error,
            reason,
            unsent,
        }) => format!("Close(had_error={had_error}, {reason:?}, unsent={unsent})"),
    }
}

/// One action as a comparable string: `"emit End"`, `"shutdown"`, `"close rst=false"`,
/// `"arm FinWait"`, `"emit Close(had_error=false, Graceful, unsent=0)"`.
fn describe_action(a: Action) -> String {
    match a {
        Action::Emit(e) => format!("emit {}", describe_event(e)),
        Action::Shutdown => "shutdown".into(),
        Action::Close { reset } => format!("close rst={reset}"),
        Action::ArmDeadline(d) => format!("arm {d:?}"),
    }
}

fn describe(out: Actions) -> Vec<String> {
    out.into_iter().map(describe_action).collect()
}

/// Feeds one input that cannot fail and returns the actions it produced.
fn step(conn: &mut Conn, f: impl FnOnce(&mut Conn, &mut Actions)) -> Vec<String> {
    let mut out = Actions::new();
    f(conn, &mut out);
    describe(out)
}

/// Makes one program call and returns `("Ok" | error name, actions)`.
fn call(
    conn: &mut Conn,
    f: impl FnOnce(&mut Conn, &mut Actions) -> Result<()>,
) -> (String, Vec<String>) {
    let mut out = Actions::new();
    let r = f(conn, &mut out);
    (outcome(&r), describe(out))
}

fn outcome(r: &Result<()>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(e) => describe_error(e),
    }
}

/// Expected result of a call that succeeded with these actions.
fn ok(actions: &[&str]) -> (String, Vec<String>) {
    ("Ok".into(), actions.iter().map(|s| s.to_string()).collect())
}

/// Expected result of a refused call (refusals never produce actions).
fn refused(error: &str) -> (String, Vec<String>) {
    (error.into(), Vec::new())
}

/// The actions of closing for good: `Close{reset}`, `Error` if any, then the `Close` event.
/// `reset` is whether the program asked for an RST; the close sends one also whenever it
/// drops queued bytes (`unsent > 0`, SEMANTICS B2.1), which
/// `a_close_that_drops_queued_bytes_sends_rst_whatever_the_reason` pins on its own.
fn closed(
    reset: bool,
    error: Option<&str>,
    had_error: bool,
    reason: CloseReason,
    unsent: usize,
) -> Vec<String> {
    let mut v = vec![format!("close rst={}", reset || unsent > 0)];
    if let Some(e) = error {
        v.push(format!("emit Error({e})"));
    }
    v.push(format!(
        "emit Close(had_error={had_error}, {reason:?}, unsent={unsent})"
    ));
    v
}

/// `Close` actions of a graceful close (FIN both ways, nothing unsent).
fn graceful() -> Vec<String> {
    closed(false, None, false, CloseReason::Graceful, 0)
}

/// `Finish` then a graceful close: our FIN became due after the peer's FIN, so `close` alone
/// sends it and no `Shutdown` is asked.
fn finish_close() -> Vec<String> {
    std::iter::once("emit Finish".to_string())
        .chain(graceful())
        .collect()
}

/// Writes `n` bytes of which the kernel took none, as the reactor would after `check_write`.
fn write(conn: &mut Conn, n: usize) -> bool {
    conn.check_write().expect("write must be allowed here");
    let data = vec![7u8; n];
    conn.queue_write(&data, 0)
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

const NONE: [&str; 0] = [];

// ---- fixtures: every one driven from a fresh Conn ------------------------------------------

fn connecting() -> Conn {
    let c = Conn::connecting(id(), ConnOptions::default());
    assert_eq!(c.state(), State::Connecting { ending: None });
    c
}

fn connecting_end_requested() -> Conn {
    let mut c = connecting();
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&[]));
    assert_eq!(
        c.state(),
        State::Connecting {
            ending: Some(Ending::End)
        }
    );
    c
}

fn connecting_linger_requested() -> Conn {
    let mut c = connecting();
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&[]));
    assert_eq!(
        c.state(),
        State::Connecting {
            ending: Some(Ending::DestroySoon)
        }
    );
    c
}

fn open() -> Conn {
    let c = Conn::accepted(id(), ConnOptions::default());
    assert_eq!(c.state(), State::Open);
    c
}

/// `end()` with `Q` bytes queued: the FIN waits for the flush, the FIN wait bounding it.
fn half_closed_local_pending() -> Conn {
    let mut c = open();
    assert!(write(&mut c, Q));
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&["arm FinWait"]));
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(c.bytes_queued(), Q);
    c
}

/// `end()` with an empty queue (arming the FIN wait), then `shutdown(Write)` succeeded.
fn half_closed_local_sent() -> Conn {
    let mut c = open();
    assert_eq!(
        call(&mut c, |c, o| c.end(o)),
        ok(&["arm FinWait", "shutdown"])
    );
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Sent));
    c
}

/// The peer's FIN arrived; the `End` handler has not returned yet.
fn half_closed_remote(allow_half_open: bool) -> Conn {
    let mut c = Conn::accepted(id(), opts(allow_half_open));
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), ["emit End"]);
    assert_eq!(c.state(), State::HalfClosedRemote);
    c
}

fn half_closed_remote_half_open() -> Conn {
    let mut c = half_closed_remote(true);
    // With half-open allowed the socket stays HalfClosedRemote after the handler returns.
    assert_eq!(step(&mut c, |c, o| c.after_end_delivered(o)), NONE);
    assert_eq!(c.state(), State::HalfClosedRemote);
    c
}

/// Without half-open: between `End` and the automatic `end()` (inside the `End` handler).
fn half_closed_remote_auto_end() -> Conn {
    half_closed_remote(false)
}

/// Peer FIN, then the program's `end()` with `Q` bytes still queued.
fn closing_draining() -> Conn {
    let mut c = open();
    assert!(write(&mut c, Q));
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), ["emit End"]);
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&["arm FinWait"]));
    assert_eq!(step(&mut c, |c, o| c.after_end_delivered(o)), NONE);
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Pending,
            peer_fin: true
        }
    );
    assert_eq!(c.bytes_queued(), Q);
    c
}

/// `destroy_soon()` with `Q` bytes queued: flushing before the FIN, the linger deadline armed
/// on entering `Closing` so it bounds the flush too.
fn lingering_pending() -> Conn {
    let mut c = open();
    assert!(write(&mut c, Q));
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&["arm Linger"]));
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Pending,
            peer_fin: false
        }
    );
    c
}

/// `destroy_soon()` with an empty queue, FIN sent: discarding input until the peer's FIN.
fn lingering_sent() -> Conn {
    let mut c = open();
    assert_eq!(
        call(&mut c, |c, o| c.destroy_soon(o)),
        ok(&["arm Linger", "shutdown"])
    );
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Sent,
            peer_fin: false
        }
    );
    c
}

/// `destroy()` with `Q` bytes queued.
fn destroyed() -> Conn {
    let mut c = open();
    assert!(write(&mut c, Q));
    assert_eq!(
        call(&mut c, |c, o| c.destroy(None, o)),
        ok(&[
            "close rst=true",
            "emit Close(had_error=false, LocalDestroy, unsent=100)"
        ])
    );
    assert_eq!(c.state(), State::Destroyed);
    c
}

#[derive(Clone, Copy)]
struct Fx {
    name: &'static str,
    make: fn() -> Conn,
}

const CONNECTING: Fx = Fx {
    name: "connecting",
    make: connecting,
};
const CONNECTING_END: Fx = Fx {
    name: "connecting_end_requested",
    make: connecting_end_requested,
};
const CONNECTING_LINGER: Fx = Fx {
    name: "connecting_linger_requested",
    make: connecting_linger_requested,
};
const OPEN: Fx = Fx {
    name: "open",
    make: open,
};
const HCL_PENDING: Fx = Fx {
    name: "half_closed_local_pending",
    make: half_closed_local_pending,
};
const HCL_SENT: Fx = Fx {
    name: "half_closed_local_sent",
    make: half_closed_local_sent,
};
const HCR_HALF_OPEN: Fx = Fx {
    name: "half_closed_remote(allow_half_open=true)",
    make: half_closed_remote_half_open,
};
const HCR_AUTO_END: Fx = Fx {
    name: "half_closed_remote(allow_half_open=false)",
    make: half_closed_remote_auto_end,
};
const CLOSING_DRAINING: Fx = Fx {
    name: "closing_draining",
    make: closing_draining,
};
const LINGERING_PENDING: Fx = Fx {
    name: "lingering_pending",
    make: lingering_pending,
};
const LINGERING_SENT: Fx = Fx {
    name: "lingering_sent",
    make: lingering_sent,
};
const DESTROYED: Fx = Fx {
    name: "destroyed",
    make: destroyed,
};

const ALL: [Fx; 12] = [
    CONNECTING,
    CONNECTING_END,
    CONNECTING_LINGER,
    OPEN,
    HCL_PENDING,
    HCL_SENT,
    HCR_HALF_OPEN,
    HCR_AUTO_END,
    CLOSING_DRAINING,
    LINGERING_PENDING,
    LINGERING_SENT,
    DESTROYED,
];

/// Every per-state table must list every fixture exactly once, in `ALL`'s order.
fn assert_covers_all<'a>(names: impl IntoIterator<Item = &'a str>) {
    let names: Vec<&str> = names.into_iter().collect();
    let all: Vec<&str> = ALL.iter().map(|f| f.name).collect();
    assert_eq!(names, all, "table must cover every fixture");
}

fn live() -> impl Iterator<Item = Fx> {
    ALL.into_iter().filter(|f| f.name != DESTROYED.name)
}

// ---- predicates ----------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct Facts {
    state: State,
    queued: usize,
    may_write: bool,
    may_send: bool,
    may_recv: bool,
    wants_read: bool,
    wants_read_paused: bool,
    delivers_data: bool,
    ready: ReadyState,
    destroyed: bool,
}

fn facts(fx: Fx) -> Facts {
    let c = (fx.make)();
    let mut paused = (fx.make)();
    let wants_read_paused = match paused.pause() {
        Ok(()) => {
            assert!(paused.is_paused());
            paused.wants_read()
        }
        Err(Error::Destroyed) => paused.wants_read(),
        Err(e) => panic!("{}: pause failed with {e:?}", fx.name),
    };
    Facts {
        state: c.state(),
        queued: c.bytes_queued(),
        may_write: c.may_write(),
        may_send: c.may_send(),
        may_recv: c.may_recv(),
        wants_read: c.wants_read(),
        wants_read_paused,
        delivers_data: c.delivers_data(),
        ready: c.ready_state(),
        destroyed: c.is_destroyed(),
    }
}

#[test]
fn predicates_in_every_state() {
    fn f(
        state: State,
        queued: usize,
        [
            may_write,
            may_send,
            may_recv,
            wants_read,
            wants_read_paused,
            delivers_data,
        ]: [bool; 6],
        ready: ReadyState,
    ) -> Facts {
        Facts {
            state,
            queued,
            may_write,
            may_send,
            may_recv,
            wants_read,
            wants_read_paused,
            delivers_data,
            ready,
            destroyed: state == State::Destroyed,
        }
    }
    const T: bool = true;
    const F: bool = false;
    use ReadyState as R;
    let pending_fin = State::Closing {
        fin: Fin::Pending,
        peer_fin: true,
    };
    let linger_pending = State::Closing {
        fin: Fin::Pending,
        peer_fin: false,
    };
    let linger_sent = State::Closing {
        fin: Fin::Sent,
        peer_fin: false,
    };
    // [may_write, may_send, may_recv, wants_read, wants_read when paused, delivers_data]
    let table = [
        (
            CONNECTING,
            f(
                State::Connecting { ending: None },
                0,
                [T, F, F, F, F, F],
                R::Opening,
            ),
        ),
        (
            CONNECTING_END,
            f(
                State::Connecting {
                    ending: Some(Ending::End),
                },
                0,
                [F, F, F, F, F, F],
                R::Opening,
            ),
        ),
        (
            CONNECTING_LINGER,
            f(
                State::Connecting {
                    ending: Some(Ending::DestroySoon),
                },
                0,
                [F, F, F, F, F, F],
                R::Opening,
            ),
        ),
        (OPEN, f(State::Open, 0, [T, T, T, T, F, T], R::Open)),
        (
            HCL_PENDING,
            f(
                State::HalfClosedLocal(Fin::Pending),
                Q,
                [F, T, T, T, F, T],
                R::ReadOnly,
            ),
        ),
        (
            HCL_SENT,
            f(
                State::HalfClosedLocal(Fin::Sent),
                0,
                [F, F, T, T, F, T],
                R::ReadOnly,
            ),
        ),
        (
            HCR_HALF_OPEN,
            f(State::HalfClosedRemote, 0, [T, T, F, F, F, F], R::WriteOnly),
        ),
        (
            HCR_AUTO_END,
            f(State::HalfClosedRemote, 0, [T, T, F, F, F, F], R::WriteOnly),
        ),
        (
            CLOSING_DRAINING,
            f(pending_fin, Q, [F, T, F, F, F, F], R::Closed),
        ),
        // Lingering keeps reading (and discarding) even while paused.
        (
            LINGERING_PENDING,
            f(linger_pending, Q, [F, T, T, T, T, F], R::ReadOnly),
        ),
        (
            LINGERING_SENT,
            f(linger_sent, 0, [F, F, T, T, T, F], R::ReadOnly),
        ),
        (
            DESTROYED,
            f(State::Destroyed, 0, [F, F, F, F, F, F], R::Closed),
        ),
    ];
    assert_covers_all(table.iter().map(|(fx, _)| fx.name));
    for (fx, expected) in table {
        assert_eq!(facts(fx), expected, "{}", fx.name);
    }
}

#[test]
fn connected_socket_has_the_facts_of_an_accepted_one() {
    let mut c = connecting();
    assert_eq!(step(&mut c, |c, o| c.on_connected(o)), ["emit Connect"]);
    let a = open();
    assert_eq!(c.state(), a.state());
    assert_eq!(c.ready_state(), a.ready_state());
    assert_eq!(
        (c.may_write(), c.may_send(), c.may_recv()),
        (a.may_write(), a.may_send(), a.may_recv())
    );
    assert_eq!(
        (c.wants_read(), c.delivers_data()),
        (a.wants_read(), a.delivers_data())
    );
}

// ---- the program's calls, per state ----------------------------------------------------------

#[test]
fn check_write_refuses_after_end_and_after_destroy() {
    let table = [
        (CONNECTING, "Ok"),
        (CONNECTING_END, "WriteAfterEnd"),
        (CONNECTING_LINGER, "WriteAfterEnd"),
        (OPEN, "Ok"),
        (HCL_PENDING, "WriteAfterEnd"),
        (HCL_SENT, "WriteAfterEnd"),
        (HCR_HALF_OPEN, "Ok"),
        // Inside the End handler of a non-half-open socket the program may still write.
        (HCR_AUTO_END, "Ok"),
        (CLOSING_DRAINING, "WriteAfterEnd"),
        (LINGERING_PENDING, "WriteAfterEnd"),
        (LINGERING_SENT, "WriteAfterEnd"),
        (DESTROYED, "Destroyed"),
    ];
    assert_covers_all(table.iter().map(|(fx, _)| fx.name));
    for (fx, expected) in table {
        let c = (fx.make)();
        let (state, queued) = (c.state(), c.bytes_queued());
        assert_eq!(outcome(&c.check_write()), expected, "{}", fx.name);
        assert_eq!(
            c.state(),
            state,
            "{}: check_write changed the state",
            fx.name
        );
        assert_eq!(c.bytes_queued(), queued, "{}", fx.name);
    }
}

#[test]
fn queue_write_queues_where_writes_are_allowed() {
    for fx in [CONNECTING, OPEN, HCR_HALF_OPEN, HCR_AUTO_END] {
        let mut c = (fx.make)();
        let state = c.state();
        assert!(c.queue_write(b"hello", 0), "{}", fx.name);
        assert_eq!(c.bytes_queued(), 5, "{}", fx.name);
        assert_eq!(c.state(), state, "{}", fx.name);
    }
}

/// `queue_write` trusts the reactor to have called `check_write`; in debug builds it asserts.
#[cfg(debug_assertions)]
#[test]
#[should_panic]
fn queue_write_after_end_without_check_write_panics_in_debug() {
    let mut c = half_closed_local_pending();
    c.queue_write(b"late", 0);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic]
fn queue_write_after_destroy_without_check_write_panics_in_debug() {
    let mut c = destroyed();
    c.queue_write_owned(b"late".to_vec());
}

#[test]
fn end_in_every_state() {
    let pending_fin = State::Closing {
        fin: Fin::Pending,
        peer_fin: true,
    };
    let table: [(Fx, (String, Vec<String>), State); 12] = [
        (
            CONNECTING,
            ok(&[]),
            State::Connecting {
                ending: Some(Ending::End),
            },
        ),
        (
            CONNECTING_END,
            ok(&[]),
            State::Connecting {
                ending: Some(Ending::End),
            },
        ),
        // end() after destroy_soon() keeps the stronger request.
        (
            CONNECTING_LINGER,
            ok(&[]),
            State::Connecting {
                ending: Some(Ending::DestroySoon),
            },
        ),
        // Leaving `Open` arms the FIN wait, before the FIN is asked for.
        (
            OPEN,
            ok(&["arm FinWait", "shutdown"]),
            State::HalfClosedLocal(Fin::Pending),
        ),
        // A second end() is a no-op.
        (HCL_PENDING, ok(&[]), State::HalfClosedLocal(Fin::Pending)),
        (HCL_SENT, ok(&[]), State::HalfClosedLocal(Fin::Sent)),
        // After the peer's FIN, with nothing queued, our FIN is due at once: `close` alone
        // sends it (no Shutdown), so end() finishes and closes gracefully right away.
        (
            HCR_HALF_OPEN,
            ok(&[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ]),
            State::Destroyed,
        ),
        (
            HCR_AUTO_END,
            ok(&[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ]),
            State::Destroyed,
        ),
        (CLOSING_DRAINING, ok(&[]), pending_fin),
        (
            LINGERING_PENDING,
            ok(&[]),
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            },
        ),
        (
            LINGERING_SENT,
            ok(&[]),
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            },
        ),
        (DESTROYED, refused("Destroyed"), State::Destroyed),
    ];
    assert_covers_all(table.iter().map(|(fx, ..)| fx.name));
    for (fx, expected, after) in table {
        let mut c = (fx.make)();
        let queued = c.bytes_queued();
        assert_eq!(call(&mut c, |c, o| c.end(o)), expected, "{}", fx.name);
        assert_eq!(c.state(), after, "{}", fx.name);
        assert_eq!(c.bytes_queued(), queued, "{}: end dropped bytes", fx.name);
    }
}

#[test]
fn destroy_soon_in_every_state() {
    let linger_pending = State::Closing {
        fin: Fin::Pending,
        peer_fin: false,
    };
    let linger_sent = State::Closing {
        fin: Fin::Sent,
        peer_fin: false,
    };
    let pending_fin = State::Closing {
        fin: Fin::Pending,
        peer_fin: true,
    };
    let linger_requested = State::Connecting {
        ending: Some(Ending::DestroySoon),
    };
    let table: [(Fx, (String, Vec<String>), State); 12] = [
        (CONNECTING, ok(&[]), linger_requested),
        // destroy_soon() after end() while connecting upgrades the request.
        (CONNECTING_END, ok(&[]), linger_requested),
        (CONNECTING_LINGER, ok(&[]), linger_requested),
        // Entering `Closing` arms the linger deadline, before anything else.
        (OPEN, ok(&["arm Linger", "shutdown"]), linger_pending),
        (HCL_PENDING, ok(&["arm Linger"]), linger_pending),
        (HCL_SENT, ok(&["arm Linger"]), linger_sent),
        // The peer's FIN is already here: destroy_soon is an end() (arming the FIN wait),
        // which with nothing queued finishes and closes at once (`close` sends the FIN); no
        // linger deadline is armed for a socket that is already closed.
        (
            HCR_HALF_OPEN,
            ok(&[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ]),
            State::Destroyed,
        ),
        (
            HCR_AUTO_END,
            ok(&[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ]),
            State::Destroyed,
        ),
        (CLOSING_DRAINING, ok(&[]), pending_fin),
        (LINGERING_PENDING, ok(&[]), linger_pending),
        (LINGERING_SENT, ok(&[]), linger_sent),
        (DESTROYED, refused("Destroyed"), State::Destroyed),
    ];
    assert_covers_all(table.iter().map(|(fx, ..)| fx.name));
    for (fx, expected, after) in table {
        let mut c = (fx.make)();
        let queued = c.bytes_queued();
        assert_eq!(
            call(&mut c, |c, o| c.destroy_soon(o)),
            expected,
            "{}",
            fx.name
        );
        assert_eq!(c.state(), after, "{}", fx.name);
        assert_eq!(c.bytes_queued(), queued, "{}", fx.name);
    }
}

#[test]
fn destroy_in_every_live_state_closes_and_counts_unsent() {
    for fx in live() {
        let mut c = (fx.make)();
        let unsent = c.bytes_queued();
        let expected = closed(false, None, false, CloseReason::LocalDestroy, unsent);
        assert_eq!(
            call(&mut c, |c, o| c.destroy(None, o)),
            ("Ok".to_string(), expected),
            "{}",
            fx.name
        );
        assert_eq!(c.state(), State::Destroyed, "{}", fx.name);
        assert_eq!(c.bytes_queued(), 0, "{}", fx.name);
    }
    let mut c = destroyed();
    assert_eq!(
        call(&mut c, |c, o| c.destroy(None, o)),
        refused("Destroyed")
    );
}

#[test]
fn destroy_with_error_emits_error_then_close_with_had_error() {
    for fx in live() {
        let mut c = (fx.make)();
        let unsent = c.bytes_queued();
        let expected = closed(
            false,
            Some("Io(Other)"),
            true,
            CloseReason::LocalDestroy,
            unsent,
        );
        let err = Error::Io(io::Error::other("the program gave up"));
        assert_eq!(
            call(&mut c, |c, o| c.destroy(Some(err), o)),
            ("Ok".to_string(), expected),
            "{}",
            fx.name
        );
        assert_eq!(c.state(), State::Destroyed, "{}", fx.name);
    }
    let mut c = destroyed();
    assert_eq!(
        call(&mut c, |c, o| c.destroy(Some(Error::TimedOut("app")), o)),
        refused("Destroyed")
    );
}

#[test]
fn reset_in_every_live_state_sends_rst_with_local_reset() {
    for fx in live() {
        let mut c = (fx.make)();
        let unsent = c.bytes_queued();
        let expected = closed(true, None, false, CloseReason::LocalReset, unsent);
        assert_eq!(
            call(&mut c, |c, o| c.reset(o)),
            ("Ok".to_string(), expected),
            "{}",
            fx.name
        );
        assert_eq!(c.state(), State::Destroyed, "{}", fx.name);
        assert_eq!(c.bytes_queued(), 0, "{}", fx.name);
    }
    let mut c = destroyed();
    assert_eq!(call(&mut c, |c, o| c.reset(o)), refused("Destroyed"));
}

#[test]
fn pause_and_resume_toggle_reading_in_every_live_state() {
    for fx in live() {
        let mut c = (fx.make)();
        let state = c.state();
        assert!(!c.is_paused(), "{}", fx.name);
        assert_eq!(outcome(&c.pause()), "Ok", "{}", fx.name);
        assert!(c.is_paused(), "{}", fx.name);
        // Pausing twice is harmless.
        assert_eq!(outcome(&c.pause()), "Ok", "{}", fx.name);
        // Paused only stops reads that would be delivered; lingering keeps discarding.
        assert_eq!(
            c.wants_read(),
            c.may_recv() && !c.delivers_data(),
            "{}",
            fx.name
        );
        assert_eq!(outcome(&c.resume()), "Ok", "{}", fx.name);
        assert!(!c.is_paused(), "{}", fx.name);
        assert_eq!(c.wants_read(), c.may_recv(), "{}", fx.name);
        assert_eq!(c.state(), state, "{}", fx.name);
    }
    let mut c = destroyed();
    assert_eq!(outcome(&c.pause()), "Destroyed");
    assert_eq!(outcome(&c.resume()), "Destroyed");
    assert!(!c.is_paused());
}

// ---- what the reactor observed, per state ------------------------------------------------

#[test]
fn on_connected_applies_a_remembered_end_after_connect() {
    let table: [(Fx, &[&str], State); 12] = [
        (CONNECTING, &["emit Connect"], State::Open),
        (
            CONNECTING_END,
            &["emit Connect", "arm FinWait", "shutdown"],
            State::HalfClosedLocal(Fin::Pending),
        ),
        (
            CONNECTING_LINGER,
            &["emit Connect", "arm Linger", "shutdown"],
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            },
        ),
        (OPEN, &[], State::Open),
        (HCL_PENDING, &[], State::HalfClosedLocal(Fin::Pending)),
        (HCL_SENT, &[], State::HalfClosedLocal(Fin::Sent)),
        (HCR_HALF_OPEN, &[], State::HalfClosedRemote),
        (HCR_AUTO_END, &[], State::HalfClosedRemote),
        (
            CLOSING_DRAINING,
            &[],
            State::Closing {
                fin: Fin::Pending,
                peer_fin: true,
            },
        ),
        (
            LINGERING_PENDING,
            &[],
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            },
        ),
        (
            LINGERING_SENT,
            &[],
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            },
        ),
        (DESTROYED, &[], State::Destroyed),
    ];
    assert_covers_all(table.iter().map(|(fx, ..)| fx.name));
    for (fx, expected, after) in table {
        let mut c = (fx.make)();
        assert_eq!(
            step(&mut c, |c, o| c.on_connected(o)),
            expected,
            "{}",
            fx.name
        );
        assert_eq!(c.state(), after, "{}", fx.name);
    }
}

#[test]
fn on_read_delivers_only_while_data_is_wanted_and_always_counts() {
    let table = [
        (CONNECTING, false),
        (CONNECTING_END, false),
        (CONNECTING_LINGER, false),
        (OPEN, true),
        (HCL_PENDING, true),
        (HCL_SENT, true),
        (HCR_HALF_OPEN, false),
        (HCR_AUTO_END, false),
        (CLOSING_DRAINING, false),
        (LINGERING_PENDING, false),
        (LINGERING_SENT, false),
        (DESTROYED, false),
    ];
    assert_covers_all(table.iter().map(|(fx, _)| fx.name));
    for (fx, deliver) in table {
        let mut c = (fx.make)();
        let state = c.state();
        let before = c.bytes_read();
        assert_eq!(c.on_read(10), deliver, "{}", fx.name);
        assert_eq!(c.state(), state, "{}", fx.name);
        if !c.is_destroyed() {
            assert_eq!(c.bytes_read(), before + 10, "{}", fx.name);
        }
    }
}

#[test]
fn on_eof_in_every_state() {
    let pending_fin = State::Closing {
        fin: Fin::Pending,
        peer_fin: true,
    };
    let graceful_close = graceful();
    let end_then_close: Vec<String> = std::iter::once("emit End".to_string())
        .chain(graceful())
        .collect();
    let none: Vec<String> = Vec::new();
    let end = vec!["emit End".to_string()];
    let table: [(Fx, &Vec<String>, State); 12] = [
        // No read happens while connecting or after the peer's FIN: a stray EOF changes nothing.
        (CONNECTING, &none, State::Connecting { ending: None }),
        (
            CONNECTING_END,
            &none,
            State::Connecting {
                ending: Some(Ending::End),
            },
        ),
        (
            CONNECTING_LINGER,
            &none,
            State::Connecting {
                ending: Some(Ending::DestroySoon),
            },
        ),
        (OPEN, &end, State::HalfClosedRemote),
        (HCL_PENDING, &end, pending_fin),
        (HCL_SENT, &end_then_close, State::Destroyed),
        (HCR_HALF_OPEN, &none, State::HalfClosedRemote),
        (HCR_AUTO_END, &none, State::HalfClosedRemote),
        (CLOSING_DRAINING, &none, pending_fin),
        // Lingering: the program let go, so no End; the FIN still counts.
        (LINGERING_PENDING, &none, pending_fin),
        (LINGERING_SENT, &graceful_close, State::Destroyed),
        (DESTROYED, &none, State::Destroyed),
    ];
    assert_covers_all(table.iter().map(|(fx, ..)| fx.name));
    for (fx, expected, after) in table {
        let mut c = (fx.make)();
        let queued = c.bytes_queued();
        assert_eq!(step(&mut c, |c, o| c.on_eof(o)), *expected, "{}", fx.name);
        assert_eq!(c.state(), after, "{}", fx.name);
        if after != State::Destroyed {
            assert_eq!(c.bytes_queued(), queued, "{}", fx.name);
        }
    }
}

#[test]
fn after_end_delivered_auto_ends_only_half_closed_remote_without_half_open() {
    for fx in ALL {
        let mut c = (fx.make)();
        let state = c.state();
        let actions = step(&mut c, |c, o| c.after_end_delivered(o));
        if fx.name == HCR_AUTO_END.name {
            // Nothing queued: the automatic end() finishes and closes at once, no Shutdown.
            assert_eq!(
                actions,
                [
                    "emit Finish",
                    "close rst=false",
                    "emit Close(had_error=false, Graceful, unsent=0)"
                ]
            );
            assert_inert(&mut c);
        } else {
            assert_eq!(actions, NONE, "{}", fx.name);
            assert_eq!(c.state(), state, "{}", fx.name);
        }
    }
}

#[test]
fn after_end_delivered_is_a_no_op_when_half_open_is_allowed() {
    let mut c = half_closed_remote(true);
    assert_eq!(step(&mut c, |c, o| c.after_end_delivered(o)), NONE);
    assert_eq!(c.state(), State::HalfClosedRemote);
    assert_eq!(outcome(&c.check_write()), "Ok");
    // Only the program's own end() sends the FIN (through `close`: the peer's FIN is here).
    assert_eq!(
        call(&mut c, |c, o| c.end(o)),
        ok(&[
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ])
    );
    assert_inert(&mut c);
}

#[test]
fn after_end_delivered_does_not_end_an_open_socket() {
    // The auto-end answers the peer's FIN only; an Open socket is left alone.
    let mut c = open();
    assert_eq!(step(&mut c, |c, o| c.after_end_delivered(o)), NONE);
    assert_eq!(c.state(), State::Open);
}

#[test]
fn on_written_sends_the_fin_only_once_the_queue_is_empty() {
    // The kernel takes everything queued; only a pending FIN acts: Shutdown, or, when the
    // peer's FIN already came, Finish and a graceful close (`close` alone sends our FIN).
    let shutdown = vec!["shutdown".to_string()];
    let none: Vec<String> = Vec::new();
    let table: [(Fx, Vec<String>, State); 12] = [
        (CONNECTING, none.clone(), State::Connecting { ending: None }),
        (
            CONNECTING_END,
            none.clone(),
            State::Connecting {
                ending: Some(Ending::End),
            },
        ),
        (
            CONNECTING_LINGER,
            none.clone(),
            State::Connecting {
                ending: Some(Ending::DestroySoon),
            },
        ),
        (OPEN, none.clone(), State::Open),
        (
            HCL_PENDING,
            shutdown.clone(),
            State::HalfClosedLocal(Fin::Pending),
        ),
        (HCL_SENT, none.clone(), State::HalfClosedLocal(Fin::Sent)),
        (HCR_HALF_OPEN, none.clone(), State::HalfClosedRemote),
        (HCR_AUTO_END, none.clone(), State::HalfClosedRemote),
        (CLOSING_DRAINING, finish_close(), State::Destroyed),
        (
            LINGERING_PENDING,
            shutdown,
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            },
        ),
        (
            LINGERING_SENT,
            none.clone(),
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            },
        ),
        (DESTROYED, none, State::Destroyed),
    ];
    assert_covers_all(table.iter().map(|(fx, ..)| fx.name));
    for (fx, last, after) in table {
        let mut c = (fx.make)();
        let queued = c.bytes_queued();
        let written = c.bytes_written();
        if queued > 0 {
            // A partial write never sends the FIN.
            assert_eq!(step(&mut c, |c, o| c.on_written(queued - 1, o)), NONE);
            assert_eq!(c.bytes_queued(), 1, "{}", fx.name);
            assert_eq!(step(&mut c, |c, o| c.on_written(1, o)), last, "{}", fx.name);
        } else {
            assert!(
                last.is_empty(),
                "{}: nothing queued, nothing to act on",
                fx.name
            );
            if c.is_destroyed() {
                // Late completions after destroy change nothing.
                assert_eq!(step(&mut c, |c, o| c.on_written(Q, o)), NONE);
            }
        }
        assert_eq!(c.state(), after, "{}", fx.name);
        assert_eq!(c.bytes_queued(), 0, "{}", fx.name);
        assert_eq!(c.bytes_written(), written + queued as u64, "{}", fx.name);
    }
}

#[test]
fn on_shutdown_ok_in_every_state() {
    let table: [(Fx, Vec<String>, State); 12] = [
        (CONNECTING, vec![], State::Connecting { ending: None }),
        (
            CONNECTING_END,
            vec![],
            State::Connecting {
                ending: Some(Ending::End),
            },
        ),
        (
            CONNECTING_LINGER,
            vec![],
            State::Connecting {
                ending: Some(Ending::DestroySoon),
            },
        ),
        (OPEN, vec![], State::Open),
        (
            HCL_PENDING,
            // The FIN wait was armed by end(), not again here.
            vec!["emit Finish".into()],
            State::HalfClosedLocal(Fin::Sent),
        ),
        (HCL_SENT, vec![], State::HalfClosedLocal(Fin::Sent)),
        (HCR_HALF_OPEN, vec![], State::HalfClosedRemote),
        (HCR_AUTO_END, vec![], State::HalfClosedRemote),
        // The flush already finished and closed it without asking for a shutdown (see
        // `flush_before_shutdown`): a stray report changes nothing.
        (CLOSING_DRAINING, vec![], State::Destroyed),
        (
            LINGERING_PENDING,
            // The linger deadline was armed by destroy_soon(), not again here.
            vec!["emit Finish".into()],
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            },
        ),
        (
            LINGERING_SENT,
            vec![],
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            },
        ),
        (DESTROYED, vec![], State::Destroyed),
    ];
    assert_covers_all(table.iter().map(|(fx, ..)| fx.name));
    for (fx, expected, after) in table {
        let mut c = flush_before_shutdown(fx);
        assert_eq!(
            step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
            expected,
            "{}",
            fx.name
        );
        assert_eq!(c.state(), after, "{}", fx.name);
    }
}

#[test]
fn on_shutdown_error_closes_with_the_error_in_every_live_state() {
    let error_close = closed(false, Some("Io(NotConnected)"), true, CloseReason::Error, 0);
    for fx in ALL {
        let mut c = flush_before_shutdown(fx);
        // `closing_draining` was closed gracefully by its flush (no shutdown asked), and a
        // destroyed socket ignores the report; every other state closes with the error.
        let expected = if [CLOSING_DRAINING.name, DESTROYED.name].contains(&fx.name) {
            vec![]
        } else {
            error_close.clone()
        };
        assert_eq!(
            step(&mut c, |c, o| c
                .on_shutdown(Err(os_error(libc::ENOTCONN)), o)),
            expected,
            "{}",
            fx.name
        );
        assert_eq!(c.state(), State::Destroyed, "{}", fx.name);
    }
}

/// The fixture with every queued byte handed to the kernel, as the reactor does before it can
/// report a shutdown. The flush asks for the FIN where one is pending: `Shutdown`, or, where
/// the peer's FIN came first (`closing_draining`), `Finish` and a graceful close with no
/// `Shutdown` at all (`close` alone sends our FIN). An empty queue asks for nothing.
fn flush_before_shutdown(fx: Fx) -> Conn {
    let mut c = (fx.make)();
    let queued = c.bytes_queued();
    let expected = if fx.name == CLOSING_DRAINING.name {
        finish_close()
    } else if [HCL_PENDING.name, LINGERING_PENDING.name].contains(&fx.name) {
        vec!["shutdown".to_string()]
    } else {
        assert_eq!(
            queued, 0,
            "{}: only FIN-pending fixtures queue bytes",
            fx.name
        );
        vec![]
    };
    assert_eq!(
        step(&mut c, |c, o| c.on_written(queued, o)),
        expected,
        "{}",
        fx.name
    );
    c
}

/// `on_shutdown` in `Closing{Pending, peer_fin: true}`: only when the peer's FIN overtakes the
/// report of a `Shutdown` already asked for (the reactor reports a shutdown right after asking
/// for it, so it never gets here, but the machine still handles it). `Ok` finishes and closes
/// gracefully; an error closes with it.
#[test]
fn on_shutdown_overtaken_by_the_peer_fin_still_finishes_or_fails() {
    let pending_fin = State::Closing {
        fin: Fin::Pending,
        peer_fin: true,
    };
    // end() and destroy_soon() with an empty queue, then the peer's FIN (an End only where
    // data was being delivered).
    fn ended() -> Conn {
        let mut c = open();
        assert_eq!(
            call(&mut c, |c, o| c.end(o)),
            ok(&["arm FinWait", "shutdown"])
        );
        assert_eq!(step(&mut c, |c, o| c.on_eof(o)), ["emit End"]);
        c
    }
    fn lingered() -> Conn {
        let mut c = open();
        assert_eq!(
            call(&mut c, |c, o| c.destroy_soon(o)),
            ok(&["arm Linger", "shutdown"])
        );
        assert_eq!(step(&mut c, |c, o| c.on_eof(o)), NONE);
        c
    }
    for make in [ended as fn() -> Conn, lingered] {
        let mut c = make();
        assert_eq!(c.state(), pending_fin);
        assert_eq!(c.bytes_queued(), 0);
        assert_eq!(
            step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
            finish_close()
        );
        assert_inert(&mut c);

        let mut c = make();
        assert_eq!(
            step(&mut c, |c, o| c
                .on_shutdown(Err(os_error(libc::ENOTCONN)), o)),
            closed(false, Some("Io(NotConnected)"), true, CloseReason::Error, 0)
        );
        assert_inert(&mut c);
    }
}

#[test]
fn shutdown_reset_reports_peer_reset() {
    let mut c = open();
    assert_eq!(
        call(&mut c, |c, o| c.end(o)),
        ok(&["arm FinWait", "shutdown"])
    );
    assert_eq!(
        step(&mut c, |c, o| c
            .on_shutdown(Err(os_error(libc::ECONNRESET)), o)),
        closed(
            false,
            Some("Io(ConnectionReset)"),
            true,
            CloseReason::PeerReset,
            0
        )
    );
}

#[test]
fn on_io_error_in_every_live_state_closes_with_peer_reset_and_unsent() {
    for fx in live() {
        let mut c = (fx.make)();
        let unsent = c.bytes_queued();
        assert_eq!(
            step(&mut c, |c, o| c.on_io_error(os_error(libc::ECONNRESET), o)),
            closed(
                false,
                Some("Io(ConnectionReset)"),
                true,
                CloseReason::PeerReset,
                unsent
            ),
            "{}",
            fx.name
        );
        assert_eq!(c.state(), State::Destroyed, "{}", fx.name);
    }
    let mut c = destroyed();
    assert_eq!(
        step(&mut c, |c, o| c.on_io_error(os_error(libc::ECONNRESET), o)),
        NONE
    );
}

#[test]
fn on_io_error_reports_resets_as_peer_reset_and_the_rest_as_error() {
    let table = [
        (libc::ECONNRESET, "ConnectionReset", CloseReason::PeerReset),
        (libc::EPIPE, "BrokenPipe", CloseReason::PeerReset),
        (
            libc::ECONNABORTED,
            "ConnectionAborted",
            CloseReason::PeerReset,
        ),
        (libc::ECONNREFUSED, "ConnectionRefused", CloseReason::Error),
        (libc::ETIMEDOUT, "TimedOut", CloseReason::Error),
        (libc::EHOSTUNREACH, "HostUnreachable", CloseReason::Error),
    ];
    for (code, kind, reason) in table {
        let mut c = open();
        assert!(write(&mut c, 30));
        assert_eq!(
            step(&mut c, |c, o| c.on_io_error(os_error(code), o)),
            closed(false, Some(&format!("Io({kind})")), true, reason, 30),
            "errno {code}"
        );
    }
}

#[test]
fn on_deadline_applies_only_where_it_belongs() {
    use Deadline::*;
    let table: [(Fx, &[Deadline]); 12] = [
        (CONNECTING, &[Connect, Shutdown]),
        (CONNECTING_END, &[Connect, Shutdown]),
        (CONNECTING_LINGER, &[Connect, Shutdown]),
        (OPEN, &[Shutdown]),
        // FinWait is armed by end() and bounds the flush as much as the wait for the peer.
        (HCL_PENDING, &[FinWait, Shutdown]),
        (HCL_SENT, &[FinWait, Shutdown]),
        (HCR_HALF_OPEN, &[Shutdown]),
        (HCR_AUTO_END, &[Shutdown]),
        // FinWait and Linger apply in every `Closing` state: they cannot tell whether
        // destroy_soon() or end() got them there (HalfClosedRemote → Closing{Pending, true}
        // either way); the reactor keeps only the deadline armed last.
        (CLOSING_DRAINING, &[FinWait, Linger, Shutdown]),
        (LINGERING_PENDING, &[FinWait, Linger, Shutdown]),
        (LINGERING_SENT, &[FinWait, Linger, Shutdown]),
        (DESTROYED, &[]),
    ];
    assert_covers_all(table.iter().map(|(fx, _)| fx.name));
    for (fx, applies) in table {
        for which in [Connect, FinWait, Linger, Shutdown] {
            let mut c = (fx.make)();
            let state = c.state();
            let unsent = c.bytes_queued();
            let expected = if !applies.contains(&which) {
                vec![]
            } else if which == Connect {
                // A connect that timed out failed: error + close(true).
                closed(
                    false,
                    Some("TimedOut(\"connect\")"),
                    true,
                    CloseReason::Deadline(which),
                    unsent,
                )
            } else {
                closed(false, None, false, CloseReason::Deadline(which), unsent)
            };
            assert_eq!(
                step(&mut c, |c, o| c.on_deadline(which, o)),
                expected,
                "{} {which:?}",
                fx.name
            );
            let after = if applies.contains(&which) {
                State::Destroyed
            } else {
                state
            };
            assert_eq!(c.state(), after, "{} {which:?}", fx.name);
        }
    }
}

// ---- the measured sequences (SEMANTICS A2) and guarantees (B2) -------------------------------

/// A2.1 / B2.1: `end('bye')` — the FIN waits for the last queued byte, then the peer's FIN
/// closes gracefully.
#[test]
fn end_with_bytes_queued_sends_fin_after_flush_and_closes_on_peer_fin() {
    let mut c = open();
    assert!(c.queue_write(b"bye", 0));
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&["arm FinWait"]));
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert!(c.may_send());
    assert_eq!(step(&mut c, |c, o| c.on_written(1, o)), NONE);
    assert_eq!(step(&mut c, |c, o| c.on_written(2, o)), ["shutdown"]);
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
    // Reads are still delivered after our FIN.
    assert!(c.on_read(4));
    assert_eq!(
        step(&mut c, |c, o| c.on_eof(o)),
        [
            "emit End",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_eq!(c.bytes_written(), 3);
    assert_eq!(c.bytes_read(), 4);
}

/// A2.1 from the server's side: peer FIN, auto-end, Finish, Close(false) — all at once, as
/// `close` alone sends our FIN once the peer's came.
#[test]
fn peer_fin_with_empty_queue_auto_ends_and_closes_after_finish() {
    let mut c = half_closed_remote(false);
    assert_eq!(
        step(&mut c, |c, o| c.after_end_delivered(o)),
        [
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_inert(&mut c);
}

/// When the peer's FIN came first, our FIN never costs a `shutdown` call: once it is due
/// (queue empty in `Closing{Pending, peer_fin: true}`) the machine emits `Finish` and closes
/// gracefully at once, `close` alone sending the FIN — no unread input can exist after the
/// peer's FIN, so the close cannot turn into RST. Every way into that state is covered.
#[test]
fn peer_fin_first_closes_without_a_shutdown_call() {
    /// Name, how to get there, the input that makes our FIN due, its exact actions.
    type Route = (
        &'static str,
        fn() -> Conn,
        fn(&mut Conn, &mut Actions),
        &'static [&'static str],
    );
    let pending_fin = State::Closing {
        fin: Fin::Pending,
        peer_fin: true,
    };
    let routes: [Route; 6] = [
        (
            "auto-end after the End handler",
            half_closed_remote_auto_end,
            |c, o| c.after_end_delivered(o),
            &[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ],
        ),
        (
            "end() while half-open",
            half_closed_remote_half_open,
            |c, o| c.end(o).unwrap(),
            &[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ],
        ),
        (
            "destroy_soon() while half-open",
            half_closed_remote_half_open,
            |c, o| c.destroy_soon(o).unwrap(),
            // Closed at once: no linger deadline follows the Close.
            &[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ],
        ),
        (
            "flush after the peer's FIN and end()",
            closing_draining,
            |c, o| c.on_written(Q, o),
            &[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ],
        ),
        (
            "flush after end(), overtaken by the peer's FIN",
            || {
                let mut c = half_closed_local_pending();
                assert_eq!(step(&mut c, |c, o| c.on_eof(o)), ["emit End"]);
                c
            },
            |c, o| c.on_written(Q, o),
            &[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ],
        ),
        (
            "lingering flush, overtaken by the peer's FIN",
            || {
                let mut c = lingering_pending();
                assert_eq!(step(&mut c, |c, o| c.on_eof(o)), NONE);
                c
            },
            |c, o| c.on_written(Q, o),
            &[
                "emit Finish",
                "close rst=false",
                "emit Close(had_error=false, Graceful, unsent=0)",
            ],
        ),
    ];
    for (name, make, input, expected) in routes {
        let mut c = make();
        // Either the FIN is already pending with bytes queued, or end() is what sets it
        // pending with nothing queued.
        if c.bytes_queued() > 0 {
            assert_eq!(c.state(), pending_fin, "{name}");
        } else {
            assert_eq!(c.state(), State::HalfClosedRemote, "{name}");
        }
        let (queued, written) = (c.bytes_queued(), c.bytes_written());
        let actions = step(&mut c, input);
        assert_eq!(actions, expected, "{name}");
        assert!(!actions.iter().any(|a| a == "shutdown"), "{name}");
        assert_eq!(c.bytes_written(), written + queued as u64, "{name}");
        assert_inert(&mut c);
    }
}

/// A2.2: peer FIN with 32 MiB queued — `End` at once, the auto-end waits for the flush,
/// `Finish` after the last byte, then `Close`.
#[test]
fn peer_fin_with_32_mib_queued_auto_ends_after_the_flush() {
    const BIG: usize = 32 << 20;
    let mut c = open();
    assert!(!c.queue_write_owned(vec![1u8; BIG]));
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), ["emit End"]);
    assert_eq!(c.state(), State::HalfClosedRemote);
    assert_eq!(
        step(&mut c, |c, o| c.after_end_delivered(o)),
        ["arm FinWait"]
    );
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Pending,
            peer_fin: true
        }
    );
    assert_eq!(c.bytes_queued(), BIG);
    assert_eq!(step(&mut c, |c, o| c.on_written(BIG / 2, o)), NONE);
    assert_eq!(step(&mut c, |c, o| c.on_written(BIG / 2 - 1, o)), NONE);
    assert_eq!(
        step(&mut c, |c, o| c.on_written(1, o)),
        [
            "emit Drain",
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_eq!(c.bytes_written(), BIG as u64);
    assert_inert(&mut c);
}

/// A2 (allowHalfOpen=false): a write made inside the `End` handler precedes our FIN.
#[test]
fn write_in_end_handler_goes_out_before_the_auto_fin() {
    let mut c = half_closed_remote(false);
    assert!(write(&mut c, 10));
    assert_eq!(
        step(&mut c, |c, o| c.after_end_delivered(o)),
        ["arm FinWait"]
    );
    assert_eq!(c.bytes_queued(), 10);
    assert_eq!(
        step(&mut c, |c, o| c.on_written(10, o)),
        [
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_eq!(c.bytes_written(), 10);
    assert_inert(&mut c);
}

/// A2.3 / B2.1: `destroy()` drops the queue, reports it as unsent, and never emits `End` or
/// `Finish`, whatever the reactor reports afterwards.
#[test]
fn destroy_with_bytes_queued_reports_unsent_and_never_ends_or_finishes() {
    let mut c = open();
    assert!(write(&mut c, 1000));
    assert_eq!(step(&mut c, |c, o| c.on_written(400, o)), NONE);
    assert_eq!(
        call(&mut c, |c, o| c.destroy(None, o)),
        ok(&[
            "close rst=true",
            "emit Close(had_error=false, LocalDestroy, unsent=600)"
        ])
    );
    assert_eq!(c.bytes_written(), 400);
    assert_eq!(c.bytes_queued(), 0);
    assert_inert(&mut c);
}

#[test]
fn destroy_with_error_reports_error_then_close_had_error() {
    let mut c = open();
    assert!(write(&mut c, 50));
    assert_eq!(
        call(&mut c, |c, o| c.destroy(Some(Error::TimedOut("app")), o)),
        ok(&[
            "close rst=true",
            "emit Error(TimedOut(\"app\"))",
            "emit Close(had_error=true, LocalDestroy, unsent=50)"
        ])
    );
    assert_inert(&mut c);
}

/// B2.3: a write after `end()` fails alone; state and queue are untouched and the graceful
/// sequence delivers everything queued before `end()`.
#[test]
fn write_after_end_fails_alone_and_the_graceful_close_completes() {
    let mut c = open();
    assert!(write(&mut c, 1000));
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&["arm FinWait"]));
    assert_eq!(outcome(&c.check_write()), "WriteAfterEnd");
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(c.bytes_queued(), 1000);
    assert_eq!(step(&mut c, |c, o| c.on_written(1000, o)), ["shutdown"]);
    assert_eq!(outcome(&c.check_write()), "WriteAfterEnd");
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
    assert_eq!(outcome(&c.check_write()), "WriteAfterEnd");
    assert_eq!(
        step(&mut c, |c, o| c.on_eof(o)),
        [
            "emit End",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_eq!(c.bytes_written(), 1000);
    assert_eq!(outcome(&c.check_write()), "Destroyed");
}

/// A2.6 differs on purpose: after the peer's FIN and our auto-end a write is WriteAfterEnd
/// (Node: EPIPE), and the pending close is not disturbed.
#[test]
fn write_after_auto_end_is_write_after_end() {
    let mut c = half_closed_remote(false);
    assert!(write(&mut c, 5));
    assert_eq!(
        step(&mut c, |c, o| c.after_end_delivered(o)),
        ["arm FinWait"]
    );
    assert_eq!(outcome(&c.check_write()), "WriteAfterEnd");
    assert_eq!(c.bytes_queued(), 5);
    assert_eq!(
        step(&mut c, |c, o| c.on_written(5, o)),
        [
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_eq!(c.bytes_written(), 5);
}

/// B2.4: `reset_and_destroy()` after `end()` still sends RST and reports `LocalReset`, with the
/// queue counted as unsent (Node: EINVAL, no close, fd leaked).
#[test]
fn reset_after_end_sends_rst_and_counts_unsent() {
    let mut pending = half_closed_local_pending();
    assert_eq!(step(&mut pending, |c, o| c.on_written(30, o)), NONE);
    assert_eq!(
        call(&mut pending, |c, o| c.reset(o)),
        ok(&[
            "close rst=true",
            "emit Close(had_error=false, LocalReset, unsent=70)"
        ])
    );
    assert_inert(&mut pending);

    let mut sent = half_closed_local_sent();
    assert_eq!(
        call(&mut sent, |c, o| c.reset(o)),
        ok(&[
            "close rst=true",
            "emit Close(had_error=false, LocalReset, unsent=0)"
        ])
    );
    assert_inert(&mut sent);

    // Also once the FIN is requested but its outcome has not been reported yet.
    let mut requested = open();
    assert_eq!(
        call(&mut requested, |c, o| c.end(o)),
        ok(&["arm FinWait", "shutdown"])
    );
    assert_eq!(
        call(&mut requested, |c, o| c.reset(o)),
        ok(&[
            "close rst=true",
            "emit Close(had_error=false, LocalReset, unsent=0)"
        ])
    );
    assert_eq!(step(&mut requested, |c, o| c.on_shutdown(Ok(()), o)), NONE);
}

/// A2.4 / B2.7: a peer reset while writing closes with `PeerReset`, `had_error`, and the
/// bytes that never reached the kernel.
#[test]
fn peer_reset_while_writing_reports_peer_reset_and_unsent() {
    let mut c = open();
    assert!(!c.queue_write_owned(vec![0; 1 << 20]));
    assert_eq!(step(&mut c, |c, o| c.on_written(400_000, o)), NONE);
    assert_eq!(
        step(&mut c, |c, o| c.on_io_error(os_error(libc::EPIPE), o)),
        [
            "close rst=true",
            "emit Error(Io(BrokenPipe))",
            "emit Close(had_error=true, PeerReset, unsent=648576)"
        ]
    );
    assert_inert(&mut c);
}

/// A2.7: a refused connect reports `Error` and `Close(true)`, never `Connect`.
#[test]
fn refused_connect_reports_error_and_close_without_connect() {
    let mut c = connecting();
    assert!(write(&mut c, 12));
    assert_eq!(
        step(&mut c, |c, o| c
            .on_io_error(os_error(libc::ECONNREFUSED), o)),
        [
            "close rst=true",
            "emit Error(Io(ConnectionRefused))",
            "emit Close(had_error=true, Error, unsent=12)"
        ]
    );
    assert_eq!(step(&mut c, |c, o| c.on_connected(o)), NONE);
    assert_inert(&mut c);
}

#[test]
fn connect_timeout_reports_timed_out_error_then_close() {
    let mut c = connecting_end_requested();
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Connect, o)),
        [
            "close rst=false",
            "emit Error(TimedOut(\"connect\"))",
            "emit Close(had_error=true, Deadline(Connect), unsent=0)"
        ]
    );
    assert_inert(&mut c);
}

/// Writes made while connecting are queued, not sent, and go out after `Connect`.
#[test]
fn writes_while_connecting_are_queued_until_connected() {
    let mut c = connecting();
    assert!(write(&mut c, 20));
    assert!(!c.may_send());
    assert_eq!(step(&mut c, |c, o| c.on_connected(o)), ["emit Connect"]);
    assert!(c.may_send());
    assert_eq!(c.bytes_queued(), 20);
    assert_eq!(step(&mut c, |c, o| c.on_written(20, o)), NONE);
    assert_eq!(c.bytes_written(), 20);
}

#[test]
fn end_while_connecting_shuts_down_right_after_connect() {
    let mut c = connecting_end_requested();
    assert_eq!(
        step(&mut c, |c, o| c.on_connected(o)),
        ["emit Connect", "arm FinWait", "shutdown"]
    );
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
}

#[test]
fn end_while_connecting_with_bytes_queued_waits_for_the_flush() {
    let mut c = connecting();
    assert!(write(&mut c, 50));
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&[]));
    assert_eq!(outcome(&c.check_write()), "WriteAfterEnd");
    // The remembered end() leaves `Open` right after `Connect`: the FIN wait is armed then.
    assert_eq!(
        step(&mut c, |c, o| c.on_connected(o)),
        ["emit Connect", "arm FinWait"]
    );
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(step(&mut c, |c, o| c.on_written(49, o)), NONE);
    assert_eq!(step(&mut c, |c, o| c.on_written(1, o)), ["shutdown"]);
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
}

#[test]
fn destroy_soon_while_connecting_lingers_after_connect() {
    let mut c = connecting_linger_requested();
    assert_eq!(
        step(&mut c, |c, o| c.on_connected(o)),
        ["emit Connect", "arm Linger", "shutdown"]
    );
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
    assert!(!c.on_read(8));
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), graceful());
}

/// B2.5/B2.6: lingering discards input and keeps reading even while paused, so an unread peer
/// never turns the close into RST.
#[test]
fn lingering_discards_reads_and_keeps_reading_while_paused() {
    for fx in [LINGERING_PENDING, LINGERING_SENT] {
        let mut c = (fx.make)();
        c.pause().unwrap();
        assert!(c.wants_read(), "{}", fx.name);
        assert!(!c.on_read(10), "{}", fx.name);
        assert!(!c.on_read(5), "{}", fx.name);
        assert_eq!(c.bytes_read(), 15, "{}", fx.name);
    }
    // In contrast, pausing a delivering socket stops reading.
    let mut c = open();
    c.pause().unwrap();
    assert!(!c.wants_read());
}

#[test]
fn lingering_eof_after_fin_sent_closes_gracefully_without_end() {
    let mut c = lingering_sent();
    assert_eq!(
        step(&mut c, |c, o| c.on_eof(o)),
        [
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_inert(&mut c);
}

#[test]
fn lingering_eof_before_flush_closes_after_the_fin_without_end() {
    let mut c = lingering_pending();
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), NONE);
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Pending,
            peer_fin: true
        }
    );
    assert!(!c.wants_read());
    // The peer's FIN came first: the flush finishes and closes, `close` sending our FIN.
    assert_eq!(
        step(&mut c, |c, o| c.on_written(Q, o)),
        [
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_inert(&mut c);
}

#[test]
fn destroy_soon_after_end_lingers_with_a_linger_deadline() {
    let mut c = half_closed_local_sent();
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&["arm Linger"]));
    // Now reads are discarded, not delivered.
    assert!(!c.on_read(3));
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Linger, o)),
        [
            "close rst=false",
            "emit Close(had_error=false, Deadline(Linger), unsent=0)"
        ]
    );
}

/// B2.5: after our FIN the FinWait deadline bounds the wait for the peer's FIN.
#[test]
fn fin_wait_deadline_destroys_a_socket_whose_peer_never_fins() {
    let mut c = half_closed_local_sent();
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::FinWait, o)),
        [
            "close rst=false",
            "emit Close(had_error=false, Deadline(FinWait), unsent=0)"
        ]
    );
    assert_inert(&mut c);
}

/// B2.5 ("documented either way"): a paused socket after our FIN stops reading, so the peer's
/// FIN is only seen after `resume`; the FinWait deadline still closes it.
#[test]
fn paused_socket_after_fin_stops_reading_but_fin_wait_still_closes_it() {
    let mut c = half_closed_local_sent();
    c.pause().unwrap();
    assert!(!c.wants_read());
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::FinWait, o)),
        [
            "close rst=false",
            "emit Close(had_error=false, Deadline(FinWait), unsent=0)"
        ]
    );

    let mut c = half_closed_local_sent();
    c.pause().unwrap();
    c.resume().unwrap();
    assert!(c.wants_read());
    assert_eq!(
        step(&mut c, |c, o| c.on_eof(o)),
        [
            "emit End",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
}

/// A deadline armed for an earlier state is ignored once the state moved on, and one that
/// belongs to a later state is ignored before the socket gets there.
#[test]
fn stale_deadlines_are_ignored_after_the_state_moved_on() {
    let mut c = connecting();
    assert_eq!(step(&mut c, |c, o| c.on_connected(o)), ["emit Connect"]);
    for which in [Deadline::Connect, Deadline::FinWait, Deadline::Linger] {
        assert_eq!(
            step(&mut c, |c, o| c.on_deadline(which, o)),
            NONE,
            "{which:?}"
        );
    }
    assert_eq!(c.state(), State::Open);
    assert_eq!(
        call(&mut c, |c, o| c.end(o)),
        ok(&["arm FinWait", "shutdown"])
    );
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );
    for which in [Deadline::Connect, Deadline::Linger] {
        assert_eq!(
            step(&mut c, |c, o| c.on_deadline(which, o)),
            NONE,
            "{which:?}"
        );
    }
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Sent));
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&["arm Linger"]));
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Connect, o)),
        NONE
    );
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Sent,
            peer_fin: false
        }
    );
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Linger, o)),
        [
            "close rst=false",
            "emit Close(had_error=false, Deadline(Linger), unsent=0)"
        ]
    );
}

/// The FIN wait is not stale once `destroy_soon()` lingers: every `Closing` state honours it.
/// Only the reactor's replacing it with the linger deadline (`ArmDeadline` replaces the one
/// armed before) keeps it from firing there.
#[test]
fn fin_wait_still_applies_after_destroy_soon_follows_end() {
    let mut c = half_closed_local_sent();
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&["arm Linger"]));
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::FinWait, o)),
        [
            "close rst=false",
            "emit Close(had_error=false, Deadline(FinWait), unsent=0)"
        ]
    );
    assert_inert(&mut c);
}

#[test]
fn shutdown_deadline_destroys_any_live_socket_without_an_error_event() {
    let mut c = closing_draining();
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Shutdown, o)),
        [
            "close rst=true",
            "emit Close(had_error=false, Deadline(Shutdown), unsent=100)"
        ]
    );
    assert_inert(&mut c);
}

/// B2.2: after the one `Close`, every input yields no action and every call is refused with
/// `Destroyed`.
fn assert_inert(c: &mut Conn) {
    assert_eq!(c.state(), State::Destroyed);
    assert_eq!(outcome(&c.check_write()), "Destroyed");
    assert_eq!(call(c, |c, o| c.end(o)), refused("Destroyed"));
    assert_eq!(call(c, |c, o| c.destroy_soon(o)), refused("Destroyed"));
    assert_eq!(call(c, |c, o| c.destroy(None, o)), refused("Destroyed"));
    assert_eq!(
        call(c, |c, o| c.destroy(Some(Error::TimedOut("x")), o)),
        refused("Destroyed")
    );
    assert_eq!(call(c, |c, o| c.reset(o)), refused("Destroyed"));
    assert_eq!(outcome(&c.pause()), "Destroyed");
    assert_eq!(outcome(&c.resume()), "Destroyed");
    assert!(!c.on_read(10));
    assert_eq!(step(c, |c, o| c.on_connected(o)), NONE);
    assert_eq!(step(c, |c, o| c.on_eof(o)), NONE);
    assert_eq!(step(c, |c, o| c.after_end_delivered(o)), NONE);
    assert_eq!(step(c, |c, o| c.on_written(Q, o)), NONE);
    assert_eq!(step(c, |c, o| c.on_shutdown(Ok(()), o)), NONE);
    assert_eq!(
        step(c, |c, o| c.on_shutdown(Err(os_error(libc::EPIPE)), o)),
        NONE
    );
    assert_eq!(
        step(c, |c, o| c.on_io_error(os_error(libc::ECONNRESET), o)),
        NONE
    );
    assert_eq!(step(c, |c, o| c.on_io_error(os_error(libc::EIO), o)), NONE);
    for which in [
        Deadline::Connect,
        Deadline::FinWait,
        Deadline::Linger,
        Deadline::Shutdown,
    ] {
        assert_eq!(step(c, |c, o| c.on_deadline(which, o)), NONE, "{which:?}");
    }
    assert_eq!(c.state(), State::Destroyed);
    assert_eq!(c.bytes_queued(), 0);
}

#[test]
fn exactly_one_close_on_every_path() {
    // Each path: the fixture, the input that closes it; the closing actions must contain
    // exactly one Close event, last, and the socket must then be inert.
    fn by<F: FnOnce(&mut Conn, &mut Actions)>(fx: fn() -> Conn, f: F) -> (Conn, Vec<String>) {
        let mut c = fx();
        let actions = step(&mut c, f);
        (c, actions)
    }
    let paths: Vec<(&str, (Conn, Vec<String>))> = vec![
        ("destroy", by(open, |c, o| c.destroy(None, o).unwrap())),
        (
            "destroy(err)",
            by(lingering_pending, |c, o| {
                c.destroy(Some(Error::TimedOut("x")), o).unwrap()
            }),
        ),
        (
            "reset",
            by(half_closed_local_pending, |c, o| c.reset(o).unwrap()),
        ),
        (
            "graceful via eof",
            by(half_closed_local_sent, |c, o| c.on_eof(o)),
        ),
        (
            "graceful via auto-end",
            by(half_closed_remote_auto_end, |c, o| c.after_end_delivered(o)),
        ),
        (
            "graceful via flush after peer fin",
            by(closing_draining, |c, o| c.on_written(Q, o)),
        ),
        ("linger eof", by(lingering_sent, |c, o| c.on_eof(o))),
        (
            "peer reset",
            by(closing_draining, |c, o| {
                c.on_io_error(os_error(libc::ECONNRESET), o)
            }),
        ),
        (
            "shutdown error",
            by(half_closed_local_pending, |c, o| {
                c.on_written(Q, o);
                c.on_shutdown(Err(os_error(libc::ENOTCONN)), o);
            }),
        ),
        (
            "fin wait deadline",
            by(half_closed_local_sent, |c, o| {
                c.on_deadline(Deadline::FinWait, o)
            }),
        ),
        (
            "connect deadline",
            by(connecting, |c, o| c.on_deadline(Deadline::Connect, o)),
        ),
        (
            "linger deadline",
            by(lingering_pending, |c, o| c.on_deadline(Deadline::Linger, o)),
        ),
    ];
    for (name, (mut c, actions)) in paths {
        let closes: Vec<usize> = actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.starts_with("emit Close("))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(closes, [actions.len() - 1], "{name}: {actions:?}");
        let errors: Vec<usize> = actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.starts_with("emit Error("))
            .map(|(i, _)| i)
            .collect();
        assert!(
            errors.is_empty() || errors == [actions.len() - 2],
            "{name}: Error must come right before Close: {actions:?}"
        );
        assert_eq!(
            actions
                .iter()
                .filter(|a| a.starts_with("close rst="))
                .count(),
            1,
            "{name}: {actions:?}"
        );
        assert_inert(&mut c);
    }
}

// ---- backpressure and accounting (A3, B2.10) ----------------------------------------------

#[test]
fn write_reaching_high_water_mark_returns_false_and_drain_fires_once() {
    let mut c = Conn::accepted(id(), hwm(10));
    assert!(write(&mut c, 9));
    // Node: `bufferSize < highWaterMark`, so reaching the mark exactly returns false.
    assert!(!write(&mut c, 1));
    // Writing past false loses nothing.
    assert!(!write(&mut c, 5));
    assert_eq!(c.bytes_queued(), 15);
    assert_eq!(step(&mut c, |c, o| c.on_written(10, o)), NONE);
    assert_eq!(step(&mut c, |c, o| c.on_written(5, o)), ["emit Drain"]);
    // Owed once: a later emptying after `true` writes emits nothing.
    assert!(write(&mut c, 3));
    assert_eq!(step(&mut c, |c, o| c.on_written(3, o)), NONE);
    assert_eq!(c.bytes_written(), 18);
}

#[test]
fn drain_is_not_emitted_when_writes_never_returned_false() {
    let mut c = Conn::accepted(id(), hwm(10));
    assert!(write(&mut c, 4));
    assert!(write(&mut c, 5));
    assert_eq!(step(&mut c, |c, o| c.on_written(9, o)), NONE);
}

#[test]
fn drain_is_owed_again_after_each_false() {
    let mut c = Conn::accepted(id(), hwm(10));
    assert!(!c.queue_write_owned(vec![0; 10]));
    assert_eq!(step(&mut c, |c, o| c.on_written(10, o)), ["emit Drain"]);
    assert!(!c.queue_write_owned(vec![0; 20]));
    assert_eq!(step(&mut c, |c, o| c.on_written(20, o)), ["emit Drain"]);
}

#[test]
fn bytes_sent_directly_do_not_count_toward_the_high_water_mark() {
    let mut c = Conn::accepted(id(), hwm(10));
    // 20 bytes written, 15 taken by the kernel at once: only 5 are queued.
    assert!(c.queue_write(&[0; 20], 15));
    assert_eq!(c.bytes_queued(), 5);
    assert_eq!(step(&mut c, |c, o| c.on_written(5, o)), NONE);
}

#[test]
fn drain_precedes_the_fin_when_end_waited_for_the_flush() {
    let mut c = Conn::accepted(id(), hwm(10));
    assert!(!write(&mut c, 10));
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&["arm FinWait"]));
    assert_eq!(
        step(&mut c, |c, o| c.on_written(10, o)),
        ["emit Drain", "shutdown"]
    );
}

#[test]
fn drain_owed_is_dropped_when_the_socket_closes() {
    let mut c = Conn::accepted(id(), hwm(10));
    assert!(!write(&mut c, 10));
    assert_eq!(
        call(&mut c, |c, o| c.destroy(None, o)),
        ok(&[
            "close rst=true",
            "emit Close(had_error=false, LocalDestroy, unsent=10)"
        ])
    );
    assert_eq!(step(&mut c, |c, o| c.on_written(10, o)), NONE);
}

#[test]
fn byte_counters_cover_direct_and_queued_writes_and_discarded_reads() {
    let mut c = open();
    assert!(c.queue_write(&[1; 100], 60));
    assert_eq!((c.bytes_written(), c.bytes_queued()), (60, 40));
    assert!(c.queue_write(&[2; 50], 0));
    assert_eq!((c.bytes_written(), c.bytes_queued()), (60, 90));
    assert_eq!(c.queue().len(), 90);
    assert_eq!(step(&mut c, |c, o| c.on_written(30, o)), NONE);
    assert_eq!((c.bytes_written(), c.bytes_queued()), (90, 60));
    // A report larger than the queue is clamped to what was queued.
    assert_eq!(step(&mut c, |c, o| c.on_written(1000, o)), NONE);
    assert_eq!((c.bytes_written(), c.bytes_queued()), (150, 0));
    // `sent` larger than the buffer is clamped too.
    assert!(c.queue_write(&[3; 10], 99));
    assert_eq!((c.bytes_written(), c.bytes_queued()), (160, 0));
    assert!(c.queue_write_owned(vec![4; 7]));
    assert_eq!((c.bytes_written(), c.bytes_queued()), (160, 7));

    assert!(c.on_read(5));
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&["arm Linger"]));
    // Bytes discarded while lingering are still counted as read.
    assert!(!c.on_read(7));
    assert_eq!(c.bytes_read(), 12);
    assert_eq!(step(&mut c, |c, o| c.on_written(7, o)), ["shutdown"]);
    assert_eq!(c.bytes_written(), 167);
}

#[test]
fn options_are_kept() {
    let o = ConnOptions {
        allow_half_open: true,
        high_water_mark: 123,
        max_queued: 456,
    };
    assert_eq!(Conn::accepted(id(), o).options(), o);
    assert_eq!(Conn::connecting(id(), o).options(), o);
    assert_eq!(
        ConnOptions::default(),
        ConnOptions {
            allow_half_open: false,
            high_water_mark: 64 * 1024,
            max_queued: usize::MAX,
        }
    );
}

#[test]
fn a_write_that_would_pass_max_queued_is_refused_whole_and_changes_nothing() {
    let mut c = Conn::accepted(
        id(),
        ConnOptions {
            max_queued: 150,
            ..ConnOptions::default()
        },
    );
    assert_eq!(outcome(&c.check_queue_room(150)), "Ok");
    assert!(write(&mut c, 100));
    assert_eq!(outcome(&c.check_queue_room(50)), "Ok");
    let refused = c.check_queue_room(51);
    assert!(
        matches!(
            refused,
            Err(Error::QueueFull {
                queued: 100,
                write: 51,
                limit: 150
            })
        ),
        "{refused:?}"
    );
    assert_eq!(c.bytes_queued(), 100);
    assert_eq!(c.state(), State::Open);
}

// ---- regressions: the linger and FIN-wait deadlines bound the whole close (A4.6 / B2.6) ----

/// SEMANTICS A4.6 / B2.6: `destroy_soon()` must not hang forever when the peer stops reading.
/// The Linger deadline used to be armed only after our FIN, so a flush stuck on a peer that
/// never reads armed nothing and kept the socket (and its fd) forever. It is now armed on
/// entering `Closing`, and closes the socket with what is still queued counted as unsent.
#[test]
fn destroy_soon_with_a_stuck_flush_is_bounded_by_the_linger_deadline() {
    let mut c = open();
    assert!(!c.queue_write_owned(vec![0; 1 << 20]));
    assert_eq!(call(&mut c, |c, o| c.destroy_soon(o)), ok(&["arm Linger"]));
    assert_eq!(step(&mut c, |c, o| c.on_written(400_000, o)), NONE);
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Linger, o)),
        [
            "close rst=true",
            "emit Close(had_error=false, Deadline(Linger), unsent=648576)"
        ]
    );
    assert_inert(&mut c);
}

/// The same bound for a graceful `end()`: the FIN wait is armed when `end()` leaves `Open`,
/// not after our FIN, so a flush stuck on a peer that never reads is held to it too, and the
/// bytes still queued are counted as unsent.
#[test]
fn fin_wait_is_armed_by_end_and_bounds_a_stuck_flush() {
    let mut c = open();
    assert!(!c.queue_write_owned(vec![0; 1 << 20]));
    assert_eq!(call(&mut c, |c, o| c.end(o)), ok(&["arm FinWait"]));
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(step(&mut c, |c, o| c.on_written(400_000, o)), NONE);
    assert_eq!(c.bytes_queued(), 648_576);
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::FinWait, o)),
        [
            "close rst=true",
            "emit Close(had_error=false, Deadline(FinWait), unsent=648576)"
        ]
    );
    assert_eq!(c.bytes_written(), 400_000);
    assert_inert(&mut c);
}

/// Same defect, second half: once the peer's FIN arrives during a lingering flush the state
/// becomes `Closing { Pending, peer_fin: true }`, where the Linger deadline used to be ignored,
/// so a peer that FINs and stops reading kept the socket forever.
#[test]
fn linger_deadline_still_closes_a_lingering_socket_after_the_peer_fin() {
    let mut c = lingering_pending();
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), NONE);
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Linger, o)),
        [
            "close rst=true",
            "emit Close(had_error=false, Deadline(Linger), unsent=100)"
        ]
    );
    assert_inert(&mut c);
}

/// A write that moved nothing asks for nothing: no `Drain`, and above all no second
/// `Shutdown` while the one already asked for is outstanding (FIN pending, queue empty).
#[test]
fn on_written_zero_asks_for_nothing() {
    // end() with an empty queue: Shutdown asked, its outcome not reported yet.
    let mut c = open();
    assert_eq!(
        call(&mut c, |c, o| c.end(o)),
        ok(&["arm FinWait", "shutdown"])
    );
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(c.bytes_queued(), 0);
    assert_eq!(step(&mut c, |c, o| c.on_written(0, o)), NONE);
    assert_eq!(c.state(), State::HalfClosedLocal(Fin::Pending));
    assert_eq!(
        step(&mut c, |c, o| c.on_shutdown(Ok(()), o)),
        ["emit Finish"]
    );

    // The same edge while lingering.
    let mut c = open();
    assert_eq!(
        call(&mut c, |c, o| c.destroy_soon(o)),
        ok(&["arm Linger", "shutdown"])
    );
    assert_eq!(step(&mut c, |c, o| c.on_written(0, o)), NONE);

    // After the peer's FIN no Shutdown is ever outstanding: the auto-end closes at once.
    let mut c = half_closed_remote(false);
    assert_eq!(
        step(&mut c, |c, o| c.after_end_delivered(o)),
        [
            "emit Finish",
            "close rst=false",
            "emit Close(had_error=false, Graceful, unsent=0)"
        ]
    );
    assert_eq!(step(&mut c, |c, o| c.on_written(0, o)), NONE);
    assert_eq!(c.state(), State::Destroyed);

    // Unless the peer's FIN overtakes the report of a Shutdown already asked for: then the
    // FIN is pending with the queue empty, and a write that moved nothing must neither ask
    // for it again nor finish and close in its place.
    let mut c = open();
    assert_eq!(
        call(&mut c, |c, o| c.end(o)),
        ok(&["arm FinWait", "shutdown"])
    );
    assert_eq!(step(&mut c, |c, o| c.on_eof(o)), ["emit End"]);
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Pending,
            peer_fin: true
        }
    );
    assert_eq!(step(&mut c, |c, o| c.on_written(0, o)), NONE);
    assert_eq!(
        c.state(),
        State::Closing {
            fin: Fin::Pending,
            peer_fin: true
        }
    );

    // A Drain owed with nothing queued (every write reaches a zero mark) is not paid by a
    // write that moved nothing either.
    let mut c = Conn::accepted(id(), hwm(0));
    assert!(!c.queue_write(&[1; 4], 4));
    assert_eq!(c.bytes_queued(), 0);
    assert_eq!(step(&mut c, |c, o| c.on_written(0, o)), NONE);
    assert_eq!(c.bytes_written(), 4);

    // And in every fixture: no actions, nothing changed.
    for fx in ALL {
        let mut c = (fx.make)();
        let (state, queued, written) = (c.state(), c.bytes_queued(), c.bytes_written());
        assert_eq!(step(&mut c, |c, o| c.on_written(0, o)), NONE, "{}", fx.name);
        assert_eq!(
            (c.state(), c.bytes_queued(), c.bytes_written()),
            (state, queued, written),
            "{}",
            fx.name
        );
    }
}

/// SEMANTICS B2.1: every close that drops queued bytes sends RST — destroy, destroy with an
/// error, an I/O error, each deadline — and the same closes with nothing queued send FIN.
/// Written out literally (not through [`closed`], which derives the flag) so the rule itself
/// is pinned here.
#[test]
fn a_close_that_drops_queued_bytes_sends_rst_whatever_the_reason() {
    type Close = fn(&mut Conn, &mut Actions);
    let closes: [(&str, Close); 6] = [
        ("destroy", |c, o| c.destroy(None, o).unwrap()),
        ("destroy_with", |c, o| {
            c.destroy(Some(Error::InvalidOption("test")), o).unwrap()
        }),
        ("io error", |c, o| c.on_io_error(os_error(libc::ENOBUFS), o)),
        ("peer reset", |c, o| {
            c.on_io_error(os_error(libc::ECONNRESET), o)
        }),
        ("shutdown grace", |c, o| {
            c.on_deadline(Deadline::Shutdown, o)
        }),
        ("fin wait", |c, o| c.on_deadline(Deadline::FinWait, o)),
    ];
    for (name, close) in closes {
        for fx in live() {
            let mut c = (fx.make)();
            let queued = c.bytes_queued();
            let mut out = Actions::new();
            close(&mut c, &mut out);
            if !c.is_destroyed() {
                // This deadline does not apply in this state.
                continue;
            }
            let actions = describe(out);
            let expected = if queued > 0 {
                "close rst=true"
            } else {
                "close rst=false"
            };
            assert_eq!(
                actions.first().map(String::as_str),
                Some(expected),
                "{name} in {} with {queued} bytes queued: {actions:?}",
                fx.name
            );
        }
    }
    // The linger deadline applies only to a lingering socket: with bytes queued, RST.
    let mut c = lingering_pending();
    assert!(c.bytes_queued() > 0);
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Linger, o))[0],
        "close rst=true"
    );
    let mut c = lingering_sent();
    assert_eq!(
        step(&mut c, |c, o| c.on_deadline(Deadline::Linger, o))[0],
        "close rst=false"
    );
}
