//! Process-level behaviour that needs a process of its own: running out of file descriptors
//! (EMFILE) and SIGTERM. Each test re-executes this test binary as a child that runs one
//! `#[ignore]`d server function (selected by `--exact` and enabled by an environment
//! variable), then drives it from the parent over loopback and inspects `/proc/PID`.

mod common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{SIGTERM, Server};
use common::*;
use finwait::{CloseReason, Context, Event, Handler, ListenOptions, Reactor, SocketId};

/// The child's `RLIMIT_NOFILE`.
const FD_LIMIT: libc::rlim_t = 64;
/// A child never outlives this, whatever the parent does.
const CHILD_LIMIT: Duration = Duration::from_secs(30);
/// Connections opened while the child is out of fds (they wait in its backlog).
const WAITING: usize = 8;
/// Served connections the parent closes to give the child fds back.
const FREED: usize = 12;
/// The grace of the SIGTERM child's `shutdown_on_signals`: far longer than the parent's
/// bounded wait for its exit, so a child that waited it out fails that wait.
const GRACE: Duration = Duration::from_secs(300);

const EMFILE_CHILD: &str = "FINWAIT_EMFILE_CHILD";
const SIGTERM_CHILD: &str = "FINWAIT_SIGTERM_CHILD";

// ---- shared ------------------------------------------------------------------------------

/// Re-executes this test binary to run only the ignored test `name`, with `env` set, and
/// waits for its `listening on IP:PORT` line.
fn spawn_child(name: &str, env: &str, stdin: Stdio) -> Server {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            name,
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(env, "1")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test binary");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    // libtest prints its own lines first (and, with one test thread, `test NAME ... ` on the
    // same line): look for the marker anywhere. Bounded: the child exits by CHILD_LIMIT.
    let mut line = String::new();
    let addr = loop {
        line.clear();
        let n = stdout.read_line(&mut line).expect("read child stdout");
        if n == 0 {
            let status = child.wait().expect("wait child");
            panic!("child exited ({status}) before listening");
        }
        if let Some(at) = line.find("listening on ") {
            break line[at + "listening on ".len()..]
                .trim()
                .parse::<SocketAddr>()
                .expect("address");
        }
    };
    Server {
        child,
        addr,
        stdout,
    }
}

/// Reads the rest of the child's stdout (after it exited or closed it).
fn rest_of_stdout(server: &mut Server) -> String {
    let mut out = String::new();
    let _ = server.stdout.read_to_string(&mut out);
    out
}

/// Exits the child process after [`CHILD_LIMIT`], so no child outlives a vanished parent.
fn watchdog() {
    thread::spawn(|| {
        thread::sleep(CHILD_LIMIT);
        eprintln!("child: watchdog expired, exiting");
        std::process::exit(3);
    });
}

/// An echo server on 127.0.0.1:0; prints `listening on ADDR`.
fn echo_reactor() -> Reactor {
    let mut reactor = Reactor::new().expect("reactor");
    let l = reactor
        .listen("127.0.0.1:0", ListenOptions::new())
        .expect("listen");
    let addr = reactor.listener_addr(l).expect("listener_addr");
    println!("listening on {addr}");
    io::stdout().flush().expect("flush stdout");
    reactor
}

/// Open fds of `pid` numbered below `limit`: at `limit`, `accept` fails with EMFILE. (Fds
/// inherited above the limit still count in `/proc/PID/fd` but leave no room below it.)
fn fds_below(pid: u32, limit: u64) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|fd| *fd < limit)
        .count() as u64
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(hz > 0, "sysconf(_SC_CLK_TCK)");
    hz as u64
}

/// Sends `msg` and waits at most `limit` for it to come back.
fn echo(stream: &mut TcpStream, msg: &[u8], limit: Duration) -> io::Result<()> {
    stream.write_all(msg)?;
    expect_echo(stream, msg, limit)
}

/// Waits at most `limit` for `msg` to come back on `stream`.
fn expect_echo(stream: &mut TcpStream, msg: &[u8], limit: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(limit))?;
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got)?;
    assert_eq!(got, msg, "echo mismatch");
    Ok(())
}

/// Whether `stream` has nothing to read right now (no echo came back, no FIN, no RST).
fn nothing_to_read(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0; 64];
    let quiet = matches!(
        (&*stream).read(&mut buf),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).unwrap();
    quiet
}

// ---- EMFILE ------------------------------------------------------------------------------

/// Counts the reactor's `accept: ...; retrying` warnings (one per backoff).
struct RetryCounter;

static ACCEPT_BACKOFFS: AtomicUsize = AtomicUsize::new(0);

