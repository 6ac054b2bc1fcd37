//! Pipes: two sockets forwarding to each other, with the close model carried across (see
//! `machine` for the table of what one side's end, drain or close does to the other).

pub(crate) mod machine;
pub(crate) mod splice;
#[cfg(test)]
mod tests;

use crate::event::CloseInfo;
use crate::id::{PipeId, SocketId};
pub use machine::Side;
pub(crate) use machine::{PipeAction, PipeMachine};
pub use splice::Splice;
pub(crate) use splice::{Direction, PipePool};

/// How a pipe forwards (see [`Context::pipe`](crate::Context::pipe)).
///
/// ```
/// use finwait::PipeOptions;
/// let options = PipeOptions::new().watch(true);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipeOptions {
    /// Also deliver each socket's `Data` to the handler (after forwarding it). Default off:
    /// a piped socket's bytes go to the other side only.
    pub watch: bool,
    /// When one side's stream breaks (peer reset, error, local reset, bytes dropped), reset
    /// the other side so its peer sees ECONNRESET (default). Off: the other side gets a
    /// lingering close instead (flush, FIN, discard input).
    pub reset_on_break: bool,
    /// When to forward with `splice(2)` instead of copying (default [`Splice::Auto`]). A
    /// watched pipe always copies: its bytes must pass through the handler. Splicing needs
    /// `SIGPIPE` ignored (Rust binaries do); otherwise the pipe copies.
    pub splice: Splice,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            watch: false,
            reset_on_break: true,
            splice: Splice::Auto,
        }
    }
}

impl PipeOptions {
    /// The defaults: no `Data` to the handler, a broken side resets the other.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`watch`](Self::watch).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// See [`splice`](Self::splice).
    pub fn splice(mut self, splice: Splice) -> Self {
        self.splice = splice;
        self
    }

    /// See [`reset_on_break`](Self::reset_on_break).
    pub fn reset_on_break(mut self, reset: bool) -> Self {
        self.reset_on_break = reset;
        self
    }
}

/// How a pipe ended: delivered once, to
/// [`Handler::on_pipe_closed`](crate::Handler::on_pipe_closed), after both sockets' `Close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipeSummary {
    /// The pipe.
    pub pipe: PipeId,
    /// The first socket given to `pipe`.
    pub a: SocketId,
    /// The second socket given to `pipe`.
    pub b: SocketId,
    /// Bytes read from `a` and handed to `b` (queued or sent; a reset of `b` may have dropped
    /// some, counted in `b_close.unsent`).
    pub a_to_b: u64,
    /// Bytes read from `b` and handed to `a`.
    pub b_to_a: u64,
    /// Of `a_to_b`, the bytes that never entered the process: moved by `splice(2)` (see
    /// [`PipeOptions::splice`]).
    pub a_to_b_spliced: u64,
    /// Of `b_to_a`, the bytes moved by `splice(2)`.
    pub b_to_a_spliced: u64,
    /// Which socket closed first: the one whose end decided the other's.
    pub first_closed: Side,
    /// How `a` closed.
    pub a_close: CloseInfo,
    /// How `b` closed.
    pub b_close: CloseInfo,
}

/// One pipe in the reactor's table.
#[derive(Debug)]
pub(crate) struct PipeSlot {
    pub(crate) sockets: [SocketId; 2],
    pub(crate) machine: PipeMachine,
    pub(crate) watch: bool,
    pub(crate) splice: Splice,
    /// The spliced directions, by source side (`A` → `B` first).
    pub(crate) spliced: [Option<Direction>; 2],
}

impl PipeSlot {
    pub(crate) fn socket(&self, side: Side) -> SocketId {
        self.sockets[match side {
            Side::A => 0,
            Side::B => 1,
        }]
    }

    /// The spliced direction whose source is `from`, if it splices.
    pub(crate) fn spliced_from(&mut self, from: Side) -> Option<&mut Direction> {
        self.spliced[side_index(from)].as_mut()
    }

    /// Which side `id` is, if it belongs to this pipe.
    pub(crate) fn side_of(&self, id: SocketId) -> Option<Side> {
        if self.sockets[0] == id {
            Some(Side::A)
        } else if self.sockets[1] == id {
            Some(Side::B)
        } else {
            None
        }
    }

    /// The summary, once both sides closed.
    pub(crate) fn summary(&self, pipe: PipeId) -> Option<PipeSummary> {
        let tally = &self.machine.tally;
        Some(PipeSummary {
            pipe,
            a: self.sockets[0],
            b: self.sockets[1],
            a_to_b: tally.forwarded[0],
            b_to_a: tally.forwarded[1],
            a_to_b_spliced: tally.spliced[0],
            b_to_a_spliced: tally.spliced[1],
            first_closed: tally.first_closed?,
            a_close: tally.closes[0]?,
            b_close: tally.closes[1]?,
        })
    }
}

pub(crate) fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}
