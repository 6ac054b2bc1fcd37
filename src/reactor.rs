//! [`Reactor`]: the single-threaded loop over `mio::Poll`.
//!
//! One turn: poll (timeout 0 when work is left over), note readiness on each socket, then
//! service every ready socket — flush its queue, read it within a budget — delivering events
//! in order, and finally free the slots of sockets destroyed in the batch.

use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll};
use signal_hook_mio::v1_0::Signals;

use crate::context::{Context, Queued, ReactorOptions, ShutdownPhase, TimerKey, slot_in};
use crate::error::Result;
use crate::event::Event;
use crate::handler::Handler;
use crate::id::{ListenerId, SocketId, TokenKind};
use crate::state::State;
use crate::sys;
use crate::timers::{Clock, SystemClock};

/// Reserved tokens.
const SIGNAL_TOKEN: u32 = 0;
const WAKER_TOKEN: u32 = 1;

/// Size of the one read buffer every socket shares: large enough that a bulk transfer costs
/// few syscalls, allocated once per reactor (no allocation per read).
const READ_BUFFER: usize = 64 * 1024;
/// Connections one listener may accept in a turn that follows a long one (see [`LONG_TURN`]);
/// otherwise it accepts one. One is what nginx does by default: listeners are level-triggered,
/// so waiting connections are reported again next turn, and stopping after one spares the
/// `accept` that would only find the backlog empty (see `sys::register_listener`) — under
/// connection churn that is one `accept4` per connection. But a turn can be long (heavy
/// handlers, many busy sockets), and one accept per long turn would let a burst of connects
/// wait for seconds: after such a turn the backlog is drained, up to this many, and the one
/// `EAGAIN` that ends it is cheap next to the turn.
const ACCEPT_BATCH: usize = 128;
/// A turn that worked this long (from its poll's return to the next poll) is long.
const LONG_TURN: Duration = Duration::from_millis(1);
/// epoll events fetched per poll.
const EVENT_CAPACITY: usize = 1024;

/// The event loop: owns the poller, the shared read buffer and the [`Context`].
///
/// `Reactor` dereferences to [`Context`], so every socket call is also available outside the
/// handler (before `run`, between `run_once` calls).
///
/// ```no_run
/// use finwait::{Context, Event, ListenOptions, Reactor, SocketId};
///
/// // A server that writes a message and ends every connection.
/// let mut reactor = Reactor::new()?;
/// let listener = reactor.listen("127.0.0.1:0".parse().unwrap(), ListenOptions::new())?;
/// println!("listening on {}", reactor.listener_addr(listener)?);
/// reactor.run(&mut |cx: &mut Context, id: SocketId, event: Event<'_>| {
///     if let Event::Accepted(_) = event {
///         let _ = cx.end_with(id, b"Goodbye\n");
///     }
/// })?;
/// # Ok::<(), finwait::Error>(())
/// ```
pub struct Reactor {
    poll: Poll,
    events: Events,
    read_buf: Box<[u8]>,
    cx: Context,
    /// Timers that came due this turn (kept to reuse its allocation).
    fired: Vec<TimerKey>,
    /// The sockets and listeners serviced this turn (kept to reuse their allocations).
    socket_batch: Vec<SocketId>,
    listener_batch: Vec<ListenerId>,
    /// SIGINT/SIGTERM, when [`shutdown_on_signals`](Reactor::shutdown_on_signals) was called,
    /// with the grace period to give.
    signals: Option<(Signals, Duration)>,
    waker: Option<Waker>,
}

/// Wakes a reactor from another thread: [`Handler::on_wake`] runs in the loop's next turn.
/// Cheap to clone; wakes coalesce (several `wake` calls may give one `on_wake`).
#[derive(Debug, Clone)]
pub struct Waker(Arc<mio::Waker>);

impl Waker {
    /// Wakes the reactor. Fails only if the reactor's eventfd cannot be written.
    pub fn wake(&self) -> Result<()> {
        Ok(self.0.wake()?)
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor").field("cx", &self.cx).finish()
    }
}

impl Deref for Reactor {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.cx
    }
}

impl DerefMut for Reactor {
    fn deref_mut(&mut self) -> &mut Context {
        &mut self.cx
    }
}

impl Reactor {
    /// A reactor with its own epoll instance, default [`ReactorOptions`] and the system clock.
    pub fn new() -> Result<Reactor> {
        Reactor::with_options(ReactorOptions::default())
    }

