//! Ctrl-C from outside: the first SIGINT starts the graceful shutdown and says so on stderr
//! in one readable line per reactor; the example keeps a connection whose client never sends
//! its FIN (up to `--shutdown-timeout-ms`); a second SIGINT stops at once, exit status 0.
//! With `--reactors 2` each reactor says its own line, naming itself.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{SIGINT, example_path};
use common::{Ending, LIMIT, peer, read_to_end};

/// Far longer than any bounded wait here: a server that ends only because its grace ran out
/// fails the test instead of passing slowly.
const LONG_SHUTDOWN_TIMEOUT_MS: &str = "300000";

/// An example server with its stderr read line by line; killed (by its PID) on drop if it
/// is still running.
struct Example {
    child: Child,
    addr: SocketAddr,
    stderr: Receiver<String>,
    /// Every stderr line received so far.
    lines: Vec<String>,
}

impl Example {
    fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example_path(name))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut example = Example {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr: rx,
            lines: Vec::new(),
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        example.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        // Keep the pipe drained (nothing more is expected on stdout).
        thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        example
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        let rc = unsafe { kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Collects stderr lines until `count` of them contain `needle`, failing after [`LIMIT`];
    /// returns those lines.
    fn wait_for_lines(&mut self, needle: &str, count: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .lines
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let left = LIMIT.saturating_sub(start.elapsed());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(e) => panic!(
                    "waited for {count} stderr lines with {needle:?} ({e}); stderr so far: {:#?}",
                    self.lines
                ),
            }
        }
    }

    /// Waits at most [`LIMIT`] for the exit, then takes the rest of stderr.
    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < LIMIT,
                "did not exit within {LIMIT:?}; stderr: {:#?}",
                self.lines
            );
            thread::sleep(Duration::from_millis(10));
        };
        // The process is gone: the reader thread ends at EOF.
        while let Ok(line) = self.stderr.recv_timeout(LIMIT) {
            self.lines.push(line);
        }
        status
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A client that has had one byte echoed (so the server has accepted it) and will never send
/// its FIN while the test runs.
fn echoed_client(addr: SocketAddr) -> TcpStream {
    let mut s = peer(addr);
    s.write_all(b"x").unwrap();
    let mut got = [0; 1];
    s.read_exact(&mut got).unwrap();
    s
}

/// `(reactor, n)` of a line `echo: [reactor R: ]<text before n>N...`: which reactor said it
/// (`None` for a single reactor) and the number after `before`.
fn parse_line(line: &str, before: &str) -> (Option<usize>, usize) {
    let rest = line
        .strip_prefix("echo: ")
        .unwrap_or_else(|| panic!("{line:?} does not start with the program's name"));
    let reactor = rest.strip_prefix("reactor ").map(|r| {
        let (index, _) = r.split_once(": ").expect("reactor N: ");
        index.parse().expect("reactor index")
    });
    let after = line
        .split_once(before)
        .unwrap_or_else(|| panic!("{line:?} lacks {before:?}"))
        .1;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    (reactor, digits.parse().expect("a count"))
}

/// The scenario with `reactors` reactors and `clients` clients that never send their FIN.
fn ctrl_c_twice(reactors: usize, clients: usize) {
    let reactors_arg = reactors.to_string();
    let mut server = Example::start(
        "echo",
        &[
            "--shutdown-timeout-ms",
            LONG_SHUTDOWN_TIMEOUT_MS,
            "--reactors",
            &reactors_arg,
        ],
    );
    let mut conns: Vec<TcpStream> = (0..clients).map(|_| echoed_client(server.addr)).collect();

    // First Ctrl-C: one line per reactor, in the compact format, with the connections it has.
    server.signal(SIGINT);
    let first = server.wait_for_lines("signal received: shutting down", reactors);
    assert_eq!(first.len(), reactors, "{first:#?}");
    let mut seen = Vec::new();
    let mut total = 0;
    for line in &first {
        assert!(
            line.contains("send it again to stop now"),
            "the line says how to stop now: {line:?}"
        );
        let (reactor, n) = parse_line(line, "shutting down, ");
        if reactors == 1 {
            assert_eq!(reactor, None, "one reactor needs no name: {line:?}");
        } else {
            let r = reactor.unwrap_or_else(|| panic!("{line:?} does not name its reactor"));
            assert!(r < reactors && !seen.contains(&r), "{first:#?}");
            seen.push(r);
        }
        total += n;
    }
    assert_eq!(
        total, clients,
        "connections counted by the lines: {first:#?}"
    );
    assert!(
        server.lines.iter().all(|l| l.starts_with("echo: ")),
        "every stderr line is `echo: ...`: {:#?}",
        server.lines
    );

    // Every connection is ended (FIN after its echo); our clients never answer with theirs,
    // so the server keeps them and keeps running.
    for c in &mut conns {
        assert_eq!(read_to_end(c), (Vec::new(), Ending::Fin));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited while connections waited for their peers' FIN"
    );

    // Second Ctrl-C: stop now, exit 0. A reactor that had no connection finished after the
    // first signal and says nothing more; the others each destroy what they kept.
    server.signal(SIGINT);
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {:#?}", server.lines);
    let again: Vec<&String> = server
        .lines
        .iter()
        .filter(|l| l.contains("signal received again: stopping now"))
        .collect();
    assert!(!again.is_empty(), "stderr: {:#?}", server.lines);
    let mut seen = Vec::new();
    let mut destroyed = 0;
    for line in &again {
        let (reactor, n) = parse_line(line, "stopping now (");
        assert!(!seen.contains(&reactor), "{again:#?}");
        seen.push(reactor);
        destroyed += n;
    }
    assert_eq!(
        destroyed, clients,
        "every kept connection is destroyed by the second signal: {again:#?}"
    );
    drop(conns);
}

#[test]
fn echo_first_ctrl_c_says_so_and_keeps_the_connection_second_stops_at_once() {
    ctrl_c_twice(1, 1);
}

#[test]
fn echo_with_2_reactors_each_reactor_says_its_line_and_the_second_ctrl_c_stops_both() {
    // Spread over both reactors by the kernel's hash (most likely both get some; the
    // assertions hold either way).
    ctrl_c_twice(2, 8);
}
