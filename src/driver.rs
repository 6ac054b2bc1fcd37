//! The driver: where the machines' inputs come from and their actions become syscalls.
//!
//! Everything between [`Context`]'s public calls and `sys` lives here, reads and writes side
//! by side: giving an input to a socket's or a listener's machine and carrying out what it
//! asked for (send, shut down, close, arm a deadline, accept, deliver an event); the read
//! loop, the flush, the accept loop and the completion of a connect; timers coming due; the
//! slots freed after an event batch. The machines decide, `sys` makes the calls, and this
//! file connects the two. The loop itself (`reactor.rs`) only maps readiness to the calls
//! below.

use std::borrow::Cow;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::event::{CloseReason, Deadline, Event, ListenerEvent};
use crate::handler::Handler;
use crate::id::{ListenerId, PipeId, SocketId, TokenKind};
use crate::listener::{Listener, ListenerAction, ListenerActions, ListenerSlot};
use crate::options::{ConnectOptions, ListenOptions};
use crate::pipe::splice::should_splice;
use crate::pipe::{Direction, PipeAction, PipeSummary, Side, side_index};
use crate::reactor::Reactor;
use crate::socket::machine::{Action, Actions, Conn, State};
use crate::socket::write_queue::MAX_SLICES;
use crate::socket::{FinishRequest, Slot};
use crate::sys;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKey {
    Idle(SocketId),
    Deadline(SocketId, Deadline),
    /// The grace period of a shutdown: of one listener, or of the whole reactor.
    Shutdown(Option<ListenerId>),
    /// Try accepting again after an accept error.
    AcceptRetry(ListenerId),
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
    /// A pipe's two sockets both closed.
    PipeClosed(PipeSummary),
}

/// `now + d`, saturating far in the future instead of overflowing on absurd durations.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

// ---- lookups ------------------------------------------------------------------------------

impl<A> Context<A> {
    pub(crate) fn slot(&self, id: SocketId) -> Result<&Slot> {
        self.sockets.get(id).ok_or(Error::StaleId)
    }

    pub(crate) fn slot_mut(&mut self, id: SocketId) -> Result<&mut Slot> {
        self.sockets.get_mut(id).ok_or(Error::StaleId)
    }

    pub(crate) fn listener(&self, id: ListenerId) -> Result<&ListenerSlot> {
        self.listeners.get(id).ok_or(Error::StaleId)
    }

    pub(crate) fn listener_mut(&mut self, id: ListenerId) -> Result<&mut ListenerSlot> {
        self.listeners.get_mut(id).ok_or(Error::StaleId)
    }

    pub(crate) fn stream(&self, id: SocketId) -> Result<&TcpStream> {
        self.slot(id)?.stream.as_ref().ok_or(Error::Destroyed)
    }
}

// ---- creating sockets and listeners -------------------------------------------------------

impl<A> Context<A> {
    /// Registers a listening socket (level-triggered, see `sys::register_listener`) and gives
    /// it a machine.
    pub(crate) fn adopt_listener(
        &mut self,
        listener: TcpListener,
        options: ListenOptions,
    ) -> Result<ListenerId> {
        let id = self.listeners.next_key();
        sys::register_listener(
            self.registry.as_fd(),
            &listener,
            TokenKind::Listener(id).to_token(),
            true,
        )?;
        let inserted = self.listeners.insert(ListenerSlot {
            machine: Listener::new(id, options.max_connections),
            listener: Some(listener),
            options,
            scheduled: false,
            interested: true,
            retry: None,
        });
        debug_assert_eq!(inserted, id);
        Ok(id)
    }

