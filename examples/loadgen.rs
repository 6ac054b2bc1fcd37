//! loadgen — a single-threaded load generator written on finwait's own client API.
//!
//! ```text
//! cargo run --release --example loadgen -- --connect 127.0.0.1:7000 --scenario pingpong
//! ```
//!
//! Prints exactly one JSON line on stdout (see BENCHMARKS.md for every field; RESTART.md for
//! the `restart` scenario's) and exits 0, or 1 when anything went wrong (`"errors"` > 0; the JSON line is still printed). Diagnostics go
//! to stderr.
//!
//! What it teaches: a client is the same reactor as a server. `connect` returns an id at
//! once; the handler gets `Connect`, `Data`, `End`, `Close` for it, and keeps its own
//! per-connection state in a table indexed by [`SocketId::index`].

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use finwait::{CloseReason, ConnectOptions, Context, Event, Handler, Reactor, SocketId};

const HELP: &str = "\
loadgen — drive a TCP echo server and report one JSON line

USAGE: loadgen --connect HOST:PORT --scenario NAME [OPTIONS]

SCENARIOS:
  bulk       C connections each stream BYTES/C bytes of a verified pattern, end(), read the
             echo to EOF                                       (default C = 4)
  pingpong   C connections, one SIZE-byte request / response at a time each, for D seconds
                                                               (default C = 50)
  churn      C workers, each looping connect, write SIZE bytes, end(), read the echo to EOF,
             close — for D seconds                             (default C = 50)
  idle       hold C idle connections, measure the server's memory per connection, close them
             all and check the server's fd count returns to its baseline (default C = 10000)
  upload     one way: C connections each stream BYTES/C bytes of the pattern and end(); the
             server is a sink that checks them and answers with the number of bytes that
             matched (a decimal line), then closes             (default C = 4)
  download   one way: C connections each read BYTES/C bytes of the pattern, checked, from a
             source server to its FIN, then end()              (default C = 4)
  restart    churn and pingpong at once against a server being restarted: C churn workers
             and P pingpong connections (--pingpong) in --protocol echo or http, until
             --stop-file exists (or for D seconds); connections the server ends are
             replaced. Reports errors by kind: refused, reset, short (a reply cut by a
             FIN; short_empty: nothing of it came), corrupt, timeout, other; and, not
             errors, pingpong connections the server ended between requests
             (closed_before_reply: with a request out and nothing of its reply — retried
             on the new connection)                              (default C = 50)

OPTIONS:
  --connect HOST:PORT     the echo server (required)
  --scenario NAME         bulk | pingpong | churn | idle | upload | download | restart
                          (required)
  --connections C         connections (bulk, pingpong, idle, upload, download) or workers
                          (churn)
  --bytes N               bulk, upload, download: TOTAL bytes sent, split evenly across
                          the connections (default 268435456 = 256 MiB)
  --duration-s D          pingpong, churn: measured seconds (default 5)
  --size N                pingpong, churn: message size in bytes (default 64)
  --protocol P            restart: echo (default) or http (GET / against the http example)
  --pingpong P            restart: persistent connections beside the churn (default 100)
  --stop-file PATH        restart: run until PATH exists (checked every 20 ms)
  --source-ips N          churn, restart: connect from N loopback addresses 127.0.0.1..N in turn
                          (default 1: the kernel picks). Each source address has its own
                          ephemeral ports; with one, loadgen's TIME_WAIT sockets (its side
                          closes first) can exhaust them and cap conn/s
                          (needs an IPv4 loopback --connect)
  --server-pid PID        read the server's CPU time (every thread: how it spread over
                          them, context switches) and, for idle, its memory and fds,
                          from /proc/PID
  --timeout-s T           give up (counted as an error) after T seconds (default 120)
  -h, --help              print this help
";

// ---- options ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Bulk,
    PingPong,
    Churn,
    Idle,
    Upload,
    Download,
    Restart,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Bulk => "bulk",
            Scenario::PingPong => "pingpong",
            Scenario::Churn => "churn",
            Scenario::Idle => "idle",
            Scenario::Upload => "upload",
            Scenario::Download => "download",
            Scenario::Restart => "restart",
        }
    }
}

struct Options {
    connect: SocketAddr,
    scenario: Scenario,
    connections: Option<usize>,
    bytes: u64,
    duration: Duration,
    size: usize,
    source_ips: u8,
    server_pid: Option<u32>,
    timeout: Duration,
    protocol: Protocol,
    pingpong: usize,
    stop_file: Option<PathBuf>,
}

