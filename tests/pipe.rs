//! `Context::pipe` (SEMANTICS B5), copy path, over loopback: bytes each way with their content
//! checked, each peer's ending (FIN or ECONNRESET), the one `PipeSummary` per pair field by
//! field, and no socket left behind.
//!
//! Every test has the same cast: a reactor listening on 127.0.0.1:0, a std `TcpListener` as
//! the upstream, a std client that connects to the reactor, and a handler that — on
//! `Accepted`, unless the test says otherwise — connects to the upstream and pipes
//! `(client side, upstream side)`: side `A` faces the client, side `B` the upstream.
//!
//! Peers that must read or write while the reactor runs do it on threads; the reactor runs on
//! the test thread in bounded loops. Deadlines are driven by a [`ManualClock`].

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{
    Ending, LIMIT, describe, pattern, peer, proc_net, read_to_end, reset_on_close, run_until,
};
use finwait::timers::ManualClock;
use finwait::{
    CloseInfo, CloseReason, ConnectOptions, Context, DEFAULT_HIGH_WATER_MARK, Deadline, Error,
    Event, Fin, Handler, ListenOptions, PipeOptions, PipeSummary, Reactor, ReactorOptions, Side,
    SocketId, Splice, State,
};

// ---- the cast -----------------------------------------------------------------------------------

/// (client side, upstream side) of each pipe the hook made, in order.
type Pairs = Vec<(SocketId, SocketId)>;

/// Records every event that reaches the handler (consecutive `Data` of one socket merged, as
/// in `common::Recorder`), every `Data` byte, every `Close` and every pipe summary; then hands
/// the event to a hook that acts on it.
struct Rec<F> {
    log: Vec<(SocketId, String)>,
    data: HashMap<SocketId, Vec<u8>>,
    closed: HashMap<SocketId, CloseInfo>,
    summaries: Vec<PipeSummary>,
    pairs: Pairs,
    on: F,
}

fn rec<F: FnMut(&mut Context, SocketId, &Event<'_>, &mut Pairs)>(on: F) -> Rec<F> {
    Rec {
        log: Vec::new(),
        data: HashMap::new(),
        closed: HashMap::new(),
        summaries: Vec::new(),
        pairs: Vec::new(),
        on,
    }
}

impl<F> Rec<F> {
    /// The events of one socket, in order.
    fn events(&self, id: SocketId) -> Vec<&str> {
        self.log
            .iter()
            .filter(|(s, _)| *s == id)
            .map(|(_, e)| e.as_str())
            .collect()
    }

    /// Which of `a` and `b` had its `Close` delivered first.
    fn first_close(&self, a: SocketId, b: SocketId) -> Side {
        let at = |id| {
            self.log
                .iter()
                .position(|(s, e)| *s == id && e.starts_with("Close"))
                .unwrap_or_else(|| panic!("{id} has no Close"))
        };
        if at(a) < at(b) { Side::A } else { Side::B }
    }

    /// The only summary.
    fn summary(&self) -> PipeSummary {
        assert_eq!(self.summaries.len(), 1, "one summary per pipe");
        self.summaries[0]
    }
}

impl<F: FnMut(&mut Context, SocketId, &Event<'_>, &mut Pairs)> Handler for Rec<F> {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        assert!(
            !self.closed.contains_key(&id),
            "{id}: event {event:?} after Close"
        );
        let d = describe(&event);
        let merge = d == "Data"
            && self
                .log
                .iter()
                .rev()
                .find(|(s, _)| *s == id)
                .is_some_and(|(_, e)| e == "Data");
        if !merge {
            self.log.push((id, d));
        }
        if let Event::Data(bytes) = &event {
            self.data.entry(id).or_default().extend_from_slice(bytes);
        }
        if let Event::Close(info) = &event {
            self.closed.insert(id, *info);
        }
        (self.on)(cx, id, &event, &mut self.pairs);
    }

    fn on_pipe_closed(&mut self, _cx: &mut Context, summary: PipeSummary) {
        for id in [summary.a, summary.b] {
            assert!(
                self.closed.contains_key(&id),
                "{id}: the summary came before its Close"
            );
        }
        self.summaries.push(summary);
    }
}

/// The hook of a TCP proxy: every accepted connection is piped to a new connection to
/// `upstream`.
fn proxy(
    upstream: SocketAddr,
    options: PipeOptions,
) -> impl FnMut(&mut Context, SocketId, &Event<'_>, &mut Pairs) {
    move |cx, id, event, pairs| {
        if let Event::Accepted(_) = event {
            let up = cx.connect(upstream, ConnectOptions::new()).unwrap();
            cx.pipe(id, up, options).unwrap();
            pairs.push((id, up));
        }
    }
}

/// A reactor listening on 127.0.0.1:0 (its address) and the upstream listener.
fn rig(reactor: Reactor, listen: ListenOptions) -> (Reactor, SocketAddr, TcpListener) {
    let mut reactor = reactor;
    let l = reactor.listen("127.0.0.1:0", listen).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    upstream.set_nonblocking(true).unwrap();
    (reactor, addr, upstream)
}

/// Takes the reactor's connection off the upstream listener, running the reactor meanwhile.
fn accept_upstream<H: Handler>(
    reactor: &mut Reactor,
    h: &mut H,
    upstream: &TcpListener,
) -> TcpStream {
    let start = Instant::now();
    loop {
        match upstream.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                s.set_write_timeout(Some(LIMIT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("upstream accept: {e}"),
        }
        assert!(
            start.elapsed() < LIMIT,
            "the reactor never reached upstream"
        );
        reactor
            .run_once(h, Some(Duration::from_millis(10)))
            .unwrap();
    }
}

/// A client connected through a proxy hook: (client, upstream peer, side A, side B).
fn connect_through<F: FnMut(&mut Context, SocketId, &Event<'_>, &mut Pairs)>(
    reactor: &mut Reactor,
    h: &mut Rec<F>,
    addr: SocketAddr,
    upstream: &TcpListener,
) -> (TcpStream, TcpStream, SocketId, SocketId) {
    let n = h.pairs.len();
    let client = peer(addr);
    run_until(reactor, h, |h, _| h.pairs.len() > n);
    let (a, b) = h.pairs[n];
    let up = accept_upstream(reactor, h, upstream);
    (client, up, a, b)
}

/// Runs a peer's part on a thread.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::spawn(f)
}

