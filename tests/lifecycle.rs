//! Time and server lifecycle (SEMANTICS.md B2 items 5, 11, 12): idle timeouts, the deadlines
//! that end lingering sockets, graceful shutdown and listener close. Timer tests drive an
//! injected clock; nothing here sleeps to wait for a timeout.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use finwait::timers::ManualClock;
use finwait::{
    CloseReason, ConnectOptions, Context, Deadline, Event, ListenOptions, Reactor, ReactorOptions,
    SocketId,
};

fn manual_server(options: ListenOptions) -> (Reactor, ManualClock, std::net::SocketAddr) {
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(ReactorOptions::new(), clock.clone()).unwrap();
    let l = reactor.listen("127.0.0.1:0", options).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    (reactor, clock, addr)
}

/// A few turns without waiting, so a time jump is noticed.
fn turns<H: finwait::Handler>(reactor: &mut Reactor, h: &mut H) {
    for _ in 0..3 {
        reactor.run_once(h, Some(Duration::from_millis(5))).unwrap();
    }
}

fn count(h: &[&str], what: &str) -> usize {
    h.iter().filter(|e| **e == what).count()
}

#[test]
fn idle_timeout_fires_once_per_idle_period_and_traffic_rearms_it() {
    let (mut reactor, clock, addr) =
        manual_server(ListenOptions::new().idle_timeout(Some(Duration::from_secs(10))));
    let mut s = peer(addr);
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    let id = h.sockets()[0];
    clock.advance(Duration::from_secs(9));
    turns(&mut reactor, &mut h);
    assert_eq!(count(&h.events(id), "Timeout"), 0, "not idle long enough");
    clock.advance(Duration::from_secs(2));
    turns(&mut reactor, &mut h);
    assert_eq!(count(&h.events(id), "Timeout"), 1);
    // Still idle: no second Timeout for the same idle period.
    clock.advance(Duration::from_secs(30));
    turns(&mut reactor, &mut h);
    assert_eq!(count(&h.events(id), "Timeout"), 1);
    // Traffic starts a new period; its Timeout comes 10 s after the traffic, not before.
    s.write_all(b"ping").unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.data.contains_key(&id));
    clock.advance(Duration::from_secs(9));
    turns(&mut reactor, &mut h);
    assert_eq!(count(&h.events(id), "Timeout"), 1);
    clock.advance(Duration::from_secs(2));
    turns(&mut reactor, &mut h);
    assert_eq!(count(&h.events(id), "Timeout"), 2);
    // The handler decides; nothing was closed by the timeouts.
    assert!(!h.closed.contains_key(&id));
    reactor.context_mut().set_timeout(id, None).unwrap();
    clock.advance(Duration::from_secs(60));
    turns(&mut reactor, &mut h);
    assert_eq!(count(&h.events(id), "Timeout"), 2, "disarmed");
    reactor.context_mut().destroy(id).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_no_live_socket(&reactor);
}

#[test]
fn fin_wait_deadline_destroys_a_socket_whose_peer_never_fins() {
    let (mut reactor, clock, addr) = manual_server(ListenOptions::new());
    let mut s = peer(addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.end_with(id, b"bye").unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets()
            .first()
            .is_some_and(|id| h.events(*id).contains(&"Finish"))
    });
    let id = h.sockets()[0];
    clock.advance(Duration::from_secs(29));
    turns(&mut reactor, &mut h);
    assert!(!h.closed.contains_key(&id), "closed before the deadline");
    clock.advance(Duration::from_secs(2));
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        ["Accepted", "Finish", "Close(false, Deadline(FinWait), 0)"]
    );
    let (got, ending) = read_to_end(&mut s);
    assert_eq!((got.as_slice(), ending), (&b"bye"[..], Ending::Fin));
    assert_no_live_socket(&reactor);
}

