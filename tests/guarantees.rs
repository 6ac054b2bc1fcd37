//! finwait's guarantees (SEMANTICS.md B2 items 1–4 and 6–10) over loopback, each asserting
//! the exact event sequence and what the std::net peer saw.

mod common;

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use common::*;
use finwait::{CloseReason, ConnectOptions, Context, Error, Event, ListenOptions, SocketId, State};

/// B2.1: `end()` after 32 MiB queued delivers all 32 MiB, then FIN.
#[test]
fn end_after_32_mib_queued_delivers_everything_then_fin() {
    const LEN: usize = 32 << 20;
    let (mut reactor, _l, addr) = server(ListenOptions::new().allow_half_open(true));
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        let got = read_to_end(&mut s);
        s.shutdown(Shutdown::Write).unwrap();
        got
    });
    let payload = pattern(LEN);
    let mut queued_at_end = 0;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, &payload).unwrap();
            queued_at_end = cx.bytes_queued(id).unwrap();
            cx.end(id).unwrap();
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
    assert!(queued_at_end > 0);
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(got == payload, "got {} of {LEN} bytes", got.len());
    assert_no_live_socket(&reactor);
}

/// B2.4: `reset_and_destroy()` right after `end()` sends RST (the peer's recv fails with
/// ECONNRESET), drops the queue and reports it, and closes.
#[test]
fn reset_after_end_sends_rst_and_counts_unsent() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut s = peer(addr);
    let payload = pattern(16 << 20);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, &payload).unwrap();
            cx.end(id).unwrap();
            cx.reset_and_destroy(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let id = h.sockets()[0];
    let info = h.closed[&id];
    assert_eq!(info.reason, CloseReason::LocalReset);
    assert!(!info.had_error);
    assert!(info.unsent > 0);
    assert_eq!(h.events(id).len(), 2, "{:?}", h.events(id));
    let (got, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Reset);
    assert!(got.len() + info.unsent <= 16 << 20);
    assert_no_live_socket(&reactor);
}

/// B2.4 in every state: an RST goes out after `end()` with an empty queue (FIN already sent),
/// after the peer's FIN, and while lingering.
#[test]
fn reset_works_in_every_state() {
    for case in 0..3 {
        let (mut reactor, _l, addr) = server(ListenOptions::new().allow_half_open(true));
        let mut s = peer(addr);
        if case == 1 {
            s.shutdown(Shutdown::Write).unwrap();
        }
        let mut h = recorder(
            |cx: &mut Context, id: SocketId, e: &Event<'_>| match (case, e) {
                (0, Event::Finish) => cx.reset_and_destroy(id).unwrap(),
                (0, Event::Accepted(_)) => cx.end(id).unwrap(),
                (1, Event::End) => cx.reset_and_destroy(id).unwrap(),
                (2, Event::Accepted(_)) => cx.destroy_soon(id).unwrap(),
                (2, Event::Finish) => cx.reset_and_destroy(id).unwrap(),
                _ => {}
            },
        );
        run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
        let id = h.sockets()[0];
        assert_eq!(h.closed[&id].reason, CloseReason::LocalReset, "case {case}");
        let (_, ending) = read_to_end(&mut s);
        if case == 1 {
            assert_eq!(ending, Ending::Reset, "case {case}");
        } else {
            // Our FIN left before the RST (cases 0, 2), so the peer's read ends at the FIN;
            // the RST that follows still reaches it: Linux records it as the socket's
            // pending error (EPIPE in CLOSE_WAIT, `tcp_reset`).
            assert_eq!(ending, Ending::Fin, "case {case}");
            let started = std::time::Instant::now();
            let error = loop {
                if let Some(e) = s.take_error().unwrap() {
                    break e;
                }
                assert!(
                    started.elapsed() < LIMIT,
                    "case {case}: the RST never arrived"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            };
            assert!(
                matches!(
                    error.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "case {case}: {error}"
            );
        }
        assert_no_live_socket(&reactor);
    }
}

/// B2.6: `destroy_soon()` to a peer that sent 1 MiB the server never read: the message
/// arrives whole with FIN, never RST, and the server closes once the peer's FIN comes.
#[test]
fn destroy_soon_with_unread_input_delivers_message_and_fin() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        s.write_all(&pattern(1 << 20)).unwrap();
        // Give the server time to write, FIN and start discarding while input is unread.
        thread::sleep(Duration::from_millis(100));
        s.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut s)
    });
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, b"Goodbye\n").unwrap();
            cx.destroy_soon(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let id = h.sockets()[0];
    assert_eq!(
        h.events(id),
        ["Accepted", "Finish", "Close(false, Graceful, 0)"]
    );
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!((got.as_slice(), ending), (&b"Goodbye\n"[..], Ending::Fin));
    assert_no_live_socket(&reactor);
}

