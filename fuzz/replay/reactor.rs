//! A whole `finwait::Reactor` over real loopback sockets.
//!
//! One listener; up to 4 peers as non-blocking `std::net` sockets that the input drives
//! (write, read, shut down writing, reset, or simply stall), local calls on the accepted
//! sockets (write, end, destroy_soon, reset_and_destroy, pause, resume, destroy), and loop
//! turns without waiting. At the end every remaining socket is resumed and ended, the peers
//! read to EOF and shut down, and the loop runs until everything has closed (at most 2 s).
//!
//! Checked: exactly one `Close` per socket and last, `Error` right before it, `End`/`Finish`
//! at most once, no `Data` after `End`; bytes arrive in order both ways (running patterns);
//! when the peer's FIN is reported as `End`, everything the peer wrote has arrived; a socket
//! that closed `Graceful` delivered every byte it accepted to its peer, and `unsent` is never
//! more than what the peer did not get; no socket is left and the process's fd count returns
//! to where it started.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use finwait::{
    CloseInfo, CloseReason, Context, Event, Handler, ListenOptions, ListenerEvent, ListenerId,
    Reactor, ReactorOptions, SocketId,
};

const MAX_PEERS: usize = 4;
const MAX_OPS: usize = 96;
/// How long the final drain may take before the run fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// A call on the accepted socket of one peer.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum LocalCall {
    Write { len: u16 },
    End,
    DestroySoon,
    ResetAndDestroy,
    Pause,
    Resume,
    Destroy,
}

#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum Operation {
    /// Only as the first operation: the listener's `allow_half_open`, a high-water mark of
    /// `1 + hwm * 64` bytes, and `limits`: bits 0-1 `max_connections` (0: none), bit 2 a
    /// 2 ms idle timeout on every socket.
    Config {
        allow_half_open: bool,
        hwm: u8,
        limits: u8,
    },
    /// A new peer connects (at most 4 per run).
    PeerConnect,
    /// The peer writes up to `len` pattern bytes (less if its send buffer is full).
    PeerWrite { peer: u8, len: u16 },
    /// The peer reads up to `max` bytes.
    PeerRead { peer: u8, max: u16 },
    /// The peer shuts down its writing side (FIN).
    PeerShutdown { peer: u8 },
    /// The peer closes with `SO_LINGER{on, 0}`: RST.
    PeerReset { peer: u8 },
    /// A call on the peer's accepted socket (if accepted yet).
    Local { peer: u8, call: LocalCall },
    /// One loop turn without waiting.
    Run,
    /// `shutdown_listener` with a grace of `grace_ms`: the listener closes, its sockets end,
    /// stragglers are destroyed after the grace.
    ShutdownListener { grace_ms: u8 },
    /// `close_listener`: new connects are refused, accepted sockets are left alone.
    CloseListener,
}

/// Byte `i` of what the local side writes.
fn local_byte(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(3) % 251) as u8
}

/// Byte `i` of what a peer writes.
fn peer_byte(i: u64) -> u8 {
    (i % 253) as u8
}

struct Peer {
    stream: Option<TcpStream>,
    addr: SocketAddr,
    written: u64,
    received: u64,
    eof: bool,
    shut: bool,
    read_error: Option<io::ErrorKind>,
}

impl Peer {
    /// Reads up to `max` bytes (until WouldBlock), checking the local side's pattern.
    fn read(&mut self, max: usize) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut left = max;
        while left > 0 && !self.eof && self.read_error.is_none() {
            let want = left.min(buf.len());
            match stream.read(&mut buf[..want]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    for (k, &b) in buf[..n].iter().enumerate() {
                        let at = self.received + k as u64;
                        assert_eq!(
                            b,
                            local_byte(at),
                            "peer {}: byte {at} out of order or corrupt",
                            self.addr
                        );
                    }
                    self.received += n as u64;
                    left -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.read_error = Some(e.kind()),
            }
        }
    }

    fn done(&self) -> bool {
        self.stream.is_none() || self.read_error.is_some() || (self.eof && self.shut)
    }
}

#[derive(Default, Debug)]
struct Local {
    peer: usize,
    /// Bytes `write` accepted (returned `Ok`).
    written: u64,
    /// Bytes delivered as `Data`.
    received: u64,
    events: Vec<String>,
    close: Option<CloseInfo>,
    /// What the peer had written when `End` was delivered.
    peer_written_at_end: Option<u64>,
    received_at_end: Option<u64>,
}

