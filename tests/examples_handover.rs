//! Zero-downtime restart of the example servers, driven from outside (CONTRACT.md,
//! `--handover PATH`; SEMANTICS B4): instance A serves with `--handover PATH` while clients
//! connect in a loop; B is started with the same PATH, takes A's listening socket(s) over and
//! prints the same `listening on` address; A stops accepting, finishes its connections and
//! exits 0; then C takes over from B, and so on. No client may see anything go wrong: no
//! refused connect, no reset, no short or wrong reply. Also: nothing serving PATH means bind
//! `--listen`; a handover that fails half-way makes the successor exit 1 with one line on
//! stderr while the old instance serves on; sockets passed by systemd (`LISTEN_FDS`) are
//! adopted; the last instance's fds return to their baseline once the load stops.
//!
//! Bounded waits only; every process is killed (by its own PID) if a test panics.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::LIMIT;
use common::process::{Proc, SIGTERM, Server, example_path, run_to_exit};

/// The http example's answer to `GET` on a keep-alive connection, byte for byte.
const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n\
Hello, World!\n";

/// Its answer when the connection ends after it (`Connection: close` asked for, or the last
/// answer of an instance that is shutting down or handed over).
const HELLO_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
Connection: close\r\n\r\nHello, World!\n";

/// Grace of every instance: far beyond any wait of these tests, so an instance that exits
/// did so because its last connection closed.
const GRACE_MS: &str = "15000";

// ---- helpers ---------------------------------------------------------------------------

/// A Unix-domain socket path under the temp directory, unique to the test (and this test
/// process); whatever is left there is removed on drop.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(name: &str) -> SocketPath {
        let path = std::env::temp_dir().join(format!(
            "finwait-examples-handover-{name}-{}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits at most [`LIMIT`] for an old instance to exit; its status.
fn exited(server: &mut Server, what: &str) -> ExitStatus {
    server
        .wait_timeout(LIMIT)
        .unwrap_or_else(|| panic!("{what} did not exit within {LIMIT:?}"))
}

/// Polls `pred` every 10 ms, at most [`LIMIT`].
fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < LIMIT, "waited {LIMIT:?} for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

// ---- clients ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Echo,
    Http,
}

/// What the clients saw, by kind.
#[derive(Debug, Default)]
struct Tally {
    /// Exchanges answered exactly.
    ok: u64,
    refused: u64,
    reset: u64,
    /// A reply cut short (a FIN after part of it).
    short: u64,
    wrong: u64,
    /// Any other I/O error.
    other: u64,
    /// Persistent connections only: the server closed the connection (FIN) before any byte
    /// of the reply to a request sent on it — the close of a persistent connection racing
    /// the client's next request, which every client of such a protocol retries on a new
    /// connection (RFC 9112 §9.3.1). Counted, retried, not an error.
    closed_between: u64,
    /// The first few failures, described.
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, kind: &str, what: String) {
        match kind {
            "refused" => self.refused += 1,
            "reset" => self.reset += 1,
            "short" => self.short += 1,
            "wrong" => self.wrong += 1,
            _ => self.other += 1,
        }
        if self.failures.len() < 10 {
            self.failures.push(format!("{kind}: {what}"));
        }
    }

    fn io(&mut self, during: &str, e: std::io::Error) {
        let kind = match e.kind() {
            ErrorKind::ConnectionRefused => "refused",
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                "reset"
            }
            _ => "other",
        };
        self.fail(kind, format!("{during}: {e}"));
    }

    fn errors(&self) -> u64 {
        self.refused + self.reset + self.short + self.wrong + self.other
    }

    fn add(&mut self, t: Tally) {
        self.ok += t.ok;
        self.refused += t.refused;
        self.reset += t.reset;
        self.short += t.short;
        self.wrong += t.wrong;
        self.other += t.other;
        self.closed_between += t.closed_between;
        for f in t.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
    }
}

