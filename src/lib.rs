//! finwait (crate docs written below)
#![warn(missing_docs)]

mod error;
mod event;
mod id;
pub mod state;
pub mod write_queue;

pub use error::{Error, Result};
pub use event::{CloseInfo, CloseReason, Deadline, Event, ListenerEvent, ReadyState};
pub use id::{ListenerId, SocketId};
