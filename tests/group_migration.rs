//! A reactor leaving a group while clients connect resets no client (SEMANTICS B3.3, B2.13;
//! issue 11): measured in a network namespace this test creates, once with
//! `net.ipv4.tcp_migrate_req = 1` (asserted: no client reset, refused or answered wrongly) and
//! once with 0, the baseline (reported, not asserted).
//!
//! The outer test re-runs this binary's ignored inner test in a child process that
//! `unshare(2)`s a new network namespace before it execs (a new user namespace too when the
//! caller lacks `CAP_SYS_ADMIN`, if the system allows one): the sysctl is per namespace, so
//! the host's setting is never touched, and the namespace dies with the child. Where no
//! namespace can be made, the test says so and passes.
//!
//! Inside, each round starts a group of two reactors running a line echo on 127.0.0.1, starts
//! client threads that connect in a loop (each connection sends a line and expects exactly
//! that line back, then the server's FIN), and while they run makes reactor 0 leave; the
//! clients go on for a number of connections after reactor 0 completed, then stop. Reactor 0's
//! listener takes its accept queue before it closes (B2.13); what the sweep cannot take — a
//! handshake that completes between its last `accept` and the `close`, or one still half-open
//! (SYN received) when the listener closes — the kernel resets without migration and moves to
//! reactor 1's listener with it (counted in `/proc/net/netstat` as `TCPMigrateReqSuccess`,
//! reported as `kernel_migrated`). The window is narrow on loopback: a few leaves in a hundred
//! hit it, and a run of the baseline may show no reset at all. It is reported as measured.
//!
//! With `tcp_migrate_req = 1` the test asserts that no client is reset once its `connect`
//! returned, refused, or answered wrongly. A reset *during* `connect` is the kernel's own race
//! (see `src/group.rs`: the final ACK of a handshake processed at the instant of the close) and
//! is counted apart as `handshake_resets`, bounded by the handshakes that can be in flight.
//!
//! The two reports are printed past the harness's capture; `-- --nocapture` adds the first
//! failures the baseline saw.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use finwait::{Context, Event, Group, GroupOptions, Handler, Member, SocketId};

/// The inner test's name, run with `--exact` in the child.
const INNER: &str = "inner_a_reactor_leaves_while_clients_connect";
/// Set for the child: the value to write to `tcp_migrate_req`.
const ENV_MIGRATE: &str = "FINWAIT_NETNS_MIGRATE_REQ";
/// Set for the child: the parent's network namespace, which the child must not be in.
const ENV_PARENT_NS: &str = "FINWAIT_NETNS_PARENT";
const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
/// The line the child prints with its counts, and the one it prints when it cannot measure.
const REPORT: &str = "group-migration-report:";
const SKIP: &str = "group-migration-skip:";
const EXAMPLE: &str = "group-migration-failure:";

/// Rounds per mode, each with a new group.
const ROUNDS: usize = 100;
/// Client threads connecting in a loop.
const CLIENTS: usize = 8;
/// Connections finished before reactor 0 is told to leave.
const BEFORE_LEAVE: usize = 100;
/// Connections finished after reactor 0 completed its shutdown, before the clients stop.
const AFTER_LEFT: usize = 100;
/// Grace for the leaving reactor (every connection ends itself after its line long before).
const GRACE: Duration = Duration::from_secs(20);
/// A client's read and write timeout, and the bound of every wait (a hang guard, not a
/// measurement).
const LIMIT: Duration = Duration::from_secs(30);
/// The bound on one child run.
const CHILD_LIMIT: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------
// Outer: one child per mode, each in its own network namespace.
// ---------------------------------------------------------------------------------------

