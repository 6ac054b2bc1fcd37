//! Running the example binaries as a real client would: start, read the `listening on`
//! line, signal, wait with a bound, inspect `/proc/PID`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The path of a built example: `cargo test` builds every example next to the test binary.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary> -> target/<profile>/examples/<name>
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo test builds examples)",
        path.display()
    );
    // `cargo test --test NAME` builds only that test: an example older than its sources would
    // be tested silently. Refuse instead.
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = root.join("examples");
    let own = if examples.join(name).is_dir() {
        newest_source(&examples.join(name))
    } else {
        let file = examples.join(format!("{name}.rs"));
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        modified.map(|t| (file, t))
    };
    if let Some(newer) = [
        newest_source(&root.join("src")),
        newest_source(&examples.join("common")),
        own,
    ]
    .into_iter()
    .flatten()
    .find(|(_, t)| *t > built)
    {
        panic!(
            "{} is older than {}: run `cargo build --examples` (or plain `cargo test`) first",
            path.display(),
            newer.0.display()
        );
    }
    path
}

/// Newest `.rs` file under `dir`.
fn newest_source(dir: &std::path::Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let candidate = if p.is_dir() {
            newest_source(&p)
        } else if p.extension().is_some_and(|e| e == "rs") {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (p, t))
        } else {
            None
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.1 > n.1)
        {
            newest = Some(c);
        }
    }
    newest
}

/// A running example server. Killed (by its PID, SIGKILL) if still running when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The rest of stdout, after the `listening on` line.
    pub stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts `name` with `args` (plus `--listen 127.0.0.1:0` unless `args` has `--listen`)
    /// and waits for its `listening on IP:PORT` line.
    pub fn start(name: &str, args: &[&str]) -> Server {
        let mut cmd = Command::new(example_path(name));
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn example");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Server {
            child,
            addr,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (by PID, only to this child).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with our own child's pid; no memory is involved.
        let rc = unsafe { libc_kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Open fds of the process (`/proc/PID/fd`).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// CPU time used so far (utime + stime), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
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

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub const SIGTERM: i32 = 15;
pub const SIGINT: i32 = 2;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A process started by a test, killed (by its own PID) if it is still running on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs example `name` with `args` to its exit — stdin empty, `RUST_LOG` unset, killed and
/// failing the test after [`LIMIT`](super::LIMIT) — and returns its exit status, stdout and
/// stderr.
pub fn run_to_exit(name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    use std::io::Read;
    let mut child = Command::new(example_path(name))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut proc = Proc(child);
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let limit = super::LIMIT;
    let status = loop {
        if let Some(status) = proc.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            start.elapsed() < limit,
            "{name} {args:?} did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}