fn parse() -> Result<Option<Options>, String> {
    use lexopt::prelude::*;
    let mut connect = None;
    let mut scenario = None;
    let mut o = Options {
        connect: "127.0.0.1:0".parse().unwrap(),
        scenario: Scenario::Bulk,
        connections: None,
        bytes: 256 << 20,
        duration: Duration::from_secs(5),
        size: 64,
        source_ips: 1,
        server_pid: None,
        timeout: Duration::from_secs(120),
        protocol: Protocol::Echo,
        pingpong: 100,
        stop_file: None,
    };
    let seconds = |v: f64| -> Result<Duration, String> {
        Duration::try_from_secs_f64(v).map_err(|e| format!("bad duration {v}: {e}"))
    };
    let mut args = lexopt::Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = args.next().map_err(e)? {
        match arg {
            Long("connect") => {
                connect = Some(
                    args.value()
                        .map_err(e)?
                        .parse::<SocketAddr>()
                        .map_err(|x| x.to_string())?,
                )
            }
            Long("scenario") => {
                let v = args.value().map_err(e)?.string().map_err(e)?;
                scenario = Some(match v.as_str() {
                    "bulk" => Scenario::Bulk,
                    "pingpong" => Scenario::PingPong,
                    "churn" => Scenario::Churn,
                    "idle" => Scenario::Idle,
                    "upload" => Scenario::Upload,
                    "download" => Scenario::Download,
                    "restart" => Scenario::Restart,
                    other => return Err(format!("unknown scenario {other:?}")),
                });
            }
            Long("connections") => {
                o.connections = Some(args.value().map_err(e)?.parse().map_err(e)?)
            }
            Long("bytes") => o.bytes = args.value().map_err(e)?.parse().map_err(e)?,
            Long("duration-s") => {
                o.duration = seconds(args.value().map_err(e)?.parse().map_err(e)?)?
            }
            Long("size") => o.size = args.value().map_err(e)?.parse().map_err(e)?,
            Long("source-ips") => o.source_ips = args.value().map_err(e)?.parse().map_err(e)?,
            Long("server-pid") => o.server_pid = Some(args.value().map_err(e)?.parse().map_err(e)?),
            Long("protocol") => {
                let v = args.value().map_err(e)?.string().map_err(e)?;
                o.protocol = match v.as_str() {
                    "echo" => Protocol::Echo,
                    "http" => Protocol::Http,
                    other => return Err(format!("unknown protocol {other:?}")),
                };
            }
            Long("pingpong") => o.pingpong = args.value().map_err(e)?.parse().map_err(e)?,
            Long("stop-file") => o.stop_file = Some(args.value().map_err(e)?.into()),
            Long("timeout-s") => o.timeout = seconds(args.value().map_err(e)?.parse().map_err(e)?)?,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    o.connect = connect.ok_or("--connect is required")?;
    o.scenario = scenario.ok_or("--scenario is required")?;
    if o.connections == Some(0) {
        return Err("--connections must be at least 1".into());
    }
    if o.size == 0 {
        return Err("--size must be at least 1".into());
    }
    if o.source_ips == 0 || o.source_ips == 255 {
        return Err("--source-ips must be 1..=254".into());
    }
    if o.source_ips > 1 && !matches!(o.connect, SocketAddr::V4(a) if a.ip().is_loopback()) {
        return Err("--source-ips needs an IPv4 loopback --connect address".into());
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let fd_limit = raise_fd_limit();
    let mut report = Report::new(o.scenario);
    let result = match o.scenario {
        Scenario::Bulk => bulk(&o, &mut report),
        Scenario::PingPong => pingpong(&o, &mut report),
        Scenario::Churn => churn(&o, &mut report),
        Scenario::Idle => idle(&o, fd_limit, &mut report),
        Scenario::Upload | Scenario::Download => oneway(&o, &mut report),
        Scenario::Restart => restart(&o, &mut report),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        report.errors += 1;
    }
    report.print();
    if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type BoxError = Box<dyn std::error::Error>;

// ---- the report ------------------------------------------------------------------------

/// The one JSON line, built by hand: keys in insertion order, `errors` last.
struct Report {
    fields: Vec<(&'static str, String)>,
    errors: u64,
}

impl Report {
    fn new(scenario: Scenario) -> Report {
        let mut r = Report {
            fields: Vec::new(),
            errors: 0,
        };
        r.str("scenario", scenario.name());
        r
    }
    fn str(&mut self, key: &'static str, v: &str) {
        // Only our own identifiers go here: no escaping needed beyond quotes.
        self.fields
            .push((key, format!("\"{}\"", v.replace('"', "'"))));
    }
    fn int(&mut self, key: &'static str, v: u64) {
        self.fields.push((key, v.to_string()));
    }
    fn num(&mut self, key: &'static str, v: f64) {
        let s = if v.is_finite() {
            format!("{v:.6}")
        } else {
            "null".into()
        };
        self.fields.push((key, s));
    }
    fn bool(&mut self, key: &'static str, v: bool) {
        self.fields.push((key, v.to_string()));
    }
    fn print(&self) {
        let mut line = String::from("{");
        for (k, v) in &self.fields {
            let _ = write!(line, "\"{k}\":{v},");
        }
        let _ = write!(line, "\"errors\":{}}}", self.errors);
        println!("{line}");
    }
}

/// CPU time of the server (from `/proc/PID/stat`), of this process and of the whole machine,
/// sampled at the start and end of the measured interval.
struct CpuMeter {
    pid: Option<u32>,
    server0: Option<u64>,
    machine0: Option<u64>,
    threads0: Option<Vec<ThreadSample>>,
    client0: f64,
    start: Instant,
}

struct CpuUsed {
    seconds: f64,
    server_cpu_s: Option<f64>,
    server_sched_s: Option<f64>,
    /// Per server thread over the interval: (on-CPU ns, voluntary context switches,
    /// involuntary ones).
    server_threads: Vec<(u64, u64, u64)>,
    client_cpu_s: f64,
    /// Every CPU's busy time: the server, this process, the upstream, and the kernel's work
    /// for them wherever it ran.
    machine_cpu_s: Option<f64>,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            server0: pid.and_then(cpu_ticks),
            machine0: machine_busy_ticks(),
            threads0: pid.and_then(thread_samples),
            client0: self_cpu_s(),
            start: Instant::now(),
        }
    }
    fn stop(&self) -> CpuUsed {
        let seconds = self.start.elapsed().as_secs_f64();
        let server_cpu_s = match (self.pid.and_then(cpu_ticks), self.server0) {
            (Some(b), Some(a)) => Some(b.saturating_sub(a) as f64 / clk_tck()),
            _ => None,
        };
        let (server_sched_s, server_threads) =
            match (self.pid.and_then(thread_samples), &self.threads0) {
                (Some(b), Some(a)) => {
                    // A thread that started meanwhile counts from zero; one that ended is
                    // missing from `b` (its time is lost; servers keep their threads).
                    let threads: Vec<(u64, u64, u64)> = b
                        .iter()
                        .map(|t| {
                            let before = a.iter().find(|s| s.tid == t.tid);
                            let d = |f: fn(&ThreadSample) -> u64| {
                                f(t) - before.map_or(0, |s| f(s).min(f(t)))
                            };
                            (d(|s| s.sched_ns), d(|s| s.voluntary), d(|s| s.involuntary))
                        })
                        .collect();
                    let ns: u64 = threads.iter().map(|t| t.0).sum();
                    (Some(ns as f64 / 1e9), threads)
                }
                _ => (None, Vec::new()),
            };
        CpuUsed {
            seconds,
            server_cpu_s,
            server_sched_s,
            server_threads,
            client_cpu_s: self_cpu_s() - self.client0,
            machine_cpu_s: match (machine_busy_ticks(), self.machine0) {
                (Some(b), Some(a)) => Some(b.saturating_sub(a) as f64 / clk_tck()),
                _ => None,
            },
        }
    }
}

impl CpuUsed {
    /// Adds `seconds`, `server_cpu_s` and `server_cpu_us_per_op` (per `ops` of `unit`), the
    /// same from schedstat (`server_sched_cpu_s`, `server_sched_us_per_op`), `client_cpu_s`,
    /// and the whole machine's (`machine_cpu_s`, `machine_cpu_us_per_op`).
    fn report(&self, r: &mut Report, ops: f64, unit: &str) {
        let per_op = |s: f64| if ops > 0.0 { s * 1e6 / ops } else { f64::NAN };
        let per_count = |n: u64| if ops > 0.0 { n as f64 / ops } else { f64::NAN };
        r.num("seconds", self.seconds);
        if let Some(s) = self.server_cpu_s {
            r.num("server_cpu_s", s);
            r.num("server_cpu_us_per_op", per_op(s));
            r.str("op", unit);
        }
        if let Some(s) = self.server_sched_s {
            r.num("server_sched_cpu_s", s);
            r.num("server_sched_us_per_op", per_op(s));
            // How the work spread over the server's threads (a group's reactors), and how
            // often they were switched out: voluntarily (sleeping in epoll_wait) or not
            // (preempted, e.g. by a sibling sharing the CPU).
            let total: u64 = self.server_threads.iter().map(|t| t.0).sum();
            let busiest = self.server_threads.iter().map(|t| t.0).max().unwrap_or(0);
            let busy = self
                .server_threads
                .iter()
                .filter(|t| total > 0 && t.0 * 20 >= total)
                .count();
            let switches: u64 = self.server_threads.iter().map(|t| t.1 + t.2).sum();
            let involuntary: u64 = self.server_threads.iter().map(|t| t.2).sum();
            r.int("server_threads_busy", busy as u64);
            r.num(
                "server_busiest_thread_share",
                if total > 0 {
                    busiest as f64 / total as f64
                } else {
                    f64::NAN
                },
            );
            r.int("server_ctx_switches", switches);
            r.num("server_ctx_switches_per_op", per_count(switches));
            r.int("server_ctx_switches_involuntary", involuntary);
            r.num(
                "server_ctx_switches_involuntary_per_op",
                per_count(involuntary),
            );
        }
        r.num("client_cpu_s", self.client_cpu_s);
        // Over loopback the kernel's receive path runs on the sender's CPU (softirq after
        // `loopback_xmit`, net/core/dev.c), so a server's own CPU includes part of its peers'
        // TCP work and theirs part of its: the machine's total is the sum nobody can shift.
        if let Some(s) = self.machine_cpu_s {
            r.num("machine_cpu_s", s);
            r.num("machine_cpu_us_per_op", per_op(s));
        }
    }
}

// ---- /proc and rlimits ------------------------------------------------------------------

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Busy time of every CPU together, in clock ticks: user, nice, system, irq and softirq of
/// the `cpu` line of `/proc/stat` (proc(5)); idle, iowait and steal are not busy.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// One thread of the server at one instant.
struct ThreadSample {
    tid: u64,
    /// On-CPU time in nanoseconds (first field of `/proc/PID/task/TID/schedstat`): the same
    /// quantity as utime + stime, without the 10 ms tick granularity.
    sched_ns: u64,
    /// Context switches (`/proc/PID/task/TID/status`): the thread blocked...
    voluntary: u64,
    /// ...or was preempted.
    involuntary: u64,
}

/// Every thread of `pid`; their `sched_ns` sum is the process's CPU time.
fn thread_samples(pid: u32) -> Option<Vec<ThreadSample>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        let sched_ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let count = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        threads.push(ThreadSample {
            tid,
            sched_ns,
            voluntary: count("voluntary_ctxt_switches:"),
            involuntary: count("nonvoluntary_ctxt_switches:"),
        });
    }
    Some(threads)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

// ---- shared helpers ---------------------------------------------------------------------

/// Per-connection state, indexed by the socket's slot (unique among live sockets).
struct Table<T>(Vec<Option<T>>);

impl<T> Table<T> {
    fn new() -> Self {
        Table(Vec::new())
    }
    fn insert(&mut self, id: SocketId, v: T) {
        let i = id.index();
        if i >= self.0.len() {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i] = Some(v);
    }
    fn get(&mut self, id: SocketId) -> Option<&mut T> {
        self.0.get_mut(id.index()).and_then(Option::as_mut)
    }
    fn remove(&mut self, id: SocketId) -> Option<T> {
        self.0.get_mut(id.index()).and_then(Option::take)
    }
}

/// Turns the reactor until `done` says so or `deadline` passes; returns whether `done`.
fn drive<H: Handler>(
    reactor: &mut Reactor,
    h: &mut H,
    deadline: Instant,
    mut done: impl FnMut(&mut Reactor, &mut H) -> bool,
) -> finwait::Result<bool> {
    loop {
        if done(reactor, h) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let wait = (deadline - now).min(Duration::from_millis(10));
        reactor.run_once(h, Some(wait))?;
    }
}

/// Period of the bulk pattern: a prime, so a shifted, dropped or repeated chunk of any
/// power-of-two size shows up as a mismatch.
const PERIOD: usize = 251;
/// Largest slice written or checked at once (the reactor's read buffer is 64 KiB).
const CHUNK: usize = 64 * 1024;

fn pattern() -> Vec<u8> {
    (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

// ---- bulk -------------------------------------------------------------------------------

struct BulkConn {
    sent: u64,
    received: u64,
    ended: bool,
}

struct Bulk {
    per_conn: u64,
    pattern: Vec<u8>,
    conns: Table<BulkConn>,
    closed: usize,
    received: u64,
    errors: u64,
}

impl Bulk {
    /// Writes until the queue is over the high-water mark (then `Drain` resumes) or all is
    /// written, then ends.
    fn pump(&mut self, cx: &mut Context, id: SocketId) {
        let Some(c) = self.conns.get(id) else { return };
        while c.sent < self.per_conn {
            let off = (c.sent % PERIOD as u64) as usize;
            let len = (self.per_conn - c.sent).min(CHUNK as u64) as usize;
            match cx.write(id, &self.pattern[off..off + len]) {
                Ok(below) => {
                    c.sent += len as u64;
                    if !below {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("loadgen: bulk {id}: write: {e}");
                    self.errors += 1;
                    let _ = cx.destroy(id);
                    return;
                }
            }
        }
        if c.sent == self.per_conn && !c.ended {
            c.ended = true;
            if let Err(e) = cx.end(id) {
                eprintln!("loadgen: bulk {id}: end: {e}");
                self.errors += 1;
            }
        }
    }
}

impl Handler for Bulk {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect | Event::Drain => self.pump(cx, id),
            Event::Data(bytes) => {
                let Some(c) = self.conns.get(id) else { return };
                let off = (c.received % PERIOD as u64) as usize;
                let ok = c.received + bytes.len() as u64 <= self.per_conn
                    && bytes.len() <= CHUNK
                    && bytes == &self.pattern[off..off + bytes.len()];
                c.received += bytes.len() as u64;
                self.received += bytes.len() as u64;
                if !ok {
                    eprintln!(
                        "loadgen: bulk {id}: echo mismatch near byte {}",
                        c.received - bytes.len() as u64
                    );
                    self.errors += 1;
                    let _ = cx.destroy(id);
                }
            }
            Event::Error(e) => {
                eprintln!("loadgen: bulk {id}: {e}");
                self.errors += 1;
            }
            Event::Close(info) => {
                self.closed += 1;
                if let Some(c) = self.conns.remove(id)
                    && (info.reason != CloseReason::Graceful || c.received != self.per_conn)
                {
                    eprintln!(
                        "loadgen: bulk {id}: closed {:?} after {} of {} bytes echoed",
                        info.reason, c.received, self.per_conn
                    );
                    self.errors += 1;
                }
            }
            _ => {}
        }
    }
}

fn bulk(o: &Options, r: &mut Report) -> Result<(), BoxError> {
    let c = o.connections.unwrap_or(4);
    let per_conn = o.bytes / c as u64;
    r.int("connections", c as u64);
    r.int("bytes", per_conn * c as u64);
    let mut reactor = Reactor::new()?;
    let mut h = Bulk {
        per_conn,
        pattern: pattern(),
        conns: Table::new(),
        closed: 0,
        received: 0,
        errors: 0,
    };
    let meter = CpuMeter::start(o.server_pid);
    for _ in 0..c {
        let id = reactor.connect(o.connect, ConnectOptions::new())?;
        h.conns.insert(
            id,
            BulkConn {
                sent: 0,
                received: 0,
                ended: false,
            },
        );
    }
    let deadline = Instant::now() + o.timeout;
    let finished = drive(&mut reactor, &mut h, deadline, |_, h| h.closed == c)?;
    let used = meter.stop();
    if !finished {
        eprintln!("loadgen: bulk: timed out with {} of {c} closed", h.closed);
        h.errors += 1;
    }
    let g = gib(h.received);
    used.report(r, g, "GiB");
    r.num("gib_per_s", g / used.seconds);
    r.errors += h.errors;
    Ok(())
}

// ---- latency histogram ------------------------------------------------------------------

/// Round-trip times in nanoseconds: an HdrHistogram (the `hdrhistogram` crate) with 3
/// significant digits (≤ 0.1 % error) from 1 ns to an hour, a longer sample counting as an
/// hour. Allocated once; recording a sample allocates nothing.
struct Histogram(hdrhistogram::Histogram<u64>);

impl Histogram {
    fn new() -> Self {
        const HOUR_NS: u64 = 3600 * 1_000_000_000;
        Histogram(hdrhistogram::Histogram::new_with_bounds(1, HOUR_NS, 3).expect("valid bounds"))
    }
    fn record(&mut self, d: Duration) {
        self.0
            .saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    /// The `q` quantile in microseconds (NaN without samples).
    fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

// ---- pingpong ---------------------------------------------------------------------------

struct PingConn {
    request: Vec<u8>,
    seq: u64,
    got: usize,
    sent_at: Instant,
}

struct PingPong {
    want: usize,
    ids: Vec<SocketId>,
    conns: Table<PingConn>,
    /// Set when the duration is over: no new request, each connection ends after its reply.
    stopping: bool,
    msgs: u64,
    hist: Histogram,
    closed: usize,
    errors: u64,
}

impl PingPong {
    fn send(&mut self, cx: &mut Context, id: SocketId) {
        let Some(c) = self.conns.get(id) else { return };
        c.seq += 1;
        let k = c.request.len().min(8);
        let seq = c.seq.to_le_bytes();
        c.request[..k].copy_from_slice(&seq[..k]);
        c.got = 0;
        c.sent_at = Instant::now();
        if let Err(e) = cx.write(id, &c.request) {
            eprintln!("loadgen: pingpong {id}: write: {e}");
            self.errors += 1;
            let _ = cx.destroy(id);
        }
    }
}

impl Handler for PingPong {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect => self.ids.push(id),
            Event::Data(bytes) => {
                let now = Instant::now();
                let Some(c) = self.conns.get(id) else { return };
                let end = c.got + bytes.len();
                if end > c.request.len() || bytes != &c.request[c.got..end] {
                    eprintln!("loadgen: pingpong {id}: reply mismatch");
                    self.errors += 1;
                    let _ = cx.destroy(id);
                    return;
                }
                c.got = end;
                if c.got < c.request.len() {
                    return;
                }
                if self.stopping {
                    let _ = cx.end(id);
                    return;
                }
                self.msgs += 1;
                self.hist.record(now - c.sent_at);
                self.send(cx, id);
            }
            Event::Error(e) => {
                eprintln!("loadgen: pingpong {id}: {e}");
                self.errors += 1;
            }
            Event::Close(info) => {
                self.closed += 1;
                self.conns.remove(id);
                if info.reason != CloseReason::Graceful || !self.stopping {
                    eprintln!("loadgen: pingpong {id}: closed early: {:?}", info.reason);
                    self.errors += 1;
                }
            }
            _ => {}
        }
    }
}

fn pingpong(o: &Options, r: &mut Report) -> Result<(), BoxError> {
    let c = o.connections.unwrap_or(50);
    r.int("connections", c as u64);
    r.int("size", o.size as u64);
    let mut reactor = Reactor::new()?;
    let mut h = PingPong {
        want: c,
        ids: Vec::with_capacity(c),
        conns: Table::new(),
        stopping: false,
        msgs: 0,
        hist: Histogram::new(),
        closed: 0,
        errors: 0,
    };
    for i in 0..c {
        let id = reactor.connect(o.connect, ConnectOptions::new())?;
        let mut request: Vec<u8> = (0..o.size).map(|b| (b * 31 + i) as u8).collect();
        request.truncate(o.size);
        h.conns.insert(
            id,
            PingConn {
                request,
                seq: 0,
                got: 0,
                sent_at: Instant::now(),
            },
        );
    }
    // Every connection opens first; the measured interval starts with the first requests.
    let start_by = Instant::now() + o.timeout.min(Duration::from_secs(30));
    if !drive(&mut reactor, &mut h, start_by, |_, h| {
        h.ids.len() == h.want || h.closed > 0
    })? || h.closed > 0
    {
        r.errors += h.errors;
        return Err(format!("pingpong: {} of {c} connections opened", h.ids.len()).into());
    }
    let meter = CpuMeter::start(o.server_pid);
    for id in std::mem::take(&mut h.ids) {
        h.send(reactor.context_mut(), id);
    }
    let stop_at = Instant::now() + o.duration;
    drive(&mut reactor, &mut h, stop_at, |_, h| h.closed > 0)?;
    let used = meter.stop();
    h.stopping = true;
    let msgs = h.msgs;
    let grace = Instant::now() + Duration::from_secs(10);
    if !drive(&mut reactor, &mut h, grace, |_, h| h.closed == c)? {
        eprintln!("loadgen: pingpong: only {} of {c} closed in time", h.closed);
        h.errors += 1;
    }
    r.int("msgs", msgs);
    used.report(r, msgs as f64, "msg");
    r.num("msg_per_s", msgs as f64 / used.seconds);
    r.num("p50_us", h.hist.quantile_us(0.50));
    r.num("p99_us", h.hist.quantile_us(0.99));
    r.errors += h.errors;
    Ok(())
}

// ---- churn ------------------------------------------------------------------------------

struct Churn {
    addr: SocketAddr,
    /// Loopback source addresses to rotate over (1: let the kernel pick).
    source_ips: u8,
    next_source: u8,
    message: Vec<u8>,
    got: Table<usize>,
    active: usize,
    stopping: bool,
    completed: u64,
    errors: u64,
}

impl Churn {
    fn start(&mut self, cx: &mut Context) {
        let mut options = ConnectOptions::new();
        if self.source_ips > 1 {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 1 + self.next_source);
            self.next_source = (self.next_source + 1) % self.source_ips;
            options = options.local_addr(Some(SocketAddr::from((ip, 0))));
        }
        match cx.connect(self.addr, options) {
            Ok(id) => {
                self.got.insert(id, 0);
                self.active += 1;
            }
            Err(e) => {
                eprintln!("loadgen: churn: connect: {e}");
                self.errors += 1;
            }
        }
    }
}

impl Handler for Churn {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect => {
                if let Err(e) = cx.end_with(id, &self.message) {
                    eprintln!("loadgen: churn {id}: write: {e}");
                    self.errors += 1;
                    let _ = cx.destroy(id);
                }
            }
            Event::Data(bytes) => {
                let Some(got) = self.got.get(id) else { return };
                let end = *got + bytes.len();
                if end > self.message.len() || bytes != &self.message[*got..end] {
                    eprintln!("loadgen: churn {id}: echo mismatch");
                    self.errors += 1;
                    let _ = cx.destroy(id);
                    return;
                }
                *got = end;
            }
            Event::Error(e) => {
                eprintln!("loadgen: churn {id}: {e}");
                self.errors += 1;
            }
            Event::Close(info) => {
                self.active -= 1;
                let got = self.got.remove(id).unwrap_or(0);
                if info.reason == CloseReason::Graceful && got == self.message.len() {
                    if !self.stopping {
                        self.completed += 1;
                    }
                } else {
                    eprintln!(
                        "loadgen: churn {id}: closed {:?} after {got} bytes echoed",
                        info.reason
                    );
                    self.errors += 1;
                }
                if !self.stopping {
                    self.start(cx);
                }
            }
            _ => {}
        }
    }
}

