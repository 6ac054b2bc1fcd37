//! The per-socket state machine, sans-IO.
//!
//! [`Conn`] takes inputs — the program's calls (`end`, `destroy`, …) and what the reactor's
//! syscalls reported (bytes read, bytes written, EOF, errors) — and answers with [`Action`]s:
//! events to deliver and the two syscalls only the reactor can make (shut down writing, close
//! the fd with or without RST). It never touches mio or a syscall, so every state and every
//! transition is unit-tested here with plain values and fuzzed against a model.
//!
//! Every state change goes through `Conn::set_state`, which trace-logs `socket A.B: X => Y`.
//! The transition table lives in the crate docs ([`crate`]); keep both in step.

use std::collections::VecDeque;
use std::io;

use crate::error::{Error, Result};
use crate::event::{CloseInfo, CloseReason, Deadline, Event, ReadyState};
use crate::id::SocketId;
use crate::socket::write_queue::WriteQueue;

/// Where our FIN is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fin {
    /// `end()` was called; the FIN leaves once the write queue is empty.
    Pending,
    /// `shutdown(Write)` succeeded: the kernel sends the FIN after the bytes it holds.
    Sent,
}

/// What to do once a connect completes, when the program already asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    /// `end()` was called while connecting.
    End,
    /// `destroy_soon()` was called while connecting.
    DestroySoon,
}

/// A socket's state (see the crate docs for the transition table). What a socket may do
/// ("may I write?") is derived from it, never stored beside it. New states may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// An outgoing connect is in progress. Writes are queued; `end`/`destroy_soon` are
    /// remembered and applied once connected.
    Connecting {
        /// An end requested before the connect completed.
        ending: Option<Ending>,
    },
    /// Both directions open.
    Open,
    /// We called `end()`; the peer has not sent FIN. Writes are refused, reads still delivered.
    HalfClosedLocal(Fin),
    /// The peer sent FIN; we may still write until we `end()`.
    HalfClosedRemote,
    /// Both directions finished or finishing, and the program gets no more `Data`: either the
    /// peer's FIN came and ours is still draining (`peer_fin == true`), or `destroy_soon` is
    /// lingering — flushing, then reading and discarding until the peer's FIN.
    Closing {
        /// Where our FIN is.
        fin: Fin,
        /// Whether the peer's FIN arrived.
        peer_fin: bool,
    },
    /// The fd is closed and `Close` is queued; the slot is reclaimed after the event batch.
    Destroyed,
}

/// What the machine asks the reactor to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Deliver this event to the program.
    Emit(Event<'static>),
    /// Call `shutdown(Write)` now, then report the outcome with [`Conn::on_shutdown`].
    Shutdown,
    /// Close the fd; with `reset`, set `SO_LINGER{on, 0}` first so the kernel sends RST.
    Close {
        /// Send RST instead of FIN.
        reset: bool,
    },
    /// Arm a deadline for this socket, replacing the one armed before (the reactor owns the
    /// timers and knows the durations). `FinWait` is re-armed by every byte moved either way;
    /// the others are fixed.
    ArmDeadline(Deadline),
}

/// Output buffer the reactor drains after every input.
pub type Actions = VecDeque<Action>;

/// Per-socket options fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnOptions {
    /// Keep the socket writable after the peer's FIN until the program calls `end()`.
    pub allow_half_open: bool,
    /// `write` returns false once this many bytes are queued.
    pub high_water_mark: usize,
    /// `write` is refused ([`Error::QueueFull`]) when it would queue more than this many
    /// bytes; `usize::MAX`: no bound.
    pub max_queued: usize,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            allow_half_open: false,
            high_water_mark: 64 * 1024,
            max_queued: usize::MAX,
        }
    }
}

/// One socket's state machine and write queue.
#[derive(Debug)]
pub struct Conn {
    id: SocketId,
    state: State,
    queue: WriteQueue,
    options: ConnOptions,
    paused: bool,
    /// A `write` returned false and the queue has not emptied since: `Drain` is owed.
    drain_owed: bool,
    bytes_read: u64,
    bytes_written: u64,
}

impl Conn {
    /// A machine for an accepted (already connected) socket.
    pub fn accepted(id: SocketId, options: ConnOptions) -> Conn {
        Conn::with_state(id, options, State::Open)
    }