/// B2.7: data, FIN and RST arriving together (before the reactor reads anything) are
/// reported as a reset after the data — not as a clean end.
#[test]
fn data_fin_and_rst_together_are_reported_as_reset() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    {
        let mut s = peer(addr);
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        reset_on_close(&s);
    }
    // Let the RST land before the reactor first runs.
    thread::sleep(Duration::from_millis(50));
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let id = h.sockets()[0];
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Data",
            "Error(ConnectionReset)",
            "Close(true, PeerReset, 0)"
        ]
    );
    assert_eq!(h.data[&id], b"hello");
    assert_no_live_socket(&reactor);
}

/// B2.7 without a FIN: data then RST is data, then a reset.
#[test]
fn data_then_rst_is_reported_as_reset() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    {
        let mut s = peer(addr);
        s.write_all(b"hello").unwrap();
        reset_on_close(&s);
    }
    thread::sleep(Duration::from_millis(50));
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let id = h.sockets()[0];
    let events = h.events(id);
    assert_eq!(
        events.last(),
        Some(&"Close(true, PeerReset, 0)"),
        "{events:?}"
    );
    assert!(events.contains(&"Error(ConnectionReset)"));
    assert_no_live_socket(&reactor);
}

/// B2.8: the id of a destroyed socket returns an error once its slot was reused, and the new
/// socket in that slot is untouched.
#[test]
fn stale_id_after_slot_reuse_returns_error() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut first = peer(addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, b"hi").unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    let old = h.sockets()[0];
    reactor.context_mut().destroy(old).unwrap();
    assert!(matches!(
        reactor.context_mut().destroy(old),
        Err(Error::Destroyed)
    ));
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&old));
    assert!(matches!(
        reactor.context_mut().write(old, b"x"),
        Err(Error::StaleId)
    ));
    let _second = peer(addr);
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 2);
    let new = h.sockets()[1];
    assert_eq!(new.index(), old.index(), "the slab must reuse the slot");
    assert_ne!(new, old);
    for result in [
        reactor.context_mut().write(old, b"x").map(|_| ()),
        reactor.context_mut().end(old),
        reactor.context_mut().destroy(old),
        reactor.context_mut().reset_and_destroy(old),
        reactor.context_mut().pause(old),
        reactor.context().bytes_read(old).map(|_| ()),
    ] {
        assert!(matches!(result, Err(Error::StaleId)), "{result:?}");
    }
    assert_eq!(reactor.context().state(new).unwrap(), State::Open);
    reactor.context_mut().destroy(new).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    let (got, _) = read_to_end(&mut first);
    assert_eq!(got, b"hi");
    assert_no_live_socket(&reactor);
}