/// Runs the reactor until every thread finished and `done` holds; returns the threads' results.
fn run_with<F, T>(
    reactor: &mut Reactor,
    h: &mut Rec<F>,
    threads: Vec<JoinHandle<T>>,
    mut done: impl FnMut(&Rec<F>) -> bool,
) -> Vec<T>
where
    F: FnMut(&mut Context, SocketId, &Event<'_>, &mut Pairs),
{
    run_until(reactor, h, |h, _| {
        threads.iter().all(JoinHandle::is_finished) && done(h)
    });
    threads
        .into_iter()
        .map(|t| t.join().expect("peer thread panicked"))
        .collect()
}

/// A few short turns, so that a packet in flight or a clock jump is noticed.
fn turns<H: Handler>(reactor: &mut Reactor, h: &mut H) {
    for _ in 0..3 {
        reactor.run_once(h, Some(Duration::from_millis(5))).unwrap();
    }
}

/// Reads exactly `n` bytes.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("peer read");
    buf
}

/// Another payload than `pattern`'s, so the two directions cannot be mistaken for each other.
fn pattern_back(len: usize) -> Vec<u8> {
    (0..len).map(|i| 255 - (i % 241) as u8).collect()
}

fn graceful() -> CloseInfo {
    CloseInfo {
        had_error: false,
        reason: CloseReason::Graceful,
        unsent: 0,
    }
}

fn local_reset() -> CloseInfo {
    CloseInfo {
        had_error: false,
        reason: CloseReason::LocalReset,
        unsent: 0,
    }
}

/// `tx_queue:rx_queue` of the socket `local` → `remote` in `/proc/net/tcp`: bytes sent and
/// not yet acknowledged, bytes received and not yet read.
fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    proc_net::row(local, remote).map(|r| (r.tx_queue, r.rx_queue))
}

// ---- a whole exchange ---------------------------------------------------------------------------

const N1: usize = 300_000;
const N2: usize = 200_000;

/// What one full exchange left behind.
struct Exchange {
    a: SocketId,
    b: SocketId,
    client_got: (Vec<u8>, Ending),
    upstream_got: (Vec<u8>, Ending),
    log_a: Vec<String>,
    log_b: Vec<String>,
    data: HashMap<SocketId, Vec<u8>>,
    summary: PipeSummary,
    first_close_seen: Side,
}

/// The client sends `N1` bytes and its FIN; the upstream reads them to the end, then sends
/// `N2` bytes and its FIN. The order is fixed: the client's FIN reaches the upstream before
/// the upstream's FIN is sent.
fn exchange(options: PipeOptions) -> Exchange {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let mut h = rec(proxy(upstream.local_addr().unwrap(), options));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);

    let c = on_thread(move || {
        client.write_all(&pattern(N1)).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut client)
    });
    let u = on_thread(move || {
        let got = read_to_end(&mut up);
        up.write_all(&pattern_back(N2)).unwrap();
        drop(up);
        got
    });
    let mut got = run_with(&mut reactor, &mut h, vec![c, u], |h| h.summaries.len() == 1);
    let upstream_got = got.pop().unwrap();
    let client_got = got.pop().unwrap();
    assert_eq!(reactor.context().live_sockets(), 0, "sockets still live");
    Exchange {
        a,
        b,
        client_got,
        upstream_got,
        log_a: h.events(a).into_iter().map(String::from).collect(),
        log_b: h.events(b).into_iter().map(String::from).collect(),
        data: h.data.clone(),
        summary: h.summary(),
        first_close_seen: h.first_close(a, b),
    }
}

/// Both peers read exactly what the other sent, then a FIN; one summary counts the bytes each
/// way, both closes graceful. The upstream's FIN comes last, but its socket closes first: its
/// own FIN (the client's, passed on) was already out, so its peer's FIN completes it, while
/// the client side has only just been `end()`ed by it.
#[test]
fn summary_counts_bytes_each_way_and_the_first_close() {
    let x = exchange(PipeOptions::new());
    assert_eq!(x.upstream_got.1, Ending::Fin);
    assert!(x.upstream_got.0 == pattern(N1), "upstream got other bytes");
    assert_eq!(x.client_got.1, Ending::Fin);
    assert!(x.client_got.0 == pattern_back(N2), "client got other bytes");

    let s = x.summary;
    assert_eq!((s.a, s.b), (x.a, x.b));
    assert_eq!(s.a_to_b, N1 as u64);
    assert_eq!(s.b_to_a, N2 as u64);
    assert_eq!(s.a_close, graceful());
    assert_eq!(s.b_close, graceful());
    assert_eq!(
        s.first_closed, x.first_close_seen,
        "first_closed must name the socket whose Close came first"
    );
    assert_eq!(s.first_closed, Side::B);
}

/// With `watch`, the handler gets every forwarded byte as `Data` — exactly the bytes the other
/// peer reads — and still no `End`, `Drain` nor `Finish` (those are the pipe's).
#[test]
fn watch_delivers_data_to_the_handler_as_well() {
    let x = exchange(PipeOptions::new().watch(true));
    assert!(x.upstream_got.0 == pattern(N1) && x.upstream_got.1 == Ending::Fin);
    assert!(x.client_got.0 == pattern_back(N2) && x.client_got.1 == Ending::Fin);
    assert!(
        x.data.get(&x.a).is_some_and(|d| *d == pattern(N1)),
        "the client side's Data must be exactly the bytes forwarded ({} bytes seen)",
        x.data.get(&x.a).map_or(0, Vec::len)
    );
    assert!(
        x.data.get(&x.b).is_some_and(|d| *d == pattern_back(N2)),
        "the upstream side's Data must be exactly the bytes forwarded ({} bytes seen)",
        x.data.get(&x.b).map_or(0, Vec::len)
    );
    assert_eq!(x.log_a, ["Accepted", "Data", "Close(false, Graceful, 0)"]);
    assert_eq!(x.log_b, ["Connect", "Data", "Close(false, Graceful, 0)"]);
    assert_eq!((x.summary.a_to_b, x.summary.b_to_a), (N1 as u64, N2 as u64));
}

