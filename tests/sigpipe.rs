//! A host program that does not ignore SIGPIPE must survive writing to a reset connection:
//! finwait sends with `MSG_NOSIGNAL`. Rust test binaries ignore SIGPIPE, so the check runs in
//! a child process (this test binary re-executed) that restores the default action first.

mod common;

use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;
use finwait::{Context, Event, ListenOptions, SocketId};

const CHILD_ENV: &str = "FINWAIT_SIGPIPE_CHILD";

#[test]
fn writing_to_a_reset_peer_does_not_kill_a_host_with_default_sigpipe() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigpipe_child", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child died: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sigpipe child: closed by peer reset"),
        "{stdout}"
    );
}

/// The child: default SIGPIPE action, a server that keeps writing to a peer that reset.
#[test]
#[ignore = "run by writing_to_a_reset_peer_does_not_kill_a_host_with_default_sigpipe"]
fn sigpipe_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // SAFETY: restoring the default disposition of one signal, before any other thread of
    // ours exists that could care.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Half-open, so the server keeps writing after the peer's FIN; an RST after a FIN makes
    // Linux answer the next send with EPIPE — the error that raises SIGPIPE.
    let (mut reactor, _l, addr) = server(ListenOptions::new().allow_half_open(true));
    let peer_thread = thread::spawn(move || {
        let s = peer(addr);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        thread::sleep(Duration::from_millis(100));
        reset_on_close(&s);
        drop(s);
    });
    let chunk = pattern(64 * 1024);
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if matches!(e, Event::Accepted(_) | Event::Drain) {
            while cx.write(id, &chunk).unwrap_or(false) {}
        }
    });
    let start = std::time::Instant::now();
    while h.closed.is_empty() {
        assert!(start.elapsed() < LIMIT);
        reactor
            .run_once(&mut h, Some(Duration::from_millis(10)))
            .unwrap();
        // Keep writing after the reset so a send is sure to hit EPIPE.
        for id in reactor.context().socket_ids() {
            let _ = reactor.context_mut().write(id, &chunk);
        }
    }
    peer_thread.join().unwrap();
    let info = h.closed.values().next().unwrap();
    assert_eq!(info.reason, finwait::CloseReason::PeerReset);
    println!("sigpipe child: closed by peer reset");
}
