//! Per-socket attachments: created once per socket, handed to every event of that socket and
//! to its shutdown request, reachable for other sockets through `attachment_mut`, dropped
//! after the socket's `Close`, and never seen by a later socket that reuses the slot.

mod common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Ending, LIMIT, peer, read_to_end, run_until};
use finwait::{
    ConnectOptions, Context, Error, Event, Handler, ListenOptions, Reactor, ReactorOptions,
    SocketId,
};

thread_local! {
    /// Attachments created and dropped on this test's thread (the reactor runs on it).
    static CREATED: Cell<usize> = const { Cell::new(0) };
    static DROPPED: Cell<usize> = const { Cell::new(0) };
}

/// Counts what one socket saw; its creation and drop are counted too.
struct Tally {
    /// Which socket this attachment was first handed with.
    owner: Option<SocketId>,
    events: usize,
    bytes: usize,
    /// Set by another socket through `attachment_mut`.
    note: Option<&'static str>,
}

impl Default for Tally {
    fn default() -> Tally {
        CREATED.with(|c| c.set(c.get() + 1));
        Tally {
            owner: None,
            events: 0,
            bytes: 0,
            note: None,
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        DROPPED.with(|c| c.set(c.get() + 1));
    }
}

fn created() -> usize {
    CREATED.with(Cell::get)
}

fn dropped() -> usize {
    DROPPED.with(Cell::get)
}

fn reactor() -> (Reactor<Tally>, SocketAddr) {
    let mut reactor = Reactor::<Tally>::with_attachment(ReactorOptions::default()).unwrap();
    let l = reactor
        .listen("127.0.0.1:0", ListenOptions::new().allow_half_open(true))
        .unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    (reactor, addr)
}

/// Echoes, and answers `events bytes` at the peer's FIN from what the attachment counted.
#[derive(Default)]
struct Counter {
    /// (socket, events, bytes, note) reported by each socket's `Close`.
    closes: Vec<(SocketId, usize, usize, Option<&'static str>)>,
    /// What `attachment_mut` said about the socket the call was about.
    own_lookup: Vec<String>,
}

impl Handler<Tally> for Counter {
    fn on_event(&mut self, cx: &mut Context<Tally>, id: SocketId, t: &mut Tally, e: Event<'_>) {
        // The same attachment, every time, for this socket only.
        assert_eq!(
            *t.owner.get_or_insert(id),
            id,
            "another socket's attachment"
        );
        t.events += 1;
        match e {
            Event::Accepted(_) => {
                self.own_lookup
                    .push(format!("{:?}", cx.attachment_mut(id).map(|_| ())));
            }
            Event::Data(bytes) => t.bytes += bytes.len(),
            Event::End => {
                let answer = format!("{} {}\n", t.events, t.bytes);
                cx.end_with(id, answer.as_bytes()).unwrap();
            }
            Event::Close(_) => self.closes.push((id, t.events, t.bytes, t.note)),
            _ => {}
        }
    }
}

#[test]
fn attachment_follows_its_socket_through_every_event_and_is_dropped_after_close() {
    let (mut reactor, addr) = reactor();
    let mut h = Counter::default();
    let (created0, dropped0) = (created(), dropped());
    let mut peers: Vec<TcpStream> = (0..4).map(|_| peer(addr)).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        // Peer i sends i + 1 chunks of 1000 bytes, each as its own write.
        for _ in 0..=i {
            p.write_all(&[b'x'; 1000]).unwrap();
        }
    }
    for p in &peers {
        p.shutdown(Shutdown::Write).unwrap();
    }
    let mut answers = Vec::new();
    let threads: Vec<_> = peers
        .into_iter()
        .map(|mut p| std::thread::spawn(move || read_to_end(&mut p)))
        .collect();
    run_until(&mut reactor, &mut h, |h, _| h.closes.len() == 4);
    for t in threads {
        let (bytes, ending) = t.join().unwrap();
        assert_eq!(ending, Ending::Fin);
        answers.push(String::from_utf8(bytes).unwrap());
    }
    // Each socket's answer counts its own bytes: attachments were never mixed up.
    let mut totals: Vec<usize> = answers
        .iter()
        .map(|a| a.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    totals.sort_unstable();
    assert_eq!(totals, [1000, 2000, 3000, 4000]);
    // The Close saw the same attachment, with every event counted (the answer was written
    // at `End`; `Finish` and `Close` came after it).
    let mut closed_bytes: Vec<usize> = h.closes.iter().map(|c| c.2).collect();
    closed_bytes.sort_unstable();
    assert_eq!(closed_bytes, [1000, 2000, 3000, 4000]);
    for &(_, events, _, _) in &h.closes {
        assert!(events >= 4, "Accepted, Data, End, Close at least: {events}");
    }
    // The socket an event is about cannot be borrowed twice.
    assert!(
        h.own_lookup.iter().all(|s| s.contains("AttachmentInUse")),
        "{:?}",
        h.own_lookup
    );
    // One attachment per socket, all dropped once the sockets closed.
    assert_eq!(created() - created0, 4);
    assert_eq!(dropped() - dropped0, 4);
    assert_eq!(reactor.context().live_sockets(), 0);
}

#[test]
fn attachment_set_for_a_new_connection_arrives_with_its_first_event() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let mut reactor = Reactor::<Tally>::with_attachment(ReactorOptions::default()).unwrap();
    // Set from outside right after `connect`, seen by the handler from the first event on.
    struct Seen(Vec<Option<&'static str>>);
    impl Handler<Tally> for Seen {
        fn on_event(&mut self, cx: &mut Context<Tally>, id: SocketId, t: &mut Tally, e: Event<'_>) {
            match e {
                Event::Connect => {
                    self.0.push(t.note);
                    cx.end(id).unwrap();
                }
                Event::End | Event::Close(_) => self.0.push(t.note),
                _ => {}
            }
        }
    }
    let id = reactor.connect(up_addr, ConnectOptions::new()).unwrap();
    reactor.context_mut().attachment_mut(id).unwrap().note = Some("partner");
    let (mut accepted, _) = upstream.accept().unwrap();
    let mut seen = Seen(Vec::new());
    run_until(&mut reactor, &mut seen, |s, _| !s.0.is_empty());
    let mut buf = [0; 16];
    assert_eq!(accepted.read(&mut buf).unwrap(), 0, "our FIN");
    drop(accepted);
    run_until(&mut reactor, &mut seen, |s, _| s.0.len() >= 3);
    assert!(seen.0.iter().all(|n| *n == Some("partner")), "{:?}", seen.0);
    let start = Instant::now();
    while reactor.context().live_sockets() > 0 {
        assert!(start.elapsed() < LIMIT);
        reactor
            .run_once(&mut seen, Some(Duration::from_millis(50)))
            .unwrap();
    }
}

#[test]
fn attachment_mut_errors_name_stale_and_destroyed_sockets() {
    let (mut reactor, addr) = reactor();
    let _p = peer(addr);
    let mut h = Counter::default();
    let mut accepted = None;

    struct Grab<'a>(&'a mut Option<SocketId>);
    impl Handler<Tally> for Grab<'_> {
        fn on_event(&mut self, _: &mut Context<Tally>, id: SocketId, _: &mut Tally, e: Event<'_>) {
            if let Event::Accepted(_) = e {
                *self.0 = Some(id);
            }
        }
    }
    run_until(&mut reactor, &mut Grab(&mut accepted), |g, _| g.0.is_some());
    let id = accepted.unwrap();
    let cx = reactor.context_mut();
    assert!(cx.attachment_mut(id).is_ok());
    cx.destroy(id).unwrap();
    assert!(matches!(cx.attachment_mut(id), Err(Error::Destroyed)));
    // The destroy's Close is delivered, the slot is reclaimed: the id is stale.
    reactor
        .run_once(&mut h, Some(Duration::from_millis(10)))
        .unwrap();
    assert!(matches!(
        reactor.context_mut().attachment_mut(id),
        Err(Error::StaleId)
    ));
}