/// Without `watch`, a piped socket's `Data`, `End`, `Drain` and `Finish` never reach the
/// handler: only `Accepted`/`Connect` and `Close`.
#[test]
fn without_watch_the_handler_sees_no_data_end_drain_or_finish() {
    let x = exchange(PipeOptions::new());
    assert!(x.upstream_got.0 == pattern(N1) && x.upstream_got.1 == Ending::Fin);
    assert!(x.client_got.0 == pattern_back(N2) && x.client_got.1 == Ending::Fin);
    assert!(x.data.is_empty(), "Data reached the handler");
    assert_eq!(x.log_a, ["Accepted", "Close(false, Graceful, 0)"]);
    assert_eq!(x.log_b, ["Connect", "Close(false, Graceful, 0)"]);
}

// ---- the upstream resets ------------------------------------------------------------------------

/// Bytes both ways through an established pipe, each read by its peer before going on.
fn ping_pong(
    reactor: &mut Reactor,
    h: &mut Rec<impl FnMut(&mut Context, SocketId, &Event<'_>, &mut Pairs)>,
    client: &mut TcpStream,
    up: &mut TcpStream,
) {
    client.write_all(b"hello").unwrap();
    let mut c = up.try_clone().unwrap();
    let t = on_thread(move || read_n(&mut c, 5));
    assert_eq!(run_with(reactor, h, vec![t], |_| true)[0], b"hello");
    up.write_all(b"world").unwrap();
    let mut c = client.try_clone().unwrap();
    let t = on_thread(move || read_n(&mut c, 5));
    assert_eq!(run_with(reactor, h, vec![t], |_| true)[0], b"world");
}

/// The upstream resets while the client is idle: the pipe resets the client side, so the
/// client's read fails with ECONNRESET instead of taking the stream for complete.
#[test]
fn upstream_reset_resets_client_and_summary_says_peer_reset() {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let mut h = rec(proxy(upstream.local_addr().unwrap(), PipeOptions::new()));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    ping_pong(&mut reactor, &mut h, &mut client, &mut up);

    reset_on_close(&up);
    drop(up);
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Reset));

    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!((s.a_to_b, s.b_to_a), (5, 5));
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(
        s.b_close,
        CloseInfo {
            had_error: true,
            reason: CloseReason::PeerReset,
            unsent: 0
        }
    );
    assert_eq!(s.a_close, local_reset());
    assert_eq!(h.events(a), ["Accepted", "Close(false, LocalReset, 0)"]);
    assert_eq!(
        h.events(b),
        [
            "Connect",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_eq!(reactor.context().live_sockets(), 0);
}

/// With `reset_on_break(false)`, the upstream's reset gives the client side a lingering close
/// instead: the client reads every byte the upstream sent before its RST (passed on by the
/// pipe), then a FIN — no reset.
#[test]
fn reset_on_break_off_gives_the_other_side_a_lingering_close() {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let options = PipeOptions::new().reset_on_break(false);
    let mut h = rec(proxy(upstream.local_addr().unwrap(), options));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    ping_pong(&mut reactor, &mut h, &mut client, &mut up);

    // Bytes, then at once the RST: they reach the reactor ahead of it.
    let tail = pattern_back(10_000);
    up.write_all(&tail).unwrap();
    reset_on_close(&up);
    drop(up);
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&b));
    let (got, ending) = read_to_end(&mut client);
    assert_eq!(
        ending,
        Ending::Fin,
        "a lingering close ends with FIN, not RST"
    );
    assert!(
        got == tail,
        "the client must read every byte sent before the RST ({} of {})",
        got.len(),
        tail.len()
    );
    // The lingering close waits for the client's FIN.
    drop(client);
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);

    let s = h.summary();
    assert_eq!((s.a_to_b, s.b_to_a), (5, 5 + tail.len() as u64));
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(
        s.b_close,
        CloseInfo {
            had_error: true,
            reason: CloseReason::PeerReset,
            unsent: 0
        }
    );
    assert_eq!(s.a_close, graceful());
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- a refused connect --------------------------------------------------------------------------

/// Piped to a socket still connecting whose connect is then refused: the client side is
/// reset, and the summary says the upstream side closed on an error.
#[test]
fn refused_connect_resets_the_client() {
    // A port nobody listens on any more.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (mut reactor, addr, _upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let mut h = rec(proxy(closed, PipeOptions::new()));
    let mut client = peer(addr);
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Reset));

    let (a, b) = h.pairs[0];
    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!((s.a_to_b, s.b_to_a), (0, 0));
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(
        s.b_close,
        CloseInfo {
            had_error: true,
            reason: CloseReason::Error,
            unsent: 0
        }
    );
    assert_eq!(s.a_close, local_reset());
    assert_eq!(h.events(a), ["Accepted", "Close(false, LocalReset, 0)"]);
    assert_eq!(
        h.events(b),
        ["Error(ConnectionRefused)", "Close(true, Error, 0)"]
    );
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- backpressure -------------------------------------------------------------------------------

/// The upstream does not read while the client sends 64 MiB: the reactor's queue toward the
/// upstream never holds more than the high-water mark plus one read, the client side is left
/// unread (its peer's writes block), and once the upstream reads, every byte arrives in order.
#[test]
fn backpressure_bounds_the_destination_queue() {
    backpressure(Splice::Off);
}

/// The same when the pipe splices: the bytes wait in the kernel pipe and the sockets' buffers,
/// never in the reactor's queue; the client still blocks, and every byte arrives in order.
#[test]
fn backpressure_holds_when_splicing() {
    backpressure(Splice::On);
}

