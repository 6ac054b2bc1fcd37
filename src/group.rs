//! [`Group`]: one reactor per thread, serving the same address, started and stopped as one.
//!
//! Each reactor stays single-threaded and owns its own `SO_REUSEPORT` listener on the shared
//! address, so no connection is handed from thread to thread and the reactors share nothing
//! but the port. Reactors reach each other through their [`Waker`]s, which carry calls to run
//! on the reactor's own thread.
//!
//! Which listener a new connection joins is decided by the kernel at its SYN. By default
//! ([`Steering::PreferAwake`]) a small socket-reuseport BPF program makes that choice: an
//! awake reactor first, else the one chosen last, as long as it holds fewer than
//! [`STEERING_LOAD_SLACK`] connections more than the least loaded reactor and was given fewer
//! than [`STEERING_SLACK`] more than the least picked one — so at low load one reactor
//! serves while the others sleep (a reactor woken for every other connection costs more CPU per connection: see
//! BENCHMARKS.md, "Many cores"), and at saturation they take turns. Where the kernel refuses
//! the program (no `CAP_BPF`), and with [`Steering::Hash`], the kernel's hash of the 4-tuple
//! spreads them (socket(7)): even, and blind to load.
//!
//! A reactor that leaves the group, or the group shutting down, never resets a connection
//! queued on a listening socket: each listener takes its accept queue before it closes
//! (SEMANTICS B2.13) and serves what it took. With `net.ipv4.tcp_migrate_req = 1` (Linux
//! 5.14, per network namespace; off by default) the kernel also moves connections that
//! complete their handshake on a closing listener to a sibling in the group, which closes the
//! window a handshake completing between the sweep and the close leaves, for a reactor that
//! leaves while its siblings serve on (by the hash: the steering program is attached as
//! `BPF_SK_REUSEPORT_SELECT`, which leaves migration to the kernel, `reuseport_migrate_sock`
//! in net/core/sock_reuseport.c). One kernel race remains: a handshake whose final ACK
//! is being processed at the very instant of the close is reset (`inet_csk_reqsk_queue_add`
//! finds the listener closed and calls `inet_child_forget`, net/ipv4/inet_connection_sock.c)
//! before the client's `connect` returns. No program on either side ever held such a
//! connection, and only handshakes in flight at that instant can meet it: measured here, 2 of
//! about 120,000 connections made while a reactor left, 100 times, under a connect loop
//! (`tests/group_migration.rs`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::id::ListenerId;
use crate::options::{ListenOptions, ReactorOptions};
use crate::reactor::{Reactor, Waker};
use crate::stats::Stats;
use crate::sys;

mod steering;
pub use steering::{LOAD_SLACK as STEERING_LOAD_SLACK, SLACK as STEERING_SLACK, Steering};
pub(crate) use steering::{SteeringSlot, poll_timeout};

/// How a [`Group`] is made.
///
/// ```
/// use finwait::{GroupOptions, ListenOptions};
/// let opts = GroupOptions::new(4).listen(ListenOptions::new().backlog(4096));
/// assert_eq!(opts.reactors, 4);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GroupOptions {
    /// How many reactors (threads); at least 1.
    pub reactors: usize,
    /// Options of every reactor's listener (`reuse_port` is set for them).
    pub listen: ListenOptions,
    /// Options of every reactor.
    pub reactor: ReactorOptions,
    /// SIGINT/SIGTERM shut the whole group down gracefully with this grace (default none:
    /// signals are left alone).
    pub shutdown_on_signals: Option<Duration>,
    /// Which reactor gets a new connection (default [`Steering::PreferAwake`], which falls
    /// back to [`Steering::Hash`] where the kernel refuses its program).
    pub steering: Steering,
    /// With [`Steering::PreferAwake`]: an awake reactor (or the one picked last) is given the
    /// next connection instead of waking another only while its load — connections given to
    /// it and not closed yet — is less than the least loaded reactor's plus this (default
    /// [`STEERING_LOAD_SLACK`], 2: up to one more). Higher saves wake-ups, and CPU per
    /// connection, when many short connections arrive at partial load; lower spreads a few
    /// long-lived connections evenly; 0 always gives the least loaded reactor (no preference
    /// for awake ones). BENCHMARKS.md ("Many cores") measures the choices.
    pub steering_load_slack: u32,
}

