//! [`Context`]: everything a program can do to sockets and listeners, from inside a handler
//! or from outside the loop — and nothing else: the tables it holds are driven by `driver`,
//! which is where calls and readiness become syscalls.
//!
//! Calls apply at once to the socket (a write may go straight to the kernel) but never call
//! the handler: the events they cause are queued and delivered by the loop after the current
//! handler returns (no re-entrancy).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::Registry;

use crate::driver::{Queued, ShutdownPhase, TimerKey, later};
use crate::error::{Error, Result};
use crate::event::ReadyState;
use crate::id::{ListenerId, PipeId, SocketId};
use crate::listener::{ListenerActions, ListenerSlot};
use crate::options::{ConnectOptions, ListenOptions, ReactorOptions};
use crate::pipe::{PipeAction, PipeMachine, PipeOptions, PipePool, PipeSlot, Side, Splice};
use crate::socket::Slot;
use crate::socket::machine::{Actions, State};
use crate::stats::Stats;
use crate::sys;
use crate::table::Table;
use crate::timers::{Clock, Timers};

/// The reactor's state that handlers act on: sockets, listeners, the event queue, and each
/// socket's attachment.
///
/// `A` is the type of the **attachment**: the value a program keeps with each socket (its
/// per-connection state — a parser, a peer's id, counters), created with `A::default()` when
/// the socket is accepted or connected, handed to the handler beside every event of that
/// socket (no lookup by the program), and dropped with the socket's `Close`. `()` — the
/// default — stores nothing. See [`attachment_mut`](Self::attachment_mut) and
/// [`Handler`](crate::Handler).
///
/// Every method taking an id checks it: an id whose socket was reclaimed gives
/// [`Error::StaleId`]; a socket destroyed earlier in the same batch gives
/// [`Error::Destroyed`]. Nothing here panics on a bad id.
pub struct Context<A = ()> {
    pub(crate) registry: Registry,
    pub(crate) sockets: Table<SocketId, Slot>,
    pub(crate) listeners: Table<ListenerId, ListenerSlot>,
    pub(crate) pipes: Table<PipeId, PipeSlot>,
    /// Scratch buffer for a pipe machine's actions.
    pub(crate) pipe_actions: Vec<PipeAction>,
    /// Kernel pipes for spliced directions.
    pub(crate) pipe_pool: PipePool,
    pub(crate) queue: VecDeque<Queued>,
    /// Scratch buffers for the machines' actions, drained by the driver after each input.
    pub(crate) actions: Actions,
    pub(crate) listener_actions: ListenerActions,
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
    /// The grace deadline of the running reactor-wide shutdown.
    pub(crate) shutdown_timer: Option<crate::timers::TimerId>,
    /// Counters for operators; bytes of closed sockets only (live ones are added on read).
    pub(crate) stats: Stats,
    /// Accepted sockets whose slot was freed: with `stats.accepted`, the accepted sockets
    /// still open (a group's steering publishes it as the reactor's load).
    pub(crate) accepted_closed: u64,
    /// Each socket's attachment, at its slot's index; `None` until first used, and again once
    /// the socket is closed or its attachment is lent to the handler.
    pub(crate) attachments: Vec<Option<A>>,
    /// The socket whose attachment the handler is holding right now.
    pub(crate) lent: Option<SocketId>,
}

impl<A> std::fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("sockets", &self.sockets.len())
            .field("listeners", &self.listeners.len())
            .field("queued_events", &self.queue.len())
            .field("shutdown", &self.shutdown)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Resolves what a program wrote (`"127.0.0.1:7000"`, `"localhost:7000"`, a `SocketAddr`,
/// `(IpAddr, u16)`) with the system resolver. An address literal never blocks; a host name
/// may (getaddrinfo): see [`Context::connect`].
fn resolve(addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(no_address());
    }
    Ok(addrs)
}

fn no_address() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "the address resolved to no socket address",
    ))
}