fn churn(o: &Options, r: &mut Report) -> Result<(), BoxError> {
    let k = o.connections.unwrap_or(50);
    r.int("workers", k as u64);
    let mut reactor = Reactor::new()?;
    let mut h = Churn {
        addr: o.connect,
        source_ips: o.source_ips,
        next_source: 0,
        message: (0..o.size).map(|b| (b * 7 + 1) as u8).collect(),
        got: Table::new(),
        active: 0,
        stopping: false,
        completed: 0,
        errors: 0,
    };
    let meter = CpuMeter::start(o.server_pid);
    for _ in 0..k {
        h.start(reactor.context_mut());
    }
    let stop_at = Instant::now() + o.duration;
    drive(&mut reactor, &mut h, stop_at, |_, h| h.active == 0)?;
    let used = meter.stop();
    h.stopping = true;
    let completed = h.completed;
    let grace = Instant::now() + Duration::from_secs(10);
    if !drive(&mut reactor, &mut h, grace, |_, h| h.active == 0)? {
        eprintln!("loadgen: churn: {} connections still open", h.active);
        h.errors += 1;
    }
    r.int("connections", completed);
    used.report(r, completed as f64, "connection");
    r.num("conns_per_s", completed as f64 / used.seconds);
    r.errors += h.errors;
    Ok(())
}