    /// A machine for an outgoing connect in progress.
    pub fn connecting(id: SocketId, options: ConnOptions) -> Conn {
        Conn::with_state(id, options, State::Connecting { ending: None })
    }

    fn with_state(id: SocketId, options: ConnOptions, state: State) -> Conn {
        Conn {
            id,
            state,
            queue: WriteQueue::new(),
            options,
            paused: false,
            drain_owed: false,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// The one place where the state changes.
    fn set_state(&mut self, next: State) {
        log::trace!("{}: {:?} => {:?}", self.id, self.state, next);
        self.state = next;
    }

    // ---- facts -------------------------------------------------------------------------

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The options the socket was created with.
    pub fn options(&self) -> ConnOptions {
        self.options
    }

    /// Bytes read from the kernel (including bytes discarded while lingering).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Bytes handed to the kernel.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Bytes accepted by `write` and not yet handed to the kernel (Node's `bufferSize`).
    pub fn bytes_queued(&self) -> usize {
        self.queue.len()
    }

    /// The write queue, for the reactor's vectored writes.
    pub fn queue(&self) -> &WriteQueue {
        &self.queue
    }

    /// Whether the program paused reading.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Node's `readyState`.
    pub fn ready_state(&self) -> ReadyState {
        match self.state {
            State::Connecting { .. } => ReadyState::Opening,
            State::Open => ReadyState::Open,
            State::HalfClosedLocal(_) => ReadyState::ReadOnly,
            State::HalfClosedRemote => ReadyState::WriteOnly,
            State::Closing {
                peer_fin: false, ..
            } => ReadyState::ReadOnly,
            State::Closing { peer_fin: true, .. } | State::Destroyed => ReadyState::Closed,
        }
    }

    /// Whether the program may still `write` (queueing is fine while connecting).
    pub fn may_write(&self) -> bool {
        matches!(
            self.state,
            State::Connecting { ending: None } | State::Open | State::HalfClosedRemote
        )
    }

    /// Whether queued bytes may be handed to the kernel now.
    pub fn may_send(&self) -> bool {
        matches!(
            self.state,
            State::Open
                | State::HalfClosedRemote
                | State::HalfClosedLocal(Fin::Pending)
                | State::Closing {
                    fin: Fin::Pending,
                    ..
                }
        )
    }

    /// Whether the peer may still send us bytes (its FIN has not arrived).
    pub fn may_recv(&self) -> bool {
        matches!(
            self.state,
            State::Open
                | State::HalfClosedLocal(_)
                | State::Closing {
                    peer_fin: false,
                    ..
                }
        )
    }

    /// Whether the reactor should read now: the peer may send, and either the program wants
    /// data or we are lingering (discarding input must not wait for `resume`).
    pub fn wants_read(&self) -> bool {
        self.may_recv() && (!self.paused || !self.delivers_data())
    }

    /// Whether bytes read are handed to the program (`Data`) rather than discarded.
    pub fn delivers_data(&self) -> bool {
        matches!(self.state, State::Open | State::HalfClosedLocal(_))
    }

    /// Whether the socket is destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.state == State::Destroyed
    }

    fn fin_pending(&self) -> bool {
        matches!(
            self.state,
            State::HalfClosedLocal(Fin::Pending)
                | State::Closing {
                    fin: Fin::Pending,
                    ..
                }
        )
    }

    // ---- the program's calls -----------------------------------------------------------

    /// Checks that a write is allowed, without changing anything.
    pub fn check_write(&self) -> Result<()> {
        if self.may_write() {
            Ok(())
        } else if self.is_destroyed() {
            Err(Error::Destroyed)
        } else {
            Err(Error::WriteAfterEnd)
        }
    }

    /// Checks that `len` more bytes may join the queue without passing
    /// [`ConnOptions::max_queued`] (counted as if the kernel took none of them).
    pub fn check_queue_room(&self, len: usize) -> Result<()> {
        let queued = self.queue.len();
        if queued.saturating_add(len) > self.options.max_queued {
            Err(Error::QueueFull {
                queued,
                write: len,
                limit: self.options.max_queued,
            })
        } else {
            Ok(())
        }
    }

    /// Accepts a write whose first `sent` bytes the reactor already handed to the kernel;
    /// queues the rest. Returns whether the queue is under the high-water mark (Node's
    /// `write()` return value). Call only after [`check_write`](Conn::check_write).
    pub fn queue_write(&mut self, data: &[u8], sent: usize) -> bool {
        debug_assert!(self.may_write());
        let sent = sent.min(data.len());
        self.bytes_written += sent as u64;
        self.queue.push(&data[sent..]);
        self.after_queue()
    }

    /// Like [`queue_write`](Conn::queue_write) for an owned buffer nothing of which was sent.
    pub fn queue_write_owned(&mut self, data: Vec<u8>) -> bool {
        debug_assert!(self.may_write());
        self.queue.push_owned(data);
        self.after_queue()
    }

    fn after_queue(&mut self) -> bool {
        let below = self.queue.len() < self.options.high_water_mark;
        if !below {
            self.drain_owed = true;
        }
        below
    }

    /// `end()`: FIN once the queue is empty. A second `end()` is a no-op.
    pub fn end(&mut self, out: &mut Actions) -> Result<()> {
        match self.state {
            State::Connecting { ending: None } => self.set_state(State::Connecting {
                ending: Some(Ending::End),
            }),
            // The FIN wait bounds the whole graceful end: a flush stuck on a peer that never
            // reads is held to it as much as a peer that never sends its FIN.
            State::Open => {
                self.set_state(State::HalfClosedLocal(Fin::Pending));
                out.push_back(Action::ArmDeadline(Deadline::FinWait));
                self.maybe_fin(out);
            }
            State::HalfClosedRemote => {
                self.set_state(State::Closing {
                    fin: Fin::Pending,
                    peer_fin: true,
                });
                self.maybe_fin(out);
                // With nothing queued the close is already done (the echo-server case, once
                // per connection): no deadline to arm and cancel.
                if !self.is_destroyed() {
                    out.push_back(Action::ArmDeadline(Deadline::FinWait));
                }
            }
            State::Connecting { ending: Some(_) }
            | State::HalfClosedLocal(_)
            | State::Closing { .. } => {}
            State::Destroyed => return Err(Error::Destroyed),
        }
        Ok(())
    }

    /// `destroy_soon()`: flush, FIN, read and discard until the peer's FIN, then close.
    pub fn destroy_soon(&mut self, out: &mut Actions) -> Result<()> {
        match self.state {
            State::Connecting { .. } => self.set_state(State::Connecting {
                ending: Some(Ending::DestroySoon),
            }),
            // The linger deadline bounds the whole lingering close — a flush stuck on a peer
            // that never reads included — so it is armed on entering `Closing`.
            State::Open => {
                self.set_state(State::Closing {
                    fin: Fin::Pending,
                    peer_fin: false,
                });
                out.push_back(Action::ArmDeadline(Deadline::Linger));
                self.maybe_fin(out);
            }
            State::HalfClosedLocal(fin) => {
                self.set_state(State::Closing {
                    fin,
                    peer_fin: false,
                });
                out.push_back(Action::ArmDeadline(Deadline::Linger));
            }
            State::HalfClosedRemote => {
                self.end(out)?;
                // Replaces the FIN wait `end` armed: this close was asked to linger (unless
                // the end already completed the close).
                if !self.is_destroyed() {
                    out.push_back(Action::ArmDeadline(Deadline::Linger));
                }
            }
            State::Closing { .. } => {}
            State::Destroyed => return Err(Error::Destroyed),
        }
        Ok(())
    }

    /// `destroy([error])`: close at once, dropping the queue (reported as unsent).
    pub fn destroy(&mut self, error: Option<Error>, out: &mut Actions) -> Result<()> {
        if self.is_destroyed() {
            return Err(Error::Destroyed);
        }
        self.close(CloseReason::LocalDestroy, error, out);
        Ok(())
    }

    /// `reset_and_destroy()`: RST and close, in every live state (after `end()` too).
    pub fn reset(&mut self, out: &mut Actions) -> Result<()> {
        if self.is_destroyed() {
            return Err(Error::Destroyed);
        }
        self.close(CloseReason::LocalReset, None, out);
        Ok(())
    }

    /// Stops delivering `Data` (the reactor stops reading, so the peer feels backpressure).
    pub fn pause(&mut self) -> Result<()> {
        self.live()?;
        self.paused = true;
        Ok(())
    }

    /// Delivers `Data` again.
    pub fn resume(&mut self) -> Result<()> {
        self.live()?;
        self.paused = false;
        Ok(())
    }

    fn live(&self) -> Result<()> {
        if self.is_destroyed() {
            Err(Error::Destroyed)
        } else {
            Ok(())
        }
    }

    // ---- what the reactor observed -----------------------------------------------------

    /// The connect completed.
    pub fn on_connected(&mut self, out: &mut Actions) {
        let State::Connecting { ending } = self.state else {
            return;
        };
        self.set_state(State::Open);
        out.push_back(Action::Emit(Event::Connect));
        // The program's end() is applied after `Connect` is queued, so events stay in order.
        let _ = match ending {
            None => Ok(()),
            Some(Ending::End) => self.end(out),
            Some(Ending::DestroySoon) => self.destroy_soon(out),
        };
    }

    /// `n` bytes were read. Returns whether to deliver them as `Data` (false: discard).
    pub fn on_read(&mut self, n: usize) -> bool {
        self.bytes_read += n as u64;
        self.delivers_data()
    }

    /// The peer's FIN (a zero-byte read).
    pub fn on_eof(&mut self, out: &mut Actions) {
        match self.state {
            State::Open => {
                self.set_state(State::HalfClosedRemote);
                out.push_back(Action::Emit(Event::End));
            }
            State::HalfClosedLocal(Fin::Pending) => {
                self.set_state(State::Closing {
                    fin: Fin::Pending,
                    peer_fin: true,
                });
                out.push_back(Action::Emit(Event::End));
            }
            State::HalfClosedLocal(Fin::Sent) => {
                out.push_back(Action::Emit(Event::End));
                self.close(CloseReason::Graceful, None, out);
            }
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            } => self.set_state(State::Closing {
                fin: Fin::Pending,
                peer_fin: true,
            }),
            State::Closing {
                fin: Fin::Sent,
                peer_fin: false,
            } => self.close(CloseReason::Graceful, None, out),
            // No read happens in these states; a stray EOF changes nothing.
            State::Connecting { .. }
            | State::HalfClosedRemote
            | State::Closing { peer_fin: true, .. }
            | State::Destroyed => {}
        }
    }