impl<A> Context<A> {
    pub(crate) fn new(
        registry: Registry,
        clock: Box<dyn Clock>,
        options: ReactorOptions,
    ) -> Context<A> {
        let now = clock.now();
        let pipe_pool = PipePool::new(options.splice_pipes, options.splice_pipe_size);
        Context {
            attachments: Vec::new(),
            lent: None,
            timers: Timers::new(),
            clock,
            now,
            options,
            shutdown: ShutdownPhase::Running,
            shutdown_timer: None,
            registry,
            sockets: Table::default(),
            listeners: Table::default(),
            pipes: Table::default(),
            pipe_actions: Vec::new(),
            pipe_pool,
            queue: VecDeque::new(),
            actions: Actions::new(),
            listener_actions: ListenerActions::new(),
            ready: Vec::new(),
            ready_listeners: Vec::new(),
            reclaim: Vec::new(),
            reclaim_listeners: Vec::new(),
            stopped: false,
            stats: Stats::default(),
            accepted_closed: 0,
        }
    }

    // ---- attachments -----------------------------------------------------------------------

    /// Takes socket `id`'s attachment to hand it to the handler (`A::default()` the first
    /// time). A zero-sized attachment — `()` — costs nothing here.
    pub(crate) fn lend(&mut self, id: SocketId) -> A
    where
        A: Default,
    {
        if std::mem::size_of::<A>() == 0 {
            return A::default();
        }
        self.lent = Some(id);
        self.attachments
            .get_mut(id.index())
            .and_then(Option::take)
            .unwrap_or_default()
    }

    /// Puts back what [`lend`](Self::lend) took, or drops it if the event was the socket's
    /// `Close`.
    pub(crate) fn give_back(&mut self, id: SocketId, attachment: A, closed: bool) {
        if std::mem::size_of::<A>() == 0 {
            return;
        }
        self.lent = None;
        if closed {
            return;
        }
        let index = id.index();
        if self.attachments.len() <= index {
            self.attachments.resize_with(index + 1, || None);
        }
        self.attachments[index] = Some(attachment);
    }

    // ---- listeners -----------------------------------------------------------------------

    /// Listens on `addr` — anything [`ToSocketAddrs`] takes: `"127.0.0.1:7000"`,
    /// `"localhost:7000"`, a `SocketAddr`, `(IpAddr, u16)`; the first resolved address that
    /// binds wins, as with `std::net::TcpListener::bind` (port 0 picks a free port; see
    /// [`listener_addr`](Self::listener_addr)).
    /// Accepted sockets arrive as [`Event::Accepted`](crate::Event::Accepted).
    ///
    /// ```no_run
    /// use finwait::{ListenOptions, Reactor};
    ///
    /// let mut reactor = Reactor::new()?;
    /// let options = ListenOptions::new().allow_half_open(true).max_connections(Some(10_000));
    /// let id = reactor.listen("127.0.0.1:0", options)?;
    /// println!("listening on {}", reactor.listener_addr(id)?);
    /// # Ok::<(), finwait::Error>(())
    /// ```
    pub fn listen(
        &mut self,
        addr: impl ToSocketAddrs,
        options: ListenOptions,
    ) -> Result<ListenerId> {
        if options.backlog == 0 {
            return Err(Error::InvalidOption("backlog must be at least 1"));
        }
        if options.high_water_mark == 0 {
            return Err(Error::InvalidOption("high_water_mark must be at least 1"));
        }
        // Like std's `TcpListener::bind`: the first address that binds wins.
        let mut last = None;
        for addr in resolve(addr)? {
            match sys::listen(addr, options.backlog, options.no_delay, options.reuse_port) {
                Ok(listener) => return self.adopt_listener(listener, options),
                Err(e) => last = Some(Error::io_about(addr, e)),
            }
        }
        Err(last.unwrap_or_else(no_address))
    }