/// B2.9: an event caused by a call made in a handler is delivered after that handler
/// returns, never inside the call.
#[test]
fn events_are_never_delivered_inside_the_call() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut s = peer(addr);
    s.write_all(b"x").unwrap();
    let trace = Rc::new(RefCell::new(Vec::new()));
    let t = trace.clone();
    let mut h = recorder(move |cx: &mut Context, id: SocketId, e: &Event<'_>| {
        t.borrow_mut().push(common::describe(e));
        if let Event::Data(_) = e {
            cx.destroy_with(id, Error::InvalidOption("boom")).unwrap();
            t.borrow_mut().push("destroy returned".into());
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    assert_eq!(
        *trace.borrow(),
        [
            "Accepted",
            "Data",
            "destroy returned",
            "Error(invalid option: boom)",
            "Close(true, LocalDestroy, 0)"
        ]
    );
    assert_no_live_socket(&reactor);
}

/// B2.10: `write` returns false at the high-water mark, nothing written past it is lost, and
/// `Drain` comes exactly once when the queue empties.
#[test]
fn write_returns_false_at_high_water_mark_and_drains_once() {
    let (mut reactor, _l, addr) = server(ListenOptions::new().high_water_mark(1024));
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        // Read only after the three writes: the first must find the kernel unable to take
        // 4 MiB at once (a peer already draining could let it).
        let _ = wait_for_go.recv_timeout(Duration::from_secs(10));
        read_to_end(&mut s)
    });
    let chunk = pattern(4 << 20);
    let mut results = Vec::new();
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| match e {
        Event::Accepted(_) => {
            for _ in 0..3 {
                results.push(cx.write(id, &chunk).unwrap());
            }
            let _ = go.send(());
        }
        Event::Drain => cx.end(id).unwrap(),
        _ => {}
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
    assert_eq!(results, [false, false, false]);
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert_eq!(got.len(), 3 * chunk.len());
    assert!(got.chunks(chunk.len()).all(|c| c == chunk));
    assert_no_live_socket(&reactor);
}

/// B2.10: `pause()` stops reading (the peer's writes end up blocked by a full window) and
/// `resume()` delivers everything that waited.
#[test]
fn pause_stops_reading_and_resume_delivers_everything() {
    const LEN: usize = 32 << 20;
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let mut s = peer(addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.pause(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    let id = h.sockets()[0];
    // With the server paused, the peer can only fill the kernel buffers, then blocks.
    s.set_nonblocking(true).unwrap();
    let payload = pattern(LEN);
    let mut sent = 0;
    for _ in 0..1000 {
        reactor
            .run_once(&mut h, Some(Duration::from_millis(1)))
            .unwrap();
        match s.write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if h.data.is_empty() && sent > 0 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < LEN, "a paused socket must exert backpressure");
    assert!(!h.data.contains_key(&id), "no Data while paused");
    reactor.context_mut().resume(id).unwrap();
    s.set_nonblocking(false).unwrap();
    let rest = payload[sent..].to_vec();
    let writer = thread::spawn(move || {
        s.write_all(&rest).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut tail = Vec::new();
        s.read_to_end(&mut tail).unwrap();
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    writer.join().unwrap();
    assert!(h.data[&id] == payload);
    assert_eq!(
        h.events(id),
        [
            "Accepted",
            "Data",
            "End",
            "Finish",
            "Close(false, Graceful, 0)"
        ]
    );
    assert_no_live_socket(&reactor);
}

/// B2.10: an echo that pauses on `false` and resumes on `Drain` keeps its queue bounded while
/// the peer writes 16 MiB before reading any of it.
#[test]
fn echo_with_backpressure_keeps_queue_bounded() {
    const LEN: usize = 16 << 20;
    const HWM: usize = 64 * 1024;
    let (mut reactor, _l, addr) = server(ListenOptions::new().high_water_mark(HWM));
    let peer_thread = thread::spawn(move || {
        let s = peer(addr);
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&pattern(LEN)).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        thread::sleep(Duration::from_millis(300));
        let mut r = s;
        let got = read_to_end(&mut r);
        writer.join().unwrap();
        got
    });
    let mut max_queued = 0;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| match e {
        Event::Data(bytes) => {
            if !cx.write(id, bytes).unwrap() {
                cx.pause(id).unwrap();
            }
            max_queued = max_queued.max(cx.bytes_queued(id).unwrap());
        }
        Event::Drain => cx.resume(id).unwrap(),
        _ => {}
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    drop(h);
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(got == pattern(LEN));
    // One read buffer's worth past the mark at most.
    assert!(max_queued <= HWM + 64 * 1024, "max queued {max_queued}");
    assert_no_live_socket(&reactor);
}

/// B2.2: exactly one `Close` per socket even when the program calls every closing operation
/// in the same handler, and calls after it return `Destroyed`.
#[test]
fn exactly_one_close_when_every_close_is_called() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let _s = peer(addr);
    let mut after = Vec::new();
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.destroy(id).unwrap();
            after.push(cx.end(id).is_err());
            after.push(cx.destroy_soon(id).is_err());
            after.push(cx.reset_and_destroy(id).is_err());
            after.push(cx.destroy(id).is_err());
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    // Run a few more turns: nothing else may arrive (the recorder panics on it).
    for _ in 0..5 {
        reactor
            .run_once(&mut h, Some(Duration::from_millis(10)))
            .unwrap();
    }
    let id = h.sockets()[0];
    assert_eq!(h.events(id), ["Accepted", "Close(false, LocalDestroy, 0)"]);
    drop(h);
    assert_eq!(after, [true; 4]);
    assert_no_live_socket(&reactor);
}

/// A client that queues writes and `end()` while still connecting: they go out in order once
/// connected, then the FIN.
#[test]
fn writes_and_end_while_connecting_are_applied_after_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer_thread = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_to_end(&mut s)
    });
    let mut reactor = finwait::Reactor::new().unwrap();
    let id = reactor
        .connect(addr, ConnectOptions::new().allow_half_open(true))
        .unwrap();
    assert!(reactor.context_mut().write(id, b"queued ").unwrap());
    reactor.context_mut().end_with(id, b"early").unwrap();
    assert!(matches!(
        reactor.context_mut().write(id, b"x"),
        Err(Error::WriteAfterEnd)
    ));
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    assert_eq!(
        h.events(id),
        ["Connect", "Finish", "End", "Close(false, Graceful, 0)"]
    );
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(
        (got.as_slice(), ending),
        (&b"queued early"[..], Ending::Fin)
    );
    assert_no_live_socket(&reactor);
}

