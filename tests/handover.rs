//! Zero-downtime restart in one process: reactors on threads hand their listening sockets to
//! each other (SEMANTICS B4) while clients connect in a loop — none refused, reset or answered
//! wrongly; the old reactor finishes its connections and returns; a successor that refuses
//! leaves the old one serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use finwait::{Context, Event, Handler, ListenOptions, Reactor, SocketId, Stats, Waker, handover};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs a line echo that ends each connection after its first line, on a thread; returns the
/// thread (its reactor's counters once it returns) and the reactor's waker.
fn spawn_serving(
    mut reactor: Reactor,
    served: &Arc<AtomicUsize>,
) -> (thread::JoinHandle<Stats>, Waker) {
    let waker = reactor.waker().unwrap();
    let mut handler = LineOnce(served.clone());
    let thread = thread::spawn(move || {
        reactor.serve(&mut handler).unwrap();
        reactor.stats()
    });
    (thread, waker)
}

/// Answers one line, then ends. Asked to finish by a shutdown (after a handover), a
/// connection whose line has not come yet is left to send it — ending it then would answer
/// a client that already sent its line with a bare FIN — and the grace bounds the wait.
struct LineOnce(Arc<AtomicUsize>);

impl Handler for LineOnce {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        if let Event::Data(bytes) = event {
            let _ = cx.end_with(id, bytes);
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_shutdown_request(&mut self, _: &mut Context, _: SocketId, _: &mut ()) {}
}

/// Waits (bounded) for a serving thread to return.
fn wait_returned(thread: &thread::JoinHandle<Stats>, what: &str) {
    let start = Instant::now();
    while !thread.is_finished() {
        assert!(start.elapsed() < LIMIT, "{what} never returned");
        thread::sleep(Duration::from_millis(1));
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("finwait-{name}-{}.sock", std::process::id()))
}

/// One client connection: a line out, the same line back, then the server's FIN.
fn one(addr: SocketAddr, n: usize) -> Result<(), String> {
    let line = format!("connection {n}\n");
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(line.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != line.as_bytes() {
        return Err(format!("got {:?}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

/// Clients connecting in a loop until `stop`; returns (connections, failures).
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, Vec<String>)> {
    thread::spawn(move || {
        let mut n = 0;
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = one(addr, n) {
                failures.push(e);
            }
            n += 1;
        }
        (n, failures)
    })
}

#[test]
fn handovers_between_reactors_lose_no_connection() {
    let path = temp_path("handover-chain");
    let mut first = Reactor::new().unwrap();
    let l = first.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = first.listener_addr(l).unwrap();
    first
        .serve_handover(&path, Duration::from_secs(10))
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let (mut running, mut waker) = spawn_serving(first, &served);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4).map(|_| load(addr, stop.clone())).collect();
    let mut old_stats = Vec::new();
    for round in 0..5 {
        // Let the current instance serve a while.
        let start = Instant::now();
        let at = served.load(Ordering::Relaxed);
        while served.load(Ordering::Relaxed) < at + 200 {
            assert!(start.elapsed() < LIMIT, "round {round}: nothing served");
            thread::sleep(Duration::from_millis(1));
        }
        // The successor takes over.
        let mut next = Reactor::new().unwrap();
        let offer = handover::take_over(&path)
            .unwrap()
            .expect("the running reactor serves handovers");
        assert_eq!(offer.listeners().len(), 1);
        assert_eq!(offer.listeners()[0].addr, addr);
        offer
            .adopt(&mut next, ListenOptions::new(), Duration::from_secs(10))
            .unwrap();
        let (successor, next_waker) = spawn_serving(next, &served);
        // The old one stops accepting, finishes its connections and returns.
        wait_returned(&running, &format!("round {round}: the old reactor"));
        old_stats.push(running.join().unwrap());
        (running, waker) = (successor, next_waker);
    }
    let start = Instant::now();
    let at = served.load(Ordering::Relaxed);
    while served.load(Ordering::Relaxed) < at + 200 {
        assert!(start.elapsed() < LIMIT, "the last successor serves nothing");
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = waker.send(|cx| cx.shutdown(Duration::from_secs(10)));
    let mut total = 0;
    let mut failures = Vec::new();
    for c in clients {
        let (n, f) = c.join().unwrap();
        total += n;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for stats in &old_stats {
        assert_eq!(stats.listeners_handed_over, 1, "{stats}");
        assert_eq!(stats.resets_sent, 0, "{stats}");
        assert_eq!(stats.bytes_unsent, 0, "{stats}");
        assert_eq!(stats.accepted, stats.closed(), "{stats}");
    }
    assert!(total >= 1200);
    wait_returned(&running, "the last reactor");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_refused_handover_leaves_the_old_reactor_serving() {
    let path = temp_path("handover-refused");
    let mut first = Reactor::new().unwrap();
    let l = first.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = first.listener_addr(l).unwrap();
    first
        .serve_handover(&path, Duration::from_secs(10))
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let (running, _) = spawn_serving(first, &served);
    // A successor that refuses, one that gives up by dropping the offer, and one that dies
    // (closes the connection) without a word.
    handover::take_over(&path)
        .unwrap()
        .unwrap()
        .refuse("testing");
    drop(handover::take_over(&path).unwrap().unwrap());
    {
        let raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(raw);
    }
    for n in 0..50 {
        one(addr, n).unwrap();
    }
    assert!(!running.is_finished(), "the old reactor stopped");
    // It still hands over when asked properly.
    let mut next = Reactor::new().unwrap();
    handover::take_over(&path)
        .unwrap()
        .unwrap()
        .adopt(&mut next, ListenOptions::new(), Duration::from_secs(10))
        .unwrap();
    wait_returned(&running, "the old reactor");
    assert_eq!(running.join().unwrap().listeners_handed_over, 1);
    let (successor, waker) = spawn_serving(next, &served);
    one(addr, 99).unwrap();
    waker
        .send(|cx| cx.shutdown(Duration::from_secs(10)))
        .unwrap();
    wait_returned(&successor, "the successor");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn nothing_serving_the_path_means_bind_yourself() {
    let path = temp_path("handover-none");
    let _ = std::fs::remove_file(&path);
    assert!(handover::take_over(&path).unwrap().is_none());
    // A stale socket file (its process gone) refuses: the same.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(handover::take_over(&path).unwrap().is_none());
    let _ = std::fs::remove_file(&path);
}

/// A successor arrives while another is being handed the sockets: it waits its turn, finds
/// the sockets gone from the old process, reconnects — to the first successor, which already
/// serves handovers at the path — and takes over from it.
#[test]
fn a_handover_during_a_handover_goes_to_the_first_successor() {
    let path = temp_path("handover-during");
    let mut a = Reactor::new().unwrap();
    let l = a.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = a.listener_addr(l).unwrap();
    a.serve_handover(&path, Duration::from_secs(10)).unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let (a_thread, _) = spawn_serving(a, &served);
    // B holds A's offer without answering yet.
    let b_offer = handover::take_over(&path).unwrap().unwrap();
    // C asks meanwhile: it waits behind B.
    let c_asking = {
        let path = path.clone();
        thread::spawn(move || handover::take_over(&path))
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
        !c_asking.is_finished(),
        "C got an answer while A was busy with B"
    );
    let mut b = Reactor::new().unwrap();
    b_offer
        .adopt(&mut b, ListenOptions::new(), Duration::from_secs(10))
        .unwrap();
    let (b_thread, _) = spawn_serving(b, &served);
    wait_returned(&a_thread, "A");
    // C's turn: B offers the same socket.
    let c_offer = c_asking
        .join()
        .unwrap()
        .unwrap()
        .expect("B serves handovers");
    assert_eq!(c_offer.listeners()[0].addr, addr);
    let mut c = Reactor::new().unwrap();
    c_offer
        .adopt(&mut c, ListenOptions::new(), Duration::from_secs(10))
        .unwrap();
    let (c_thread, c_waker) = spawn_serving(c, &served);
    wait_returned(&b_thread, "B");
    for n in 0..20 {
        one(addr, n).unwrap();
    }
    c_waker
        .send(|cx| cx.shutdown(Duration::from_secs(10)))
        .unwrap();
    wait_returned(&c_thread, "C");
    assert_eq!(a_thread.join().unwrap().listeners_handed_over, 1);
    assert_eq!(b_thread.join().unwrap().listeners_handed_over, 1);
    let _ = std::fs::remove_file(&path);
}

/// The old reactor is at `max_connections`: the connections waiting in the accept queue are
/// not its to take any more once it hands over — the successor serves them, none is reset.
#[test]
fn connections_queued_behind_max_connections_go_to_the_successor() {
    let path = temp_path("handover-full");
    let mut old = Reactor::new().unwrap();
    let l = old
        .listen("127.0.0.1:0", ListenOptions::new().max_connections(Some(2)))
        .unwrap();
    let addr = old.listener_addr(l).unwrap();
    old.serve_handover(&path, Duration::from_secs(10)).unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let (old_thread, _) = spawn_serving(old, &served);
    // Two idle connections fill it; five more wait in the accept queue, their lines sent.
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(50));
    let queued: Vec<_> = (0..5)
        .map(|n| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.write_all(format!("queued {n}\n").as_bytes()).unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        served.load(Ordering::Relaxed),
        0,
        "the full reactor served a queued one"
    );
    let mut next = Reactor::new().unwrap();
    handover::take_over(&path)
        .unwrap()
        .unwrap()
        .adopt(&mut next, ListenOptions::new(), Duration::from_secs(10))
        .unwrap();
    let (next_thread, next_waker) = spawn_serving(next, &served);
    for (n, mut s) in queued.into_iter().enumerate() {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, format!("queued {n}\n").as_bytes());
    }
    // The old reactor's own connections finish as its protocol says: their line, answered.
    for (n, mut s) in idle.into_iter().enumerate() {
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(format!("idle {n}\n").as_bytes()).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("a FIN, not a reset");
        assert_eq!(got, format!("idle {n}\n").as_bytes());
    }
    wait_returned(&old_thread, "the old reactor");
    let stats = old_thread.join().unwrap();
    assert_eq!((stats.accepted, stats.resets_sent), (2, 0), "{stats}");
    next_waker
        .send(|cx| cx.shutdown(Duration::from_secs(10)))
        .unwrap();
    wait_returned(&next_thread, "the successor");
    assert_eq!(next_thread.join().unwrap().accepted, 5);
    let _ = std::fs::remove_file(&path);
}

/// A successor that fails after it put its own socket at the path (it serves there before it
/// accepts) and then goes away: the old reactor, serving on, takes the path back, so the next
/// successor still finds it.
#[test]
fn a_successor_failing_after_it_took_the_path_gives_it_back() {
    let path = temp_path("handover-path-back");
    let mut old = Reactor::new().unwrap();
    let l = old.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = old.listener_addr(l).unwrap();
    old.serve_handover(&path, Duration::from_secs(10)).unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let (old_thread, old_waker) = spawn_serving(old, &served);
    let offer = handover::take_over(&path).unwrap().unwrap();
    let mut failing = Reactor::new().unwrap();
    failing.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    failing
        .serve_handover(&path, Duration::from_secs(10))
        .unwrap();
    offer.refuse("failed after serving the path");
    drop(failing);
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < LIMIT,
            "the old reactor never took the path back"
        );
        match handover::take_over(&path) {
            Ok(Some(offer)) if offer.listeners()[0].addr == addr => {
                offer.refuse("just looking");
                break;
            }
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
    one(addr, 0).unwrap();
    assert!(!old_thread.is_finished());
    old_waker
        .send(|cx| cx.shutdown(Duration::from_secs(10)))
        .unwrap();
    wait_returned(&old_thread, "the old reactor");
    assert_eq!(old_thread.join().unwrap().listeners_handed_over, 0);
    let _ = std::fs::remove_file(&path);
}