    /// Keeps the socket writable after the peer's FIN (a pipe passes the FIN on instead of
    /// ending this side).
    pub fn set_allow_half_open(&mut self, allow: bool) {
        self.options.allow_half_open = allow;
    }

    /// The program's `End` handler returned: a socket that does not allow half-open ends
    /// itself now, so anything the handler wrote still precedes the FIN.
    pub fn after_end_delivered(&mut self, out: &mut Actions) {
        if !self.options.allow_half_open && self.state == State::HalfClosedRemote {
            let _ = self.end(out);
        }
    }

    /// `n` bytes reached the kernel for this socket by `splice`, past the queue (a pipe's
    /// zero-copy path): counted as written, and progress for the FIN wait.
    pub fn on_spliced(&mut self, n: usize) {
        self.bytes_written += n as u64;
    }

    /// The kernel took `n` queued bytes.
    pub fn on_written(&mut self, n: usize, out: &mut Actions) {
        let n = n.min(self.queue.len());
        if n == 0 {
            // Nothing moved: nothing can have become due (and the FIN must not be asked twice).
            return;
        }
        self.queue.advance(n);
        self.bytes_written += n as u64;
        if self.queue.is_empty() {
            if self.drain_owed {
                self.drain_owed = false;
                out.push_back(Action::Emit(Event::Drain));
            }
            self.maybe_fin(out);
        }
    }

