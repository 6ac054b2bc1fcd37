//! Macro benchmark: finwait's `echo` example against a raw-mio echo (`mio_echo`) and a tokio
//! echo (`tokio_echo`), driven by `loadgen` (written on finwait's client API).
//!
//! ```text
//! cargo build --release --workspace --examples && cargo bench -p finwait-bench --bench macro_echo
//! ```
//!
//! For every scenario and every server: a fresh server pinned to one CPU, loadgen pinned to
//! another, one JSON line collected; then a markdown table on stdout and a check of the
//! targets. Progress and the raw JSON lines go to stderr. See BENCHMARKS.md.
//!
//! Environment (all optional):
//! - `FINWAIT_BENCH_SECONDS` — pingpong/churn duration (default 3)
//! - `FINWAIT_BENCH_REPEAT` — rounds per scenario (default 1); each round runs every server in
//!   turn (each round starting with the next server), and the table shows each metric's
//!   median over the rounds (errors summed, fd checks
//!   all required), so a burst of machine noise hits one round of all servers alike
//! - `FINWAIT_BENCH_BULK_BYTES` — bulk total bytes (default 1073741824)
//! - `FINWAIT_BENCH_BULK_CONNS` (4), `FINWAIT_BENCH_PINGPONG_CONNS` (50),
//!   `FINWAIT_BENCH_CHURN_WORKERS` (50), `FINWAIT_BENCH_IDLE_CONNS` (10000)
//! - `FINWAIT_BENCH_SCENARIOS` — comma list (default `bulk,pingpong,churn,idle`)
//! - `FINWAIT_BENCH_SERVERS` — comma list (default `finwait,mio,tokio`, plus
//!   `finwait-baseline` when `FINWAIT_BENCH_BASELINE_ECHO` is set)
//! - `FINWAIT_BENCH_BASELINE_ECHO=PATH` — an `echo` example built from another commit (a
//!   `git worktree` of it, its own target directory); absolute, or relative to the directory
//!   `cargo bench` runs this in (the `bench/` package: scripts/bench.sh makes it absolute).
//!   It runs as one more server, `finwait-baseline`, in the same rounds as the others; the
//!   peer table gets its column and `finwait/finwait-baseline`, and a section after it lists
//!   every metric for both, each round's pair and the check "server CPU per operation of
//!   finwait ≤ 1.03× the baseline's" (the noise allowance; informative like the other targets)
//! - `FINWAIT_BENCH_SERVER_CPU` (0), `FINWAIT_BENCH_CLIENT_CPU` (1); `FINWAIT_BENCH_PIN=0`
//!   disables pinning
//! - `FINWAIT_BENCH_SYSCALLS` — `auto` (default: `perf` if it works, else `strace` if
//!   installed, else off), `perf`, `strace` or `0`: one extra, untimed bulk/pingpong/churn run
//!   per server with the server's syscalls counted (`perf stat -e raw_syscalls:sys_enter`,
//!   counted in the kernel, barely slows the server; `strace -c -f` slows every syscall by
//!   several µs, which changes the batching it measures — prefer perf)
//! - `FINWAIT_BENCH_JSON=PATH` — also append the raw JSON lines to PATH
//!
//! Many cores: after the peer table, `echo --reactors 2` against `echo --reactors 1` (the
//! same binary, a [`finwait::Group`] of two reactor threads against one reactor on the main
//! thread), same loadgen runs, rounds and medians, a second table with the ratio
//! reactors2/reactors1 and the target "server CPU per operation ≤ 1.05×" (CPU of the whole
//! server process, every thread). The table adds the server's context switches per operation
//! (and how many were preemptions) and the busiest thread's share of the server CPU (0.5: the
//! reactors shared the work evenly), and lists each round's CPU per operation with the ratio
//! of each round's pair:
//! - `FINWAIT_BENCH_REACTORS` — `1` (default: after the peer table), `0` (skip), `only`
//!   (only this comparison)
//! - `FINWAIT_BENCH_REACTORS_SCENARIOS` — comma list (default `bulk,pingpong,churn`)
//! - `FINWAIT_BENCH_REACTORS_SERVERS` — comma list (default
//!   `reactors1,reactors2,reactors2-hash,reactors2-unbounded`): `reactors2-hash` is the
//!   group with `--steering hash`, `reactors2-unbounded` with `--steering awake:1000000`,
//!   each shown in an informative table against `reactors1`
//! - `FINWAIT_BENCH_REACTORS_SERVER_CPUS` (default `0`: both reactor threads share CPU 0,
//!   like the one-reactor server; see BENCHMARKS.md for why), `FINWAIT_BENCH_REACTORS_CLIENT_CPUS`
//!   (default `1`): CPU lists as taskset takes them (`0,1`); `FINWAIT_BENCH_PIN=0` disables
//! - `FINWAIT_BENCH_REACTORS_BULK_CONNS` (default 8: the kernel spreads connections over the
//!   two listeners by a hash, and with 4 all land on one reactor in 1 round of 8)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// One server under test: its label in the tables, the example binary, extra arguments.
#[derive(Debug, Clone)]
struct Variant {
    name: &'static str,
    bin: &'static str,
    args: &'static [&'static str],
    /// The program when it is not this build's example `bin` (the baseline's echo).
    exe: Option<PathBuf>,
}

const fn variant(name: &'static str, bin: &'static str, args: &'static [&'static str]) -> Variant {
    Variant {
        name,
        bin,
        args,
        exe: None,
    }
}

impl Variant {
    fn program(&self, cfg: &Config) -> PathBuf {
        self.exe
            .clone()
            .unwrap_or_else(|| cfg.examples.join(self.bin))
    }
}

