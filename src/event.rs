//! What the reactor tells a program: socket events and listener events.

use crate::error::Error;
use crate::id::ListenerId;

/// One thing that happened to a socket. Delivered to [`Handler::on_event`](crate::Handler),
/// never inside the call that caused it.
///
/// Order per socket: `Accepted` or `Connect` first, `Close` last and exactly once, `Error` at
/// most once and right before `Close`. `End` comes after the last `Data`; `Finish` after the
/// last queued byte reached the kernel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A listener accepted this socket (Node's server `connection`).
    Accepted(ListenerId),
    /// An outgoing connection is established.
    Connect,
    /// Bytes read from the peer. The slice borrows the reactor's read buffer: copy what you
    /// keep.
    Data(&'a [u8]),
    /// The peer sent FIN, after all its data was delivered. Without `allow_half_open` the
    /// reactor calls `end()` right after this handler returns, so a write made here still goes
    /// out before our FIN.
    End,
    /// Our FIN was handed to the kernel, after every queued byte.
    Finish,
    /// The write queue emptied after a `write` returned `false`.
    Drain,
    /// No byte was read or written for the socket's idle timeout. Nothing is closed: the
    /// handler decides.
    Timeout,
    /// The socket failed; `Close` with `had_error == true` follows.
    Error(Error),
    /// The socket is gone: fd closed, id about to become stale. Always the last event.
    Close(CloseInfo),
}

/// Why a socket closed. `had_error` keeps Node's meaning; `reason` says what ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseInfo {
    /// True when the socket was destroyed because of an error (Node's `close(hadError)`); a
    /// peer reset is one.
    pub had_error: bool,
    /// What ended the socket.
    pub reason: CloseReason,
    /// Bytes accepted by `write` that never reached the kernel (dropped by destroy, reset, a
    /// peer reset, an error or a deadline) — for a piped socket, also the bytes a kernel pipe
    /// still held for it ([`Context::pipe`](crate::Context::pipe) with splicing). Zero after a graceful close. When it is not zero
    /// the close sent RST, so the peer saw the stream end in a reset, never in a clean FIN.
    pub unsent: usize,
}

/// What ended a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both sides sent FIN and every queued byte was written.
    Graceful,
    /// The program called `destroy` (with or without an error).
    LocalDestroy,
    /// The program called `reset_and_destroy`: RST sent.
    LocalReset,
    /// The peer sent RST (the kernel said ECONNRESET, EPIPE or ECONNABORTED).
    PeerReset,
    /// A transport error other than a reset (refused connect, unreachable, timed out, …).
    Error,
    /// A deadline ran out.
    Deadline(Deadline),
}

/// Which deadline closed a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Deadline {
    /// The connect did not complete in time.
    Connect,
    /// After `end()`, the socket made no progress for
    /// [`ReactorOptions::fin_wait`](crate::ReactorOptions::fin_wait): armed at `end()` (not
    /// at our FIN), it bounds both a flush stuck on a peer that never reads and the wait for
    /// the peer's FIN; every byte moved either way re-arms it.
    FinWait,
    /// A lingering close ([`Context::destroy_soon`](crate::Context::destroy_soon): flush,
    /// FIN, discard input until the peer's FIN) took longer than
    /// [`ReactorOptions::linger`](crate::ReactorOptions::linger) in all. (Not to be confused
    /// with `SO_LINGER`, which finwait only uses, with a zero timeout, to send RST.)
    Linger,
    /// A graceful shutdown's grace period ran out.
    Shutdown,
}

/// Something that happened to a listener.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenerEvent {
    /// Accepting failed with an unexpected error (running out of fds is not reported). The
    /// listener stays open: it pauses for `ReactorOptions::accept_retry` and tries again.
    Error(Error),
    /// The listener is closed and every socket it accepted has closed.
    Close,
}

/// Node's `readyState`, derived from the socket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyState {
    /// Connecting.
    Opening,
    /// Readable and writable.
    Open,
    /// We ended; the peer may still send.
    ReadOnly,
    /// The peer ended; we may still write.
    WriteOnly,
    /// Neither direction is usable.
    Closed,
}