fn backpressure(splice: Splice) {
    /// The reactor reads (and forwards) at most this much at a time.
    const READ_BUFFER: usize = 64 << 10;
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 256 << 10;
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let options = PipeOptions::new().splice(splice);
    let mut h = rec(proxy(upstream.local_addr().unwrap(), options));
    let (client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    // The reactor's side of the client's connection, as /proc/net/tcp names it.
    let client_side = (client.peer_addr().unwrap(), client.local_addr().unwrap());

    let payload = Arc::new(pattern(TOTAL));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (payload, written) = (payload.clone(), written.clone());
        let mut client = client;
        on_thread(move || {
            for chunk in payload.chunks(CHUNK) {
                client.write_all(chunk).unwrap();
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            client.shutdown(Shutdown::Write).unwrap();
            read_to_end(&mut client)
        })
    };

    // Run until the client has stopped getting anywhere: its count unchanged over 25 turns of
    // 20 ms with the destination queue at the mark.
    let mut max_queued = 0;
    let mut stable = 0;
    let mut last = u64::MAX;
    let start = Instant::now();
    while stable < 25 {
        assert!(start.elapsed() < LIMIT, "the client never blocked");
        assert!(
            !writer.is_finished(),
            "the client sent everything: nothing held it back"
        );
        reactor
            .run_once(&mut h, Some(Duration::from_millis(20)))
            .unwrap();
        let queued = reactor.context().bytes_queued(b).unwrap();
        max_queued = max_queued.max(queued);
        let now = written.load(Ordering::Relaxed);
        // Copying, the queue fills to the mark; splicing, it stays empty.
        let held = match splice {
            Splice::Off => queued >= DEFAULT_HIGH_WATER_MARK,
            _ => queued == 0,
        };
        if now == last && held {
            stable += 1;
        } else {
            stable = 0;
        }
        last = now;
    }
    let blocked_at = written.load(Ordering::Relaxed);
    assert!(
        blocked_at < TOTAL as u64,
        "the client's writes must block before the end"
    );
    assert!(
        max_queued <= DEFAULT_HIGH_WATER_MARK + READ_BUFFER,
        "the queue toward the upstream reached {max_queued} bytes"
    );
    let (_, unread) = tcp_queues(client_side.0, client_side.1).expect("client side in the table");
    assert!(
        unread > 0,
        "the client side must be left unread (paused) while the destination is full"
    );
    assert!(h.summaries.is_empty());

    // Now the upstream reads everything.
    let reader = on_thread(move || {
        let got = read_to_end(&mut up);
        drop(up);
        got
    });
    let start = Instant::now();
    while !(reader.is_finished() && writer.is_finished() && h.summaries.len() == 1) {
        assert!(start.elapsed() < LIMIT, "timed out waiting for the reactor");
        reactor
            .run_once(&mut h, Some(Duration::from_millis(50)))
            .unwrap();
        max_queued = max_queued.max(reactor.context().bytes_queued(b).unwrap_or(0));
    }
    let (bytes, ending) = reader.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert_eq!(bytes.len(), TOTAL, "upstream got {} bytes", bytes.len());
    assert!(bytes == *payload, "upstream got the bytes out of order");
    assert_eq!(writer.join().unwrap(), (Vec::new(), Ending::Fin));
    assert!(
        max_queued <= DEFAULT_HIGH_WATER_MARK + READ_BUFFER,
        "the queue toward the upstream reached {max_queued} bytes"
    );

    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!((s.a_to_b, s.b_to_a), (TOTAL as u64, 0));
    // Copying moves nothing by splice; splicing moves all but what came before the upstream
    // was connected (copied into its queue) — the tail in the kernel pipe at the client's
    // FIN included, which arrived before the upstream's FIN.
    match splice {
        Splice::Off => assert_eq!(s.a_to_b_spliced, 0),
        _ => assert!(
            s.a_to_b_spliced > TOTAL as u64 / 2,
            "only {} bytes spliced",
            s.a_to_b_spliced
        ),
    }
    assert_eq!((s.a_close, s.b_close), (graceful(), graceful()));
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- a FIN that came before the pipe ------------------------------------------------------------

/// A half-open client sends a request and its FIN; the handler reads it all, and only at `End`
/// connects to the upstream, writes the request and pipes. The client's FIN, which came
/// before the pipe existed, is passed on after the request; the answer flows back through
/// the pipe to the half-open client, with the upstream's FIN.
#[test]
fn a_fin_that_arrived_before_pipe_is_passed_on() {
    let (mut reactor, addr, upstream) = rig(
        Reactor::new().unwrap(),
        ListenOptions::new().allow_half_open(true),
    );
    let up_addr = upstream.local_addr().unwrap();
    let mut request = Vec::new();
    let mut h = rec(
        move |cx: &mut Context, id, event: &Event<'_>, pairs: &mut Pairs| match event {
            Event::Data(bytes) => request.extend_from_slice(bytes),
            Event::End => {
                let up = cx.connect(up_addr, ConnectOptions::new()).unwrap();
                cx.write(up, &request).unwrap();
                cx.pipe(id, up, PipeOptions::new()).unwrap();
                pairs.push((id, up));
            }
            _ => {}
        },
    );
    let mut client = peer(addr);
    let sent = pattern(50_000);
    client.write_all(&sent).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| !h.pairs.is_empty());
    let (a, b) = h.pairs[0];
    let mut up = accept_upstream(&mut reactor, &mut h, &upstream);

    let answer = pattern_back(70_000);
    let u = {
        let answer = answer.clone();
        on_thread(move || {
            let got = read_to_end(&mut up);
            up.write_all(&answer).unwrap();
            drop(up);
            got
        })
    };
    let c = on_thread(move || read_to_end(&mut client));
    let mut got = run_with(&mut reactor, &mut h, vec![u, c], |h| h.summaries.len() == 1);
    let (client_got, client_end) = got.pop().unwrap();
    let (up_got, up_end) = got.pop().unwrap();
    assert_eq!(
        up_end,
        Ending::Fin,
        "the client's FIN must reach the upstream"
    );
    assert!(up_got == sent, "upstream got {} bytes", up_got.len());
    assert_eq!(client_end, Ending::Fin);
    assert!(
        client_got == answer,
        "client got {} bytes",
        client_got.len()
    );

    assert_eq!(
        h.events(a),
        ["Accepted", "Data", "End", "Close(false, Graceful, 0)"]
    );
    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    // The request went by the handler's own write: the pipe forwarded only the answer.
    assert_eq!((s.a_to_b, s.b_to_a), (0, answer.len() as u64));
    assert_eq!((s.a_close, s.b_close), (graceful(), graceful()));
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(reactor.context().live_sockets(), 0);
}