const SERVERS: [Variant; 3] = [
    variant("finwait", "echo", &[]),
    variant("mio", "mio_echo", &[]),
    variant("tokio", "tokio_echo", &[]),
];
const SCENARIOS: [&str; 4] = ["bulk", "pingpong", "churn", "idle"];

/// The many-cores comparison: the same finwait echo with one reactor and with a group of two.
const REACTORS1: &str = "reactors1";
const REACTORS2: &str = "reactors2";
/// The group with the kernel's hash instead of its default steering: the design before it.
const REACTORS2_HASH: &str = "reactors2-hash";
/// The group steered with a load slack that never binds (short connections concentrate on
/// the awake reactor; long-lived ones may too).
const REACTORS2_UNBOUNDED: &str = "reactors2-unbounded";
const REACTORS: [Variant; 4] = [
    variant(REACTORS1, "echo", &["--reactors", "1"]),
    variant(REACTORS2, "echo", &["--reactors", "2"]),
    variant(
        REACTORS2_HASH,
        "echo",
        &["--reactors", "2", "--steering", "hash"],
    ),
    variant(
        REACTORS2_UNBOUNDED,
        "echo",
        &["--reactors", "2", "--steering", "awake:1000000"],
    ),
];
const REACTOR_SCENARIOS: [&str; 3] = ["bulk", "pingpong", "churn"];
/// The target: the group's server CPU per operation against one reactor's.
const REACTORS_BOUND: f64 = 1.05;

/// The echo example of another build (`FINWAIT_BENCH_BASELINE_ECHO`), compared with this one's.
const BASELINE: &str = "finwait-baseline";
/// finwait's server CPU per operation against the baseline's: "does not rise", with room for
/// the noise of medians on a shared 2-CPU machine.
const BASELINE_BOUND: f64 = 1.03;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(key: &str, default: &[&str]) -> Vec<String> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => default.iter().map(|s| s.to_string()).collect(),
    }
}

struct Config {
    examples: PathBuf,
    seconds: f64,
    repeat: usize,
    bulk_bytes: u64,
    bulk_conns: usize,
    pingpong_conns: usize,
    churn_workers: usize,
    idle_conns: usize,
    /// (server CPUs, loadgen CPUs) of the peer comparison.
    pin: Option<Pins>,
    /// The same for the reactors comparison.
    reactors_pin: Option<Pins>,
    reactors_bulk_conns: usize,
    taskset: bool,
    syscalls: Option<Counter>,
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("macro_echo: runs only under `cargo bench` (skipped)");
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/release/deps/macro_echo-HASH -> target/release/examples
    let examples = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples"))
        .expect("target dir");
    let missing: Vec<&str> = SERVERS
        .iter()
        .map(|v| v.bin)
        .chain(["loadgen"])
        .filter(|bin| !examples.join(bin).exists())
        .collect();
    if !missing.is_empty() {
        // `cargo bench` does not build examples. Skip instead of failing, so a plain
        // `cargo bench` still runs the micro benchmarks after this one.
        println!(
            "macro_echo: skipped: {} not built in {}\nbuild them first (same CARGO_TARGET_DIR):\n  \
             cargo build --release --workspace --examples\nor run scripts/bench.sh",
            missing.join(", "),
            examples.display()
        );
        return ExitCode::SUCCESS;
    }
    let baseline = std::env::var_os("FINWAIT_BENCH_BASELINE_ECHO")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if let Some(path) = &baseline
        && !path.is_file()
    {
        // Asked for by name: a comparison without it would silently measure something else.
        eprintln!(
            "macro_echo: FINWAIT_BENCH_BASELINE_ECHO={}: no such file (from {})",
            path.display(),
            std::env::current_dir().map_or_else(|_| "?".into(), |d| d.display().to_string())
        );
        return ExitCode::FAILURE;
    }
    raise_fd_limit();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinning = env_or("FINWAIT_BENCH_PIN", 1u8) != 0 && ncpu >= 2;
    let pin = pinning.then(|| {
        (
            vec![env_or("FINWAIT_BENCH_SERVER_CPU", 0usize)],
            vec![env_or("FINWAIT_BENCH_CLIENT_CPU", 1usize)],
        )
    });
    let reactors_pin = pinning.then(|| {
        (
            cpu_list("FINWAIT_BENCH_REACTORS_SERVER_CPUS", 0),
            cpu_list("FINWAIT_BENCH_REACTORS_CLIENT_CPUS", 1),
        )
    });
    let syscalls = match std::env::var("FINWAIT_BENCH_SYSCALLS").as_deref() {
        Ok("0") | Ok("off") => None,
        Ok("perf") => perf_works().then_some(Counter::Perf),
        Ok("strace") => in_path("strace").then_some(Counter::Strace),
        _ => {
            if perf_works() {
                Some(Counter::Perf)
            } else if in_path("strace") {
                Some(Counter::Strace)
            } else {
                None
            }
        }
    };
    let cfg = Config {
        examples,
        seconds: env_or("FINWAIT_BENCH_SECONDS", 3.0),
        repeat: env_or("FINWAIT_BENCH_REPEAT", 1usize).max(1),
        bulk_bytes: env_or("FINWAIT_BENCH_BULK_BYTES", 1 << 30),
        bulk_conns: env_or("FINWAIT_BENCH_BULK_CONNS", 4),
        pingpong_conns: env_or("FINWAIT_BENCH_PINGPONG_CONNS", 50),
        churn_workers: env_or("FINWAIT_BENCH_CHURN_WORKERS", 50),
        idle_conns: env_or("FINWAIT_BENCH_IDLE_CONNS", 10_000),
        pin,
        reactors_pin,
        reactors_bulk_conns: env_or("FINWAIT_BENCH_REACTORS_BULK_CONNS", 8),
        taskset: in_path("taskset"),
        syscalls,
        json: std::env::var_os("FINWAIT_BENCH_JSON").map(PathBuf::from),
    };
    if cfg.syscalls.is_none() {
        eprintln!("macro_echo: no syscall counter (perf or strace): syscalls/op not measured");
    }
    let servers: Vec<Variant> = {
        let mut all = SERVERS.to_vec();
        let mut default = vec!["finwait", "mio", "tokio"];
        if let Some(path) = &baseline {
            all.push(Variant {
                exe: Some(path.clone()),
                ..variant(BASELINE, "echo", &[])
            });
            default.push(BASELINE);
        }
        let want = env_list("FINWAIT_BENCH_SERVERS", &default);
        if baseline.is_none() && want.iter().any(|w| w == BASELINE) {
            eprintln!(
                "macro_echo: {BASELINE} skipped: set FINWAIT_BENCH_BASELINE_ECHO to its echo binary"
            );
        }
        all.into_iter()
            .filter(|v| want.iter().any(|w| w == v.name))
            .collect()
    };
    let scenarios = env_list("FINWAIT_BENCH_SCENARIOS", &SCENARIOS);
    let reactors = std::env::var("FINWAIT_BENCH_REACTORS").unwrap_or_default();
    let (peers, many) = match reactors.trim() {
        "0" | "off" => (true, false),
        "only" => (false, true),
        _ => (true, true),
    };

