//! The close-propagation matrix of a TCP proxy, driven from outside the proxy process.
//!
//! The test process plays both ends: the client (a `std::net::TcpStream` to the proxy) and
//! the upstream server (a `std::net::TcpListener` on 127.0.0.1:0 that the proxy is pointed
//! at), so every case controls exactly what each end does and sees. Each case checks the
//! bytes that reach each end (content, not only length), how each end's stream ends — FIN
//! (a read returns 0) or ECONNRESET — and that the proxy's fd count (`/proc/PID/fd`) comes
//! back to what it was before the case. Every wait is bounded (a hang guard, never an
//! assertion on a duration).
//!
//! The matrix runs against any proxy ([`ProxySpec`]): finwait's `proxy` example with extra
//! arguments, or any command line with `{listen_port}`/`{upstream_port}` placeholders (and a
//! config file template, for proxies such as HAProxy that read their addresses from one).
//! Each case starts its own proxy process (pointed at that case's upstream listener) and
//! kills it, by its PID, when the case ends — also when it fails.
//!
//! Include it with `mod common; #[path = "common/proxy_matrix.rs"] mod proxy_matrix;` (it
//! uses `crate::common`).
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::process::Server;
use crate::common::{LIMIT, pattern, proc_net, reset_on_close};

// ---- the proxy under test ---------------------------------------------------------------------

/// Which proxy the matrix runs against.
#[derive(Debug, Clone)]
pub enum ProxySpec {
    /// finwait's `proxy` example (built next to the test binary), started as
    /// `proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:PORT ARGS...`; its address comes
    /// from its `listening on` line.
    Finwait { args: Vec<String> },
    /// Any proxy. `command` is split on whitespace (no shell quoting: use a wrapper script
    /// that `exec`s for anything fancier); in each word `{listen_port}`, `{upstream_port}`,
    /// `{listen}` (`127.0.0.1:PORT`), `{upstream}` and `{config}` are replaced. `config`, if
    /// given, is a template file: the same placeholders (but `{config}`) are replaced in its
    /// text, which is written to a temporary file whose path `{config}` stands for. The child
    /// also gets `PROXY_MATRIX_LISTEN_PORT` and `PROXY_MATRIX_UPSTREAM_PORT` in its
    /// environment. The listen port is a free port picked by binding 127.0.0.1:0; the proxy
    /// is ready once `/proc/net/tcp` shows it listening there. Its fd count is that of the
    /// process and all its descendants (so a master/worker proxy such as nginx counts right);
    /// the process must stay in the foreground (`haproxy -db`, `nginx -g 'daemon off;'`).
    Command {
        command: String,
        config: Option<PathBuf>,
    },
}

