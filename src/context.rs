//! [`Context`]: everything a program can do to sockets and listeners, from inside a handler
//! or from outside the loop.
//!
//! Calls apply at once to the socket (a write may go straight to the kernel) but never call
//! the handler: the events they cause are queued and delivered by the loop after the current
//! handler returns (no re-entrancy).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};
use slab::Slab;

use crate::error::{Error, Result};
use crate::event::{Deadline, Event, ListenerEvent, ReadyState};
use crate::id::{ListenerId, SocketId, TokenKind, next_generation};
use crate::options::{ConnectOptions, ListenOptions};
use crate::state::{Action, Actions, Conn, State};
use crate::sys;
use crate::timers::{Clock, TimerId, Timers};
use crate::write_queue::MAX_SLICES;

/// One socket: the machine plus the I/O facts only the reactor knows.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) stream: Option<TcpStream>,
    pub(crate) conn: Conn,
    pub(crate) listener: Option<ListenerId>,
    /// Cached edge-triggered readiness: set by events, cleared only when the kernel says
    /// `WouldBlock` (or a short read / partial write proves the buffer ran dry / full).
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// epoll reported the peer's FIN or RST: keep reading past a short read to see it.
    pub(crate) read_closed: bool,
    /// epoll reported an error (EPOLLERR): an EOF may hide a reset, check `SO_ERROR`.
    pub(crate) error_hint: bool,
    /// Already in the reactor's list of sockets to service this turn.
    pub(crate) scheduled: bool,
    /// The idle timer (`set_timeout`), if armed.
    pub(crate) idle: Option<TimerId>,
    /// The one deadline a state can have at a time (connect, FIN wait, linger).
    pub(crate) deadline: Option<TimerId>,
}

#[derive(Debug)]
pub(crate) struct ListenerSlot {
    pub(crate) listener: Option<TcpListener>,
    pub(crate) options: ListenOptions,
    /// Accepted sockets not yet closed.
    pub(crate) connections: usize,
    /// In this turn's list of listeners to accept from.
    pub(crate) scheduled: bool,
    /// Whether the poller reports this listener (it is registered level-triggered and
    /// silenced while it must leave connections in the backlog; see `sys::register_listener`).
    pub(crate) interested: bool,
    /// Accepting is paused after fd exhaustion until this retry timer fires.
    pub(crate) backoff: Option<TimerId>,
    /// A graceful shutdown of this listener is running.
    pub(crate) shutting_down: bool,
}

impl ListenerSlot {
    /// At `max_connections`: further connections are left in the kernel backlog.
    pub(crate) fn is_full(&self) -> bool {
        self.options
            .max_connections
            .is_some_and(|max| self.connections >= max)
    }
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKey {
    Idle(SocketId),
    Deadline(SocketId, Deadline),
    /// The grace period of a shutdown: of one listener, or of the whole reactor.
    Shutdown(Option<ListenerId>),
    /// Try accepting again after running out of file descriptors.
    AcceptRetry(ListenerId),
}

/// Reactor-wide settings.
///
/// ```
/// use finwait::ReactorOptions;
/// use std::time::Duration;
/// let opts = ReactorOptions::new().fin_wait(Some(Duration::from_secs(5)));
/// assert_eq!(opts.fin_wait, Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReactorOptions {
    /// After `end()`, how long the socket may go without progress — no byte flushed, no byte
    /// read, no FIN from the peer — before it is destroyed with
    /// [`CloseReason::Deadline`](crate::CloseReason::Deadline)`(FinWait)` (default 30 s).
    /// This bounds both a peer that never sends its FIN and one that never reads what we
    /// flush, while a slow but moving transfer is never cut. `None` waits forever, as Node
    /// does — a socket whose peer vanished then holds its fd for good.
    pub fin_wait: Option<Duration>,
    /// How long `destroy_soon` may take in all — flush, FIN, wait for the peer's FIN —
    /// before the socket is destroyed (default 5 s).
    pub linger: Duration,
    /// How long accepting pauses after the process ran out of file descriptors (default
    /// 100 ms): long enough not to spin, short enough to serve again soon after fds free up.
    pub accept_retry: Duration,
    /// How many bytes one socket may read in one turn before the other ready sockets get
    /// their go (default 8 MiB, at least 1: one read per turn).
    ///
    /// This is the trade between bulk throughput and fairness. A socket whose peer streams
    /// without pause is read in long runs while the data is still in cache and its peer is
    /// still busy writing; cutting the runs short makes both ends sleep and wake far more
    /// often (on loopback a 256 KiB budget cost about 25 % more CPU per byte with 16
    /// streaming connections, see BENCHMARKS.md). A smaller budget bounds how long a busy
    /// stream can delay the others: roughly `read_budget` / (a few GiB/s) per ready socket
    /// per turn.
    pub read_budget: usize,
}

