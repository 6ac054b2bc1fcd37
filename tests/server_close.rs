//! A closing server loses no connection the kernel already accepted for it (SEMANTICS B2.13),
//! and a graceful shutdown lets the work in progress finish (B2.12).
//!
//! The connections here complete their handshake and send their request while the reactor
//! does not run, so they wait in the listener's accept queue when the listener closes: the
//! situation of a server stopped (SIGSTOP, a long turn) when its shutdown begins.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use finwait::timers::ManualClock;
use finwait::{
    CloseReason, Context, Deadline, Event, Handler, ListenOptions, Reactor, ReactorOptions,
    SocketId,
};

const CLIENTS: usize = 20;

/// Connects `n` clients that each send one line, without running the reactor: the kernel
/// completes their handshakes and queues them.
fn queued_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = peer(addr);
            s.write_all(format!("line {i}\n").as_bytes()).unwrap();
            s
        })
        .collect()
}

/// An echo handler (the default `on_shutdown_request` ends each connection).
fn echo() -> Recorder<impl FnMut(&mut Context, SocketId, &Event<'_>)> {
    recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Data(bytes) = e {
            let _ = cx.write(id, bytes);
        }
    })
}

/// Every client gets its own line back, then FIN — never a reset.
fn assert_each_echoed_then_fin(clients: Vec<TcpStream>) {
    for (i, mut s) in clients.into_iter().enumerate() {
        let (got, ending) = read_to_end(&mut s);
        assert_eq!(
            (String::from_utf8_lossy(&got).into_owned(), ending),
            (format!("line {i}\n"), Ending::Fin),
            "client {i}"
        );
    }
}

#[test]
fn close_listener_takes_the_accept_queue_before_closing() {
    let (mut reactor, l, addr) = server(ListenOptions::new());
    let clients = queued_clients(addr, CLIENTS);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Data(bytes) = e {
            let _ = cx.write(id, bytes);
            let _ = cx.end(id);
        }
    });
    reactor.context_mut().close_listener(l).unwrap();
    // Closed at once: new connects are refused.
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    run_until(&mut reactor, &mut h, |h, _| {
        h.log.iter().filter(|(_, e)| e == "Finish").count() == CLIENTS
    });
    assert!(
        h.listener_log.is_empty(),
        "listener Close before its sockets'"
    );
    let mut clients = clients;
    for s in &mut clients {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    run_until(&mut reactor, &mut h, |h, r| {
        h.all_closed() && r.context().live_listeners() == 0
    });
    assert_each_echoed_then_fin(clients);
    // The listener's Close comes after its last socket's.
    assert_eq!(h.listener_log, [(l, "Close".to_string())]);
    assert_no_live_socket(&reactor);
}

#[test]
fn shutdown_serves_connections_waiting_in_the_accept_queue() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    let clients = queued_clients(addr, CLIENTS);
    let mut h = echo();
    reactor.context_mut().shutdown(Duration::from_secs(60));
    // `run` returns once the shutdown completed: every queued client served.
    let mut clients = clients;
    for s in &mut clients {
        // Each client closes its side once it has its answer; reading happens below.
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    reactor.serve(&mut h).unwrap();
    assert_eq!(h.sockets().len(), CLIENTS);
    for id in h.sockets() {
        assert_eq!(h.closed[&id].reason, CloseReason::Graceful, "{id}");
    }
    assert_each_echoed_then_fin(clients);
    assert_no_live_socket(&reactor);
}

#[test]
fn connections_left_queued_by_max_connections_are_served_at_shutdown() {
    let (mut reactor, _l, addr) = server(ListenOptions::new().max_connections(Some(2)));
    let mut clients = queued_clients(addr, 8);
    let mut h = echo();
    // Two are accepted; six stay queued at max_connections.
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 2);
    for _ in 0..5 {
        reactor
            .run_once(&mut h, Some(Duration::from_millis(1)))
            .unwrap();
    }
    assert_eq!(
        h.sockets().len(),
        2,
        "max_connections holds the rest queued"
    );
    reactor.context_mut().shutdown(Duration::from_secs(60));
    for s in &mut clients {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    reactor.serve(&mut h).unwrap();
    assert_eq!(h.sockets().len(), 8, "every queued connection was taken");
    assert_each_echoed_then_fin(clients);
    assert_no_live_socket(&reactor);
}

