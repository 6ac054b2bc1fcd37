//! The measured Node.js sequences of SEMANTICS.md A2 (1–7), pinned against finwait over
//! loopback: exact event order on our side, and what the std::net peer saw (bytes, FIN or RST).
//! Where finwait deliberately differs from Node (A2.5, A2.6) the test pins finwait's promise.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use common::*;
use finwait::{ConnectOptions, Context, Error, Event, ListenOptions, SocketId, State};

/// A2.1: the client `end('bye')`s; the server sees data and `End`, ends by itself
/// (allow_half_open off), finishes and closes; then the client sees `End` and closes.
#[test]
fn client_end_leads_both_sides_to_graceful_close() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let client = reactor.connect(addr, ConnectOptions::new()).unwrap();
    reactor.context_mut().end_with(client, b"bye").unwrap();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets().len() == 2 && h.all_closed()
    });
    let server_id = h.sockets().into_iter().find(|s| *s != client).unwrap();
    assert_eq!(
        h.events(client),
        ["Connect", "Finish", "End", "Close(false, Graceful, 0)"]
    );
    assert_eq!(
        h.events(server_id),
        [
            "Accepted",
            "Data",
            "End",
            "Finish",
            "Close(false, Graceful, 0)"
        ]
    );
    assert_eq!(h.data[&server_id], b"bye");
    // The client's End comes after the server's Finish (the server's FIN is what it sees).
    let pos = |id, e: &str| h.log.iter().position(|(s, x)| *s == id && x == e).unwrap();
    assert!(pos(server_id, "Finish") < pos(client, "End"));
    assert_no_live_socket(&reactor);
}

/// A2.2: the peer's FIN arrives while 32 MiB are still queued: `End` at once, the automatic
/// end waits for the queue, `Finish` after the last byte, then `Close`; the peer gets every
/// byte, then FIN.
#[test]
fn peer_fin_with_32_mib_queued_flushes_everything_before_finish() {
    const LEN: usize = 32 << 20;
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        s.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut s)
    });
    let payload = pattern(LEN);
    let mut queued_at_end = None;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| match e {
        Event::Accepted(_) => {
            let _ = cx.write(id, &payload);
        }
        Event::End => queued_at_end = Some(cx.bytes_queued(id).unwrap()),
        _ => {}
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let id = h.sockets()[0];
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "End",
            "Drain",
            "Finish",
            "Close(false, Graceful, 0)"
        ]
    );
    drop(h);
    assert!(
        queued_at_end.unwrap() > 0,
        "End must not wait for the flush"
    );
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert_eq!(got.len(), LEN);
    assert!(got == payload);
    assert_no_live_socket(&reactor);
}

/// A2.3: `destroy()` — no `End`, no `Finish`, `Close(false)` reporting the unsent bytes;
/// `destroy(err)` — `Error` then `Close(true)`.
#[test]
fn destroy_reports_unsent_bytes_and_never_finish() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let s1 = peer(addr);
    let s2 = peer(addr);
    let payload = pattern(8 << 20);
    let mut first = true;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            let _ = cx.write(id, &payload);
            if first {
                cx.destroy(id).unwrap();
            } else {
                cx.destroy_with(id, Error::InvalidOption("test")).unwrap();
            }
            first = false;
        }
    });
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 2);
    let ids = h.sockets();
    let unsent = h.closed[&ids[0]].unsent;
    assert!(unsent > 0 && unsent < 8 << 20, "unsent {unsent}");
    assert_eq!(
        h.events(ids[0]),
        [
            "Accepted",
            format!("Close(false, LocalDestroy, {unsent})").as_str()
        ]
    );
    let unsent2 = h.closed[&ids[1]].unsent;
    assert_eq!(
        h.events(ids[1]),
        [
            "Accepted",
            "Error(invalid option: test)",
            format!("Close(true, LocalDestroy, {unsent2})").as_str()
        ]
    );
    // The queued rest never arrives, and the peer is told so: a close that drops queued
    // bytes sends RST, never FIN (B2.1; Node sends FIN after the truncated stream). The RST
    // also drops what the kernel still held, so the peer gets at most what the kernel took.
    for (mut s, id) in [(s1, ids[0]), (s2, ids[1])] {
        let (got, ending) = read_to_end(&mut s);
        assert_eq!(ending, Ending::Reset, "truncated stream must end in RST");
        assert!(got.len() + h.closed[&id].unsent <= 8 << 20);
        assert_eq!(got, pattern(got.len()), "bytes out of order");
    }
    assert_no_live_socket(&reactor);
}

