//! Fault injection against the error table in the [`sys`](super) module docs: a real
//! [`Reactor`] on loopback (127.0.0.1, port 0) with `std::net` peers, and errors injected
//! through [`faults`] into the reactor's own syscalls.
//!
//! The fault plan is thread-local, so the reactor is driven with `run_once` on the test's own
//! thread; peers run on threads of their own (their calls never go through [`sys`](super)).
//! The reactor's clock is a [`ManualClock`] that never advances: no deadline can fire, so
//! nothing a test sees can have been rescued by a timer. Waiting is a bounded loop — a count
//! of turns and a wall-clock limit, failing with a message — and no test asserts a duration.
//!
//! What is pinned:
//! - the retried errors (`EINTR` on `send`, `sendmsg`, `recv`, `shutdown`, `accept4`, once or
//!   several times in a row) are invisible: the exact bytes both ways, then FIN, no RST, and
//!   the socket's events are those of the same exchange without the fault (issue 10, case 7
//!   among them: an `EINTR` on the direct `send` of a `write` must not lose its flush);
//! - a local send error (`ENOBUFS`, `ENOMEM`) ends the connection: `Error`, then
//!   `Close(had_error, Error)` counting the unsent bytes, and the peer's read ends in
//!   `ECONNRESET` — a truncated stream never ends in a clean FIN;
//! - `ENOTCONN` from `shutdown` with nothing in `SO_ERROR` is reported as a reset.
//!
//! **No `EAGAIN` is injected into `send`, `sendmsg` or `recv`.** Sockets are registered
//! edge-triggered: after `EAGAIN` the reactor waits for the next readiness edge, and a socket
//! whose send buffer is not really full (or whose receive buffer is not really empty) never
//! produces one, so a fake `EAGAIN` there hangs the connection by construction — a property of
//! the test, not of finwait. `EAGAIN` is injected into `accept4` only, whose listener is
//! level-triggered and is reported again by the next poll.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use super::faults::{self, Call};
use crate::timers::ManualClock;
use crate::{
    CloseInfo, CloseReason, Context, Event, Handler, ListenOptions, Reactor, ReactorOptions,
    SocketId,
};

/// Wall-clock limit of every wait (a guard against hangs, never an assertion on timing).
const LIMIT: Duration = Duration::from_secs(20);
/// Turn limit of every wait.
const MAX_TURNS: usize = 200_000;
/// Longest a turn waits for readiness: short, so peers' progress is seen promptly.
const POLL: Duration = Duration::from_millis(5);
/// `SO_SNDBUF` of server sockets that must queue (the kernel doubles it): a large write
/// then leaves most of its bytes in finwait's queue, to go out through the flush path.
const SMALL_SNDBUF: usize = 16 * 1024;
/// `SO_RCVBUF` of peers that hold back reading, so their kernel absorbs little meanwhile.
const SMALL_RCVBUF: usize = 32 * 1024;
/// The server's side of the exchange: far more than the send buffers hold.
const BIG: usize = 1 << 20;
/// The peer's side of the exchange: more than one 64 KiB read.
const REQUEST: usize = 100_000;

// ---- helpers -------------------------------------------------------------------------------

/// Deterministic payload; `seed` tells the two directions apart.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EINTR => "EINTR".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENOBUFS => "ENOBUFS".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::EPIPE => "EPIPE".into(),
        other => format!("errno {other}"),
    }
}

/// Events in a comparable form; `unsent` is checked apart, from [`Recorder::close`].
fn describe(event: &Event<'_>) -> String {
    match event {
        Event::Accepted(_) => "Accepted".into(),
        Event::Data(_) => "Data".into(),
        Event::End => "End".into(),
        Event::Finish => "Finish".into(),
        Event::Drain => "Drain".into(),
        Event::Error(crate::Error::Io(e)) => match e.raw_os_error() {
            Some(errno) => format!("Error({})", errno_name(errno)),
            None => format!("Error({:?})", e.kind()),
        },
        Event::Error(e) => format!("Error({e})"),
        Event::Close(CloseInfo {
            had_error, reason, ..
        }) => format!("Close({had_error}, {reason:?})"),
        other => format!("{other:?}"),
    }
}

/// Records the one server socket's events (consecutive `Data` merged into one entry) and the
/// bytes it read, and hands each event to `on`.
struct Recorder<F> {
    id: Option<SocketId>,
    events: Vec<String>,
    data: Vec<u8>,
    close: Option<CloseInfo>,
    on: F,
}