/// Connects (bounded by the kernel's own connect timeout on loopback: immediate).
fn connect(addr: SocketAddr, t: &mut Tally) -> Option<TcpStream> {
    match TcpStream::connect(addr) {
        Ok(s) => {
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.set_write_timeout(Some(LIMIT)).unwrap();
            Some(s)
        }
        Err(e) => {
            t.io("connect", e);
            None
        }
    }
}

/// One connection for one exchange: the request, our FIN, then the whole reply and the
/// server's FIN.
fn one_shot(addr: SocketAddr, proto: Proto, n: u64, t: &mut Tally) {
    let (request, expected) = match proto {
        Proto::Echo => {
            let line = format!("one-shot client, exchange {n}\n").into_bytes();
            (line.clone(), line)
        }
        Proto::Http => (
            format!("GET /{n} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes(),
            HELLO_CLOSE.to_vec(),
        ),
    };
    let Some(mut s) = connect(addr, t) else {
        return;
    };
    if let Err(e) = s
        .write_all(&request)
        .and_then(|()| s.shutdown(Shutdown::Write))
    {
        return t.io("write", e);
    }
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        return t.io(&format!("read after {} bytes", got.len()), e);
    }
    if got == expected {
        t.ok += 1;
    } else if expected.starts_with(&got) {
        t.fail(
            "short",
            format!("{} of {} bytes", got.len(), expected.len()),
        );
    } else {
        t.fail("wrong", format!("{:?}", String::from_utf8_lossy(&got)));
    }
}

/// Whether the server's FIN is already waiting on `s` (a persistent connection the server
/// ended right after its last answer): then the next request goes on a new connection.
fn fin_waiting(s: &TcpStream, t: &mut Tally) -> Option<bool> {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let r = (&*s).read(&mut byte);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => Some(true),
        Ok(_) => {
            t.fail("wrong", "a byte nobody asked for".into());
            None
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => Some(false),
        Err(e) => {
            t.io("peek", e);
            None
        }
    }
}

/// A persistent connection: requests one at a time, each reply read whole; a new connection
/// whenever the server ends the current one.
fn persistent(addr: SocketAddr, proto: Proto, stop: &AtomicBool, done: &AtomicU64) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<TcpStream> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let s = match &mut conn {
            Some(s) => s,
            None => match connect(addr, &mut t) {
                Some(s) => conn.insert(s),
                None => continue,
            },
        };
        n += 1;
        let request = match proto {
            Proto::Echo => format!("persistent client, request {n}\n").into_bytes(),
            Proto::Http => format!("GET /{n} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes(),
        };
        if let Err(e) = s.write_all(&request) {
            t.io("write", e);
            conn = None;
            continue;
        }
        // Read until the reply is complete (echo: the request; http: HELLO, or HELLO_CLOSE
        // and then the FIN).
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Some(true): complete; Some(false): the server's FIN first; None: an error (counted).
        let complete = loop {
            match s.read(&mut buf) {
                Ok(0) => break Some(false),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) => {
                    t.io(&format!("read after {} bytes", got.len()), e);
                    break None;
                }
            }
            let done_reply = match proto {
                Proto::Echo => got.len() >= request.len(),
                Proto::Http => got == HELLO || got.len() >= HELLO_CLOSE.len(),
            };
            if done_reply {
                break Some(true);
            }
        };
        let (expected, last): (&[u8], bool) = match proto {
            Proto::Echo => (&request, false),
            Proto::Http if got == HELLO => (HELLO, false),
            Proto::Http => (HELLO_CLOSE, true),
        };
        match complete {
            Some(true) => {}
            None => {
                conn = None;
                continue;
            }
            Some(false) => {
                if got.is_empty() {
                    t.closed_between += 1;
                } else if expected.starts_with(&got) {
                    t.fail(
                        "short",
                        format!("{} of {} bytes", got.len(), expected.len()),
                    );
                } else {
                    t.fail("wrong", format!("{:?}", String::from_utf8_lossy(&got)));
                }
                conn = None;
                continue;
            }
        }
        if got != expected {
            t.fail("wrong", format!("{:?}", String::from_utf8_lossy(&got)));
            conn = None;
            continue;
        }
        t.ok += 1;
        done.fetch_add(1, Ordering::Relaxed);
        // The server may have ended the connection right after this answer (it is
        // finishing its connections): its FIN is then waiting, and the next request goes on
        // a new connection.
        match fin_waiting(s, &mut t) {
            Some(false) if !last => {}
            _ => conn = None,
        }
    }
    t
}