impl Default for ReactorOptions {
    fn default() -> Self {
        ReactorOptions {
            fin_wait: Some(Duration::from_secs(30)),
            linger: Duration::from_secs(5),
            accept_retry: Duration::from_millis(100),
            read_budget: 8 << 20,
        }
    }
}

impl ReactorOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`fin_wait`](Self::fin_wait); zero is treated as `None`.
    pub fn fin_wait(mut self, wait: Option<Duration>) -> Self {
        self.fin_wait = wait.filter(|d| !d.is_zero());
        self
    }
    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
    /// Sets [`accept_retry`](Self::accept_retry), at least 1 ms (zero would spin).
    pub fn accept_retry(mut self, retry: Duration) -> Self {
        self.accept_retry = retry.max(Duration::from_millis(1));
        self
    }
    /// Sets [`read_budget`](Self::read_budget), at least 1 byte (zero would never read).
    ///
    /// ```
    /// use finwait::ReactorOptions;
    /// // Latency-sensitive sockets share the loop with bulk streams: shorter runs.
    /// let opts = ReactorOptions::new().read_budget(512 * 1024);
    /// assert_eq!(opts.read_budget, 512 * 1024);
    /// assert_eq!(ReactorOptions::new().read_budget(0).read_budget, 1);
    /// ```
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes.max(1);
        self
    }
}

/// A graceful shutdown in progress for the whole reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownPhase {
    Running,
    /// Listeners closed, connections ended; waiting for them to close.
    Draining,
    /// Everything closed; `on_shutdown_complete` delivered.
    Complete,
}

/// A queued event, delivered in order after the current handler returns.
#[derive(Debug)]
pub(crate) enum Queued {
    Socket(SocketId, Event<'static>),
    Listener(ListenerId, ListenerEvent),
}

/// The reactor's state that handlers act on: sockets, listeners, the event queue.
///
/// Every method taking an id checks it: an id whose socket was reclaimed gives
/// [`Error::StaleId`]; a socket destroyed earlier in the same batch gives
/// [`Error::Destroyed`]. Nothing here panics on a bad id.
#[derive(Debug)]
pub struct Context {
    pub(crate) registry: Registry,
    pub(crate) sockets: Slab<Slot>,
    /// Generation of each socket slot, kept across reuse (the slab forgets freed entries).
    pub(crate) socket_generations: Vec<u32>,
    pub(crate) listeners: Slab<ListenerSlot>,
    pub(crate) listener_generations: Vec<u32>,
    pub(crate) queue: VecDeque<Queued>,
    /// Scratch buffer for the machine's actions, drained by `apply` after each input.
    pub(crate) actions: Actions,
    /// Sockets and listeners with work to do this turn.
    pub(crate) ready: Vec<SocketId>,
    pub(crate) ready_listeners: Vec<ListenerId>,
    /// Destroyed sockets whose slots are freed after the event batch.
    pub(crate) reclaim: Vec<SocketId>,
    /// Closed listeners waiting to be freed once their `Close` is queued.
    pub(crate) reclaim_listeners: Vec<ListenerId>,
    pub(crate) stopped: bool,
    pub(crate) timers: Timers<TimerKey>,
    pub(crate) clock: Box<dyn Clock>,
    /// The time of the current turn, read once after each poll: activity stamps use it, so a
    /// read or write costs no clock call.
    pub(crate) now: Instant,
    pub(crate) options: ReactorOptions,
    pub(crate) shutdown: ShutdownPhase,
}

impl Context {
    pub(crate) fn new(
        registry: Registry,
        clock: Box<dyn Clock>,
        options: ReactorOptions,
    ) -> Context {
        let now = clock.now();
        Context {
            timers: Timers::new(),
            clock,
            now,
            options,
            shutdown: ShutdownPhase::Running,
            registry,
            sockets: Slab::new(),
            socket_generations: Vec::new(),
            listeners: Slab::new(),
            listener_generations: Vec::new(),
            queue: VecDeque::new(),
            actions: Actions::new(),
            ready: Vec::new(),
            ready_listeners: Vec::new(),
            reclaim: Vec::new(),
            reclaim_listeners: Vec::new(),
            stopped: false,
        }
    }

    // ---- listeners -----------------------------------------------------------------------