// ---- idle -------------------------------------------------------------------------------

struct Idle {
    open: usize,
    closed: usize,
    errors: u64,
    ids: Vec<SocketId>,
}

impl Handler for Idle {
    fn on_event(&mut self, _cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect => {
                self.open += 1;
                self.ids.push(id);
            }
            Event::Data(_) => {
                eprintln!("loadgen: idle {id}: unexpected data");
                self.errors += 1;
            }
            Event::Error(e) => {
                eprintln!("loadgen: idle {id}: {e}");
                self.errors += 1;
            }
            Event::Close(info) => {
                self.closed += 1;
                if info.reason != CloseReason::Graceful {
                    eprintln!("loadgen: idle {id}: closed {:?}", info.reason);
                    self.errors += 1;
                }
            }
            _ => {}
        }
    }
}

/// Connections allowed in `Connecting` at once: below any listener's backlog (std and mio
/// use 128), so no SYN or handshake ACK is dropped (a drop costs a one-second retransmit).
const CONNECT_WINDOW: usize = 100;

/// Polls `pred` every 10 ms for at most `limit`.
fn wait_for(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `pid`'s fd count has not changed for 100 ms (at most 5 s). A proxy holds two
/// or more fds per connection, so its count passes baseline + N while it still accepts.
fn settle_fds(pid: u32) {
    let until = Instant::now() + Duration::from_secs(5);
    let mut last = fd_count(pid);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count(pid);
        if now == last || Instant::now() >= until {
            return;
        }
        last = now;
    }
}

