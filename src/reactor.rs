//! [`Reactor`]: the single-threaded loop over `mio::Poll`.
//!
//! One turn: poll (timeout 0 when work is left over), note readiness on each socket, then
//! service every ready socket — flush its queue, read it within a budget — delivering events
//! in order, and finally free the slots of sockets destroyed in the batch.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Poll};
use signal_hook_mio::v1_0::Signals;

use crate::context::Context;
use crate::driver::{ACCEPT_BATCH, LONG_TURN, Queued, ShutdownPhase, TimerKey};
use crate::error::Result;
use crate::event::Event;
use crate::handler::Handler;
use crate::id::{ListenerId, SocketId, TokenKind};
use crate::options::ReactorOptions;
use crate::sys;
use crate::timers::{Clock, SystemClock};

/// Reserved tokens.
const SIGNAL_TOKEN: u32 = 0;
const WAKER_TOKEN: u32 = 1;

/// Size of the one read buffer every socket shares: large enough that a bulk transfer costs
/// few syscalls, allocated once per reactor (no allocation per read).
const READ_BUFFER: usize = 64 * 1024;
/// epoll events fetched per poll.
const EVENT_CAPACITY: usize = 1024;

/// The event loop: owns the poller, the shared read buffer and the [`Context`].
///
/// The setup calls ([`listen`](Self::listen), [`connect`](Self::connect), …) are on the
/// reactor itself; every other [`Context`] call is reached outside a handler through
/// [`context_mut`](Self::context_mut). `A` is the per-socket attachment (see [`Context`]).
///
/// ```no_run
/// use finwait::{Context, Event, ListenOptions, Reactor, SocketId};
///
/// // A server that writes a message and ends every connection.
/// let mut reactor = Reactor::new()?;
/// let listener = reactor.listen("127.0.0.1:0", ListenOptions::new())?;
/// println!("listening on {}", reactor.listener_addr(listener)?);
/// reactor.run(&mut |cx, id, event| {
///     if let Event::Accepted(_) = event {
///         let _ = cx.end_with(id, b"Goodbye\n");
///     }
/// })?;
/// # Ok::<(), finwait::Error>(())
/// ```
pub struct Reactor<A = ()> {
    poll: Poll,
    events: Events,
    pub(crate) read_buf: Box<[u8]>,
    pub(crate) cx: Context<A>,
    /// Timers that came due this turn (kept to reuse its allocation).
    fired: Vec<TimerKey>,
    /// The sockets and listeners serviced this turn (kept to reuse their allocations).
    socket_batch: Vec<SocketId>,
    listener_batch: Vec<ListenerId>,
    /// SIGINT/SIGTERM, when [`shutdown_on_signals`](Reactor::shutdown_on_signals) was called,
    /// with the grace period to give.
    signals: Option<(Signals, Duration)>,
    waker: Option<Waker<A>>,
    /// Serving handovers of this reactor's listeners (see [`Reactor::serve_handover`]).
    handover: Option<crate::handover::HandoverServer>,
    /// This reactor's place in its group's listener steering (a group member only).
    steering: Option<crate::group::SteeringSlot>,
}

/// Wakes a reactor from another thread, and hands it work: [`Handler::on_wake`] runs in the
/// loop's next turn, after the calls given to [`send`](Waker::send).
/// Cheap to clone, `Send` and `Sync`; wakes coalesce (several `wake` calls may give one
/// `on_wake`), sent calls never do.
///
/// ```no_run
/// use std::time::Duration;
/// use finwait::Reactor;
///
/// let mut reactor = Reactor::new()?;
/// let waker = reactor.waker()?;
/// std::thread::spawn(move || {
///     // From another thread: shut that reactor down gracefully, within 5 s.
///     let _ = waker.send(|cx| cx.shutdown(Duration::from_secs(5)));
/// });
/// # Ok::<(), finwait::Error>(())
/// ```
pub struct Waker<A = ()> {
    inner: Arc<WakerInner<A>>,
}