fn recorder<F: FnMut(&mut Context, SocketId, &Event<'_>)>(on: F) -> Recorder<F> {
    Recorder {
        id: None,
        events: Vec::new(),
        data: Vec::new(),
        close: None,
        on,
    }
}

impl<F: FnMut(&mut Context, SocketId, &Event<'_>)> Handler for Recorder<F> {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match self.id {
            None => self.id = Some(id),
            Some(first) => assert_eq!(first, id, "a second socket appeared: {event:?}"),
        }
        assert!(self.close.is_none(), "{id}: {event:?} after Close");
        let described = describe(&event);
        if described != "Data" || self.events.last().is_none_or(|e| e != "Data") {
            self.events.push(described);
        }
        match &event {
            Event::Data(bytes) => self.data.extend_from_slice(bytes),
            Event::Close(info) => self.close = Some(*info),
            _ => {}
        }
        (self.on)(cx, id, &event);
    }
}

/// A reactor listening on 127.0.0.1:0 whose clock never moves: no deadline can fire.
fn server() -> (Reactor, SocketAddr) {
    let mut reactor = Reactor::with_clock(ReactorOptions::default(), ManualClock::new())
        .expect("reactor with a manual clock");
    let listener = reactor
        .listen("127.0.0.1:0", ListenOptions::new())
        .expect("listen");
    let addr = reactor.listener_addr(listener).expect("listener address");
    (reactor, addr)
}

/// Runs turns until `done` holds; fails after [`MAX_TURNS`] turns or [`LIMIT`], saying what
/// it waited for and what the socket saw so far.
fn run_until<F: FnMut(&mut Context, SocketId, &Event<'_>)>(
    reactor: &mut Reactor,
    handler: &mut Recorder<F>,
    waiting_for: &str,
    mut done: impl FnMut(&Recorder<F>, &mut Reactor) -> bool,
) {
    let start = Instant::now();
    let mut turns = 0;
    while !done(handler, reactor) {
        assert!(
            turns < MAX_TURNS && start.elapsed() < LIMIT,
            "still waiting for {waiting_for} after {turns} turns; events so far: {:?}",
            handler.events
        );
        reactor.run_once(handler, Some(POLL)).expect("run_once");
        turns += 1;
    }
}

/// Makes an accepted socket's send buffer small, so that a large write queues.
fn shrink_send_buffer(cx: &Context, id: SocketId) {
    let slot = cx.slot(id).expect("live socket");
    let stream = slot.stream.as_ref().expect("open socket");
    SockRef::from(stream)
        .set_send_buffer_size(SMALL_SNDBUF)
        .expect("SO_SNDBUF");
}

/// How the peer's read side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `recv` returned 0: the server's FIN.
    Fin,
    /// `recv` failed with `ECONNRESET`: the server's RST.
    Reset,
}

struct PeerReport {
    received: Vec<u8>,
    ending: Ending,
    /// Sending the reply and the FIN after the server's FIN failed.
    reply_error: Option<io::Error>,
    /// Kept open, so what arrives after the peer's own FIN can still be checked.
    stream: StdStream,
}

struct Peer {
    thread: JoinHandle<PeerReport>,
    go: mpsc::Sender<()>,
}

impl Peer {
    /// Lets a peer spawned with `wait_for_go` start reading.
    fn go(&self) {
        // The peer may already have failed; its panic surfaces at `join`.
        let _ = self.go.send(());
    }

    fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    fn join(self) -> PeerReport {
        self.thread.join().expect("peer thread panicked")
    }
}

/// What a peer does, in order.
#[derive(Default)]
struct PeerPlan {
    /// `SO_RCVBUF`, set before the handshake.
    rcvbuf: Option<usize>,
    /// Sent right after connecting, without a FIN.
    request: Vec<u8>,
    /// Wait for [`Peer::go`] before reading.
    wait_for_go: bool,
    /// Sent after reading the server's stream to its FIN, followed by the peer's own FIN.
    reply: Vec<u8>,
}

