//! # finwait — TCP close semantics done right, on a single-threaded mio reactor
//!
//! finwait gives Rust programs the socket model Node.js users know — `write`, `end`,
//! `destroy`, `destroy_soon`, `reset_and_destroy`, `allow_half_open`, backpressure with
//! `Drain` — and fixes the places where Node loses data or leaks half-open sockets.
//!
//! **Linux only**: finwait calls `epoll_ctl` itself, binds with `IP_BIND_ADDRESS_NO_PORT` and
//! relies on Linux's `SO_REUSEPORT` balancing, so other targets stop at a `compile_error!`.
//!
//! ## The model in five minutes
//!
//! A [`Reactor`] owns an epoll instance, listeners and sockets. You [`listen`] and/or
//! [`connect`], then [`run`] the loop with a closure, or [`serve`] a [`Handler`]: it receives
//! an [`Event`] for a [`SocketId`] together with a [`Context`], through which it acts on any
//! socket. Per-connection state lives with the socket: a `Reactor<A>` keeps one **attachment**
//! `A` per socket (created with `A::default()`, dropped after its `Close`) and hands it to the
//! handler beside each of the socket's events — no map, no lookup.
//!
//! **Events** per socket: [`Accepted`](Event::Accepted) or [`Connect`](Event::Connect)
//! first; [`Data`](Event::Data); [`End`](Event::End) (the peer's FIN, after all its data);
//! [`Finish`](Event::Finish) (our FIN handed to the kernel after every queued byte);
//! [`Drain`](Event::Drain); [`Timeout`](Event::Timeout); [`Error`](Event::Error) at most
//! once, right before [`Close`](Event::Close), which comes exactly once and last, carrying
//! `had_error` (Node's meaning), a [`CloseReason`] and the number of queued bytes that never
//! reached the kernel. Events are never delivered inside the call that caused them: a
//! `destroy` made in a handler is delivered as `Close` after the handler returns.
//!
//! **States** (per socket, see [`State`]; predicates such as "may I write?" are derived
//! from it, never stored beside it):
//!
//! | from | input | to | effects |
//! |---|---|---|---|
//! | `Connecting` | connected | `Open` | `Connect`; a pending `end`/`destroy_soon` is applied now |
//! | `Connecting` | `end()` / `destroy_soon()` | `Connecting{ending}` | remembered, writes refused from now |
//! | `Open` | `end()` | `HalfClosedLocal(Pending)` | FIN-wait deadline armed (re-armed by progress); FIN once the queue is empty |
//! | `Open` | peer FIN | `HalfClosedRemote` | `End`; without `allow_half_open`, `end()` right after the handler |
//! | `Open` | `destroy_soon()` | `Closing{Pending, peer_fin: false}` | linger deadline armed; flush, FIN, then discard input |
//! | `HalfClosedLocal(Pending)` | queue empty | `HalfClosedLocal(Sent)` | `shutdown(Write)`, `Finish` |
//! | `HalfClosedLocal(Pending)` | peer FIN | `Closing{Pending, peer_fin: true}` | `End` |
//! | `HalfClosedLocal(Sent)` | peer FIN | `Destroyed` | `End`, `Close(Graceful)` |
//! | `HalfClosedLocal(fin)` | `destroy_soon()` | `Closing{fin, peer_fin: false}` | linger deadline armed; input discarded from now |
//! | `HalfClosedRemote` | `end()` | `Closing{Pending, peer_fin: true}` | FIN once the queue is empty; FIN-wait deadline armed unless that closed the socket at once |
//! | `HalfClosedRemote` | `destroy_soon()` | `Closing{Pending, peer_fin: true}` | as `end()`, with the linger deadline instead of the FIN wait (none if the close already completed) |
//! | `Closing{Pending, true}` | queue empty | `Destroyed` | `Finish`, `Close(Graceful)`: `close` alone sends the FIN (no unread input can exist after the peer's FIN), one syscall instead of two |
//! | `Closing{Pending, false}` | queue empty | `Closing{Sent, false}` | `shutdown(Write)`, `Finish` |
//! | `Closing{Pending, false}` | peer FIN | `Closing{Pending, true}` | (input was being discarded: no `End`) |
//! | `Closing{Sent, false}` | peer FIN | `Destroyed` | `Close(Graceful)` |
//! | any live state | `destroy([err])` | `Destroyed` | [`Error`], `Close(LocalDestroy)`, queue dropped and counted; RST if that dropped bytes, else FIN |
//! | any live state | `reset_and_destroy()` | `Destroyed` | RST, `Close(LocalReset)`, queue dropped and counted |
//! | any live state, paused or not | I/O error / peer RST | `Destroyed` | `Error`, `Close(PeerReset or Error)`, in the turn the kernel reports it; queue dropped and counted (RST if that dropped bytes) |
//! | `Connecting` | connect deadline | `Destroyed` | `Error(TimedOut)`, `Close(Deadline(Connect))` |
//! | `HalfClosedLocal(_)`, `Closing{..}` | FIN-wait deadline (no progress for `fin_wait`) | `Destroyed` | `Close(Deadline(FinWait))`, queue dropped and counted; RST if that dropped bytes, else FIN |
//! | `Closing{..}` | linger deadline | `Destroyed` | `Close(Deadline(Linger))`, queue dropped and counted; RST if that dropped bytes, else FIN (only `destroy_soon` arms it) |
//! | any live state | shutdown grace over | `Destroyed` | `Close(Deadline(Shutdown))`, queue dropped and counted; RST if that dropped bytes, else FIN |
//! | any live state | idle timeout | same | `Timeout` (the handler decides) |
//! | `Destroyed` | anything | `Destroyed` | calls return [`Error::Destroyed`]; the slot is freed after the event batch, then its id is stale ([`Error::StaleId`]) |
//!
//! ## The guarantees
//!
//! 1. **No silent loss, on either end.** `end()` never drops a queued byte: the FIN follows
//!    the last one. When a socket closes with bytes still queued — `destroy`, a deadline, a
//!    shutdown grace, an error — [`CloseInfo::unsent`] says how many, and the peer is told
//!    too: a close that drops queued bytes sends RST, never FIN, so the peer cannot take a
//!    truncated stream for a complete one. With nothing queued such a close sends FIN.
//!    *(Node closes with a FIN after a truncated stream — a deliberate difference.)*
//! 2. **Exactly one `Close` per socket**, last; `Error` at most once, right before it.
//! 3. **A late write fails alone**: `write` after `end` returns [`Error::WriteAfterEnd`]
//!    and the connection goes on ending gracefully. *(Node destroys the socket and truncates
//!    what was queued — a deliberate difference.)*
//! 4. **`reset_and_destroy` works in every state**, after `end()` too. *(Node: EINVAL and a
//!    leaked fd.)*
//! 5. **Graceful close never turns into RST**: [`Context::destroy_soon`] flushes, sends FIN,
//!    then reads and discards until the peer's FIN before closing. *(Node closes right after
//!    `finish`, so unread input turns into an RST.)*
//! 6. **Resets are reported as resets, at once, in every state**: also when data, FIN and
//!    RST arrive together, after the peer's FIN, while the program has paused reading, with
//!    nothing queued to write, and when `shutdown(2)` fails because the RST got there first.
//!    The program never has to write to learn its peer is gone: an `EPOLLERR` report that no
//!    read or write surfaced makes the reactor take the socket's pending error (one
//!    `getsockopt` for that socket, none for the others), and the socket is destroyed with
//!    `Error` + `Close(PeerReset)` in that turn. A reset that arrived is also reported before
//!    a deadline or an idle `Timeout` falling due in the same turn.
//! 7. **Errors are events, never panics**; calls on a destroyed or stale id return an error
//!    and never reach a socket that reuses the slot (ids carry a generation).
//! 8. **Backpressure like Node's**: `write` returns whether the queue is under the high-water
//!    mark (64 KiB by default); `Drain` once after `false`; `pause`/`resume` stop and restart
//!    reading.
//! 9. **No lingering forever**: after `end()`, a socket that makes no progress for
//!    [`ReactorOptions::fin_wait`] (30 s) — nothing flushed, nothing read, no FIN from the peer
//!    — is destroyed; `destroy_soon` has its own linger deadline; connects can time out.
//!    *(Node leaves FIN-WAIT-2 sockets and stuck `destroySoon`s open for good.)*
//! 10. **Idle timeouts** ([`Context::set_timeout`]) notify once per idle period and re-arm on
//!     traffic for free; the handler decides what to do.
//! 11. **Servers**: [`Context::close_listener`] refuses new connects at once and reports the
//!     listener's `Close` after its last socket's *(Node: before)*; [`Context::shutdown`]
//!     asks every connection to finish ([`Handler::on_shutdown_request`], `end()` by
//!     default) within a grace period; running out of fds never spins the CPU nor stalls the
//!     listener.
//! 12. **A closing server loses no connection the kernel accepted for it**: connections
//!     waiting in a listener's accept queue when it closes are taken off it and served like
//!     any other, never reset *(Node, nginx and tokio close the fd and the kernel resets
//!     them)*.
//!
//! Other deliberate differences from Node: a write after the peer's FIN and our automatic end
//! returns `WriteAfterEnd` (Node: EPIPE); `TCP_NODELAY` is on by default.
//!
//! **Listeners** have a machine of their own (one `set_state` that trace-logs, like sockets):
//!
//! | from | input | to | effects |
//! |---|---|---|---|
//! | `Open` | accepted, now at `max_connections` | `Full` | readiness reports off: further connections wait in the accept queue |
//! | `Full` | one of its sockets closed | `Open` | accept again (reports back on) |
//! | `Open` | accept error (out of fds, or unexpected) | `BackedOff` | reports off, retry timer armed; an unexpected error is reported as [`ListenerEvent::Error`] |
//! | `BackedOff` | retry timer, or any socket closed (an fd freed) | `Open` | accept again |
//! | `Open`, `Full`, `BackedOff` | [`close_listener`](Context::close_listener) | `Draining` | listening fd closed: new connects are refused |
//! | `Open`, `Full`, `BackedOff`, `Draining` | [`shutdown_listener`](Context::shutdown_listener) | `Draining{shutdown}` | as `close_listener`, and its connections end within a grace period |
//! | `Open`, `Full`, `BackedOff` | [`hand_over_listener`](Context::hand_over_listener) (a [`handover`]) | `Draining` | stops accepting; this fd closed *without* taking the accept queue, which the successor holding the socket serves |
//! | `Draining` | last socket closed (or none open at the close) | `Closed` | [`ListenerEvent::Close`], after that socket's `Close` |
//!
//! **Pipes** ([`Context::pipe`]) forward between two sockets — a proxy's pair — and carry the
//! close model across (one machine per pair, in the same style):
//!
//! | from | input | to | effects |
//! |---|---|---|---|
//! | `Open` | FIN from side X | `HalfClosed{ended: X}` | `end()` the other side: its FIN follows every byte forwarded before |
//! | `HalfClosed{ended: X}` | FIN from the other side | `Ended` | `end()` side X |
//! | any open state | side X closes, its stream broken (peer reset, error, local reset, bytes dropped) | `Closing{closed: X}` | the other side is reset (its peer sees ECONNRESET); with [`PipeOptions::reset_on_break`] off, a lingering close instead |
//! | any open state | side X closes without loss (`destroy` with nothing queued, a deadline) | `Closing{closed: X}` | the other side gets a lingering close (flush, FIN, discard input) |
//! | any open state | side X closes gracefully (both directions ended) | `Closing{closed: X}` | nothing: the other closes by itself |
//! | `Closing{closed: X}` | the other side closes | `Closed` | [`Handler::on_pipe_closed`] with a [`PipeSummary`] |
//! | any | a forward leaves the destination over its high-water mark | same | the source is paused until the destination drains |
//!
//! ## Restarting without losing a connection
//!
//! A server restarts — a new binary deployed — by handing its listening sockets to its
//! successor ([`handover`]): the running process serves handovers on a Unix-domain socket
//! ([`Reactor::serve_handover`]); the successor asks there ([`handover::take_over`]), gets the
//! sockets themselves (`SCM_RIGHTS`), checks and adopts all of them or none, and says so. Only
//! then does the old process stop accepting — closing its own fds without touching the
//! accept queues, which the successor holds too and serves — and finish its connections as in
//! a graceful shutdown. No connect is refused (the sockets never close), none is reset (no
//! queue is dropped), and each connection is served by exactly one process. A handover that
//! fails half-way leaves the old process serving. Sockets passed by systemd take the same
//! path ([`handover::inherited`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use finwait::{handover, ListenOptions, Reactor};
//!
//! let (path, grace) = ("/run/echo.handover", Duration::from_secs(30));
//! let mut reactor = Reactor::new()?;
//! match handover::take_over(path)? {
//!     Some(offer) => drop(offer.adopt(&mut reactor, ListenOptions::new(), grace)?),
//!     None => {
//!         reactor.listen("127.0.0.1:7000", ListenOptions::new())?;
//!         reactor.serve_handover(path, grace)?;
//!     }
//! }
//! // Serves until a successor takes over (or a shutdown), then finishes and returns.
//! reactor.run(&mut |cx, id, event| {
//!     if let finwait::Event::Data(bytes) = event {
//!         let _ = cx.write(id, bytes);
//!     }
//! })?;
//! # Ok::<(), finwait::Error>(())
//! ```
//!
//! ## Many cores
//!
//! A reactor is one thread. A [`Group`] runs one per thread on the same address, each with
//! its own `SO_REUSEPORT` listener, and stops them as one ([`Group::shutdown`],
//! [`Group::join`]); a member can leave without resetting what waits in its accept queue
//! ([`Group::leave`]). Which member gets a new connection is decided at its SYN by a BPF
//! program the group attaches ([`Steering`]): an awake member first, never one holding more
//! than a small slack of connections over the least loaded — or, where the kernel refuses
//! the program, by the kernel's hash.
//!
//! ## Architecture
//!
//! - `socket/`: the sans-IO socket machine (`machine.rs`: inputs in, actions out, no
//!   syscalls), its write queue (chunks plus a head offset; one vectored write spans
//!   many writes), and the slot that holds both beside the cached readiness.
//! - `listener/`: the listener machine above and its slot.
//! - `pipe/`: the pair machine above, its slot, and the public pipe types.
//! - `handover`: the handover protocol, its server thread and the successor's side.
//! - `group`: [`Group`], its threads, and `group/steering.rs`, the BPF program that picks a
//!   member for each new connection (assembled at start, with its own interpreter in the
//!   unit tests).
//! - `table`: one generational table type for sockets, listeners and timers:
//!   [`SocketId`]/[`ListenerId`] = slot index + generation (packed into mio tokens, `id`), so
//!   a stale id never reaches the entry that reuses its slot.
//! - `context`: [`Context`], the calls a program makes, and nothing else.
//! - `driver`: the only place machine actions become syscalls — read, flush, shutdown,
//!   close, accept, connect — and where timers and readiness become machine inputs.
//! - `reactor`: [`Reactor`], the loop: poll, map readiness to the driver, deliver events.
//! - `sys`: every syscall, one function each, with the table of which errors are retried and
//!   which end a connection (`MSG_NOSIGNAL` sends, so a host that does not ignore `SIGPIPE`
//!   survives a reset).
//!
//! The machine, the write queue and the timer set are public only as hidden internals for
//! the fuzz targets and benchmarks (`finwait::state`, `finwait::write_queue`,
//! `finwait::timers`): they are not part of the API and carry no semver promise.
//!
//! **One turn of the loop**: one `epoll_wait`; due timers; each ready listener accepts one
//! connection (listeners are level-triggered, so more waiting ones are reported again next
//! turn and no `accept` is spent learning the backlog is empty) — or, after a turn that
//! worked a millisecond or more, drains its backlog (up to 128), so a burst of connects
//! never waits a long turn each; each ready socket flushes its queue, then reads until
//! `EAGAIN`, a short read (the next byte brings a new edge, so the read that would only say
//! `EAGAIN` is skipped), or [`ReactorOptions::read_budget`] (8 MiB by default: long runs for
//! bulk throughput, bounded so a stream cannot starve the others). Sockets stay registered
//! for both directions, edge-triggered: no `epoll_ctl` per turn. See `BENCHMARKS.md` for
//! what these choices measure against raw mio and tokio.
//!
//! State transitions are logged at `trace` level through the `log` crate (`socket 3.0: Open
//! => HalfClosedLocal(Pending)`).
//!
//! [`listen`]: Context::listen
//! [`connect`]: Context::connect
//! [`serve`]: Reactor::serve
//! [`run`]: Reactor::run
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "finwait supports Linux only: it drives epoll directly (epoll_ctl), binds with \
     IP_BIND_ADDRESS_NO_PORT and relies on Linux's SO_REUSEPORT load balancing"
);

