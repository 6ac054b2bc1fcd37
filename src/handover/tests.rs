//! The successor's checks, against offers crafted by a fake old process: every fd must be a
//! listening TCP socket bound where the offer says, one per listener line, or the whole
//! handover is refused (and the old side hears why).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;

use super::*;

/// Serves one crafted offer at a fresh path; returns the path and the answer it got.
fn fake_old(
    name: &str,
    text: String,
    fds: Vec<std::os::fd::OwnedFd>,
) -> (PathBuf, std::thread::JoinHandle<String>) {
    let path =
        std::env::temp_dir().join(format!("finwait-fake-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let uds = UnixListener::bind(&path).unwrap();
    let thread = std::thread::spawn(move || {
        let (stream, _) = uds.accept().unwrap();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        sys::send_with_fds(stream.as_fd(), text.as_bytes(), &borrowed).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    });
    (path, thread)
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn offer_text(addrs: &[SocketAddr]) -> String {
    let mut text = format!("{MAGIC}\n");
    for a in addrs {
        text.push_str(&format!("listener {a}\n"));
    }
    text + "end\n"
}

fn refused(name: &str, text: String, fds: Vec<std::os::fd::OwnedFd>, why: &str) {
    let (path, old) = fake_old(name, text, fds);
    let err = take_over(&path).expect_err("the offer must be refused");
    assert!(err.to_string().contains(why), "{name}: {err}");
    let answer = old.join().unwrap();
    assert!(
        answer.starts_with("refuse "),
        "{name}: the old side heard {answer:?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_sound_offer_is_taken() {
    let (l, addr) = listener();
    let (path, old) = fake_old("sound", offer_text(&[addr]), vec![l.into()]);
    let offer = take_over(&path).unwrap().unwrap();
    assert_eq!(offer.listeners().len(), 1);
    assert_eq!(offer.listeners()[0].addr, addr);
    offer.accept().unwrap();
    assert_eq!(old.join().unwrap(), "accept\n");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_connected_socket_instead_of_a_listener_is_refused() {
    let (l, addr) = listener();
    let connected = TcpStream::connect(addr).unwrap();
    let local = connected.local_addr().unwrap();
    refused(
        "connected",
        offer_text(&[local]),
        vec![connected.into()],
        "not listening",
    );
    drop(l);
}

#[test]
fn an_extra_fd_is_refused() {
    let (a, addr) = listener();
    let (b, _) = listener();
    refused(
        "extra",
        offer_text(&[addr]),
        vec![a.into(), b.into()],
        "names 1 listeners but carries 2 fds",
    );
}

#[test]
fn a_missing_fd_is_refused() {
    let (a, addr_a) = listener();
    let (_b, addr_b) = listener();
    refused(
        "missing",
        offer_text(&[addr_a, addr_b]),
        vec![a.into()],
        "names 2 listeners but carries 1 fds",
    );
}

#[test]
fn a_listener_bound_elsewhere_than_said_is_refused() {
    let (a, _) = listener();
    let (_b, other) = listener();
    refused(
        "elsewhere",
        offer_text(&[other]),
        vec![a.into()],
        "listens on",
    );
}

#[test]
fn a_udp_socket_is_refused() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    refused(
        "udp",
        offer_text(&[addr]),
        vec![udp.into()],
        "not a stream socket",
    );
}

#[test]
fn another_protocol_is_refused() {
    let (a, addr) = listener();
    refused(
        "magic",
        format!("something-else 9\nlistener {addr}\nend\n"),
        vec![a.into()],
        "not a finwait handover offer",
    );
}
