//! The reactor's counters read back exactly the closes a test caused: N peer resets, N
//! FIN-wait deadlines, N graceful closes, the RSTs we sent, the bytes each way.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::*;
use finwait::{
    CloseReason, Context, Deadline, Event, ListenOptions, ManualClock, Reactor, ReactorOptions,
    SocketId,
};

const N: usize = 5;

#[test]
fn counters_read_back_the_closes_a_test_caused() {
    let clock = ManualClock::new();
    let mut reactor = Reactor::with_clock(
        ReactorOptions::new().fin_wait(Some(Duration::from_secs(30))),
        clock.clone(),
    )
    .unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    // Every connection gets "hi" and then: group 0 waits (its peers reset), group 1 is ended
    // by us and its peers never send their FIN (FIN-wait deadline), group 2 ends gracefully
    // (echo, then the peer's FIN), group 3 is reset by us with bytes queued.
    let mut peers: Vec<TcpStream> = Vec::new();
    for _ in 0..4 * N {
        let s = peer(addr);
        peers.push(s);
    }
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            cx.write(id, b"hi").unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| h.sockets().len() == 4 * N);
    // Map accepted sockets to peers by address.
    let ids: Vec<SocketId> = peers
        .iter()
        .map(|p| {
            let local = p.local_addr().unwrap();
            *h.sockets()
                .iter()
                .find(|&&id| reactor.context().peer_addr(id).unwrap() == local)
                .unwrap()
        })
        .collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let id = ids[i];
        match i / N {
            0 => reset_on_close(p),
            1 => reactor.context_mut().end(id).unwrap(),
            2 => {
                p.write_all(b"bye").unwrap();
                p.shutdown(Shutdown::Write).unwrap();
            }
            _ => {
                reactor
                    .context_mut()
                    .write(id, &vec![7u8; 64 << 20])
                    .unwrap();
                reactor.context_mut().reset_and_destroy(id).unwrap();
            }
        }
    }
    // Group 0: the RST is sent by dropping the peer.
    let mut kept: Vec<TcpStream> = Vec::new();
    for (i, p) in peers.into_iter().enumerate() {
        if i / N != 0 {
            kept.push(p);
        }
    }
    // Resets, graceful closes and our own RSTs come without any clock movement.
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 3 * N);
    // Group 1 made no progress for the FIN wait: destroyed by the deadline.
    clock.advance(Duration::from_secs(31));
    run_until(&mut reactor, &mut h, |h, _| h.closed.len() == 4 * N);

    let stats = reactor.stats();
    assert_eq!(stats.accepted, (4 * N) as u64, "{stats}");
    assert_eq!(stats.closes(CloseReason::PeerReset), N as u64, "{stats}");
    assert_eq!(
        stats.closes(CloseReason::Deadline(Deadline::FinWait)),
        N as u64,
        "{stats}"
    );
    assert_eq!(stats.closes(CloseReason::Graceful), N as u64, "{stats}");
    assert_eq!(stats.closes(CloseReason::LocalReset), N as u64, "{stats}");
    assert_eq!(stats.closed(), (4 * N) as u64, "{stats}");
    // Our RSTs: the N reset_and_destroy calls (the deadline closes dropped nothing: "hi" had
    // gone out, so they sent FIN).
    assert_eq!(stats.resets_sent, N as u64, "{stats}");
    assert_eq!(stats.accept_errors, 0);
    // "bye" from each graceful peer; "hi" to each of the 4N peers and whatever of the 64 MiB
    // the kernel took before the resets.
    assert_eq!(stats.bytes_read, (3 * N) as u64, "{stats}");
    assert!(stats.bytes_written >= (2 * 4 * N) as u64, "{stats}");
    let shown = stats.to_string();
    assert!(
        shown.contains(&format!("peer_reset {N}")) && shown.contains(&format!("graceful {N}")),
        "{shown}"
    );
    reactor.context_mut().close_listener(l).unwrap();
    reactor.serve(&mut h).unwrap();
    drop(kept);
    assert_no_live_socket(&reactor);
}