/// The same from outside the handler: the client's `End` was delivered, the upstream
/// connected, and only then does the program pipe them through `context_mut()`.
#[test]
fn a_fin_delivered_before_a_pipe_from_outside_is_passed_on() {
    let (mut reactor, addr, upstream) = rig(
        Reactor::new().unwrap(),
        ListenOptions::new().allow_half_open(true),
    );
    let up_addr = upstream.local_addr().unwrap();
    let mut h = rec(
        move |cx: &mut Context, id, event: &Event<'_>, pairs: &mut Pairs| {
            if let Event::Accepted(_) = event {
                let up = cx.connect(up_addr, ConnectOptions::new()).unwrap();
                pairs.push((id, up));
            }
        },
    );
    let mut client = peer(addr);
    let sent = pattern(20_000);
    client.write_all(&sent).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| {
        h.pairs
            .first()
            .is_some_and(|&(a, b)| h.events(a).contains(&"End") && h.events(b) == ["Connect"])
    });
    let (a, b) = h.pairs[0];
    assert!(h.data[&a] == sent);
    let mut up = accept_upstream(&mut reactor, &mut h, &upstream);
    {
        let cx = reactor.context_mut();
        cx.write(b, &sent).unwrap();
        cx.pipe(a, b, PipeOptions::new()).unwrap();
    }

    let u = on_thread(move || {
        let got = read_to_end(&mut up);
        up.write_all(b"answer").unwrap();
        drop(up);
        got
    });
    let c = on_thread(move || read_to_end(&mut client));
    let mut got = run_with(&mut reactor, &mut h, vec![u, c], |h| h.summaries.len() == 1);
    assert_eq!(got.pop().unwrap(), (b"answer".to_vec(), Ending::Fin));
    let (up_got, up_end) = got.pop().unwrap();
    assert_eq!(
        up_end,
        Ending::Fin,
        "the client's FIN must reach the upstream"
    );
    assert!(up_got == sent, "upstream got {} bytes", up_got.len());

    let s = h.summary();
    assert_eq!((s.a_to_b, s.b_to_a), (0, 6));
    assert_eq!((s.a_close, s.b_close), (graceful(), graceful()));
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- a destroy without loss ---------------------------------------------------------------------

/// The program destroys the client side with nothing queued: the client reads a FIN, and the
/// pipe gives the upstream side a lingering close — the upstream reads a FIN, never a reset —
/// which completes when the upstream closes too.
#[test]
fn destroy_of_one_side_without_loss_ends_the_other_with_fin() {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let mut h = rec(proxy(upstream.local_addr().unwrap(), PipeOptions::new()));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    ping_pong(&mut reactor, &mut h, &mut client, &mut up);
    assert_eq!(reactor.context().bytes_queued(a).unwrap(), 0);

    reactor.context_mut().destroy(a).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&a));
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Fin));
    assert_eq!(read_to_end(&mut up), (Vec::new(), Ending::Fin));
    assert!(
        h.summaries.is_empty(),
        "the upstream side is still lingering"
    );
    drop(up);
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);

    let s = h.summary();
    assert_eq!((s.a_to_b, s.b_to_a), (5, 5));
    assert_eq!(s.first_closed, Side::A);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(
        s.a_close,
        CloseInfo {
            had_error: false,
            reason: CloseReason::LocalDestroy,
            unsent: 0
        }
    );
    assert_eq!(s.b_close, graceful());
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- refused calls ------------------------------------------------------------------------------

/// `pipe` refuses a socket piped to itself, a socket already piped, a stale id and a destroyed
/// socket — and a refused call changes nothing: the existing pipe keeps forwarding, and the
/// sockets named in it stay unpiped (their `Data` and `End` still reach the handler, and a
/// socket without `allow_half_open` still ends at its peer's FIN).
#[test]
fn pipe_refuses_bad_arguments() {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let up_addr = upstream.local_addr().unwrap();
    // Only the first connection is piped; the others stay plain.
    let mut accepted = Vec::new();
    let mut h = rec(
        move |cx: &mut Context, id, event: &Event<'_>, pairs: &mut Pairs| {
            if let Event::Accepted(_) = event {
                accepted.push(id);
                if accepted.len() == 1 {
                    let up = cx.connect(up_addr, ConnectOptions::new()).unwrap();
                    cx.pipe(id, up, PipeOptions::new()).unwrap();
                    pairs.push((id, up));
                }
            }
        },
    );
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    let accepted_ids = |h: &Rec<_>| -> Vec<SocketId> {
        h.log
            .iter()
            .filter(|(_, e)| e == "Accepted")
            .map(|(id, _)| *id)
            .collect()
    };
    let mut plain = peer(addr);
    let mut doomed = peer(addr);
    let gone = peer(addr);
    run_until(&mut reactor, &mut h, |h, _| accepted_ids(h).len() == 4);
    let ids = accepted_ids(&h);
    let (c, d, g) = (ids[1], ids[2], ids[3]);
    // `gone` closes; after its `Close` and the end of that turn, its id is stale.
    drop(gone);
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&g));

    let cx = reactor.context_mut();
    let invalid = |r: finwait::Result<_>| matches!(r, Err(Error::InvalidOption(_)));
    assert!(invalid(cx.pipe(a, a, PipeOptions::new())), "a to itself");
    assert!(invalid(cx.pipe(c, c, PipeOptions::new())), "c to itself");
    assert!(
        invalid(cx.pipe(a, b, PipeOptions::new())),
        "the same pair again"
    );
    assert!(
        invalid(cx.pipe(b, a, PipeOptions::new())),
        "the same pair reversed"
    );
    assert!(
        invalid(cx.pipe(a, c, PipeOptions::new())),
        "a already piped"
    );
    assert!(
        invalid(cx.pipe(c, b, PipeOptions::new())),
        "b already piped"
    );
    assert!(matches!(
        cx.pipe(g, c, PipeOptions::new()),
        Err(Error::StaleId)
    ));
    assert!(matches!(
        cx.pipe(c, g, PipeOptions::new()),
        Err(Error::StaleId)
    ));
    cx.destroy(d).unwrap();
    assert!(matches!(
        cx.pipe(c, d, PipeOptions::new()),
        Err(Error::Destroyed)
    ));
    assert!(matches!(
        cx.pipe(d, c, PipeOptions::new()),
        Err(Error::Destroyed)
    ));
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&d));
    assert_eq!(read_to_end(&mut doomed), (Vec::new(), Ending::Fin));

    // The pipe still forwards both ways.
    ping_pong(&mut reactor, &mut h, &mut client, &mut up);
    // `c` is still a plain socket: its bytes, its `End` and its `Finish` reach the handler,
    // and it ends at its peer's FIN (no `allow_half_open` was forced on it).

    plain.write_all(b"plain").unwrap();
    plain.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&c));
    assert_eq!(h.data.get(&c).map(Vec::as_slice), Some(&b"plain"[..]));
    assert_eq!(
        h.events(c),
        [
            "Accepted",
            "Data",
            "End",
            "Finish",
            "Close(false, Graceful, 0)"
        ]
    );
    assert_eq!(read_to_end(&mut plain), (Vec::new(), Ending::Fin));

    client.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |_, r| {
        r.context().state(b).ok() == Some(State::HalfClosedLocal(Fin::Sent))
    });
    assert_eq!(read_to_end(&mut up), (Vec::new(), Ending::Fin));
    drop(up);
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Fin));
    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!((s.a_to_b, s.b_to_a), (5, 5));
    assert_eq!((s.a_close, s.b_close), (graceful(), graceful()));
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- the FIN wait -------------------------------------------------------------------------------

