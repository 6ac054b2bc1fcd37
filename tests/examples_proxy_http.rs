//! End-to-end tests of the `proxy` and `http` examples: the built binaries are started as
//! processes and driven by std::net peers over loopback, as CONTRACT.md describes.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::process::{SIGTERM, Server};
use common::{Ending, LIMIT, pattern, peer, read_to_end, reset_on_close};

// ---- helpers ---------------------------------------------------------------------------------

/// A std upstream server on 127.0.0.1:0 that accepts one connection (waiting at most
/// [`LIMIT`]) and hands it to `f` on its own thread.
fn upstream<T: Send + 'static>(
    f: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let handle = thread::spawn(move || {
        let start = Instant::now();
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < LIMIT, "upstream: nobody connected");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("upstream accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_write_timeout(Some(LIMIT)).unwrap();
        f(stream)
    });
    (addr, handle)
}

fn start_proxy(upstream: SocketAddr) -> Server {
    Server::start("proxy", &["--upstream", &upstream.to_string()])
}

/// Another deterministic payload, so the two directions cannot be mixed up.
fn pattern_b(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 241) as u8 ^ 0x5a).collect()
}

/// Reads exactly `n` bytes.
fn read_exact_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Waits (bounded by [`LIMIT`]) until the server's fd count drops to `target` or below.
fn wait_fds(server: &Server, target: usize) {
    let start = Instant::now();
    while server.fd_count() > target {
        assert!(
            start.elapsed() < LIMIT,
            "fds stay at {} (expected {target})",
            server.fd_count()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP response: its head (as text) and its body.
struct Response {
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn status(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Reads one response from `stream`; bytes past it stay in `pending`. `head_only` for the
/// answer to a HEAD request, which has a Content-Length but no body.
fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Response {
    let mut buf = [0; 16 * 1024];
    loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(pending[..i + 4].to_vec()).expect("ascii head");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let need = if head_only { 0 } else { length };
            if pending.len() >= i + 4 + need {
                let body = pending[i + 4..i + 4 + need].to_vec();
                pending.drain(..i + 4 + need);
                return Response { head, body };
            }
        }
        let n = stream.read(&mut buf).expect("read response");
        assert!(
            n > 0,
            "EOF inside a response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn assert_hello(r: &Response) {
    assert_eq!(r.status(), "200", "{}", r.head);
    assert_eq!(r.body, b"Hello, World!\n");
    assert_eq!(r.header("content-length"), Some("14"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

/// The connection stays open: nothing more arrives within `wait`.
fn assert_still_open(stream: &mut TcpStream, wait: Duration) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0; 1];
    match stream.read(&mut b) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected an open, quiet connection, got {other:?}"),
    }
    stream.set_read_timeout(Some(LIMIT)).unwrap();
}

// ---- proxy -----------------------------------------------------------------------------------

#[test]
fn proxy_round_trip_8_mib_both_ways() {
    const N: usize = 8 << 20;
    let (up_addr, up) = upstream(|mut s| {
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            w.write_all(&pattern_b(N)).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_to_end(&mut s);
        writer.join().unwrap();
        got
    });
    let server = start_proxy(up_addr);
    let mut client = peer(server.addr);
    let mut w = client.try_clone().unwrap();
    let writer = thread::spawn(move || {
        w.write_all(&pattern(N)).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let (down, ending) = read_to_end(&mut client);
    writer.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(
        down == pattern_b(N),
        "client got {} bytes, wrong",
        down.len()
    );
    let (upward, ending) = up.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(
        upward == pattern(N),
        "upstream got {} bytes, wrong",
        upward.len()
    );
}

#[test]
fn proxy_client_half_close_reaches_upstream_after_all_data_and_upstream_can_still_send() {
    const N: usize = 1 << 20;
    let (up_addr, up) = upstream(|mut s| {
        // EOF only after every byte the client sent.
        let (got, ending) = read_to_end(&mut s);
        assert_eq!(ending, Ending::Fin);
        assert!(got == pattern(N), "upstream got {} bytes", got.len());
        // The other direction is still open.
        s.write_all(&pattern_b(N)).unwrap();
        s.write_all(b"bye").unwrap();
        // Dropping closes: FIN.
    });
    let server = start_proxy(up_addr);
    let baseline = server.fd_count();
    let mut client = peer(server.addr);
    client.write_all(&pattern(N)).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (down, ending) = read_to_end(&mut client);
    up.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    let mut expected = pattern_b(N);
    expected.extend_from_slice(b"bye");
    assert!(down == expected, "client got {} bytes", down.len());
    // Both directions ended: the proxy closed both sockets by itself.
    wait_fds(&server, baseline);
}

#[test]
fn proxy_upstream_half_close_reaches_client_after_all_data_and_client_can_still_send() {
    const N: usize = 1 << 20;
    let (up_addr, up) = upstream(|mut s| {
        s.write_all(&pattern_b(N)).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        read_to_end(&mut s)
    });
    let server = start_proxy(up_addr);
    let baseline = server.fd_count();
    let mut client = peer(server.addr);
    let (down, ending) = read_to_end(&mut client);
    assert_eq!(ending, Ending::Fin);
    assert!(down == pattern_b(N), "client got {} bytes", down.len());
    // Our direction still works after the upstream's FIN reached us.
    client.write_all(&pattern(N)).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (upward, ending) = up.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert!(upward == pattern(N), "upstream got {} bytes", upward.len());
    drop(client);
    wait_fds(&server, baseline);
}

#[test]
fn proxy_client_reset_resets_upstream() {
    let (up_addr, up) = upstream(|mut s| {
        assert_eq!(read_exact_n(&mut s, 5), b"hello");
        s.write_all(b"ready").unwrap();
        read_to_end(&mut s)
    });
    let server = start_proxy(up_addr);
    let mut client = peer(server.addr);
    client.write_all(b"hello").unwrap();
    // The pair is established once the upstream answered through it.
    assert_eq!(read_exact_n(&mut client, 5), b"ready");
    reset_on_close(&client);
    drop(client);
    let (rest, ending) = up.join().unwrap();
    assert!(rest.is_empty());
    assert_eq!(ending, Ending::Reset, "upstream must see ECONNRESET");
}

#[test]
fn proxy_upstream_reset_resets_client() {
    let (up_addr, up) = upstream(|mut s| {
        assert_eq!(read_exact_n(&mut s, 5), b"hello");
        s.write_all(b"ready").unwrap();
        // Wait until the client confirms it read the answer, then reset.
        assert_eq!(read_exact_n(&mut s, 2), b"ok");
        reset_on_close(&s);
        drop(s);
    });
    let server = start_proxy(up_addr);
    let mut client = peer(server.addr);
    client.write_all(b"hello").unwrap();
    assert_eq!(read_exact_n(&mut client, 5), b"ready");
    client.write_all(b"ok").unwrap();
    up.join().unwrap();
    let (rest, ending) = read_to_end(&mut client);
    assert!(rest.is_empty());
    assert_eq!(ending, Ending::Reset, "client must see ECONNRESET");
}

#[test]
fn proxy_plain_close_of_one_side_does_not_reset_the_other() {
    // The upstream sends its answer and closes normally (FIN, everything read): the client
    // gets all of it and a FIN, never an RST.
    let (up_addr, up) = upstream(|mut s| {
        assert_eq!(read_exact_n(&mut s, 5), b"hello");
        s.write_all(b"answer").unwrap();
    });
    let server = start_proxy(up_addr);
    let mut client = peer(server.addr);
    client.write_all(b"hello").unwrap();
    up.join().unwrap();
    let (got, ending) = read_to_end(&mut client);
    assert_eq!(got, b"answer");
    assert_eq!(ending, Ending::Fin);
}

/// The refused connect itself closes the client: the proxy has no timer that could (no
/// connect timeout, no idle timeout), and the client does nothing after its request, so a
/// close within the bounded wait can only be the proxy reacting to the refusal.
#[test]
fn proxy_unreachable_upstream_closes_client_promptly() {
    // A port nobody listens on: bind, note, close.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = start_proxy(dead);
    let baseline = server.fd_count();
    let mut client = peer(server.addr);
    let _ = client.write_all(b"GET / HTTP/1.0\r\n\r\n");
    // The proxy resets the client (see proxy.rs); a FIN would also count as "closed". Not a
    // byte comes first.
    let (got, _ending) = read_to_end(&mut client);
    assert_eq!(got, b"", "bytes from a proxy without upstream");
    wait_fds(&server, baseline);
}

// ---- http ------------------------------------------------------------------------------------

#[test]
fn http_keep_alive_serves_two_requests_on_one_connection() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    let mut pending = Vec::new();
    for path in ["/", "/second"] {
        s.write_all(&get(path)).unwrap();
        let r = read_response(&mut s, &mut pending, false);
        assert_hello(&r);
        assert_eq!(r.header("connection"), None);
    }
    assert_still_open(&mut s, Duration::from_millis(100));
}

#[test]
fn http_head_gets_headers_without_body_and_other_methods_get_405() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    let mut pending = Vec::new();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut pending, true);
    assert_eq!(r.status(), "200");
    assert_eq!(r.header("content-length"), Some("14"));
    // A body the server must skip, then a GET that must still be understood.
    s.write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /")
        .unwrap();
    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status(), "405");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    s.write_all(&get("/")).unwrap();
    assert_hello(&read_response(&mut s, &mut pending, false));
    assert!(pending.is_empty(), "HEAD must have had no body");
}

#[test]
fn http_pipelined_requests_are_answered_in_order() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    let mut pending = Vec::new();
    // GET, HEAD, GET in one write: the HEAD answer (no body) tells the order apart.
    let mut all = get("/1");
    all.extend_from_slice(b"HEAD /2 HTTP/1.1\r\nHost: t\r\n\r\n");
    all.extend_from_slice(b"DELETE /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.write_all(&all).unwrap();
    assert_hello(&read_response(&mut s, &mut pending, false));
    let r = read_response(&mut s, &mut pending, true);
    assert_eq!(r.status(), "200");
    assert!(r.body.is_empty());
    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status(), "405");
    assert!(pending.is_empty());
    assert_still_open(&mut s, Duration::from_millis(100));
}

#[test]
fn http_connection_close_gets_response_then_fin() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    let (bytes, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    let mut pending = bytes;
    let r = read_response(&mut s, &mut pending, false);
    assert_hello(&r);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(pending.is_empty(), "nothing after the close response");
}

#[test]
fn http_1_0_closes_after_the_response() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (bytes, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    let mut pending = bytes;
    let r = read_response(&mut s, &mut pending, false);
    assert_hello(&r);
    assert!(pending.is_empty());
}

#[test]
fn http_1_0_with_keep_alive_stays_open() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    let mut pending = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut pending, false);
        assert_hello(&r);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    assert_still_open(&mut s, Duration::from_millis(100));
}