impl<A> Clone for Waker<A> {
    fn clone(&self) -> Self {
        Waker {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// A call sent to a reactor's thread.
type Message<A> = Box<dyn FnOnce(&mut Context<A>) + Send>;

struct WakerInner<A> {
    waker: mio::Waker,
    /// `None` once the reactor is dropped: calls sent then are dropped unrun.
    mailbox: Mutex<Option<Vec<Message<A>>>>,
}

impl<A> std::fmt::Debug for Waker<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").finish_non_exhaustive()
    }
}

impl<A> Waker<A> {
    /// Wakes the reactor. Fails only if the reactor's eventfd cannot be written.
    pub fn wake(&self) -> Result<()> {
        Ok(self.inner.waker.wake()?)
    }

    /// Runs `call` on the reactor's thread in its next turn, with its [`Context`] (before
    /// [`Handler::on_wake`]); the events it causes are delivered in that turn. Calls run in
    /// the order they were sent. Calls still waiting when the reactor is dropped are dropped
    /// unrun (with what they captured).
    ///
    /// # Errors
    ///
    /// [`Error::Destroyed`](crate::Error::Destroyed) once the reactor is dropped (the call is
    /// dropped unrun); an I/O error if the reactor's eventfd cannot be written (the call is
    /// queued regardless).
    pub fn send(&self, call: impl FnOnce(&mut Context<A>) + Send + 'static) -> Result<()> {
        match &mut *self.lock() {
            Some(mailbox) => mailbox.push(Box::new(call)),
            None => return Err(crate::Error::Destroyed),
        }
        self.wake()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Message<A>>>> {
        self.inner.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_messages(&self) -> Vec<Message<A>> {
        self.lock().as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The reactor is gone: drop what waits, refuse what comes.
    fn close(&self) {
        let pending = self.lock().take();
        drop(pending);
    }
}

impl<A> std::fmt::Debug for Reactor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor").field("cx", &self.cx).finish()
    }
}

impl<A> Drop for Reactor<A> {
    fn drop(&mut self) {
        if let Some(waker) = &self.waker {
            waker.close();
        }
    }
}

impl Reactor {
    /// A reactor with its own epoll instance, default [`ReactorOptions`] and the system clock,
    /// whose sockets carry no attachment (see [`with_attachment`](Reactor::with_attachment)).
    pub fn new() -> Result<Reactor> {
        Reactor::with_options(ReactorOptions::default())
    }

    /// A reactor with the given options and the system clock.
    pub fn with_options(options: ReactorOptions) -> Result<Reactor> {
        Reactor::with_clock(options, SystemClock)
    }

    /// A reactor whose time comes from `clock` — a [`ManualClock`](crate::ManualClock)
    /// lets tests drive timeouts and deadlines without sleeping.
    pub fn with_clock(options: ReactorOptions, clock: impl Clock + 'static) -> Result<Reactor> {
        Reactor::with_attachment_and_clock(options, clock)
    }
}

impl<A: Default> Reactor<A> {
    /// A reactor whose sockets each carry an attachment of type `A` (see [`Context`]), with
    /// the given options and the system clock.
    ///
    /// ```no_run
    /// use finwait::{Reactor, ReactorOptions};
    ///
    /// #[derive(Default)]
    /// struct Session { requests: u32 }
    ///
    /// let reactor = Reactor::<Session>::with_attachment(ReactorOptions::default())?;
    /// # Ok::<(), finwait::Error>(())
    /// ```
    pub fn with_attachment(options: ReactorOptions) -> Result<Reactor<A>> {
        Reactor::with_attachment_and_clock(options, SystemClock)
    }

    /// [`with_attachment`](Self::with_attachment) with a clock of the program's choice.
    pub fn with_attachment_and_clock(
        options: ReactorOptions,
        clock: impl Clock + 'static,
    ) -> Result<Reactor<A>> {
        let (poll, registry) = sys::poller()?;
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
            handover: None,
            steering: None,
        })
    }

