//! The per-listener state machine, sans-IO.
//!
//! [`Listener`] takes inputs — the program's `close`/`shutdown`, what an `accept` returned, a
//! retry timer, one of its sockets closing — and answers with [`ListenerAction`]s that the
//! driver turns into syscalls and events. Every state change goes through
//! `Listener::set_state`, which trace-logs `listener A.B: X => Y`. The transition table lives
//! in the crate docs ([`crate`]); keep both in step.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::ListenerEvent;
use crate::id::ListenerId;

/// A listener's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListenerState {
    /// Accepting: the poller reports waiting connections.
    Open,
    /// At `max_connections`: further connections wait in the accept queue, and the poller's
    /// reports are off until a socket closes.
    Full,
    /// Accepting failed (out of fds, or an unexpected error): a retry timer is armed and the
    /// poller's reports are off; a socket closing (an fd freed) retries at once.
    BackedOff,
    /// Closed by the program: the accept queue was taken and the listening fd closed; waiting
    /// for the sockets it accepted to close. `shutdown` tells whether a graceful shutdown of
    /// this listener runs (its connections were told to finish, a grace deadline is armed).
    Draining {
        /// A graceful shutdown of this listener is running.
        shutdown: bool,
    },
    /// Closed and every socket it accepted closed: `Close` is queued, the slot is reclaimed
    /// after the event batch.
    Closed,
}

/// What the machine asks the driver to do, in order.
#[derive(Debug)]
pub(crate) enum ListenerAction {
    /// Turn the poller's reports off (the listener must leave connections queued).
    Silence,
    /// Try accepting soon (this turn's accept pass), turning reports back on.
    Schedule,
    /// Arm the accept-retry timer.
    ArmRetry,
    /// Cancel the accept-retry timer.
    CancelRetry,
    /// Take what waits in the accept queue, then close the listening fd.
    Close,
    /// Stop accepting and close this reactor's fd without taking the accept queue: another
    /// process (or reactor) holds the same listening socket and serves that queue now.
    Forget,
    /// Tell every connection of this listener to finish, and arm the grace deadline (after
    /// which the stragglers are destroyed).
    Shutdown {
        /// How long the connections may take to finish.
        grace: Duration,
    },
    /// Deliver this event to the program.
    Emit(ListenerEvent),
}

/// Output buffer the driver drains after every input.
pub(crate) type ListenerActions = VecDeque<ListenerAction>;

/// One listener's machine: its state and its count of open connections.
#[derive(Debug)]
pub(crate) struct Listener {
    id: ListenerId,
    state: ListenerState,
    /// Accepted sockets not yet closed.
    connections: usize,
    max_connections: Option<usize>,
}

impl Listener {
    pub(crate) fn new(id: ListenerId, max_connections: Option<usize>) -> Listener {
        Listener {
            id,
            state: ListenerState::Open,
            connections: 0,
            max_connections,
        }
    }

    /// The one place where the state changes.
    fn set_state(&mut self, next: ListenerState) {
        log::trace!("{}: {:?} => {:?}", self.id, self.state, next);
        self.state = next;
    }

    // ---- facts -------------------------------------------------------------------------

    pub(crate) fn state(&self) -> ListenerState {
        self.state
    }