impl ProxySpec {
    /// finwait's proxy example with `extra` arguments (e.g. `["--splice", "on"]`).
    pub fn finwait(extra: &[&str]) -> ProxySpec {
        ProxySpec::Finwait {
            args: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// finwait's proxy example with the extra arguments in `FINWAIT_PROXY_ARGS` (split on
    /// whitespace; none when unset), so the same matrix runs with other flags.
    pub fn finwait_from_env() -> ProxySpec {
        let args = std::env::var("FINWAIT_PROXY_ARGS").unwrap_or_default();
        ProxySpec::Finwait {
            args: args.split_whitespace().map(str::to_string).collect(),
        }
    }

    /// `PROXY_MATRIX_CMD` (and `PROXY_MATRIX_CONFIG`) when set, else
    /// [`finwait_from_env`](Self::finwait_from_env).
    pub fn from_env() -> ProxySpec {
        match std::env::var("PROXY_MATRIX_CMD") {
            Ok(command) if !command.trim().is_empty() => ProxySpec::Command {
                command,
                config: std::env::var_os("PROXY_MATRIX_CONFIG").map(PathBuf::from),
            },
            _ => ProxySpec::finwait_from_env(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ProxySpec::Finwait { args } if args.is_empty() => "finwait proxy example".into(),
            ProxySpec::Finwait { args } => format!("finwait proxy example {}", args.join(" ")),
            ProxySpec::Command {
                command,
                config: None,
            } => command.clone(),
            ProxySpec::Command {
                command,
                config: Some(c),
            } => format!("{command} (config template {})", c.display()),
        }
    }

    /// Starts the proxy, forwarding to `upstream`, and waits until it listens.
    pub fn start(&self, upstream: SocketAddr) -> Proxy {
        match self {
            ProxySpec::Finwait { args } => {
                let up = upstream.to_string();
                let mut all: Vec<&str> = vec!["--upstream", &up];
                all.extend(args.iter().map(String::as_str));
                let server = Server::start("proxy", &all);
                let addr = server.addr;
                Proxy::settled(Running::Example(server), addr, None)
            }
            ProxySpec::Command { command, config } => {
                let port = free_port();
                let listen: SocketAddr = ([127, 0, 0, 1], port).into();
                let fill = |text: &str| {
                    text.replace("{listen_port}", &port.to_string())
                        .replace("{upstream_port}", &upstream.port().to_string())
                        .replace("{listen}", &listen.to_string())
                        .replace("{upstream}", &upstream.to_string())
                };
                let config = config.as_ref().map(|template| {
                    let text = std::fs::read_to_string(template).unwrap_or_else(|e| {
                        panic!("PROXY_MATRIX_CONFIG {}: {e}", template.display())
                    });
                    TempFile::with(&fill(&text))
                });
                let words: Vec<String> = command
                    .split_whitespace()
                    .map(|w| {
                        let w = fill(w);
                        match &config {
                            Some(c) => w.replace("{config}", &c.0.display().to_string()),
                            None => w,
                        }
                    })
                    .collect();
                assert!(!words.is_empty(), "PROXY_MATRIX_CMD is empty");
                let child = Command::new(&words[0])
                    .args(&words[1..])
                    .env("PROXY_MATRIX_LISTEN_PORT", port.to_string())
                    .env("PROXY_MATRIX_UPSTREAM_PORT", upstream.port().to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", words[0]));
                let mut running = Running::Command(Spawned(child));
                let start = Instant::now();
                while !proc_net::listening(port) {
                    if let Some(status) = running.exited() {
                        panic!("the proxy exited before listening on {listen}: {status}");
                    }
                    assert!(
                        start.elapsed() < LIMIT,
                        "the proxy never listened on {listen}"
                    );
                    thread::sleep(Duration::from_millis(10));
                }
                Proxy::settled(running, listen, config)
            }
        }
    }
}

/// A proxy process, killed (SIGKILL, by its PID, and its descendants by theirs) when
/// dropped — also while a failing case unwinds.
pub struct Proxy {
    running: Running,
    addr: SocketAddr,
    /// Open fds once started, before any connection.
    baseline: usize,
    _config: Option<TempFile>,
}

enum Running {
    Example(Server),
    Command(Spawned),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Example(s) => s.pid(),
            Running::Command(c) => c.0.id(),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        let child = match self {
            Running::Example(s) => &mut s.child,
            Running::Command(c) => &mut c.0,
        };
        child.try_wait().expect("try_wait")
    }
}

impl Proxy {
    fn settled(running: Running, addr: SocketAddr, config: Option<TempFile>) -> Proxy {
        let mut proxy = Proxy {
            running,
            addr,
            baseline: 0,
            _config: config,
        };
        // Two equal counts in a row: whatever the proxy opens after it listens is in.
        let mut last = proxy.fd_count();
        for _ in 0..50 {
            thread::sleep(Duration::from_millis(20));
            let now = proxy.fd_count();
            if now == last {
                break;
            }
            last = now;
        }
        proxy.baseline = last;
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn baseline(&self) -> usize {
        self.baseline
    }

    /// Open fds of the proxy (with its descendants' for a command); fails if it exited.
    pub fn fd_count(&mut self) -> usize {
        let pid = self.running.pid();
        let own = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());
        if let Some(status) = self.running.exited() {
            panic!("the proxy process exited during the case: {status}");
        }
        let own = own.expect("/proc/PID/fd of the proxy");
        if let Running::Command(_) = self.running {
            let children: usize = descendants(pid)
                .iter()
                .map(|p| {
                    std::fs::read_dir(format!("/proc/{p}/fd"))
                        .map(|d| d.count())
                        .unwrap_or(0)
                })
                .sum();
            return own + children;
        }
        own
    }

    /// Waits (bounded) until the proxy holds no more fds than before the case, and checks
    /// that it is still running.
    pub fn assert_released(&mut self) {
        let start = Instant::now();
        loop {
            let n = self.fd_count();
            if n <= self.baseline {
                return;
            }
            assert!(
                start.elapsed() < LIMIT,
                "proxy fds stay at {n}, {} before the case: the pair was not released",
                self.baseline
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A spawned command, killed by its PID (and its descendants by theirs) when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let children = descendants(self.0.id());
            let _ = self.0.kill();
            let _ = self.0.wait();
            for pid in children {
                // SAFETY: kill(2) on a process this test started (a child of its child).
                unsafe { kill(pid as i32, 9) };
            }
        }
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Every process whose ancestry leads to `pid` (scanned from `/proc/*/stat`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // After the parenthesised name: state, ppid.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut out: Vec<u32> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// A temporary file, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn with(text: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "proxy-matrix-{}-{}.cfg",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("write the proxy's config");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A port nobody listens on right now (bound to 127.0.0.1:0 and closed again).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

// ---- the two ends -----------------------------------------------------------------------------

/// How an end's stream ended, as that end observed it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A read returned 0: the peer's FIN.
    Fin,
    /// ECONNRESET: an RST arrived while the stream was open (no FIN before it).
    Reset,
    /// EPIPE: the connection had already been shut down (a FIN, then an RST).
    Pipe,
    /// Nothing happened within the bound: the stream is still open.
    Silent,
    /// We reset it ourselves (a flood asked to stop).
    LocalReset,
    /// Any other error.
    Other(io::ErrorKind),
}

impl End {
    fn of(e: &io::Error) -> End {
        match e.kind() {
            io::ErrorKind::ConnectionReset => End::Reset,
            io::ErrorKind::BrokenPipe => End::Pipe,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Silent,
            kind => End::Other(kind),
        }
    }
}

/// The upstream server: a listener on 127.0.0.1:0.
struct Upstream {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Upstream {
    fn bind() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        Upstream { listener, addr }
    }

    /// The next connection from the proxy (waiting at most [`LIMIT`]).
    fn accept(&self) -> TcpStream {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_accept() {
                return s;
            }
            assert!(
                start.elapsed() < LIMIT,
                "upstream: the proxy never connected"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// A connection waiting in the accept queue, if any.
    fn try_accept(&self) -> Option<TcpStream> {
        match self.listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(LIMIT)).unwrap();
                s.set_write_timeout(Some(LIMIT)).unwrap();
                Some(s)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("upstream accept: {e}"),
        }
    }
}

/// A port where nothing listens (for a refused upstream).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("client: connect {addr}: {e}"));
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// RST: `SO_LINGER` 0, then close.
fn reset(s: TcpStream) {
    reset_on_close(&s);
    drop(s);
}

/// Client-to-upstream payload (period 251).
fn up_bytes(len: usize) -> Vec<u8> {
    pattern(len)
}

/// Upstream-to-client payload (period 241, different from [`up_bytes`], so the two
/// directions cannot be mixed up).
fn down_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 241) as u8 ^ 0x5a).collect()
}

#[derive(Debug, Clone, Copy)]
enum Dir {
    Up,
    Down,
}

impl Dir {
    fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Dir::Up => up_bytes(len),
            Dir::Down => down_bytes(len),
        }
    }
    fn period(self) -> usize {
        match self {
            Dir::Up => 251,
            Dir::Down => 241,
        }
    }
}

/// Reads until the stream ends (or nothing comes for `guard`).
fn read_end(s: &mut TcpStream, guard: Duration) -> (Vec<u8>, End) {
    s.set_read_timeout(Some(guard)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break End::Fin,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break End::of(&e),
        }
    };
    s.set_read_timeout(Some(LIMIT)).unwrap();
    (out, end)
}