fn idle(o: &Options, fd_limit: u64, r: &mut Report) -> Result<(), BoxError> {
    let n = o.connections.unwrap_or(10_000);
    r.int("connections", n as u64);
    if n as u64 + 64 > fd_limit {
        return Err(
            format!("--connections {n} exceeds RLIMIT_NOFILE ({fd_limit}) minus 64").into(),
        );
    }
    let pid = o.server_pid;
    let rss0 = pid.and_then(rss_kib);
    let fds0 = pid.and_then(fd_count);
    let mut reactor = Reactor::new()?;
    let mut h = Idle {
        open: 0,
        closed: 0,
        errors: 0,
        ids: Vec::with_capacity(n),
    };
    let meter = CpuMeter::start(pid);
    let mut launched = 0;
    let deadline = Instant::now() + o.timeout;
    let all_open = drive(&mut reactor, &mut h, deadline, |reactor, h| {
        while launched < n && launched.saturating_sub(h.open + h.closed) < CONNECT_WINDOW {
            if let Err(e) = reactor.connect(o.connect, ConnectOptions::new()) {
                eprintln!("loadgen: idle: connect: {e}");
                h.errors += 1;
            }
            launched += 1;
        }
        h.open == n || h.errors > 0
    })?;
    let established = meter.start.elapsed().as_secs_f64();
    r.num("establish_s", established);
    if !all_open || h.errors > 0 {
        eprintln!("loadgen: idle: {} of {n} connections opened", h.open);
        h.errors += 1;
    }
    if let (Some(pid), Some(fds0), Some(rss0)) = (pid, fds0, rss0) {
        // Connected on our side does not mean accepted on the server's.
        if !wait_for(Duration::from_secs(5), || {
            fd_count(pid).is_some_and(|f| f >= fds0 + h.open)
        }) {
            eprintln!("loadgen: idle: the server did not accept all connections in 5 s");
            h.errors += 1;
        }
        settle_fds(pid);
        let rss1 = rss_kib(pid).unwrap_or(rss0);
        r.int("server_rss_kib_before", rss0);
        r.int("server_rss_kib_after", rss1);
        r.num(
            "server_bytes_per_conn",
            (rss1 as f64 - rss0 as f64) * 1024.0 / h.open.max(1) as f64,
        );
    }
    for id in std::mem::take(&mut h.ids) {
        if let Err(e) = reactor.context_mut().end(id) {
            eprintln!("loadgen: idle {id}: end: {e}");
            h.errors += 1;
        }
    }
    let grace = Instant::now() + Duration::from_secs(10);
    let opened = h.open;
    if !drive(&mut reactor, &mut h, grace, |_, h| h.closed >= opened)? {
        eprintln!("loadgen: idle: only {} of {opened} closed", h.closed);
        h.errors += 1;
    }
    let used = meter.stop();
    used.report(r, opened as f64, "connection");
    if let (Some(pid), Some(fds0)) = (pid, fds0) {
        let back = wait_for(Duration::from_secs(5), || {
            fd_count(pid).is_some_and(|f| f <= fds0)
        });
        r.int("server_fds_baseline", fds0 as u64);
        r.int("server_fds_after", fd_count(pid).unwrap_or(0) as u64);
        r.bool("fds_back_to_baseline", back);
        if !back {
            h.errors += 1;
        }
    }
    r.errors += h.errors;
    Ok(())
}

