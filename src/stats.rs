//! [`Stats`]: what a reactor has seen since it started, for operators.
//!
//! Always on: each counter is one add where something happens once per connection (an accept,
//! a close, a deadline, a reset) — never per read or write. Bytes are summed from the sockets'
//! own counts when a socket closes, and from the live sockets when the stats are read.

use std::fmt;

use crate::event::{CloseReason, Deadline};

/// Counters of one reactor since it started (see [`Context::stats`](crate::Context::stats)).
///
/// ```
/// use finwait::{CloseReason, Reactor};
/// let reactor = Reactor::new()?;
/// let stats = reactor.stats();
/// assert_eq!(stats.accepted, 0);
/// assert_eq!(stats.closes(CloseReason::PeerReset), 0);
/// # Ok::<(), finwait::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted (those taken off a closing listener's accept queue included).
    pub accepted: u64,
    /// Of those, taken off an accept queue when their listener closed (SEMANTICS B2.13).
    pub swept: u64,
    /// Outgoing connections that completed.
    pub connected: u64,
    /// Sockets closed, by reason: see [`closes`](Self::closes).
    closes: [u64; CLOSE_KINDS],
    /// RSTs this reactor sent: `reset_and_destroy`, and closes that dropped queued bytes
    /// (not counting closes after the peer's own reset, which send nothing).
    pub resets_sent: u64,
    /// Accept errors other than "nothing to accept" (out of fds included).
    pub accept_errors: u64,
    /// Bytes read from peers, by closed and live sockets.
    pub bytes_read: u64,
    /// Bytes handed to the kernel, by closed and live sockets.
    pub bytes_written: u64,
    /// Bytes accepted by `write` that never reached the kernel: the sum of the closed
    /// sockets' [`CloseInfo::unsent`](crate::CloseInfo::unsent).
    pub bytes_unsent: u64,
    /// Listening sockets handed over to another process or reactor
    /// ([`Context::hand_over_listener`](crate::Context::hand_over_listener), a handover).
    pub listeners_handed_over: u64,
}

const CLOSE_KINDS: usize = 9;

fn close_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::Graceful => 0,
        CloseReason::LocalDestroy => 1,
        CloseReason::LocalReset => 2,
        CloseReason::PeerReset => 3,
        CloseReason::Error => 4,
        CloseReason::Deadline(Deadline::Connect) => 5,
        CloseReason::Deadline(Deadline::FinWait) => 6,
        CloseReason::Deadline(Deadline::Linger) => 7,
        CloseReason::Deadline(Deadline::Shutdown) => 8,
    }
}

const CLOSE_NAMES: [&str; CLOSE_KINDS] = [
    "graceful",
    "local_destroy",
    "local_reset",
    "peer_reset",
    "error",
    "deadline_connect",
    "deadline_fin_wait",
    "deadline_linger",
    "deadline_shutdown",
];

impl Stats {
    /// Sockets closed for `reason` (a peer reset counts as a reset received; each
    /// `Deadline(kind)` is its own count).
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[close_index(reason)]
    }

    /// Sockets closed for any reason.
    pub fn closed(&self) -> u64 {
        self.closes.iter().sum()
    }

    pub(crate) fn on_close(
        &mut self,
        reason: CloseReason,
        bytes_read: u64,
        bytes_written: u64,
        unsent: usize,
    ) {
        self.closes[close_index(reason)] += 1;
        self.bytes_unsent += unsent as u64;
        self.bytes_read += bytes_read;
        self.bytes_written += bytes_written;
    }
}

impl fmt::Display for Stats {
    /// One line: `accepted 10 (swept 0), connected 0, closed 10 (graceful 8, peer_reset 2),
    /// resets sent 0, accept errors 0, bytes read 1024 written 1024 unsent 0` (and
    /// `, listeners handed over N` after a handover).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {} (swept {}), connected {}, closed {}",
            self.accepted,
            self.swept,
            self.connected,
            self.closed()
        )?;
        let mut first = true;
        for (name, n) in CLOSE_NAMES.iter().zip(self.closes) {
            if n > 0 {
                f.write_str(if first { " (" } else { ", " })?;
                write!(f, "{name} {n}")?;
                first = false;
            }
        }
        if !first {
            f.write_str(")")?;
        }
        write!(
            f,
            ", resets sent {}, accept errors {}, bytes read {} written {} unsent {}",
            self.resets_sent,
            self.accept_errors,
            self.bytes_read,
            self.bytes_written,
            self.bytes_unsent
        )?;
        if self.listeners_handed_over > 0 {
            write!(f, ", listeners handed over {}", self.listeners_handed_over)?;
        }
        Ok(())
    }
}
