//! Per-state fixtures and transition tests for the sans-IO listener machine.
//!
//! Every fixture is reached from a fresh [`Listener`] through its inputs, so no test starts
//! from a state the machine cannot reach. Actions are compared as compact strings.

use super::*;

fn id() -> ListenerId {
    ListenerId {
        index: 0,
        generation: 0,
    }
}

const GRACE: Duration = Duration::from_secs(1);

fn describe(out: ListenerActions) -> Vec<String> {
    out.into_iter()
        .map(|a| match a {
            ListenerAction::Silence => "silence".to_string(),
            ListenerAction::Schedule => "schedule".to_string(),
            ListenerAction::ArmRetry => "arm retry".to_string(),
            ListenerAction::CancelRetry => "cancel retry".to_string(),
            ListenerAction::Close => "close".to_string(),
            ListenerAction::Forget => "forget".to_string(),
            ListenerAction::Shutdown { grace } => format!("shutdown {grace:?}"),
            ListenerAction::Emit(ListenerEvent::Close) => "emit Close".to_string(),
            ListenerAction::Emit(ListenerEvent::Error(e)) => format!("emit Error({e})"),
        })
        .collect()
}

fn step(l: &mut Listener, f: impl FnOnce(&mut Listener, &mut ListenerActions)) -> Vec<String> {
    let mut out = ListenerActions::new();
    f(l, &mut out);
    describe(out)
}

fn call(
    l: &mut Listener,
    f: impl FnOnce(&mut Listener, &mut ListenerActions) -> Result<()>,
) -> (String, Vec<String>) {
    let mut out = ListenerActions::new();
    let r = f(l, &mut out);
    let outcome = match r {
        Ok(()) => "Ok".to_string(),
        Err(e) => format!("{e:?}"),
    };
    (outcome, describe(out))
}

fn ok(actions: &[&str]) -> (String, Vec<String>) {
    ("Ok".into(), actions.iter().map(|s| s.to_string()).collect())
}

const NONE: [&str; 0] = [];

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- fixtures ------------------------------------------------------------------------------

/// Open with a limit of 2 connections, one of them open.
fn open() -> Listener {
    let mut l = Listener::new(id(), Some(2));
    assert_eq!(step(&mut l, |l, o| l.on_accepted(o)), NONE);
    assert_eq!(l.state(), ListenerState::Open);
    assert_eq!(l.connections(), 1);
    l
}

/// At its limit of 2: reports silenced.
fn full() -> Listener {
    let mut l = open();
    assert_eq!(step(&mut l, |l, o| l.on_accepted(o)), ["silence"]);
    assert_eq!(l.state(), ListenerState::Full);
    l
}

/// An accept failed with fd exhaustion (not reported), one connection open.
fn backed_off() -> Listener {
    let mut l = open();
    assert_eq!(
        step(&mut l, |l, o| l.on_accept_error(None, o)),
        ["silence", "arm retry"]
    );
    assert_eq!(l.state(), ListenerState::BackedOff);
    l
}

/// Closed by the program with one connection still open.
fn draining() -> Listener {
    let mut l = open();
    assert_eq!(call(&mut l, |l, o| l.close(o)), ok(&["close"]));
    assert_eq!(step(&mut l, |l, o| l.on_fd_closed(o)), NONE);
    assert_eq!(l.state(), ListenerState::Draining { shutdown: false });
    l
}

/// Shut down with one connection still open.
fn draining_shutdown() -> Listener {
    let mut l = open();
    assert_eq!(
        call(&mut l, |l, o| l.shutdown(GRACE, o)),
        ok(&["close", "shutdown 1s"])
    );
    assert_eq!(step(&mut l, |l, o| l.on_fd_closed(o)), NONE);
    assert_eq!(l.state(), ListenerState::Draining { shutdown: true });
    l
}

/// Closed, and its last connection closed.
fn closed() -> Listener {
    let mut l = draining();
    assert_eq!(step(&mut l, |l, o| l.on_socket_closed(o)), ["emit Close"]);
    assert_eq!(l.state(), ListenerState::Closed);
    l
}