    /// Starts an outgoing connection. A failure to even start it is reported like a failed
    /// connect: `Error` + `Close`, never this call's result.
    pub(crate) fn open_connection(
        &mut self,
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> SocketId {
        let id = self.sockets.next_key();
        let mut slot = Slot::new(Conn::connecting(id, options.conn()), None);
        let result = sys::connect(addr, options.local_addr).and_then(|mut stream| {
            if options.no_delay {
                sys::set_no_delay(&stream, true)?;
            }
            sys::register_socket(
                &self.registry,
                &mut stream,
                TokenKind::Socket(id).to_token(),
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
        let inserted = self.sockets.insert(slot);
        debug_assert_eq!(inserted, id);
        self.apply(id);
        id
    }

    /// Adopts an accepted stream: registers it and queues `Accepted`.
    pub(crate) fn adopt(
        &mut self,
        mut stream: TcpStream,
        listener: ListenerId,
        options: &ListenOptions,
    ) -> io::Result<SocketId> {
        let id = self.sockets.next_key();
        // TCP_NODELAY came from the listener (see `sys::listen`).
        sys::register_socket(
            &self.registry,
            &mut stream,
            TokenKind::Socket(id).to_token(),
        )?;
        let mut slot = Slot::new(Conn::accepted(id, options.conn()), Some(listener));
        slot.stream = Some(stream);
        // A fresh socket has an empty send buffer: writes from the `Accepted` handler go
        // straight out instead of waiting one turn for the first writable edge.
        slot.writable = true;
        if let Some(period) = options.idle_timeout {
            slot.idle = Some(self.timers.arm_idle(TimerKey::Idle(id), period, self.now));
        }
        let inserted = self.sockets.insert(slot);
        debug_assert_eq!(inserted, id);
        self.stats.accepted += 1;
        self.queue
            .push_back(Queued::Socket(id, Event::Accepted(listener)));
        Ok(id)
    }
}

// ---- socket inputs and actions ------------------------------------------------------------

impl<A> Context<A> {
    /// Gives one input to a socket's machine and carries out the actions it produced.
    pub(crate) fn drive(
        &mut self,
        id: SocketId,
        input: impl FnOnce(&mut Conn, &mut Actions) -> Result<()>,
    ) -> Result<()> {
        let slot = self.sockets.get_mut(id).ok_or(Error::StaleId)?;
        let result = input(&mut slot.conn, &mut self.actions);
        self.apply(id);
        result
    }

    /// Carries out the actions a socket's machine just produced, in order. Syscall outcomes
    /// are fed back to the machine, whose new actions join the same queue.
    pub(crate) fn apply(&mut self, id: SocketId) {
        // A listener's `Close` must follow its last socket's `Close`, which the machine queues
        // after the `Close` action: tell the listener once every action is carried out.
        let mut closed_under = None;
        let mut closed = false;
        // Bytes a kernel pipe still held for this socket when it closed (the `Close` action
        // comes before the `Close` event): dropped with it, so they count as unsent.
        let mut lost_in_pipe = 0;
        while let Some(action) = self.actions.pop_front() {
            let Some(slot) = self.sockets.get_mut(id) else {
                self.actions.clear();
                return;
            };
            match action {
                Action::Emit(mut event) => {
                    if let Event::Close(info) = &mut event {
                        info.unsent += lost_in_pipe;
                        self.stats.on_close(
                            info.reason,
                            slot.conn.bytes_read(),
                            slot.conn.bytes_written(),
                            info.unsent,
                        );
                        // An RST goes on the wire for `reset_and_destroy` and for a close
                        // that dropped bytes — unless the peer's reset already closed the
                        // connection in the kernel.
                        if info.reason == CloseReason::LocalReset
                            || (info.unsent > 0 && info.reason != CloseReason::PeerReset)
                        {
                            self.stats.resets_sent += 1;
                        }
                    }
                    self.queue.push_back(Queued::Socket(id, event))
                }
                Action::Shutdown => {
                    let result = match &slot.stream {
                        Some(stream) => sys::shutdown_write(stream),
                        None => Err(io::ErrorKind::NotConnected.into()),
                    };
                    slot.conn.on_shutdown(result, &mut self.actions);
                }
                Action::Close { reset } => {
                    // Bytes still in a kernel pipe toward this socket are lost with it: the
                    // stream is truncated, which only an RST can say.
                    let held = slot
                        .pipe
                        .and_then(|p| self.pipes.get_mut(p))
                        .and_then(|p| {
                            let from = p.side_of(id)?.other();
                            p.spliced_from(from).map(|d| d.pipe.held)
                        })
                        .unwrap_or(0);
                    lost_in_pipe = held;
                    if let Some(stream) = slot.stream.take() {
                        sys::close(stream, reset || held > 0);
                    }
                    for t in [slot.idle.take(), slot.deadline.take()]
                        .into_iter()
                        .flatten()
                    {
                        self.timers.cancel(t);
                    }
                    closed_under = slot.listener;
                    closed = true;
                    self.reclaim.push(id);
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
        if closed {
            self.on_fd_freed();
        }
        if let Some(lid) = closed_under {
            let _ = self.drive_listener(lid, |l, out| {
                l.on_socket_closed(out);
                Ok(())
            });
        }
    }

    /// If epoll reported an error on this socket (`EPOLLERR`), takes the pending socket error
    /// and, when there is one, destroys the socket with it (a reset is reported as
    /// [`CloseReason::PeerReset`](crate::CloseReason::PeerReset)). This is how a reset reaches
    /// a socket that nothing reads or writes — paused, after the peer's FIN, with an empty
    /// queue — and it costs a syscall only for sockets that had such a report. Returns whether
    /// the socket is destroyed now.
    pub(crate) fn surface_pending_error(&mut self, id: SocketId) -> bool {
        let Some(slot) = self.sockets.get_mut(id) else {
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
        if let Some(slot) = self.sockets.get_mut(id)
            && !slot.scheduled
        {
            slot.scheduled = true;
            self.ready.push(id);
        }
    }

    /// The write path: with nothing queued the bytes go straight to the kernel and only what
    /// it did not take joins the queue (an owned buffer nothing of which was sent joins it
    /// without a copy).
    pub(crate) fn write_cow(&mut self, id: SocketId, data: Cow<'_, [u8]>) -> Result<bool> {
        let slot = self.sockets.get_mut(id).ok_or(Error::StaleId)?;
        slot.conn.check_write()?;
        slot.conn.check_queue_room(data.len())?;
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
            Cow::Owned(buffer) if sent == 0 => slot.conn.queue_write_owned(buffer),
            data => slot.conn.queue_write(&data, sent),
        };
        if let Some(e) = failed {
            slot.conn.on_io_error(e, &mut self.actions);
            self.apply(id);
            return Ok(false);
        }
        Ok(below)
    }

    /// Hands queued bytes to the kernel until the queue is empty or the kernel is full.
    pub(crate) fn flush(&mut self, id: SocketId) {
        // One table lookup more per flush, only in a reactor that has pipes.
        if !self.pipes.is_empty()
            && let Some(pipe) = self.sockets.get(id).and_then(|s| s.pipe)
        {
            self.flush_spliced_into(id, pipe);
        }
        loop {
            let Some(slot) = self.sockets.get_mut(id) else {
                return;
            };
            if !slot.writable || !slot.conn.may_send() || slot.conn.queue().is_empty() {
                return;
            }
            let Some(stream) = &slot.stream else { return };
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = slot.conn.queue().fill(&mut slices);
            let offered: usize = slices[..n].iter().map(|s| s.len()).sum();
            match sys::send_vectored(stream, &slices[..n]) {
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
}

// ---- listener inputs and actions ----------------------------------------------------------

impl<A> Context<A> {
    /// Gives one input to a listener's machine and carries out the actions it produced.
    pub(crate) fn drive_listener(
        &mut self,
        id: ListenerId,
        input: impl FnOnce(&mut Listener, &mut ListenerActions) -> Result<()>,
    ) -> Result<()> {
        let slot = self.listeners.get_mut(id).ok_or(Error::StaleId)?;
        let result = input(&mut slot.machine, &mut self.listener_actions);
        self.apply_listener(id);
        result
    }

    /// Carries out the actions a listener's machine just produced, in order.
    fn apply_listener(&mut self, id: ListenerId) {
        while let Some(action) = self.listener_actions.pop_front() {
            let Some(slot) = self.listeners.get_mut(id) else {
                self.listener_actions.clear();
                return;
            };
            match action {
                ListenerAction::Silence => self.set_listener_interest(id, false),
                ListenerAction::Schedule => {
                    if !slot.scheduled {
                        slot.scheduled = true;
                        self.ready_listeners.push(id);
                    }
                }
                ListenerAction::ArmRetry => {
                    let at = later(self.now, self.options.accept_retry);
                    let timer = self.timers.arm_deadline(TimerKey::AcceptRetry(id), at);
                    if let Some(old) = slot.retry.replace(timer) {
                        self.timers.cancel(old);
                    }
                }
                ListenerAction::CancelRetry => {
                    if let Some(t) = slot.retry.take() {
                        self.timers.cancel(t);
                    }
                }
                ListenerAction::Close => {
                    let listener = slot.listener.take();
                    let options = slot.options.clone();
                    if let Some(listener) = listener {
                        self.sweep_accept_queue(id, &listener, &options);
                        // Adopted fds may be open elsewhere too (systemd keeps its copy).
                        let _ = sys::deregister_listener(self.registry.as_fd(), &listener);
                        // Dropping the fd closes the socket, which also removes it from
                        // epoll, and makes the kernel refuse new connects instead of
                        // queueing them in a backlog nobody reads.
                        drop(listener);
                    }
                    if let Some(slot) = self.listeners.get_mut(id) {
                        slot.machine.on_fd_closed(&mut self.listener_actions);
                    }
                }
                ListenerAction::Forget => {
                    self.stats.listeners_handed_over += 1;
                    if let Some(listener) = slot.listener.take() {
                        if let Err(e) = sys::deregister_listener(self.registry.as_fd(), &listener) {
                            log::warn!("{id}: epoll_ctl(DEL): {e}");
                        }
                        drop(listener);
                    }
                    if let Some(slot) = self.listeners.get_mut(id) {
                        slot.machine.on_fd_closed(&mut self.listener_actions);
                    }
                }
                ListenerAction::Shutdown { grace } => {
                    for sid in self.socket_ids() {
                        if self.slot(sid).is_ok_and(|s| s.listener == Some(id)) {
                            self.request_finish(sid);
                        }
                    }
                    self.timers
                        .arm_deadline(TimerKey::Shutdown(Some(id)), later(self.now, grace));
                }
                ListenerAction::Emit(event) => {
                    let closed = matches!(event, ListenerEvent::Close);
                    self.queue.push_back(Queued::Listener(id, event));
                    if closed {
                        self.reclaim_listeners.push(id);
                    }
                }
            }
        }
    }

    /// Takes every connection waiting in a closing listener's accept queue, so that closing
    /// the fd resets none of them (SEMANTICS B2.13): each is adopted like any other, past
    /// `max_connections` if need be, and marked readable so its first service reads what the
    /// client already sent (a request that arrived before the close is answered).
    ///
    /// Non-blocking, until `EAGAIN`, and bounded by the backlog plus some slack, so a flood of
    /// connects cannot hold the loop. What remains is the window between the last `accept`
    /// and the `close`: a handshake that completes in it is reset by the kernel. Linux closes
    /// that window for `SO_REUSEPORT` groups with `net.ipv4.tcp_migrate_req` (5.14), which
    /// moves such connections to a sibling listener of the group; a lone listener has no
    /// sibling to hand them to.
    fn sweep_accept_queue(
        &mut self,
        id: ListenerId,
        listener: &TcpListener,
        options: &ListenOptions,
    ) {
        // The real backlog of an adopted socket is unknown (`listen_std`): bound by the most
        // any accept queue can hold here, not by `options.backlog`.
        let bound = (options.backlog as usize)
            .max(MAX_ACCEPT_QUEUE)
            .saturating_add(SWEEP_SLACK);
        for _ in 0..bound {
            match sys::accept(listener) {
                Ok(stream) => match self.adopt(stream, id, options) {
                    Ok(sid) => {
                        self.stats.swept += 1;
                        if let Some(slot) = self.sockets.get_mut(sid) {
                            slot.readable = true;
                        }
                        self.schedule(sid);
                        if let Some(l) = self.listeners.get_mut(id) {
                            l.machine.on_accepted(&mut self.listener_actions);
                        }
                    }
                    Err(e) => log::debug!("{id}: dropping swept connection: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_transient_accept_error(&e) => self.stats.accept_errors += 1,
                Err(e) => {
                    self.stats.accept_errors += 1;
                    // Out of fds, say: what is left is reset by the close. Say so.
                    log::warn!("{id}: sweeping the accept queue before close: {e}");
                    return;
                }
            }
        }
    }

    /// Tells a socket that a graceful shutdown wants it to finish: the handler's
    /// [`on_shutdown_request`](crate::Handler::on_shutdown_request) runs at the socket's next
    /// service — after it read what was waiting, so a request that arrived is seen first.
    pub(crate) fn request_finish(&mut self, id: SocketId) {
        if let Some(slot) = self.sockets.get_mut(id)
            && !slot.conn.is_destroyed()
            && slot.finish == FinishRequest::None
        {
            slot.finish = FinishRequest::Pending;
            self.schedule(id);
        }
    }

    /// Turns a listener's readiness reports on or off (a no-op when already so). Off while it
    /// must leave connections queued, or its level-triggered readiness would wake every poll.
    fn set_listener_interest(&mut self, id: ListenerId, interested: bool) {
        let Some(slot) = self.listeners.get_mut(id) else {
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

    /// A socket just closed, so an fd is free: listeners that backed off try again now
    /// instead of waiting for their retry timer.
    fn on_fd_freed(&mut self) {
        // Runs on every close: the common case (nothing backed off) must not allocate.
        if !self
            .listeners
            .iter()
            .any(|(_, l)| l.machine.state() == crate::listener::ListenerState::BackedOff)
        {
            return;
        }
        let backed_off: Vec<ListenerId> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.machine.state() == crate::listener::ListenerState::BackedOff)
            .map(|(id, _)| id)
            .collect();
        for lid in backed_off {
            let _ = self.drive_listener(lid, |l, out| {
                l.on_fd_freed(out);
                Ok(())
            });
        }
    }
}

// ---- timers and reclaim -------------------------------------------------------------------

impl<A> Context<A> {
    /// Handles a timer that came due.
    pub(crate) fn on_timer(&mut self, key: TimerKey) {
        match key {
            TimerKey::Idle(id) => {
                // A reset that arrived is older news than the idleness: report it instead.
                if self.surface_pending_error(id) {
                    return;
                }
                if self.slot(id).is_ok_and(|s| !s.conn.is_destroyed()) {
                    self.queue.push_back(Queued::Socket(id, Event::Timeout));
                }
            }
            TimerKey::Deadline(id, which) => {
                // A reset that arrived is older news than a deadline due now: report it.
                if self.surface_pending_error(id) {
                    return;
                }
                let Some(slot) = self.sockets.get_mut(id) else {
                    return;
                };
                slot.deadline = None;
                slot.conn.on_deadline(which, &mut self.actions);
                self.apply(id);
            }
            TimerKey::Shutdown(scope) => {
                if scope.is_none() {
                    self.shutdown_timer = None;
                }
                for id in self.socket_ids() {
                    let in_scope = match scope {
                        None => true,
                        Some(lid) => self.slot(id).is_ok_and(|s| s.listener == Some(lid)),
                    };
                    if in_scope
                        && !self.surface_pending_error(id)
                        && let Some(slot) = self.sockets.get_mut(id)
                    {
                        slot.conn.on_deadline(Deadline::Shutdown, &mut self.actions);
                        self.apply(id);
                    }
                }
            }
            TimerKey::AcceptRetry(lid) => {
                if let Ok(slot) = self.listener_mut(lid) {
                    slot.retry = None;
                }
                let _ = self.drive_listener(lid, |l, out| {
                    l.on_retry(out);
                    Ok(())
                });
            }
        }
    }

    /// Frees the slots of sockets destroyed in this batch (their ids go stale), and the slots
    /// of listeners whose `Close` was queued.
    pub(crate) fn reclaim(&mut self) {
        for id in self.reclaim.drain(..) {
            if self
                .sockets
                .remove(id)
                .is_some_and(|s| s.listener.is_some())
            {
                self.accepted_closed += 1;
            }
            // Set after the socket's `Close` (by `attachment_mut`): gone with it.
            if let Some(attachment) = self.attachments.get_mut(id.index()) {
                *attachment = None;
            }
        }
        for id in self.reclaim_listeners.drain(..) {
            self.listeners.remove(id);
        }
    }
}

// ---- readiness: accept, connect, read -----------------------------------------------------

/// Connections one listener may accept in a turn that follows a long one (see [`LONG_TURN`]);
/// otherwise it accepts one. One is what nginx does by default: listeners are level-triggered,
/// so waiting connections are reported again next turn, and stopping after one spares the
/// `accept` that would only find the backlog empty (see `sys::register_listener`) — under
/// connection churn that is one `accept4` per connection. But a turn can be long (heavy
/// handlers, many busy sockets), and one accept per long turn would let a burst of connects
/// wait for seconds: after such a turn the backlog is drained, up to this many, and the one
/// `EAGAIN` that ends it is cheap next to the turn.
pub(crate) const ACCEPT_BATCH: usize = 128;
/// Connections a closing listener may take off its accept queue beyond its backlog (more can
/// complete their handshake while the sweep runs).
const SWEEP_SLACK: usize = 64;
/// The most connections one accept queue can hold unless `net.core.somaxconn` was raised past
/// its historical maximum (65535): the sweep's bound for listeners whose backlog it does not
/// know.
const MAX_ACCEPT_QUEUE: usize = 65_536;
/// A turn that worked this long (from its poll's return to the next poll) is long.
pub(crate) const LONG_TURN: Duration = Duration::from_millis(1);

impl<A: Default> Reactor<A> {
    /// Accepts up to `limit` connections: one, or [`ACCEPT_BATCH`] after a long turn. The
    /// listener is level-triggered: if more wait, the next poll reports it again, so short
    /// turns make no `accept` that only returns `EAGAIN`. While the machine must leave
    /// connections queued (full, backed off) its readiness reports are off; whatever ends that
    /// state schedules the listener, which turns them back on here.
    pub(crate) fn accept(&mut self, id: ListenerId, limit: usize) {
        let cx = &mut self.cx;
        let Ok(slot) = cx.listener_mut(id) else {
            return;
        };
        slot.scheduled = false;
        for _ in 0..limit {
            let Ok(slot) = cx.listener_mut(id) else {
                return;
            };
            if !slot.machine.may_accept() {
                return;
            }
            if !slot.interested {
                cx.set_listener_interest(id, true);
            }
            let Ok(slot) = cx.listener_mut(id) else {
                return;
            };
            let Some(listener) = &slot.listener else {
                return;
            };
            match sys::accept(listener) {
                Ok(stream) => {
                    let options = slot.options.clone();
                    match cx.adopt(stream, id, &options) {
                        Ok(_) => {
                            let _ = cx.drive_listener(id, |l, out| {
                                l.on_accepted(out);
                                Ok(())
                            });
                        }
                        Err(e) => log::debug!("{id}: dropping accepted connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_transient_accept_error(&e) => cx.stats.accept_errors += 1,
                Err(e) => {
                    cx.stats.accept_errors += 1;
                    // The pending connection stays queued: retrying at once would spin.
                    // Running out of fds is expected under load; anything else is also
                    // reported to the program.
                    let retry = cx.options.accept_retry;
                    let error = if sys::is_fd_exhaustion(&e) {
                        log::warn!("{id}: accept: {e}; retrying in {retry:?}");
                        None
                    } else {
                        log::warn!("{id}: accept failed: {e}; retrying in {retry:?}");
                        Some(e.into())
                    };
                    let _ = cx.drive_listener(id, |l, out| {
                        l.on_accept_error(error, out);
                        Ok(())
                    });
                    return;
                }
            }
        }
    }

    /// Services one socket: completes a connect, flushes, reads.
    pub(crate) fn service<H: Handler<A> + ?Sized>(&mut self, id: SocketId, handler: &mut H) {
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
        // One lookup decides the rare cases below; a socket with neither pays only that.
        let Ok(slot) = self.cx.slot(id) else {
            return;
        };
        // An error report that neither the flush nor the reads surfaced — the socket is
        // paused, past the peer's FIN, or had nothing to write — is acted on now, unless the
        // socket still has input to read first (over its budget: it is scheduled again, and
        // its data comes before the reset).
        let error_report = slot.error_hint && !slot.scheduled;
        let finish = slot.finish == FinishRequest::Pending;
        if error_report {
            self.cx.surface_pending_error(id);
        }
        // A graceful shutdown asked this socket to finish: tell the program now that what
        // was waiting has been read (and still answerable).
        // A piped socket is finished by its pipe: its pair ends when both peers are done (the
        // grace bounds it), and ending one side now would cut an answer still on its way
        // from the other.
        if finish
            && let Ok(slot) = self.cx.slot_mut(id)
            && !slot.conn.is_destroyed()
            && slot.pipe.is_none()
        {
            slot.finish = FinishRequest::Delivered;
            self.deliver(handler);
            if self.cx.slot(id).is_ok_and(|s| !s.conn.is_destroyed()) {
                let mut attachment = self.cx.lend(id);
                handler.on_shutdown_request(&mut self.cx, id, &mut attachment);
                self.cx.give_back(id, attachment, false);
            }
            self.deliver(handler);
        }
    }

    fn finish_connect(&mut self, id: SocketId) {
        let cx = &mut self.cx;
        let Some(slot) = cx.sockets.get_mut(id) else {
            return;
        };
        let Some(stream) = &slot.stream else {
            return;
        };
        match sys::connect_outcome(stream) {
            Ok(true) => {
                cx.stats.connected += 1;
                slot.conn.on_connected(&mut cx.actions)
            }
            // Spurious wake-up: still connecting.
            Ok(false) => {
                slot.writable = false;
                return;
            }
            Err(e) => slot.conn.on_io_error(e, &mut cx.actions),
        }
        cx.apply(id);
    }

    /// Reads until `WouldBlock`, EOF, an error or the budget. `Data` is delivered straight
    /// from the shared buffer, after any event queued before it.
    fn read<H: Handler<A> + ?Sized>(&mut self, id: SocketId, handler: &mut H) {
        if !self.cx.pipes.is_empty()
            && let Some(pipe) = self.cx.sockets.get(id).and_then(|s| s.pipe)
            && self.cx.splice_from(id, pipe)
        {
            return;
        }
        let mut budget = self.cx.options.read_budget;
        loop {
            let cx = &mut self.cx;
            let Some(slot) = cx.sockets.get_mut(id) else {
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
                        let pipe = slot.pipe;
                        self.deliver(handler);
                        if let Some(pipe) = pipe
                            && !self
                                .cx
                                .forward(id, pipe, &self.read_buf[..n], self.read_buf.len())
                        {
                            continue;
                        }
                        let mut attachment = self.cx.lend(id);
                        let data = Event::Data(&self.read_buf[..n]);
                        handler.on_event(&mut self.cx, id, &mut attachment, data);
                        self.cx.give_back(id, attachment, false);
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

// ---- pipes: forwarding and the pair machine's actions --------------------------------------

impl<A> Context<A> {
    /// Hands `bytes`, just read from the piped socket `from`, to the other side of `pipe`.
    /// Returns whether the handler still gets them as `Data` (the pipe is watched).
    pub(crate) fn forward(
        &mut self,
        from: SocketId,
        pipe: PipeId,
        bytes: &[u8],
        buffer: usize,
    ) -> bool {
        let Some(slot) = self.pipes.get(pipe) else {
            return true;
        };
        let Some(side) = slot.side_of(from) else {
            return true;
        };
        let (to, watch) = (slot.socket(side.other()), slot.watch);
        let result = self.write_cow(to, Cow::Borrowed(bytes));
        let Some(slot) = self.pipes.get_mut(pipe) else {
            return watch;
        };
        match result {
            Ok(below) => {
                slot.machine
                    .on_forwarded(side, bytes.len(), below, &mut self.pipe_actions);
                // The destination is looked at only when the read could start splicing.
                let clear = || {
                    self.sockets
                        .get(to)
                        .is_some_and(|d| d.conn.may_send() && d.conn.queue().is_empty())
                };
                if slot.spliced_from(side).is_none()
                    && should_splice(slot.splice, bytes.len(), buffer, clear)
                    && let Some(kernel) = self.pipe_pool.take()
                {
                    log::debug!("{pipe}: {from} streams, splicing it into {to}");
                    slot.spliced[side_index(side)] = Some(Direction {
                        pipe: kernel,
                        fin_after_drain: false,
                    });
                }
            }
            Err(e) => {
                log::debug!("{pipe}: {to} refused bytes from {from}: {e}");
                slot.machine.on_forward_failed(side, &mut self.pipe_actions)
            }
        }
        self.apply_pipe(pipe);
        watch
    }

    /// A queued event of a piped socket, given to its pipe's machine before the handler sees
    /// it. Returns whether the handler gets it too: `End`, `Drain` and `Finish` are the
    /// pipe's business; `Close`, `Error`, `Timeout` and `Connect` are the program's as well.
    pub(crate) fn route_piped(&mut self, id: SocketId, pipe: PipeId, event: &Event<'_>) -> bool {
        let Some(slot) = self.pipes.get_mut(pipe) else {
            return true;
        };
        let Some(side) = slot.side_of(id) else {
            return true;
        };
        let out = &mut self.pipe_actions;
        let deliver = match event {
            Event::End => {
                slot.machine.on_end(side, out);
                false
            }
            Event::Drain => {
                slot.machine.on_drain(side, out);
                false
            }
            Event::Finish => false,
            Event::Close(info) => {
                slot.machine.on_close(side, *info, out);
                true
            }
            _ => true,
        };
        self.apply_pipe(pipe);
        deliver
    }

    /// Carries out what a pipe's machine asked for, through the same calls a program makes.
    pub(crate) fn apply_pipe(&mut self, pipe: PipeId) {
        let mut actions = std::mem::take(&mut self.pipe_actions);
        for action in actions.drain(..) {
            let Some(slot) = self.pipes.get(pipe) else {
                break;
            };
            // Each call may fail on a side that is already gone; that side's own `Close`
            // (queued) is what the pipe reacts to.
            match action {
                PipeAction::Pause(side) => {
                    let _ = self.pause(slot.socket(side));
                }
                PipeAction::Resume(side) => {
                    let _ = self.resume(slot.socket(side));
                }
                PipeAction::End(side) => {
                    let to = slot.socket(side);
                    // The FIN follows the bytes still in a kernel pipe toward `to`.
                    if let Some(dir) = self
                        .pipes
                        .get_mut(pipe)
                        .and_then(|p| p.spliced_from(side.other()))
                        && dir.pipe.held > 0
                    {
                        dir.fin_after_drain = true;
                    } else {
                        let _ = self.end(to);
                    }
                }
                PipeAction::Reset(side) => {
                    let _ = self.reset_and_destroy(slot.socket(side));
                }
                PipeAction::DestroySoon(side) => {
                    let id = slot.socket(side);
                    let _ = self.resume(id);
                    let _ = self.destroy_soon(id);
                }
                PipeAction::Finished => {
                    if let Some(summary) = slot.summary(pipe) {
                        self.queue.push_back(Queued::PipeClosed(summary));
                    }
                    if let Some(slot) = self.pipes.remove(pipe) {
                        for dir in slot.spliced.into_iter().flatten() {
                            self.pipe_pool.give_back(dir.pipe);
                        }
                    }
                }
            }
        }
        self.pipe_actions = actions;
    }
}

// ---- pipes: the spliced path ---------------------------------------------------------------

/// How far emptying a kernel pipe into its destination got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// The pipe is empty.
    Empty,
    /// Not `whole`: one splice took part of the pipe, so the destination is full (its
    /// writable edge follows) and the pipe has room to top up from the source.
    Partial,
    /// The destination is full: the rest waits for its next writable edge.
    Blocked,
    /// The destination failed (its machine has the error) or is gone.
    Failed,
}

impl<A> Context<A> {
    /// Reads the piped socket `from` kernel to kernel if its direction splices: fills the
    /// kernel pipe from the socket and empties it into the destination, within the read
    /// budget. Returns false when the direction copies (the caller reads as usual) — also
    /// when it can no longer splice because the destination stopped taking bytes, which the
    /// copy path then handles (discarding, or refusing and resetting).
    pub(crate) fn splice_from(&mut self, from: SocketId, pipe: PipeId) -> bool {
        let Some(slot) = self.pipes.get_mut(pipe) else {
            return false;
        };
        let Some(side) = slot.side_of(from) else {
            return false;
        };
        let to = slot.socket(side.other());
        if slot.spliced_from(side).is_none() {
            return false;
        }
        let usable = self.sockets.get(to).is_some_and(|d| d.conn.may_send())
            && self
                .sockets
                .get(from)
                .is_some_and(|s| s.conn.delivers_data());
        if !usable {
            // The destination takes no more bytes, or the source's input is being discarded
            // (a lingering close): the copy path knows what to do with what comes — discard
            // it, or refuse it and reset the source. An empty kernel pipe goes back to the
            // pool; one still holding bytes is closed with them when the pair ends.
            if slot.spliced_from(side).is_some_and(|d| d.pipe.held == 0)
                && let Some(dir) = slot.spliced[side_index(side)].take()
            {
                self.pipe_pool.give_back(dir.pipe);
            }
            return false;
        }
        let mut budget = self.options.read_budget;
        // After a partial splice into the destination the pipe is topped up from the source
        // before the next one (larger writes, fewer calls); after the source said `EAGAIN`
        // with bytes in the pipe, the pipe is emptied first (it may have been full).
        let mut whole = false;
        loop {
            // The destination is full (or failed): the source waits, still marked readable,
            // and is scheduled when the destination takes the pipe's bytes.
            if let Drained::Blocked | Drained::Failed = self.drain_spliced(pipe, side, whole) {
                return true;
            }
            whole = false;
            let Some(src) = self.sockets.get_mut(from) else {
                return true;
            };
            let wants = src.readable && src.conn.wants_read();
            if !wants || budget == 0 {
                // Nothing more to top the pipe up with now. The pipe is empty, or the
                // destination is full (`Partial`): its writable edge drains the rest.
                if wants {
                    self.schedule(from);
                }
                return true;
            }
            let Some(dir) = self.pipes.get_mut(pipe).and_then(|p| p.spliced_from(side)) else {
                return true;
            };
            let Some(stream) = &src.stream else {
                return true;
            };
            let ended = match sys::splice(sys::stream_fd(stream), dir.pipe.write_end(), budget) {
                Ok(0) => None,
                Ok(n) => {
                    dir.pipe.held += n;
                    budget = budget.saturating_sub(n);
                    src.conn.on_read(n);
                    src.touch(&mut self.timers, self.now);
                    if let Some(p) = self.pipes.get_mut(pipe) {
                        p.machine.tally.forwarded[side_index(side)] += n as u64;
                        p.machine.tally.spliced[side_index(side)] += n as u64;
                    }
                    continue;
                }
                // With an empty pipe, `EAGAIN` can only mean an empty socket: its edge is
                // spent. With bytes in the pipe it may mean a full pipe instead; the loop
                // empties the pipe first and tries again, or waits for the destination.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if dir.pipe.held == 0 {
                        src.readable = false;
                        return true;
                    }
                    whole = true;
                    continue;
                }
                Err(e) => Some(e),
            };
            // The source's FIN or error: what the pipe holds goes out first, as far as the
            // destination takes it (the rest follows on its writable edge, the FIN after it).
            let _ = self.drain_spliced(pipe, side, true);
            let Some(src) = self.sockets.get_mut(from) else {
                return true;
            };
            match ended {
                None => {
                    src.readable = false;
                    let reset = if std::mem::take(&mut src.error_hint) {
                        src.stream.as_ref().and_then(sys::take_error)
                    } else {
                        None
                    };
                    match reset {
                        Some(e) => src.conn.on_io_error(e, &mut self.actions),
                        None => src.conn.on_eof(&mut self.actions),
                    }
                }
                Some(e) => src.conn.on_io_error(e, &mut self.actions),
            }
            self.apply(from);
            return true;
        }
    }

    /// Empties the kernel pipe of the direction whose source is `side` into its destination.
    /// When it empties and the source's FIN was waiting for that, the destination is ended.
    fn drain_spliced(&mut self, pipe: PipeId, side: Side, whole: bool) -> Drained {
        let Some(slot) = self.pipes.get_mut(pipe) else {
            return Drained::Failed;
        };
        let to = slot.socket(side.other());
        let Some(dir) = slot.spliced_from(side) else {
            return Drained::Failed;
        };
        let Some(dst) = self.sockets.get_mut(to) else {
            return Drained::Failed;
        };
        while dir.pipe.held > 0 {
            let Some(stream) = dst.stream.as_ref().filter(|_| dst.conn.may_send()) else {
                return Drained::Failed;
            };
            // A destination known to be full waits for its writable edge: trying anyway costs
            // a splice that fails with `EAGAIN` each time the source brings more (measured:
            // one in five splices of a streaming upload, before this check).
            if !dst.writable {
                return Drained::Blocked;
            }
            match sys::splice(dir.pipe.read_end(), sys::stream_fd(stream), dir.pipe.held) {
                Ok(n) => {
                    dir.pipe.held -= n.min(dir.pipe.held);
                    dst.conn.on_spliced(n);
                    dst.touch(&mut self.timers, self.now);
                    if dir.pipe.held > 0 {
                        // Short only when the socket ran out of send space (a splice into a
                        // socket goes on while the pipe has bytes and `tcp_sendmsg` takes
                        // them: `splice_to_socket`, fs/splice.c); the kernel then set
                        // SOCK_NOSPACE and reports the next writable edge, as after a short
                        // `send`.
                        dst.writable = false;
                        if !whole {
                            return Drained::Partial;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst.writable = false;
                    return Drained::Blocked;
                }
                Err(e) => {
                    dst.conn.on_io_error(e, &mut self.actions);
                    self.apply(to);
                    return Drained::Failed;
                }
            }
        }
        if std::mem::take(&mut dir.fin_after_drain) {
            let _ = self.end(to);
        }
        Drained::Empty
    }

    /// The destination `to` is writable: first the bytes a kernel pipe holds for it, then
    /// (in `flush`) its own queue. A source that waited on the full pipe is read again.
    fn flush_spliced_into(&mut self, to: SocketId, pipe: PipeId) {
        let Some(slot) = self.pipes.get_mut(pipe) else {
            return;
        };
        let Some(side) = slot.side_of(to) else {
            return;
        };
        let from = side.other();
        let source = slot.socket(from);
        if slot.spliced_from(from).is_none_or(|d| d.pipe.held == 0) {
            return;
        }
        if !self.sockets.get(to).is_some_and(|d| d.writable) {
            return;
        }
        if self.drain_spliced(pipe, from, true) == Drained::Empty
            && self.sockets.get(source).is_some_and(|s| s.readable)
        {
            self.schedule(source);
        }
    }
}
