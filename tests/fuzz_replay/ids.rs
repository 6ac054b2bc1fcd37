//! Socket ids of a real `finwait::Reactor`: calls with a stale id always return
//! `Err(Error::StaleId)` and never reach the socket that reuses the slot; ids of live sockets
//! always work; a destroyed socket answers `Destroyed` until its slot is reclaimed.
//!
//! Sockets are made fast: the reactor connects to its own listener on 127.0.0.1 (so each
//! connect yields two sockets: the client and the accepted one), at most 16 alive at once.
//! Every call picks from all ids ever seen, live or stale, so stale ids are exercised as much
//! as live ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use finwait::{
    ConnectOptions, Context, Error, Event, Handler, ListenOptions, ListenerEvent, ListenerId,
    Reactor, ReactorOptions, SocketId, State,
};

/// Most operations replayed per input: keeps each run short.
const MAX_OPS: usize = 64;
/// Most sockets alive at once.
const MAX_LIVE: usize = 16;

/// A call on one socket.
#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum Call {
    Write {
        len: u8,
    },
    End,
    Destroy,
    DestroySoon,
    Reset,
    Pause,
    Resume,
    SetTimeout,
    /// Only the read-only facts (state, byte counts, addresses).
    Query,
}

#[derive(arbitrary::Arbitrary, Debug, Clone, Copy)]
pub enum Operation {
    /// `connect` to the reactor's own listener.
    Connect,
    /// `call` on the `pick`-th id ever seen (live, destroyed or stale).
    Call { pick: u8, call: Call },
    /// One turn of the loop without waiting.
    RunOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Live,
    /// Destroyed (its `Close` is queued or being delivered); not yet reclaimed.
    Destroyed,
    /// Reclaimed: every call must say `StaleId`.
    Stale,
}

#[derive(Default)]
struct Recorder {
    /// Ids in order of first sight.
    known: Vec<SocketId>,
    status: HashMap<SocketId, Status>,
    /// `Close` delivered during the current turn.
    closed_now: Vec<SocketId>,
    problems: Vec<String>,
}

impl Recorder {
    fn learn(&mut self, id: SocketId) {
        if self.status.insert(id, Status::Live).is_some() {
            self.problems.push(format!("{id} handed out twice"));
        }
        self.known.push(id);
    }

    fn live_count(&self) -> usize {
        self.status
            .values()
            .filter(|s| **s != Status::Stale)
            .count()
    }
}

impl Handler for Recorder {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        if let Event::Accepted(_) = event {
            self.learn(id);
            return;
        }
        match self.status.get(&id) {
            None => self
                .problems
                .push(format!("event {event:?} for unknown {id}")),
            Some(Status::Stale) => self
                .problems
                .push(format!("event {event:?} for stale {id}")),
            Some(_) if self.closed_now.contains(&id) => self
                .problems
                .push(format!("event {event:?} for {id} after its Close")),
            Some(_) => {}
        }
        if let Event::Close(_) = event {
            self.status.insert(id, Status::Destroyed);
            self.closed_now.push(id);
            // Inside the Close handler the id is destroyed, not yet stale.
            if !matches!(cx.write(id, b"x"), Err(Error::Destroyed)) {
                self.problems
                    .push(format!("{id}: write in its Close handler is not Destroyed"));
            }
            if !matches!(cx.state(id), Ok(State::Destroyed)) {
                self.problems
                    .push(format!("{id}: state in its Close handler is not Destroyed"));
            }
        }
    }

    fn on_listener_event(&mut self, _: &mut Context, _: ListenerId, _: ListenerEvent) {}
}

/// The observable facts of a socket, to prove a stale call changed nothing.
fn facts(r: &Reactor, id: SocketId) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        r.context().state(id).map_err(|e| e.to_string()),
        r.context().ready_state(id).map_err(|e| e.to_string()),
        r.context().bytes_written(id).map_err(|e| e.to_string()),
        r.context().bytes_queued(id).map_err(|e| e.to_string()),
        r.context().bytes_read(id).map_err(|e| e.to_string()),
        r.context().listener_of(id).map_err(|e| e.to_string()),
    )
}

/// Makes `call`; returns the results of everything it called, as `Err` names or "ok".
fn make_call(r: &mut Reactor, id: SocketId, call: Call) -> Vec<Result<(), String>> {
    fn name<T>(res: finwait::Result<T>) -> Result<(), String> {
        res.map(|_| ()).map_err(|e| match e {
            Error::StaleId => "StaleId".to_string(),
            Error::Destroyed => "Destroyed".to_string(),
            Error::WriteAfterEnd => "WriteAfterEnd".to_string(),
            other => format!("{other:?}"),
        })
    }
    match call {
        Call::Write { len } => vec![name(
            r.context_mut().write(id, &vec![7u8; usize::from(len)]),
        )],
        Call::End => vec![name(r.context_mut().end(id))],
        Call::Destroy => vec![name(r.context_mut().destroy(id))],
        Call::DestroySoon => vec![name(r.context_mut().destroy_soon(id))],
        Call::Reset => vec![name(r.context_mut().reset_and_destroy(id))],
        Call::Pause => vec![name(r.context_mut().pause(id))],
        Call::Resume => vec![name(r.context_mut().resume(id))],
        Call::SetTimeout => vec![name(
            r.context_mut()
                .set_timeout(id, Some(Duration::from_secs(60))),
        )],
        Call::Query => vec![
            name(r.context().state(id)),
            name(r.context().ready_state(id)),
            name(r.context().bytes_written(id)),
            name(r.context().bytes_queued(id)),
            name(r.context().bytes_read(id)),
            name(r.context().listener_of(id)),
        ],
    }
}