/// Reads exactly `n` bytes, failing with `who` named.
fn read_n(who: &str, s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("{who}: FIN after {got} of {n} expected bytes"),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{who}: {e} after {got} of {n} expected bytes"),
        }
    }
    buf
}

/// Writes on a thread (from a clone of `s`), then half-closes if asked.
fn write_on_thread(s: &TcpStream, data: Vec<u8>, fin: bool) -> JoinHandle<io::Result<()>> {
    let mut w = s.try_clone().unwrap();
    thread::spawn(move || {
        w.write_all(&data)?;
        if fin {
            w.shutdown(Shutdown::Write)?;
        }
        Ok(())
    })
}

/// Joins a thread, re-raising its panic (with its message) in this one.
fn join<T>(h: JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|p| panic::resume_unwind(p))
}

/// `got == want`, else a failure naming the first difference (not a 8 MiB dump).
#[track_caller]
fn same(who: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{who}: got {} bytes, expected {} (first difference at byte {at})",
            got.len(),
            want.len()
        );
    }
}

#[track_caller]
fn ended(who: &str, end: End, want: End, bytes: usize) {
    assert!(
        end == want,
        "{who}: the stream ended with {end:?} after {bytes} bytes, expected {want:?}"
    );
}

/// A thread that writes `dir`'s payload as fast as the socket takes it, and whenever it
/// cannot write, looks at the read side; it stops at the first end it sees (an error on
/// either side, or a FIN), so the kind of end is the first thing the socket reported.
struct Flood {
    progress: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Flooded>,
}