#[test]
fn a_reactor_leaving_while_clients_connect_resets_no_client_with_tcp_migrate_req() {
    let (baseline, baseline_failures) = match run_in_new_netns(0) {
        Child::Report(r, e) => (r, e),
        Child::Skipped(reason) => {
            say(&format!("skipped: {reason}"));
            return;
        }
    };
    say(&format!(
        "baseline (tcp_migrate_req=0): {}",
        describe(&baseline)
    ));
    for e in &baseline_failures {
        println!("  baseline failure: {e}");
    }
    let (migrated, failures) = match run_in_new_netns(1) {
        Child::Report(r, e) => (r, e),
        Child::Skipped(reason) => {
            say(&format!("skipped (tcp_migrate_req=1): {reason}"));
            return;
        }
    };
    say(&format!("tcp_migrate_req=1: {}", describe(&migrated)));
    if migrated["kernel_migrated"] == 0 {
        println!(
            "  (the kernel migrated no connection in this run: no handshake completed in the \
             window the sweep leaves)"
        );
    }
    for e in &failures {
        println!("  failure: {e}");
    }
    for key in ["resets", "refused", "bad", "other"] {
        assert_eq!(
            migrated[key],
            0,
            "with tcp_migrate_req=1 no client may see {key}: {}; first failures: {failures:#?} \
             (baseline: {})",
            describe(&migrated),
            describe(&baseline)
        );
    }
    // The kernel's own window: a handshake whose final ACK is being processed while the
    // listener closes. The ACK's path checked that the listener was listening, then
    // `inet_csk_reqsk_queue_add` (net/ipv4/inet_connection_sock.c) finds it closed and
    // `inet_child_forget`s the new connection, which sends an RST — before the client's
    // `connect` returns, so no program on either side ever held that connection, and
    // `tcp_migrate_req` does not cover it (it moves requests and queued connections, not one
    // caught mid-insertion). Only handshakes in flight at the instant of the one close can
    // meet it: at most one per client thread per round.
    assert!(
        migrated["handshake_resets"] <= CLIENTS * ROUNDS,
        "more handshake resets than handshakes in flight at the leaves: {}",
        describe(&migrated)
    );
    assert!(
        migrated["ok"] > 0
            && migrated["ok"] + migrated["handshake_resets"] == migrated["connections"]
    );
}

/// Writes past the test harness's capture, so that a skip shows in a plain `cargo test`.
fn say(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}

enum Child {
    /// The counts, and the first few failures described.
    Report(BTreeMap<String, usize>, Vec<String>),
    Skipped(String),
}

fn describe(report: &BTreeMap<String, usize>) -> String {
    let order = [
        "rounds",
        "connections",
        "ok",
        "resets",
        "handshake_resets",
        "refused",
        "bad",
        "other",
        "accepted_by_leaving",
        "swept",
        "kernel_migrated",
        "kernel_migrate_failed",
    ];
    order
        .iter()
        .map(|k| format!("{k} {}", report.get(*k).copied().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Runs the inner test in a child that enters a new network namespace before it execs, and
/// returns its report. Ends only that child (by its own handle), and only if it outlives
/// [`CHILD_LIMIT`].
fn run_in_new_netns(migrate: u8) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    // Everything the child writes between fork and exec is prepared here: no allocation there.
    // SAFETY: getuid and getgid cannot fail and touch no memory of ours.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let uid_map = CString::new(format!("0 {uid} 1")).unwrap();
    let gid_map = CString::new(format!("0 {gid} 1")).unwrap();
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            INNER,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_MIGRATE, migrate.to_string())
        .env(ENV_PARENT_NS, own_netns())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe calls (unshare, open, write, close) on data prepared before the fork.
    unsafe {
        command.pre_exec(move || enter_new_netns(&uid_map, &gid_map));
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Child::Skipped(format!(
                "cannot create a network namespace (unshare(2) of CLONE_NEWNET, and of \
                 CLONE_NEWUSER|CLONE_NEWNET where that was not permitted): {e}"
            ));
        }
    };
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child (pid {}) ran past {CHILD_LIMIT:?}", child.id());
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "child (tcp_migrate_req={migrate}) failed: {status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    // libtest prints the test's name without a newline before its output: find the tag
    // anywhere in a line.
    let tagged = |tag: &str| {
        out.lines()
            .find_map(|l| l.find(tag).map(|i| &l[i + tag.len()..]))
    };
    if let Some(line) = tagged(SKIP) {
        return Child::Skipped(line.trim().to_string());
    }
    let Some(line) = tagged(REPORT) else {
        panic!(
            "child (tcp_migrate_req={migrate}) printed no report\n--- stdout\n{out}\n--- stderr\n{err}"
        );
    };
    let report: BTreeMap<String, usize> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a count")))
        .collect();
    assert_eq!(
        report.get("migrate_req").copied(),
        Some(migrate as usize),
        "{line}"
    );
    let examples = out
        .lines()
        .filter_map(|l| {
            l.find(EXAMPLE)
                .map(|i| l[i + EXAMPLE.len()..].trim().to_string())
        })
        .collect();
    Child::Report(report, examples)
}