fn turn(r: &mut Reactor, h: &mut Recorder) {
    h.closed_now.clear();
    r.run_once(h, Some(Duration::ZERO)).expect("run_once");
    // Slots of sockets whose Close was delivered are freed at the end of the turn.
    for id in std::mem::take(&mut h.closed_now) {
        h.status.insert(id, Status::Stale);
    }
    check_all(r, h);
}

/// Every id answers according to its status.
fn check_all(r: &Reactor, h: &mut Recorder) {
    for &id in &h.known {
        let state = r.context().state(id);
        match h.status[&id] {
            Status::Stale => assert!(
                matches!(state, Err(Error::StaleId)),
                "{id} is stale but state() gave {state:?}"
            ),
            Status::Destroyed => assert!(
                matches!(state, Ok(State::Destroyed)),
                "{id} is destroyed (not reclaimed) but state() gave {state:?}"
            ),
            Status::Live => assert!(
                state.is_ok(),
                "{id} has not been closed but state() gave {state:?}"
            ),
        }
    }
    assert!(h.problems.is_empty(), "handler saw: {:#?}", h.problems);
}

pub fn replay(ops: &[Operation]) {
    let options = ReactorOptions::new()
        .fin_wait(Some(Duration::from_millis(50)))
        .linger(Duration::from_millis(50));
    let mut r = Reactor::with_options(options).expect("reactor");
    let listener = r
        .listen("127.0.0.1:0", ListenOptions::new())
        .expect("listen");
    let addr: SocketAddr = r.listener_addr(listener).expect("listener address");
    let mut h = Recorder::default();

    for (step, op) in ops.iter().take(MAX_OPS).enumerate() {
        match *op {
            Operation::Connect => {
                // Two sockets per connect (the accepted one arrives later).
                if h.live_count() + 2 <= MAX_LIVE {
                    let id = r.connect(addr, ConnectOptions::new()).expect("connect");
                    h.learn(id);
                    // A connect that failed at once (ports exhausted) is destroyed already.
                    if matches!(r.context().state(id), Ok(State::Destroyed)) {
                        h.status.insert(id, Status::Destroyed);
                    }
                }
            }
            Operation::RunOnce => turn(&mut r, &mut h),
            Operation::Call { pick, call } => {
                if h.known.is_empty() {
                    continue;
                }
                let id = h.known[usize::from(pick) % h.known.len()];
                let status = h.status[&id];
                let others: Vec<SocketId> = h
                    .known
                    .iter()
                    .copied()
                    .filter(|o| *o != id && h.status[o] != Status::Stale)
                    .collect();
                let before: Vec<String> = others.iter().map(|&o| facts(&r, o)).collect();
                let live_before = r.context().live_sockets();
                let results = make_call(&mut r, id, call);
                match status {
                    Status::Stale => {
                        for res in &results {
                            assert_eq!(
                                res.as_ref().map_err(String::as_str),
                                Err("StaleId"),
                                "step {step}: {call:?} on stale {id}"
                            );
                        }
                        let after: Vec<String> = others.iter().map(|&o| facts(&r, o)).collect();
                        assert_eq!(
                            before, after,
                            "step {step}: {call:?} on stale {id} changed another socket"
                        );
                        assert_eq!(
                            r.context().live_sockets(),
                            live_before,
                            "step {step}: stale call changed the socket count"
                        );
                    }
                    Status::Destroyed => {
                        for res in &results {
                            assert!(
                                res.as_ref().map_err(String::as_str) != Err("StaleId"),
                                "step {step}: {call:?} on destroyed, unreclaimed {id} said StaleId"
                            );
                        }
                        if matches!(
                            call,
                            Call::Write { .. } | Call::End | Call::Destroy | Call::Reset
                        ) {
                            assert_eq!(
                                results[0].as_ref().map_err(String::as_str),
                                Err("Destroyed"),
                                "step {step}: {call:?} on destroyed {id}"
                            );
                        }
                    }
                    Status::Live => {
                        for res in &results {
                            assert!(
                                res.as_ref().map_err(String::as_str) != Err("StaleId"),
                                "step {step}: {call:?} on live {id} said StaleId"
                            );
                        }
                        // A call may destroy it (destroy, reset, a failed write).
                        if matches!(r.context().state(id), Ok(State::Destroyed)) {
                            h.status.insert(id, Status::Destroyed);
                        }
                    }
                }
                check_all(&r, &mut h);
            }
        }
    }

    // Tear down: destroy everything, close the listener, and let the loop reclaim it all.
    for id in h.known.clone() {
        if h.status[&id] == Status::Live {
            r.context_mut()
                .destroy(id)
                .unwrap_or_else(|e| panic!("destroy live {id}: {e}"));
            h.status.insert(id, Status::Destroyed);
        }
    }
    r.context_mut()
        .close_listener(listener)
        .expect("close listener");
    for _ in 0..4 {
        turn(&mut r, &mut h);
        if r.context().live_sockets() == 0 && r.context().live_listeners() == 0 {
            break;
        }
    }
    assert_eq!(r.context().live_sockets(), 0, "sockets left after teardown");
    assert_eq!(
        r.context().live_listeners(),
        0,
        "listener left after teardown"
    );
    for &id in &h.known {
        assert_eq!(h.status[&id], Status::Stale, "{id} never reclaimed");
        assert!(matches!(
            r.context_mut().write(id, b"x"),
            Err(Error::StaleId)
        ));
    }
    assert!(r.is_idle());
}
