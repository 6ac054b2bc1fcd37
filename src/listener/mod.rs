//! One listener: its state machine and the slot that holds it beside the listening fd.

pub(crate) mod machine;

use mio::net::TcpListener;

use crate::options::ListenOptions;
use crate::timers::TimerId;
pub(crate) use machine::{Listener, ListenerAction, ListenerActions, ListenerState};

/// One listener in the reactor's table.
#[derive(Debug)]
pub(crate) struct ListenerSlot {
    pub(crate) machine: Listener,
    /// The listening fd; `None` once closed.
    pub(crate) listener: Option<TcpListener>,
    pub(crate) options: ListenOptions,
    /// In this turn's list of listeners to accept from.
    pub(crate) scheduled: bool,
    /// Whether the poller reports this listener (it is registered level-triggered and
    /// silenced while it must leave connections queued; see `sys::register_listener`).
    pub(crate) interested: bool,
    /// The accept-retry timer while backed off.
    pub(crate) retry: Option<TimerId>,
}