/// A blocking std peer on its own thread, following `plan`; it reads to FIN or RST.
fn spawn_peer(addr: SocketAddr, plan: PeerPlan) -> Peer {
    let (go, go_rx) = mpsc::channel::<()>();
    let thread = thread::spawn(move || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("peer socket");
        if let Some(size) = plan.rcvbuf {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        socket.connect(&addr.into()).expect("peer connect");
        let mut stream = StdStream::from(socket);
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_write_timeout(Some(LIMIT)).unwrap();
        stream.write_all(&plan.request).expect("peer request");
        if plan.wait_for_go {
            // No go means the test already failed: read whatever there is and end.
            let _ = go_rx.recv_timeout(LIMIT);
        }
        let mut received = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        let ending = loop {
            match stream.read(&mut buf) {
                Ok(0) => break Ending::Fin,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break Ending::Reset,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("peer read failed after {} bytes: {e}", received.len()),
            }
        };
        let reply_error = match ending {
            Ending::Fin => stream
                .write_all(&plan.reply)
                .and_then(|()| stream.shutdown(Shutdown::Write))
                .err(),
            Ending::Reset => None,
        };
        PeerReport {
            received,
            ending,
            reply_error,
            stream,
        }
    });
    Peer { thread, go }
}

/// After the server's `Close`: nothing but the FIN the peer already read came after it — no
/// RST waiting in `SO_ERROR`, and the next read is still a clean end of stream.
fn assert_no_reset_after_fin(stream: &mut StdStream, what: &str) {
    let pending = stream.take_error().expect("SO_ERROR");
    assert!(
        pending.is_none(),
        "{what}: the peer got an RST after the FIN: {pending:?}"
    );
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        other => panic!("{what}: the peer's read after the FIN gave {other:?}, not EOF"),
    }
}

// ---- the exchange --------------------------------------------------------------------------

/// The exchange every retried call is tested in, and what it looks like without a fault.
///
/// The peer (small `SO_RCVBUF`) connects and sends [`GREETING`], without a FIN. In answer
/// the server writes [`BIG`] bytes to a socket with a small send buffer (one direct `send`,
/// mostly queued) and calls `end()`. The peer starts reading only once the bytes are queued,
/// so the rest goes out through the flush (`sendmsg`), and the FIN (`shutdown`) follows the
/// last byte. After the server's FIN the peer sends [`REQUEST`] bytes and its own FIN, and
/// the server closes. Every call in [`Call`] is made, and the event order is fixed: the peer
/// writes again only after our FIN.
///
/// The big write answers the greeting rather than `Accepted` so that it comes after the
/// socket's first readiness reports were used up: a send that lost its wake-up then waits
/// for good (nothing else is on its way to the socket), instead of being rescued by the
/// writable edge of the fresh registration.
const EXCHANGE_EVENTS: [&str; 7] = [
    "Accepted",
    "Data",
    "Drain",
    "Finish",
    "Data",
    "End",
    "Close(false, Graceful)",
];

/// The peer's first bytes, answered by the server's write.
const GREETING: &[u8] = b"GET /big\r\n\r\n";

struct Exchange {
    events: Vec<String>,
    close: CloseInfo,
    server_read: Vec<u8>,
    peer_read: Vec<u8>,
    peer_ending: Ending,
    peer_reply_error: Option<io::Error>,
    hits: Vec<(Call, i32)>,
}

/// Runs the exchange with `plan` injected into the reactor's thread from the start.
fn exchange(plan: &[(Call, i32, usize)]) -> Exchange {
    let what = format!("exchange with {plan:?}");
    let (mut reactor, addr) = server();
    for &(call, errno, times) in plan {
        faults::inject(call, errno, times);
    }
    let peer = spawn_peer(
        addr,
        PeerPlan {
            rcvbuf: Some(SMALL_RCVBUF),
            request: GREETING.to_vec(),
            wait_for_go: true,
            reply: pattern(REQUEST, 7),
        },
    );
    let big = pattern(BIG, 0);
    let mut answered = false;
    let mut handler = recorder(move |cx: &mut Context, id: SocketId, event: &Event<'_>| {
        if let Event::Data(_) = event
            && !answered
        {
            answered = true;
            shrink_send_buffer(cx, id);
            let below = cx.write(id, &big).expect("write");
            assert!(
                !below,
                "a {BIG}-byte write must leave the queue over the mark"
            );
            cx.end(id).expect("end");
        }
    });
    run_until(&mut reactor, &mut handler, "the greeting", |h, _| {
        h.data.len() >= GREETING.len() || h.close.is_some()
    });
    assert!(
        handler.close.is_none(),
        "{what}: closed before the peer started reading: {:?}",
        handler.events
    );
    let id = handler.id.unwrap();
    let queued = reactor
        .context()
        .bytes_queued(id)
        .expect("socket live after the greeting");
    assert!(
        queued > 0,
        "{what}: nothing queued, so the flush path is not exercised"
    );
    peer.go();
    run_until(
        &mut reactor,
        &mut handler,
        "the server's Close and the peer's end",
        |h, _| h.close.is_some() && peer.is_finished(),
    );
    let mut report = peer.join();
    if report.ending == Ending::Fin {
        assert_no_reset_after_fin(&mut report.stream, &what);
    }
    assert_eq!(
        reactor.context().live_sockets(),
        0,
        "{what}: socket not released"
    );
    Exchange {
        events: handler.events,
        close: handler.close.unwrap(),
        server_read: handler.data,
        peer_read: report.received,
        peer_ending: report.ending,
        peer_reply_error: report.reply_error,
        hits: faults::take_hits(),
    }
}