/// A2.4: a peer RST while we write: `Error` (reset or broken pipe), `Close(true, PeerReset)`,
/// and the bytes still queued are reported.
#[test]
fn peer_reset_while_writing_is_error_then_close() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let s = peer(addr);
    let payload = pattern(1 << 20);
    let mut reset_sent = false;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if matches!(e, Event::Accepted(_) | Event::Drain) {
            while cx.write(id, &payload).unwrap_or(false) {}
        }
    });
    let mut s = Some(s);
    run_until(&mut reactor, &mut h, |h, r| {
        if !reset_sent
            && r.context()
                .socket_ids()
                .first()
                .is_some_and(|id| r.context().bytes_queued(*id).unwrap() > 0)
        {
            let s = s.take().unwrap();
            reset_on_close(&s);
            drop(s);
            reset_sent = true;
        }
        !h.closed.is_empty()
    });
    let id = h.sockets()[0];
    let events = h.events(id);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0], "Accepted");
    assert!(
        events[1] == "Error(ConnectionReset)" || events[1] == "Error(BrokenPipe)",
        "{events:?}"
    );
    let info = h.closed[&id];
    assert!(info.had_error);
    assert_eq!(info.reason, finwait::CloseReason::PeerReset);
    assert!(info.unsent > 0);
    assert_no_live_socket(&reactor);
}

/// A2.5, finwait's way: `write()` after `end()` fails alone with `WriteAfterEnd`; the 32 MiB
/// queued before `end()` still arrive whole, then FIN (Node destroys and truncates).
#[test]
fn write_after_end_keeps_queued_data() {
    const LEN: usize = 32 << 20;
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        let r = read_to_end(&mut s);
        drop(s);
        r
    });
    let payload = pattern(LEN);
    let mut late = None;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            let _ = cx.write(id, &payload);
            cx.end(id).unwrap();
            late = Some(cx.write(id, b"too late"));
            assert!(matches!(cx.state(id), Ok(State::HalfClosedLocal(_))));
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let id = h.sockets()[0];
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Drain",
            "Finish",
            "End",
            "Close(false, Graceful, 0)"
        ]
    );
    drop(h);
    assert!(matches!(late, Some(Err(Error::WriteAfterEnd))));
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(got == payload, "got {} bytes", got.len());
    assert_no_live_socket(&reactor);
}

/// A2.6, finwait's way: after the peer's FIN and our automatic end, a write returns
/// `WriteAfterEnd` (Node: EPIPE) and the close stays graceful; a write made inside the `End`
/// handler still goes out before our FIN.
#[test]
fn write_after_peer_fin_and_auto_end_is_write_after_end() {
    // Written inside `End` until `write` says the queue is full, so the FIN is still pending
    // when the late write comes — however much the kernel buffers (loopback buffers autotune
    // to tens of MiB on some hosts).
    const CHUNK: usize = 1 << 20;
    const MAX_CHUNKS: usize = 256;
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        s.write_all(b"hi").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // Read only once the late write was tried: until then the server's queue stays full
        // and its FIN pending.
        let _ = wait_for_go.recv_timeout(std::time::Duration::from_secs(10));
        read_to_end(&mut s)
    });
    let base = pattern(CHUNK);
    let chunk = |i: usize| -> Vec<u8> { base.iter().map(|b| b ^ i as u8).collect() };
    let written = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let in_handler = written.clone();
    let mut h = recorder(move |cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::End = e {
            for i in 0..MAX_CHUNKS {
                in_handler.set(i + 1);
                if !cx.write(id, &chunk(i)).unwrap() {
                    break;
                }
            }
        }
    });
    let mut late = None;
    run_until(&mut reactor, &mut h, |h, r| {
        if late.is_none()
            && let Some(id) = r.context().socket_ids().first()
            && let Ok(State::Closing { .. }) = r.context().state(*id)
        {
            let id = *id;
            // Outside any handler, through the reactor itself.
            late = Some(r.context_mut().write(id, b"after"));
            let _ = go.send(());
        }
        !h.closed.is_empty()
    });
    let id = h.sockets()[0];
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Data",
            "End",
            "Drain",
            "Finish",
            "Close(false, Graceful, 0)"
        ]
    );
    assert!(matches!(late, Some(Err(Error::WriteAfterEnd))), "{late:?}");
    let chunks = written.get();
    assert!(
        chunks < MAX_CHUNKS,
        "the kernel took {MAX_CHUNKS} MiB without filling up"
    );
    let expected: Vec<u8> = (0..chunks).flat_map(chunk).collect();
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(
        got == expected,
        "got {} of {} bytes",
        got.len(),
        expected.len()
    );
    assert_no_live_socket(&reactor);
}

/// A2.7: a refused connect is `Error(ConnectionRefused)` then `Close(true)`, never `Connect`,
/// and the refusal is an event, not `connect`'s result.
#[test]
fn refused_connect_is_error_then_close() {
    // A port that was just bound and released is closed on loopback.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut reactor = finwait::Reactor::new().unwrap();
    let id = reactor.connect(addr, ConnectOptions::new()).unwrap();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    assert_eq!(
        h.events(id),
        ["Error(ConnectionRefused)", "Close(true, Error, 0)"]
    );
    assert_no_live_socket(&reactor);
}

/// A2.1 seen from a plain std client: it receives the server's FIN (not RST) after its own.
#[test]
fn std_client_half_close_gets_fin_back() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        s.write_all(b"bye").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).unwrap();
        (n, rest)
    });
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    assert_eq!(peer_thread.join().unwrap(), (0, Vec::new()));
    assert_no_live_socket(&reactor);
}
