//! Resets and truncation over loopback (SEMANTICS.md B2.1, B2.5–B2.7, B2.12; issue 10).
//!
//! A peer's RST is reported as `Error` + `Close(PeerReset)` in the turn it arrives, whatever
//! the socket was doing — half-closed by the peer, paused, ended — and with no call from the
//! program after it; a `shutdown(2)` that finds the RST already there reports it as a reset.
//! A close that drops queued bytes sends RST (the peer's read fails with ECONNRESET), the same
//! close with nothing queued sends FIN (the peer reads every byte, then a clean end).
//!
//! Deadlines are driven by a [`ManualClock`]; nothing here sleeps to make time pass. Waits
//! for the kernel are bounded loops that fail with a message.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use finwait::timers::ManualClock;
use finwait::{
    CloseReason, Context, Deadline, Event, ListenOptions, ListenerId, Reactor, ReactorOptions,
    SocketId, State,
};

// ---- helpers ------------------------------------------------------------------------------

/// A listening reactor on 127.0.0.1:0 whose time moves only when the test says so.
fn manual_server(options: ListenOptions) -> (Reactor, ManualClock, ListenerId, SocketAddr) {
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(ReactorOptions::new(), clock.clone()).unwrap();
    let l = reactor.listen("127.0.0.1:0", options).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    (reactor, clock, l, addr)
}

/// A few short turns, so that a clock jump or a late packet is noticed.
fn turns<H: finwait::Handler>(reactor: &mut Reactor, h: &mut H) {
    for _ in 0..3 {
        reactor.run_once(h, Some(Duration::from_millis(5))).unwrap();
    }
}

/// Polls `cond` (at most 20,000 times and [`LIMIT`] of wall time), failing with `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        if start.elapsed() > LIMIT {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("gave up waiting for {what}");
}

/// `st` values of `/proc/net/tcp` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_CLOSE_WAIT: u8 = 0x08;

/// The TCP state of the socket `local` → `remote` while the kernel still has it hashed (see
/// [`proc_net::row`]: a reset socket is gone from the table at once).
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<u8> {
    proc_net::row(local, remote).map(|r| r.state)
}

/// The server's side of the connection of peer `s`: (local, remote) as the server sees it.
/// Take it while connected: a reset socket has no peer address any more.
fn server_side(s: &TcpStream) -> (SocketAddr, SocketAddr) {
    (s.peer_addr().unwrap(), s.local_addr().unwrap())
}

/// A peer with a tiny receive buffer, set before the connect so the window stays small: a
/// server's flush to a peer that does not read gets stuck after a few KiB.
fn tight_peer(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).expect("peer connect");
    let s = TcpStream::from(s);
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Closes the peer with RST (`SO_LINGER{on, 0}` + close).
fn reset(s: TcpStream) {
    reset_on_close(&s);
    drop(s);
}

/// A payload the kernel can never take whole: twice the largest send buffer it autotunes to
/// (`tcp_wmem` max), so `write` returns false and bytes stay queued in the reactor until the
/// peer reads.
fn unflushable_len() -> usize {
    let max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    (2 * max + (1 << 20)).max(8 << 20)
}

/// The peer of a truncated stream: the server's side was closed with RST (gone from the TCP
/// table at once), and the peer reads a prefix of the payload, then ECONNRESET — never a
/// clean end. `unsent` bytes never reached the kernel. `side` is [`server_side`] of `s`.
fn assert_peer_sees_reset(
    s: &mut TcpStream,
    side: (SocketAddr, SocketAddr),
    payload: &[u8],
    unsent: usize,
) {
    let (local, remote) = side;
    assert_eq!(
        tcp_state(local, remote),
        None,
        "the server's socket must be closed with RST (unhashed at once), not with a FIN"
    );
    let (got, ending) = read_to_end(s);
    assert_eq!(
        ending,
        Ending::Reset,
        "a truncated stream must end in ECONNRESET (read {} of {} bytes, {unsent} unsent)",
        got.len(),
        payload.len()
    );
    assert!(
        payload.starts_with(&got),
        "the peer read bytes out of order"
    );
    assert!(
        got.len() + unsent <= payload.len(),
        "read {} + unsent {unsent} > {} written",
        got.len(),
        payload.len()
    );
}