type Fixture = (&'static str, fn() -> Listener);

const ALL: [Fixture; 6] = [
    ("open", open),
    ("full", full),
    ("backed_off", backed_off),
    ("draining", draining),
    ("draining_shutdown", draining_shutdown),
    ("closed", closed),
];

/// Runs `f` on every fixture and compares with the expected `(name, result)` table, which must
/// list every fixture in `ALL`'s order.
fn table<T: PartialEq + std::fmt::Debug>(
    expected: &[(&str, T)],
    mut f: impl FnMut(&mut Listener) -> T,
) {
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    let all: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, all, "table must cover every fixture");
    for ((name, make), (_, want)) in ALL.iter().zip(expected) {
        let mut l = make();
        assert_eq!(&f(&mut l), want, "{name}");
    }
}

// ---- predicates ----------------------------------------------------------------------------

#[test]
fn predicates_in_every_state() {
    table(
        &[
            ("open", (true, true)),
            ("full", (false, true)),
            ("backed_off", (false, true)),
            ("draining", (false, false)),
            ("draining_shutdown", (false, false)),
            ("closed", (false, false)),
        ],
        |l| (l.may_accept(), l.is_listening()),
    );
}

// ---- inputs in every state -----------------------------------------------------------------

#[test]
fn on_accepted_in_every_state() {
    // Sweeping at close accepts past `max_connections`: the count grows, nothing else moves.
    table(
        &[
            ("open", (s(&["silence"]), ListenerState::Full, 2)),
            ("full", (s(&[]), ListenerState::Full, 3)),
            ("backed_off", (s(&[]), ListenerState::BackedOff, 2)),
            (
                "draining",
                (s(&[]), ListenerState::Draining { shutdown: false }, 2),
            ),
            (
                "draining_shutdown",
                (s(&[]), ListenerState::Draining { shutdown: true }, 2),
            ),
            ("closed", (s(&[]), ListenerState::Closed, 1)),
        ],
        |l| {
            let a = step(l, |l, o| l.on_accepted(o));
            (a, l.state(), l.connections())
        },
    );
}

#[test]
fn on_socket_closed_in_every_state() {
    table(
        &[
            ("open", (s(&[]), ListenerState::Open)),
            // Below the limit again: accept the next queued connection.
            ("full", (s(&["schedule"]), ListenerState::Open)),
            ("backed_off", (s(&[]), ListenerState::BackedOff)),
            // The last connection closed: the listener's Close comes after the socket's.
            ("draining", (s(&["emit Close"]), ListenerState::Closed)),
            (
                "draining_shutdown",
                (s(&["emit Close"]), ListenerState::Closed),
            ),
            ("closed", (s(&[]), ListenerState::Closed)),
        ],
        |l| {
            let a = step(l, |l, o| l.on_socket_closed(o));
            (a, l.state())
        },
    );
}

#[test]
fn accept_errors_back_off_only_an_open_listener_and_report_all_but_fd_exhaustion() {
    table(
        &[
            (
                "open",
                (
                    s(&["silence", "arm retry", "emit Error(invalid option: x)"]),
                    ListenerState::BackedOff,
                ),
            ),
            ("full", (s(&[]), ListenerState::Full)),
            ("backed_off", (s(&[]), ListenerState::BackedOff)),
            (
                "draining",
                (s(&[]), ListenerState::Draining { shutdown: false }),
            ),
            (
                "draining_shutdown",
                (s(&[]), ListenerState::Draining { shutdown: true }),
            ),
            ("closed", (s(&[]), ListenerState::Closed)),
        ],
        |l| {
            let a = step(l, |l, o| {
                l.on_accept_error(Some(Error::InvalidOption("x")), o)
            });
            (a, l.state())
        },
    );
}