    /// Listens on `addr` (port 0 picks a free port; see [`listener_addr`](Self::listener_addr)).
    /// Accepted sockets arrive as [`Event::Accepted`].
    pub fn listen(&mut self, addr: SocketAddr, options: ListenOptions) -> Result<ListenerId> {
        if options.backlog == 0 {
            return Err(Error::InvalidOption("backlog must be at least 1"));
        }
        if options.high_water_mark == 0 {
            return Err(Error::InvalidOption("high_water_mark must be at least 1"));
        }
        let listener = sys::listen(addr, options.backlog, options.no_delay)?;
        let index = self.listeners.vacant_key();
        let id = ListenerId {
            index: index as u32,
            generation: generation_of(&mut self.listener_generations, index),
        };
        sys::register_listener(
            self.registry.as_fd(),
            &listener,
            TokenKind::Listener(id).to_token(),
            true,
        )?;
        self.listeners.insert(ListenerSlot {
            listener: Some(listener),
            options,
            connections: 0,
            scheduled: false,
            interested: true,
            backoff: None,
            shutting_down: false,
        });
        Ok(id)
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, id: ListenerId) -> Result<SocketAddr> {
        let slot = self.listener(id)?;
        match &slot.listener {
            Some(l) => Ok(l.local_addr()?),
            None => Err(Error::Destroyed),
        }
    }

    /// Closes a listener: its fd is dropped at once, so new connects are refused instead of
    /// waiting in a kernel backlog nobody will accept from. Sockets it accepted are left
    /// alone; [`ListenerEvent::Close`] comes once the last of them has closed (unlike Node,
    /// whose server `close` precedes its sockets' `close`).
    pub fn close_listener(&mut self, id: ListenerId) -> Result<()> {
        let slot = self.listener_mut(id)?;
        let Some(listener) = slot.listener.take() else {
            return Err(Error::Destroyed);
        };
        let backoff = slot.backoff.take();
        // Dropping the fd closes the socket, which also removes it from epoll, and makes the
        // kernel refuse new connects instead of queueing them in a backlog nobody reads.
        drop(listener);
        if let Some(t) = backoff {
            self.timers.cancel(t);
        }
        self.maybe_listener_closed(id);
        Ok(())
    }

    /// Ids of the listeners still open.
    pub fn listener_ids(&self) -> Vec<ListenerId> {
        self.listeners
            .iter()
            .filter(|(_, l)| l.listener.is_some())
            .map(|(i, _)| ListenerId {
                index: i as u32,
                generation: self.listener_generations[i],
            })
            .collect()
    }

    fn listener(&self, id: ListenerId) -> Result<&ListenerSlot> {
        match self.listeners.get(id.index()) {
            Some(slot) if self.listener_generations[id.index()] == id.generation => Ok(slot),
            _ => Err(Error::StaleId),
        }
    }

    pub(crate) fn listener_mut(&mut self, id: ListenerId) -> Result<&mut ListenerSlot> {
        listener_in(&mut self.listeners, &self.listener_generations, id)
    }

    pub(crate) fn maybe_listener_closed(&mut self, id: ListenerId) {
        if let Ok(slot) = self.listener_mut(id)
            && slot.listener.is_none()
            && slot.connections == 0
        {
            self.queue
                .push_back(Queued::Listener(id, ListenerEvent::Close));
            self.reclaim_listeners.push(id);
        }
    }

    // ---- sockets: creation ---------------------------------------------------------------