#[derive(Debug)]
struct Flooded {
    sent: usize,
    received: Vec<u8>,
    end: End,
}

impl Flood {
    /// Floods on `s` (its only handle: a reset asked of the flood must close the socket).
    fn start(s: TcpStream, dir: Dir, guard: Duration) -> Flood {
        const CHUNK: usize = 64 * 1024;
        let progress = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, st) = (progress.clone(), stop.clone());
        s.set_nonblocking(true).unwrap();
        let handle = thread::spawn(move || {
            let base = dir.bytes(CHUNK + dir.period());
            let mut buf = vec![0; 64 * 1024];
            let (mut sent, mut received) = (0usize, Vec::new());
            let start = Instant::now();
            let end = loop {
                if st.load(Ordering::SeqCst) {
                    reset_on_close(&s);
                    break End::LocalReset;
                }
                if start.elapsed() > guard {
                    break End::Silent;
                }
                let off = sent % dir.period();
                match (&s).write(&base[off..off + CHUNK]) {
                    Ok(n) => {
                        sent += n;
                        p.store(sent, Ordering::SeqCst);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break End::of(&e),
                }
                match (&s).read(&mut buf) {
                    Ok(0) => break End::Fin,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break End::of(&e),
                }
            };
            drop(s);
            Flooded {
                sent,
                received,
                end,
            }
        });
        Flood {
            progress,
            stop,
            handle,
        }
    }

    /// Waits until the flood stalls (no byte written for a while: every buffer on the way
    /// is full, the proxy stopped reading). A hang guard, not a measurement: stalling early
    /// on a busy machine only means fewer bytes are queued, which no case depends on.
    fn wait_stalled(&self, who: &str) -> usize {
        const STALL: Duration = Duration::from_millis(500);
        let start = Instant::now();
        let mut last = self.progress.load(Ordering::SeqCst);
        let mut since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(20));
            assert!(
                !self.handle.is_finished(),
                "{who}: the flood ended before it stalled"
            );
            let now = self.progress.load(Ordering::SeqCst);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if now > 0 && since.elapsed() >= STALL {
                return now;
            }
            assert!(
                start.elapsed() < LIMIT,
                "{who}: still writing after {now} bytes: the proxy applies no backpressure"
            );
        }
    }

    /// Asks the flood to reset its socket, and waits for it.
    fn reset(self) -> Flooded {
        self.stop.store(true, Ordering::SeqCst);
        join(self.handle)
    }

    fn join(self) -> Flooded {
        join(self.handle)
    }
}