impl GroupOptions {
    /// `reactors` reactors with default listener and reactor options.
    pub fn new(reactors: usize) -> Self {
        GroupOptions {
            reactors,
            listen: ListenOptions::new(),
            reactor: ReactorOptions::new(),
            shutdown_on_signals: None,
            steering: Steering::default(),
            steering_load_slack: steering::LOAD_SLACK,
        }
    }
    /// Sets [`steering_load_slack`](Self::steering_load_slack).
    pub fn steering_load_slack(mut self, slack: u32) -> Self {
        self.steering_load_slack = slack;
        self
    }
    /// Sets [`steering`](Self::steering).
    pub fn steering(mut self, steering: Steering) -> Self {
        self.steering = steering;
        self
    }
    /// Sets [`listen`](Self::listen).
    pub fn listen(mut self, options: ListenOptions) -> Self {
        self.listen = options;
        self
    }
    /// Sets [`reactor`](Self::reactor).
    pub fn reactor(mut self, options: ReactorOptions) -> Self {
        self.reactor = options;
        self
    }
    /// Sets [`shutdown_on_signals`](Self::shutdown_on_signals).
    pub fn shutdown_on_signals(mut self, grace: Option<Duration>) -> Self {
        self.shutdown_on_signals = grace;
        self
    }
}

/// What one reactor of a group is told when it starts: its place in the group and its
/// listener. Handed to the function that builds its handler, on the reactor's own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// 0-based index of this reactor in the group.
    pub index: usize,
    /// This reactor's listener on the group's address.
    pub listener: ListenerId,
}

/// A group of reactors, one thread each, serving one address: a program written for one
/// reactor runs on N by saying N.
///
/// Every reactor binds its own `SO_REUSEPORT` listener on the address and runs the handler
/// that `make` builds for it — on its own thread, so the handler needs not be `Send`. The
/// group is stopped as one with [`shutdown`](Group::shutdown) (or a signal, see
/// [`GroupOptions::shutdown_on_signals`]), and [`join`](Group::join) returns once every
/// reactor's last connection has closed: the group's one completion.
///
/// ```no_run
/// use std::time::Duration;
/// use finwait::{Context, Event, Group, GroupOptions, SocketId};
///
/// // An echo server on 4 cores.
/// let group = Group::listen(
///     "127.0.0.1:7000",
///     GroupOptions::new(4).shutdown_on_signals(Some(Duration::from_secs(5))),
///     |_member| {
///         |cx: &mut Context, id: SocketId, event: Event<'_>| {
///             if let Event::Data(bytes) = event {
///                 let _ = cx.write(id, bytes);
///             }
///         }
///     },
/// )?;
/// println!("listening on {}", group.local_addr());
/// group.join()?; // after SIGTERM, once every connection closed
/// # Ok::<(), finwait::Error>(())
/// ```
#[derive(Debug)]
pub struct Group<A: 'static = ()> {
    addr: SocketAddr,
    members: Vec<(Waker<A>, Option<ReactorThread>)>,
    handover: Option<crate::handover::HandoverServer>,
    /// Its listening sockets came from elsewhere ([`Group::adopt`]).
    adopted: bool,
    /// Its program and maps, with [`Steering::PreferAwake`] in effect.
    steerer: Option<Arc<steering::Steerer>>,
    /// Why the kernel refused the program of [`Steering::PreferAwake`], if it did.
    steering_error: Option<std::io::Error>,
}

/// A member's thread: it returns the reactor's counters once the reactor stops.
type ReactorThread = JoinHandle<Result<Stats>>;