    println!("{}", machine_line(ncpu, &cfg, peers));
    if let Some(v) = servers.iter().find(|v| v.name == BASELINE) {
        println!("Baseline: {BASELINE} is {}", v.program(&cfg).display());
    }
    let mut failures = 0;
    let mut target_failures = 0;
    if peers {
        let phase = Phase {
            variants: servers,
            scenarios,
            pin: cfg.pin.clone(),
            bulk_conns: cfg.bulk_conns,
        };
        let (results, failed) = run_phase(&cfg, &phase);
        failures += failed;
        let names: Vec<&str> = phase.variants.iter().map(|v| v.name).collect();
        print_table(&results, &names);
        target_failures += print_targets(&results);
        if names.contains(&"finwait") && names.contains(&BASELINE) {
            println!();
            println!("finwait against {BASELINE} (this build's echo against the baseline's)");
            target_failures += print_pair(&results, &BASELINE_PAIR);
        }
    }
    if many {
        let wanted = env_list(
            "FINWAIT_BENCH_REACTORS_SERVERS",
            &REACTORS.iter().map(|v| v.name).collect::<Vec<_>>(),
        );
        let phase = Phase {
            variants: REACTORS
                .iter()
                .filter(|v| wanted.iter().any(|w| w == v.name))
                .cloned()
                .collect(),
            scenarios: env_list("FINWAIT_BENCH_REACTORS_SCENARIOS", &REACTOR_SCENARIOS)
                .into_iter()
                .filter(|s| s != "idle")
                .collect(),
            pin: cfg.reactors_pin.clone(),
            bulk_conns: cfg.reactors_bulk_conns,
        };
        println!();
        println!(
            "Many cores: echo --reactors 2 against --reactors 1 ({}; bulk over {} conns)",
            pin_text(&cfg, phase.pin.as_ref()),
            phase.bulk_conns
        );
        let (results, failed) = run_phase(&cfg, &phase);
        failures += failed;
        target_failures += print_pair(&results, &REACTORS_PAIR);
        if phase.variants.iter().any(|v| v.name == REACTORS2_HASH) {
            println!();
            println!("The same group with the kernel's hash instead of steering (informative):");
            let _ = print_pair(&results, &HASH_PAIR);
        }
        if phase.variants.iter().any(|v| v.name == REACTORS2_UNBOUNDED) {
            println!();
            println!("The same group steered with a load slack that never binds (informative):");
            let _ = print_pair(&results, &UNBOUNDED_PAIR);
        }
    }
    eprintln!(
        "macro_echo: {failures} failed run(s), {target_failures} target(s) missed (targets are \
         informative: they do not fail the run)"
    );
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// (server CPUs, loadgen CPUs).
type Pins = (Vec<usize>, Vec<usize>);

/// A comma list of CPU numbers from the environment (`0,1`), or `default`.
fn cpu_list(key: &str, default: usize) -> Vec<usize> {
    let cpus: Vec<usize> = std::env::var(key)
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    if cpus.is_empty() { vec![default] } else { cpus }
}

fn cpus_text(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn pin_text(cfg: &Config, pin: Option<&Pins>) -> String {
    match pin {
        Some((s, c)) => format!(
            "server on CPU {}, loadgen on CPU {} ({})",
            cpus_text(s),
            cpus_text(c),
            if cfg.taskset {
                "taskset"
            } else {
                "sched_setaffinity"
            }
        ),
        None => "no pinning".into(),
    }
}

/// Servers compared in one table: every scenario runs `repeat` rounds of all of them.
struct Phase {
    variants: Vec<Variant>,
    scenarios: Vec<String>,
    pin: Option<Pins>,
    bulk_conns: usize,
}

/// results[(scenario index, scenario)][server] = its fields, medians over the rounds, with
/// `rounds_<key>` holding the per-round values of the CPU metric (space separated).
type Results = BTreeMap<(usize, String), BTreeMap<String, Fields>>;

/// Runs every scenario of `phase`; returns the results and the number of failed runs.
fn run_phase(cfg: &Config, phase: &Phase) -> (Results, usize) {
    let servers = &phase.variants;
    let mut results = Results::new();
    let mut failures = 0;
    for (si, scenario) in phase.scenarios.iter().enumerate() {
        if !SCENARIOS.contains(&scenario.as_str()) {
            eprintln!("macro_echo: unknown scenario {scenario:?} skipped");
            continue;
        }
        let mut rounds: BTreeMap<String, Vec<Fields>> = BTreeMap::new();
        for round in 1..=cfg.repeat {
            // Each round starts with the next server, so none always runs right after the
            // same neighbour (TIME_WAIT sockets, cache and scheduler state it left behind).
            let start = (round - 1) % servers.len().max(1);
            let order = servers[start..].iter().chain(&servers[..start]);
            for v in order {
                eprintln!(
                    "macro_echo: {scenario} / {} (round {round}/{}) ...",
                    v.name, cfg.repeat
                );
                match run_one(cfg, phase, v, scenario, None) {
                    Ok(fields) => {
                        if fields.get("errors").is_none_or(|e| e != "0") {
                            failures += 1;
                        }
                        rounds.entry(v.name.to_string()).or_default().push(fields);
                    }
                    Err(e) => {
                        eprintln!("macro_echo: {scenario} / {}: {e}", v.name);
                        failures += 1;
                    }
                }
            }
        }
        let row = results.entry((si, scenario.clone())).or_default();
        for (name, runs) in rounds {
            let mut merged = merge_rounds(&runs);
            let per_round: Vec<String> = runs
                .iter()
                .map(|r| r.get(CPU_KEY).cloned().unwrap_or_else(|| "nan".to_string()))
                .collect();
            merged.insert(format!("rounds_{CPU_KEY}"), per_round.join(" "));
            row.insert(name, merged);
        }
        for v in servers {
            if let Some(counter) = cfg.syscalls
                && scenario != "idle"
            {
                eprintln!(
                    "macro_echo: {scenario} / {}, syscalls counted ({counter:?}) ...",
                    v.name
                );
                match run_one(cfg, phase, v, scenario, Some(counter)) {
                    Ok(fields) => {
                        let row = results.entry((si, scenario.clone())).or_default();
                        if let Some(per_op) = fields.get("syscalls_per_op")
                            && let Some(r) = row.get_mut(v.name)
                        {
                            r.insert("syscalls_per_op".into(), per_op.clone());
                        }
                    }
                    Err(e) => eprintln!("macro_echo: syscall run / {}: {e}", v.name),
                }
            }
        }
    }
    (results, failures)
}

/// The CPU per operation every CPU comparison uses (schedstat, all threads of the server).
const CPU_KEY: &str = "server_sched_us_per_op";

type Fields = BTreeMap<String, String>;

/// One row from several rounds of the same server: the median of every numeric field, the
/// sum of `errors`, and booleans true only if true in every round.
fn merge_rounds(runs: &[Fields]) -> Fields {
    let mut merged = Fields::new();
    let Some(first) = runs.first() else {
        return merged;
    };
    for (key, value) in first {
        let all: Vec<&str> = runs
            .iter()
            .filter_map(|r| r.get(key).map(String::as_str))
            .collect();
        let nums: Option<Vec<f64>> = all.iter().map(|v| v.parse::<f64>().ok()).collect();
        let out = if key == "errors" {
            let total: f64 = nums.iter().flatten().sum();
            if nums.is_some() {
                fmt_plain(total)
            } else {
                value.clone()
            }
        } else if let Some(mut nums) = nums.filter(|n| !n.is_empty()) {
            nums.sort_by(f64::total_cmp);
            let mid = nums.len() / 2;
            let median = if nums.len() % 2 == 1 {
                nums[mid]
            } else {
                (nums[mid - 1] + nums[mid]) / 2.0
            };
            fmt_plain(median)
        } else if all.iter().all(|v| *v == "true" || *v == "false") {
            all.iter().all(|v| *v == "true").to_string()
        } else {
            value.clone()
        };
        merged.insert(key.clone(), out);
    }
    merged
}

/// A number as loadgen would print it: integers without a fraction.
fn fmt_plain(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.6}")
    }
}