    /// Connects to `addr`. Returns at once; the outcome arrives as [`Event::Connect`], or as
    /// [`Event::Error`] + [`Event::Close`] (a refused connect included — like Node, connect
    /// failures are events, never this call's result). Writes and `end` made before the
    /// connect completes are queued and applied in order once it does.
    pub fn connect(&mut self, addr: SocketAddr, options: ConnectOptions) -> Result<SocketId> {
        if options.high_water_mark == 0 {
            return Err(Error::InvalidOption("high_water_mark must be at least 1"));
        }
        if options
            .local_addr
            .is_some_and(|local| local.is_ipv4() != addr.is_ipv4())
        {
            return Err(Error::InvalidOption(
                "local_addr must be of the same address family as the remote address",
            ));
        }
        let index = self.sockets.vacant_key();
        let id = SocketId {
            index: index as u32,
            generation: generation_of(&mut self.socket_generations, index),
        };
        let mut slot = Slot::new(Conn::connecting(id, options.conn()), None);
        let result = sys::connect(addr, options.local_addr).and_then(|mut stream| {
            if options.no_delay {
                stream.set_nodelay(true)?;
            }
            self.registry.register(
                &mut stream,
                TokenKind::Socket(id).to_token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                slot.stream = Some(stream);
                if let Some(limit) = options.connect_timeout {
                    let at = later(self.now, limit);
                    slot.deadline = Some(
                        self.timers
                            .arm_deadline(TimerKey::Deadline(id, Deadline::Connect), at),
                    );
                }
            }
            Err(e) => slot.conn.on_io_error(e, &mut self.actions),
        }
        self.sockets.insert(slot);
        self.apply(id);
        Ok(id)
    }

    /// Adopts an accepted stream (called by the reactor's accept loop).
    pub(crate) fn adopt(
        &mut self,
        mut stream: TcpStream,
        listener: ListenerId,
        options: &ListenOptions,
    ) -> io::Result<SocketId> {
        let index = self.sockets.vacant_key();
        let id = SocketId {
            index: index as u32,
            generation: generation_of(&mut self.socket_generations, index),
        };
        // TCP_NODELAY came from the listener (see `sys::listen`).
        self.registry.register(
            &mut stream,
            TokenKind::Socket(id).to_token(),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut slot = Slot::new(Conn::accepted(id, options.conn()), Some(listener));
        slot.stream = Some(stream);
        // A fresh socket has an empty send buffer: writes from the `Accepted` handler go
        // straight out instead of waiting one turn for the first writable edge.
        slot.writable = true;
        if let Some(period) = options.idle_timeout {
            slot.idle = Some(self.timers.arm_idle(TimerKey::Idle(id), period, self.now));
        }
        self.sockets.insert(slot);
        self.queue
            .push_back(Queued::Socket(id, Event::Accepted(listener)));
        Ok(id)
    }

    pub(crate) fn slot(&self, id: SocketId) -> Result<&Slot> {
        match self.sockets.get(id.index()) {
            Some(slot) if self.socket_generations[id.index()] == id.generation => Ok(slot),
            _ => Err(Error::StaleId),
        }
    }

    pub(crate) fn slot_mut(&mut self, id: SocketId) -> Result<&mut Slot> {
        slot_in(&mut self.sockets, &self.socket_generations, id)
    }

    // ---- sockets: operations -------------------------------------------------------------

    /// Writes `data`. Returns whether the queue is still under the high-water mark (Node's
    /// `write()` result): `false` asks the program to wait for [`Event::Drain`], but nothing
    /// written past it is lost.
    ///
    /// When nothing is queued the bytes go straight to the kernel and only what it did not
    /// take is copied into the queue. After `end()` this returns [`Error::WriteAfterEnd`] and
    /// changes nothing: the connection goes on ending gracefully. If the kernel reports an
    /// error the socket is destroyed (events follow) and the bytes count as unsent.
    pub fn write(&mut self, id: SocketId, data: &[u8]) -> Result<bool> {
        self.write_cow(id, Cow::Borrowed(data))
    }

    /// Like [`write`](Self::write) for a buffer the program gives away: when the kernel takes
    /// none of it at once, the buffer itself joins the queue — no copy. (A partly sent buffer
    /// still has its tail copied.)
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// let response = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    /// cx.write_owned(id, response.into_bytes())?;
    /// # Ok(()) }
    /// ```
    pub fn write_owned(&mut self, id: SocketId, data: Vec<u8>) -> Result<bool> {
        self.write_cow(id, Cow::Owned(data))
    }

    fn write_cow(&mut self, id: SocketId, data: Cow<'_, [u8]>) -> Result<bool> {
        let slot = slot_in(&mut self.sockets, &self.socket_generations, id)?;
        slot.conn.check_write()?;
        let mut sent = 0;
        let mut failed = None;
        if !data.is_empty()
            && slot.writable
            && slot.conn.may_send()
            && slot.conn.queue().is_empty()
            && let Some(stream) = &slot.stream
        {
            match sys::send(stream, &data) {
                Ok(n) => {
                    sent = n;
                    // A partial send means the send buffer is full; the kernel set
                    // SOCK_NOSPACE and will report the next writable edge.
                    if n < data.len() {
                        slot.writable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => slot.writable = false,
                Err(e) => failed = Some(e),
            }
        }
        if sent > 0 {
            slot.touch(&mut self.timers, self.now);
        }
        // Queued either way so that, if the send failed, the bytes count as unsent.
        let below = match data {
            Cow::Owned(buffer) if sent == 0 => slot.conn.accept_write_owned(buffer),
            data => slot.conn.accept_write(&data, sent),
        };
        if let Some(e) = failed {
            slot.conn.on_io_error(e, &mut self.actions);
            self.apply(id);
            return Ok(false);
        }
        Ok(below)
    }

    /// Ends the writing side: every queued byte goes out, then the FIN ([`Event::Finish`]).
    /// Reading goes on until the peer's FIN. A second `end` is a no-op.
    pub fn end(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.end(out))
    }

    /// Writes a last chunk, then ends (Node's `end(data)`). After `end()` this returns
    /// [`Error::WriteAfterEnd`] and changes nothing.
    pub fn end_with(&mut self, id: SocketId, data: &[u8]) -> Result<()> {
        self.write(id, data)?;
        self.end(id)
    }

    /// Closes at once: queued bytes are dropped (counted in [`CloseInfo::unsent`]). With
    /// nothing queued the kernel sends what it already holds and a FIN — or RST if unread
    /// input is pending (Linux). When queued bytes are dropped the close sends RST, so the
    /// peer sees a reset instead of a clean end of a truncated stream (Node sends FIN). No
    /// `End`, no `Finish`; `Close` with `had_error == false`.
    ///
    /// [`CloseInfo::unsent`]: crate::CloseInfo::unsent
    pub fn destroy(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.destroy(None, out))
    }

    /// Like [`destroy`](Self::destroy) but reports `error`: [`Event::Error`] then `Close` with
    /// `had_error == true`.
    pub fn destroy_with(&mut self, id: SocketId, error: Error) -> Result<()> {
        self.drive(id, |conn, out| conn.destroy(Some(error), out))
    }

    /// Lingering close: flush, FIN, then read and discard input until the peer's FIN (or the
    /// linger deadline), then close. Never turns into an RST because of unread input. The
    /// program gets no more `Data` and no `End`.
    pub fn destroy_soon(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.destroy_soon(out))
    }

    /// Sends RST (`SO_LINGER{on, 0}` + close) and destroys, in every state — after `end()`
    /// too. Queued bytes are dropped and counted as unsent.
    pub fn reset_and_destroy(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.reset(out))
    }