/// A handler that finishes its work before ending: on the shutdown request it answers with
/// `bye` one idle period later (its "response in progress"), then ends.
struct Deferring {
    log: Vec<(SocketId, String)>,
    closes: Vec<(SocketId, CloseReason)>,
    /// Ignores shutdown requests entirely (a stuck handler): the grace must bound it.
    stuck: bool,
}

impl Handler for Deferring {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        self.log.push((id, describe(&event)));
        match event {
            Event::Timeout => {
                let _ = cx.end_with(id, b"bye\n");
            }
            Event::Close(info) => self.closes.push((id, info.reason)),
            _ => {}
        }
    }

    fn on_shutdown_request(&mut self, cx: &mut Context, id: SocketId, _: &mut ()) {
        self.log.push((id, "ShutdownRequest".into()));
        if !self.stuck {
            cx.set_timeout(id, Some(Duration::from_secs(1))).unwrap();
        }
    }
}

#[test]
fn on_shutdown_request_lets_the_work_in_progress_finish_within_the_grace() {
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(ReactorOptions::new(), clock.clone()).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let mut client = peer(addr);
    let mut h = Deferring {
        log: Vec::new(),
        closes: Vec::new(),
        stuck: false,
    };
    run_until(&mut reactor, &mut h, |h, _| !h.log.is_empty());
    let id = h.log[0].0;
    reactor.context_mut().shutdown(Duration::from_secs(10));
    run_until(&mut reactor, &mut h, |h, _| {
        h.log.iter().any(|(_, e)| e == "ShutdownRequest")
    });
    // Not ended by the request: still writable.
    assert_eq!(reactor.context().state(id).unwrap(), finwait::State::Open);
    clock.advance(Duration::from_secs(2));
    client.shutdown(std::net::Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| !h.closes.is_empty());
    let (got, ending) = read_to_end(&mut client);
    assert_eq!((got.as_slice(), ending), (&b"bye\n"[..], Ending::Fin));
    assert_eq!(h.closes, [(id, CloseReason::Graceful)]);
    let events: Vec<&str> = h.log.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(
        events,
        [
            "Accepted",
            "ShutdownRequest",
            "Timeout",
            "Finish",
            "End",
            "Close(false, Graceful, 0)"
        ]
    );
    reactor.serve(&mut h).unwrap();
    assert_no_live_socket(&reactor);
}

#[test]
fn a_connection_that_never_finishes_is_destroyed_when_the_grace_runs_out() {
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(ReactorOptions::new(), clock.clone()).unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let mut client = peer(addr);
    let mut h = Deferring {
        log: Vec::new(),
        closes: Vec::new(),
        stuck: true,
    };
    run_until(&mut reactor, &mut h, |h, _| !h.log.is_empty());
    reactor.context_mut().shutdown(Duration::from_secs(10));
    run_until(&mut reactor, &mut h, |h, _| {
        h.log.iter().any(|(_, e)| e == "ShutdownRequest")
    });
    clock.advance(Duration::from_secs(11));
    run_until(&mut reactor, &mut h, |h, _| !h.closes.is_empty());
    assert_eq!(h.closes[0].1, CloseReason::Deadline(Deadline::Shutdown));
    // Nothing was queued: the peer sees a clean end, not a reset.
    let (got, ending) = read_to_end(&mut client);
    assert_eq!((got.len(), ending), (0, Ending::Fin));
    reactor.serve(&mut h).unwrap();
    assert_no_live_socket(&reactor);
}