/// The client half-closes; the upstream neither reads nor sends its FIN. Nothing happens while
/// the clock stands still; past the FIN wait the upstream side is destroyed by the deadline
/// (a FIN: nothing was queued), and that close ends the client side, whose client reads a FIN.
#[test]
fn half_closed_pair_is_bounded_by_the_fin_wait() {
    const FIN_WAIT: Duration = Duration::from_secs(10);
    let clock = ManualClock::new();
    let options = ReactorOptions::new().fin_wait(Some(FIN_WAIT));
    let (mut reactor, addr, upstream) = rig(
        Reactor::with_clock(options, clock.clone()).unwrap(),
        ListenOptions::new(),
    );
    let mut h = rec(proxy(upstream.local_addr().unwrap(), PipeOptions::new()));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);

    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |_, r| {
        r.context().state(b).ok() == Some(State::HalfClosedLocal(Fin::Sent))
    });
    // The clock stands still: nothing gives up.
    turns(&mut reactor, &mut h);
    clock.advance(FIN_WAIT - Duration::from_secs(1));
    turns(&mut reactor, &mut h);
    assert!(
        h.closed.is_empty(),
        "closed before the FIN wait: {:?}",
        h.log
    );
    assert_eq!(reactor.context().state(a).unwrap(), State::HalfClosedRemote);

    clock.advance(Duration::from_secs(2));
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Fin));
    assert_eq!(read_to_end(&mut up), (b"request".to_vec(), Ending::Fin));

    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!((s.a_to_b, s.b_to_a), (7, 0));
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(
        s.b_close,
        CloseInfo {
            had_error: false,
            reason: CloseReason::Deadline(Deadline::FinWait),
            unsent: 0
        }
    );
    assert_eq!(s.a_close, graceful());
    assert_eq!(reactor.context().live_sockets(), 0);
}

/// The same FIN wait with bytes stuck toward the upstream (it never reads, its window is
/// closed): the deadline drops them, so the upstream gets an RST after the prefix it
/// received, and the pipe resets the client side — neither peer can take its truncated stream
/// for a complete one.
#[test]
fn fin_wait_with_bytes_stuck_toward_the_upstream_resets_both_peers() {
    const FIN_WAIT: Duration = Duration::from_secs(10);
    const STEP: usize = 16 << 10;
    let clock = ManualClock::new();
    let options = ReactorOptions::new().fin_wait(Some(FIN_WAIT));
    let (mut reactor, addr, upstream) = rig(
        Reactor::with_clock(options, clock.clone()).unwrap(),
        ListenOptions::new(),
    );
    // A small window toward the upstream, inherited by the connection it accepts.
    socket2::SockRef::from(&upstream)
        .set_recv_buffer_size(4096)
        .unwrap();
    let mut h = rec(proxy(upstream.local_addr().unwrap(), PipeOptions::new()));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);

    // Step by step until the kernel holds no more toward the upstream and bytes stay queued
    // in the reactor — under the high-water mark, so the client side keeps reading.
    let payload = pattern(64 << 20);
    let mut sent = 0;
    while reactor.context().bytes_queued(b).unwrap() == 0 {
        assert!(
            sent + STEP <= payload.len(),
            "the upstream's window never closed"
        );
        client.write_all(&payload[sent..sent + STEP]).unwrap();
        sent += STEP;
        run_until(&mut reactor, &mut h, |_, r| {
            r.context().bytes_read(a).unwrap() == sent as u64
        });
    }
    let queued = reactor.context().bytes_queued(b).unwrap();
    assert!(
        queued <= STEP,
        "{queued} bytes queued from a step of {STEP}"
    );
    client.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |_, r| {
        r.context().state(b).ok() == Some(State::HalfClosedLocal(Fin::Pending))
    });
    turns(&mut reactor, &mut h);
    assert!(
        h.closed.is_empty(),
        "closed before the FIN wait: {:?}",
        h.log
    );

    clock.advance(FIN_WAIT + Duration::from_secs(1));
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Reset));
    let (got, ending) = read_to_end(&mut up);
    assert_eq!(
        ending,
        Ending::Reset,
        "a truncated stream must end in ECONNRESET ({} of {sent} bytes read)",
        got.len()
    );
    assert!(payload[..sent].starts_with(&got), "bytes out of order");

    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!((s.a_to_b, s.b_to_a), (sent as u64, 0));
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(s.b_close.reason, CloseReason::Deadline(Deadline::FinWait));
    assert_eq!(s.b_close.unsent, queued, "the bytes the deadline dropped");
    assert!(got.len() + queued <= sent);
    assert_eq!(s.a_close.reason, CloseReason::LocalReset);
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- the program resets one side ----------------------------------------------------------------