#[test]
fn http_garbage_gets_400_then_fin() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    s.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        .unwrap();
    let (bytes, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
}

/// A request body in a transfer coding is something this server does not implement: 501
/// (not 400: the request is well-formed), `Connection: close`, then FIN — after the answer to
/// the request pipelined before it, and never an RST although the chunks keep coming.
#[test]
fn http_chunked_post_gets_501_then_fin_never_rst() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    let mut req = get("/first");
    req.extend_from_slice(
        b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..64 {
        req.extend_from_slice(b"400\r\n");
        req.extend(std::iter::repeat_n(b'c', 0x400));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut pending = Vec::new();
    assert_hello(&read_response(&mut s, &mut pending, false));
    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status(), "501", "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"Not Implemented\n");
    assert!(pending.is_empty(), "nothing after the 501");
    let (rest, ending) = read_to_end(&mut s);
    assert_eq!((rest, ending), (Vec::new(), Ending::Fin));
}

/// HTTP/1.0 has no transfer codings: a `Transfer-Encoding` there is faulty framing, 400.
#[test]
fn http_1_0_with_transfer_encoding_gets_400_then_fin() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    s.write_all(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .unwrap();
    let (bytes, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
}

#[test]
fn http_oversized_header_gets_431_then_fin_never_rst() {
    let server = Server::start("http", &[]);
    let mut s = peer(server.addr);
    let mut req = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 9 * 1024));
    req.extend_from_slice(b"\r\n\r\n");
    // Keep sending well past the point where the server answered: it must keep reading
    // (and discarding) instead of closing with unread input, which would be an RST.
    req.extend(std::iter::repeat_n(b'b', 256 * 1024));
    s.write_all(&req).unwrap();
    let (bytes, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin, "431 must end with FIN, not RST");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
}