mod context;
mod driver;
mod error;
mod event;
mod group;
mod handler;
pub mod handover;
mod id;
mod listener;
mod options;
mod pipe;
mod reactor;
mod socket;
mod stats;
mod sys;
mod table;
#[doc(hidden)]
pub mod timers;

pub use context::Context;
pub use error::{Error, Result};
pub use event::{CloseInfo, CloseReason, Deadline, Event, ListenerEvent, ReadyState};
pub use group::{Group, GroupOptions, Member, STEERING_LOAD_SLACK, STEERING_SLACK, Steering};
pub use handler::Handler;
pub use id::{ListenerId, PipeId, SocketId};
pub use options::{ConnectOptions, DEFAULT_HIGH_WATER_MARK, ListenOptions, ReactorOptions};
pub use pipe::{PipeOptions, PipeSummary, Side, Splice};
pub use reactor::{Reactor, Waker};
/// Internals for the fuzz targets and benchmarks (the socket machine): not part of the API,
/// exempt from semver.
#[doc(hidden)]
pub use socket::machine as state;
pub use socket::machine::{Fin, State};
/// Internals for the fuzz targets and benchmarks (the write queue): not part of the API,
/// exempt from semver.
#[doc(hidden)]
pub use socket::write_queue;
pub use stats::Stats;
pub use timers::{Clock, ManualClock, SystemClock};

/// The README's Rust examples, compiled as doctests so the tour cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