/// `reset_and_destroy` of the upstream side by the program: its peer sees ECONNRESET, and the
/// pipe resets the client side too.
#[test]
fn program_reset_of_one_side_resets_the_other() {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let mut h = rec(proxy(upstream.local_addr().unwrap(), PipeOptions::new()));
    let (mut client, mut up, a, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    ping_pong(&mut reactor, &mut h, &mut client, &mut up);

    reactor.context_mut().reset_and_destroy(b).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    assert_eq!(read_to_end(&mut up), (Vec::new(), Ending::Reset));
    assert_eq!(read_to_end(&mut client), (Vec::new(), Ending::Reset));

    let s = h.summary();
    assert_eq!((s.a_to_b, s.b_to_a), (5, 5));
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!((s.a_close, s.b_close), (local_reset(), local_reset()));
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- a side that ended itself before the pipe ---------------------------------------------------

/// A payload the kernel can never take whole (twice the largest send buffer it autotunes to),
/// so a peer that does not read leaves bytes queued in the reactor.
fn unflushable_len() -> usize {
    let max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    (2 * max + (1 << 20)).max(8 << 20)
}

/// Without `allow_half_open`, a socket ends itself at its peer's FIN; piped after that, it
/// can no longer take the other side's bytes (`Context::pipe` docs): the pipe passes its FIN
/// on, then resets the side whose bytes it had to refuse — the upstream, after the FIN, gets
/// an RST, so it learns its answer went nowhere — and that reset resets the client side too.
#[test]
fn a_side_that_ended_itself_before_the_pipe_resets_the_sender_of_refused_bytes() {
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let up_addr = upstream.local_addr().unwrap();
    let reply = pattern_back(unflushable_len());
    let mut h = {
        let reply = reply.clone();
        rec(
            move |cx: &mut Context, id, event: &Event<'_>, pairs: &mut Pairs| {
                if let Event::Accepted(_) = event {
                    // A reply the client will not read: the client side stays alive, flushing,
                    // after it ends itself.
                    cx.write(id, &reply).unwrap();
                    let up = cx.connect(up_addr, ConnectOptions::new()).unwrap();
                    pairs.push((id, up));
                }
            },
        )
    };
    let mut client = peer(addr);
    client.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, r| {
        h.pairs.first().is_some_and(|&(a, b)| {
            h.events(b) == ["Connect"]
                && r.context().state(a).ok()
                    == Some(State::Closing {
                        fin: Fin::Pending,
                        peer_fin: true,
                    })
        })
    });
    let (a, b) = h.pairs[0];
    assert_eq!(h.events(a), ["Accepted", "End"]);
    let mut up = accept_upstream(&mut reactor, &mut h, &upstream);
    reactor
        .context_mut()
        .pipe(a, b, PipeOptions::new())
        .unwrap();
    // The client's FIN is passed on.
    assert_eq!(read_to_end(&mut up), (Vec::new(), Ending::Fin));
    up.write_all(b"answer").unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.summaries.len() == 1);
    // The RST is the socket's pending error; Linux reports one that reaches a socket in
    // CLOSE-WAIT (it read the FIN) as EPIPE, elsewhere as ECONNRESET (`tcp_reset`).
    let error = up.take_error().unwrap().map(|e| e.kind());
    assert!(
        matches!(
            error,
            Some(ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
        ),
        "the upstream's answer was refused: it must get an RST after the FIN (got {error:?})"
    );
    let (got, ending) = read_to_end(&mut client);
    assert_eq!(ending, Ending::Reset, "the client's reply was truncated");
    assert!(reply.starts_with(&got) && got.len() < reply.len());

    let s = h.summary();
    assert_eq!((s.a, s.b), (a, b));
    assert_eq!(
        (s.a_to_b, s.b_to_a),
        (0, 0),
        "refused bytes are not handed over"
    );
    assert_eq!(s.first_closed, Side::B);
    assert_eq!(s.first_closed, h.first_close(a, b));
    assert_eq!(s.b_close.reason, CloseReason::LocalReset);
    assert_eq!(s.b_close.unsent, 0);
    assert_eq!(s.a_close.reason, CloseReason::LocalReset);
    assert!(
        s.a_close.unsent > 0,
        "the reply's queued bytes were dropped"
    );
    assert!(got.len() + s.a_close.unsent <= reply.len());
    assert_eq!(reactor.context().live_sockets(), 0);
}

// ---- splicing: the bound on kernel pipes, and a graceful shutdown ---------------------------