/// A keep-alive connection serves request after request, and once it falls silent the server
/// closes it by itself: FIN, no response. The client sends no FIN and no `Connection: close`:
/// only the idle timer can end it. (The timeout is long next to a loopback round trip, so
/// the requests never leave the connection idle that long.)
#[test]
fn http_idle_timeout_closes_an_idle_keep_alive_connection() {
    let server = Server::start("http", &["--idle-timeout-ms", "1000"]);
    let mut s = peer(server.addr);
    let mut pending = Vec::new();
    for path in ["/", "/again"] {
        s.write_all(&get(path)).unwrap();
        let r = read_response(&mut s, &mut pending, false);
        assert_hello(&r);
        assert_eq!(r.header("connection"), None, "a keep-alive answer");
    }
    let (rest, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    assert!(rest.is_empty(), "no response on idle close");
}

/// A head that stops half-way gets exactly one answer, `408` with `Connection: close`, then
/// FIN. The idle timeout is off: only the header deadline can end the connection.
#[test]
fn http_header_timeout_gives_408_for_a_stalled_head() {
    let server = Server::start(
        "http",
        &["--header-timeout-ms", "200", "--idle-timeout-ms", "0"],
    );
    let mut s = peer(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let (bytes, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    let mut pending = bytes;
    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status(), "408", "{}", r.head);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(pending.is_empty(), "nothing after the 408");
}

/// A client that trickles header bytes without end (traffic that would keep an idle timer
/// alive) still gets its `408` and FIN: the answer comes while it is still trickling, which
/// it goes on doing for longer than the bounded read waits for the answer.
#[test]
fn http_header_timeout_is_not_extended_by_trickling_bytes() {
    let server = Server::start("http", &["--header-timeout-ms", "300"]);
    let mut s = peer(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut w = s.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    // One header byte every 20 ms until told to stop or the write fails (twice LIMIT at the
    // most, so a test that failed leaves no thread behind for long).
    let trickler = thread::spawn(move || {
        let start = Instant::now();
        while !stopped.load(Ordering::SeqCst) && start.elapsed() < 2 * LIMIT {
            if w.write_all(b"x").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let (bytes, ending) = read_to_end(&mut s);
    assert!(
        !trickler.is_finished(),
        "the trickling stopped before the answer"
    );
    assert_eq!(ending, Ending::Fin);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    // Our FIN: the server, reading until it, lets go; the trickler stops.
    stop.store(true, Ordering::SeqCst);
    s.shutdown(Shutdown::Write).unwrap();
    trickler.join().unwrap();
}

#[test]
fn http_sigterm_exits_0_and_refuses_new_connects() {
    // A grace far beyond the bounded wait for the exit: the exit must follow the last close.
    let mut server = Server::start("http", &["--shutdown-timeout-ms", "300000"]);
    let mut s = peer(server.addr);
    let mut pending = Vec::new();
    s.write_all(&get("/")).unwrap();
    assert_hello(&read_response(&mut s, &mut pending, false));
    server.signal(SIGTERM);
    // The open keep-alive connection is ended gracefully...
    let (rest, ending) = read_to_end(&mut s);
    assert_eq!(ending, Ending::Fin);
    assert!(rest.is_empty());
    // ...and the listener is already gone: connects are refused, not queued.
    let err = TcpStream::connect(server.addr).expect_err("connect after SIGTERM");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // Once our FIN closes the last connection, the server exits at once (not after its
    // shutdown timeout, far beyond this wait).
    drop(s);
    let status = server
        .wait_timeout(LIMIT)
        .expect("server did not exit after its last connection closed");
    assert!(status.success(), "{status:?}");
}

#[test]
fn proxy_backpressure_bounds_memory_when_the_client_does_not_read() {
    // The upstream pushes for one second into a client that never reads: the proxy must
    // pause reading from the upstream instead of queueing everything it receives.
    let (up_addr, up) = upstream(|mut s| {
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let chunk = pattern(64 * 1024);
        let start = Instant::now();
        let mut sent = 0usize;
        while start.elapsed() < Duration::from_secs(1) {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("upstream write: {e}"),
            }
        }
        (s, sent)
    });
    let server = start_proxy(up_addr);
    let rss_before = server.rss_kib();
    let client = peer(server.addr);
    let (upstream_socket, sent) = up.join().unwrap();
    let grown = server.rss_kib().saturating_sub(rss_before);
    // Kernel socket buffers on loopback hold a few MiB each way; without backpressure the
    // upstream would have pushed gigabytes in a second.
    assert!(
        sent < 64 << 20,
        "upstream pushed {sent} bytes: no backpressure"
    );
    assert!(grown < 16 * 1024, "proxy RSS grew by {grown} KiB");
    drop(client);
    drop(upstream_socket);
}