    /// Stops reading: no `Data` until [`resume`](Self::resume); the kernel buffers fill and
    /// the peer feels backpressure.
    ///
    /// While paused, the peer's FIN is not seen either: `End` follows the last `Data`, so it
    /// comes after `resume`. A peer's reset is different: it is reported at once, paused or
    /// not (`Error` + `Close(PeerReset)`); input the program had not read yet is lost with it. A paused socket is never held forever by that, though: once the
    /// program has called `end()`, the FIN wait ([`ReactorOptions::fin_wait`]) destroys a
    /// socket that makes no progress, paused or not; and an idle timeout, if armed, keeps
    /// firing. A lingering close (`destroy_soon`) ignores pause and keeps discarding input.
    pub fn pause(&mut self, id: SocketId) -> Result<()> {
        self.slot_mut(id)?.conn.pause()
    }

    /// Starts reading again; input that arrived meanwhile is delivered in the next turn.
    pub fn resume(&mut self, id: SocketId) -> Result<()> {
        self.slot_mut(id)?.conn.resume()?;
        self.schedule(id);
        Ok(())
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_no_delay(&mut self, id: SocketId, no_delay: bool) -> Result<()> {
        Ok(self.stream(id)?.set_nodelay(no_delay)?)
    }

    /// Enables TCP keep-alive probes after `idle` without traffic, or disables them (`None`).
    pub fn set_keep_alive(&mut self, id: SocketId, idle: Option<Duration>) -> Result<()> {
        Ok(sys::set_keep_alive(self.stream(id)?, idle)?)
    }

    fn stream(&self, id: SocketId) -> Result<&TcpStream> {
        self.slot(id)?.stream.as_ref().ok_or(Error::Destroyed)
    }

    // ---- sockets: facts ------------------------------------------------------------------

    /// The socket's state (see the crate docs for the transition table).
    pub fn state(&self, id: SocketId) -> Result<State> {
        Ok(self.slot(id)?.conn.state())
    }

    /// Node's `readyState`.
    pub fn ready_state(&self, id: SocketId) -> Result<ReadyState> {
        Ok(self.slot(id)?.conn.ready_state())
    }

    /// Bytes read from the peer so far.
    pub fn bytes_read(&self, id: SocketId) -> Result<u64> {
        Ok(self.slot(id)?.conn.bytes_read())
    }

    /// Bytes handed to the kernel so far.
    pub fn bytes_written(&self, id: SocketId) -> Result<u64> {
        Ok(self.slot(id)?.conn.bytes_written())
    }

    /// Bytes accepted by `write` and not yet handed to the kernel (Node's `bufferSize`).
    pub fn bytes_queued(&self, id: SocketId) -> Result<usize> {
        Ok(self.slot(id)?.conn.bytes_queued())
    }

    /// The socket's local address.
    pub fn local_addr(&self, id: SocketId) -> Result<SocketAddr> {
        Ok(self.stream(id)?.local_addr()?)
    }

    /// The peer's address.
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddr> {
        Ok(self.stream(id)?.peer_addr()?)
    }

    /// The listener that accepted this socket (`None` for outgoing connections).
    pub fn listener_of(&self, id: SocketId) -> Result<Option<ListenerId>> {
        Ok(self.slot(id)?.listener)
    }

    /// Sockets not yet reclaimed (destroyed sockets count until the end of their batch).
    pub fn live_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Listeners not yet reclaimed (a closed listener counts until its `Close`).
    pub fn live_listeners(&self) -> usize {
        self.listeners.len()
    }

    /// Ids of all sockets not yet destroyed.
    pub fn socket_ids(&self) -> Vec<SocketId> {
        self.sockets
            .iter()
            .filter(|(_, s)| !s.conn.is_destroyed())
            .map(|(i, _)| SocketId {
                index: i as u32,
                generation: self.socket_generations[i],
            })
            .collect()
    }

    /// Makes [`Reactor::run`](crate::Reactor::run) return after the current turn.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Arms (or re-arms) the idle timeout: [`Event::Timeout`] after `timeout` with no byte
    /// read or written, then again after each further idle period that follows traffic.
    /// Nothing is closed: the handler decides. `None` or zero disarms.
    ///
    /// Re-arming on activity is free: a read or write only stamps the socket; the timer is
    /// checked lazily when it comes due.
    pub fn set_timeout(&mut self, id: SocketId, timeout: Option<Duration>) -> Result<()> {
        let slot = slot_in(&mut self.sockets, &self.socket_generations, id)?;
        if slot.conn.is_destroyed() {
            return Err(Error::Destroyed);
        }
        if let Some(old) = slot.idle.take() {
            self.timers.cancel(old);
        }
        if let Some(period) = timeout.filter(|d| !d.is_zero()) {
            slot.idle = Some(self.timers.arm_idle(TimerKey::Idle(id), period, self.now));
        }
        Ok(())
    }

    /// The reactor's current time (taken once per turn from its clock).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Graceful shutdown of the whole reactor: every listener closes at once (new connects
    /// are refused), every connection is `end()`ed (queued data flushed, then FIN), and
    /// whatever is still open after `grace` is destroyed with
    /// [`CloseReason::Deadline`](crate::CloseReason::Deadline)`(Shutdown)`. Once everything
    /// has closed, [`Handler::on_shutdown_complete`](crate::Handler::on_shutdown_complete)
    /// runs and [`Reactor::run`](crate::Reactor::run) returns. A second call while one is
    /// running does nothing.
    pub fn shutdown(&mut self, grace: Duration) {
        if self.shutdown != ShutdownPhase::Running {
            return;
        }
        self.shutdown = ShutdownPhase::Draining;
        for lid in self.listener_ids() {
            let _ = self.close_listener(lid);
        }
        for id in self.socket_ids() {
            let _ = self.end(id);
        }
        self.timers
            .arm_deadline(TimerKey::Shutdown(None), later(self.now, grace));
    }

    /// Graceful shutdown of one listener: it closes at once, its connections are `end()`ed,
    /// those still open after `grace` are destroyed, and [`ListenerEvent::Close`] reports
    /// the end (once its last socket closed).
    pub fn shutdown_listener(&mut self, id: ListenerId, grace: Duration) -> Result<()> {
        let slot = self.listener_mut(id)?;
        if slot.shutting_down {
            return Ok(());
        }
        slot.shutting_down = true;
        if slot.listener.is_some() {
            self.close_listener(id)?;
        }
        for sid in self.socket_ids() {
            if self.slot(sid).is_ok_and(|s| s.listener == Some(id)) {
                let _ = self.end(sid);
            }
        }
        self.timers
            .arm_deadline(TimerKey::Shutdown(Some(id)), later(self.now, grace));
        Ok(())
    }

    /// Whether a reactor-wide graceful shutdown is running or complete.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown != ShutdownPhase::Running
    }

