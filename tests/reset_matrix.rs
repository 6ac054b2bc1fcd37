//! SEMANTICS.md B2.7 as a table: a peer's RST is reported — `Error(ECONNRESET)` then
//! `Close(had_error, PeerReset, unsent)`, exactly once each, `Close` last — in every live state
//! a socket can be in, paused or not, with an empty or a non-empty write queue, while the
//! program makes no call on the socket after the reset. Each case also checks that the socket
//! and its fd are gone. Alone in its own test binary, so no other test's sockets move the
//! process-wide fd count.

mod common;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use finwait::{Context, Event, Fin, ListenOptions, Reactor, ReactorOptions, SocketId, State};
use socket2::{Domain, Protocol, Socket, Type};

type Rec = Recorder<fn(&mut Context, SocketId, &Event<'_>)>;

fn ignore(_: &mut Context, _: SocketId, _: &Event<'_>) {}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// One cell of the matrix: the state the socket is in when the peer resets, whether the
/// program paused reading, and whether bytes wait in the write queue.
#[derive(Debug, Clone, Copy)]
struct Case {
    state: State,
    paused: bool,
    queued: bool,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{:?}, {}, queue {}",
            self.state,
            if self.paused { "paused" } else { "not paused" },
            if self.queued { "non-empty" } else { "empty" }
        )
    }

    /// Whether the peer's FIN must have arrived before the reset.
    fn peer_fin(&self) -> bool {
        matches!(
            self.state,
            State::HalfClosedRemote | State::Closing { peer_fin: true, .. }
        )
    }
}

/// Every reachable cell: a FIN still pending needs queued bytes to wait behind, a FIN sent
/// needs an empty queue; `Open` and `HalfClosedRemote` take both.
fn cases() -> Vec<Case> {
    let states = [
        (State::Open, &[false, true][..]),
        (State::HalfClosedLocal(Fin::Pending), &[true][..]),
        (State::HalfClosedLocal(Fin::Sent), &[false][..]),
        (State::HalfClosedRemote, &[false, true][..]),
        (
            State::Closing {
                fin: Fin::Pending,
                peer_fin: true,
            },
            &[true][..],
        ),
        (
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            },
            &[true][..],
        ),
        (
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            },
            &[false][..],
        ),
    ];
    let mut out = Vec::new();
    for (state, queues) in states {
        for &queued in queues {
            for paused in [false, true] {
                out.push(Case {
                    state,
                    paused,
                    queued,
                });
            }
        }
    }
    out
}

/// One turn, waiting at most `ms` for readiness.
fn turn(reactor: &mut Reactor, h: &mut Rec, ms: u64) {
    reactor
        .run_once(h, Some(Duration::from_millis(ms)))
        .expect("run_once");
}

/// Runs turns until `done` holds; bounded in turns and in wall time (never a measured
/// duration), failing with the case, what was awaited and the event log.
fn wait_until(
    reactor: &mut Reactor,
    h: &mut Rec,
    name: &str,
    what: &str,
    mut done: impl FnMut(&Rec, &Reactor) -> bool,
) {
    let start = Instant::now();
    let mut turns = 0;
    while !done(h, reactor) {
        assert!(
            start.elapsed() < LIMIT && turns < 2000,
            "[{name}] gave up waiting for {what} after {turns} turns; events of the newest \
             socket: {:?}",
            h.sockets().last().map(|&id| h.events(id))
        );
        turn(reactor, h, 20);
        turns += 1;
    }
}

/// A blocking std peer. With `small_rcvbuf` its receive buffer is made small before the
/// connect (so the window is small too), and as it never reads, the server's writes back up
/// into finwait's queue.
fn connect_peer(addr: SocketAddr, small_rcvbuf: bool) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("peer socket");
    if small_rcvbuf {
        s.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    s.connect(&addr.into()).expect("peer connect");
    s.into()
}