#[test]
fn fin_wait_deadline_bounds_a_flush_to_a_peer_that_never_reads() {
    let (mut reactor, clock, addr) = manual_server(ListenOptions::new());
    let s = peer(addr);
    let payload = pattern(32 << 20);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            let _ = cx.write(id, &payload);
            cx.end(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    turns(&mut reactor, &mut h);
    let id = h.sockets()[0];
    assert!(
        reactor.context().bytes_queued(id).unwrap() > 0,
        "the flush must be stuck"
    );
    clock.advance(Duration::from_secs(31));
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    let info = h.closed[&id];
    assert_eq!(info.reason, CloseReason::Deadline(Deadline::FinWait));
    assert!(info.unsent > 0);
    drop(s);
    assert_no_live_socket(&reactor);
}

#[test]
fn linger_deadline_closes_destroy_soon_when_the_peer_never_fins() {
    let (mut reactor, clock, addr) = manual_server(ListenOptions::new());
    let mut s = peer(addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, b"Goodbye\n").unwrap();
            cx.destroy_soon(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets()
            .first()
            .is_some_and(|id| h.events(*id).contains(&"Finish"))
    });
    let id = h.sockets()[0];
    // The peer keeps sending (discarded) but never FINs: the linger deadline still ends it.
    s.write_all(b"noise").unwrap();
    turns(&mut reactor, &mut h);
    clock.advance(Duration::from_secs(6));
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        ["Accepted", "Finish", "Close(false, Deadline(Linger), 0)"]
    );
    let mut buf = [0; 8];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"Goodbye\n");
    assert_no_live_socket(&reactor);
}

#[test]
fn connect_timeout_closes_with_deadline_reason() {
    // A listener with a full accept queue drops further SYNs: the connect hangs.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let _fillers: Vec<_> = (0..4)
        .map(|_| {
            let c =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            c.set_nonblocking(true).unwrap();
            let _ = c.connect(&addr.into());
            c
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(ReactorOptions::new(), clock.clone()).unwrap();
    let id = reactor
        .connect(
            addr,
            ConnectOptions::new().connect_timeout(Some(Duration::from_secs(3))),
        )
        .unwrap();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    turns(&mut reactor, &mut h);
    assert!(h.events(id).is_empty(), "{:?}", h.events(id));
    clock.advance(Duration::from_secs(4));
    run_until(&mut reactor, &mut h, |h, _| h.closed.contains_key(&id));
    assert_eq!(
        h.events(id),
        [
            "Error(connect deadline expired)",
            "Close(true, Deadline(Connect), 0)"
        ]
    );
    assert_no_live_socket(&reactor);
}

/// A peer that never reads, never FINs and never resets cannot hold sockets past the
/// deadlines: real time, short deadlines, both for `end()` and `destroy_soon()`. Each socket
/// closes by its own deadline, and the peers see why: the small messages whole, then FIN; the
/// flushes that could never finish cut short, then RST (never a FIN after a cut stream).
#[test]
fn silent_peer_cannot_hold_sockets_past_deadlines() {
    let options = ReactorOptions::new()
        .fin_wait(Some(Duration::from_millis(300)))
        .linger(Duration::from_millis(300));
    let mut reactor = Reactor::with_options(options).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let mut silent: Vec<_> = (0..4).map(|_| peer(addr)).collect();
    let payload = pattern(16 << 20);
    let mut n = 0;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            // Two sockets get a small message, two a flush that can never finish.
            if n % 2 == 0 {
                cx.write(id, b"hello").unwrap();
            } else {
                let _ = cx.write(id, &payload);
            }
            if n < 2 {
                cx.end(id).unwrap();
            } else {
                cx.destroy_soon(id).unwrap();
            }
            n += 1;
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets().len() == 4 && h.all_closed()
    });
    let mut reasons: Vec<_> = h.closed.values().map(|c| c.reason).collect();
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        reasons,
        [
            CloseReason::Deadline(Deadline::FinWait),
            CloseReason::Deadline(Deadline::FinWait),
            CloseReason::Deadline(Deadline::Linger),
            CloseReason::Deadline(Deadline::Linger),
        ]
    );
    // What the peers saw, now that they read.
    let mut whole = 0;
    let mut cut = 0;
    for (i, s) in silent.iter_mut().enumerate() {
        match read_to_end(s) {
            (got, Ending::Fin) if got == b"hello" => whole += 1,
            (got, Ending::Reset) if got.len() < payload.len() && payload.starts_with(&got) => {
                cut += 1
            }
            (got, ending) => panic!("peer {i}: {ending:?} after {} bytes", got.len()),
        }
    }
    assert_eq!((whole, cut), (2, 2));
    drop(silent);
    assert_no_live_socket(&reactor);
}