impl log::Log for RetryCounter {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Warn && record.args().to_string().contains("accept: ") {
            ACCEPT_BACKOFFS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

/// The child of `emfile_neither_spins_nor_stalls_the_listener`: an echo server limited to
/// [`FD_LIMIT`] fds, running until stdin closes (or [`CHILD_LIMIT`]).
#[test]
#[ignore = "child process of emfile_neither_spins_nor_stalls_the_listener"]
fn emfile_child_server() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        return;
    }
    watchdog();
    static COUNTER: RetryCounter = RetryCounter;
    log::set_logger(&COUNTER).expect("set_logger");
    log::set_max_level(log::LevelFilter::Warn);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one plain struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = FD_LIMIT.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
    }
    let stdin_closed = Arc::new(AtomicBool::new(false));
    let flag = stdin_closed.clone();
    thread::spawn(move || {
        let mut buf = [0; 64];
        let mut stdin = io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    let mut reactor = echo_reactor();
    let mut accepted = 0usize;
    let mut closed = 0usize;
    let mut handler = |cx: &mut Context, id: SocketId, event: Event<'_>| match event {
        Event::Accepted(_) => accepted += 1,
        Event::Data(bytes) => {
            let _ = cx.write(id, bytes);
        }
        Event::Close(_) => closed += 1,
        _ => {}
    };
    let start = Instant::now();
    while !stdin_closed.load(Ordering::SeqCst) && start.elapsed() < CHILD_LIMIT {
        reactor
            .run_once(&mut handler, Some(Duration::from_millis(50)))
            .expect("run_once");
    }
    println!(
        "child: accepted {accepted}, closed {closed}, accept backoffs {}",
        ACCEPT_BACKOFFS.load(Ordering::Relaxed)
    );
    io::stdout().flush().unwrap();
}

/// Out of fds, the listener must neither spin (EMFILE leaves the connection in the backlog
/// and brings no new edge, so retrying at once burns a core) nor stall (once fds free up,
/// the connections waiting in the backlog are served).
#[test]
fn emfile_neither_spins_nor_stalls_the_listener() {
    let started = Instant::now();
    let mut server = spawn_child("emfile_child_server", EMFILE_CHILD, Stdio::piped());
    let pid = server.pid();
    let addr = server.addr;
    let base = fds_below(pid, FD_LIMIT);

    // Fill the child's fd table: one served connection after another until no fd is left.
    // Only accepts take fds in the child, so while one is free the next connection is
    // accepted and echoed.
    let mut served: Vec<TcpStream> = Vec::new();
    for i in 0..2 * FD_LIMIT as usize {
        if fds_below(pid, FD_LIMIT) >= FD_LIMIT {
            break;
        }
        let mut s = peer(addr);
        echo(&mut s, format!("served {i:03}\n").as_bytes(), LIMIT)
            .unwrap_or_else(|e| panic!("connection {i} not served with fds left: {e}"));
        served.push(s);
    }
    let full = fds_below(pid, FD_LIMIT);
    assert_eq!(full, FD_LIMIT, "the child never ran out of fds");
    let saturated_at = started.elapsed();

    // More connections: the kernel completes them into the backlog; the child cannot take them.
    let mut waiting: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    for i in 0..WAITING {
        let mut s = peer(addr);
        let msg = format!("waiting {i:03}\n").into_bytes();
        s.write_all(&msg).unwrap();
        waiting.push((s, msg));
    }

    // CPU over about a second, while the child is out of fds with connections waiting.
    let hz = clock_ticks_per_second();
    let t0 = server.cpu_ticks();
    let m0 = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let t1 = server.cpu_ticks();
    let wall = m0.elapsed();
    let cpu = Duration::from_secs_f64((t1 - t0) as f64 / hz as f64);
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "emfile: child base fds {base}, {} served connections, {} waiting; CPU while out of \
         fds: {} ticks ({cpu:?}) over {wall:?} = {:.1}% of one core (HZ {hz})",
        served.len(),
        waiting.len(),
        t1 - t0,
        share * 100.0
    );
    assert_eq!(
        fds_below(pid, FD_LIMIT),
        FD_LIMIT,
        "the child was out of fds all along"
    );
    assert!(
        share < 0.25,
        "the child spins while out of fds: {:.1}% of one core",
        share * 100.0
    );
    for (i, (s, _)) in waiting.iter().enumerate() {
        assert!(nothing_to_read(s), "waiting connection {i} got an answer");
    }

    // Give fds back: the child sees the FINs and closes those sockets.
    assert!(served.len() > FREED, "too few served connections");
    let freed_at = Instant::now();
    for s in served.drain(..FREED) {
        drop(s);
    }
    // Every waiting connection is served, and a new one too (each wait bounded by LIMIT: a
    // listener stalled for good fails it). The times are reported.
    let mut times = Vec::new();
    for (i, (s, msg)) in waiting.iter_mut().enumerate() {
        expect_echo(s, msg, LIMIT)
            .unwrap_or_else(|e| panic!("waiting connection {i}: never served: {e}"));
        times.push(freed_at.elapsed());
    }
    let mut fresh = peer(addr);
    echo(&mut fresh, b"fresh\n", LIMIT).expect("new connection served after fds freed up");
    let recovered = freed_at.elapsed();
    // The connections that stayed open still work.
    echo(&mut served[0], b"still here\n", LIMIT).expect("old connection");
    eprintln!(
        "emfile: after closing {FREED} connections, first waiting connection served after \
         {:?}, all {} after {:?}, a new one after {recovered:?}",
        times[0],
        times.len(),
        times.last().unwrap()
    );

    // Close stdin: the child stops, prints its counters and exits 0.
    drop(server.child.stdin.take());
    drop(served);
    drop(waiting);
    drop(fresh);
    let status = server
        .wait_timeout(LIMIT)
        .expect("child did not exit after stdin closed");
    let rest = rest_of_stdout(&mut server);
    let counters = rest
        .lines()
        .find(|l| l.starts_with("child: "))
        .unwrap_or("child: (no counters)");
    eprintln!(
        "emfile: saturated after {saturated_at:?}; {counters}; total {:?}",
        started.elapsed()
    );
    assert!(status.success(), "child failed: {status}\n{rest}");
}