/// How the server's syscalls are counted in the extra run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Perf,
    Strace,
}

/// Whether `perf stat` can count the syscall tracepoint here (needs tracefs and a
/// permissive enough perf_event_paranoid).
fn perf_works() -> bool {
    in_path("perf")
        && Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "raw_syscalls:sys_enter",
                "--",
                "true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The machine and the settings; `peers`: whether the peer comparison runs (else only the
/// reactors comparison, whose own line says how it is pinned).
fn machine_line(ncpu: usize, cfg: &Config, peers: bool) -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    if !peers {
        return format!(
            "Machine: {ncpu} CPUs, {model}; load average at start {load}; pingpong/churn {} s, \
             bulk {} MiB; {} round(s), medians",
            cfg.seconds,
            cfg.bulk_bytes >> 20,
            cfg.repeat
        );
    }
    let pin = pin_text(cfg, cfg.pin.as_ref());
    format!(
        "Machine: {ncpu} CPUs, {model}; load average at start {load}; {pin}; \
         pingpong/churn {} s, bulk {} MiB over {} conns, idle {} conns; {} round(s), \
         medians",
        cfg.seconds,
        cfg.bulk_bytes >> 20,
        cfg.bulk_conns,
        cfg.idle_conns,
        cfg.repeat
    )
}