#[derive(Default)]
struct Rec {
    /// Peer local addresses, to map accepted sockets to peers.
    peer_addrs: Vec<SocketAddr>,
    /// Accepted connections that came from outside this run (reset at once, then ignored).
    foreign: std::collections::HashSet<SocketId>,
    peer_written: Vec<u64>,
    peer_reset: Vec<bool>,
    locals: HashMap<SocketId, Local>,
    by_peer: HashMap<usize, SocketId>,
    problems: Vec<String>,
    listener_closes: usize,
}

impl Handler for Rec {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, event: Event<'_>) {
        if let Event::Accepted(_) = event {
            // A connection the peer already reset has no peer address any more: it is the
            // oldest reset peer not accepted yet (the backlog is first in, first out).
            let peer = match cx.peer_addr(id) {
                Ok(addr) => self.peer_addrs.iter().position(|a| *a == addr),
                Err(_) => (0..self.peer_addrs.len())
                    .find(|p| self.peer_reset[*p] && !self.by_peer.contains_key(p)),
            };
            let Some(peer) = peer else {
                match cx.peer_addr(id) {
                    // A connection from outside this run: another process on this machine
                    // (a second fuzzer, a test) whose peer aimed at a port that used to be
                    // its own listener's and is ours now. Not ours to judge: reset it.
                    Ok(_) => {
                        self.foreign.insert(id);
                        let _ = cx.reset_and_destroy(id);
                    }
                    Err(e) => self
                        .problems
                        .push(format!("{id}: accepted from an unknown peer ({e})")),
                }
                return;
            };
            if self.by_peer.insert(peer, id).is_some() {
                self.problems.push(format!("peer {peer} accepted twice"));
            }
            let local = Local {
                peer,
                events: vec!["Accepted".into()],
                ..Local::default()
            };
            self.locals.insert(id, local);
            return;
        }
        if self.foreign.contains(&id) {
            return;
        }
        let Some(local) = self.locals.get_mut(&id) else {
            self.problems
                .push(format!("{id}: {event:?} before Accepted"));
            return;
        };
        if local.close.is_some() {
            self.problems.push(format!("{id}: {event:?} after Close"));
        }
        let name = match &event {
            Event::Data(bytes) => {
                for (k, &b) in bytes.iter().enumerate() {
                    let at = local.received + k as u64;
                    if b != peer_byte(at) {
                        self.problems
                            .push(format!("{id}: received byte {at} out of order or corrupt"));
                        break;
                    }
                }
                local.received += bytes.len() as u64;
                "Data".to_string()
            }
            Event::End => {
                local.peer_written_at_end = Some(self.peer_written[local.peer]);
                local.received_at_end = Some(local.received);
                "End".to_string()
            }
            Event::Close(info) => {
                local.close = Some(*info);
                format!("Close({:?})", info.reason)
            }
            Event::Error(_) => "Error".to_string(),
            other => format!("{other:?}"),
        };
        local.events.push(name);
    }

    fn on_listener_event(&mut self, _cx: &mut Context, _: ListenerId, event: ListenerEvent) {
        if let ListenerEvent::Close = event {
            self.listener_closes += 1;
            // B2.12: the listener's Close comes after every socket it accepted has closed.
            // (Found by this target: the listener's Close used to be queued just before
            // its last socket's.)
            for (id, local) in &self.locals {
                if local.close.is_none() {
                    self.problems
                        .push(format!("listener Close before {id}'s Close"));
                }
            }
        }
    }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn check_events(id: SocketId, local: &Local) {
    let ev = &local.events;
    let count = |name: &str| ev.iter().filter(|e| e.as_str() == name).count();
    let closes = ev.iter().filter(|e| e.starts_with("Close")).count();
    assert_eq!(closes, 1, "{id}: {closes} Close events: {ev:?}");
    assert!(
        ev.last().is_some_and(|e| e.starts_with("Close")),
        "{id}: Close not last: {ev:?}"
    );
    assert!(count("Error") <= 1, "{id}: more than one Error: {ev:?}");
    if let Some(i) = ev.iter().position(|e| e == "Error") {
        assert_eq!(
            i + 2,
            ev.len(),
            "{id}: Error not right before Close: {ev:?}"
        );
    }
    assert!(
        count("End") <= 1 && count("Finish") <= 1,
        "{id}: End/Finish twice: {ev:?}"
    );
    if let Some(end) = ev.iter().position(|e| e == "End") {
        assert!(
            !ev[end..].iter().any(|e| e == "Data"),
            "{id}: Data after End: {ev:?}"
        );
    }
    let info = local.close.expect("close info");
    assert_eq!(
        info.had_error,
        count("Error") == 1,
        "{id}: had_error vs Error event: {ev:?}"
    );
    if info.reason == CloseReason::Graceful {
        assert_eq!(info.unsent, 0, "{id}: graceful close with unsent bytes");
        assert_eq!(
            count("Finish"),
            1,
            "{id}: graceful close without Finish: {ev:?}"
        );
    }
}