    /// Accepted sockets not yet closed.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        self.connections
    }

    /// Whether an `accept` may be made now.
    pub(crate) fn may_accept(&self) -> bool {
        self.state == ListenerState::Open
    }

    /// Whether the listening fd is still open (not yet closed by the program).
    pub(crate) fn is_listening(&self) -> bool {
        matches!(
            self.state,
            ListenerState::Open | ListenerState::Full | ListenerState::BackedOff
        )
    }

    fn is_full(&self) -> bool {
        self.max_connections
            .is_some_and(|max| self.connections >= max)
    }

    // ---- what the driver observed ------------------------------------------------------

    /// `accept` returned a connection (taken while open, or swept at close).
    pub(crate) fn on_accepted(&mut self, out: &mut ListenerActions) {
        self.connections += 1;
        if self.state == ListenerState::Open && self.is_full() {
            self.set_state(ListenerState::Full);
            out.push_back(ListenerAction::Silence);
        }
    }

    /// `accept` failed with an error that concerns the listener, not one connection: back off
    /// instead of spinning on a connection that cannot be taken. Running out of fds is
    /// expected under load and not reported; anything else is.
    pub(crate) fn on_accept_error(&mut self, error: Option<Error>, out: &mut ListenerActions) {
        if self.state != ListenerState::Open {
            return;
        }
        self.set_state(ListenerState::BackedOff);
        out.push_back(ListenerAction::Silence);
        out.push_back(ListenerAction::ArmRetry);
        if let Some(e) = error {
            out.push_back(ListenerAction::Emit(ListenerEvent::Error(e)));
        }
    }

    /// The retry timer fired.
    pub(crate) fn on_retry(&mut self, out: &mut ListenerActions) {
        if self.state == ListenerState::BackedOff {
            self.set_state(ListenerState::Open);
            out.push_back(ListenerAction::Schedule);
        }
    }

    /// Some socket of the reactor closed: an fd is free, so a listener that backed off tries
    /// again now rather than at its timer.
    pub(crate) fn on_fd_freed(&mut self, out: &mut ListenerActions) {
        if self.state == ListenerState::BackedOff {
            self.set_state(ListenerState::Open);
            out.push_back(ListenerAction::CancelRetry);
            out.push_back(ListenerAction::Schedule);
        }
    }

    /// One of this listener's sockets closed.
    pub(crate) fn on_socket_closed(&mut self, out: &mut ListenerActions) {
        self.connections = self.connections.saturating_sub(1);
        match self.state {
            ListenerState::Full if !self.is_full() => {
                self.set_state(ListenerState::Open);
                out.push_back(ListenerAction::Schedule);
            }
            ListenerState::Draining { .. } if self.connections == 0 => self.closed(out),
            _ => {}
        }
    }

    /// Whether the listener still takes connections (not closed or handed over).
    pub(crate) fn is_accepting(&self) -> bool {
        matches!(
            self.state,
            ListenerState::Open | ListenerState::Full | ListenerState::BackedOff
        )
    }

    // ---- the program's calls -----------------------------------------------------------

    /// `close_listener`: stop accepting, close the fd (after taking the accept queue), report
    /// `Close` once the last accepted socket closed.
    pub(crate) fn close(&mut self, out: &mut ListenerActions) -> Result<()> {
        match self.state {
            ListenerState::Draining { .. } | ListenerState::Closed => Err(Error::Destroyed),
            state => {
                if state == ListenerState::BackedOff {
                    out.push_back(ListenerAction::CancelRetry);
                }
                out.push_back(ListenerAction::Close);
                self.set_state(ListenerState::Draining { shutdown: false });
                // The sweep may add connections; the driver reports them through
                // `on_accepted` before it reports `on_fd_closed`.
                Ok(())
            }
        }
    }

    /// The listening socket was handed over (to a successor that holds it now): stop
    /// accepting at once and close this fd without taking the queue, which is the
    /// successor's; report `Close` once the last accepted socket closed.
    pub(crate) fn hand_over(&mut self, out: &mut ListenerActions) -> Result<()> {
        match self.state {
            ListenerState::Draining { .. } | ListenerState::Closed => Err(Error::Destroyed),
            state => {
                if state == ListenerState::BackedOff {
                    out.push_back(ListenerAction::CancelRetry);
                }
                out.push_back(ListenerAction::Forget);
                self.set_state(ListenerState::Draining { shutdown: false });
                Ok(())
            }
        }
    }

    /// The listening fd is closed and the swept connections counted: with none left open,
    /// the listener is done.
    pub(crate) fn on_fd_closed(&mut self, out: &mut ListenerActions) {
        if matches!(self.state, ListenerState::Draining { .. }) && self.connections == 0 {
            self.closed(out);
        }
    }

    /// `shutdown_listener`: close if still listening, tell every connection to finish, and
    /// arm the grace deadline. A second call does nothing.
    pub(crate) fn shutdown(&mut self, grace: Duration, out: &mut ListenerActions) -> Result<()> {
        match self.state {
            ListenerState::Closed => Err(Error::Destroyed),
            ListenerState::Draining { shutdown: true } => Ok(()),
            ListenerState::Draining { shutdown: false } => {
                self.set_state(ListenerState::Draining { shutdown: true });
                out.push_back(ListenerAction::Shutdown { grace });
                Ok(())
            }
            _ => {
                self.close(out)?;
                self.set_state(ListenerState::Draining { shutdown: true });
                out.push_back(ListenerAction::Shutdown { grace });
                Ok(())
            }
        }
    }

    fn closed(&mut self, out: &mut ListenerActions) {
        self.set_state(ListenerState::Closed);
        out.push_back(ListenerAction::Emit(ListenerEvent::Close));
    }
}

#[cfg(test)]
mod tests;
