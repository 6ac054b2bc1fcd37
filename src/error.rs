//! Errors: misuse of the API is kept apart from what the network did.

use std::io;

/// Everything that can go wrong in finwait.
///
/// Misuse errors ([`WriteAfterEnd`](Error::WriteAfterEnd), [`Destroyed`](Error::Destroyed),
/// [`StaleId`](Error::StaleId), [`InvalidOption`](Error::InvalidOption)) are returned by the
/// call that caused them and change nothing. Transport errors arrive as
/// [`Event::Error`](crate::Event::Error) right before the socket's `Close`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `write` (or `end_with` some data) after `end()`, or after the automatic end of a
    /// socket without `allow_half_open`. Unlike Node, the connection is left alone:
    /// everything queued before `end()` still goes out, then the FIN. A bare second `end()`
    /// is a no-op, not an error.
    #[error("write after end")]
    WriteAfterEnd,
    /// The socket is already destroyed; its `Close` is (or was) being delivered.
    #[error("socket is destroyed")]
    Destroyed,
    /// The id names no live socket or listener: it was reclaimed, or never existed. A stale id
    /// never reaches a socket that reuses its slot.
    #[error("stale or unknown id")]
    StaleId,
    /// A `write` would have queued more than the socket's bound on its write queue
    /// ([`ListenOptions::max_queued`](crate::ListenOptions::max_queued)): it is refused whole
    /// — nothing of it is sent or queued — and the connection is left as it was. A program
    /// that gets this ignored `write` returning `false` (wait for `Drain`).
    #[error("write of {write} bytes refused: {queued} bytes already queued, limit {limit}")]
    QueueFull {
        /// Bytes queued when the write was refused.
        queued: usize,
        /// Bytes the refused write carried.
        write: usize,
        /// The socket's bound.
        limit: usize,
    },
    /// [`Context::attachment_mut`](crate::Context::attachment_mut) was asked for the
    /// attachment of the socket the running handler call is about: the handler already holds
    /// it, as its `attachment` argument.
    #[error("the socket's attachment is lent to the running handler call")]
    AttachmentInUse,
    /// An option value that cannot work (for example a zero backlog).
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// A deadline ran out (connect timeout, wait for the peer's FIN, linger, shutdown grace).
    #[error("{0} deadline expired")]
    TimedOut(&'static str),
    /// An operating-system error: connection refused, reset by peer, broken pipe, …
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The program destroyed the socket with an error of its own
    /// ([`Context::destroy_with`](crate::Context::destroy_with), Node's `destroy(err)`):
    /// neither a misuse of the API nor something the network did.
    #[error("{0}")]
    Application(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An I/O error that names what it was about, as the user gave it: an address
    /// (`127.0.0.1:7000: Address already in use`) or a path.
    pub(crate) fn io_about(what: impl std::fmt::Display, e: io::Error) -> Error {
        Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
    }

    /// The OS error kind when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// `Result` with finwait's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