/// Fairness: one peer streaming 64 MiB cannot starve another. With a 1 MiB read budget the
/// second peer's message is delivered within a few turns, while the first has been read for
/// only a few MiB — not after the stream ends.
#[test]
fn busy_peer_does_not_starve_others_beyond_the_read_budget() {
    const LEN: usize = 64 << 20;
    const BUDGET: usize = 1 << 20;
    let mut reactor =
        finwait::Reactor::with_options(finwait::ReactorOptions::new().read_budget(BUDGET)).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let blaster = thread::spawn(move || {
        let mut s = peer(addr);
        let chunk = pattern(1 << 20);
        for _ in 0..LEN / chunk.len() {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        read_to_end(&mut s)
    });
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| {
        h.data.values().any(|d| d.len() > 1 << 20)
    });
    let big = h.sockets()[0];
    let mut small = peer(addr);
    small.write_all(b"ping").unwrap();
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets().len() == 2 && h.data.contains_key(&h.sockets()[1])
    });
    // Between the check that saw 1 MiB and the small peer's data: the turn that crossed
    // 1 MiB, the turn that accepts the small peer, the turn that reads it — a budget each,
    // and one turn of slack.
    let read_when_small_arrived = h.data[&big].len();
    assert!(
        read_when_small_arrived <= (1 << 20) + 4 * BUDGET,
        "the small peer waited until {read_when_small_arrived} bytes of the big one were read"
    );
    small.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 2);
    let (_, ending) = blaster.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert_eq!(h.data[&big].len(), LEN);
    assert_no_live_socket(&reactor);
}