pub fn replay(ops: &[Operation]) {
    let fds_before = fd_count();
    run(ops);
    let fds_after = fd_count();
    assert_eq!(
        fds_after, fds_before,
        "file descriptors leaked: {fds_before} before, {fds_after} after"
    );
}

fn run(ops: &[Operation]) {
    let (allow_half_open, high_water_mark, limits, start) = match ops.first() {
        Some(&Operation::Config {
            allow_half_open,
            hwm,
            limits,
        }) => (allow_half_open, 1 + usize::from(hwm) * 64, limits, 1),
        _ => (false, 16 * 1024, 0, 0),
    };
    let options = ReactorOptions::new()
        .fin_wait(Some(Duration::from_millis(50)))
        .linger(Duration::from_millis(50));
    let mut r = Reactor::with_options(options).expect("reactor");
    let listen = ListenOptions::new()
        .allow_half_open(allow_half_open)
        .high_water_mark(high_water_mark)
        .max_connections(match limits & 3 {
            0 => None,
            n => Some(usize::from(n)),
        })
        .idle_timeout((limits & 4 != 0).then(|| Duration::from_millis(2)));
    let listener = r
        .listen("127.0.0.1:0".parse().unwrap(), listen)
        .expect("listen");
    let addr = r.listener_addr(listener).expect("listener address");
    let mut h = Rec::default();
    let mut peers: Vec<Peer> = Vec::new();

    for op in ops.iter().skip(start).take(MAX_OPS) {
        match *op {
            Operation::Config { .. } => {}
            Operation::PeerConnect => {
                if peers.len() >= MAX_PEERS {
                    continue;
                }
                // Loopback connects complete in the kernel before any accept; a failure
                // (ephemeral ports exhausted) just skips the peer.
                let Ok(stream) = TcpStream::connect(addr) else {
                    continue;
                };
                let peer_addr = stream.local_addr().expect("peer address");
                // Once the listener is closed its port is free, and a connect to it can pick
                // that very port as its own: TCP self-connect, a socket talking to itself
                // that never sees EOF (found by this target). That is no peer of ours.
                if stream.peer_addr().ok() == Some(peer_addr) {
                    continue;
                }
                stream.set_nonblocking(true).expect("nonblocking peer");
                h.peer_addrs.push(peer_addr);
                h.peer_written.push(0);
                h.peer_reset.push(false);
                peers.push(Peer {
                    stream: Some(stream),
                    addr: peer_addr,
                    written: 0,
                    received: 0,
                    eof: false,
                    shut: false,
                    read_error: None,
                });
            }
            Operation::PeerWrite { peer, len } => {
                let Some(i) = pick(&peers, peer) else {
                    continue;
                };
                let p = &mut peers[i];
                let Some(stream) = &mut p.stream else {
                    continue;
                };
                if p.shut {
                    continue;
                }
                let data: Vec<u8> = (0..u64::from(len % 16384))
                    .map(|k| peer_byte(p.written + k))
                    .collect();
                // WouldBlock, or the connection is gone: nothing written.
                if let Ok(n) = stream.write(&data) {
                    p.written += n as u64;
                }
                h.peer_written[i] = p.written;
            }
            Operation::PeerRead { peer, max } => {
                let Some(i) = pick(&peers, peer) else {
                    continue;
                };
                peers[i].read(usize::from(max));
            }
            Operation::PeerShutdown { peer } => {
                let Some(i) = pick(&peers, peer) else {
                    continue;
                };
                let p = &mut peers[i];
                if let Some(stream) = &p.stream
                    && !p.shut
                {
                    let _ = stream.shutdown(Shutdown::Write);
                    p.shut = true;
                }
            }
            Operation::PeerReset { peer } => {
                let Some(i) = pick(&peers, peer) else {
                    continue;
                };
                if let Some(stream) = peers[i].stream.take() {
                    h.peer_reset[i] = true;
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    drop(stream);
                }
            }
            Operation::Local { peer, call } => {
                let Some(i) = pick(&peers, peer) else {
                    continue;
                };
                let Some(&id) = h.by_peer.get(&i) else {
                    continue;
                };
                match call {
                    LocalCall::Write { len } => {
                        let local = h.locals.get_mut(&id).expect("known local");
                        let len = u64::from(len % 8192);
                        let data: Vec<u8> =
                            (0..len).map(|k| local_byte(local.written + k)).collect();
                        if r.write(id, &data).is_ok() {
                            local.written += len;
                        }
                    }
                    LocalCall::End => drop(r.end(id)),
                    LocalCall::DestroySoon => drop(r.destroy_soon(id)),
                    LocalCall::ResetAndDestroy => drop(r.reset_and_destroy(id)),
                    LocalCall::Pause => drop(r.pause(id)),
                    LocalCall::Resume => drop(r.resume(id)),
                    LocalCall::Destroy => drop(r.destroy(id)),
                }
            }
            Operation::ShutdownListener { grace_ms } => {
                let grace = Duration::from_millis(u64::from(grace_ms % 100));
                let _ = r.shutdown_listener(listener, grace);
            }
            Operation::CloseListener => drop(r.close_listener(listener)),
            Operation::Run => r.run_once(&mut h, Some(Duration::ZERO)).expect("run_once"),
        }
        assert!(h.problems.is_empty(), "handler saw: {:#?}", h.problems);
    }

    // Drain: end everything, peers read to EOF and answer with their FIN.
    let started = Instant::now();
    let mut ended: HashSet<SocketId> = HashSet::new();
    loop {
        for id in r.socket_ids() {
            if ended.insert(id) {
                let _ = r.resume(id);
                let _ = r.end(id);
            }
        }
        r.run_once(&mut h, Some(Duration::from_millis(1)))
            .expect("run_once");
        assert!(h.problems.is_empty(), "handler saw: {:#?}", h.problems);
        for p in &mut peers {
            p.read(usize::MAX);
            if p.eof
                && !p.shut
                && let Some(stream) = &p.stream
            {
                let _ = stream.shutdown(Shutdown::Write);
                p.shut = true;
            }
        }
        // A peer not accepted yet is not done: it sees EOF only after its socket closed (or
        // a reset when the listener closed with it in the backlog).
        if r.live_sockets() == 0 && peers.iter().all(Peer::done) {
            break;
        }
        if started.elapsed() > DRAIN_LIMIT {
            let states: Vec<_> = r.socket_ids().iter().map(|&id| (id, r.state(id))).collect();
            let peer_states: Vec<_> = peers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let local = h.by_peer.get(&i).and_then(|id| h.locals.get(id));
                    format!(
                        "peer {i}: done {} eof {} shut {} err {:?} wrote {} got {} open {} local {:?}",
                        p.done(),
                        p.eof,
                        p.shut,
                        p.read_error,
                        p.written,
                        p.received,
                        p.stream.is_some(),
                        local.map(|l| &l.events)
                    )
                })
                .collect();
            panic!(
                "drain did not finish in {DRAIN_LIMIT:?}: live sockets {states:?}, listeners {}, peers {peer_states:#?}",
                r.live_listeners()
            );
        }
    }

    for (&id, local) in &h.locals {
        check_events(id, local);
        let p = &peers[local.peer];
        let info = local.close.expect("closed");
        assert!(
            p.received <= local.written,
            "{id}: peer got more than was written"
        );
        assert!(
            p.received <= local.written - info.unsent as u64,
            "{id}: unsent {} but the peer got {} of {} bytes",
            info.unsent,
            p.received,
            local.written
        );
        // A peer that reset its own socket may drop what it had not read yet, also after our
        // side closed gracefully (found by this target): only peers that read to the end
        // must have everything.
        if info.reason == CloseReason::Graceful && !h.peer_reset[local.peer] {
            assert_eq!(
                p.received, local.written,
                "{id}: closed Graceful but its peer got {} of {} bytes (events {:?})",
                p.received, local.written, local.events
            );
        }
        if let (Some(peer_written), Some(received)) =
            (local.peer_written_at_end, local.received_at_end)
        {
            assert_eq!(
                received, peer_written,
                "{id}: End before all the peer's data"
            );
        }
        assert!(
            local.received <= p.written,
            "{id}: received more than the peer wrote"
        );
    }
    assert_eq!(r.live_sockets(), 0);
    let _ = r.close_listener(listener); // may be closed already
    r.run_once(&mut h, Some(Duration::ZERO)).expect("run_once");
    r.run_once(&mut h, Some(Duration::ZERO)).expect("run_once");
    assert_eq!(r.live_listeners(), 0, "listener not reclaimed");
    assert_eq!(h.listener_closes, 1, "listener Close events");
    assert!(h.problems.is_empty(), "handler saw: {:#?}", h.problems);
    drop(r);
    drop(peers);
}

fn pick(peers: &[Peer], n: u8) -> Option<usize> {
    if peers.is_empty() {
        None
    } else {
        Some(usize::from(n) % peers.len())
    }
}
