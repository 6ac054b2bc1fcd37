//! The pair machine: what one socket's end, drain or close does to the other socket of a
//! pipe. Sans-IO: the driver feeds it what happened and carries out the actions it returns.
//!
//! | from | input | to | actions |
//! |---|---|---|---|
//! | `Open` | FIN from side X (`End`) | `HalfClosed{ended: X}` | `end()` the other side: its FIN follows every byte forwarded before |
//! | `HalfClosed{ended: X}` | FIN from the other side | `Ended` | `end()` side X |
//! | any but `Closing`, `Closed` | side X closes | `Closing{closed: X}` | see below |
//! | `Closing{closed: X}` | the other side closes | `Closed` | the summary |
//! | any | a forward left the destination over its high-water mark | same | pause the source |
//! | any | the destination drained | same | resume the source |
//!
//! When side X closes first, the other side is reset if X's stream broke — a peer reset, an
//! error, a local reset, bytes dropped (`unsent > 0`) or forwarding that failed — so its peer
//! sees ECONNRESET, never a clean end of a truncated stream (unless the program asked for a
//! lingering close instead). A close that lost nothing (a local `destroy`, a deadline with an
//! empty queue) gives the other side a lingering close: flush, FIN, discard its input. A
//! graceful close needs nothing: both directions ended, and the other side closes by itself.
//! Whatever closes second — by itself or by the pipe's doing — only completes the pair.

use crate::event::{CloseInfo, CloseReason};

/// One of the two sockets of a pipe: `A` is the first given to
/// [`Context::pipe`](crate::Context::pipe), `B` the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first socket given to `pipe`.
    A,
    /// The second socket given to `pipe`.
    B,
}

impl Side {
    /// The other socket of the pair.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn at(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// Where a pipe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeState {
    /// Bytes flow both ways.
    Open,
    /// Side `ended` sent its FIN, passed on to the other side; bytes still flow the other way.
    HalfClosed { ended: Side },
    /// Both directions ended; the sockets close by themselves once flushed.
    Ended,
    /// Side `closed` closed first; the other is closing.
    Closing { closed: Side },
    /// Both closed: the summary is out.
    Closed,
}

/// What the driver must do to a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PipeAction {
    Pause(Side),
    Resume(Side),
    /// `end()`: FIN after everything queued.
    End(Side),
    /// `reset_and_destroy()`.
    Reset(Side),
    /// Resume and `destroy_soon()`: flush, FIN, discard input.
    DestroySoon(Side),
    /// Both sides closed: deliver the summary.
    Finished,
}

/// The pair's own record of how it went, for the summary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    /// Bytes forwarded from each side (index: `Side::at`).
    pub(crate) forwarded: [u64; 2],
    /// Of those, the bytes that went kernel to kernel (`splice`).
    pub(crate) spliced: [u64; 2],
    /// Each side's close, once it came.
    pub(crate) closes: [Option<CloseInfo>; 2],
    pub(crate) first_closed: Option<Side>,
}

#[derive(Debug)]
pub(crate) struct PipeMachine {
    state: PipeState,
    /// Reset the other side when one side's stream breaks (else: lingering close).
    reset_on_break: bool,
    /// A forward from this side failed (the destination refused the bytes): its stream broke.
    forward_failed: [bool; 2],
    /// Sides the pipe paused for backpressure (resumed on the other side's drain).
    paused_by_pipe: [bool; 2],
    pub(crate) tally: Tally,
}

impl PipeMachine {
    pub(crate) fn new(reset_on_break: bool) -> PipeMachine {
        PipeMachine {
            state: PipeState::Open,
            reset_on_break,
            forward_failed: [false; 2],
            paused_by_pipe: [false; 2],
            tally: Tally::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> PipeState {
        self.state
    }

    /// The one place where the state changes.
    fn set_state(&mut self, next: PipeState) {
        log::trace!("pipe: {:?} => {:?}", self.state, next);
        self.state = next;
    }

    fn is_closing(&self) -> bool {
        matches!(self.state, PipeState::Closing { .. } | PipeState::Closed)
    }

    /// `n` bytes read from `from` were handed to the other side; `below` says whether its
    /// queue is still under the high-water mark.
    pub(crate) fn on_forwarded(
        &mut self,
        from: Side,
        n: usize,
        below: bool,
        out: &mut Vec<PipeAction>,
    ) {
        self.tally.forwarded[from.at()] += n as u64;
        if !below && !self.paused_by_pipe[from.at()] {
            self.paused_by_pipe[from.at()] = true;
            out.push(PipeAction::Pause(from));
        }
    }

    /// The other side refused bytes read from `from` (it ended or is being destroyed): they
    /// are lost, so `from`'s stream is broken — its peer must not see a clean end.
    pub(crate) fn on_forward_failed(&mut self, from: Side, out: &mut Vec<PipeAction>) {
        if self.forward_failed[from.at()] || self.is_closing() {
            return;
        }
        self.forward_failed[from.at()] = true;
        out.push(PipeAction::Reset(from));
    }

    /// Side `to` drained below its high-water mark: the side feeding it may read again.
    pub(crate) fn on_drain(&mut self, to: Side, out: &mut Vec<PipeAction>) {
        let from = to.other();
        if std::mem::take(&mut self.paused_by_pipe[from.at()]) && !self.is_closing() {
            out.push(PipeAction::Resume(from));
        }
    }

    /// Side `from` delivered its peer's FIN after its last byte.
    pub(crate) fn on_end(&mut self, from: Side, out: &mut Vec<PipeAction>) {
        match self.state {
            PipeState::Open => {
                self.set_state(PipeState::HalfClosed { ended: from });
                out.push(PipeAction::End(from.other()));
            }
            PipeState::HalfClosed { ended } if ended != from => {
                self.set_state(PipeState::Ended);
                out.push(PipeAction::End(from.other()));
            }
            // A second FIN from the same side cannot come; after a close there is nobody to
            // pass it to.
            _ => {}
        }
    }

    /// Side `side` closed with `info`.
    pub(crate) fn on_close(&mut self, side: Side, info: CloseInfo, out: &mut Vec<PipeAction>) {
        if self.tally.closes[side.at()].is_some() {
            return;
        }
        self.tally.closes[side.at()] = Some(info);
        let other = side.other();
        if self.tally.closes[other.at()].is_some() {
            self.set_state(PipeState::Closed);
            out.push(PipeAction::Finished);
            return;
        }
        self.tally.first_closed = Some(side);
        self.set_state(PipeState::Closing { closed: side });
        let broken = info.had_error
            || info.unsent > 0
            || self.forward_failed[side.at()]
            || matches!(
                info.reason,
                CloseReason::PeerReset | CloseReason::Error | CloseReason::LocalReset
            );
        if broken && self.reset_on_break {
            out.push(PipeAction::Reset(other));
        } else if broken || info.reason != CloseReason::Graceful {
            out.push(PipeAction::DestroySoon(other));
        }
        // A graceful close: both directions ended through the pair, so the other side has
        // both FINs too and closes by itself once flushed.
    }
}

#[cfg(test)]
mod tests;
