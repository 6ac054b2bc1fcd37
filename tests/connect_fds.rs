//! A connect that fails — a local address that cannot be bound, a refused port — closes its
//! socket: after `Close` no fd is left open. Alone in its own test binary, so no other test's
//! sockets move the process-wide fd count.

mod common;

use common::*;
use finwait::{ConnectOptions, Context, Event, Reactor, SocketId};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn failed_connects_leave_no_fd_open() {
    const EACH: usize = 100;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut reactor = Reactor::new().unwrap();
    let baseline = open_fds();
    let mut ids = Vec::new();
    for _ in 0..EACH {
        // Bind fails (the address is a listener's): reported as Error + Close.
        let options = ConnectOptions::new().local_addr(Some(taken.local_addr().unwrap()));
        ids.push(reactor.connect(refused, options).unwrap());
        // Connect refused.
        ids.push(reactor.connect(refused, ConnectOptions::new()).unwrap());
    }
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 2 * EACH);
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 2 == 0 {
            ["Error(AddrInUse)", "Close(true, Error, 0)"]
        } else {
            ["Error(ConnectionRefused)", "Close(true, Error, 0)"]
        };
        assert_eq!(h.events(*id), expected);
    }
    assert_no_live_socket(&reactor);
    assert_eq!(open_fds(), baseline, "fds left open by failed connects");
}