impl<A: Default + 'static> Group<A> {
    /// Binds `addr` (an address or `"host:port"`, resolved once, first address) once per
    /// reactor (port 0: the first listener picks a free port, the others join it) and starts the reactors, each on its own thread, each running the
    /// handler `make` builds for it there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for zero reactors; the first bind, thread or reactor error
    /// (nothing is left running then).
    pub fn listen<F, H>(
        addr: impl ToSocketAddrs,
        options: GroupOptions,
        make: F,
    ) -> Result<Group<A>>
    where
        F: Fn(Member) -> H + Send + Sync + 'static,
        H: Handler<A> + 'static,
    {
        if options.reactors == 0 {
            return Err(Error::InvalidOption("a group needs at least one reactor"));
        }
        // The first resolved address (a group serves one address).
        let addr = addr.to_socket_addrs()?.next().ok_or(Error::InvalidOption(
            "the group's address resolved to no socket address",
        ))?;
        let listen = options.listen.clone().reuse_port(true);
        // Bound here, on the caller's thread, so that a port 0 resolves once and a bind error
        // is this call's result.
        let mut listeners = Vec::with_capacity(options.reactors);
        let mut bound = addr;
        for _ in 0..options.reactors {
            let l = sys::listen_std(bound, listen.backlog, listen.no_delay, true)
                .map_err(|e| Error::io_about(bound, e))?;
            bound = l.local_addr()?;
            listeners.push(l);
        }
        Group::start(
            listeners.into_iter().map(|l| vec![l]).collect(),
            bound,
            options,
            make,
            false,
        )
    }

    /// Starts a group on listening sockets made elsewhere — handed over by the running
    /// process ([`handover::take_over`](crate::handover::take_over)) or inherited
    /// ([`handover::inherited`](crate::handover::inherited)) — instead of binding: `options`'
    /// reactor count is kept, the sockets are dealt out to the reactors in turn, and a reactor
    /// left without one binds its own `SO_REUSEPORT` listener on the first socket's address
    /// (which works when the sockets were made with `SO_REUSEPORT`, as a group's are).
    ///
    /// # Errors
    ///
    /// As [`listen`](Self::listen); [`Error::InvalidOption`] for an empty list.
    pub fn adopt<F, H>(
        listeners: Vec<std::net::TcpListener>,
        options: GroupOptions,
        make: F,
    ) -> Result<Group<A>>
    where
        F: Fn(Member) -> H + Send + Sync + 'static,
        H: Handler<A> + 'static,
    {
        if options.reactors == 0 {
            return Err(Error::InvalidOption("a group needs at least one reactor"));
        }
        let Some(first) = listeners.first() else {
            return Err(Error::InvalidOption("no listening socket to adopt"));
        };
        let addr = first.local_addr()?;
        let listen = options.listen.clone().reuse_port(true);
        let mut dealt: Vec<Vec<std::net::TcpListener>> =
            (0..options.reactors).map(|_| Vec::new()).collect();
        for (i, l) in listeners.into_iter().enumerate() {
            dealt[i % options.reactors].push(l);
        }
        for own in &mut dealt {
            if own.is_empty() {
                let l = sys::listen_std(addr, listen.backlog, listen.no_delay, true)
                    .map_err(|e| Error::io_about(addr, e))?;
                own.push(l);
            }
        }
        Group::start(dealt, addr, options, make, true)
    }

    /// Starts one reactor per entry of `listeners`, each serving its sockets.
    fn start<F, H>(
        listeners: Vec<Vec<std::net::TcpListener>>,
        bound: SocketAddr,
        options: GroupOptions,
        make: F,
        adopted: bool,
    ) -> Result<Group<A>>
    where
        F: Fn(Member) -> H + Send + Sync + 'static,
        H: Handler<A> + 'static,
    {
        let listen = options.listen.clone().reuse_port(true);
        let make = Arc::new(make);
        let mut steering_error = None;
        let steerer = match options.steering {
            Steering::PreferAwake
                if listeners.len() >= 2
                    && listeners.len() <= steering::MAX_REACTORS
                    && listeners.iter().all(|own| own.len() == 1) =>
            {
                let fds: Vec<_> = listeners.iter().map(|own| own[0].as_fd()).collect();
                match steering::Steerer::install(&fds, options.steering_load_slack) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // Without the privilege it is expected; anything else is not.
                        if e.kind() == std::io::ErrorKind::PermissionDenied {
                            log::info!(
                                "group: the kernel refused the steering program ({e}: it \
                                 needs CAP_BPF); the kernel's hash spreads connections"
                            );
                        } else {
                            log::warn!(
                                "group: the steering program failed to load ({e}); the \
                                 kernel's hash spreads connections"
                            );
                        }
                        steering_error = Some(e);
                        None
                    }
                }
            }
            _ => None,
        };
        let mut group = Group {
            addr: bound,
            members: Vec::with_capacity(listeners.len()),
            handover: None,
            adopted,
            steerer: steerer.clone(),
            steering_error,
        };
        for (index, own) in listeners.into_iter().enumerate() {
            let (ready_tx, ready_rx) = mpsc::channel::<Result<Waker<A>>>();
            let make = Arc::clone(&make);
            let listen = listen.clone();
            let reactor_options = options.reactor.clone();
            let signals = options.shutdown_on_signals;
            let steerer = steerer.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("finwait-{index}"))
                .spawn(move || -> Result<Stats> {
                    let started = (|| {
                        let mut reactor = Reactor::<A>::with_attachment(reactor_options)?;
                        let mut id = None;
                        for listener in own {
                            let this = reactor.listen_std(listener, listen.clone())?;
                            id.get_or_insert(this);
                        }
                        let id = id.ok_or(Error::InvalidOption("a reactor without a listener"))?;
                        if let Some(grace) = signals {
                            reactor.shutdown_on_signals(grace)?;
                        }
                        let waker = reactor.waker()?;
                        if let Some(steerer) = &steerer {
                            reactor.set_steering(steerer.join(index));
                        }
                        Ok((reactor, id, waker))
                    })();
                    let (mut reactor, id, waker) = match started {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(Error::Io(std::io::Error::other(format!(
                                "reactor {index} failed to start: {e}"
                            )))));
                            return Err(e);
                        }
                    };
                    // Built before the caller hears "started": a `make` that panics fails
                    // `listen` instead of leaving a member that never serves its listener.
                    let mut handler = make(Member {
                        index,
                        listener: id,
                    });
                    let _ = ready_tx.send(Ok(waker));
                    reactor.serve(&mut handler)?;
                    Ok(reactor.stats())
                });
            let started = spawned
                .map_err(Error::Io)
                .and_then(|thread| match ready_rx.recv() {
                    Ok(Ok(waker)) => Ok((waker, thread)),
                    Ok(Err(e)) => {
                        let _ = thread.join();
                        Err(e)
                    }
                    Err(_) => {
                        let _ = thread.join();
                        Err(Error::Io(std::io::Error::other("reactor thread died")))
                    }
                });
            match started {
                Ok((waker, thread)) => group.members.push((waker, Some(thread))),
                Err(e) => {
                    group.stop_now();
                    return Err(e);
                }
            }
        }
        Ok(group)
    }
}