/// Checks one exchange against the fault-free run `baseline`.
fn assert_invisible(outcome: &Exchange, baseline: &Exchange, what: &str) {
    assert_eq!(outcome.events, baseline.events, "{what}: events differ");
    assert!(
        outcome.peer_reply_error.is_none(),
        "{what}: the peer's reply failed: {:?}",
        outcome.peer_reply_error
    );
    assert_eq!(
        outcome.peer_ending,
        Ending::Fin,
        "{what}: the peer's read ended in RST"
    );
    assert!(
        outcome.peer_read == pattern(BIG, 0),
        "{what}: the peer read {} bytes, not the {BIG} written (or other bytes)",
        outcome.peer_read.len()
    );
    let sent = [GREETING, &pattern(REQUEST, 7)].concat();
    assert!(
        outcome.server_read == sent,
        "{what}: the server read {} bytes, not the {} sent (or other bytes)",
        outcome.server_read.len(),
        sent.len()
    );
    assert_eq!(
        outcome.close,
        CloseInfo {
            had_error: false,
            reason: CloseReason::Graceful,
            unsent: 0
        },
        "{what}"
    );
}

/// The fault-free exchange, checked against the expected sequence.
fn baseline() -> Exchange {
    let baseline = exchange(&[]);
    assert_eq!(baseline.events, EXCHANGE_EVENTS, "fault-free exchange");
    assert!(baseline.hits.is_empty());
    assert_invisible(&baseline, &baseline, "fault-free exchange");
    baseline
}

/// Injects `errno` once, then several times in a row, into `call`, and checks each exchange
/// against the fault-free one.
fn assert_invisible_when_injected(call: Call, errno: i32) {
    let baseline = baseline();
    for times in [1, 4] {
        let what = format!("{} x{times} on {call:?}", errno_name(errno));
        let outcome = exchange(&[(call, errno, times)]);
        assert_eq!(
            outcome.hits,
            vec![(call, errno); times],
            "{what}: the injected errors were not all hit"
        );
        assert_invisible(&outcome, &baseline, &what);
    }
}

// ---- retried errors are invisible ----------------------------------------------------------

/// Issue 10, case 7: the first `send` of a `write` with nothing queued fails with `EINTR`.
/// The bytes still reach the peer, and the `end()` that follows still sends its FIN, without
/// any timer's help (the clock never moves) — then the peer's own FIN closes the socket
/// gracefully.
///
/// The write answers the peer's request, so the socket's first readiness reports are used
/// up by then, and the peer sends nothing more until it has read the answer to its end: a
/// lost wake-up would leave the bytes queued for good, and the bounded wait fails.
#[test]
fn eintr_on_direct_send_loses_no_flush_and_no_fin() {
    let request = b"ping\n".to_vec();
    let payload = pattern(1000, 3);
    let (mut reactor, addr) = server();
    faults::inject(Call::Send, libc::EINTR, 1);
    let peer = spawn_peer(
        addr,
        PeerPlan {
            request: request.clone(),
            ..PeerPlan::default()
        },
    );
    let answer = payload.clone();
    let mut answered = false;
    let mut handler = recorder(move |cx: &mut Context, id: SocketId, event: &Event<'_>| {
        if let Event::Data(_) = event
            && !answered
        {
            answered = true;
            assert!(
                cx.write(id, &answer).expect("write"),
                "small write over the mark"
            );
            cx.end(id).expect("end");
        }
    });
    run_until(
        &mut reactor,
        &mut handler,
        "the bytes, the FIN and the peer's FIN (no timer can fire)",
        |h, _| h.close.is_some() && peer.is_finished(),
    );
    let mut report = peer.join();
    assert_eq!(
        faults::take_hits(),
        vec![(Call::Send, libc::EINTR)],
        "the EINTR was not injected into the direct send"
    );
    assert_eq!(
        handler.events,
        [
            "Accepted",
            "Data",
            "Finish",
            "End",
            "Close(false, Graceful)"
        ]
    );
    assert_eq!(report.ending, Ending::Fin, "the peer's read ended in RST");
    assert_eq!(report.received, payload, "the peer read other bytes");
    assert!(report.reply_error.is_none(), "{:?}", report.reply_error);
    assert_no_reset_after_fin(&mut report.stream, "EINTR on the direct send");
    assert_eq!(handler.data, request, "the server read other bytes");
    assert_eq!(handler.close.unwrap().unsent, 0);
    assert_eq!(reactor.context().live_sockets(), 0, "socket not released");
}

