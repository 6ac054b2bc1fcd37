//! finwait (crate docs written below)
#![warn(missing_docs)]

mod context;
mod error;
mod event;
mod handler;
mod id;
mod options;
mod reactor;
pub mod state;
mod sys;
pub mod write_queue;

pub use context::Context;
pub use error::{Error, Result};
pub use event::{CloseInfo, CloseReason, Deadline, Event, ListenerEvent, ReadyState};
pub use handler::Handler;
pub use id::{ListenerId, SocketId};
pub use options::{ConnectOptions, DEFAULT_HIGH_WATER_MARK, ListenOptions};
pub use reactor::Reactor;
pub use state::{Fin, State};
