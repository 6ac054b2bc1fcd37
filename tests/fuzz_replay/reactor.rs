//! A whole `finwait::Reactor` over real loopback sockets.
//!
//! One listener; up to 4 peers as non-blocking `std::net` sockets that the input drives
//! (write, read, shut down writing, reset, or simply stall), local calls on the accepted
//! sockets (write, end, destroy_soon, reset_and_destroy, pause, resume, destroy), and loop
//! turns without waiting. At the end every remaining socket is resumed and ended — except
//! those whose peer sent an RST, which must close on their own — the peers read to EOF and
//! shut down, and the loop runs until everything has closed (at most 2 s).
//!
//! Checked: exactly one `Close` per socket and last, `Error` right before it, `End`/`Finish`
//! at most once, no `Data` after `End`; bytes arrive in order both ways (running patterns);
//! when the peer's FIN is reported as `End`, everything the peer wrote has arrived; a socket
//! that closed `Graceful` delivered every byte it accepted to its peer, and `unsent` is never
//! more than what the peer did not get; no socket is left and the process's fd count returns
//! to where it started.
//!
//! Peer resets (B2.7), at any moment — while the local socket is paused, half-closed either
//! way, lingering, with bytes queued (`Config`'s small buffers), or still in the listener's
//! backlog: just before the peer closes with `SO_LINGER{on, 0}` the model reads its TCP state
//! and predicts whether its kernel sends an RST at all ([`close_sends_rst`]), and, for a live
//! socket of ours, waits until the RST has reset it in the kernel. Each RST that reaches a
//! socket that is live then (or accepted later) must be reported as `Error` +
//! `Close(PeerReset)`, with no call from the program after the reset — and, for a socket
//! live at the reset, in the very next loop turn (no deadline may win over it, the listener
//! shutdown's grace included) — unless the program itself closed or ended the socket after
//! the reset (`end`, `destroy_soon`, `destroy`, `reset_and_destroy`, or a listener shutdown,
//! which ends its sockets): then any one `Close` will do. Conversely, `PeerReset` on a
//! socket whose peer sent no RST is a failure. (It cannot come from a genuine `EPIPE`
//! either: a send fails with `EPIPE` without a pending reset only after our own
//! `shutdown(SHUT_WR)` or on a socket the kernel closed without an error, and the reactor
//! never sends after its FIN; the only way an accepted socket of this model is closed by its
//! kernel without a reset error is the exchange of both FINs, after which it sends nothing.)

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use finwait::{
    CloseInfo, CloseReason, Context, Event, Handler, ListenOptions, ListenerEvent, ListenerId,
    Reactor, ReactorOptions, SocketId, State,
};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

const MAX_PEERS: usize = 4;
const MAX_OPS: usize = 96;
/// How long the final drain may take before the run fails.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// With `Config`'s small buffers, the `SO_SNDBUF` of the accepted sockets (set on the
/// listener, whose sockets inherit it) and the `SO_RCVBUF` of the peers. Loopback's autotuned
/// buffers take about 4 MB before a write would block, more than a run can write; with these
/// the kernel takes about 10 KB, and further writes wait in the reactor's queue.
const SMALL_BUFFER: usize = 4096;

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
    /// 2 ms idle timeout on every socket, bit 3 small kernel buffers (see [`SMALL_BUFFER`]),
    /// bit 4 a sibling listener on the same address (`SO_REUSEPORT`, as the members of a
    /// group have): the kernel spreads the peers' connects over both accept queues.
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
    /// The sibling listener (if configured) leaves the group: `shutdown_listener` with a
    /// grace of `grace_ms`, while connects may be in flight to either listener.
    SiblingLeaves { grace_ms: u8 },
}

/// Whether the peer's reset reached its connection while it waited in an accept queue.
fn reset_in_backlog(reset: Option<Reset>) -> bool {
    reset.is_some_and(|r| r.rst && matches!(r.local, LocalAtReset::NotAccepted))
}

/// Byte `i` of what the local side writes.
fn local_byte(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(3) % 251) as u8
}

/// Byte `i` of what a peer writes.
fn peer_byte(i: u64) -> u8 {
    (i % 253) as u8
}

/// Linux TCP states (`include/net/tcp_states.h`), as `tcpi_state` reports them.
mod tcp {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const CLOSING: u8 = 11;
}