/// With room for one kernel pipe and both directions streaming at once, the direction that
/// first fills a read buffer splices; the other finds no pipe left and copies — and both
/// arrive whole. (A direction gives its pipe back once it ended; here nothing ends before
/// both streams were read in full.)
#[test]
fn past_the_bound_on_kernel_pipes_a_direction_copies() {
    const SIZE: usize = 4 << 20;
    let reactor = Reactor::with_options(ReactorOptions::new().splice_pipes(1)).unwrap();
    let (mut reactor, addr, upstream) = rig(reactor, ListenOptions::new());
    let options = PipeOptions::new().splice(Splice::On);
    let mut h = rec(proxy(upstream.local_addr().unwrap(), options));
    let (client, up, _, _) = connect_through(&mut reactor, &mut h, addr, &upstream);
    // Each end writes its stream while it reads the other's in full; only then its FIN.
    let stream_both_ways = |mut s: TcpStream, out: Vec<u8>| {
        on_thread(move || {
            let mut writer = s.try_clone().unwrap();
            let w = thread::spawn(move || writer.write_all(&out).unwrap());
            let got = read_n(&mut s, SIZE);
            w.join().unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let rest = read_to_end(&mut s);
            (got, rest)
        })
    };
    let c = stream_both_ways(client, pattern(SIZE));
    let u = stream_both_ways(up, pattern_back(SIZE));
    let got = run_with(&mut reactor, &mut h, vec![c, u], |h| h.summaries.len() == 1);
    assert_eq!(got[0].0, pattern_back(SIZE), "client");
    assert_eq!(got[1].0, pattern(SIZE), "upstream");
    assert_eq!(got[0].1, (Vec::new(), Ending::Fin), "client's end");
    assert_eq!(got[1].1, (Vec::new(), Ending::Fin), "upstream's end");
    let s = h.summary();
    assert_eq!((s.a_to_b, s.b_to_a), (SIZE as u64, SIZE as u64));
    let spliced = [s.a_to_b_spliced, s.b_to_a_spliced];
    assert!(
        spliced.iter().filter(|&&n| n > 0).count() == 1 && spliced.contains(&0),
        "one direction splices, the other copies: {spliced:?}"
    );
    assert_eq!(reactor.context().live_sockets(), 0);
}

/// A graceful shutdown does not cut a pair short: the client's request went through, the
/// answer comes after the shutdown began, and it still reaches the client, then FINs both
/// ways. (The default `on_shutdown_request` would have ended each side at once.)
#[test]
fn shutdown_lets_an_answer_through_a_pair_finish() {
    for splice in [Splice::Off, Splice::On] {
        let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
        let options = PipeOptions::new().splice(splice);
        let mut h = rec(proxy(upstream.local_addr().unwrap(), options));
        let (mut client, mut up, _, _) = connect_through(&mut reactor, &mut h, addr, &upstream);
        client.write_all(b"request").unwrap();
        let u = on_thread(move || {
            let got = read_n(&mut up, 7);
            (up, got)
        });
        let start = Instant::now();
        while !u.is_finished() {
            assert!(start.elapsed() < LIMIT);
            turns(&mut reactor, &mut h);
        }
        let (mut up, got) = u.join().unwrap();
        assert_eq!(got, b"request");
        reactor.context_mut().shutdown(Duration::from_secs(30));
        turns(&mut reactor, &mut h);
        // The answer, after the shutdown began.
        up.write_all(&pattern_back(100_000)).unwrap();
        up.shutdown(Shutdown::Write).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let c = on_thread(move || read_to_end(&mut client));
        let u = on_thread(move || read_to_end(&mut up));
        let got = run_with(&mut reactor, &mut h, vec![c, u], |h| h.summaries.len() == 1);
        assert_eq!(
            got[0],
            (pattern_back(100_000), Ending::Fin),
            "{splice:?}: client"
        );
        assert_eq!(got[1], (Vec::new(), Ending::Fin), "{splice:?}: upstream");
        let s = h.summary();
        assert_eq!(
            (s.a_close, s.b_close),
            (graceful(), graceful()),
            "{splice:?}"
        );
        assert_eq!(reactor.context().live_sockets(), 0);
    }
}

/// The destination is destroyed while bytes wait for it in the kernel pipe (its own queue is
/// empty: spliced bytes never enter it). They are lost, so they count as unsent, its peer sees
/// a reset rather than a clean FIN, and the pipe resets the source too (SEMANTICS B2.1, B5) —
/// as the copy path does for bytes dropped from the queue.
#[test]
fn destroying_a_destination_with_bytes_in_the_kernel_pipe_resets_both_peers() {
    const TOTAL: usize = 64 << 20;
    let (mut reactor, addr, upstream) = rig(Reactor::new().unwrap(), ListenOptions::new());
    let options = PipeOptions::new().splice(Splice::On);
    let mut h = rec(proxy(upstream.local_addr().unwrap(), options));
    let (client, mut up, _, b) = connect_through(&mut reactor, &mut h, addr, &upstream);
    let payload = pattern(TOTAL);
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let written = written.clone();
        let mut client = client;
        on_thread(move || {
            for chunk in payload.chunks(256 << 10) {
                match client.write_all(chunk) {
                    Ok(()) => written.fetch_add(chunk.len() as u64, Ordering::Relaxed),
                    // The reset, reported to the write that was blocked (and only once: a
                    // read after it sees a closed socket).
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                        ) =>
                    {
                        return Ending::Reset;
                    }
                    Err(e) => panic!("client write: {e}"),
                };
            }
            read_to_end(&mut client).1
        })
    };
    // The upstream reads nothing: wait until the client has written and stopped getting
    // anywhere.
    let (mut stable, mut last) = (0, u64::MAX);
    let start = Instant::now();
    while stable < 25 {
        assert!(start.elapsed() < LIMIT, "the client never blocked");
        reactor
            .run_once(&mut h, Some(Duration::from_millis(20)))
            .unwrap();
        let now = written.load(Ordering::Relaxed);
        stable = if now == last && now > 0 {
            stable + 1
        } else {
            0
        };
        last = now;
    }
    assert_eq!(
        reactor.context().bytes_queued(b).unwrap(),
        0,
        "spliced bytes were queued"
    );
    reactor.context_mut().destroy(b).unwrap();
    let u = on_thread(move || read_to_end(&mut up));
    let got = run_with(&mut reactor, &mut h, vec![u], |h| h.summaries.len() == 1);
    assert_eq!(
        got[0].1,
        Ending::Reset,
        "the upstream saw a clean end of a cut stream"
    );
    let client_end = writer.join().unwrap();
    assert_eq!(
        client_end,
        Ending::Reset,
        "the client saw a clean end of a cut stream"
    );
    let s = h.summary();
    assert!(s.a_to_b_spliced > 0, "the pair never spliced");
    assert!(
        s.b_close.unsent > 0,
        "bytes lost in the kernel pipe not counted: {s:?}"
    );
    assert_eq!(s.a_close.reason, CloseReason::LocalReset);
    assert_eq!(reactor.context().live_sockets(), 0);
}