    fn maybe_fin(&mut self, out: &mut Actions) {
        if !self.fin_pending() || !self.queue.is_empty() {
            return;
        }
        if self.state
            == (State::Closing {
                fin: Fin::Pending,
                peer_fin: true,
            })
        {
            // Both directions are done the moment our FIN leaves, and the peer's FIN means no
            // unread input can turn `close` into an RST: `close` alone sends the FIN, one
            // syscall instead of `shutdown` + `close` for every connection the peer ends first.
            out.push_back(Action::Emit(Event::Finish));
            self.close(CloseReason::Graceful, None, out);
        } else {
            out.push_back(Action::Shutdown);
        }
    }

    /// Outcome of the `shutdown(Write)` asked for by [`Action::Shutdown`].
    pub fn on_shutdown(&mut self, result: io::Result<()>, out: &mut Actions) {
        if let Err(e) = result {
            return self.on_io_error(e, out);
        }
        match self.state {
            State::HalfClosedLocal(Fin::Pending) => {
                self.set_state(State::HalfClosedLocal(Fin::Sent));
                out.push_back(Action::Emit(Event::Finish));
            }
            State::Closing {
                fin: Fin::Pending,
                peer_fin: true,
            } => {
                out.push_back(Action::Emit(Event::Finish));
                self.close(CloseReason::Graceful, None, out);
            }
            State::Closing {
                fin: Fin::Pending,
                peer_fin: false,
            } => {
                self.set_state(State::Closing {
                    fin: Fin::Sent,
                    peer_fin: false,
                });
                out.push_back(Action::Emit(Event::Finish));
            }
            _ => {}
        }
    }