/// `TCP_INFO` of a TCP socket.
fn tcp_info(fd: BorrowedFd<'_>) -> libc::tcp_info {
    // SAFETY: `tcp_info` is plain integers, so all zeroes is a valid value; the kernel writes
    // at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is open (borrowed), `info` is live and `len` is its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info
}

/// What closing `stream` with `SO_LINGER{on, 0}` will put on the wire, read just before the
/// close: its TCP state (`TCP_INFO`'s `tcpi_state`) and whether Linux sends RST.
///
/// `__tcp_close` (net/ipv4/tcp.c) sends RST when unread input is thrown away, from any state
/// but `CLOSE`; otherwise the zero linger calls `tcp_disconnect`, which sends RST from the
/// states of `tcp_need_reset` (`ESTABLISHED`, `CLOSE_WAIT`, `FIN_WAIT1`, `FIN_WAIT2`,
/// `SYN_RECV`), and from `CLOSING`/`LAST_ACK` only while part of what was written (our FIN
/// included) is not sent yet. From `CLOSE` — reset already, or both FINs exchanged (the
/// socket behind the fd is `CLOSE` once its `TIME_WAIT` twin took over) — nothing is sent.
fn close_sends_rst(stream: &TcpStream) -> (u8, bool) {
    let info = tcp_info(stream.as_fd());
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one c_int, which `unread` is.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
    let state = info.tcpi_state;
    let rst = match state {
        tcp::CLOSE => false,
        _ if unread > 0 => true,
        tcp::ESTABLISHED | tcp::CLOSE_WAIT | tcp::FIN_WAIT1 | tcp::FIN_WAIT2 | tcp::SYN_RECV => {
            true
        }
        tcp::CLOSING | tcp::LAST_ACK => info.tcpi_notsent_bytes > 0,
        _ => false,
    };
    (state, rst)
}

/// This process's fds, each borrowed for `f` until it returns `Some`.
///
/// Sound because nothing closes an fd while it runs: the run is single-threaded (the replay
/// tests run one at a time), and a number that is not a socket, or the directory's own fd
/// once closed, only makes the socket calls in `f` fail.
fn find_fd<T>(mut f: impl FnMut(BorrowedFd<'_>) -> Option<T>) -> Option<T> {
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        // SAFETY: see above; the borrow ends with `f`'s call.
        if let Some(found) = f(unsafe { BorrowedFd::borrow_raw(fd) }) {
            return Some(found);
        }
    }
    None
}

/// The fd of the reactor's socket from `local` to `peer`: the socket the listener at `local`
/// accepted from the peer at `peer`, if it is not `CLOSE` (Linux gives a `CLOSE` socket no
/// peer address).
fn find_socket(local: SocketAddr, peer: SocketAddr) -> Option<RawFd> {
    find_fd(|fd| {
        let socket = SockRef::from(&fd);
        (socket.local_addr().ok()?.as_socket() == Some(local)
            && socket.peer_addr().ok()?.as_socket() == Some(peer)
            && tcp_info(fd).tcpi_state != tcp::CLOSE)
            .then(|| fd.as_raw_fd())
    })
}

