//! Shared helpers for the loopback integration tests: a recording handler, a bounded loop
//! runner, and std::net peers that report FIN versus RST.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use finwait::{CloseInfo, Context, Event, Handler, ListenerEvent, ListenerId, Reactor, SocketId};

/// How long any test waits for anything before failing.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Events in a comparable form. Consecutive `Data` of one socket are merged into one entry.
pub fn describe(event: &Event<'_>) -> String {
    match event {
        Event::Accepted(_) => "Accepted".into(),
        Event::Connect => "Connect".into(),
        Event::Data(_) => "Data".into(),
        Event::End => "End".into(),
        Event::Finish => "Finish".into(),
        Event::Drain => "Drain".into(),
        Event::Timeout => "Timeout".into(),
        Event::Error(e) => format!("Error({})", error_name(e)),
        Event::Close(CloseInfo {
            had_error,
            reason,
            unsent,
        }) => format!("Close({had_error}, {reason:?}, {unsent})"),
        _ => format!("{event:?}"),
    }
}

fn error_name(e: &finwait::Error) -> String {
    match e.io_kind() {
        Some(kind) => format!("{kind:?}"),
        None => format!("{e}"),
    }
}

/// A handler that records every event and hands it to a closure that acts on it.
pub struct Recorder<F> {
    pub log: Vec<(SocketId, String)>,
    pub data: HashMap<SocketId, Vec<u8>>,
    pub closed: HashMap<SocketId, CloseInfo>,
    pub listener_log: Vec<(ListenerId, String)>,
    pub on: F,
}

pub fn recorder<F: FnMut(&mut Context, SocketId, &Event<'_>)>(on: F) -> Recorder<F> {
    Recorder {
        log: Vec::new(),
        data: HashMap::new(),
        closed: HashMap::new(),
        listener_log: Vec::new(),
        on,
    }
}

impl<F> Recorder<F> {
    /// The events of one socket, in order.
    pub fn events(&self, id: SocketId) -> Vec<&str> {
        self.log
            .iter()
            .filter(|(s, _)| *s == id)
            .map(|(_, e)| e.as_str())
            .collect()
    }

    /// Every socket that appeared, in order of first event.
    pub fn sockets(&self) -> Vec<SocketId> {
        let mut out: Vec<SocketId> = Vec::new();
        for (id, _) in &self.log {
            if !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }

    pub fn all_closed(&self) -> bool {
        self.sockets().iter().all(|id| self.closed.contains_key(id))
    }
}

impl<F: FnMut(&mut Context, SocketId, &Event<'_>)> Handler for Recorder<F> {
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
        (self.on)(cx, id, &event);
    }

    fn on_listener_event(&mut self, _cx: &mut Context, id: ListenerId, event: ListenerEvent) {
        self.listener_log.push((id, format!("{event:?}")));
    }
}

/// Runs turns until `done` holds, failing the test after [`LIMIT`].
pub fn run_until<A: Default, H: Handler<A>>(
    reactor: &mut Reactor<A>,
    handler: &mut H,
    mut done: impl FnMut(&H, &mut Reactor<A>) -> bool,
) {
    let start = Instant::now();
    while !done(handler, reactor) {
        assert!(start.elapsed() < LIMIT, "timed out waiting for the reactor");
        reactor
            .run_once(handler, Some(Duration::from_millis(50)))
            .expect("run_once");
    }
}

/// Asserts that the reactor holds nothing: every test ends with this.
pub fn assert_no_live_socket(reactor: &Reactor) {
    assert_eq!(reactor.context().live_sockets(), 0, "sockets still live");
}

/// How a peer's read side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `recv` returned 0: a FIN.
    Fin,
    /// `recv` failed with ECONNRESET: an RST.
    Reset,
}

/// Reads until FIN or RST (bounded by [`LIMIT`]) and returns the bytes and how it ended.
pub fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, Ending::Fin),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (out, Ending::Reset),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("peer read failed: {e}"),
        }
    }
}

/// Connects a blocking std peer.
pub fn peer(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("peer connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Sends RST on close.
pub fn reset_on_close(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// Writes everything, returning the error if the connection broke.
pub fn write_all(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    stream.write_all(data)
}

/// Deterministic test payload.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A listening reactor on 127.0.0.1:0.
pub fn server(options: finwait::ListenOptions) -> (Reactor, ListenerId, SocketAddr) {
    let mut reactor = Reactor::new().unwrap();
    let l = reactor.listen("127.0.0.1:0", options).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    (reactor, l, addr)
}
pub mod proc_net;
pub mod process;