#[test]
fn retry_and_freed_fds_reopen_only_a_backed_off_listener() {
    table(
        &[
            ("open", (s(&[]), s(&[]))),
            ("full", (s(&[]), s(&[]))),
            (
                "backed_off",
                (s(&["schedule"]), s(&["cancel retry", "schedule"])),
            ),
            ("draining", (s(&[]), s(&[]))),
            ("draining_shutdown", (s(&[]), s(&[]))),
            ("closed", (s(&[]), s(&[]))),
        ],
        |l| {
            let mut other = match l.state() {
                // Two copies of the state: one for each input.
                ListenerState::BackedOff => backed_off(),
                _ => Listener {
                    id: l.id,
                    state: l.state,
                    connections: l.connections,
                    max_connections: l.max_connections,
                },
            };
            let retry = step(l, |l, o| l.on_retry(o));
            let freed = step(&mut other, |l, o| l.on_fd_freed(o));
            if !retry.is_empty() {
                assert_eq!(l.state(), ListenerState::Open);
                assert_eq!(other.state(), ListenerState::Open);
            }
            (retry, freed)
        },
    );
}

// ---- the program's calls in every state ----------------------------------------------------

#[test]
fn hand_over_in_every_state() {
    table(
        &[
            ("open", ok(&["forget"])),
            ("full", ok(&["forget"])),
            ("backed_off", ok(&["cancel retry", "forget"])),
            ("draining", ("Destroyed".into(), Vec::new())),
            ("draining_shutdown", ("Destroyed".into(), Vec::new())),
            ("closed", ("Destroyed".into(), Vec::new())),
        ],
        |l| call(l, |l, o| l.hand_over(o)),
    );
}

#[test]
fn close_in_every_state() {
    table(
        &[
            ("open", ok(&["close"])),
            ("full", ok(&["close"])),
            ("backed_off", ok(&["cancel retry", "close"])),
            ("draining", ("Destroyed".into(), Vec::new())),
            ("draining_shutdown", ("Destroyed".into(), Vec::new())),
            ("closed", ("Destroyed".into(), Vec::new())),
        ],
        |l| call(l, |l, o| l.close(o)),
    );
}

#[test]
fn shutdown_in_every_state() {
    table(
        &[
            ("open", ok(&["close", "shutdown 1s"])),
            ("full", ok(&["close", "shutdown 1s"])),
            ("backed_off", ok(&["cancel retry", "close", "shutdown 1s"])),
            // Closed already: its connections are still told to finish.
            ("draining", ok(&["shutdown 1s"])),
            // A second shutdown does nothing.
            ("draining_shutdown", ok(&[])),
            ("closed", ("Destroyed".into(), Vec::new())),
        ],
        |l| call(l, |l, o| l.shutdown(GRACE, o)),
    );
}

#[test]
fn a_listener_closed_with_no_connection_closes_once_its_fd_is_closed() {
    let mut l = Listener::new(id(), None);
    assert_eq!(call(&mut l, |l, o| l.close(o)), ok(&["close"]));
    assert_eq!(l.state(), ListenerState::Draining { shutdown: false });
    assert_eq!(step(&mut l, |l, o| l.on_fd_closed(o)), ["emit Close"]);
    assert_eq!(l.state(), ListenerState::Closed);
    // Nothing after Close.
    assert_eq!(step(&mut l, |l, o| l.on_fd_closed(o)), NONE);
    assert_eq!(step(&mut l, |l, o| l.on_socket_closed(o)), NONE);
}

#[test]
fn connections_swept_at_close_keep_the_listener_until_they_close() {
    let mut l = Listener::new(id(), Some(1));
    assert_eq!(call(&mut l, |l, o| l.close(o)), ok(&["close"]));
    // The sweep takes two queued connections, past max_connections.
    assert_eq!(step(&mut l, |l, o| l.on_accepted(o)), NONE);
    assert_eq!(step(&mut l, |l, o| l.on_accepted(o)), NONE);
    assert_eq!(step(&mut l, |l, o| l.on_fd_closed(o)), NONE);
    assert_eq!(step(&mut l, |l, o| l.on_socket_closed(o)), NONE);
    assert_eq!(step(&mut l, |l, o| l.on_socket_closed(o)), ["emit Close"]);
}