/// Waits (at most 2 s) until the kernel has processed an RST on the reactor's socket `fd`:
/// `tcp_reset` leaves it `CLOSE`. On loopback this happens within the peer's `close`, unless
/// the kernel defers its receive processing to `ksoftirqd`; waiting makes sure the reset is
/// there for the reactor's next poll whatever the load.
fn wait_for_reset(fd: RawFd) -> bool {
    // SAFETY: the reactor keeps `fd` open (the socket is live) and does not run meanwhile.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let started = Instant::now();
    while tcp_info(fd).tcpi_state != tcp::CLOSE {
        if started.elapsed() > Duration::from_secs(2) {
            return false;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    true
}

/// Where the peer's accepted socket was when the peer reset.
#[derive(Debug, Clone, Copy)]
enum LocalAtReset {
    /// Accepted and not destroyed, in this state.
    Live(SocketId, State),
    /// Still in the listener's backlog (it may be accepted later, or never).
    NotAccepted,
    /// Already destroyed: the reset reaches no socket of ours.
    Gone,
}

/// A peer's reset (`PeerReset`), as the model saw it.
#[derive(Debug, Clone, Copy)]
struct Reset {
    /// The operation's index in the input.
    op: usize,
    /// The peer's TCP state just before its close (`tcpi_state`).
    tcp_state: u8,
    /// Whether its kernel sent RST (see [`close_sends_rst`]) to a socket of ours that was
    /// not `CLOSE` already (an RST can only reset a live connection).
    rst: bool,
    local: LocalAtReset,
    /// The loop turns run before the reset: a socket live then reports it in the next one.
    turn: u64,
    /// The program ended or closed the accepted socket after the reset (a local `end`,
    /// `destroy_soon`, `destroy`, `reset_and_destroy`, or a listener shutdown): its `Close`
    /// may then be of any kind.
    closed_by_app: bool,
}

impl Reset {
    /// Whether the RST reached a socket of ours that must report it (if it was ever
    /// accepted, for one still in the backlog).
    fn must_report(&self) -> bool {
        self.rst && !self.closed_by_app && !matches!(self.local, LocalAtReset::Gone)
    }

    fn describe(&self) -> String {
        let local = match self.local {
            LocalAtReset::Live(id, state) => format!("{id} live in {state:?}"),
            LocalAtReset::NotAccepted => "not accepted yet".to_string(),
            LocalAtReset::Gone => "already destroyed".to_string(),
        };
        format!(
            "reset at operation {} after turn {} from TCP state {}, {}, our socket {local}{}",
            self.op,
            self.turn,
            self.tcp_state,
            if self.rst { "RST sent" } else { "no RST sent" },
            if self.closed_by_app {
                ", then ended or closed by the program"
            } else {
                ""
            },
        )
    }
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
    /// The error reported, if any (for failure messages).
    error: Option<String>,
    /// The loop turn that delivered `Close`.
    closed_in_turn: Option<u64>,
    /// A socket mapped to its peer by a guess (see `Rec::guessed`) that the program ended or
    /// closed: after its peer's reset, which came before the accept. Kept on the socket, not
    /// on the guessed peer's `Reset`: the guess may be matched to another peer at the end.
    closed_by_app: bool,
}

#[derive(Default)]
struct Rec {
    /// Peer local addresses, to map accepted sockets to peers.
    peer_addrs: Vec<SocketAddr>,
    /// Accepted connections that came from outside this run (reset at once, then ignored).
    foreign: std::collections::HashSet<SocketId>,
    peer_written: Vec<u64>,
    /// Each peer's reset, once it reset.
    resets: Vec<Option<Reset>>,
    locals: HashMap<SocketId, Local>,
    by_peer: HashMap<usize, SocketId>,
    problems: Vec<String>,
    listener_closes: usize,
    /// Accepted sockets destroyed before their `Accepted` was delivered (see `on_event`).
    unmet: HashSet<SocketId>,
    /// Accepted sockets mapped to a peer by a guess: the peer had reset the connection in
    /// the backlog, so it has no peer address any more. The guess takes the oldest such
    /// peer, which is right for one accept queue (first in, first out) but not for two (a
    /// sibling listener); they are matched again by their bytes at the end.
    guessed: HashSet<SocketId>,
    /// The listener that accepted each local socket.
    listener_of: HashMap<SocketId, ListenerId>,
    /// Loop turns (`run_once` calls) so far, the current one included.
    turns: u64,
}

impl Handler for Rec {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        if let Event::Accepted(_) = event {
            if cx.state(id).is_ok_and(|s| s == finwait::State::Destroyed) {
                // Destroyed before the handler met it: taken off the accept queue when its
                // listener shut down, then destroyed by a grace of 0 in the next turn's
                // timers. Its `Close` follows; with the fd gone there is no peer address to
                // map it by.
                self.unmet.insert(id);
                return;
            }
            // A connection the peer already reset has no peer address any more: it is the
            // oldest peer that reset it from the backlog and is not accepted yet (the
            // backlog is first in, first out).
            let peer = match cx.peer_addr(id) {
                Ok(addr) => self.peer_addrs.iter().position(|a| *a == addr),
                Err(_) => {
                    self.guessed.insert(id);
                    (0..self.peer_addrs.len()).find(|p| {
                        !self.by_peer.contains_key(p) && reset_in_backlog(self.resets[*p])
                    })
                }
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
            if let Event::Accepted(lid) = event {
                self.listener_of.insert(id, lid);
            }
            return;
        }
        if self.foreign.contains(&id) || self.unmet.contains(&id) {
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
                local.closed_in_turn = Some(self.turns);
                format!("Close({:?})", info.reason)
            }
            Event::Error(e) => {
                local.error = Some(format!("{e:?}"));
                "Error".to_string()
            }
            other => format!("{other:?}"),
        };
        local.events.push(name);
    }

    fn on_listener_event(&mut self, _cx: &mut Context, lid: ListenerId, event: ListenerEvent) {
        if let ListenerEvent::Close = event {
            self.listener_closes += 1;
            // B2.12: the listener's Close comes after every socket it accepted has closed.
            // (Found by this target: the listener's Close used to be queued just before
            // its last socket's.)
            for (id, local) in &self.locals {
                if local.close.is_none() && self.listener_of.get(id) == Some(&lid) {
                    self.problems
                        .push(format!("listener Close before {id}'s Close"));
                }
            }
        }
    }
}

/// Sets `SO_SNDBUF` on the reactor's listening socket bound to `addr`, found among this
/// process's fds (the model has no other way to reach it); the sockets it accepts inherit it.
fn shrink_listener_send_buffer(addr: SocketAddr) {
    let found = find_fd(|fd| {
        let socket = SockRef::from(&fd);
        (socket.local_addr().ok()?.as_socket() == Some(addr) && socket.is_listener().ok()?).then(
            || {
                socket
                    .set_send_buffer_size(SMALL_BUFFER)
                    .expect("SO_SNDBUF on the listener")
            },
        )
    });
    assert!(
        found.is_some(),
        "the listening socket {addr} is not among this process's fds"
    );
}

/// A blocking connect to `addr`, with a small `SO_RCVBUF` set before it when `small` (so the
/// window it advertises is small from the start).
fn connect_peer(addr: SocketAddr, small: bool) -> io::Result<TcpStream> {
    if !small {
        return TcpStream::connect(addr);
    }
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_recv_buffer_size(SMALL_BUFFER)?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
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

/// B2.7: an RST that reached the socket is reported as `Error` + `Close(PeerReset)` (exactly
/// once: `check_events` allows one `Close` and one `Error`) — by the very next loop turn when
/// the socket was live at the reset (the model waited for the RST to land, so that turn's poll
/// sees it; no deadline may win over it either) — and `PeerReset` is only ever the report of
/// an RST.
fn check_reset(id: SocketId, local: &Local, reset: Option<&Reset>) {
    let info = local.close.expect("closed");
    let ev = &local.events;
    if let Some(reset) = reset
        && reset.must_report()
        && !local.closed_by_app
    {
        let n = ev.len();
        assert!(
            n >= 2 && ev[n - 2] == "Error" && ev[n - 1] == "Close(PeerReset)",
            "{id}: its peer reset ({}) but it closed with {:?} (error {:?}, events {ev:?})",
            reset.describe(),
            info.reason,
            local.error,
        );
        if let LocalAtReset::Live(..) = reset.local {
            assert_eq!(
                local.closed_in_turn,
                Some(reset.turn + 1),
                "{id}: its peer reset ({}) and it was not closed in the next turn (events {ev:?})",
                reset.describe(),
            );
        }
    }
    if info.reason == CloseReason::PeerReset {
        assert!(
            reset.is_some_and(|r| r.rst),
            "{id}: Close(PeerReset) but its peer sent no RST ({}; error {:?}, events {ev:?})",
            reset.map_or("no reset".to_string(), Reset::describe),
            local.error,
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
        .idle_timeout((limits & 4 != 0).then(|| Duration::from_millis(2)))
        .reuse_port(limits & 16 != 0);
    let listener = r.listen("127.0.0.1:0", listen.clone()).expect("listen");
    let addr = r.listener_addr(listener).expect("listener address");
    let sibling = (limits & 16 != 0).then(|| r.listen(addr, listen).expect("sibling listen"));
    let small_buffers = limits & 8 != 0;
    if small_buffers {
        shrink_listener_send_buffer(addr);
    }
    let mut h = Rec::default();
    let mut peers: Vec<Peer> = Vec::new();

    for (at, op) in ops.iter().enumerate().skip(start).take(MAX_OPS) {
        match *op {
            Operation::Config { .. } => {}
            Operation::PeerConnect => {
                if peers.len() >= MAX_PEERS {
                    continue;
                }
                // Loopback connects complete in the kernel before any accept; a failure
                // (ephemeral ports exhausted) just skips the peer.
                let Ok(stream) = connect_peer(addr, small_buffers) else {
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
                h.resets.push(None);
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
                    let local = match h.by_peer.get(&i) {
                        None => LocalAtReset::NotAccepted,
                        Some(&id) => match r.context().state(id) {
                            Ok(State::Destroyed) | Err(_) => LocalAtReset::Gone,
                            Ok(state) => LocalAtReset::Live(id, state),
                        },
                    };
                    // A live socket of ours has an open fd, found by its addresses — unless
                    // it is `CLOSE` already (both FINs exchanged), which has no peer address
                    // any more and cannot be reset either.
                    let local_fd = match local {
                        LocalAtReset::Live(..) => find_socket(addr, peers[i].addr),
                        _ => None,
                    };
                    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    let (tcp_state, sent) = close_sends_rst(&stream);
                    drop(stream);
                    let rst = sent
                        && match local {
                            LocalAtReset::Live(..) => local_fd.is_some(),
                            _ => true,
                        };
                    let reset = Reset {
                        op: at,
                        tcp_state,
                        rst,
                        local,
                        turn: h.turns,
                        closed_by_app: false,
                    };
                    if rst && let Some(fd) = local_fd {
                        assert!(
                            wait_for_reset(fd),
                            "peer {i}'s RST did not reset our socket in 2 s ({})",
                            reset.describe()
                        );
                    }
                    h.resets[i] = Some(reset);
                }
            }
            Operation::Local { peer, call } => {
                let Some(i) = pick(&peers, peer) else {
                    continue;
                };
                let Some(&id) = h.by_peer.get(&i) else {
                    continue;
                };
                let closing = match call {
                    LocalCall::Write { len } => {
                        let local = h.locals.get_mut(&id).expect("known local");
                        let len = u64::from(len % 8192);
                        let data: Vec<u8> =
                            (0..len).map(|k| local_byte(local.written + k)).collect();
                        if r.context_mut().write(id, &data).is_ok() {
                            local.written += len;
                        }
                        false
                    }
                    LocalCall::End => r.context_mut().end(id).is_ok(),
                    LocalCall::DestroySoon => r.context_mut().destroy_soon(id).is_ok(),
                    LocalCall::ResetAndDestroy => r.context_mut().reset_and_destroy(id).is_ok(),
                    LocalCall::Pause => {
                        let _ = r.context_mut().pause(id);
                        false
                    }
                    LocalCall::Resume => {
                        let _ = r.context_mut().resume(id);
                        false
                    }
                    LocalCall::Destroy => r.context_mut().destroy(id).is_ok(),
                };
                if closing && h.guessed.contains(&id) {
                    if let Some(local) = h.locals.get_mut(&id) {
                        local.closed_by_app = true;
                    }
                } else if closing && let Some(reset) = &mut h.resets[i] {
                    reset.closed_by_app = true;
                }
            }
            Operation::ShutdownListener { grace_ms } => {
                let grace = Duration::from_millis(u64::from(grace_ms % 100));
                // It ends every socket of the listener: a reset already there may then be
                // overtaken by that `end` (a graceful close at once after the peer's FIN).
                if r.context_mut().shutdown_listener(listener, grace).is_ok() {
                    for reset in h.resets.iter_mut().flatten() {
                        reset.closed_by_app = true;
                    }
                }
            }
            Operation::CloseListener => drop(r.context_mut().close_listener(listener)),
            Operation::SiblingLeaves { grace_ms } => {
                let grace = Duration::from_millis(u64::from(grace_ms % 100));
                if let Some(sibling) = sibling
                    && r.context_mut().shutdown_listener(sibling, grace).is_ok()
                {
                    for reset in h.resets.iter_mut().flatten() {
                        reset.closed_by_app = true;
                    }
                }
            }
            Operation::Run => turn(&mut r, &mut h, Duration::ZERO),
        }
        assert!(h.problems.is_empty(), "handler saw: {:#?}", h.problems);
    }

    // Drain: end everything, peers read to EOF and answer with their FIN. A socket whose
    // peer sent an RST is left alone: the reset alone must close it (B2.7).
    let started = Instant::now();
    let mut ended: HashSet<SocketId> = HashSet::new();
    loop {
        for id in r.context().socket_ids() {
            // A connection taken off the accept queue when the listener closed exists before
            // its `Accepted` is delivered: end it once the handler has met it.
            if !h.locals.contains_key(&id) {
                continue;
            }
            let reset_by_peer = h
                .locals
                .get(&id)
                .and_then(|l| h.resets[l.peer])
                .is_some_and(|reset| reset.rst);
            if !reset_by_peer && ended.insert(id) {
                let _ = r.context_mut().resume(id);
                let _ = r.context_mut().end(id);
            }
        }
        turn(&mut r, &mut h, Duration::from_millis(1));
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
        if r.context().live_sockets() == 0 && peers.iter().all(Peer::done) {
            break;
        }
        if started.elapsed() > DRAIN_LIMIT {
            let states: Vec<_> = r
                .context()
                .socket_ids()
                .iter()
                .map(|&id| (id, r.context().state(id)))
                .collect();
            let peer_states: Vec<_> = peers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let local = h.by_peer.get(&i).and_then(|id| h.locals.get(id));
                    format!(
                        "peer {i}: done {} eof {} shut {} err {:?} wrote {} got {} open {} reset {:?} local {:?}",
                        p.done(),
                        p.eof,
                        p.shut,
                        p.read_error,
                        p.written,
                        p.received,
                        p.stream.is_some(),
                        h.resets[i].as_ref().map(Reset::describe),
                        local.map(|l| &l.events)
                    )
                })
                .collect();
            panic!(
                "drain did not finish in {DRAIN_LIMIT:?}: live sockets {states:?}, listeners {}, peers {peer_states:#?}",
                r.context().live_listeners()
            );
        }
    }

    // B2.13: a closing listener takes its accept queue first, so every peer that connected
    // while it listened — and did not reset itself — was accepted and served, not reset by
    // the close (or destroyed by a grace of 0 before the handler met it: `unmet`).
    let unaccepted = (0..peers.len())
        .filter(|i| h.resets[*i].is_none() && !h.by_peer.contains_key(i))
        .count();
    assert!(
        unaccepted <= h.unmet.len(),
        "{unaccepted} peers connected but were never accepted (lost in an accept queue)"
    );

    // Sockets mapped by a guess, among the peers that reset in the backlog and were not
    // recognised by address: the peers' pattern is the same, so only how much each wrote
    // tells them apart. Taking the sockets from the most received down, each gets the
    // candidate that wrote the least that is still enough: a consistent matching whenever
    // one exists (the true one does). Peers that wrote as much are interchangeable for every
    // check below (all of them reset before being accepted).
    let mut guessed: Vec<SocketId> = h
        .guessed
        .iter()
        .copied()
        .filter(|id| h.locals.contains_key(id))
        .collect();
    guessed.sort_by_key(|id| std::cmp::Reverse(h.locals[id].received));
    let recognised: HashSet<usize> = h
        .by_peer
        .iter()
        .filter(|(_, id)| !h.guessed.contains(id))
        .map(|(&p, _)| p)
        .collect();
    let mut candidates: Vec<usize> = (0..peers.len())
        .filter(|p| !recognised.contains(p) && reset_in_backlog(h.resets[*p]))
        .collect();
    for id in guessed {
        let received = h.locals[&id].received;
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, p)| peers[**p].written >= received)
            .min_by_key(|(_, p)| peers[**p].written)
            .map(|(i, _)| i);
        if let Some(i) = best {
            let peer = candidates.swap_remove(i);
            if let Some(local) = h.locals.get_mut(&id) {
                local.peer = peer;
            }
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
        check_reset(id, local, h.resets[local.peer].as_ref());
        if info.reason == CloseReason::Graceful && h.resets[local.peer].is_none() {
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
    assert_eq!(r.context().live_sockets(), 0);
    let _ = r.context_mut().close_listener(listener); // may be closed already
    if let Some(sibling) = sibling {
        let _ = r.context_mut().close_listener(sibling);
    }
    turn(&mut r, &mut h, Duration::ZERO);
    turn(&mut r, &mut h, Duration::ZERO);
    assert_eq!(r.context().live_listeners(), 0, "listener not reclaimed");
    assert_eq!(
        h.listener_closes,
        1 + usize::from(sibling.is_some()),
        "listener Close events"
    );
    assert!(h.problems.is_empty(), "handler saw: {:#?}", h.problems);
    drop(r);
    drop(peers);
}

/// One loop turn, counted.
fn turn(r: &mut Reactor, h: &mut Rec, timeout: Duration) {
    h.turns += 1;
    r.run_once(h, Some(timeout)).expect("run_once");
}

fn pick(peers: &[Peer], n: u8) -> Option<usize> {
    if peers.is_empty() {
        None
    } else {
        Some(usize::from(n) % peers.len())
    }
}
