//! The pair machine, input by input: each test pins one row of the table in `machine.rs`.

use super::*;
use crate::event::Deadline;

fn info(reason: CloseReason, unsent: usize) -> CloseInfo {
    CloseInfo {
        had_error: matches!(reason, CloseReason::PeerReset | CloseReason::Error),
        reason,
        unsent,
    }
}

fn run(
    m: &mut PipeMachine,
    input: impl FnOnce(&mut PipeMachine, &mut Vec<PipeAction>),
) -> Vec<PipeAction> {
    let mut out = Vec::new();
    input(m, &mut out);
    out
}

#[test]
fn a_fin_is_passed_on_and_the_other_direction_stays_open() {
    let mut m = PipeMachine::new(true);
    assert_eq!(
        run(&mut m, |m, o| m.on_end(Side::A, o)),
        [PipeAction::End(Side::B)]
    );
    assert_eq!(m.state(), PipeState::HalfClosed { ended: Side::A });
    // The same side's FIN again changes nothing.
    assert_eq!(run(&mut m, |m, o| m.on_end(Side::A, o)), []);
    assert_eq!(
        run(&mut m, |m, o| m.on_end(Side::B, o)),
        [PipeAction::End(Side::A)]
    );
    assert_eq!(m.state(), PipeState::Ended);
}

#[test]
fn backpressure_pauses_the_source_once_and_the_drain_resumes_it() {
    let mut m = PipeMachine::new(true);
    assert_eq!(run(&mut m, |m, o| m.on_forwarded(Side::A, 10, true, o)), []);
    assert_eq!(
        run(&mut m, |m, o| m.on_forwarded(Side::A, 70_000, false, o)),
        [PipeAction::Pause(Side::A)]
    );
    assert_eq!(run(&mut m, |m, o| m.on_forwarded(Side::A, 5, false, o)), []);
    // B drained: A, which feeds it, reads again. A drain of A resumes nothing (B was not
    // paused by the pipe).
    assert_eq!(run(&mut m, |m, o| m.on_drain(Side::A, o)), []);
    assert_eq!(
        run(&mut m, |m, o| m.on_drain(Side::B, o)),
        [PipeAction::Resume(Side::A)]
    );
    assert_eq!(m.tally.forwarded, [70_015, 0]);
}

#[test]
fn a_broken_side_resets_the_other() {
    for (reason, unsent) in [
        (CloseReason::PeerReset, 0),
        (CloseReason::Error, 0),
        (CloseReason::LocalReset, 0),
        (CloseReason::LocalDestroy, 100),
        (CloseReason::Deadline(Deadline::FinWait), 1),
    ] {
        let mut m = PipeMachine::new(true);
        assert_eq!(
            run(&mut m, |m, o| m.on_close(Side::B, info(reason, unsent), o)),
            [PipeAction::Reset(Side::A)],
            "{reason:?} unsent {unsent}"
        );
        assert_eq!(m.state(), PipeState::Closing { closed: Side::B });
    }
}

#[test]
fn a_broken_side_gives_the_other_a_lingering_close_when_resets_are_off() {
    let mut m = PipeMachine::new(false);
    assert_eq!(
        run(&mut m, |m, o| m.on_close(
            Side::A,
            info(CloseReason::PeerReset, 0),
            o
        )),
        [PipeAction::DestroySoon(Side::B)]
    );
}

#[test]
fn a_close_without_loss_gives_the_other_a_lingering_close() {
    for reason in [
        CloseReason::LocalDestroy,
        CloseReason::Deadline(Deadline::FinWait),
        CloseReason::Deadline(Deadline::Shutdown),
    ] {
        let mut m = PipeMachine::new(true);
        assert_eq!(
            run(&mut m, |m, o| m.on_close(Side::A, info(reason, 0), o)),
            [PipeAction::DestroySoon(Side::B)],
            "{reason:?}"
        );
    }
}

#[test]
fn a_graceful_close_needs_nothing_and_the_second_close_finishes_the_pair() {
    let mut m = PipeMachine::new(true);
    run(&mut m, |m, o| m.on_end(Side::A, o));
    run(&mut m, |m, o| m.on_end(Side::B, o));
    assert_eq!(
        run(&mut m, |m, o| m.on_close(
            Side::B,
            info(CloseReason::Graceful, 0),
            o
        )),
        []
    );
    assert_eq!(
        run(&mut m, |m, o| m.on_close(
            Side::A,
            info(CloseReason::Graceful, 0),
            o
        )),
        [PipeAction::Finished]
    );
    assert_eq!(m.state(), PipeState::Closed);
    assert_eq!(m.tally.first_closed, Some(Side::B));
    // A close reported twice counts once.
    assert_eq!(
        run(&mut m, |m, o| m.on_close(
            Side::A,
            info(CloseReason::PeerReset, 0),
            o
        )),
        []
    );
}

#[test]
fn a_failed_forward_resets_the_source_and_then_the_other_side() {
    let mut m = PipeMachine::new(true);
    assert_eq!(
        run(&mut m, |m, o| m.on_forward_failed(Side::A, o)),
        [PipeAction::Reset(Side::A)]
    );
    // Once only.
    assert_eq!(run(&mut m, |m, o| m.on_forward_failed(Side::A, o)), []);
    // A's reset close is a break: B is reset too, even though it was a local reset.
    assert_eq!(
        run(&mut m, |m, o| m.on_close(
            Side::A,
            info(CloseReason::LocalReset, 0),
            o
        )),
        [PipeAction::Reset(Side::B)]
    );
}

#[test]
fn nothing_is_resumed_or_passed_on_once_a_side_closed() {
    let mut m = PipeMachine::new(true);
    run(&mut m, |m, o| m.on_forwarded(Side::A, 1, false, o));
    run(&mut m, |m, o| {
        m.on_close(Side::B, info(CloseReason::PeerReset, 0), o)
    });
    assert_eq!(run(&mut m, |m, o| m.on_drain(Side::B, o)), []);
    assert_eq!(run(&mut m, |m, o| m.on_end(Side::A, o)), []);
}