// ---- one way: upload, download ----------------------------------------------------------

struct OneWayConn {
    sent: u64,
    received: u64,
    ended: bool,
    /// upload: the sink's answer (a decimal count and a newline).
    reply: Vec<u8>,
}

/// `upload` streams the pattern to a sink (the sink checks it and answers with the count
/// that matched); `download` reads the pattern from a source to its FIN and checks it here.
struct OneWay {
    upload: bool,
    per_conn: u64,
    pattern: Vec<u8>,
    conns: Table<OneWayConn>,
    closed: usize,
    /// Bytes checked: counted by the sink (upload) or matched here (download).
    checked: u64,
    errors: u64,
}

impl OneWay {
    /// Writes until the queue is over the high-water mark (then `Drain` resumes) or all is
    /// written, then ends.
    fn pump(&mut self, cx: &mut Context, id: SocketId) {
        let Some(c) = self.conns.get(id) else { return };
        while c.sent < self.per_conn {
            let off = (c.sent % PERIOD as u64) as usize;
            let len = (self.per_conn - c.sent).min(CHUNK as u64) as usize;
            match cx.write(id, &self.pattern[off..off + len]) {
                Ok(below) => {
                    c.sent += len as u64;
                    if !below {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("loadgen: upload {id}: write: {e}");
                    self.errors += 1;
                    let _ = cx.destroy(id);
                    return;
                }
            }
        }
        if c.sent == self.per_conn && !c.ended {
            c.ended = true;
            if let Err(e) = cx.end(id) {
                eprintln!("loadgen: upload {id}: end: {e}");
                self.errors += 1;
            }
        }
    }
}

impl Handler for OneWay {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect | Event::Drain if self.upload => self.pump(cx, id),
            Event::Data(bytes) => {
                let Some(c) = self.conns.get(id) else { return };
                let ok = if self.upload {
                    c.reply.extend_from_slice(bytes);
                    c.reply.len() <= 32
                } else {
                    let off = (c.received % PERIOD as u64) as usize;
                    let ok = c.received + bytes.len() as u64 <= self.per_conn
                        && bytes.len() <= CHUNK
                        && bytes == &self.pattern[off..off + bytes.len()];
                    c.received += bytes.len() as u64;
                    ok
                };
                if !ok {
                    eprintln!("loadgen: oneway {id}: unexpected bytes from the server");
                    self.errors += 1;
                    let _ = cx.destroy(id);
                }
            }
            Event::Error(e) => {
                eprintln!("loadgen: oneway {id}: {e}");
                self.errors += 1;
            }
            Event::Close(info) => {
                self.closed += 1;
                let Some(c) = self.conns.remove(id) else {
                    return;
                };
                let got = if self.upload {
                    std::str::from_utf8(&c.reply)
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                } else {
                    Some(c.received)
                };
                if info.reason == CloseReason::Graceful && got == Some(self.per_conn) {
                    self.checked += self.per_conn;
                } else {
                    eprintln!(
                        "loadgen: oneway {id}: closed {:?} with {got:?} of {} bytes checked",
                        info.reason, self.per_conn
                    );
                    self.errors += 1;
                }
            }
            _ => {}
        }
    }
}

fn oneway(o: &Options, r: &mut Report) -> Result<(), BoxError> {
    let c = o.connections.unwrap_or(4);
    let per_conn = o.bytes / c as u64;
    r.int("connections", c as u64);
    r.int("bytes", per_conn * c as u64);
    let mut reactor = Reactor::new()?;
    let mut h = OneWay {
        upload: o.scenario == Scenario::Upload,
        per_conn,
        pattern: pattern(),
        conns: Table::new(),
        closed: 0,
        checked: 0,
        errors: 0,
    };
    let meter = CpuMeter::start(o.server_pid);
    for _ in 0..c {
        let id = reactor.connect(o.connect, ConnectOptions::new())?;
        let conn = OneWayConn {
            sent: 0,
            received: 0,
            ended: false,
            reply: Vec::new(),
        };
        h.conns.insert(id, conn);
    }
    let deadline = Instant::now() + o.timeout;
    let finished = drive(&mut reactor, &mut h, deadline, |_, h| h.closed == c)?;
    let used = meter.stop();
    if !finished {
        eprintln!("loadgen: oneway: timed out with {} of {c} closed", h.closed);
        h.errors += 1;
    }
    let g = gib(h.checked);
    used.report(r, g, "GiB");
    r.num("gib_per_s", g / used.seconds);
    r.errors += h.errors;
    Ok(())
}

// ---- restart ----------------------------------------------------------------------------

/// The http example's answer to a keep-alive `GET`, byte for byte.
const HTTP_HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n\
Hello, World!\n";
/// Its answer when the connection ends after it (`Connection: close` asked for, or the last
/// answer of a server that is shutting down or handed over).
const HTTP_HELLO_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
Content-Length: 14\r\nConnection: close\r\n\r\nHello, World!\n";

/// A connection without progress for this long counts as timed out.
const RESTART_STALL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Echo,
    Http,
}

/// What one `restart` connection is doing.
struct RestartConn {
    /// A churn connection (one exchange, then close) or a pingpong one (exchanges in turn).
    churn: bool,
    /// The current request (echo: also the expected reply).
    request: Vec<u8>,
    /// The reply so far.
    reply: Vec<u8>,
    /// A request is out and its reply not complete.
    outstanding: bool,
    /// The reply was `Connection: close` (http): the server's FIN comes next.
    last: bool,
    /// The server's FIN came.
    ended: bool,
    /// An error was counted for this connection already.
    failed: bool,
    sent_at: Instant,
}