#[test]
fn eintr_on_direct_send_is_invisible_to_the_peer() {
    assert_invisible_when_injected(Call::Send, libc::EINTR);
}

#[test]
fn eintr_on_queued_flush_sendmsg_is_invisible_to_the_peer() {
    assert_invisible_when_injected(Call::SendVectored, libc::EINTR);
}

#[test]
fn eintr_on_recv_is_invisible_to_the_peer() {
    assert_invisible_when_injected(Call::Recv, libc::EINTR);
}

#[test]
fn eintr_on_shutdown_is_invisible_to_the_peer() {
    assert_invisible_when_injected(Call::Shutdown, libc::EINTR);
}

#[test]
fn eintr_on_accept_is_invisible_to_the_peer() {
    assert_invisible_when_injected(Call::Accept, libc::EINTR);
}

/// `EAGAIN` from `accept4` means "the backlog is empty"; the listener is level-triggered, so a
/// connection that was in fact waiting is reported again by the next poll and accepted then.
#[test]
fn spurious_eagain_on_level_triggered_accept_is_invisible_to_the_peer() {
    assert_invisible_when_injected(Call::Accept, libc::EAGAIN);
}

/// Every retried call interrupted twice in the same exchange.
#[test]
fn eintr_on_every_retried_call_at_once_is_invisible_to_the_peer() {
    let baseline = baseline();
    let calls = [
        Call::Accept,
        Call::Send,
        Call::SendVectored,
        Call::Shutdown,
        Call::Recv,
    ];
    let plan: Vec<_> = calls.iter().map(|&c| (c, libc::EINTR, 2)).collect();
    let outcome = exchange(&plan);
    for call in calls {
        let hits = outcome.hits.iter().filter(|&&(c, _)| c == call).count();
        assert_eq!(hits, 2, "EINTR x2 on {call:?}: hit {hits} times");
    }
    assert_invisible(&outcome, &baseline, "EINTR x2 on every retried call");
}

// ---- errors that end the connection --------------------------------------------------------

/// What the server saw, and the peer, when a connection ended in an error.
struct Failed {
    events: Vec<String>,
    close: CloseInfo,
    written: u64,
    peer_read: Vec<u8>,
    peer_ending: Ending,
    hits: Vec<(Call, i32)>,
}

/// The server writes [`BIG`] bytes to a socket with a small send buffer and ends; `call`
/// fails once with `errno`. The peer reads everything it gets.
fn failing_write(call: Call, errno: i32) -> Failed {
    let big = pattern(BIG, 0);
    let (mut reactor, addr) = server();
    faults::inject(call, errno, 1);
    let peer = spawn_peer(
        addr,
        PeerPlan {
            rcvbuf: Some(SMALL_RCVBUF),
            ..PeerPlan::default()
        },
    );
    let mut handler = recorder(move |cx: &mut Context, id: SocketId, event: &Event<'_>| {
        if let Event::Accepted(_) = event {
            shrink_send_buffer(cx, id);
            let _ = cx.write(id, &big).expect("write");
            // Already destroyed when the direct send failed.
            let _ = cx.end(id);
        }
    });
    let mut written = 0;
    run_until(
        &mut reactor,
        &mut handler,
        "the server's Close and the peer's end",
        |h, reactor| {
            if let Some(id) = h.id
                && let Ok(n) = reactor.context().bytes_written(id)
            {
                written = n;
            }
            h.close.is_some() && peer.is_finished()
        },
    );
    let report = peer.join();
    assert_eq!(reactor.context().live_sockets(), 0, "socket not released");
    Failed {
        events: handler.events,
        close: handler.close.unwrap(),
        written,
        peer_read: report.received,
        peer_ending: report.ending,
        hits: faults::take_hits(),
    }
}