/// After a close with nothing queued: the server's side went through FIN (still in the TCP
/// table, FIN-WAIT or TIME-WAIT), and the peer, which already read every byte and the FIN,
/// got no RST after it (no pending error, still in CLOSE-WAIT). `side` is [`server_side`]
/// of `s`.
fn assert_no_reset_after_fin(s: &TcpStream, side: (SocketAddr, SocketAddr)) {
    let (local, remote) = side;
    // An orphaned FIN-WAIT-2 socket lives on as a time-wait minisock; when the time-wait
    // table is full (`tcp_max_tw_buckets`, reached after heavy connection churn on this host)
    // the kernel drops it at once instead ("time wait bucket table overflow"), and its
    // absence proves nothing. The peer's side below still does.
    assert!(
        tcp_state(local, remote).is_some() || timewait_table_full(),
        "the server's socket was closed with RST although nothing was queued"
    );
    assert!(
        s.take_error().unwrap().is_none(),
        "the peer got an error after the FIN"
    );
    assert_eq!(
        tcp_state(remote, local),
        Some(TCP_CLOSE_WAIT),
        "the peer must still be in CLOSE-WAIT (no RST reached it)"
    );
}

/// Whether the kernel's time-wait table is (nearly) full: `tw` of `/proc/net/sockstat`
/// against `net.ipv4.tcp_max_tw_buckets`.
fn timewait_table_full() -> bool {
    let tw = std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("TCP:"))?.to_string();
            let mut words = line.split_whitespace();
            words.find(|w| *w == "tw")?;
            words.next()?.parse::<u64>().ok()
        });
    let max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    matches!((tw, max), (Some(tw), Some(max)) if tw + max / 100 >= max)
}

/// A connected peer whose server socket was accepted (handler saw `Accepted`) and then
/// received the peer's RST — which the reactor has not read: the loop does not run between
/// the reset and the return. The RST's arrival is observed in the kernel's TCP table, where
/// the server's socket disappears once the RST put it in `TCP_CLOSE`.
fn accept_then_reset_unread<H: finwait::Handler>(
    reactor: &mut Reactor,
    h: &mut H,
    addr: SocketAddr,
    accepted: impl Fn(&H) -> Option<SocketId>,
) -> SocketId {
    let s = peer(addr);
    run_until(reactor, h, |h, _| accepted(h).is_some());
    let id = accepted(h).unwrap();
    assert_eq!(reactor.context().state(id).unwrap(), State::Open);
    let (local, remote) = server_side(&s);
    assert_eq!(
        tcp_state(local, remote),
        Some(TCP_ESTABLISHED),
        "the TCP table must show the server's socket before the reset (or the wait below proves nothing)"
    );
    reset(s);
    wait_for("the peer's RST to reach the server's socket", || {
        tcp_state(local, remote).is_none()
    });
    id
}

// ---- case 1: RST after the peer's FIN ----------------------------------------------------

/// Issue 10 case 1 (B2.7): a half-open server got 8 bytes and the peer's FIN, delivered
/// `End`, and does nothing more — no write, no `end()`. The peer then resets. The RST alone
/// ends the socket: `Error(ECONNRESET)` + `Close(true, PeerReset)`, slot released.
#[test]
fn rst_after_peer_fin_is_reported_without_a_write() {
    let (mut reactor, _l, addr) = server(ListenOptions::new().allow_half_open(true));
    let mut s = peer(addr);
    s.write_all(b"question").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets()
            .first()
            .is_some_and(|id| h.events(*id).contains(&"End"))
    });
    let id = h.sockets()[0];
    assert_eq!(
        reactor.context().state(id).unwrap(),
        State::HalfClosedRemote
    );
    reset(s);
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Data",
            "End",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_eq!(h.data[&id], b"question");
    assert_no_live_socket(&reactor);
}