#[test]
fn a_socket_reusing_a_slot_starts_with_a_fresh_attachment() {
    let (mut reactor, addr) = reactor();
    let mut h = Counter::default();
    // First socket: accepted, a note left on it from outside, then it closes.
    let mut first = peer(addr);
    let start = Instant::now();
    let id1 = loop {
        if let Some(&id) = reactor.context().socket_ids().first() {
            break id;
        }
        assert!(start.elapsed() < LIMIT);
        reactor
            .run_once(&mut h, Some(Duration::from_millis(50)))
            .unwrap();
    };
    reactor.context_mut().attachment_mut(id1).unwrap().note = Some("first");
    first.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.closes.len() == 1);
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert_eq!(h.closes[0].3, Some("first"));
    // Second socket: the same slot (the table reuses the freed one), a new generation, and
    // an attachment that knows nothing of the first socket.
    let second = peer(addr);
    let start = Instant::now();
    let id = loop {
        if let Some(&id) = reactor.context().socket_ids().first() {
            break id;
        }
        assert!(start.elapsed() < LIMIT);
        reactor
            .run_once(&mut h, Some(Duration::from_millis(50)))
            .unwrap();
    };
    assert_eq!(id.index(), id1.index(), "the slot was reused");
    assert_ne!(id, id1);
    assert_eq!(reactor.context_mut().attachment_mut(id).unwrap().note, None);
    second.shutdown(Shutdown::Write).unwrap();
    run_until(&mut reactor, &mut h, |h, _| h.closes.len() == 2);
    assert_eq!(h.closes[1].3, None);
}

#[test]
fn shutdown_request_gets_the_sockets_attachment() {
    let (mut reactor, addr) = reactor();
    struct Finisher {
        asked: Vec<(SocketId, usize)>,
        closed: usize,
    }
    impl Handler<Tally> for Finisher {
        fn on_event(&mut self, _: &mut Context<Tally>, _: SocketId, t: &mut Tally, e: Event<'_>) {
            match e {
                Event::Data(bytes) => t.bytes += bytes.len(),
                Event::Close(_) => self.closed += 1,
                _ => {}
            }
        }
        fn on_shutdown_request(&mut self, cx: &mut Context<Tally>, id: SocketId, t: &mut Tally) {
            self.asked.push((id, t.bytes));
            cx.end_with(id, format!("{}\n", t.bytes).as_bytes())
                .unwrap();
        }
    }
    let mut h = Finisher {
        asked: Vec::new(),
        closed: 0,
    };
    let mut p = peer(addr);
    p.write_all(b"12345").unwrap();
    let start = Instant::now();
    while reactor.context().socket_ids().is_empty()
        || reactor
            .context()
            .socket_ids()
            .iter()
            .all(|&id| reactor.context().bytes_read(id).unwrap() < 5)
    {
        assert!(start.elapsed() < LIMIT);
        reactor
            .run_once(&mut h, Some(Duration::from_millis(50)))
            .unwrap();
    }
    reactor.context_mut().shutdown(Duration::from_secs(30));
    run_until(&mut reactor, &mut h, |h, _| !h.asked.is_empty());
    assert_eq!(h.asked[0].1, 5, "the attachment counted what was read");
    p.shutdown(Shutdown::Write).unwrap();
    let (bytes, ending) = read_to_end(&mut p);
    assert_eq!((bytes.as_slice(), ending), (&b"5\n"[..], Ending::Fin));
    run_until(&mut reactor, &mut h, |h, _| h.closed == 1);
}