    /// A read, write, connect or shutdown failed. Resets (ECONNRESET, EPIPE) are reported as
    /// [`CloseReason::PeerReset`], everything else as [`CloseReason::Error`].
    pub fn on_io_error(&mut self, error: io::Error, out: &mut Actions) {
        if self.is_destroyed() {
            return;
        }
        let reason = match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => CloseReason::PeerReset,
            _ => CloseReason::Error,
        };
        self.close(reason, Some(Error::Io(error)), out);
    }

    /// A deadline armed through [`Action::ArmDeadline`] ran out. Ignored when the state has
    /// moved on and the deadline no longer applies.
    pub fn on_deadline(&mut self, which: Deadline, out: &mut Actions) {
        let applies = match which {
            Deadline::Connect => matches!(self.state, State::Connecting { .. }),
            // Armed by `end`; from then on the socket is `HalfClosedLocal` or `Closing`.
            Deadline::FinWait => {
                matches!(
                    self.state,
                    State::HalfClosedLocal(_) | State::Closing { .. }
                )
            }
            // Only `destroy_soon` arms it, and from then on the socket is `Closing` until it
            // is destroyed, whichever FIN came first.
            Deadline::Linger => matches!(self.state, State::Closing { .. }),
            Deadline::Shutdown => !self.is_destroyed(),
        };
        if applies {
            let error = Error::TimedOut(match which {
                Deadline::Connect => "connect",
                Deadline::FinWait => "FIN wait",
                Deadline::Linger => "linger",
                Deadline::Shutdown => "shutdown",
            });
            // A connect that timed out failed (Node: error + close(true)); the other deadlines
            // end sockets the program already let go of, so they close without an error event.
            let error = (which == Deadline::Connect).then_some(error);
            self.close(CloseReason::Deadline(which), error, out);
        }
    }

    /// Closes for good: queue dropped and counted, fd closed, `Error` (if any) then `Close`.
    ///
    /// `had_error` is whether an error is reported (Node's `close(hadError)`). The close sends
    /// RST — not FIN — when the program asked for it (`reset_and_destroy`) and also whenever
    /// queued bytes are dropped, whatever the reason: a FIN after a truncated stream would let
    /// the peer take it for a complete one (SEMANTICS B2.1, a deliberate difference from
    /// Node, which closes with a FIN).
    fn close(&mut self, reason: CloseReason, error: Option<Error>, out: &mut Actions) {
        let unsent = self.queue.clear();
        self.drain_owed = false;
        self.set_state(State::Destroyed);
        let reset = reason == CloseReason::LocalReset || unsent > 0;
        out.push_back(Action::Close { reset });
        let had_error = error.is_some();
        if let Some(e) = error {
            out.push_back(Action::Emit(Event::Error(e)));
        }
        out.push_back(Action::Emit(Event::Close(CloseInfo {
            had_error,
            reason,
            unsent,
        })));
    }
}

#[cfg(test)]
mod tests;
