//! One socket: its state machine, its write queue, and the slot that holds both beside the
//! I/O facts only the driver knows.

pub mod machine;
mod slot;
pub mod write_queue;

pub(crate) use slot::{FinishRequest, Slot};