/// Drives a fresh connection into `case` through the public API only; returns the server
/// side's id and the peer. The peer's FIN (for `HalfClosedRemote` and `Closing{_, true}`)
/// comes first; then bytes the peer never reads back up into the queue; then `end()`
/// (`HalfClosedLocal`, or `Closing{Pending, true}` after the peer's FIN) or `destroy_soon()`
/// (`Closing{_, false}`), whose FIN leaves at once with an empty queue (`Sent`) and waits
/// behind a full one (`Pending`); then `pause()`.
fn reach(
    reactor: &mut Reactor,
    h: &mut Rec,
    addr: SocketAddr,
    case: Case,
) -> (SocketId, TcpStream) {
    let name = case.name();
    let known = h.sockets();
    let peer = connect_peer(addr, case.queued);
    wait_until(reactor, h, &name, "the accept", |h, _| {
        h.sockets().len() > known.len()
    });
    let id = *h.sockets().last().unwrap();
    assert_eq!(h.events(id), ["Accepted"], "[{name}]");

    if case.peer_fin() {
        // The listener allows half-open: the socket stays writable after the peer's FIN.
        peer.shutdown(Shutdown::Write).expect("peer shutdown");
        wait_until(reactor, h, &name, "the peer's FIN", |h, r| {
            r.context().state(id).ok() == Some(State::HalfClosedRemote)
                && h.events(id).contains(&"End")
        });
    }
    if case.queued {
        // Several MiB the peer never reads; more if the kernel took it all.
        let chunk = vec![0x5a; 4 << 20];
        for _ in 0..16 {
            if reactor.context().bytes_queued(id).unwrap() > 0 {
                break;
            }
            reactor.context_mut().write(id, &chunk).expect("write");
            turn(reactor, h, 5);
        }
        assert!(
            reactor.context().bytes_queued(id).unwrap() > 0,
            "[{name}] the kernel took 64 MiB the peer never read; events: {:?}",
            h.events(id)
        );
    }
    match case.state {
        State::Open | State::HalfClosedRemote => {}
        State::HalfClosedLocal(_) | State::Closing { peer_fin: true, .. } => {
            reactor.context_mut().end(id).expect("end")
        }
        State::Closing {
            peer_fin: false, ..
        } => reactor
            .context_mut()
            .destroy_soon(id)
            .expect("destroy_soon"),
        other => unreachable!("{other:?} is not in the matrix"),
    }
    if case.paused {
        reactor.context_mut().pause(id).expect("pause");
    }
    wait_until(reactor, h, &name, "the state", |_, r| {
        r.context().state(id).ok() == Some(case.state)
    });
    // Deliver whatever the calls above queued (`Finish`), so that every event seen after the
    // reset is the reset's.
    for _ in 0..3 {
        turn(reactor, h, 5);
    }
    assert_eq!(
        reactor.context().state(id).ok(),
        Some(case.state),
        "[{name}] state"
    );
    assert_eq!(
        reactor.context().bytes_queued(id).unwrap() > 0,
        case.queued,
        "[{name}] queue"
    );
    (id, peer)
}

/// Runs one cell; returns what went wrong in it, if anything (an event sequence, a socket or
/// an fd left behind). A Close that never comes fails at once.
fn run_case(reactor: &mut Reactor, h: &mut Rec, addr: SocketAddr, case: Case) -> Vec<String> {
    let name = case.name();
    let fds_before = open_fds();
    let (id, peer) = reach(reactor, h, addr, case);
    let before_reset = h.events(id).len();
    let queued = reactor.context().bytes_queued(id).unwrap();

    // The peer resets. From here on the test makes no call on the socket: it only runs turns.
    reset_on_close(&peer);
    drop(peer);
    wait_until(reactor, h, &name, "Close after the peer's RST", |h, _| {
        h.closed.contains_key(&id)
    });
    // Nothing may follow `Close` (the recorder also panics on any event after it).
    for _ in 0..3 {
        turn(reactor, h, 5);
    }

    let mut wrong = Vec::new();
    let after = &h.events(id)[before_reset..];
    let close = format!("Close(true, PeerReset, {queued})");
    if after != ["Error(ConnectionReset)", close.as_str()] {
        wrong.push(format!(
            "[{name}] after the reset: {after:?}, expected [\"Error(ConnectionReset)\", \"{close}\"]; \
             whole log of the socket: {:?}",
            h.events(id)
        ));
    }
    if reactor.context().live_sockets() != 0 {
        wrong.push(format!(
            "[{name}] {} sockets still live",
            reactor.context().live_sockets()
        ));
    }
    let fds_after = open_fds();
    if fds_after != fds_before {
        wrong.push(format!(
            "[{name}] {fds_after} fds open after the case, {fds_before} before"
        ));
    }
    wrong
}

#[test]
fn peer_reset_is_reported_once_in_every_state_paused_or_not_queue_empty_or_not() {
    // No deadline may close a socket before the reset does.
    let options = ReactorOptions::new()
        .fin_wait(None)
        .linger(Duration::from_secs(3600));
    let mut reactor = Reactor::with_options(options).unwrap();
    let listener = reactor
        .listen("127.0.0.1:0", ListenOptions::new().allow_half_open(true))
        .unwrap();
    let addr = reactor.listener_addr(listener).unwrap();
    let mut h: Rec = recorder(ignore as fn(&mut Context, SocketId, &Event<'_>));
    let cases = cases();
    assert_eq!(cases.len(), 18);
    let wrong: Vec<String> = cases
        .into_iter()
        .flat_map(|case| run_case(&mut reactor, &mut h, addr, case))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} failures:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_no_live_socket(&reactor);
}