#[test]
fn paused_socket_with_peer_fin_is_still_closed_by_the_fin_wait() {
    let (mut reactor, clock, addr) = manual_server(ListenOptions::new());
    let mut s = peer(addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.pause(id).unwrap();
            cx.end_with(id, b"done").unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| {
        h.sockets()
            .first()
            .is_some_and(|id| h.events(*id).contains(&"Finish"))
    });
    s.write_all(b"unread").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    turns(&mut reactor, &mut h);
    let id = h.sockets()[0];
    // Paused: neither the data nor the End is delivered.
    assert_eq!(h.events(id), ["Accepted", "Finish"]);
    clock.advance(Duration::from_secs(31));
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_eq!(
        h.events(id),
        ["Accepted", "Finish", "Close(false, Deadline(FinWait), 0)"]
    );
    assert_no_live_socket(&reactor);
}

#[test]
fn close_listener_refuses_new_connects_and_reports_close_after_its_sockets() {
    let (mut reactor, l, addr) = server(ListenOptions::new());
    let s = peer(addr);
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    reactor.context_mut().close_listener(l).unwrap();
    // Refused at once, not left waiting in a backlog.
    let refused = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    turns_real(&mut reactor, &mut h);
    assert!(
        h.listener_log.is_empty(),
        "Close before the last socket closed"
    );
    let id = h.sockets()[0];
    s.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| !h.listener_log.is_empty());
    assert!(h.closed.contains_key(&id));
    assert_eq!(h.listener_log.len(), 1);
    assert_eq!(h.listener_log[0].1, "Close");
    assert_eq!(reactor.context().live_listeners(), 0);
    assert_no_live_socket(&reactor);
}

/// Whether the thread `task` (a `/proc/PID/task/TID` path) sleeps in `epoll_wait`: state `S`,
/// and a wait channel in epoll (`do_epoll_wait`, `ep_poll`) where the kernel shows one.
fn asleep_in_epoll_wait(task: &std::path::Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
        return false;
    };
    let sleeping = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
    let wchan = std::fs::read_to_string(task.join("wchan")).unwrap_or_default();
    let in_epoll = wchan.contains("epoll") || wchan.contains("ep_poll");
    sleeping && (in_epoll || wchan.is_empty() || wchan == "0")
}

fn turns_real<H: finwait::Handler>(reactor: &mut Reactor, h: &mut H) {
    for _ in 0..5 {
        reactor
            .run_once(h, Some(Duration::from_millis(10)))
            .unwrap();
    }
}

/// `shutdown(grace)`: listeners close, connections end (data flushed, FIN), clients that
/// keep their connection open are destroyed after the grace, one completion, `run` returns.
#[test]
fn shutdown_completes_with_clients_that_keep_connections_open() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let polite = thread::spawn(move || {
        let mut s = peer(addr);
        s.write_all(b"x").unwrap();
        let got = read_to_end(&mut s);
        drop(s);
        got
    });
    let stubborn = peer(addr);
    struct H {
        accepted: usize,
        closes: Vec<CloseReason>,
        completed: usize,
    }
    impl finwait::Handler for H {
        fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), e: Event<'_>) {
            match e {
                Event::Accepted(_) => {
                    self.accepted += 1;
                    cx.write(id, b"welcome").unwrap();
                    if self.accepted == 2 {
                        cx.shutdown(Duration::from_millis(300));
                    }
                }
                Event::Close(info) => self.closes.push(info.reason),
                _ => {}
            }
        }
        fn on_shutdown_complete(&mut self, _: &mut Context) {
            self.completed += 1;
        }
    }
    let mut h = H {
        accepted: 0,
        closes: Vec::new(),
        completed: 0,
    };
    // Bounded: the shutdown completes once the grace destroyed the stubborn connection.
    run_until(&mut reactor, &mut h, |h, _| h.completed == 1);
    run_until(&mut reactor, &mut h, |_, r| r.is_idle());
    // Nothing left: `run` returns at once.
    reactor.serve(&mut h).unwrap();
    assert_eq!(h.completed, 1);
    assert_eq!(h.closes.len(), 2);
    assert!(h.closes.contains(&CloseReason::Graceful));
    assert!(
        h.closes
            .contains(&CloseReason::Deadline(Deadline::Shutdown))
    );
    let (got, ending) = polite.join().unwrap();
    assert_eq!((got.as_slice(), ending), (&b"welcome"[..], Ending::Fin));
    assert_eq!(
        std::net::TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    // The stubborn peer got the welcome and the FIN of the shutdown's `end()`; the grace
    // then closed a socket with nothing left to send, which needs no RST.
    let mut stubborn = stubborn;
    assert_eq!(
        read_to_end(&mut stubborn),
        (b"welcome".to_vec(), Ending::Fin)
    );
    drop(stubborn);
    assert_eq!(reactor.context().live_listeners(), 0);
    assert_no_live_socket(&reactor);
}