    // ---- the loop's side -----------------------------------------------------------------

    /// Gives one input to a socket's machine and carries out the actions it produced.
    fn drive(
        &mut self,
        id: SocketId,
        input: impl FnOnce(&mut Conn, &mut Actions) -> Result<()>,
    ) -> Result<()> {
        let slot = slot_in(&mut self.sockets, &self.socket_generations, id)?;
        let result = input(&mut slot.conn, &mut self.actions);
        self.apply(id);
        result
    }

    /// Turns a listener's readiness reports on or off (a no-op when already so). Off while it
    /// must leave connections in the backlog, or its level-triggered readiness would wake
    /// every poll.
    pub(crate) fn set_listener_interest(&mut self, id: ListenerId, interested: bool) {
        let Ok(slot) = listener_in(&mut self.listeners, &self.listener_generations, id) else {
            return;
        };
        if slot.interested == interested {
            return;
        }
        let Some(listener) = &slot.listener else {
            return;
        };
        match sys::set_listener_interest(
            self.registry.as_fd(),
            listener,
            TokenKind::Listener(id).to_token(),
            interested,
        ) {
            Ok(()) => slot.interested = interested,
            // Cannot happen for a registered, open fd; if it did, the listener keeps its
            // previous setting: at worst polls wake early, or accepting waits for a close.
            Err(e) => log::warn!("{id}: epoll_ctl: {e}"),
        }
    }

    pub(crate) fn schedule_listener(&mut self, id: ListenerId) {
        if let Ok(l) = self.listener_mut(id)
            && !l.scheduled
        {
            l.scheduled = true;
            self.ready_listeners.push(id);
        }
    }