/// A command pinned to `cpus` (taskset when installed, else sched_setaffinity in the child).
fn pinned(cfg: &Config, program: &Path, cpus: Option<&[usize]>) -> Command {
    match cpus {
        Some(cpus) if cfg.taskset => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus_text(cpus)).arg(program);
            c
        }
        Some(cpus) => {
            let cpus = cpus.to_vec();
            let mut c = Command::new(program);
            // SAFETY: only async-signal-safe calls (sched_setaffinity) between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for &cpu in &cpus {
                        libc::CPU_SET(cpu, &mut set);
                    }
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c
        }
        None => Command::new(program),
    }
}

/// A running server, killed by its PID if still running when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(cfg: &Config, pin: Option<&Pins>, v: &Variant) -> Result<Server, String> {
        let bin = v.bin;
        let mut cmd = pinned(cfg, &v.program(cfg), pin.map(|p| &p.0[..]));
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .args(v.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let addr = match (read, line.trim().strip_prefix("listening on ")) {
            (Ok(_), Some(addr)) => addr.to_string(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{bin}: unexpected first line {line:?}"));
            }
        };
        Ok(Server { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after 5 s.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a fresh server, runs loadgen once against it, returns loadgen's JSON fields. With
/// a `counter`, the server's syscalls are counted and `syscalls_per_op` is added.
fn run_one(
    cfg: &Config,
    phase: &Phase,
    v: &Variant,
    scenario: &str,
    counter: Option<Counter>,
) -> Result<Fields, String> {
    let (bin, name) = (v.bin, v.name);
    let server = Server::start(cfg, phase.pin.as_ref(), v)?;
    let pid = server.pid().to_string();
    let secs = if counter.is_some() {
        cfg.seconds.min(2.0)
    } else {
        cfg.seconds
    };
    let mut args: Vec<String> = vec![
        "--connect".into(),
        server.addr.clone(),
        "--scenario".into(),
        scenario.into(),
        "--server-pid".into(),
        pid.clone(),
    ];
    let extra = match scenario {
        "bulk" => vec![
            "--connections".to_string(),
            phase.bulk_conns.to_string(),
            "--bytes".into(),
            cfg.bulk_bytes.to_string(),
        ],
        "pingpong" => vec![
            "--connections".into(),
            cfg.pingpong_conns.to_string(),
            "--duration-s".into(),
            secs.to_string(),
        ],
        // Spread over 8 source addresses: from one, loadgen's own TIME_WAIT sockets run its
        // ephemeral ports short and cap conn/s at whatever the rounds before left.
        "churn" => vec![
            "--connections".into(),
            cfg.churn_workers.to_string(),
            "--duration-s".into(),
            secs.to_string(),
            "--source-ips".into(),
            "8".into(),
        ],
        _ => vec!["--connections".into(), cfg.idle_conns.to_string()],
    };
    args.extend(extra);

    let trace_out = std::env::temp_dir().join(format!("finwait-syscalls-{}.txt", server.pid()));
    let mut tracer = match counter {
        None => None,
        Some(c) => {
            let mut cmd = match c {
                Counter::Perf => {
                    let mut cmd = Command::new("perf");
                    cmd.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o"]);
                    cmd
                }
                Counter::Strace => {
                    let mut cmd = Command::new("strace");
                    cmd.args(["-c", "-f", "-q", "-o"]);
                    cmd
                }
            };
            let t = cmd
                .arg(&trace_out)
                .args(["-p", &pid])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("{c:?}: {e}"))?;
            // Give it time to attach.
            std::thread::sleep(Duration::from_millis(500));
            Some((c, t))
        }
    };

    let mut cmd = pinned(
        cfg,
        &cfg.examples.join("loadgen"),
        phase.pin.as_ref().map(|p| &p.1[..]),
    );
    let mut child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn loadgen: {e}"))?;
    let limit = Duration::from_secs_f64(secs + 180.0);
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut so, &mut out);
    }
    let mut syscalls = None;
    if let Some((c, mut t)) = tracer.take() {
        // SIGINT makes perf and strace detach and write their summary.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
        if wait_timeout(&mut t, Duration::from_secs(10)).is_none() {
            let _ = t.kill();
            let _ = t.wait();
        }
        syscalls = std::fs::read_to_string(&trace_out)
            .ok()
            .and_then(|s| match c {
                Counter::Perf => perf_total(&s),
                Counter::Strace => strace_total(&s),
            });
        let _ = std::fs::remove_file(&trace_out);
    }
    server.stop();

    let line = out.lines().last().unwrap_or("").trim().to_string();
    let tag = counter.map_or(String::new(), |c| format!("[{c:?}] "));
    eprintln!("  {tag}{line}");
    if let Some(path) = &cfg.json {
        // Relative paths are relative to bench/ (where cargo bench runs this): say so when
        // the file cannot be written instead of losing the lines.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                writeln!(
                    f,
                    "{{\"server\":\"{bin}\",\"variant\":\"{name}\",\"syscalls_counted\":{},\
                     \"result\":{line}}}",
                    counter.is_some()
                )
            });
        if let Err(e) = written {
            eprintln!("macro_echo: FINWAIT_BENCH_JSON={}: {e}", path.display());
        }
    }
    let mut fields = parse_json_line(&line);
    match status {
        None => return Err(format!("loadgen timed out after {limit:?}")),
        // loadgen exits 1 with its JSON line when it counted errors: keep the numbers, the
        // caller counts the failure from `errors`.
        Some(s) if !s.success() && !fields.contains_key("errors") => {
            return Err(format!("loadgen failed ({s}): {line:?}"));
        }
        _ => {}
    }
    let ops = match scenario {
        "pingpong" => fields.get("msgs").and_then(|m| m.parse::<f64>().ok()),
        "churn" => fields
            .get("connections")
            .and_then(|m| m.parse::<f64>().ok()),
        "bulk" => fields
            .get("bytes")
            .and_then(|m| m.parse::<f64>().ok())
            .map(|b| b / (1 << 20) as f64),
        _ => None,
    };
    if let (Some(calls), Some(ops)) = (syscalls, ops)
        && ops > 0.0
    {
        // Calls of the connect phase and the close are included: negligible against the
        // hundreds of thousands of operations of a run.
        fields.insert("syscalls".into(), calls.to_string());
        fields.insert(
            "syscalls_per_op".into(),
            format!("{:.3}", calls as f64 / ops),
        );
    }
    Ok(fields)
}