    /// Serves a listening socket made elsewhere: a `std::net::TcpListener`, or an fd passed by
    /// systemd (`LISTEN_FDS`, fds from 3 on) or by a predecessor process, turned into one with
    /// [`FromRawFd`](std::os::fd::FromRawFd). The listener becomes non-blocking and gets
    /// `TCP_NODELAY` per `options.no_delay`; `options.backlog` and `options.reuse_port` are
    /// what the socket was made with and are not changed. Accepted sockets arrive as
    /// [`Event::Accepted`](crate::Event::Accepted), as with [`listen`](Self::listen).
    ///
    /// ```no_run
    /// use finwait::{ListenOptions, Reactor};
    ///
    /// let mut reactor = Reactor::new()?;
    /// let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let id = reactor.listen_std(std_listener, ListenOptions::new())?;
    /// println!("listening on {}", reactor.listener_addr(id)?);
    /// # Ok::<(), finwait::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a zero `high_water_mark`; [`Error::Io`] with
    /// `InvalidInput` when the socket is not listening, or the error of the `fcntl`,
    /// `setsockopt` or `epoll_ctl` that failed.
    pub fn listen_std(
        &mut self,
        listener: std::net::TcpListener,
        options: ListenOptions,
    ) -> Result<ListenerId> {
        if options.high_water_mark == 0 {
            return Err(Error::InvalidOption("high_water_mark must be at least 1"));
        }
        let listener = sys::adopt_listener(listener, options.no_delay)?;
        self.adopt_listener(listener, options)
    }

    /// Whether some listener of this reactor still accepts (one closing, handed over or
    /// draining its sockets does not).
    pub(crate) fn is_accepting(&self) -> bool {
        self.listeners.iter().any(|(_, l)| l.machine.is_accepting())
    }

    /// Copies of the listening sockets this reactor still accepts on, with their addresses,
    /// for a handover offer.
    pub(crate) fn listener_copies(
        &self,
    ) -> std::io::Result<Vec<(std::os::fd::OwnedFd, SocketAddr)>> {
        let mut copies = Vec::new();
        for (_, slot) in self.listeners.iter() {
            if slot.machine.is_accepting()
                && let Some(l) = &slot.listener
            {
                copies.push((sys::dup(std::os::fd::AsFd::as_fd(l))?, l.local_addr()?));
            }
        }
        Ok(copies)
    }

    /// Lets go of a listening socket that is served elsewhere now — handed to a successor
    /// ([`handover`](crate::handover)), or adopted by another reactor: this reactor stops
    /// accepting at once and closes its fd, **without** taking the accept queue, which
    /// belongs to whoever holds the socket now (closing the last fd would reset it; this is
    /// not the last). Its connections carry on; the listener's `Close` comes after the last
    /// of them. Use [`close_listener`](Self::close_listener) for a listener nobody else
    /// holds.
    ///
    /// # Errors
    ///
    /// [`Error::StaleId`] for an unknown listener, [`Error::Destroyed`] for one already
    /// closed.
    pub fn hand_over_listener(&mut self, id: ListenerId) -> Result<()> {
        self.drive_listener(id, |l, out| l.hand_over(out))
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, id: ListenerId) -> Result<SocketAddr> {
        match &self.listener(id)?.listener {
            Some(l) => Ok(sys::listener_addr(l)?),
            None => Err(Error::Destroyed),
        }
    }

    /// Closes a listener: new connects are refused from now on, instead of waiting in a
    /// kernel backlog nobody will accept from. Connections that already completed their
    /// handshake and wait in the accept queue (a client may have sent its request) are taken
    /// off it first — past `max_connections` if need be — and delivered as
    /// [`Event::Accepted`](crate::Event::Accepted) like any other, so closing resets none of
    /// them (Node, nginx and tokio close the fd and the kernel resets them all). Sockets it
    /// accepted are left alone; [`ListenerEvent::Close`](crate::ListenerEvent::Close) comes
    /// once the last of them has closed (unlike Node, whose server `close` precedes its
    /// sockets' `close`).
    ///
    /// Not guaranteed: a handshake that completes between the last `accept` of that sweep
    /// and the `close` itself (microseconds) is still reset by the kernel; and when the
    /// process runs out of file descriptors during the sweep, what it could not take is reset
    /// too (logged, and counted in [`Stats::accept_errors`](crate::Stats::accept_errors)).
    ///
    /// # Errors
    ///
    /// [`Error::StaleId`] for an unknown id, [`Error::Destroyed`] if already closed.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, listener: finwait::ListenerId) -> finwait::Result<()> {
    /// cx.close_listener(listener)?; // `ListenerEvent::Close` after its last socket's `Close`
    /// # Ok(()) }
    /// ```
    pub fn close_listener(&mut self, id: ListenerId) -> Result<()> {
        self.drive_listener(id, |l, out| l.close(out))
    }