#[test]
fn max_connections_leaves_extra_connections_unaccepted_until_a_place_frees() {
    let (mut reactor, _l, addr) = server(ListenOptions::new().max_connections(Some(2)));
    let _a = peer(addr);
    let b = peer(addr);
    let _c = peer(addr);
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 2);
    turns_real(&mut reactor, &mut h);
    assert_eq!(h.sockets().len(), 2, "the third waits in the backlog");
    b.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 3);
    assert_eq!(h.closed.len(), 1);
    for id in reactor.context().socket_ids() {
        reactor.context_mut().destroy(id).unwrap();
    }
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_no_live_socket(&reactor);
}

/// A listener accepts one connection per turn (level-triggered: the rest are reported again,
/// and no `accept` is made only to hear `EAGAIN`), but after a long turn it drains its
/// backlog: a burst of connects must not wait one long turn each. The injected clock makes
/// a turn "long" without sleeping.
#[test]
fn listener_accepts_one_per_short_turn_and_drains_after_a_long_one() {
    let (mut reactor, clock, addr) = manual_server(ListenOptions::new());
    let peers: Vec<_> = (0..5).map(|_| peer(addr)).collect();
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    let turn = |reactor: &mut Reactor, h: &mut _| {
        reactor
            .run_once(h, Some(Duration::from_millis(200)))
            .unwrap();
    };
    turn(&mut reactor, &mut h);
    assert_eq!(h.sockets().len(), 1, "a short turn accepts one");
    turn(&mut reactor, &mut h);
    assert_eq!(h.sockets().len(), 2, "and the next short turn one more");
    // This turn "worked" 5 ms: the next one accepts everything waiting.
    clock.advance(Duration::from_millis(5));
    turn(&mut reactor, &mut h);
    assert_eq!(
        h.sockets().len(),
        5,
        "after a long turn the backlog is drained"
    );
    drop(peers);
    for id in reactor.context().socket_ids() {
        reactor.context_mut().destroy(id).unwrap();
    }
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_no_live_socket(&reactor);
}

/// A listener is level-triggered (no `accept` only to hear `EAGAIN`); at `max_connections`
/// with a connection waiting in its backlog it must stop being reported, or every poll
/// would return at once and the loop would spin. So with nothing to do, a turn given no
/// timeout must sleep in `epoll_wait` until something happens — here, another thread that
/// saw this one asleep there and woke it. Readiness left from earlier turns (the accepted
/// socket's first edges, the new waker) may end a few turns first; a listener still
/// reported would end every one of them.
#[test]
fn listener_at_max_connections_lets_the_loop_sleep() {
    const EARLY_TURNS: usize = 10;
    let (mut reactor, _l, addr) = server(ListenOptions::new().max_connections(Some(1)));
    let _a = peer(addr);
    let b = peer(addr);
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 1);
    // This thread, as `/proc/self/task/TID`.
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let task = std::path::Path::new("/proc").join(me);
    let waker = reactor.waker().unwrap();
    let mut early = 0;
    for _ in 0..3 {
        // Set before the wake: it slept (`woken`), or it was never seen asleep within LIMIT
        // (`gave_up`; the wake then only ends the turn, so that the test fails instead of
        // hanging).
        let woken = Arc::new(AtomicBool::new(false));
        let gave_up = Arc::new(AtomicBool::new(false));
        let (flag, give_up) = (woken.clone(), gave_up.clone());
        let task = task.clone();
        let waker = waker.clone();
        let alarm = thread::spawn(move || {
            let start = Instant::now();
            loop {
                if asleep_in_epoll_wait(&task) {
                    flag.store(true, Ordering::SeqCst);
                    break;
                }
                if start.elapsed() > LIMIT {
                    give_up.store(true, Ordering::SeqCst);
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            waker.wake().unwrap();
        });
        loop {
            reactor.run_once(&mut h, None).unwrap();
            if woken.load(Ordering::SeqCst) {
                break;
            }
            assert!(
                !gave_up.load(Ordering::SeqCst),
                "the loop was never seen asleep in epoll_wait"
            );
            early += 1;
            assert!(
                early <= EARLY_TURNS,
                "{early} turns with nothing to do returned at once: the full listener still \
                 wakes the loop"
            );
        }
        alarm.join().unwrap();
    }
    eprintln!("{early} turns ended before their wake");
    assert_eq!(h.sockets().len(), 1, "the second waits in the backlog");
    // A place frees up: the waiting connection is accepted.
    reactor.context_mut().destroy(h.sockets()[0]).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 2);
    drop(b);
    for id in reactor.context().socket_ids() {
        reactor.context_mut().destroy(id).unwrap();
    }
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    assert_no_live_socket(&reactor);
}