/// Errors by kind (the `restart` scenario's report).
#[derive(Default)]
struct Failures {
    refused: u64,
    reset: u64,
    /// A reply cut short by the server's FIN (`short_empty` of them: nothing of it came).
    short: u64,
    short_empty: u64,
    corrupt: u64,
    timeout: u64,
    other: u64,
}

impl Failures {
    fn total(&self) -> u64 {
        self.refused + self.reset + self.short + self.corrupt + self.timeout + self.other
    }
}

struct Restart {
    protocol: Protocol,
    addr: SocketAddr,
    source_ips: u8,
    next_source: u8,
    size: usize,
    conns: Table<RestartConn>,
    /// Pingpong connections whose reply is complete: their next request goes out after this
    /// turn's events, unless the server's FIN came meanwhile (then a new connection).
    ready: Vec<SocketId>,
    churn_open: usize,
    ping_open: usize,
    stopping: bool,
    seq: u64,
    churn_done: u64,
    ping_msgs: u64,
    /// Pingpong connections the server ended between requests (replaced by new ones).
    ping_closed: u64,
    /// Of those, with a request out and nothing of its reply (the close of a persistent
    /// connection racing the next request; retried on the new connection).
    closed_before_reply: u64,
    hist: Histogram,
    fail: Failures,
    /// The first failures, for stderr.
    logged: u32,
}

impl Restart {
    fn request(&mut self, churn: bool) -> Vec<u8> {
        self.seq += 1;
        match self.protocol {
            Protocol::Echo => {
                let mut r =
                    format!("{} {:016x} ", if churn { 'c' } else { 'p' }, self.seq).into_bytes();
                r.resize(self.size.max(r.len() + 1), b'.');
                *r.last_mut().unwrap() = b'\n';
                r
            }
            Protocol::Http if churn => format!(
                "GET /c{} HTTP/1.1\r\nHost: loadgen\r\nConnection: close\r\n\r\n",
                self.seq
            )
            .into_bytes(),
            Protocol::Http => {
                format!("GET /p{} HTTP/1.1\r\nHost: loadgen\r\n\r\n", self.seq).into_bytes()
            }
        }
    }

    /// Opens a new connection of the given kind.
    fn open(&mut self, cx: &mut Context, churn: bool) {
        let mut options = ConnectOptions::new().connect_timeout(Some(RESTART_STALL));
        if churn && self.source_ips > 1 {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 1 + self.next_source);
            self.next_source = (self.next_source + 1) % self.source_ips;
            options = options.local_addr(Some(SocketAddr::from((ip, 0))));
        }
        match cx.connect(self.addr, options) {
            Ok(id) => {
                let conn = RestartConn {
                    churn,
                    request: Vec::new(),
                    reply: Vec::new(),
                    outstanding: false,
                    last: false,
                    ended: false,
                    failed: false,
                    sent_at: Instant::now(),
                };
                self.conns.insert(id, conn);
                if churn {
                    self.churn_open += 1;
                } else {
                    self.ping_open += 1;
                }
            }
            Err(e) => self.failed(None, "connect", &e.to_string(), e.io_kind()),
        }
    }

    /// Counts one failure by its kind (from an I/O error kind, or named).
    fn failed(&mut self, id: Option<SocketId>, what: &str, why: &str, kind: Option<ErrorKind>) {
        let name = match kind {
            Some(ErrorKind::ConnectionRefused) => {
                self.fail.refused += 1;
                "refused"
            }
            Some(ErrorKind::ConnectionReset)
            | Some(ErrorKind::ConnectionAborted)
            | Some(ErrorKind::BrokenPipe) => {
                self.fail.reset += 1;
                "reset"
            }
            Some(ErrorKind::TimedOut) => {
                self.fail.timeout += 1;
                "timeout"
            }
            _ => {
                self.fail.other += 1;
                "other"
            }
        };
        self.log(id, &format!("{what}: {name}: {why}"));
    }

    fn log(&mut self, id: Option<SocketId>, text: &str) {
        if self.logged < 20 {
            self.logged += 1;
            match id {
                Some(id) => eprintln!("loadgen: restart {id}: {text}"),
                None => eprintln!("loadgen: restart: {text}"),
            }
        }
    }

    /// Sends the next request on a connection (pingpong) or its only one, then FIN (churn).
    fn send(&mut self, cx: &mut Context, id: SocketId) {
        let Some(c) = self.conns.get(id) else { return };
        let churn = c.churn;
        let request = self.request(churn);
        let Some(c) = self.conns.get(id) else { return };
        c.request = request;
        c.reply.clear();
        c.outstanding = true;
        c.sent_at = Instant::now();
        let sent = if churn {
            cx.end_with(id, &c.request)
        } else {
            cx.write(id, &c.request).map(drop)
        };
        if let Err(e) = sent {
            c.failed = true;
            self.failed(Some(id), "write", &e.to_string(), e.io_kind());
            let _ = cx.destroy(id);
        }
    }

    /// The reply `c` has so far: complete (and whether it is a last one), still a prefix of
    /// what may come, or wrong.
    fn check(protocol: Protocol, c: &RestartConn) -> Result<Option<bool>, ()> {
        let echo = [(&c.request[..], false)];
        let candidates: &[(&[u8], bool)] = match (protocol, c.churn) {
            (Protocol::Echo, _) => &echo,
            (Protocol::Http, true) => &[(HTTP_HELLO_CLOSE, true)],
            (Protocol::Http, false) => &[(HTTP_HELLO, false), (HTTP_HELLO_CLOSE, true)],
        };
        let mut prefix = false;
        for &(expected, last) in candidates {
            if c.reply == expected {
                return Ok(Some(last));
            }
            prefix |= expected.starts_with(&c.reply);
        }
        if prefix { Ok(None) } else { Err(()) }
    }

    /// After each turn: the pingpong connections with a complete reply send their next
    /// request, unless the server ended them (then they close, and a new one replaces
    /// them) or the run is over.
    fn after_turn(&mut self, cx: &mut Context) {
        for id in std::mem::take(&mut self.ready) {
            let Some(c) = self.conns.get(id) else {
                continue;
            };
            if c.ended || c.last || c.failed {
                continue;
            }
            if self.stopping {
                let _ = cx.end(id);
            } else {
                self.send(cx, id);
            }
        }
    }
}

