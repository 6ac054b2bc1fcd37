//! SIGTERM/SIGINT through `Reactor::shutdown_on_signals`: the first starts a graceful
//! shutdown, a second one during it stops at once. Its own test binary: the signals are
//! raised at this very process.

mod common;

use std::time::Duration;

use common::*;
use finwait::{CloseReason, Context, Event, ListenOptions, SocketId, State};

#[test]
fn a_second_signal_during_the_graceful_shutdown_stops_at_once() {
    let (mut reactor, _l, addr) = server(ListenOptions::new());
    reactor
        .shutdown_on_signals(Duration::from_secs(600))
        .unwrap();
    // A client that never sends its FIN: the graceful shutdown would wait out the grace.
    let mut client = peer(addr);
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 1);
    let id = h.sockets()[0];

    // SAFETY: raise only sends a signal to this process; signal-hook's handler is installed.
    assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
    run_until(&mut reactor, &mut h, |_, r| {
        r.context().is_shutting_down() && r.context().state(id).is_ok_and(|s| s != State::Open)
    });
    // Ended gracefully: the client reads the FIN...
    let (got, ending) = read_to_end(&mut client);
    assert_eq!((got.len(), ending), (0, Ending::Fin));
    // ...but never answers it. The second signal stops the reactor now.
    assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    assert_eq!(h.closed[&id].reason, CloseReason::LocalDestroy);
    reactor.serve(&mut h).unwrap(); // returns: stopped and idle
    assert_no_live_socket(&reactor);
    drop(client);
}