    /// A socket just closed, so an fd is free: listeners that backed off after running out of
    /// fds try again now instead of waiting for their retry timer.
    fn retry_backed_off_listeners(&mut self) {
        // Runs on every close: the common case (nothing backed off) must not allocate.
        if !self.listeners.iter().any(|(_, l)| l.backoff.is_some()) {
            return;
        }
        let backed_off: Vec<(usize, TimerId)> = self
            .listeners
            .iter()
            .filter_map(|(i, l)| l.backoff.map(|t| (i, t)))
            .collect();
        for (index, timer) in backed_off {
            self.timers.cancel(timer);
            self.listeners[index].backoff = None;
            let id = ListenerId {
                index: index as u32,
                generation: self.listener_generations[index],
            };
            self.schedule_listener(id);
        }
    }

    /// Handles a timer that came due.
    pub(crate) fn on_timer(&mut self, key: TimerKey) {
        match key {
            TimerKey::Idle(id) => {
                if self.slot(id).is_ok_and(|s| !s.conn.is_destroyed()) {
                    self.queue.push_back(Queued::Socket(id, Event::Timeout));
                }
            }
            TimerKey::Deadline(id, which) => {
                // A reset that arrived is older news than a deadline due now: report it.
                if self.surface_pending_error(id) {
                    return;
                }
                let Ok(slot) = slot_in(&mut self.sockets, &self.socket_generations, id) else {
                    return;
                };
                slot.deadline = None;
                slot.conn.on_deadline(which, &mut self.actions);
                self.apply(id);
            }
            TimerKey::Shutdown(scope) => {
                for id in self.socket_ids() {
                    let in_scope = match scope {
                        None => true,
                        Some(lid) => self.slot(id).is_ok_and(|s| s.listener == Some(lid)),
                    };
                    if in_scope
                        && !self.surface_pending_error(id)
                        && let Ok(slot) = slot_in(&mut self.sockets, &self.socket_generations, id)
                    {
                        slot.conn.on_deadline(Deadline::Shutdown, &mut self.actions);
                        self.apply(id);
                    }
                }
            }
            TimerKey::AcceptRetry(lid) => {
                if let Ok(l) = self.listener_mut(lid) {
                    l.backoff = None;
                }
                self.schedule_listener(lid);
            }
        }
    }

    /// If epoll reported an error on this socket (`EPOLLERR`), takes the pending socket error
    /// and, when there is one, destroys the socket with it (a reset is reported as
    /// [`CloseReason::PeerReset`](crate::CloseReason::PeerReset)). This is how a reset reaches
    /// a socket that nothing reads or writes — paused, after the peer's FIN, with an empty
    /// queue — and it costs a syscall only for sockets that had such a report. Returns whether
    /// the socket is destroyed now.
    pub(crate) fn surface_pending_error(&mut self, id: SocketId) -> bool {
        let Ok(slot) = slot_in(&mut self.sockets, &self.socket_generations, id) else {
            return false;
        };
        if !slot.error_hint || slot.conn.is_destroyed() {
            return false;
        }
        slot.error_hint = false;
        let Some(error) = slot.stream.as_ref().and_then(sys::take_error) else {
            return false;
        };
        slot.conn.on_io_error(error, &mut self.actions);
        self.apply(id);
        true
    }

    pub(crate) fn schedule(&mut self, id: SocketId) {
        if let Ok(slot) = self.slot_mut(id)
            && !slot.scheduled
        {
            slot.scheduled = true;
            self.ready.push(id);
        }
    }

    /// Carries out the actions the machine just produced, in order. Syscall outcomes are fed
    /// back to the machine, whose new actions join the same queue.
    pub(crate) fn apply(&mut self, id: SocketId) {
        // A listener's `Close` must follow its last socket's `Close`, which the machine queues
        // after the `Close` action: check the listener once every action is carried out.
        let mut closed_under = None;
        while let Some(action) = self.actions.pop_front() {
            let Some(slot) = self.sockets.get_mut(id.index()) else {
                self.actions.clear();
                return;
            };
            match action {
                Action::Emit(event) => self.queue.push_back(Queued::Socket(id, event)),
                Action::Shutdown => {
                    let result = match &slot.stream {
                        Some(stream) => sys::shutdown_write(stream),
                        None => Err(io::ErrorKind::NotConnected.into()),
                    };
                    slot.conn.on_shutdown(result, &mut self.actions);
                }
                Action::Close { reset } => {
                    if let Some(stream) = slot.stream.take() {
                        sys::close(stream, reset);
                    }
                    for t in [slot.idle.take(), slot.deadline.take()]
                        .into_iter()
                        .flatten()
                    {
                        self.timers.cancel(t);
                    }
                    let listener = slot.listener;
                    self.reclaim.push(id);
                    self.retry_backed_off_listeners();
                    if let Some(lid) = listener {
                        let mut reaccept = false;
                        if let Ok(l) = self.listener_mut(lid) {
                            // A listener held at max_connections may take the next one now.
                            reaccept = l.is_full() && l.listener.is_some();
                            l.connections -= 1;
                        }
                        if reaccept {
                            self.schedule_listener(lid);
                        }
                        closed_under = Some(lid);
                    }
                }
                Action::ArmDeadline(which) => {
                    if let Some(old) = slot.deadline.take() {
                        self.timers.cancel(old);
                    }
                    let key = TimerKey::Deadline(id, which);
                    slot.deadline = match which {
                        _ if slot.conn.is_destroyed() => None,
                        // Progress (bytes either way) re-arms it: an idle-kind timer, touched
                        // for free by reads and writes.
                        Deadline::FinWait => self
                            .options
                            .fin_wait
                            .map(|wait| self.timers.arm_idle(key, wait, self.now)),
                        Deadline::Linger => Some(
                            self.timers
                                .arm_deadline(key, later(self.now, self.options.linger)),
                        ),
                        // Armed directly by `connect` and `shutdown`, which know their limits.
                        Deadline::Connect | Deadline::Shutdown => None,
                    };
                }
            }
        }
        if let Some(lid) = closed_under {
            self.maybe_listener_closed(lid);
        }
    }