/// Read-only facts: byte counts, queued bytes, addresses, ready state through the life of a
/// socket; options calls work on a live socket and fail cleanly on a stale one.
#[test]
fn facts_follow_the_socket_through_its_life() {
    use finwait::ReadyState;
    let (mut reactor, _l, addr) = server(ListenOptions::new().allow_half_open(true));
    let mut s = peer(addr);
    s.write_all(b"12345").unwrap();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets()
            .first()
            .is_some_and(|id| h.data.get(id).is_some_and(|d| d.len() == 5))
    });
    let id = h.sockets()[0];
    assert_eq!(reactor.context().bytes_read(id).unwrap(), 5);
    assert_eq!(reactor.context().ready_state(id).unwrap(), ReadyState::Open);
    assert_eq!(reactor.context().local_addr(id).unwrap(), addr);
    assert_eq!(
        reactor.context().peer_addr(id).unwrap(),
        s.local_addr().unwrap()
    );
    reactor.context_mut().set_no_delay(id, false).unwrap();
    reactor
        .context_mut()
        .set_keep_alive(id, Some(Duration::from_secs(60)))
        .unwrap();
    reactor.context_mut().set_keep_alive(id, None).unwrap();
    assert!(reactor.context_mut().write(id, b"abc").unwrap());
    assert_eq!(reactor.context().bytes_written(id).unwrap(), 3);
    assert_eq!(reactor.context().bytes_queued(id).unwrap(), 0);
    s.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.events(id).contains(&"End"));
    assert_eq!(
        reactor.context().ready_state(id).unwrap(),
        ReadyState::WriteOnly
    );
    assert_eq!(
        reactor.context().state(id).unwrap(),
        State::HalfClosedRemote
    );
    reactor.context_mut().end(id).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert!(matches!(
        reactor.context().ready_state(id),
        Err(Error::StaleId)
    ));
    assert!(matches!(
        reactor.context_mut().set_no_delay(id, true),
        Err(Error::StaleId)
    ));
    let (got, ending) = read_to_end(&mut s);
    assert_eq!((got.as_slice(), ending), (&b"abc"[..], Ending::Fin));
    assert_no_live_socket(&reactor);
}

/// `write_owned` keeps order and loses nothing on both of its paths: the first buffer is
/// partly sent (its tail copied into the queue), the next ones join the queue as they are.
#[test]
fn write_owned_queues_buffers_in_order() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let peer_thread = thread::spawn(move || {
        let mut s = peer(addr);
        read_to_end(&mut s)
    });
    let parts: Vec<Vec<u8>> = (0..4u8)
        .map(|i| pattern(4 << 20).into_iter().map(|b| b ^ i).collect())
        .collect();
    let to_send = parts.clone();
    let mut h = recorder(move |cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            for part in &to_send {
                cx.write_owned(id, part.clone()).unwrap();
            }
            cx.end(id).unwrap();
            assert!(matches!(
                cx.write_owned(id, b"late".to_vec()),
                Err(Error::WriteAfterEnd)
            ));
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let (got, ending) = peer_thread.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(got == parts.concat(), "got {} bytes", got.len());
    assert_no_live_socket(&reactor);
}

/// `ConnectOptions::local_addr` (Node's `localAddress`): the connection comes from that
/// address — the accepting side sees it as the peer — and bytes and FIN flow as usual.
#[test]
fn connect_from_a_local_address_uses_it() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let source: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let client = reactor
        .connect(
            addr,
            ConnectOptions::new().local_addr(Some(std::net::SocketAddr::new(source, 0))),
        )
        .unwrap();
    let seen = Rc::new(RefCell::new(None));
    let seen_in = seen.clone();
    let mut h = recorder(
        move |cx: &mut Context, id: SocketId, e: &Event<'_>| match e {
            Event::Accepted(_) => *seen_in.borrow_mut() = Some(cx.peer_addr(id).unwrap()),
            Event::Connect => cx.end_with(id, b"from .2").unwrap(),
            _ => {}
        },
    );
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 2);
    let peer = seen.borrow().expect("accepted");
    assert_eq!(peer.ip(), source);
    assert_ne!(peer.port(), 0);
    let server_side = *h.sockets().iter().find(|&&id| id != client).unwrap();
    assert_eq!(h.data[&server_side], b"from .2");
    assert_eq!(
        h.events(client),
        ["Connect", "Finish", "End", "Close(false, Graceful, 0)"]
    );
    assert_no_live_socket(&reactor);
}

/// A local address that cannot be bound is reported like a failed connect — `Error` then
/// `Close`, never `connect`'s result — and one of the wrong family is refused at once.
#[test]
fn connect_from_a_local_address_in_use_is_error_then_close() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let id = reactor
        .connect(
            addr,
            ConnectOptions::new().local_addr(Some(taken.local_addr().unwrap())),
        )
        .unwrap();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    assert_eq!(h.events(id), ["Error(AddrInUse)", "Close(true, Error, 0)"]);
    assert!(matches!(
        reactor.connect(
            addr,
            ConnectOptions::new().local_addr(Some("[::1]:0".parse().unwrap()))
        ),
        Err(Error::InvalidOption(_))
    ));
    assert_no_live_socket(&reactor);
}