/// A listener adopted with `listen_std` has a backlog the reactor does not know (here 4096,
/// systemd's default, against `ListenOptions`' 1024): the sweep still takes its whole queue.
#[test]
fn listen_std_sweep_takes_the_whole_queue_of_a_socket_with_a_larger_backlog() {
    const QUEUED: usize = 1500;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(4096).unwrap();
    let std_listener: std::net::TcpListener = socket.into();
    let addr = std_listener.local_addr().unwrap();
    let mut clients = queued_clients(addr, QUEUED);
    let mut reactor = Reactor::new().unwrap();
    let l = reactor
        .listen_std(std_listener, ListenOptions::new())
        .unwrap();
    let mut h = echo();
    reactor.context_mut().close_listener(l).unwrap();
    for s in &mut clients {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    run_until(&mut reactor, &mut h, |h, r| {
        h.sockets().len() == QUEUED && h.all_closed() && r.context().live_listeners() == 0
    });
    assert_each_echoed_then_fin(clients);
    assert_eq!(reactor.stats().swept, QUEUED as u64);
}

#[test]
fn shutdown_of_an_idle_reactor_completes_and_the_reactor_can_serve_and_shut_down_again() {
    let completions = std::rc::Rc::new(std::cell::Cell::new(0));
    struct Counting(std::rc::Rc<std::cell::Cell<u32>>);
    impl Handler for Counting {
        fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
            if let Event::Data(bytes) = event {
                let _ = cx.write(id, bytes);
            }
        }
        fn on_shutdown_complete(&mut self, _: &mut Context) {
            self.0.set(self.0.get() + 1);
        }
    }
    let mut h = Counting(completions.clone());
    let mut reactor = Reactor::new().unwrap();
    reactor.context_mut().shutdown(Duration::from_secs(600));
    reactor.serve(&mut h).unwrap();
    assert_eq!(completions.get(), 1, "an idle reactor's shutdown completes");
    // A second life: serve, then shut down again; the first grace timer is gone.
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let mut clients = queued_clients(addr, 3);
    reactor.context_mut().shutdown(Duration::from_secs(600));
    for s in &mut clients {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    reactor.serve(&mut h).unwrap();
    assert_eq!(completions.get(), 2);
    assert_each_echoed_then_fin(clients);
    assert_no_live_socket(&reactor);
}

/// `shutdown_listener` and then the reactor's `shutdown`: each socket hears the request once.
#[test]
fn on_shutdown_request_runs_once_per_socket_across_two_shutdowns() {
    struct Requests(Vec<SocketId>);
    impl Handler for Requests {
        fn on_event(&mut self, _: &mut Context, _: SocketId, _: &mut (), _: Event<'_>) {}
        fn on_shutdown_request(&mut self, _: &mut Context, id: SocketId, _: &mut ()) {
            self.0.push(id); // and does not end it
        }
    }
    let (mut reactor, l, addr) = server(ListenOptions::new());
    let clients = queued_clients(addr, 3);
    let mut h = Requests(Vec::new());
    for _ in 0..20 {
        reactor
            .run_once(&mut h, Some(Duration::from_millis(5)))
            .unwrap();
    }
    reactor
        .context_mut()
        .shutdown_listener(l, Duration::from_secs(600))
        .unwrap();
    for _ in 0..5 {
        reactor.run_once(&mut h, Some(Duration::ZERO)).unwrap();
    }
    reactor.context_mut().shutdown(Duration::from_secs(600));
    for _ in 0..5 {
        reactor.run_once(&mut h, Some(Duration::ZERO)).unwrap();
    }
    let mut seen = h.0.clone();
    seen.sort();
    seen.dedup();
    assert_eq!((h.0.len(), seen.len()), (3, 3), "{:?}", h.0);
    reactor.context_mut().stop_now();
    reactor.serve(&mut h).unwrap();
    drop(clients);
}

#[test]
fn waker_send_after_the_reactor_is_dropped_is_refused_and_drops_the_call() {
    let mut reactor = Reactor::new().unwrap();
    let waker = reactor.waker().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let early = tx.clone();
    waker
        .send(move |_| {
            let _ = early.send(1);
        })
        .unwrap();
    drop(reactor);
    // The call that waited was dropped unrun (its sender with it), and new ones are refused.
    assert!(matches!(
        waker.send(move |_| {
            let _ = tx.send(2);
        }),
        Err(finwait::Error::Destroyed)
    ));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    );
}