/// How long case 12 waits for a proxy to give up on a side that never sends its FIN:
/// `PROXY_MATRIX_HALF_OPEN_GUARD_SECS`, default 90 s (finwait's FIN wait is 30 s).
fn half_open_guard() -> Duration {
    let secs = std::env::var("PROXY_MATRIX_HALF_OPEN_GUARD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    Duration::from_secs(secs)
}

// ---- the cases --------------------------------------------------------------------------------

/// One cell of the matrix.
pub struct Case {
    pub name: &'static str,
    run: fn(&ProxySpec),
}

/// Every case, in the order (16 is an addition).
pub const CASES: &[Case] = &[
    Case {
        name: "client_half_close_reaches_upstream_then_answer_and_fin_reach_client",
        run: client_half_close_first,
    },
    Case {
        name: "upstream_half_close_reaches_client_then_reply_and_fin_reach_upstream",
        run: upstream_half_close_first,
    },
    Case {
        name: "simultaneous_half_closes_deliver_both_streams_and_both_fins",
        run: simultaneous_half_closes,
    },
    Case {
        name: "client_reset_while_upstream_streams_reaches_upstream_as_reset",
        run: client_reset_while_upstream_streams,
    },
    Case {
        name: "upstream_reset_while_client_streams_reaches_client_as_reset",
        run: upstream_reset_while_client_streams,
    },
    Case {
        name: "upstream_reset_after_client_half_close_reaches_client_as_reset",
        run: upstream_reset_after_client_half_close,
    },
    Case {
        name: "client_reset_with_bytes_queued_toward_it_reaches_upstream_as_reset",
        run: client_reset_with_bytes_queued_toward_it,
    },
    Case {
        name: "upstream_reset_while_client_side_is_paused_reaches_client_as_reset",
        run: upstream_reset_while_client_side_is_paused,
    },
    Case {
        name: "client_fin_after_8_mib_reaches_upstream_after_every_byte",
        run: client_fin_after_8_mib,
    },
    Case {
        name: "unreachable_upstream_resets_client",
        run: unreachable_upstream,
    },
    Case {
        name: "client_reset_before_upstream_accepts_leaves_no_fd_and_no_clean_end",
        run: client_gone_at_once,
    },
    Case {
        name: "upstream_that_never_sends_its_fin_is_given_up_and_client_gets_fin",
        run: upstream_never_sends_its_fin,
    },
    Case {
        name: "upstream_fin_after_8_mib_reaches_slow_client_after_every_byte",
        run: upstream_fin_after_8_mib_to_slow_client,
    },
    Case {
        name: "simultaneous_resets_release_the_pair_and_the_proxy_serves_on",
        run: simultaneous_resets,
    },
    Case {
        name: "upstream_answer_then_immediate_reset_reaches_client_as_reset",
        run: upstream_answer_then_reset,
    },
    Case {
        name: "client_reset_while_its_side_is_paused_reaches_upstream_as_reset",
        run: client_reset_while_its_side_is_paused,
    },
];

/// The outcome of one case.
pub struct CaseResult {
    pub name: &'static str,
    /// `Err`: the failure (the panic message).
    pub result: Result<(), String>,
    /// How long the case took (reported, never asserted).
    pub elapsed: Duration,
}

/// Runs one case against its own proxy process; `Err` holds the failure.
pub fn run_case(spec: &ProxySpec, name: &str) -> Result<(), String> {
    let case = CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case named {name}"));
    panic::catch_unwind(AssertUnwindSafe(|| (case.run)(spec))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())
    })
}

/// Runs every case whose name `select` accepts, one after the other, each against its own
/// proxy process: pass or the failure, per case.
pub fn run_matrix(spec: &ProxySpec, select: impl Fn(&str) -> bool) -> Vec<CaseResult> {
    CASES
        .iter()
        .filter(|c| select(c.name))
        .map(|c| {
            let start = Instant::now();
            let result = run_case(spec, c.name);
            CaseResult {
                name: c.name,
                result,
                elapsed: start.elapsed(),
            }
        })
        .collect()
}

/// The results as a table, one line per case.
pub fn table(spec: &ProxySpec, results: &[CaseResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = format!("proxy matrix against: {}\n", spec.describe());
    for r in results {
        let verdict = match &r.result {
            Ok(()) => "pass".to_string(),
            Err(e) => format!("FAIL  {}", e.replace('\n', " ")),
        };
        let secs = r.elapsed.as_secs_f64();
        out += &format!("{:<width$}  {secs:>6.2}s  {verdict}\n", r.name);
    }
    let passed = results.iter().filter(|r| r.result.is_ok()).count();
    out += &format!("{passed}/{} passed\n", results.len());
    out
}

/// 1. The client sends, then half-closes; the upstream gets every byte, then FIN; it
///    answers and half-closes; the client gets every byte of the answer, then FIN. The
///    proxy then closes the pair by itself (checked while both ends are still open).
fn client_half_close_first(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    let request = up_bytes(100_000);
    let w = write_on_thread(&client, request.clone(), true);
    let mut server = up.accept();
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream", &got, &request);
    ended("upstream", end, End::Fin, got.len());
    join(w).expect("client write");
    let answer = down_bytes(100_000);
    let w = write_on_thread(&server, answer.clone(), true);
    let (got, end) = read_end(&mut client, LIMIT);
    same("client", &got, &answer);
    ended("client", end, End::Fin, got.len());
    join(w).expect("upstream write");
    proxy.assert_released();
}

/// 2. The mirror of 1: the upstream sends first and half-closes; the client gets every
///    byte, then FIN, and can still send: its bytes and FIN reach the upstream.
fn upstream_half_close_first(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    let mut server = up.accept();
    let answer = down_bytes(100_000);
    let w = write_on_thread(&server, answer.clone(), true);
    let (got, end) = read_end(&mut client, LIMIT);
    same("client", &got, &answer);
    ended("client", end, End::Fin, got.len());
    join(w).expect("upstream write");
    let request = up_bytes(100_000);
    let w = write_on_thread(&client, request.clone(), true);
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream", &got, &request);
    ended("upstream", end, End::Fin, got.len());
    join(w).expect("client write");
    proxy.assert_released();
}

/// 3. Both ends send and half-close at the same moment (a barrier): each gets every byte
///    of the other's stream, then FIN.
fn simultaneous_half_closes(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"hello").unwrap();
    let mut server = up.accept();
    same("upstream", &read_n("upstream", &mut server, 5), b"hello");
    let request = up_bytes(100_000);
    let answer = down_bytes(100_000);
    let barrier = Arc::new(Barrier::new(2));
    let go = |s: &TcpStream, data: Vec<u8>| {
        let (mut w, b) = (s.try_clone().unwrap(), barrier.clone());
        thread::spawn(move || {
            b.wait();
            w.write_all(&data)?;
            w.shutdown(Shutdown::Write)
        })
    };
    let (wc, ws) = (go(&client, request.clone()), go(&server, answer.clone()));
    let reader = thread::spawn(move || {
        let r = read_end(&mut server, LIMIT);
        (server, r)
    });
    let (got, end) = read_end(&mut client, LIMIT);
    same("client", &got, &answer);
    ended("client", end, End::Fin, got.len());
    let (_server, (got, end)) = join(reader);
    same("upstream", &got, &request);
    ended("upstream", end, End::Fin, got.len());
    join(wc).expect("client write");
    join(ws).expect("upstream write");
    proxy.assert_released();
}