// ---- case 2: RST in answer to our write --------------------------------------------------

/// Issue 10 case 2 (B2.7): the peer sends a request and closes its socket (FIN; its receive
/// side is gone). The half-open server answers once after `End`; the peer's kernel answers
/// that write with RST. The reset is reported when it arrives — no second write needed.
#[test]
fn rst_drawn_by_a_write_after_peer_close_is_reported_without_another_write() {
    let (mut reactor, _l, addr) = server(ListenOptions::new().allow_half_open(true));
    let mut s = peer(addr);
    s.write_all(b"subscribe").unwrap();
    drop(s); // plain close: FIN; anything arriving later is answered with RST
    let mut writes = Vec::new();
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::End = e {
            writes.push(cx.write(id, b"tick 0\n").map_err(|e| e.to_string()));
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        !h.sockets().is_empty() && h.all_closed()
    });
    let id = h.sockets()[0];
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Data",
            "End",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_eq!(h.data[&id], b"subscribe");
    drop(h);
    assert_eq!(writes, [Ok(true)], "exactly one write, taken by the kernel");
    assert_no_live_socket(&reactor);
}

// ---- case 3: RST on a paused socket ------------------------------------------------------

/// Issue 10 case 3 (B2.5, B2.7): a socket paused in `Accepted` whose peer resets gets
/// `Error` + `Close(PeerReset)` without `resume` — with no input waiting, and with unread
/// input the paused program never asked for (it is not delivered: the reset ends the socket
/// at once).
#[test]
fn rst_on_a_paused_socket_is_reported_without_resume() {
    for unread_input in [false, true] {
        let (mut reactor, _l, addr) = server(ListenOptions::new());
        let mut s = peer(addr);
        let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
            if let Event::Accepted(_) = e {
                cx.pause(id).unwrap();
            }
        });
        run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
        let id = h.sockets()[0];
        if unread_input {
            s.write_all(b"unread").unwrap();
        }
        reset(s);
        run_until(&mut reactor, &mut h, |h, _| h.all_closed());
        assert_eq!(
            h.events(id),
            [
                "Accepted",
                "Error(ConnectionReset)",
                "Close(true, PeerReset, 0)"
            ],
            "unread input: {unread_input}"
        );
        assert!(!h.data.contains_key(&id), "Data while paused");
        assert_no_live_socket(&reactor);
    }
}

/// Issue 10 case 3b (B2.5, B2.7): `end()` then `pause()`; the peer reads our FIN, then
/// resets. That is a peer reset reported when it arrives — not a `Close(Deadline(FinWait))`
/// 30 s later. (The clock never moves before the `Close`, so the FIN wait cannot be what
/// ended it; moving it afterwards changes nothing.)
#[test]
fn rst_after_end_then_pause_is_a_peer_reset_not_a_fin_wait_deadline() {
    let (mut reactor, clock, _l, addr) = manual_server(ListenOptions::new());
    let mut s = peer(addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.end(id).unwrap();
            cx.pause(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets()
            .first()
            .is_some_and(|id| h.events(*id).contains(&"Finish"))
    });
    let id = h.sockets()[0];
    assert_eq!(
        reactor.context().state(id).unwrap(),
        State::HalfClosedLocal(finwait::Fin::Sent)
    );
    let (got, ending) = read_to_end(&mut s);
    assert_eq!((got.as_slice(), ending), (&b""[..], Ending::Fin));
    reset(s);
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    let expected = [
        "Accepted",
        "Finish",
        "Error(ConnectionReset)",
        "Close(true, PeerReset, 0)",
    ];
    assert_eq!(h.events(id), expected);
    clock.advance(Duration::from_secs(31));
    turns(&mut reactor, &mut h);
    assert_eq!(h.events(id), expected, "nothing after Close");
    assert_no_live_socket(&reactor);
}

// ---- case 4: shutdown(2) after an RST the reactor has not read ---------------------------