/// The count of `perf stat -x ,` output's `raw_syscalls:sys_enter` line.
fn perf_total(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.contains("raw_syscalls:sys_enter"))?;
    line.split(',').next()?.trim().parse().ok()
}

/// The `calls` column of strace -c's `total` line.
fn strace_total(summary: &str) -> Option<u64> {
    let line = summary.lines().find(|l| l.trim_end().ends_with(" total"))?;
    // % time, seconds, usecs/call, calls, [errors], "total"
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols.get(3)?.parse().ok()
}

/// Flat JSON object of numbers, booleans and simple strings (what loadgen prints).
fn parse_json_line(line: &str) -> Fields {
    let mut fields = Fields::new();
    let body = line.trim().trim_start_matches('{').trim_end_matches('}');
    for pair in body.split(',') {
        if let Some((k, v)) = pair.split_once(':') {
            fields.insert(
                k.trim().trim_matches('"').to_string(),
                v.trim().trim_matches('"').to_string(),
            );
        }
    }
    fields
}

/// (metric label, JSON key, scale, higher is better)
fn metrics(scenario: &str) -> Vec<(&'static str, &'static str, f64, bool)> {
    let ticks = "server_cpu_us_per_op";
    match scenario {
        "bulk" => vec![
            ("GiB/s", "gib_per_s", 1.0, true),
            ("server CPU s/GiB", "server_sched_us_per_op", 1e-6, false),
            ("server CPU s/GiB (ticks)", ticks, 1e-6, false),
            ("server syscalls/MiB", "syscalls_per_op", 1.0, false),
            ("errors", "errors", 1.0, false),
        ],
        "pingpong" => vec![
            ("msg/s", "msg_per_s", 1.0, true),
            ("p50 µs", "p50_us", 1.0, false),
            ("p99 µs", "p99_us", 1.0, false),
            ("server CPU µs/msg", "server_sched_us_per_op", 1.0, false),
            ("server CPU µs/msg (ticks)", ticks, 1.0, false),
            ("server syscalls/msg", "syscalls_per_op", 1.0, false),
            ("errors", "errors", 1.0, false),
        ],
        "churn" => vec![
            ("conn/s", "conns_per_s", 1.0, true),
            ("server CPU µs/conn", "server_sched_us_per_op", 1.0, false),
            ("server CPU µs/conn (ticks)", ticks, 1.0, false),
            ("server syscalls/conn", "syscalls_per_op", 1.0, false),
            ("errors", "errors", 1.0, false),
        ],
        _ => vec![
            ("server bytes/conn", "server_bytes_per_conn", 1.0, false),
            ("connect time s", "establish_s", 1.0, false),
            ("server CPU µs/conn", "server_sched_us_per_op", 1.0, false),
            ("fds back to baseline", "fds_back_to_baseline", 1.0, true),
            ("errors", "errors", 1.0, false),
        ],
    }
}

fn value(row: &BTreeMap<String, Fields>, server: &str, key: &str) -> Option<String> {
    row.get(server)?.get(key).cloned()
}

fn num(row: &BTreeMap<String, Fields>, server: &str, key: &str) -> Option<f64> {
    value(row, server, key)?.parse().ok()
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// The peer table: a column per server of the run, then the ratios to mio of the others
/// (when mio ran) and finwait/finwait-baseline (when both ran).
fn print_table(results: &Results, servers: &[&str]) {
    let columns: Vec<&str> = servers
        .iter()
        .copied()
        .filter(|s| results.values().any(|row| row.contains_key(*s)))
        .collect();
    if columns.is_empty() {
        println!();
        println!("(no server ran: see FINWAIT_BENCH_SERVERS)");
        return;
    }
    let mut ratios: Vec<(&str, &str)> = Vec::new();
    if columns.contains(&"mio") {
        ratios.extend(columns.iter().filter(|s| **s != "mio").map(|s| (*s, "mio")));
    }
    if columns.contains(&"finwait") && columns.contains(&BASELINE) {
        ratios.push(("finwait", BASELINE));
    }
    println!();
    let head: Vec<String> = columns
        .iter()
        .map(|s| s.to_string())
        .chain(ratios.iter().map(|(a, b)| format!("{a}/{b}")))
        .collect();
    println!("| scenario | metric | {} |", head.join(" | "));
    println!("|---|---|{}", "---:|".repeat(head.len()));
    for ((_, scenario), row) in results {
        for (label, key, scale, _) in metrics(scenario) {
            if !row.values().any(|f| f.contains_key(key)) {
                continue;
            }
            let cell = |server: &str| match value(row, server, key) {
                Some(v) => match v.parse::<f64>() {
                    Ok(n) => fmt_num(n * scale),
                    Err(_) => v,
                },
                None => "–".into(),
            };
            // Against the baseline, three decimals: the question is a few percent.
            let ratio = |a: &str, b: &str| match (num(row, a, key), num(row, b, key)) {
                (Some(x), Some(m)) if m != 0.0 && key != "errors" && b == BASELINE => {
                    format!("{:.3}", x / m)
                }
                (Some(x), Some(m)) if m != 0.0 && key != "errors" => format!("{:.2}", x / m),
                _ => "–".into(),
            };
            let cells: Vec<String> = columns
                .iter()
                .map(|s| cell(s))
                .chain(ratios.iter().map(|(a, b)| ratio(a, b)))
                .collect();
            println!("| {scenario} | {label} | {} |", cells.join(" | "));
        }
    }
}

/// Prints each target of the performance issue with PASS/FAIL/n.a.; returns the FAIL count.
/// A measured value for the targets list, or "not measured".
fn show(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "not measured".into(), |v| format!("{v:.3}{unit}"))
}