/// Checks that a local send error truncated the stream visibly: `Error` + `Close(Error)` with
/// the unsent bytes counted, and an RST for the peer after a prefix of what was written.
fn assert_truncated_with_rst(outcome: &Failed, call: Call, errno: i32) {
    let what = format!("{} on {call:?}", errno_name(errno));
    assert_eq!(
        outcome.hits,
        vec![(call, errno)],
        "{what}: the fault was not hit"
    );
    assert_eq!(
        outcome.events,
        [
            "Accepted".to_string(),
            format!("Error({})", errno_name(errno)),
            "Close(true, Error)".to_string(),
        ],
        "{what}"
    );
    let close = outcome.close;
    assert!(close.had_error, "{what}: {close:?}");
    assert_eq!(close.reason, CloseReason::Error, "{what}");
    assert!(close.unsent > 0, "{what}: nothing counted as unsent");
    assert_eq!(
        close.unsent as u64 + outcome.written,
        BIG as u64,
        "{what}: unsent + written is not what the program wrote"
    );
    assert_eq!(
        outcome.peer_ending,
        Ending::Reset,
        "{what}: the peer of a truncated stream saw a clean end after {} bytes",
        outcome.peer_read.len()
    );
    assert!(
        outcome.peer_read.len() as u64 <= outcome.written
            && outcome.peer_read[..] == pattern(BIG, 0)[..outcome.peer_read.len()],
        "{what}: the peer read {} bytes, not a prefix of the {} handed to the kernel",
        outcome.peer_read.len(),
        outcome.written
    );
}

/// A flush with bytes queued fails with a local error (`ENOBUFS`, `ENOMEM`): the socket is
/// destroyed with `Error` + `Close(had_error, Error)`, and the queued bytes it drops make the
/// close an RST, so the peer never takes the truncated stream for a complete one.
#[test]
fn local_error_on_queued_flush_closes_with_error_and_resets_the_peer() {
    for errno in [libc::ENOBUFS, libc::ENOMEM] {
        let outcome = failing_write(Call::SendVectored, errno);
        assert_truncated_with_rst(&outcome, Call::SendVectored, errno);
    }
}

/// The same on a `write`'s direct `send`: every byte of that write counts as unsent.
#[test]
fn local_error_on_direct_send_closes_with_error_and_resets_the_peer() {
    for errno in [libc::ENOBUFS, libc::ENOMEM] {
        let outcome = failing_write(Call::Send, errno);
        assert_truncated_with_rst(&outcome, Call::Send, errno);
        assert_eq!(outcome.close.unsent, BIG, "the whole write is unsent");
    }
}

/// `shutdown` fails with `ENOTCONN` while `SO_ERROR` holds nothing: the connection was torn
/// down under us, which [`shutdown_write`](super::shutdown_write) reports as `ECONNRESET`,
/// so the socket closes as a peer reset. (The fault stops the call before the kernel, so the
/// real socket is intact: the peer still reads every byte written before `end()`.)
#[test]
fn enotconn_on_shutdown_with_empty_so_error_is_a_peer_reset() {
    let payload = pattern(1000, 5);
    let (mut reactor, addr) = server();
    faults::inject(Call::Shutdown, libc::ENOTCONN, 1);
    let peer = spawn_peer(addr, PeerPlan::default());
    let sent = payload.clone();
    let mut handler = recorder(move |cx: &mut Context, id: SocketId, event: &Event<'_>| {
        if let Event::Accepted(_) = event {
            let slot = cx.slot(id).expect("live socket");
            let pending = super::take_error(slot.stream.as_ref().expect("open socket"));
            assert!(pending.is_none(), "SO_ERROR not empty: {pending:?}");
            assert!(cx.write(id, &sent).expect("write"));
            cx.end(id).expect("end");
        }
    });
    run_until(
        &mut reactor,
        &mut handler,
        "the server's Close and the peer's end",
        |h, _| h.close.is_some() && peer.is_finished(),
    );
    let report = peer.join();
    assert_eq!(
        faults::take_hits(),
        vec![(Call::Shutdown, libc::ENOTCONN)],
        "the fault was not hit"
    );
    assert_eq!(
        handler.events,
        ["Accepted", "Error(ECONNRESET)", "Close(true, PeerReset)"]
    );
    assert_eq!(handler.close.unwrap().unsent, 0);
    assert_eq!(report.received, payload, "the peer read other bytes");
    assert_eq!(reactor.context().live_sockets(), 0, "socket not released");
}