/// The first socket's id once `Accepted` was delivered.
fn first_accepted<F>(h: &Recorder<F>) -> Option<SocketId> {
    h.sockets().first().copied()
}

/// Issue 10 case 4 (B2.7): the RST is in the kernel but unread; the program calls `end()`
/// from outside the loop. Its `shutdown(SHUT_WR)` fails with ENOTCONN, and the reset waiting
/// in `SO_ERROR` is what gets reported: `Error(ECONNRESET)` + `Close(true, PeerReset)`, not
/// `Error(NotConnected)` + `Close(Error)`. The socket is destroyed inside the call (evidence
/// that the shutdown path, not a later read, found the reset).
#[test]
fn end_after_an_unread_rst_reports_peer_reset_not_enotconn() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    let id = accept_then_reset_unread(&mut reactor, &mut h, addr, first_accepted);
    reactor.context_mut().end(id).unwrap();
    assert_eq!(reactor.context().state(id).unwrap(), State::Destroyed);
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_no_live_socket(&reactor);
}

/// Issue 10 case 4 through `destroy_soon()`: its flush-then-FIN makes the same `shutdown`,
/// which finds the unread RST: a peer reset, not an error.
#[test]
fn destroy_soon_after_an_unread_rst_reports_peer_reset_not_enotconn() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    let id = accept_then_reset_unread(&mut reactor, &mut h, addr, first_accepted);
    reactor.context_mut().destroy_soon(id).unwrap();
    assert_eq!(reactor.context().state(id).unwrap(), State::Destroyed);
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_no_live_socket(&reactor);
}

/// Issue 10 case 4 through the reactor's graceful `shutdown(grace)`: the connection whose RST
/// is unread is reported as a peer reset, and the shutdown completes (listener `Close`)
/// without waiting for the grace. (The shutdown asks each connection to finish at its next
/// service, after its read, so here the read usually meets the RST before any `shutdown(2)`;
/// the `shutdown(2)`-after-RST path itself is pinned by the `end` and `destroy_soon` tests.)
#[test]
fn shutdown_after_an_unread_rst_reports_peer_reset_not_enotconn() {
    let (mut reactor, l, addr) = server(ListenOptions::new());
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    let id = accept_then_reset_unread(&mut reactor, &mut h, addr, first_accepted);
    reactor.context_mut().shutdown(Duration::from_secs(60));
    run_until(&mut reactor, &mut h, |h, r| {
        h.all_closed() && r.context().live_listeners() == 0
    });
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_eq!(h.listener_log, [(l, "Close".to_string())]);
    assert_no_live_socket(&reactor);
}

/// An idle `Timeout` due in the turn that also brings the RST's readiness: due timers are
/// handled before sockets are serviced, and the reset — older news than the idleness — is
/// reported instead of the `Timeout`, so the handler never acts on a socket that is gone.
/// (Before, the `Timeout` came first and its `end()` met the unread RST in `shutdown`.)
#[test]
fn an_unread_rst_is_reported_before_an_idle_timeout_due_in_the_same_turn() {
    let (mut reactor, clock, _l, addr) = manual_server(ListenOptions::new());
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| match e {
        Event::Accepted(_) => cx.set_timeout(id, Some(Duration::from_secs(10))).unwrap(),
        Event::Timeout => cx.end(id).unwrap(),
        _ => {}
    });
    let id = accept_then_reset_unread(&mut reactor, &mut h, addr, first_accepted);
    clock.advance(Duration::from_secs(11));
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_no_live_socket(&reactor);
}

// ---- truncation: a close that drops queued bytes sends RST, one with nothing queued FIN --

/// The closes that run out a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadlineClose {
    /// `end()`, then the FIN wait (30 s without progress).
    FinWait,
    /// `destroy_soon()`, then its linger deadline (5 s).
    Linger,
    /// The reactor's `shutdown(grace)`, then the grace (2 s here).
    ShutdownGrace,
}