/// Client threads until `stop`: `one_shot` clients connecting in a loop, and `persistent`
/// ones; `done` counts the exchanges answered.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Tally>>,
}

impl Load {
    fn start(addr: SocketAddr, proto: Proto, one_shots: usize, persistents: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..one_shots {
            let (stop, done) = (stop.clone(), done.clone());
            threads.push(thread::spawn(move || {
                let mut t = Tally::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ok = t.ok;
                    one_shot(addr, proto, n, &mut t);
                    if t.ok > ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                t
            }));
        }
        for _ in 0..persistents {
            let (stop, done) = (stop.clone(), done.clone());
            threads.push(thread::spawn(move || persistent(addr, proto, &stop, &done)));
        }
        Load {
            stop,
            done,
            threads,
        }
    }

    /// Waits (bounded) until `n` more exchanges were answered.
    fn progress(&self, n: u64, what: &str) {
        let at = self.done.load(Ordering::Relaxed);
        wait_until(&format!("{n} exchanges answered ({what})"), || {
            self.done.load(Ordering::Relaxed) >= at + n
        });
    }

    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for t in std::mem::take(&mut self.threads) {
            all.add(t.join().expect("client thread"));
        }
        all
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // On a panic: let the client threads run out (they are not joined).
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn assert_clean(t: &Tally, what: &str) {
    eprintln!(
        "{what}: {} exchanges answered; {} persistent connections closed by the server \
         between requests (retried)",
        t.ok, t.closed_between
    );
    assert_eq!(
        t.errors(),
        0,
        "{what}: refused {}, reset {}, short {}, wrong {}, other {}: {:#?}",
        t.refused,
        t.reset,
        t.short,
        t.wrong,
        t.other,
        t.failures
    );
    assert!(t.ok > 0, "{what}: nothing answered");
}

// ---- handovers in a row ----------------------------------------------------------------

/// Instances of `name` (with `extra` arguments) hand over to each other `handovers` times
/// under load; then the load stops, the last instance's fds return to the first one's
/// baseline, and it exits 0 on SIGTERM, removing the socket file.
fn handovers_in_a_row(name: &str, extra: &[&str], proto: Proto, handovers: usize) {
    let path = SocketPath::new(&format!("{name}-{}", extra.join("")));
    let mut args = vec!["--handover", path.arg(), "--shutdown-timeout-ms", GRACE_MS];
    args.extend_from_slice(extra);
    let mut current = Server::start(name, &args);
    let addr = current.addr;
    assert!(
        path.0.exists(),
        "the first instance does not serve {path:?}",
        path = path.0
    );
    // Before any client: stdio, the poller, wakers, signal pipes, the listener(s), the
    // handover socket.
    let baseline = current.fd_count();
    let load = Load::start(addr, proto, 3, 2);
    for round in 1..=handovers {
        load.progress(200, &format!("before handover {round}"));
        let mut next = Server::start(name, &args);
        assert_eq!(
            next.addr, addr,
            "handover {round}: the successor listens elsewhere"
        );
        let status = exited(&mut current, &format!("handover {round}: the old instance"));
        assert_eq!(
            status.code(),
            Some(0),
            "handover {round}: old instance {status}"
        );
        std::mem::swap(&mut current, &mut next);
        drop(next);
    }
    load.progress(200, "after the last handover");
    let tally = load.finish();
    assert_clean(&tally, &format!("{name} {extra:?}, {handovers} handovers"));
    wait_until(
        "the last instance's fds back to the first one's baseline",
        || current.fd_count() == baseline,
    );
    current.signal(SIGTERM);
    let status = exited(&mut current, "the last instance after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        !path.0.exists(),
        "the last instance left its socket file behind"
    );
}

#[test]
fn echo_hands_over_four_times_in_a_row_under_load_without_a_client_error() {
    handovers_in_a_row("echo", &[], Proto::Echo, 4);
}

#[test]
fn http_hands_over_four_times_in_a_row_under_load_without_a_client_error() {
    handovers_in_a_row("http", &[], Proto::Http, 4);
}

#[test]
fn echo_with_2_reactors_hands_over_four_times_in_a_row_under_load_without_a_client_error() {
    handovers_in_a_row("echo", &["--reactors", "2"], Proto::Echo, 4);
}

// ---- nothing to take over --------------------------------------------------------------

#[test]
fn with_nothing_serving_the_path_an_instance_binds_listen_itself() {
    let path = SocketPath::new("nothing");
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port_addr = free.local_addr().unwrap();
    drop(free);
    let listen = port_addr.to_string();
    // No file at the path.
    let mut first = Server::start("echo", &["--listen", &listen, "--handover", path.arg()]);
    assert_eq!(first.addr, port_addr);
    assert!(path.0.exists(), "handovers are not served at the path");
    let mut t = Tally::default();
    one_shot(first.addr, Proto::Echo, 0, &mut t);
    assert_clean(&t, "the first instance");
    first.signal(SIGTERM);
    assert_eq!(exited(&mut first, "the first instance").code(), Some(0));
    assert!(!path.0.exists(), "the socket file was left behind");

    // A stale socket file (its process gone): the same.
    drop(UnixListener::bind(&path.0).unwrap());
    assert!(path.0.exists());
    let mut second = Server::start("http", &["--listen", &listen, "--handover", path.arg()]);
    assert_eq!(second.addr, port_addr);
    let mut t = Tally::default();
    one_shot(second.addr, Proto::Http, 0, &mut t);
    assert_clean(&t, "the instance started over a stale socket file");
    second.signal(SIGTERM);
    assert_eq!(exited(&mut second, "the second instance").code(), Some(0));
    assert!(!path.0.exists(), "the socket file was left behind");
}

// ---- failed handovers ------------------------------------------------------------------

/// A fake old instance at `path`: sends `offer` (no fds) to the first successor that
/// connects, then closes if `close`, and returns the successor's answer (its first line;
/// empty if it said nothing).
fn fake_old(path: &Path, offer: &'static str) -> thread::JoinHandle<String> {
    let uds = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = uds.accept().unwrap();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(offer.as_bytes()).unwrap();
        if !offer.ends_with("end\n") {
            // Gone half-way: the rest of the offer never comes.
            let _ = stream.shutdown(Shutdown::Write);
        }
        let mut answer = String::new();
        let _ = BufReader::new(stream).read_line(&mut answer);
        answer
    })
}