// ---- SIGTERM -----------------------------------------------------------------------------

#[derive(Default)]
struct ShutdownRecorder {
    closes: HashMap<SocketId, CloseReason>,
    completed: usize,
}

impl Handler for ShutdownRecorder {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Data(bytes) => {
                let _ = cx.write(id, bytes);
            }
            Event::Close(info) => {
                self.closes.insert(id, info.reason);
            }
            _ => {}
        }
    }
    fn on_shutdown_complete(&mut self, _: &mut Context) {
        self.completed += 1;
    }
}

/// The child of `sigterm_triggers_graceful_shutdown_and_run_returns`: an echo server with
/// `shutdown_on_signals`, whose `run` must return after SIGTERM.
#[test]
#[ignore = "child process of sigterm_triggers_graceful_shutdown_and_run_returns"]
fn sigterm_child_server() {
    if std::env::var_os(SIGTERM_CHILD).is_none() {
        return;
    }
    watchdog();
    let mut reactor = Reactor::new().expect("reactor");
    // Before the address is printed: the parent may signal as soon as it reads it.
    reactor
        .shutdown_on_signals(GRACE)
        .expect("shutdown_on_signals");
    let l = reactor
        .listen("127.0.0.1:0", ListenOptions::new())
        .expect("listen");
    println!("listening on {}", reactor.listener_addr(l).unwrap());
    io::stdout().flush().unwrap();
    let mut h = ShutdownRecorder::default();
    let start = Instant::now();
    reactor.serve(&mut h).expect("run");
    println!(
        "child: run returned after {:?}; closes {:?}; completed {}",
        start.elapsed(),
        h.closes.values().collect::<Vec<_>>(),
        h.completed
    );
    io::stdout().flush().unwrap();
    assert_eq!(h.completed, 1, "on_shutdown_complete");
    assert_eq!(h.closes.len(), 1, "one connection");
    assert!(
        h.closes.values().all(|r| *r == CloseReason::Graceful),
        "{:?}",
        h.closes
    );
    assert_eq!(reactor.context().live_listeners(), 0);
    assert_no_live_socket(&reactor);
}

/// SIGTERM with `shutdown_on_signals`: the listener closes (new connects refused), the
/// connection ends with a FIN, and once the client answers with its own FIN, `run` returns
/// and the process exits 0 — without waiting out the grace period, which is far longer than
/// the bounded wait for the exit (and the child checks its connection closed gracefully,
/// not by the grace).
#[test]
fn sigterm_triggers_graceful_shutdown_and_run_returns() {
    let mut server = spawn_child("sigterm_child_server", SIGTERM_CHILD, Stdio::null());
    let addr = server.addr;
    let mut client = peer(addr);
    echo(&mut client, b"hello\n", LIMIT).expect("echo before the signal");

    let signalled = Instant::now();
    server.signal(SIGTERM);
    let (got, ending) = read_to_end(&mut client);
    let fin_after = signalled.elapsed();
    assert_eq!((got.as_slice(), ending), (&b""[..], Ending::Fin));
    // The child is still waiting for our FIN (or the grace): its listener is closed, not gone
    // with the process.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "child exited before the client's FIN"
    );
    let refused = TcpStream::connect(addr).expect_err("connect after SIGTERM");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

    client.shutdown(Shutdown::Write).unwrap();
    let status = server
        .wait_timeout(LIMIT)
        .expect("child did not exit after SIGTERM");
    let exited_after = signalled.elapsed();
    drop(client);
    let rest = rest_of_stdout(&mut server);
    eprintln!(
        "sigterm: FIN after {fin_after:?}, child exited ({status}) after {exited_after:?}; {}",
        rest.lines()
            .find(|l| l.starts_with("child: "))
            .unwrap_or("(no child report)")
    );
    assert!(status.success(), "child failed: {status}\n{rest}");
}