    /// Turns SIGINT and SIGTERM into a graceful [`shutdown`](Context::shutdown) with `grace`:
    /// listeners close (their accept queues served), connections are asked to finish,
    /// stragglers are destroyed after `grace`, and `run` returns once everything has closed.
    /// A second signal during that shutdown stops at once: every socket is destroyed (RST
    /// where bytes were still queued), the listeners close, and `run` returns in that turn.
    /// Each is logged at `warn` level, the first with the number of open connections.
    ///
    /// Not undone: once registered, the process keeps handling SIGINT and SIGTERM this way
    /// (signal-hook never restores a signal's default action), so after this reactor is gone
    /// those signals no longer terminate the process. A program that lives on after its
    /// reactor should exit by itself or install its own handling.
    pub fn shutdown_on_signals(&mut self, grace: Duration) -> Result<()> {
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        sys::register_signals(
            self.poll.registry(),
            &mut signals,
            TokenKind::Reserved(SIGNAL_TOKEN).to_token(),
        )?;
        self.signals = Some((signals, grace));
        Ok(())
    }

    /// Serves handovers at the Unix-domain socket `path` (zero-downtime restart, see
    /// [`handover`](crate::handover)): a successor that connects there is offered this
    /// reactor's listening sockets; once it adopted them, this reactor stops accepting —
    /// without touching their accept queues, which the successor serves now — and shuts
    /// down gracefully with `grace` ([`Context::shutdown`]): its connections finish, `run`
    /// returns once they closed. A handover that fails half-way changes nothing here.
    ///
    /// Offers the listeners accepting at the time of the offer; the socket file is bound
    /// atomically (renamed over whatever was at `path`) and removed when the reactor is
    /// dropped, unless a successor has put its own there. A second call for the same path
    /// changes nothing.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use finwait::{handover, ListenOptions, Reactor};
    ///
    /// let mut reactor = Reactor::new()?;
    /// // Take over from the running instance, if there is one; else bind.
    /// let path = "/run/myserver.handover";
    /// let grace = Duration::from_secs(30);
    /// match handover::take_over(path)? {
    ///     // Adopts the sockets, serves handovers at `path`, then tells the old one.
    ///     Some(offer) => {
    ///         offer.adopt(&mut reactor, ListenOptions::new(), grace)?;
    ///     }
    ///     None => {
    ///         reactor.listen("127.0.0.1:7000", ListenOptions::new())?;
    ///         reactor.serve_handover(path, grace)?;
    ///     }
    /// }
    /// reactor.run(&mut |cx, id, event| { /* serve */ })?;
    /// # Ok::<(), finwait::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`](crate::Error::InvalidOption) without a listener; an I/O error
    /// binding `path`.
    pub fn serve_handover(
        &mut self,
        path: impl AsRef<std::path::Path>,
        grace: Duration,
    ) -> Result<()>
    where
        A: 'static,
    {
        if self.cx.listener_ids().is_empty() {
            return Err(crate::Error::InvalidOption(
                "nothing to hand over: no listener",
            ));
        }
        let waker = self.waker()?;
        // Copies are made at each offer, on the reactor's thread: only the sockets it still
        // accepts on, and none kept between offers (a copy held here would keep a closed
        // listener's queue alive, its connects neither refused nor served).
        let asked = waker.clone();
        let copies = Box::new(move || crate::handover::ask_copies(&asked));
        let on_accepted = Box::new(move || {
            let _ = waker.send(move |cx: &mut Context<A>| {
                for id in cx.listener_ids() {
                    let _ = cx.hand_over_listener(id);
                }
                cx.shutdown(grace);
            });
        });
        // Already serving there: nothing to do (replacing the server would leave the path
        // missing for a moment, and a successor arriving then would bind anew).
        if self
            .handover
            .as_ref()
            .is_some_and(|h| h.path() == path.as_ref())
        {
            return Ok(());
        }
        self.handover = None;
        self.handover = Some(crate::handover::HandoverServer::start(
            path.as_ref(),
            copies,
            on_accepted,
        )?);
        Ok(())
    }

    /// A handle that wakes this reactor from another thread (see [`Handler::on_wake`]).
    pub fn waker(&mut self) -> Result<Waker<A>> {
        if self.waker.is_none() {
            let waker = sys::waker(
                self.poll.registry(),
                TokenKind::Reserved(WAKER_TOKEN).to_token(),
            )?;
            self.waker = Some(Waker {
                inner: Arc::new(WakerInner {
                    waker,
                    mailbox: Mutex::new(Some(Vec::new())),
                }),
            });
        }
        Ok(self.waker.clone().expect("just set"))
    }