/// In the forked child: a new network namespace; without the privilege for one, a new user
/// namespace (mapping the caller to its root) with a network namespace it owns.
fn enter_new_netns(uid_map: &CString, gid_map: &CString) -> io::Result<()> {
    // SAFETY: plain syscalls on valid, NUL-terminated buffers.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        for (path, text) in [
            (c"/proc/self/setgroups", c"deny"),
            (c"/proc/self/uid_map", uid_map.as_c_str()),
            (c"/proc/self/gid_map", gid_map.as_c_str()),
        ] {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let bytes = text.to_bytes();
            let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            let e = io::Error::last_os_error();
            libc::close(fd);
            if n < 0 {
                return Err(e);
            }
            if n as usize != bytes.len() {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Inner: runs only in the child, inside the new namespace.
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "run by a_reactor_leaving_while_clients_connect_resets_no_client_with_tcp_migrate_req \
            inside a network namespace it creates"]
fn inner_a_reactor_leaves_while_clients_connect() {
    let (Ok(migrate), Ok(parent)) = (std::env::var(ENV_MIGRATE), std::env::var(ENV_PARENT_NS))
    else {
        println!("nothing to do: this test runs inside the network namespace the outer test makes");
        return;
    };
    // Never write the sysctl of a namespace this test did not create.
    let here = own_netns();
    assert!(
        !here.is_empty() && here != parent,
        "not in a new network namespace ({here} vs {parent})"
    );
    bring_loopback_up().expect("bring lo up in the new namespace");
    match std::fs::write(SYSCTL, &migrate) {
        Err(e) if migrate != "0" => {
            println!("{SKIP} cannot set {SYSCTL} (Linux 5.14 or later): {e}");
            return;
        }
        // Without the sysctl there is no migration, which is what the baseline wants.
        _ => {}
    }
    if let Ok(now) = std::fs::read_to_string(SYSCTL) {
        assert_eq!(now.trim(), migrate, "{SYSCTL}");
    }
    let mut total = Counts::default();
    for round in 0..ROUNDS {
        let counts = one_round();
        eprintln!("round {round}: {counts:?}");
        total.add(&counts);
    }
    // The kernel's own count of connections it moved off a closing listener (or failed to).
    let (migrated, failed) = (
        tcp_ext("TCPMigrateReqSuccess"),
        tcp_ext("TCPMigrateReqFailure"),
    );
    println!(
        "{REPORT} migrate_req={migrate} rounds={ROUNDS} connections={} ok={} resets={} \
         handshake_resets={} refused={} bad={} other={} accepted_by_leaving={} swept={} kernel_migrated={migrated} \
         kernel_migrate_failed={failed}",
        total.connections,
        total.ok,
        total.resets,
        total.handshake_resets,
        total.refused,
        total.bad,
        total.other,
        total.accepted_by_leaving,
        total.swept
    );
    for example in &total.examples {
        println!("{EXAMPLE} {example}");
    }
}

/// A `TcpExt` counter of this network namespace (`/proc/net/netstat`), 0 where absent.
fn tcp_ext(name: &str) -> usize {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `ip link set lo up` without the `ip` binary: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP.
fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: ifreq is plain data (all zeroes is valid); the ioctls read and write only it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req) < 0 {
                result = Err(io::Error::last_os_error());
            }
        }
        libc::close(fd);
        result
    }
}

/// What the clients of one round (or all rounds) saw, and what the leaving reactor accepted.
#[derive(Debug, Default)]
struct Counts {
    connections: usize,
    ok: usize,
    resets: usize,
    handshake_resets: usize,
    refused: usize,
    bad: usize,
    other: usize,
    /// Connections the leaving reactor accepted, in all.
    accepted_by_leaving: usize,
    /// Of those, the ones it accepted while shutting down: taken off its accept queue.
    swept: usize,
    /// The first few failures, described.
    examples: Vec<String>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.connections += other.connections;
        self.ok += other.ok;
        self.resets += other.resets;
        self.handshake_resets += other.handshake_resets;
        self.refused += other.refused;
        self.bad += other.bad;
        self.other += other.other;
        self.accepted_by_leaving += other.accepted_by_leaving;
        self.swept += other.swept;
        for e in &other.examples {
            if self.examples.len() < 10 {
                self.examples.push(e.clone());
            }
        }
    }
}

/// Echoes each connection's line, then ends it (the server's FIN comes first, so TIME_WAIT
/// stays on the server side and the clients' ports are not used up). A shutdown request is
/// left alone: every connection ends itself after its line, within the grace.
struct LineEcho {
    index: usize,
    accepted: Arc<AtomicUsize>,
    swept: Arc<AtomicUsize>,
    left: Arc<AtomicBool>,
}