/// The successor's side of a failed handover: exit status 1, nothing on stdout (no
/// `listening on` line), one line on stderr naming the path.
fn assert_failed_takeover(name: &str, args: &[&str], path: &Path) -> String {
    let (status, out, err) = run_to_exit(name, args);
    assert_eq!(status.code(), Some(1), "{name} {args:?}: {status}: {err}");
    assert_eq!(out, "", "{name} printed to stdout");
    assert_eq!(err.lines().count(), 1, "one line on stderr, not {err:?}");
    assert!(
        err.starts_with(&format!("{name}: --handover {}: ", path.display())),
        "{err:?}"
    );
    err
}

#[test]
fn a_malformed_offer_makes_the_successor_exit_1_and_refuse() {
    let path = SocketPath::new("malformed");
    let old = fake_old(&path.0, "not-a-handover 7\nend\n");
    let err = assert_failed_takeover("echo", &["--handover", path.arg()], &path.0);
    assert!(err.contains("not a finwait handover offer"), "{err:?}");
    let answer = old.join().unwrap();
    assert!(
        answer.starts_with("refuse "),
        "the old side heard {answer:?}"
    );
}

#[test]
fn an_old_side_gone_half_way_makes_the_successor_exit_1() {
    let path = SocketPath::new("cut");
    let old = fake_old(&path.0, "finwait-handover 1\nlistener 127.0.0.1:9\n");
    let err = assert_failed_takeover("http", &["--handover", path.arg()], &path.0);
    assert!(err.contains("cut short"), "{err:?}");
    old.join().unwrap();
}