    /// Ids of the listeners still open.
    pub fn listener_ids(&self) -> Vec<ListenerId> {
        self.listeners
            .iter()
            .filter(|(_, l)| l.machine.is_listening())
            .map(|(id, _)| id)
            .collect()
    }

    // ---- sockets: creation ---------------------------------------------------------------

    /// Connects to `addr` (`"127.0.0.1:7000"`, `"example.com:80"`, a `SocketAddr`, …; with
    /// several addresses, the first — of the local address's family when one is set). Returns at once; the outcome arrives as [`Event::Connect`](crate::Event::Connect), or as
    /// [`Event::Error`](crate::Event::Error) + [`Event::Close`](crate::Event::Close) (a refused connect included — like Node, connect
    /// failures are events, never this call's result). Writes and `end` made before the
    /// connect completes are queued and applied in order once it does.
    ///
    /// A host name is resolved here, with the system resolver, which blocks the loop while
    /// it waits: resolve names that may be slow before the loop starts, or off the loop, and
    /// pass the address. Address literals never block.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a zero high-water mark or a local address of the other
    /// family; [`Error::Io`] when the name does not resolve. A refused or failed connect is
    /// not an error of this call: it arrives as `Error` + `Close` events.
    ///
    /// ```no_run
    /// use finwait::{ConnectOptions, Event, Reactor};
    ///
    /// let mut reactor = Reactor::new()?;
    /// let id = reactor.connect("127.0.0.1:7000", ConnectOptions::new())?;
    /// let cx = reactor.context_mut();
    /// cx.write(id, b"hello\n")?; // queued until the connect completes
    /// cx.end(id)?; // then FIN, after those bytes
    /// reactor.run(&mut |_, _, event| match event {
    ///     Event::Data(bytes) => print!("{}", String::from_utf8_lossy(bytes)),
    ///     Event::Error(e) => eprintln!("{e}"), // refused, reset, ...
    ///     _ => {}
    /// })?;
    /// # Ok::<(), finwait::Error>(())
    /// ```
    pub fn connect(
        &mut self,
        addr: impl ToSocketAddrs,
        options: ConnectOptions,
    ) -> Result<SocketId> {
        if options.high_water_mark == 0 {
            return Err(Error::InvalidOption("high_water_mark must be at least 1"));
        }
        let addrs = resolve(addr)?;
        // With a local address, the first remote address of its family; else the first.
        let addr = match options.local_addr {
            Some(local) => addrs
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == local.is_ipv4())
                .ok_or(Error::InvalidOption(
                    "local_addr must be of the same address family as the remote address",
                ))?,
            None => *addrs.first().ok_or_else(no_address)?,
        };
        Ok(self.open_connection(addr, options))
    }

    // ---- sockets: operations -------------------------------------------------------------

    /// Writes `data`. Returns whether the queue is still under the high-water mark (Node's
    /// `write()` result): `false` asks the program to wait for [`Event::Drain`](crate::Event::Drain), but nothing
    /// written past it is lost.
    ///
    /// When nothing is queued the bytes go straight to the kernel and only what it did not
    /// take is copied into the queue. After `end()` this returns [`Error::WriteAfterEnd`] and
    /// changes nothing: the connection goes on ending gracefully. If the kernel reports an
    /// error the socket is destroyed (events follow) and the bytes count as unsent.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId, chunk: &[u8]) -> finwait::Result<()> {
    /// // Backpressure: above the high-water mark, stop reading until `Event::Drain`.
    /// if !cx.write(id, chunk)? {
    ///     cx.pause(id)?; // and `cx.resume(id)` on Drain
    /// }
    /// # Ok(()) }
    /// ```
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

    /// Ends the writing side: every queued byte goes out, then the FIN ([`Event::Finish`](crate::Event::Finish)).
    /// Reading goes on until the peer's FIN. A second `end` is a no-op.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// cx.write(id, b"bye\n")?;
    /// cx.end(id)?; // FIN after "bye\n"; `Finish` once it is handed to the kernel
    /// # Ok(()) }
    /// ```
    pub fn end(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.end(out))
    }

    /// Writes a last chunk, then ends (Node's `end(data)`). After `end()` this returns
    /// [`Error::WriteAfterEnd`] and changes nothing.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// cx.end_with(id, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// cx.destroy(id)?; // `Close { reason: LocalDestroy, unsent, .. }` after this handler
    /// # Ok(()) }
    /// ```
    pub fn destroy(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.destroy(None, out))
    }

    /// Like [`destroy`](Self::destroy) but reports `error` (any error of the program's own):
    /// [`Event::Error`](crate::Event::Error) carrying [`Error::Application`], then `Close` with
    /// `had_error == true` and reason `LocalDestroy`. The error is kept apart from finwait's
    /// own misuse and transport errors, so a handler never mistakes it for either.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// cx.destroy_with(id, "request body too large")?;
    /// # Ok(()) }
    /// ```
    pub fn destroy_with(
        &mut self,
        id: SocketId,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<()> {
        let error = Error::Application(error.into());
        self.drive(id, |conn, out| conn.destroy(Some(error), out))
    }

    /// Lingering close: flush, FIN, then read and discard input until the peer's FIN (or the
    /// linger deadline), then close. Never turns into an RST because of unread input. The
    /// program gets no more `Data` and no `End`.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// // A goodbye that arrives whole even if the peer sent data we never read.
    /// cx.write(id, b"Goodbye\n")?;
    /// cx.destroy_soon(id)?;
    /// # Ok(()) }
    /// ```
    pub fn destroy_soon(&mut self, id: SocketId) -> Result<()> {
        self.drive(id, |conn, out| conn.destroy_soon(out))
    }

    /// Sends RST (`SO_LINGER{on, 0}` + close) and destroys, in every state — after `end()`
    /// too. Queued bytes are dropped and counted as unsent.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context, id: finwait::SocketId) -> finwait::Result<()> {
    /// cx.reset_and_destroy(id)?; // the peer's next read fails with ECONNRESET
    /// # Ok(()) }
    /// ```
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
        Ok(sys::set_no_delay(self.stream(id)?, no_delay)?)
    }

    /// Enables TCP keep-alive probes after `idle` without traffic, or disables them (`None`).
    pub fn set_keep_alive(&mut self, id: SocketId, idle: Option<Duration>) -> Result<()> {
        Ok(sys::set_keep_alive(self.stream(id)?, idle)?)
    }

    /// Socket `id`'s attachment (see [`Context`]): for setting up a socket the program
    /// created — an outgoing connection that must know its partner — or for reaching another
    /// socket's state from a handler. The socket an event is about gets its own attachment
    /// as the handler's argument instead; asking for it here fails.
    ///
    /// ```no_run
    /// use finwait::{ConnectOptions, Context, Event, Handler, SocketId};
    ///
    /// /// Each socket of a proxy knows its partner.
    /// #[derive(Default)]
    /// struct Side {
    ///     partner: Option<SocketId>,
    /// }
    ///
    /// struct Proxy;
    /// impl Handler<Side> for Proxy {
    ///     fn on_event(&mut self, cx: &mut Context<Side>, id: SocketId, side: &mut Side, event: Event<'_>) {
    ///         match event {
    ///             Event::Accepted(_) => {
    ///                 if let Ok(up) = cx.connect("127.0.0.1:8080", ConnectOptions::new()) {
    ///                     side.partner = Some(up);
    ///                     // The new socket's attachment, set before its first event.
    ///                     if let Ok(up_side) = cx.attachment_mut(up) {
    ///                         up_side.partner = Some(id);
    ///                     }
    ///                 }
    ///             }
    ///             Event::Data(bytes) => {
    ///                 if let Some(partner) = side.partner {
    ///                     let _ = cx.write(partner, bytes);
    ///                 }
    ///             }
    ///             _ => {}
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::StaleId`] for an unknown id, [`Error::Destroyed`] once the socket is
    /// destroyed (its `Close` gets the attachment), [`Error::AttachmentInUse`] for the socket
    /// the running handler call is about.
    pub fn attachment_mut(&mut self, id: SocketId) -> Result<&mut A>
    where
        A: Default,
    {
        if self.slot(id)?.conn.is_destroyed() {
            return Err(Error::Destroyed);
        }
        if self.lent == Some(id) {
            return Err(Error::AttachmentInUse);
        }
        let index = id.index();
        if self.attachments.len() <= index {
            self.attachments.resize_with(index + 1, || None);
        }
        Ok(self.attachments[index].get_or_insert_with(A::default))
    }

    /// Forwards both ways between sockets `a` and `b` — a proxy's pair — carrying the close
    /// model across (SEMANTICS B5):
    ///
    /// - bytes read from one are written to the other, with backpressure: a side whose
    ///   destination is over its high-water mark is paused until the destination drains;
    /// - a side's FIN is passed on (`end()` of the other) after every byte read before it,
    ///   and the other direction keeps flowing (both sockets become half-open);
    /// - when one side's stream breaks — peer reset, error, [`reset_and_destroy`], bytes
    ///   dropped — the other is reset, so its peer sees ECONNRESET and never mistakes a
    ///   truncated stream for a complete one ([`PipeOptions::reset_on_break`] turns that
    ///   into a lingering close). A side that closes without loss (a `destroy` with nothing
    ///   queued, a deadline) gives the other a lingering close (flush, FIN, discard input);
    /// - a half-closed pair cannot wait forever: the side that was `end()`ed has the FIN
    ///   wait ([`ReactorOptions::fin_wait`]), and its close ends the other side;
    /// - once both sockets closed, [`Handler::on_pipe_closed`](crate::Handler::on_pipe_closed)
    ///   gets one [`PipeSummary`](crate::PipeSummary): bytes each way, which side closed first,
    ///   and how each closed.
    ///
    /// While piped, a socket's `End`, `Drain` and `Finish` go to the pipe, and its `Data`
    /// too unless [`PipeOptions::watch`] is on; `Connect`, `Timeout`, `Error` and `Close`
    /// still reach the handler. A socket still connecting can be piped: bytes for it are
    /// queued until it connects, and a failed connect resets the other side. A graceful
    /// shutdown does not ask piped sockets to finish (no
    /// [`on_shutdown_request`](crate::Handler::on_shutdown_request)): a pair ends when its
    /// peers are done, bounded by the grace period.
    ///
    /// **Zero-copy**: by default ([`Splice::Auto`](crate::Splice::Auto)) a direction that
    /// streams — one read fills the 64 KiB read buffer — moves on by `splice(2)` through a
    /// kernel pipe, its bytes never entering the process; small exchanges keep copying, which
    /// costs fewer syscalls. The destination's FIN still follows every byte, also those held
    /// in the kernel pipe, and a destination closed while the pipe holds bytes is reset. Kernel
    /// pipes are bounded by [`ReactorOptions::splice_pipes`] and hold up to
    /// [`ReactorOptions::splice_pipe_size`] each (256 KiB); past the bound, out of fds, or out
    /// of the user's pipe pages, a direction copies. Writing to a piped socket yourself while it
    /// splices may reorder bytes: leave a piped socket's output to its pipe.
    ///
    /// ```no_run
    /// use finwait::{ConnectOptions, Event, ListenOptions, PipeOptions, Reactor};
    ///
    /// // A TCP proxy: every accepted connection is piped to a new upstream connection.
    /// let mut reactor = Reactor::new()?;
    /// reactor.listen("127.0.0.1:7000", ListenOptions::new())?;
    /// reactor.run(&mut |cx, id, event| {
    ///     if let Event::Accepted(_) = event {
    ///         let piped = cx
    ///             .connect("127.0.0.1:8080", ConnectOptions::new())
    ///             .and_then(|upstream| cx.pipe(id, upstream, PipeOptions::new()));
    ///         if piped.is_err() {
    ///             let _ = cx.reset_and_destroy(id);
    ///         }
    ///     }
    /// })?;
    /// # Ok::<(), finwait::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::StaleId`] or [`Error::Destroyed`] for a socket that is gone;
    /// [`Error::InvalidOption`] when `a == b` or either socket is already piped. Pipe a
    /// socket before its `End` is delivered, or give it `allow_half_open`: one that ended
    /// itself at its peer's FIN can no longer take the other side's bytes, and the pipe
    /// resets that other side.
    ///
    /// [`reset_and_destroy`]: Self::reset_and_destroy
    /// [`ReactorOptions::fin_wait`]: crate::ReactorOptions::fin_wait
    pub fn pipe(&mut self, a: SocketId, b: SocketId, options: PipeOptions) -> Result<PipeId> {
        if a == b {
            return Err(Error::InvalidOption("a socket cannot be piped to itself"));
        }
        for id in [a, b] {
            let slot = self.slot(id)?;
            if slot.conn.is_destroyed() {
                return Err(Error::Destroyed);
            }
            if slot.pipe.is_some() {
                return Err(Error::InvalidOption("the socket is already piped"));
            }
        }
        let pipe = self.pipes.insert(PipeSlot {
            sockets: [a, b],
            machine: PipeMachine::new(options.reset_on_break),
            watch: options.watch,
            // Watched bytes must pass through the handler.
            splice: if options.watch {
                Splice::Off
            } else {
                options.splice
            },
            spliced: [None, None],
        });
        for (side, id) in [(Side::A, a), (Side::B, b)] {
            let slot = self.slot_mut(id)?;
            slot.pipe = Some(pipe);
            slot.conn.set_allow_half_open(true);
            // A FIN that already came (its `End` delivered, or still queued — the machine
            // takes a side's FIN once) is passed on now.
            let peer_fin = matches!(
                slot.conn.state(),
                State::HalfClosedRemote | State::Closing { peer_fin: true, .. }
            );
            // The pipe reads both sides from now on.
            let _ = self.resume(id);
            if peer_fin && let Some(p) = self.pipes.get_mut(pipe) {
                p.machine.on_end(side, &mut self.pipe_actions);
            }
        }
        self.apply_pipe(pipe);
        Ok(pipe)
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
        Ok(sys::local_addr(self.stream(id)?)?)
    }

    /// The peer's address.
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddr> {
        Ok(sys::peer_addr(self.stream(id)?)?)
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
            .map(|(id, _)| id)
            .collect()
    }

    /// What this reactor has seen since it started: connections accepted and connected,
    /// closes by reason, resets sent and received, deadlines by kind, accept errors, bytes
    /// each way. Reading it costs one pass over the live sockets (for their bytes).
    ///
    /// ```no_run
    /// # fn f(cx: &finwait::Context) {
    /// log::info!("shutting down: {}", cx.stats());
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        for (_, slot) in self.sockets.iter() {
            if !slot.conn.is_destroyed() {
                stats.bytes_read += slot.conn.bytes_read();
                stats.bytes_written += slot.conn.bytes_written();
            }
        }
        stats
    }

    /// Makes [`Reactor::run`](crate::Reactor::run) return after the current turn.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Arms (or re-arms) the idle timeout: [`Event::Timeout`](crate::Event::Timeout) after `timeout` with no byte
    /// read or written, then again after each further idle period that follows traffic.
    /// Nothing is closed: the handler decides. `None` or zero disarms.
    ///
    /// Re-arming on activity is free: a read or write only stamps the socket; the timer is
    /// checked lazily when it comes due.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use finwait::{Context, Event, SocketId};
    ///
    /// fn on_event(cx: &mut Context, id: SocketId, event: Event<'_>) -> finwait::Result<()> {
    ///     match event {
    ///         Event::Accepted(_) => cx.set_timeout(id, Some(Duration::from_secs(30)))?,
    ///         Event::Timeout => cx.end(id)?, // 30 s without traffic: end gracefully
    ///         _ => {}
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn set_timeout(&mut self, id: SocketId, timeout: Option<Duration>) -> Result<()> {
        let slot = self.sockets.get_mut(id).ok_or(Error::StaleId)?;
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
    /// are refused; connections waiting in its accept queue are taken and served, see
    /// [`close_listener`](Self::close_listener)), every connection is asked to finish —
    /// [`Handler::on_shutdown_request`](crate::Handler::on_shutdown_request), after the
    /// reactor read what was waiting on it; by default it is `end()`ed: queued data flushed,
    /// then FIN — and whatever is still open after `grace` is destroyed with
    /// [`CloseReason::Deadline`](crate::CloseReason::Deadline)`(Shutdown)`. Once everything
    /// has closed, [`Handler::on_shutdown_complete`](crate::Handler::on_shutdown_complete)
    /// runs and [`Reactor::run`](crate::Reactor::run) returns. A second call while one is
    /// running does nothing; once it completed, the reactor may serve again (new listeners, new
    /// connections) and be shut down again. On a reactor with nothing open it completes in
    /// the next turn.
    ///
    /// ```no_run
    /// # fn f(cx: &mut finwait::Context) {
    /// cx.shutdown(std::time::Duration::from_secs(5));
    /// # }
    /// ```
    pub fn shutdown(&mut self, grace: Duration) {
        if self.shutdown == ShutdownPhase::Draining {
            return;
        }
        self.shutdown = ShutdownPhase::Draining;
        for lid in self.listener_ids() {
            let _ = self.close_listener(lid);
        }
        for id in self.socket_ids() {
            self.request_finish(id);
        }
        self.shutdown_timer = Some(
            self.timers
                .arm_deadline(TimerKey::Shutdown(None), later(self.now, grace)),
        );
    }

    /// Stops at once, without grace: every listener closes, every socket is destroyed
    /// ([`destroy`](Self::destroy): queued bytes dropped and counted, RST where there were
    /// any), and [`Reactor::run`](crate::Reactor::run) returns once this turn's events are
    /// delivered. For a second Ctrl-C; a graceful [`shutdown`](Self::shutdown) is the normal
    /// way out.
    pub fn stop_now(&mut self) {
        for id in self.listener_ids() {
            let _ = self.close_listener(id);
        }
        for id in self.socket_ids() {
            let _ = self.destroy(id);
        }
        self.stopped = true;
    }

    /// Graceful shutdown of one listener: it closes at once (its accept queue taken and
    /// served, see [`close_listener`](Self::close_listener)), its connections are asked to
    /// finish ([`Handler::on_shutdown_request`](crate::Handler::on_shutdown_request); by
    /// default `end()`), those still open after `grace` are destroyed, and
    /// [`ListenerEvent::Close`](crate::ListenerEvent::Close) reports the end (once its last
    /// socket closed). A second call does nothing.
    pub fn shutdown_listener(&mut self, id: ListenerId, grace: Duration) -> Result<()> {
        self.drive_listener(id, |l, out| l.shutdown(grace, out))
    }

    /// Whether a reactor-wide graceful shutdown is running or complete.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown != ShutdownPhase::Running
    }
}