fn print_targets(results: &BTreeMap<(usize, String), BTreeMap<String, Fields>>) -> usize {
    let row = |s: &str| results.iter().find(|((_, n), _)| n == s).map(|(_, r)| r);
    let mut fails = 0;
    let mut check = |what: &str, ok: Option<bool>, detail: String| {
        let verdict = match ok {
            Some(true) => "PASS",
            Some(false) => {
                fails += 1;
                "FAIL"
            }
            None => "n/a ",
        };
        println!("- {verdict} {what}: {detail}");
    };
    let ratio = |r: Option<&BTreeMap<String, Fields>>, key: &str, other: &str| {
        let r = r?;
        Some(num(r, "finwait", key)? / num(r, other, key)?)
    };
    println!();
    println!("Targets:");
    let (pp, id) = (row("pingpong"), row("idle"));
    let cpu = "server_sched_us_per_op";
    // (target, scenario, metric, bound, whether finwait/mio must stay at or below it)
    for (what, scenario, key, bound, at_most) in [
        ("pingpong CPU/msg <= 0.90x mio", "pingpong", cpu, 0.90, true),
        ("churn CPU/conn <= 1.00x mio", "churn", cpu, 1.0, true),
        ("bulk GiB/s >= 1.00x mio", "bulk", "gib_per_s", 1.0, false),
        ("bulk CPU/GiB <= 1.00x mio", "bulk", cpu, 1.0, true),
    ] {
        let r = ratio(row(scenario), key, "mio");
        let ok = r.map(|r| if at_most { r <= bound } else { r >= bound });
        check(what, ok, show(r, "x"));
    }
    let s = pp.and_then(|r| num(r, "finwait", "syscalls_per_op"));
    check(
        "pingpong syscalls/msg <= 2.2",
        s.map(|s| s <= 2.2),
        show(s, ""),
    );
    let b = id.and_then(|r| num(r, "finwait", "server_bytes_per_conn"));
    check(
        "idle <= 256 server bytes/conn",
        b.map(|b| b <= 256.0),
        show(b, " B"),
    );
    for (scenario, key, higher) in [
        ("bulk", "gib_per_s", true),
        ("bulk", cpu, false),
        ("pingpong", "msg_per_s", true),
        ("pingpong", cpu, false),
        ("churn", "conns_per_s", true),
        ("churn", cpu, false),
        ("idle", "server_bytes_per_conn", false),
    ] {
        let r = ratio(row(scenario), key, "tokio");
        check(
            &format!("{scenario} {key}: ahead of tokio"),
            r.map(|r| if higher { r > 1.0 } else { r < 1.0 }),
            format!("finwait/tokio {}", show(r, "x")),
        );
    }
    let errors: Option<f64> = results.values().map(|r| num(r, "finwait", "errors")).sum();
    check(
        "zero errors (finwait)",
        errors.map(|e| e == 0.0),
        errors.map_or_else(|| "not measured".into(), |e| format!("{e}")),
    );
    let fds = id.and_then(|r| value(r, "finwait", "fds_back_to_baseline"));
    check(
        "zero leaked fds (finwait, idle)",
        fds.as_deref().map(|f| f == "true"),
        fds.clone().unwrap_or_else(|| "not measured".into()),
    );
    fails
}

/// Two servers of one phase compared metric by metric (`print_pair`).
struct Pair {
    /// The reference (denominator) and the server measured against it.
    base: &'static str,
    new: &'static str,
    /// Their column headings and the ratio's.
    base_label: &'static str,
    new_label: &'static str,
    ratio_label: &'static str,
    /// The bound on new/base server CPU per operation.
    bound: f64,
    /// Whether the servers have several threads (then the busiest thread's share is shown,
    /// and a note when one thread did nearly all the work).
    threads: bool,
}

/// The many-cores comparison: `echo --reactors 2` against `--reactors 1`.
const REACTORS_PAIR: Pair = Pair {
    base: REACTORS1,
    new: REACTORS2,
    base_label: "--reactors 1",
    new_label: "--reactors 2",
    ratio_label: "2/1",
    bound: REACTORS_BOUND,
    threads: true,
};

/// The group spreading by the kernel's hash, against one reactor (informative).
const HASH_PAIR: Pair = Pair {
    base: REACTORS1,
    new: REACTORS2_HASH,
    base_label: "--reactors 1",
    new_label: "--reactors 2 --steering hash",
    ratio_label: "hash/1",
    bound: REACTORS_BOUND,
    threads: true,
};