impl Handler for Restart {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect => {
                let _ = cx.set_timeout(id, Some(RESTART_STALL));
                if self.stopping && self.conns.get(id).is_some_and(|c| !c.churn) {
                    let _ = cx.end(id);
                } else {
                    self.send(cx, id);
                }
            }
            Event::Data(bytes) => {
                let protocol = self.protocol;
                let Some(c) = self.conns.get(id) else { return };
                if !c.outstanding {
                    c.failed = true;
                    self.fail.corrupt += 1;
                    self.log(Some(id), "corrupt: bytes nobody asked for");
                    let _ = cx.destroy(id);
                    return;
                }
                c.reply.extend_from_slice(bytes);
                match Restart::check(protocol, c) {
                    Err(()) => {
                        c.failed = true;
                        let text = format!(
                            "corrupt: {:?} for {:?}",
                            String::from_utf8_lossy(&c.reply),
                            String::from_utf8_lossy(&c.request)
                        );
                        self.fail.corrupt += 1;
                        self.log(Some(id), &text);
                        let _ = cx.destroy(id);
                    }
                    Ok(None) => {}
                    Ok(Some(last)) => {
                        c.outstanding = false;
                        c.last = last;
                        if !c.churn {
                            let rtt = c.sent_at.elapsed();
                            self.ping_msgs += 1;
                            self.hist.record(rtt);
                            self.ready.push(id);
                        }
                    }
                }
            }
            Event::End => {
                if let Some(c) = self.conns.get(id) {
                    c.ended = true;
                }
            }
            Event::Timeout => {
                if let Some(c) = self.conns.get(id) {
                    c.failed = true;
                }
                self.fail.timeout += 1;
                self.log(Some(id), "timeout: no progress");
                let _ = cx.destroy(id);
            }
            Event::Error(e) => {
                if let Some(c) = self.conns.get(id) {
                    if c.failed {
                        return;
                    }
                    c.failed = true;
                }
                self.failed(Some(id), "error", &e.to_string(), e.io_kind());
            }
            Event::Close(info) => {
                let Some(c) = self.conns.remove(id) else {
                    return;
                };
                if c.churn {
                    self.churn_open -= 1;
                } else {
                    self.ping_open -= 1;
                }
                if !c.failed {
                    match info.reason {
                        CloseReason::Graceful if c.outstanding && c.churn => {
                            self.fail.short += 1;
                            if c.reply.is_empty() {
                                self.fail.short_empty += 1;
                            }
                            let text =
                                format!("short: FIN after {} bytes of the reply", c.reply.len());
                            self.log(Some(id), &text);
                        }
                        CloseReason::Graceful if c.outstanding && !c.reply.is_empty() => {
                            self.fail.short += 1;
                            let text = format!(
                                "short: FIN after {} bytes of a pingpong reply",
                                c.reply.len()
                            );
                            self.log(Some(id), &text);
                        }
                        CloseReason::Graceful => {
                            if c.churn {
                                if !self.stopping {
                                    self.churn_done += 1;
                                }
                            } else if !self.stopping {
                                self.ping_closed += 1;
                                if c.outstanding {
                                    self.closed_before_reply += 1;
                                }
                            }
                        }
                        CloseReason::PeerReset => {
                            self.fail.reset += 1;
                            self.log(Some(id), "reset by the server");
                        }
                        other => {
                            self.fail.other += 1;
                            self.log(Some(id), &format!("closed {other:?}"));
                        }
                    }
                }
                if !self.stopping {
                    self.open(cx, c.churn);
                }
            }
            _ => {}
        }
    }
}

/// Churn and pingpong at once against a server that is being restarted: `--connections`
/// churn workers (connect, one request, FIN, the reply, the server's FIN) and `--pingpong`
/// persistent connections (one request at a time), in `--protocol` echo or http, until
/// `--stop-file` exists (or `--duration-s`). A connection the server ends is replaced; a
/// persistent one it ends between requests is not an error (a request of it that got
/// nothing before the FIN is counted apart and retried on the new connection). Errors by
/// kind: refused, reset, short (a reply cut by a FIN), corrupt, timeout, other.
fn restart(o: &Options, r: &mut Report) -> Result<(), BoxError> {
    let workers = o.connections.unwrap_or(50);
    let protocol = o.protocol;
    r.str(
        "protocol",
        match protocol {
            Protocol::Echo => "echo",
            Protocol::Http => "http",
        },
    );
    r.int("churn_workers", workers as u64);
    r.int("pingpong_connections", o.pingpong as u64);
    let mut reactor = Reactor::new()?;
    let mut h = Restart {
        protocol,
        addr: o.connect,
        source_ips: o.source_ips,
        next_source: 0,
        size: o.size,
        conns: Table::new(),
        ready: Vec::new(),
        churn_open: 0,
        ping_open: 0,
        stopping: false,
        seq: 0,
        churn_done: 0,
        ping_msgs: 0,
        ping_closed: 0,
        closed_before_reply: 0,
        hist: Histogram::new(),
        fail: Failures::default(),
        logged: 0,
    };
    let start = Instant::now();
    for _ in 0..o.pingpong {
        h.open(reactor.context_mut(), false);
    }
    for _ in 0..workers {
        h.open(reactor.context_mut(), true);
    }
    let stop_at = start + o.duration;
    let mut checked = Instant::now();
    loop {
        reactor.run_once(&mut h, Some(Duration::from_millis(10)))?;
        h.after_turn(reactor.context_mut());
        let now = Instant::now();
        if now.duration_since(checked) >= Duration::from_millis(20) {
            checked = now;
            let stop = match &o.stop_file {
                Some(f) => f.exists(),
                None => now >= stop_at,
            };
            if stop {
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    h.stopping = true;
    let (churn_done, ping_msgs) = (h.churn_done, h.ping_msgs);
    let grace = Instant::now() + Duration::from_secs(15);
    while h.churn_open + h.ping_open > 0 && Instant::now() < grace {
        reactor.run_once(&mut h, Some(Duration::from_millis(10)))?;
        h.after_turn(reactor.context_mut());
    }
    if h.churn_open + h.ping_open > 0 {
        let open = h.churn_open + h.ping_open;
        h.fail.timeout += open as u64;
        eprintln!("loadgen: restart: {open} connections still open at the end");
    }
    r.num("seconds", seconds);
    r.int("churn_connections", churn_done);
    r.num("conns_per_s", churn_done as f64 / seconds);
    r.int("pingpong_msgs", ping_msgs);
    r.num("msgs_per_s", ping_msgs as f64 / seconds);
    r.num("p50_us", h.hist.quantile_us(0.50));
    r.num("p99_us", h.hist.quantile_us(0.99));
    r.num("max_us", h.hist.quantile_us(1.0));
    r.int("pingpong_closed_by_server", h.ping_closed);
    r.int("closed_before_reply", h.closed_before_reply);
    r.int("refused", h.fail.refused);
    r.int("reset", h.fail.reset);
    r.int("short", h.fail.short);
    r.int("short_empty", h.fail.short_empty);
    r.int("corrupt", h.fail.corrupt);
    r.int("timeout", h.fail.timeout);
    r.int("other", h.fail.other);
    r.errors += h.fail.total();
    Ok(())
}