/// 4. The upstream streams to the client; the client reads 256 KiB (checked), then resets
///    (SO_LINGER 0 + close). The upstream's first observation is ECONNRESET — not a FIN,
///    not EPIPE (which would mean a FIN came first) — and it received nothing.
fn client_reset_while_upstream_streams(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"go").unwrap();
    let mut server = up.accept();
    same("upstream", &read_n("upstream", &mut server, 2), b"go");
    let flood = Flood::start(server, Dir::Down, 2 * LIMIT);
    let first = read_n("client", &mut client, 256 * 1024);
    same("client", &first, &down_bytes(first.len()));
    reset(client);
    let f = flood.join();
    ended("upstream", f.end, End::Reset, f.received.len());
    same("upstream", &f.received, b"");
    proxy.assert_released();
}

/// 5. The mirror of 4: the client streams; the upstream reads 256 KiB (checked), then
///    resets. The client's first observation is ECONNRESET; it received nothing.
fn upstream_reset_while_client_streams(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let client = connect(proxy.addr());
    let flood = Flood::start(client, Dir::Up, 2 * LIMIT);
    let mut server = up.accept();
    let first = read_n("upstream", &mut server, 256 * 1024);
    same("upstream", &first, &up_bytes(first.len()));
    reset(server);
    let f = flood.join();
    ended("client", f.end, End::Reset, f.received.len());
    same("client", &f.received, b"");
    proxy.assert_released();
}

/// 6. The client sends a request and half-closes; the upstream gets it and the FIN, sends
///    1000 bytes of answer (the client reads them: checked), then resets. The client's
///    stream ends in ECONNRESET, not in a clean FIN, with no further byte.
fn upstream_reset_after_client_half_close(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut server = up.accept();
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream", &got, b"request");
    ended("upstream", end, End::Fin, got.len());
    let partial = down_bytes(1000);
    server.write_all(&partial).unwrap();
    same("client", &read_n("client", &mut client, 1000), &partial);
    reset(server);
    let (got, end) = read_end(&mut client, LIMIT);
    ended("client", end, End::Reset, got.len());
    same("client (after the 1000 bytes)", &got, b"");
    proxy.assert_released();
}

/// 7. The client stops reading; the upstream floods until nothing moves (every buffer on
///    the way full, bytes queued in the proxy toward the client); then the client resets.
///    The upstream's first observation is ECONNRESET, and the proxy releases both fds.
fn client_reset_with_bytes_queued_toward_it(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"go").unwrap();
    let mut server = up.accept();
    same("upstream", &read_n("upstream", &mut server, 2), b"go");
    let flood = Flood::start(server, Dir::Down, 2 * LIMIT);
    flood.wait_stalled("upstream");
    reset(client);
    let f = flood.join();
    ended("upstream", f.end, End::Reset, f.received.len());
    same("upstream", &f.received, b"");
    proxy.assert_released();
}