impl Handler for LineEcho {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Accepted(_) if self.index == 0 => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if cx.is_shutting_down() {
                    self.swept.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Data(bytes) => {
                let _ = cx.write(id, bytes);
                if bytes.contains(&b'\n') {
                    let _ = cx.end(id);
                }
            }
            _ => {}
        }
    }

    fn on_shutdown_request(&mut self, _cx: &mut Context, _id: SocketId, _: &mut ()) {}

    fn on_shutdown_complete(&mut self, _cx: &mut Context) {
        if self.index == 0 {
            self.left.store(true, Ordering::SeqCst);
        }
    }
}

enum Outcome {
    Ok,
    Reset(String),
    /// Reset before `connect` returned: the handshake's final ACK met the closing listener.
    HandshakeReset(String),
    Refused(String),
    Bad(String),
    Other(String),
}

fn one_round() -> Counts {
    let accepted = Arc::new(AtomicUsize::new(0));
    let swept = Arc::new(AtomicUsize::new(0));
    let left = Arc::new(AtomicBool::new(false));
    let (a, s, l) = (accepted.clone(), swept.clone(), left.clone());
    let group = Group::listen("127.0.0.1:0", GroupOptions::new(2), move |m: Member| {
        LineEcho {
            index: m.index,
            accepted: a.clone(),
            swept: s.clone(),
            left: l.clone(),
        }
    })
    .expect("group");
    let addr = group.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, finished) = (stop.clone(), finished.clone());
            thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    outcomes.push(one_connection(addr, c, n));
                    finished.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                outcomes
            })
        })
        .collect();
    wait_until("connections before the leave", || {
        finished.load(Ordering::Relaxed) >= BEFORE_LEAVE
    });
    group.leave(0, GRACE).expect("leave");
    wait_until("reactor 0 to complete its shutdown", || {
        left.load(Ordering::SeqCst)
    });
    let at_left = finished.load(Ordering::Relaxed);
    wait_until("connections after reactor 0 left", || {
        finished.load(Ordering::Relaxed) >= at_left + AFTER_LEFT
    });
    stop.store(true, Ordering::Relaxed);
    let mut counts = Counts::default();
    for client in clients {
        for outcome in client.join().expect("client thread") {
            counts.connections += 1;
            let failure = match outcome {
                Outcome::Ok => {
                    counts.ok += 1;
                    continue;
                }
                Outcome::Reset(e) => {
                    counts.resets += 1;
                    format!("reset: {e}")
                }
                Outcome::HandshakeReset(e) => {
                    counts.handshake_resets += 1;
                    format!("reset during the handshake: {e}")
                }
                Outcome::Refused(e) => {
                    counts.refused += 1;
                    format!("refused: {e}")
                }
                Outcome::Bad(e) => {
                    counts.bad += 1;
                    format!("bad reply: {e}")
                }
                Outcome::Other(e) => {
                    counts.other += 1;
                    format!("other: {e}")
                }
            };
            if counts.examples.len() < 10 {
                counts.examples.push(failure);
            }
        }
    }
    group.shutdown(GRACE);
    group.join().expect("group join");
    counts.accepted_by_leaving = accepted.load(Ordering::Relaxed);
    counts.swept = swept.load(Ordering::Relaxed);
    counts
}

/// Waits for `done`, polling; fails the run if it does not come within [`LIMIT`] (a hang).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < LIMIT, "waited {LIMIT:?} for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// One client connection: connect, send a line, read to the server's FIN, compare.
fn one_connection(addr: SocketAddr, client: usize, n: usize) -> Outcome {
    let line = format!("client {client} connection {n}\n");
    let classify = |stage: &str, e: io::Error| {
        let text = format!("{stage} ({line:?}): {e}");
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Outcome::Reset(text),
            io::ErrorKind::ConnectionRefused => Outcome::Refused(text),
            _ => Outcome::Other(text),
        }
    };
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Outcome::HandshakeReset(format!("connect ({line:?}): {e}"));
        }
        Err(e) => return classify("connect", e),
    };
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    if let Err(e) = s.write_all(line.as_bytes()) {
        return classify("write", e);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => return classify("read", e),
        }
    }
    if got != line.as_bytes() {
        return Outcome::Bad(format!(
            "sent {line:?}, got {:?} before FIN",
            String::from_utf8_lossy(&got)
        ));
    }
    Outcome::Ok
}
