//! [`Slot`]: one socket in the reactor's table — the machine plus the I/O facts only the
//! driver knows (cached readiness, timers, the fd).

use std::time::Instant;

use mio::net::TcpStream;

use crate::driver::TimerKey;
use crate::id::{ListenerId, PipeId};
use crate::socket::machine::Conn;
use crate::timers::{TimerId, Timers};

/// A graceful shutdown's request that a socket finish (`Handler::on_shutdown_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishRequest {
    None,
    /// Asked; delivered at the socket's next service.
    Pending,
    /// Delivered: a later shutdown (the reactor's after its listener's) does not ask again.
    Delivered,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) stream: Option<TcpStream>,
    pub(crate) conn: Conn,
    pub(crate) listener: Option<ListenerId>,
    /// Cached edge-triggered readiness: set by events, cleared only when the kernel says
    /// `WouldBlock` (or a short read / partial write proves the buffer ran dry / full).
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// epoll reported the peer's FIN or RST: keep reading past a short read to see it.
    pub(crate) read_closed: bool,
    /// epoll reported an error (EPOLLERR): the socket has a pending error — a reset, most
    /// often — that the next read, write or `SO_ERROR` check must surface.
    pub(crate) error_hint: bool,
    /// Already in the reactor's list of sockets to service this turn.
    pub(crate) scheduled: bool,
    /// Where a graceful shutdown's request to finish is: the handler hears of it once, at the
    /// socket's next service.
    pub(crate) finish: FinishRequest,
    /// The idle timer (`set_timeout`), if armed.
    pub(crate) idle: Option<TimerId>,
    /// The one deadline a state can have at a time (connect, FIN wait, linger).
    pub(crate) deadline: Option<TimerId>,
    /// The pipe this socket forwards through, if any.
    pub(crate) pipe: Option<PipeId>,
}

impl Slot {
    pub(crate) fn new(conn: Conn, listener: Option<ListenerId>) -> Slot {
        Slot {
            stream: None,
            conn,
            listener,
            readable: false,
            writable: false,
            read_closed: false,
            error_hint: false,
            scheduled: false,
            finish: FinishRequest::None,
            idle: None,
            deadline: None,
            pipe: None,
        }
    }

    /// Records traffic: re-arms the idle timeout and the FIN wait. Stores a time, nothing more.
    #[inline]
    pub(crate) fn touch(&self, timers: &mut Timers<TimerKey>, now: Instant) {
        for t in [self.idle, self.deadline].into_iter().flatten() {
            timers.touch(t, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle connections cost their slot and little else (target: ≤ 256 bytes of server memory
    /// per idle connection); this pins the slot's size so a new field is a deliberate choice.
    #[test]
    fn slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        // 168 since the write-queue bound (`ConnOptions::max_queued`, 8 bytes); 176 since
        // pipes (the socket's `PipeId`, 8 bytes and a tag).
        assert!(size <= 176, "Slot grew to {size} bytes");
    }
}