impl<A: 'static> Group<A> {
    /// The address every reactor listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The steering in effect: [`Steering::Hash`] when it was asked for, for a group of one
    /// reactor or more than 32, for adopted sockets not one per reactor, where the kernel
    /// refused the program of [`Steering::PreferAwake`] ([`steering_error`](Self::steering_error)),
    /// and once a handover has been offered (see [`serve_handover`](Self::serve_handover)).
    pub fn steering(&self) -> Steering {
        match &self.steerer {
            Some(s) if !s.is_withdrawn() => Steering::PreferAwake,
            _ => Steering::Hash,
        }
    }

    /// Why the kernel refused the program of [`Steering::PreferAwake`] — an error of kind
    /// `PermissionDenied` without `CAP_BPF` — or `None` if it was loaded or never asked for.
    pub fn steering_error(&self) -> Option<&std::io::Error> {
        self.steering_error.as_ref()
    }

    /// How many reactors the group started.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no reactor (never true for a started group).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The [`Waker`] of reactor `index`: wake it, or send it calls to run on its thread.
    pub fn waker(&self, index: usize) -> Option<&Waker<A>> {
        self.members.get(index).map(|(w, _)| w)
    }

    /// Graceful shutdown of every reactor ([`Context::shutdown`] with `grace` on each): the
    /// listeners close (their accept queues taken and served), every connection is asked to
    /// finish, what is left after `grace` is destroyed. [`join`](Self::join) returns once all
    /// of them completed.
    pub fn shutdown(&self, grace: Duration) {
        for (waker, _) in &self.members {
            let _ = waker.send(move |cx: &mut Context<A>| cx.shutdown(grace));
        }
    }

    /// Reactor `index` leaves the group: it shuts down gracefully (its listener takes its
    /// accept queue and closes, its connections finish within `grace`), while the others
    /// serve on. Connections that arrive meanwhile go to the other listeners; see the module
    /// docs for the last window and `tcp_migrate_req`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for an index outside the group.
    pub fn leave(&self, index: usize, grace: Duration) -> Result<()> {
        let (waker, _) = self.members.get(index).ok_or(Error::InvalidOption(
            "no reactor with that index in the group",
        ))?;
        waker.send(move |cx: &mut Context<A>| cx.shutdown(grace))
    }

    /// Serves handovers at the Unix-domain socket `path` (see
    /// [`handover`](crate::handover) and [`Reactor::serve_handover`]): a successor is offered
    /// every member's listening socket; once it adopted them, every reactor stops accepting
    /// — their accept queues untouched, the successor's now — and shuts down gracefully with
    /// `grace`; [`join`](Self::join) returns once their connections closed.
    ///
    /// # Errors
    ///
    /// An I/O error binding `path`.
    pub fn serve_handover(
        &mut self,
        path: impl AsRef<std::path::Path>,
        grace: Duration,
    ) -> Result<()> {
        let wakers: Vec<Waker<A>> = self.members.iter().map(|(w, _)| w.clone()).collect();
        let asked = wakers.clone();
        let steerer = self.steerer.clone();
        // Copies are made at each offer, by the reactors themselves: only the sockets they
        // still accept on, and none kept between offers (a copy held here would keep a
        // closed listener's queue alive, its connects neither refused nor served).
        let copies = Box::new(move || {
            // The successor steers the sockets with its own program, which it can only if
            // they left ours; meanwhile, and for good if the handover fails, the kernel's
            // hash spreads connections.
            if let Some(steerer) = &steerer {
                steerer.withdraw();
            }
            let mut all = Vec::new();
            for waker in &asked {
                all.extend(crate::handover::ask_copies(waker)?);
            }
            Ok(all)
        });
        let on_accepted = Box::new(move || {
            for waker in wakers {
                let _ = waker.send(move |cx: &mut Context<A>| {
                    for id in cx.listener_ids() {
                        let _ = cx.hand_over_listener(id);
                    }
                    cx.shutdown(grace);
                });
            }
        });
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

    /// Waits until every reactor has returned — after a [`shutdown`](Self::shutdown), a
    /// signal, or each reactor running out of work — and returns each reactor's [`Stats`]
    /// (in index order), or the first error any of them returned.
    pub fn join(mut self) -> Result<Vec<Stats>> {
        let mut stats = Vec::with_capacity(self.members.len());
        let mut first_error = None;
        for (_, thread) in &mut self.members {
            if let Some(thread) = thread.take() {
                match thread
                    .join()
                    .unwrap_or_else(|_| Err(Error::Io(std::io::Error::other("reactor panicked"))))
                {
                    Ok(s) => stats.push(s),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Stops every started reactor without grace (a failed start).
    fn stop_now(&mut self) {
        let adopted = self.adopted;
        for (waker, thread) in &mut self.members {
            let _ = waker.send(move |cx: &mut Context<A>| {
                for id in cx.socket_ids() {
                    let _ = cx.destroy(id);
                }
                for id in cx.listener_ids() {
                    // Adopted sockets are still the old process's too: let go of them without
                    // taking (and destroying) what waits in their queues.
                    let _ = if adopted {
                        cx.hand_over_listener(id)
                    } else {
                        cx.close_listener(id)
                    };
                }
                cx.stop();
            });
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl<A: 'static> Drop for Group<A> {
    /// A group dropped without [`join`](Group::join) shuts down gracefully (5 s of grace)
    /// and waits for its reactors, so no thread outlives it.
    fn drop(&mut self) {
        if self.members.iter().any(|(_, t)| t.is_some()) {
            self.shutdown(Duration::from_secs(5));
            for (_, thread) in &mut self.members {
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}