impl DeadlineClose {
    const GRACE: Duration = Duration::from_secs(2);

    fn reason(self) -> CloseReason {
        CloseReason::Deadline(match self {
            DeadlineClose::FinWait => Deadline::FinWait,
            DeadlineClose::Linger => Deadline::Linger,
            DeadlineClose::ShutdownGrace => Deadline::Shutdown,
        })
    }

    /// How far to move the clock so the deadline is past (default `ReactorOptions`).
    fn past(self) -> Duration {
        match self {
            DeadlineClose::FinWait => Duration::from_secs(31),
            DeadlineClose::Linger => Duration::from_secs(6),
            DeadlineClose::ShutdownGrace => Self::GRACE + Duration::from_secs(1),
        }
    }
}

/// The server writes a payload the kernel cannot take whole, then the close starts (`end`,
/// `destroy_soon` in `Accepted`, or `shutdown(grace)` from outside). With `queued`, the peer
/// has a tiny window and reads nothing: bytes are still queued when the deadline passes, the
/// close drops them and must send RST. Without, the peer reads every byte and the FIN and
/// then just sits there (no FIN of its own, nothing sent): the deadline closes with an empty
/// queue, and that close must stay a FIN.
fn deadline_close(close: DeadlineClose, queued: bool) {
    let (mut reactor, clock, l, addr) = manual_server(ListenOptions::new());
    let payload = pattern(unflushable_len());
    // The peer: either connected here and never read, or a thread that reads to the end and
    // hands its stream back (still open, never FINed).
    let (mut idle_peer, reader) = if queued {
        let s = tight_peer(addr);
        let side = server_side(&s);
        (Some((s, side)), None)
    } else {
        let reader = thread::spawn(move || {
            let mut s = peer(addr);
            let side = server_side(&s);
            let got = read_to_end(&mut s);
            (got, s, side)
        });
        (None, Some(reader))
    };
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            assert!(!cx.write(id, &payload).unwrap(), "the write must queue");
            match close {
                DeadlineClose::FinWait => cx.end(id).unwrap(),
                DeadlineClose::Linger => cx.destroy_soon(id).unwrap(),
                DeadlineClose::ShutdownGrace => {}
            }
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    let id = h.sockets()[0];
    if close == DeadlineClose::ShutdownGrace {
        reactor.context_mut().shutdown(DeadlineClose::GRACE);
    }
    match &reader {
        None => {
            turns(&mut reactor, &mut h);
            assert!(
                reactor.context().bytes_queued(id).unwrap() > 0,
                "the flush must be stuck"
            );
        }
        Some(reader) => run_until(&mut reactor, &mut h, |h, _| {
            h.events(id).contains(&"Finish") && reader.is_finished()
        }),
    }
    assert!(!h.closed.contains_key(&id), "closed before the deadline");
    clock.advance(close.past());
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    let info = h.closed[&id];
    let close_event = format!("Close(false, {:?}, {})", close.reason(), info.unsent);
    if queued {
        assert!(info.unsent > 0, "{close:?}: nothing was left queued");
        assert_eq!(
            h.events(id),
            ["Accepted", close_event.as_str()],
            "{close:?}"
        );
    } else {
        assert_eq!(info.unsent, 0, "{close:?}");
        assert_eq!(
            h.events(id),
            ["Accepted", "Drain", "Finish", close_event.as_str()],
            "{close:?}"
        );
    }
    assert_eq!(info.reason, close.reason());
    if close == DeadlineClose::ShutdownGrace {
        run_until(&mut reactor, &mut h, |_, r| {
            r.context().live_listeners() == 0
        });
        assert_eq!(h.listener_log, [(l, "Close".to_string())]);
    }
    drop(h);
    match (idle_peer.as_mut(), reader) {
        (Some((s, side)), _) => assert_peer_sees_reset(s, *side, &payload, info.unsent),
        (None, Some(reader)) => {
            let ((got, ending), s, side) = reader.join().unwrap();
            assert_eq!(ending, Ending::Fin, "{close:?}");
            assert!(
                got == payload,
                "{close:?}: the peer read {} of {} bytes",
                got.len(),
                payload.len()
            );
            assert_no_reset_after_fin(&s, side);
        }
        (None, None) => unreachable!(),
    }
    assert_no_live_socket(&reactor);
}