/// The group steered with an unbounded load slack, against one reactor (informative).
const UNBOUNDED_PAIR: Pair = Pair {
    base: REACTORS1,
    new: REACTORS2_UNBOUNDED,
    base_label: "--reactors 1",
    new_label: "--reactors 2 --steering awake:1000000",
    ratio_label: "unbounded/1",
    bound: REACTORS_BOUND,
    threads: true,
};

/// This build's echo against the baseline's (`FINWAIT_BENCH_BASELINE_ECHO`).
const BASELINE_PAIR: Pair = Pair {
    base: BASELINE,
    new: "finwait",
    base_label: BASELINE,
    new_label: "finwait",
    ratio_label: "finwait/baseline",
    bound: BASELINE_BOUND,
    threads: false,
};

/// The table of two servers: each metric for both, the ratio new/base, the per-round CPU
/// per operation with the ratio of each round's pair, and the target (server CPU per
/// operation new/base ≤ `pair.bound`) per scenario. Returns the number of targets missed.
fn print_pair(results: &Results, pair: &Pair) -> usize {
    let (one, two) = (pair.base, pair.new);
    println!();
    println!(
        "| scenario | metric | {} | {} | {} |",
        pair.base_label, pair.new_label, pair.ratio_label
    );
    println!("|---|---|---:|---:|---:|");
    for ((_, scenario), row) in results {
        if !(row.contains_key(one) && row.contains_key(two)) {
            continue;
        }
        let mut rows = metrics(scenario);
        let errors = rows.pop();
        rows.extend([
            (
                "server context switches/op",
                "server_ctx_switches_per_op",
                1.0,
                false,
            ),
            (
                "  of which involuntary (preempted)",
                "server_ctx_switches_involuntary_per_op",
                1.0,
                false,
            ),
        ]);
        if pair.threads {
            rows.push((
                "busiest server thread's CPU share",
                "server_busiest_thread_share",
                1.0,
                false,
            ));
        }
        rows.extend(errors);
        for (label, key, scale, _) in rows {
            if !row.values().any(|f| f.contains_key(key)) {
                continue;
            }
            let cell = |server: &str| match num(row, server, key) {
                Some(n) => fmt_num(n * scale),
                None => value(row, server, key).unwrap_or_else(|| "–".into()),
            };
            let ratio = match (num(row, two, key), num(row, one, key)) {
                (Some(b), Some(a)) if a != 0.0 && key != "errors" => format!("{:.3}", b / a),
                _ => "–".into(),
            };
            println!(
                "| {scenario} | {label} | {} | {} | {ratio} |",
                cell(one),
                cell(two)
            );
        }
    }
    println!();
    println!("Server CPU per operation in each round (rounds alternate which server goes first):");
    println!();
    let mut fails = 0;
    let mut verdicts = Vec::new();
    for ((_, scenario), row) in results {
        if !(row.contains_key(one) && row.contains_key(two)) {
            continue;
        }
        let per_round = |server: &str| -> Vec<f64> {
            value(row, server, &format!("rounds_{CPU_KEY}"))
                .unwrap_or_default()
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        };
        let (a, b) = (per_round(one), per_round(two));
        let scale = metrics(scenario)
            .iter()
            .find(|m| m.1 == CPU_KEY)
            .map_or(1.0, |m| m.2);
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| fmt_num(x * scale))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Pairs only when every round of both servers ran (a failed run shifts the rounds).
        let mut paired: Vec<f64> = if a.len() == b.len() {
            a.iter()
                .zip(&b)
                .map(|(a, b)| b / a)
                .filter(|r| r.is_finite())
                .collect()
        } else {
            Vec::new()
        };
        paired.sort_by(f64::total_cmp);
        let paired_median = median(&paired);
        println!(
            "- {scenario}: {}: {}; {}: {}; {} per round: {} (median {})",
            pair.base_label,
            list(&a),
            pair.new_label,
            list(&b),
            pair.ratio_label,
            paired
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            paired_median.map_or("–".into(), |m| format!("{m:.3}"))
        );
        let r = match (num(row, two, CPU_KEY), num(row, one, CPU_KEY)) {
            (Some(b), Some(a)) if a > 0.0 => Some(b / a),
            _ => None,
        };
        let unit = match scenario.as_str() {
            "bulk" => "CPU/GiB",
            "pingpong" => "CPU/msg",
            _ => "CPU/conn",
        };
        let ok = r.map(|r| r <= pair.bound);
        if ok == Some(false) {
            fails += 1;
        }
        verdicts.push(format!(
            "- {} {scenario} server {unit} {} <= {:.2}x {}: {}",
            match ok {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a ",
            },
            pair.new_label,
            pair.bound,
            pair.base_label,
            show(r, "x")
        ));
        if pair.threads
            && let Some(share) = num(row, two, "server_busiest_thread_share")
            && share > 0.9
        {
            verdicts.push(format!(
                "  (note: in {scenario} one reactor did {:.0} % of the work: raise the \
                 connections so the kernel's hash gives both some)",
                share * 100.0
            ));
        }
    }
    let errors: Option<f64> = results
        .values()
        .flat_map(|r| [num(r, one, "errors"), num(r, two, "errors")])
        .sum();
    println!();
    println!("Targets ({} against {}):", pair.new_label, pair.base_label);
    for v in verdicts {
        println!("{v}");
    }
    let ok = errors.map(|e| e == 0.0);
    if ok == Some(false) {
        fails += 1;
    }
    println!(
        "- {} zero errors (both): {}",
        match ok {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a ",
        },
        errors.map_or_else(|| "not measured".into(), |e| format!("{e}"))
    );
    fails
}

/// The median of sorted values.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own; children inherit the new soft limit.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