/// A real old instance, a successor that cannot adopt what it is offered: a group of two
/// reactors needs a listener per reactor, and the single reactor's socket was not bound with
/// SO_REUSEPORT, so the second reactor cannot bind one beside it. The successor refuses and
/// exits 1; the old instance serves on, under load, without a client error — and still hands
/// over to a successor that fits.
#[test]
fn a_successor_that_cannot_adopt_exits_1_and_the_old_instance_serves_on() {
    let path = SocketPath::new("unfit");
    let args = ["--handover", path.arg(), "--shutdown-timeout-ms", GRACE_MS];
    let mut old = Server::start("echo", &args);
    let load = Load::start(old.addr, Proto::Echo, 2, 1);
    load.progress(100, "before the failed handover");
    let mut unfit = args.to_vec();
    unfit.extend_from_slice(&["--reactors", "2"]);
    let err = assert_failed_takeover("echo", &unfit, &path.0);
    assert!(err.contains("in use"), "{err:?}");
    load.progress(100, "after the failed handover");
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old instance stopped"
    );
    // It still hands over.
    let mut next = Server::start("echo", &args);
    assert_eq!(next.addr, old.addr);
    assert_eq!(exited(&mut old, "the old instance").code(), Some(0));
    load.progress(100, "after the handover");
    assert_clean(&load.finish(), "a failed, then a sound handover");
    next.signal(SIGTERM);
    assert_eq!(exited(&mut next, "the successor").code(), Some(0));
}

// ---- systemd ----------------------------------------------------------------------------

/// A listening socket passed as systemd does (fd 3, `LISTEN_FDS=1`, `LISTEN_PID` = the
/// server's PID) is served, and handed over like a bound one.
#[test]
fn a_socket_passed_by_systemd_is_adopted_and_handed_over() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let path = SocketPath::new("systemd");
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let fd = passed.as_raw_fd();
    let echo = example_path("echo");
    let mut cmd = Command::new("sh");
    // `exec` keeps the shell's PID, which `$$` names.
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#,
        echo.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
        "--handover",
        path.arg(),
        "--shutdown-timeout-ms",
        GRACE_MS,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    // SAFETY: dup2 and fcntl are async-signal-safe; the child only puts the listener at fd
    // 3 without close-on-exec (a copy made by dup2 has it clear; the listener may be fd 3
    // already, and then dup2 does nothing).
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Proc(cmd.spawn().expect("spawn sh"));
    drop(passed);
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("listening on {addr}"));
    let mut t = Tally::default();
    for n in 0..20 {
        one_shot(addr, Proto::Echo, n, &mut t);
    }
    assert_clean(&t, "the socket passed by systemd");
    // Handed over like any other.
    let mut next = Server::start("echo", &["--handover", path.arg()]);
    assert_eq!(next.addr, addr);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < LIMIT, "the old instance did not exit");
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let mut t = Tally::default();
    one_shot(addr, Proto::Echo, 99, &mut t);
    assert_clean(&t, "its successor");
    next.signal(SIGTERM);
    assert_eq!(exited(&mut next, "the successor").code(), Some(0));
}

// ---- help -------------------------------------------------------------------------------

#[test]
fn every_server_help_describes_handover() {
    for name in ["echo", "goodbye", "count", "proxy", "http"] {
        let (status, out, _) = run_to_exit(name, &["--help"]);
        assert!(status.success(), "{name} --help: {status}");
        assert!(
            out.contains("--handover PATH") && out.contains("--reuse-port"),
            "{name} --help does not describe --handover and --reuse-port"
        );
    }
}