/// 8. The upstream stops reading; the client floods until nothing moves (the proxy paused
///    reading from the client); then the upstream resets. The client's first observation
///    is ECONNRESET (the paused side is reset too), and it received nothing.
fn upstream_reset_while_client_side_is_paused(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let client = connect(proxy.addr());
    let flood = Flood::start(client, Dir::Up, 2 * LIMIT);
    let server = up.accept();
    flood.wait_stalled("client");
    reset(server);
    let f = flood.join();
    ended("client", f.end, End::Reset, f.received.len());
    same("client", &f.received, b"");
    proxy.assert_released();
}

/// 9. The client writes 8 MiB and half-closes at once; the upstream reads all 8 MiB
///    (content checked), then the FIN; it replies 1000 bytes and half-closes; the client
///    gets the reply, then FIN.
fn client_fin_after_8_mib(spec: &ProxySpec) {
    const N: usize = 8 << 20;
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    let request = up_bytes(N);
    let w = write_on_thread(&client, request.clone(), true);
    let mut server = up.accept();
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream", &got, &request);
    ended("upstream", end, End::Fin, got.len());
    join(w).expect("client write");
    let reply = down_bytes(1000);
    server.write_all(&reply).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    let (got, end) = read_end(&mut client, LIMIT);
    same("client", &got, &reply);
    ended("client", end, End::Fin, got.len());
    proxy.assert_released();
}

/// 10. The upstream refuses (nothing listens on its port). The client, which sent a
///     request, gets no byte and an RST: proxy.rs documents "an unreachable upstream
///     resets the client" (CONTRACT.md only says "closes the client promptly"; a FIN would
///     tell a client that already sent a request "accepted, empty answer"). A write that
///     fails with ECONNRESET counts as that RST.
fn unreachable_upstream(spec: &ProxySpec) {
    let mut proxy = spec.start(dead_addr());
    let mut client = connect(proxy.addr());
    let (got, end) = match client.write_all(b"GET / HTTP/1.0\r\n\r\n") {
        Err(e) => (Vec::new(), End::of(&e)),
        Ok(()) => read_end(&mut client, LIMIT),
    };
    same("client", &got, b"");
    ended("client", end, End::Reset, got.len());
    proxy.assert_released();
}

/// 11. A client connects and resets at once, before the proxy could even accept it. If a
///     connection for it reaches the upstream, it carries no byte and ends in ECONNRESET
///     (never a clean FIN); at most one does. A second client is then served normally
///     (so the proxy has surely handled the first), and the proxy holds no fd afterwards.
fn client_gone_at_once(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    reset(connect(proxy.addr()));
    let mut second = connect(proxy.addr());
    second.write_all(b"second").unwrap();
    second.shutdown(Shutdown::Write).unwrap();
    let mut others: Vec<(Vec<u8>, End)> = Vec::new();
    let mut served = None;
    while served.is_none() {
        let mut s = up.accept();
        let (got, end) = read_end(&mut s, LIMIT);
        if got == b"second" && end == End::Fin {
            s.write_all(b"answer").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            served = Some(s);
        } else {
            others.push((got, end));
        }
        assert!(others.len() <= 1, "upstream: connections {others:?}");
    }
    let (got, end) = read_end(&mut second, LIMIT);
    same("second client", &got, b"answer");
    ended("second client", end, End::Fin, got.len());
    proxy.assert_released();
    // Anything for the first client still queued at the upstream is in its accept queue now.
    while let Some(mut s) = up.try_accept() {
        others.push(read_end(&mut s, LIMIT));
    }
    assert!(others.len() <= 1, "upstream: connections {others:?}");
    for (got, end) in &others {
        same("upstream (the reset client's connection)", got, b"");
        ended(
            "upstream (the reset client's connection)",
            *end,
            End::Reset,
            0,
        );
    }
}

/// 12. The client sends a request and half-closes; the upstream gets it and the FIN, then
///     neither sends nor closes. The pair must not be held forever: the proxy gives up on
///     the upstream (finwait: the reactor's FIN wait, 30 s without progress by default; the
///     proxy example has no option for it) and ends the client's stream — with a FIN,
///     no byte, as proxy.rs documents for a close that lost no data — and releases both
///     fds. Bounded by [`half_open_guard`].
fn upstream_never_sends_its_fin(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut server = up.accept();
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream", &got, b"request");
    ended("upstream", end, End::Fin, got.len());
    let (got, end) = read_end(&mut client, half_open_guard());
    same("client", &got, b"");
    ended("client", end, End::Fin, got.len());
    proxy.assert_released();
    drop(server);
}