    /// A reactor with the given options and the system clock.
    pub fn with_options(options: ReactorOptions) -> Result<Reactor> {
        Reactor::with_clock(options, SystemClock)
    }

    /// A reactor whose time comes from `clock` — a [`ManualClock`](crate::timers::ManualClock)
    /// lets tests drive timeouts and deadlines without sleeping.
    pub fn with_clock(options: ReactorOptions, clock: impl Clock + 'static) -> Result<Reactor> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENT_CAPACITY),
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            cx: Context::new(registry, Box::new(clock), options),
            fired: Vec::new(),
            socket_batch: Vec::new(),
            listener_batch: Vec::new(),
            signals: None,
            waker: None,
        })
    }

    /// Turns SIGINT and SIGTERM into a graceful [`shutdown`](Context::shutdown) with `grace`:
    /// listeners close, connections end, stragglers are destroyed after `grace`, and `run`
    /// returns once everything has closed. A second signal changes nothing.
    pub fn shutdown_on_signals(&mut self, grace: Duration) -> Result<()> {
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        self.poll.registry().register(
            &mut signals,
            TokenKind::Reserved(SIGNAL_TOKEN).to_token(),
            Interest::READABLE,
        )?;
        self.signals = Some((signals, grace));
        Ok(())
    }

    /// A handle that wakes this reactor from another thread (see [`Handler::on_wake`]).
    pub fn waker(&mut self) -> Result<Waker> {
        if self.waker.is_none() {
            let waker = mio::Waker::new(
                self.poll.registry(),
                TokenKind::Reserved(WAKER_TOKEN).to_token(),
            )?;
            self.waker = Some(Waker(Arc::new(waker)));
        }
        Ok(self.waker.clone().expect("just set"))
    }

    /// The [`Context`], for acting on sockets outside a handler.
    pub fn context(&mut self) -> &mut Context {
        &mut self.cx
    }

    /// Runs turns until [`Context::stop`] is called or nothing is left to wait for (no
    /// listener, no socket, no queued event).
    pub fn run<H: Handler + ?Sized>(&mut self, handler: &mut H) -> Result<()> {
        self.cx.stopped = false;
        while !self.cx.stopped && !self.is_idle() {
            self.run_once(handler, None)?;
        }
        Ok(())
    }

    /// Whether nothing is left: no listener, no socket, no queued event.
    pub fn is_idle(&self) -> bool {
        self.cx.sockets.is_empty() && self.cx.listeners.is_empty() && self.cx.queue.is_empty()
    }

    /// Runs one turn, waiting at most `timeout` for readiness (`None`: until something
    /// happens). Events queued by calls made outside a handler are delivered in this turn.
    pub fn run_once<H: Handler + ?Sized>(
        &mut self,
        handler: &mut H,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let busy = !self.cx.ready.is_empty()
            || !self.cx.ready_listeners.is_empty()
            || !self.cx.queue.is_empty();
        // How long the last turn worked, from its poll's return to now: after a long one,
        // connections may have piled up in the backlogs and are accepted in a batch.
        let before_poll = self.cx.clock.now();
        let accepts = if before_poll.saturating_duration_since(self.cx.now) >= LONG_TURN {
            ACCEPT_BATCH
        } else {
            1
        };
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            let until_timer = self
                .cx
                .timers
                .next_wakeup()
                .map(|at| at.saturating_duration_since(before_poll));
            match (timeout, until_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        self.cx.now = self.cx.clock.now();
        let mut woken = false;
        let mut signalled = None;
        for event in self.events.iter() {
            match TokenKind::from_token(event.token()) {
                Some(TokenKind::Socket(id)) => {
                    // A stale token (the socket was destroyed) matches no slot.
                    let Ok(slot) = self.cx.slot_mut(id) else {
                        continue;
                    };
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        slot.readable = true;
                    }
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        slot.writable = true;
                    }
                    slot.read_closed |= event.is_read_closed();
                    slot.error_hint |= event.is_error();
                    self.cx.schedule(id);
                }
                Some(TokenKind::Listener(id)) => {
                    if let Ok(l) = self.cx.listener_mut(id)
                        && !l.scheduled
                    {
                        l.scheduled = true;
                        self.cx.ready_listeners.push(id);
                    }
                }
                Some(TokenKind::Reserved(SIGNAL_TOKEN)) => {
                    if let Some((signals, grace)) = &mut self.signals
                        && signals.pending().next().is_some()
                    {
                        // Drain every pending signal; one shutdown covers them all.
                        for _ in signals.pending() {}
                        signalled = Some(*grace);
                    }
                }
                Some(TokenKind::Reserved(WAKER_TOKEN)) => woken = true,
                Some(TokenKind::Reserved(_)) | None => {}
            }
        }
        if let Some(grace) = signalled {
            log::info!("signal received: shutting down gracefully ({grace:?} grace)");
            self.cx.shutdown(grace);
        }
        let now = self.cx.now;
        let fired = &mut self.fired;
        self.cx.timers.expire(now, |_, key| fired.push(key));
        let mut fired = std::mem::take(&mut self.fired);
        for &key in &fired {
            self.cx.on_timer(key);
        }
        fired.clear();
        self.fired = fired;
        self.deliver(handler);
        if woken {
            handler.on_wake(&mut self.cx);
        }
        self.deliver(handler);
        // Swap the ready lists with kept, empty ones instead of taking them: no allocation
        // per turn, and whatever gets scheduled meanwhile lands in the fresh list.
        let mut listeners = std::mem::take(&mut self.listener_batch);
        std::mem::swap(&mut listeners, &mut self.cx.ready_listeners);
        for &id in &listeners {
            self.accept(id, accepts);
        }
        listeners.clear();
        self.listener_batch = listeners;
        self.deliver(handler);
        let mut batch = std::mem::take(&mut self.socket_batch);
        std::mem::swap(&mut batch, &mut self.cx.ready);
        for &id in &batch {
            if let Ok(slot) = self.cx.slot_mut(id) {
                slot.scheduled = false;
            }
            self.service(id, handler);
        }
        batch.clear();
        self.socket_batch = batch;
        self.deliver(handler);
        self.cx.reclaim();
        if self.cx.shutdown == ShutdownPhase::Draining
            && self.cx.sockets.is_empty()
            && self.cx.listeners.is_empty()
        {
            self.cx.shutdown = ShutdownPhase::Complete;
            handler.on_shutdown_complete(&mut self.cx);
            self.deliver(handler);
            self.cx.stopped = true;
        }
        Ok(())
    }

    /// Delivers queued events in order until the queue is empty (handlers may queue more).
    fn deliver<H: Handler + ?Sized>(&mut self, handler: &mut H) {
        while let Some(queued) = self.cx.queue.pop_front() {
            match queued {
                Queued::Socket(id, event) => {
                    let ended = matches!(event, Event::End);
                    handler.on_event(&mut self.cx, id, event);
                    let cx = &mut self.cx;
                    if ended && let Ok(slot) = slot_in(&mut cx.sockets, &cx.socket_generations, id)
                    {
                        slot.conn.after_end_delivered(&mut cx.actions);
                        cx.apply(id);
                    }
                }
                Queued::Listener(id, event) => handler.on_listener_event(&mut self.cx, id, event),
            }
        }
    }

    /// Accepts up to `limit` connections: one, or [`ACCEPT_BATCH`] after a long turn. The listener is
    /// level-triggered: if more wait, the next poll reports it again, so short turns make no
    /// `accept` that only returns `EAGAIN`. While it must leave connections in the backlog
    /// (backing off, or at `max_connections`) its readiness reports are turned off; whatever
    /// ends that state schedules the listener, which turns them back on here.
    fn accept(&mut self, id: ListenerId, limit: usize) {
        let Ok(slot) = self.cx.listener_mut(id) else {
            return;
        };
        slot.scheduled = false;
        for _ in 0..limit {
            let Ok(slot) = self.cx.listener_mut(id) else {
                return;
            };
            if slot.listener.is_none() {
                return;
            }
            if slot.is_full() || slot.backoff.is_some() {
                // Left in the backlog; the close that frees a place (or the retry timer)
                // schedules this listener again.
                self.cx.set_listener_interest(id, false);
                return;
            }
            if !slot.interested {
                self.cx.set_listener_interest(id, true);
            }
            let Ok(slot) = self.cx.listener_mut(id) else {
                return;
            };
            let Some(listener) = &slot.listener else {
                return;
            };
            match sys::accept(listener) {
                Ok(stream) => {
                    let options = slot.options.clone();
                    slot.connections += 1;
                    if let Err(e) = self.cx.adopt(stream, id, &options) {
                        log::debug!("{id}: dropping accepted connection: {e}");
                        if let Ok(slot) = self.cx.listener_mut(id) {
                            slot.connections -= 1;
                        }
                    }
                    if self.cx.listener_mut(id).is_ok_and(|l| l.is_full()) {
                        self.cx.set_listener_interest(id, false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_transient_accept_error(&e) => {}
                Err(e) => {
                    // The pending connection stays in the backlog: retrying at once would
                    // spin. Pause accepting and retry on a timer (or when a socket closes and
                    // frees an fd). Running out of fds is expected under load; anything else
                    // is also reported to the program.
                    let retry = self.cx.options.accept_retry;
                    if sys::is_fd_exhaustion(&e) {
                        log::warn!("{id}: accept: {e}; retrying in {retry:?}");
                    } else {
                        log::warn!("{id}: accept failed: {e}; retrying in {retry:?}");
                        self.cx.queue.push_back(Queued::Listener(
                            id,
                            crate::event::ListenerEvent::Error(e.into()),
                        ));
                    }
                    let at = crate::context::later(self.cx.now, retry);
                    let timer = self.cx.timers.arm_deadline(TimerKey::AcceptRetry(id), at);
                    if let Ok(slot) = self.cx.listener_mut(id) {
                        slot.backoff = Some(timer);
                    }
                    self.cx.set_listener_interest(id, false);
                    return;
                }
            }
        }
    }

    /// Services one socket: completes a connect, flushes, reads.
    fn service<H: Handler + ?Sized>(&mut self, id: SocketId, handler: &mut H) {
        let Ok(slot) = self.cx.slot_mut(id) else {
            return;
        };
        if matches!(slot.conn.state(), State::Connecting { .. }) {
            if !slot.writable {
                return;
            }
            self.finish_connect(id);
        }
        self.cx.flush(id);
        self.deliver(handler);
        self.read(id, handler);
        // An error report that neither the flush nor the reads surfaced — the socket is
        // paused, past the peer's FIN, or had nothing to write — is acted on now, unless the
        // socket still has input to read first (over its budget: it is scheduled again, and
        // its data comes before the reset).
        if self.cx.slot(id).is_ok_and(|s| !s.scheduled) {
            self.cx.surface_pending_error(id);
        }
    }

    fn finish_connect(&mut self, id: SocketId) {
        let cx = &mut self.cx;
        let Ok(slot) = slot_in(&mut cx.sockets, &cx.socket_generations, id) else {
            return;
        };
        let Some(stream) = &slot.stream else {
            return;
        };
        let outcome = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Ok(()),
                // Spurious wake-up: still connecting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    slot.writable = false;
                    return;
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(()) => slot.conn.on_connected(&mut cx.actions),
            Err(e) => slot.conn.on_io_error(e, &mut cx.actions),
        }
        cx.apply(id);
    }

    /// Reads until `WouldBlock`, EOF, an error or the budget. `Data` is delivered straight
    /// from the shared buffer, after any event queued before it.
    fn read<H: Handler + ?Sized>(&mut self, id: SocketId, handler: &mut H) {
        let mut budget = self.cx.options.read_budget;
        loop {
            let cx = &mut self.cx;
            let Ok(slot) = slot_in(&mut cx.sockets, &cx.socket_generations, id) else {
                return;
            };
            if !slot.readable || !slot.conn.wants_read() {
                return;
            }
            if budget == 0 {
                cx.schedule(id);
                return;
            }
            let Some(stream) = &slot.stream else {
                return;
            };
            match sys::recv(stream, &mut self.read_buf) {
                Ok(0) => {
                    slot.readable = false;
                    // A FIN followed by an RST reads as a plain EOF (the FIN sets SOCK_DONE);
                    // only the pending socket error tells the reset apart.
                    let reset = if std::mem::take(&mut slot.error_hint) {
                        sys::take_error(stream)
                    } else {
                        None
                    };
                    match reset {
                        Some(e) => slot.conn.on_io_error(e, &mut cx.actions),
                        None => slot.conn.on_eof(&mut cx.actions),
                    }
                    cx.apply(id);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    slot.touch(&mut cx.timers, cx.now);
                    // A short read drained the kernel buffer: the next byte brings a new edge,
                    // so skip the read that would only say WouldBlock — unless the peer's FIN
                    // or RST is already known, which brings no further edge.
                    if n < self.read_buf.len() && !slot.read_closed {
                        slot.readable = false;
                    }
                    if slot.conn.on_read(n) {
                        self.deliver(handler);
                        handler.on_event(&mut self.cx, id, Event::Data(&self.read_buf[..n]));
                        self.deliver(handler);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    slot.readable = false;
                    return;
                }
                Err(e) => {
                    slot.conn.on_io_error(e, &mut cx.actions);
                    cx.apply(id);
                    return;
                }
            }
        }
    }
}