    /// Hands queued bytes to the kernel until the queue is empty or the kernel is full.
    pub(crate) fn flush(&mut self, id: SocketId) {
        loop {
            let Ok(slot) = slot_in(&mut self.sockets, &self.socket_generations, id) else {
                return;
            };
            if !slot.writable || !slot.conn.may_send() || slot.conn.queue().is_empty() {
                return;
            }
            let Some(stream) = &slot.stream else { return };
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = slot.conn.queue().fill(&mut slices);
            let offered: usize = slices[..n].iter().map(|s| s.len()).sum();
            let result = sys::send_vectored(stream, &slices[..n]);
            match result {
                Ok(written) => {
                    if written < offered {
                        slot.writable = false;
                    }
                    slot.touch(&mut self.timers, self.now);
                    slot.conn.on_written(written, &mut self.actions);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    slot.writable = false;
                    return;
                }
                Err(e) => slot.conn.on_io_error(e, &mut self.actions),
            }
            self.apply(id);
        }
    }

    /// Frees the slots of sockets destroyed in this batch, bumping their generation so their
    /// ids go stale, and the slots of listeners whose `Close` was queued.
    pub(crate) fn reclaim(&mut self) {
        for id in self.reclaim.drain(..) {
            if self.sockets.contains(id.index())
                && self.socket_generations[id.index()] == id.generation
            {
                self.sockets.remove(id.index());
                let g = &mut self.socket_generations[id.index()];
                *g = next_generation(*g);
            }
        }
        for id in self.reclaim_listeners.drain(..) {
            if self.listeners.contains(id.index())
                && self.listener_generations[id.index()] == id.generation
            {
                self.listeners.remove(id.index());
                let g = &mut self.listener_generations[id.index()];
                *g = next_generation(*g);
            }
        }
    }
}

impl Slot {
    /// Records traffic: re-arms the idle timeout and the FIN wait. Stores a time, nothing more.
    #[inline]
    pub(crate) fn touch(&self, timers: &mut Timers<TimerKey>, now: Instant) {
        for t in [self.idle, self.deadline].into_iter().flatten() {
            timers.touch(t, now);
        }
    }

    fn new(conn: Conn, listener: Option<ListenerId>) -> Slot {
        Slot {
            stream: None,
            conn,
            listener,
            readable: false,
            writable: false,
            read_closed: false,
            error_hint: false,
            scheduled: false,
            idle: None,
            deadline: None,
        }
    }
}

/// Looks a socket up by id through disjoint field borrows, so callers can still use the
/// action buffer and the event queue while holding the slot.
pub(crate) fn slot_in<'a>(
    sockets: &'a mut Slab<Slot>,
    generations: &[u32],
    id: SocketId,
) -> Result<&'a mut Slot> {
    match sockets.get_mut(id.index()) {
        Some(slot) if generations[id.index()] == id.generation => Ok(slot),
        _ => Err(Error::StaleId),
    }
}

/// [`slot_in`] for listeners.
pub(crate) fn listener_in<'a>(
    listeners: &'a mut Slab<ListenerSlot>,
    generations: &[u32],
    id: ListenerId,
) -> Result<&'a mut ListenerSlot> {
    match listeners.get_mut(id.index()) {
        Some(slot) if generations[id.index()] == id.generation => Ok(slot),
        _ => Err(Error::StaleId),
    }
}

/// `now + d`, saturating far in the future instead of overflowing on absurd durations.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The generation for a slot about to be filled, growing the table for a new slot.
fn generation_of(generations: &mut Vec<u32>, index: usize) -> u32 {
    if index >= generations.len() {
        generations.resize(index + 1, 0);
    }
    generations[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle connections cost their slot and little else (target: ≤ 256 bytes of server memory
    /// per idle connection); this pins the slot's size so a new field is a deliberate choice.
    #[test]
    fn slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 160, "Slot grew to {size} bytes");
    }
}