    /// The [`Context`], for acting on sockets outside a handler (before `run`, between
    /// `run_once` calls).
    pub fn context(&self) -> &Context<A> {
        &self.cx
    }

    /// The [`Context`], mutably.
    pub fn context_mut(&mut self) -> &mut Context<A> {
        &mut self.cx
    }

    /// [`Context::listen`], for setting up before `run`.
    pub fn listen(
        &mut self,
        addr: impl std::net::ToSocketAddrs,
        options: crate::ListenOptions,
    ) -> Result<ListenerId> {
        self.cx.listen(addr, options)
    }

    /// [`Context::listen_std`], for setting up before `run`.
    pub fn listen_std(
        &mut self,
        listener: std::net::TcpListener,
        options: crate::ListenOptions,
    ) -> Result<ListenerId> {
        self.cx.listen_std(listener, options)
    }

    /// [`Context::connect`], for setting up before `run`.
    pub fn connect(
        &mut self,
        addr: impl std::net::ToSocketAddrs,
        options: crate::ConnectOptions,
    ) -> Result<SocketId> {
        self.cx.connect(addr, options)
    }

    /// [`Context::listener_addr`].
    pub fn listener_addr(&self, id: ListenerId) -> Result<std::net::SocketAddr> {
        self.cx.listener_addr(id)
    }

    /// [`Context::stats`].
    pub fn stats(&self) -> crate::Stats {
        self.cx.stats()
    }