/// Found by the `reactor` fuzz target: the listener's `Close` must come after the `Close` of
/// its last socket, also when that socket is destroyed in the same turn.
#[test]
fn listener_close_follows_its_last_socket_close() {
    struct Order(Vec<String>);
    impl finwait::Handler for Order {
        fn on_event(&mut self, _: &mut Context, id: SocketId, _: &mut (), e: Event<'_>) {
            self.0.push(format!("{id} {}", describe(&e)));
        }
        fn on_listener_event(
            &mut self,
            _: &mut Context,
            id: finwait::ListenerId,
            e: finwait::ListenerEvent,
        ) {
            self.0.push(format!("{id} {e:?}"));
        }
    }
    let (mut reactor, l, addr) = server(ListenOptions::new());
    let _peer = peer(addr);
    let mut h = Order(Vec::new());
    run_until(&mut reactor, &mut h, |h, _| !h.0.is_empty());
    let id = reactor.context().socket_ids()[0];
    reactor.context_mut().close_listener(l).unwrap();
    reactor.context_mut().destroy(id).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.0.len() == 3);
    assert_eq!(
        h.0,
        [
            format!("{id} Accepted"),
            format!("{id} Close(false, LocalDestroy, 0)"),
            format!("{l} Close"),
        ]
    );
    assert_no_live_socket(&reactor);
}

/// `shutdown_listener(grace)`: that listener closes at once, its connections are ended (data
/// flushed, then FIN), the one whose peer keeps it open is destroyed after the grace, and the
/// listener's `Close` comes last. A second listener is left alone.
#[test]
fn shutdown_listener_ends_its_sockets_and_reports_close_last() {
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(ReactorOptions::new(), clock.clone()).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let other = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let other_addr = reactor.listener_addr(other).unwrap();
    let mut polite = peer(addr);
    let stubborn = peer(addr);
    let _bystander = peer(other_addr);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, b"hi").unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 3);
    reactor
        .context_mut()
        .shutdown_listener(l, Duration::from_secs(2))
        .unwrap();
    assert_eq!(
        std::net::TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    // Its connections are asked to finish at their next service; the default ends them.
    run_until(&mut reactor, &mut h, |_, r| {
        r.context()
            .socket_ids()
            .into_iter()
            .filter(|&id| r.context().listener_of(id).is_ok_and(|o| o == Some(l)))
            .all(|id| {
                r.context()
                    .state(id)
                    .is_ok_and(|s| s != finwait::State::Open)
            })
    });
    let (got, ending) = read_to_end(&mut polite);
    assert_eq!((got.as_slice(), ending), (&b"hi"[..], Ending::Fin));
    polite.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 1);
    assert!(
        h.listener_log.is_empty(),
        "Close before the stubborn socket closed"
    );
    clock.advance(Duration::from_secs(3));
    run_until(&mut reactor, &mut h, |h, _| !h.listener_log.is_empty());
    let mut reasons: Vec<_> = h.closed.values().map(|c| c.reason).collect();
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        reasons,
        [
            CloseReason::Deadline(Deadline::Shutdown),
            CloseReason::Graceful
        ]
    );
    assert_eq!(h.listener_log, [(l, "Close".to_string())]);
    // The other listener and its socket are untouched.
    assert_eq!(reactor.context().live_listeners(), 1);
    assert_eq!(reactor.context().live_sockets(), 1);
    for id in reactor.context().socket_ids() {
        reactor.context_mut().destroy(id).unwrap();
    }
    reactor.context_mut().close_listener(other).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.all_closed());
    drop(stubborn);
    assert_no_live_socket(&reactor);
}