/// 13. The client sends a little; the upstream writes 8 MiB and half-closes at once; the
///     client reads slowly (16 KiB, then a pause of 1 ms) and gets all 8 MiB (content
///     checked), then FIN; it answers and half-closes; the upstream gets the answer, then
///     FIN.
fn upstream_fin_after_8_mib_to_slow_client(spec: &ProxySpec) {
    const N: usize = 8 << 20;
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"go").unwrap();
    let mut server = up.accept();
    same("upstream", &read_n("upstream", &mut server, 2), b"go");
    let answer = down_bytes(N);
    let w = write_on_thread(&server, answer.clone(), true);
    let mut got = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    let end = loop {
        match client.read(&mut buf) {
            Ok(0) => break End::Fin,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break End::of(&e),
        }
        thread::sleep(Duration::from_millis(1));
    };
    same("client", &got, &answer);
    ended("client", end, End::Fin, got.len());
    join(w).expect("upstream write");
    client.write_all(b"thanks").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream", &got, b"thanks");
    ended("upstream", end, End::Fin, got.len());
    proxy.assert_released();
}

/// 14. With 16 KiB unread at each end, both ends reset at the same moment (a barrier).
///     Neither end can observe anything after its own reset; what is checked is the proxy:
///     it releases both fds and then serves a new pair through to both FINs.
fn simultaneous_resets(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"ping").unwrap();
    let mut server = up.accept();
    same("upstream", &read_n("upstream", &mut server, 4), b"ping");
    server.write_all(b"pong").unwrap();
    same("client", &read_n("client", &mut client, 4), b"pong");
    client.write_all(&up_bytes(16 * 1024)).unwrap();
    server.write_all(&down_bytes(16 * 1024)).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let go = |s: TcpStream| {
        let b = barrier.clone();
        thread::spawn(move || {
            b.wait();
            reset(s);
        })
    };
    let (a, b) = (go(client), go(server));
    join(a);
    join(b);
    proxy.assert_released();
    let mut client = connect(proxy.addr());
    client.write_all(b"again").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut server = up.accept();
    let (got, end) = read_end(&mut server, LIMIT);
    same("upstream (new pair)", &got, b"again");
    ended("upstream (new pair)", end, End::Fin, got.len());
    server.write_all(b"done").unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    let (got, end) = read_end(&mut client, LIMIT);
    same("client (new pair)", &got, b"done");
    ended("client (new pair)", end, End::Fin, got.len());
    proxy.assert_released();
}

/// 15. The client sends a request (and keeps its side open); the upstream reads it
///     (checked), writes a 4096-byte answer and resets right after. The answer may be cut
///     anywhere — the RST can overtake it at the proxy or at the client — so what the
///     client received must be a prefix of the answer (any length, 0 to 4096), and its
///     stream must end in ECONNRESET, never in a clean FIN.
fn upstream_answer_then_reset(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let mut client = connect(proxy.addr());
    client.write_all(b"request").unwrap();
    let mut server = up.accept();
    same("upstream", &read_n("upstream", &mut server, 7), b"request");
    let answer = down_bytes(4096);
    server.write_all(&answer).unwrap();
    reset(server);
    let (got, end) = read_end(&mut client, LIMIT);
    same(
        "client (a prefix of the answer)",
        &got,
        &answer[..got.len().min(4096)],
    );
    ended("client", end, End::Reset, got.len());
    proxy.assert_released();
}

/// 16. (Not in the list.) The upstream stops reading; the client floods until
///     nothing moves (the proxy paused reading from it), then the client resets: the RST
///     arrives on the paused socket itself. The upstream then reads what it had not read —
///     a prefix of the client's stream — and its stream ends in ECONNRESET.
fn client_reset_while_its_side_is_paused(spec: &ProxySpec) {
    let up = Upstream::bind();
    let mut proxy = spec.start(up.addr);
    let client = connect(proxy.addr());
    let flood = Flood::start(client, Dir::Up, 2 * LIMIT);
    let mut server = up.accept();
    flood.wait_stalled("client");
    let f = flood.reset();
    ended("client", f.end, End::LocalReset, f.received.len());
    let (got, end) = read_end(&mut server, LIMIT);
    same(
        "upstream (a prefix of the client's stream)",
        &got,
        &up_bytes(got.len()),
    );
    ended("upstream", end, End::Reset, got.len());
    proxy.assert_released();
}