/// B2.1, B2.5: `end()` with bytes stuck behind a peer that does not read; the FIN wait
/// destroys the socket, reports the unsent bytes, and the peer's read ends in ECONNRESET —
/// a truncated stream never looks complete.
#[test]
fn fin_wait_deadline_with_queued_bytes_resets_the_peer() {
    deadline_close(DeadlineClose::FinWait, true);
}

/// B2.1, B2.5: the peer read everything and our FIN but never sends its own; the FIN wait
/// closes with nothing queued: no RST after the FIN, the peer's stream ended cleanly.
#[test]
fn fin_wait_deadline_with_nothing_queued_ends_with_fin() {
    deadline_close(DeadlineClose::FinWait, false);
}

/// B2.1, B2.6: `destroy_soon()` whose flush is stuck; the linger deadline drops the rest and
/// the peer gets ECONNRESET.
#[test]
fn linger_deadline_with_queued_bytes_resets_the_peer() {
    deadline_close(DeadlineClose::Linger, true);
}

/// B2.1, B2.6: `destroy_soon()` flushed everything and sent FIN; the peer never FINs back;
/// the linger deadline closes without RST.
#[test]
fn linger_deadline_with_nothing_queued_ends_with_fin() {
    deadline_close(DeadlineClose::Linger, false);
}

/// B2.1, B2.12: `shutdown(grace)` with a connection whose flush is stuck; when the grace
/// runs out the rest is dropped, counted, and the peer gets ECONNRESET.
#[test]
fn shutdown_grace_with_queued_bytes_resets_the_peer() {
    deadline_close(DeadlineClose::ShutdownGrace, true);
}

/// B2.1, B2.12: `shutdown(grace)` flushed everything and sent FIN; the peer keeps its side
/// open; the grace closes it without RST.
#[test]
fn shutdown_grace_with_nothing_queued_ends_with_fin() {
    deadline_close(DeadlineClose::ShutdownGrace, false);
}

/// B2.1: `destroy()` with bytes queued drops them, reports them as unsent, and sends RST:
/// the peer reads a prefix, then ECONNRESET.
#[test]
fn destroy_with_queued_bytes_resets_the_peer() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut s = tight_peer(addr);
    let side = server_side(&s);
    let payload = pattern(unflushable_len());
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            assert!(!cx.write(id, &payload).unwrap(), "the write must queue");
            cx.destroy(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        !h.sockets().is_empty() && h.all_closed()
    });
    let id = h.sockets()[0];
    let info = h.closed[&id];
    assert!(info.unsent > 0);
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            format!("Close(false, LocalDestroy, {})", info.unsent).as_str()
        ]
    );
    drop(h);
    assert_peer_sees_reset(&mut s, side, &payload, info.unsent);
    assert_no_live_socket(&reactor);
}

/// B2.1: `destroy()` with nothing queued (the write went straight to the kernel) stays a
/// FIN: the peer reads every byte, then a clean end, and no RST follows.
#[test]
fn destroy_with_nothing_queued_ends_with_fin() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut s = peer(addr);
    let side = server_side(&s);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            assert!(cx.write(id, b"hello").unwrap());
            assert_eq!(cx.bytes_queued(id).unwrap(), 0);
            cx.destroy(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        !h.sockets().is_empty() && h.all_closed()
    });
    let id = h.sockets()[0];
    assert_eq!(h.events(id), ["Accepted", "Close(false, LocalDestroy, 0)"]);
    let (got, ending) = read_to_end(&mut s);
    assert_eq!((got.as_slice(), ending), (&b"hello"[..], Ending::Fin));
    assert_no_reset_after_fin(&s, side);
    assert_no_live_socket(&reactor);
}