    /// Runs the closure `handler` on every socket event until [`Context::stop`] is called or
    /// nothing is left to wait for (no listener, no socket, no queued event). The closure's
    /// types are inferred; a handler that keeps attachments, listens to listener events or
    /// overrides [`Handler::on_shutdown_request`] is a [`Handler`] given to
    /// [`serve`](Self::serve).
    ///
    /// ```no_run
    /// use finwait::{Event, ListenOptions, Reactor};
    ///
    /// // An echo server.
    /// let mut reactor = Reactor::new()?;
    /// reactor.listen("127.0.0.1:0", ListenOptions::new())?;
    /// reactor.run(&mut |cx, id, event| {
    ///     if let Event::Data(bytes) = event {
    ///         let _ = cx.write(id, bytes);
    ///     }
    /// })?;
    /// # Ok::<(), finwait::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Only a failure of the poller itself (`epoll_wait`); what happens to sockets arrives as
    /// events.
    pub fn run<F>(&mut self, handler: &mut F) -> Result<()>
    where
        F: FnMut(&mut Context<A>, SocketId, Event<'_>),
    {
        self.serve(handler)
    }

    /// Runs turns, delivering to `handler`, until [`Context::stop`] is called or nothing is
    /// left to wait for (no listener, no socket, no queued event, no shutdown to complete).
    ///
    /// # Errors
    ///
    /// Only a failure of the poller itself (`epoll_wait`).
    pub fn serve<H: Handler<A> + ?Sized>(&mut self, handler: &mut H) -> Result<()> {
        self.cx.stopped = false;
        // A shutdown still to complete is work too: its completion runs in a turn.
        while !self.cx.stopped && (!self.is_idle() || self.cx.shutdown == ShutdownPhase::Draining) {
            self.run_once(handler, None)?;
        }
        Ok(())
    }

    /// Makes this reactor a member of its group's listener steering.
    pub(crate) fn set_steering(&mut self, slot: crate::group::SteeringSlot) {
        self.steering = Some(slot);
    }

    /// Whether nothing is left: no listener, no socket, no queued event.
    pub fn is_idle(&self) -> bool {
        self.cx.sockets.is_empty() && self.cx.listeners.is_empty() && self.cx.queue.is_empty()
    }

    /// Runs one turn, waiting at most `timeout` for readiness (`None`: until something
    /// happens). Events queued by calls made outside a handler are delivered in this turn.
    pub fn run_once<H: Handler<A> + ?Sized>(
        &mut self,
        handler: &mut H,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let busy = !self.cx.ready.is_empty()
            || !self.cx.ready_listeners.is_empty()
            || !self.cx.queue.is_empty()
            || (self.cx.shutdown == ShutdownPhase::Draining && self.is_idle());
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
        // Picks pending at this reactor are looked at again within the expiry, even if
        // nothing else wakes it (a lost SYN must not count as its load for good).
        let timeout = crate::group::poll_timeout(
            timeout,
            self.steering.as_ref().is_some_and(|s| s.has_pending()),
        );
        // A group's steering sends new connections to reactors that are awake: say when
        // this one sleeps.
        let sleeps = timeout != Some(Duration::ZERO) && self.steering.is_some();
        if sleeps && let Some(s) = &self.steering {
            s.set_awake(false);
        }
        let polled = sys::poll(&mut self.poll, &mut self.events, timeout);
        if sleeps && let Some(s) = &self.steering {
            s.set_awake(true);
        }
        polled?;
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
            if self.cx.is_shutting_down() {
                let n = self.cx.socket_ids().len();
                log::warn!(
                    "signal received again: stopping now ({n} connection{} destroyed)",
                    if n == 1 { "" } else { "s" }
                );
                self.cx.stop_now();
            } else {
                let n = self.cx.socket_ids().len();
                log::warn!(
                    "signal received: shutting down, {n} connection{} (grace {grace:?}); \
                     send it again to stop now",
                    if n == 1 { "" } else { "s" }
                );
                self.cx.shutdown(grace);
            }
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
            if let Some(waker) = &self.waker {
                for call in waker.take_messages() {
                    call(&mut self.cx);
                    self.deliver(handler);
                }
            }
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
        if let Some(s) = &mut self.steering {
            if self.cx.is_accepting() {
                let accepted = self.cx.stats.accepted;
                s.publish(accepted, accepted - self.cx.accepted_closed, self.cx.now);
            } else {
                // No listener takes new connections here any more (closed, handed over, or
                // draining its last connections): out of the group's choice at once.
                self.steering = None;
            }
        }
        if self.cx.shutdown == ShutdownPhase::Draining
            && self.cx.sockets.is_empty()
            && self.cx.listeners.is_empty()
        {
            self.cx.shutdown = ShutdownPhase::Complete;
            if let Some(t) = self.cx.shutdown_timer.take() {
                self.cx.timers.cancel(t);
            }
            handler.on_shutdown_complete(&mut self.cx);
            self.deliver(handler);
            self.cx.stopped = true;
        }
        Ok(())
    }

    /// Delivers queued events in order until the queue is empty (handlers may queue more).
    pub(crate) fn deliver<H: Handler<A> + ?Sized>(&mut self, handler: &mut H) {
        while let Some(queued) = self.cx.queue.pop_front() {
            match queued {
                Queued::Socket(id, event) => {
                    // A piped socket's `End`, `Drain` and `Finish` belong to its pipe.
                    if !self.cx.pipes.is_empty()
                        && let Some(pipe) = self.cx.sockets.get(id).and_then(|s| s.pipe)
                        && !self.cx.route_piped(id, pipe, &event)
                    {
                        continue;
                    }
                    let ended = matches!(event, Event::End);
                    let closed = matches!(event, Event::Close(_));
                    let mut attachment = self.cx.lend(id);
                    handler.on_event(&mut self.cx, id, &mut attachment, event);
                    self.cx.give_back(id, attachment, closed);
                    let cx = &mut self.cx;
                    if ended && let Some(slot) = cx.sockets.get_mut(id) {
                        slot.conn.after_end_delivered(&mut cx.actions);
                        cx.apply(id);
                    }
                }
                Queued::Listener(id, event) => handler.on_listener_event(&mut self.cx, id, event),
                Queued::PipeClosed(summary) => handler.on_pipe_closed(&mut self.cx, summary),
            }
        }
    }
}

/// A reactor is built on one thread and may be moved to the thread that runs it.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Reactor>();
    assert_send::<Waker>();
};
