//! client — a netcat-like client on finwait (see CONTRACT.md).
//!
//! ```text
//! printf 'hello' | cargo run --release --example client -- --connect 127.0.0.1:7000
//! ```
//!
//! Sends all of stdin, then half-closes (`end()`), copies everything the server sends to
//! stdout until the server closes, exits 0; on an error prints one line and exits 1; on a
//! command-line error prints one line and a hint and exits 2.
//!
//! What it teaches:
//! - Feeding a reactor from another thread. Reading stdin blocks, and the reactor's thread
//!   must never block, so a thread reads stdin into a *bounded* channel and wakes the reactor
//!   (`Waker::wake`); `on_wake` drains the channel into `write`.
//! - Backpressure end to end. When `write` returns false the handler stops draining the
//!   channel until `Drain`; the channel fills, the stdin thread blocks in `send`, and stops
//!   reading stdin. Memory stays bounded however fast stdin is and however slow the server.
//! - Half-close. With `allow_half_open`, our FIN only says "stdin is done": the server's
//!   reply (`count`'s answer, say) still arrives after it.

mod common;

use std::io::{Read, StdoutLock, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};

use finwait::{CloseInfo, CloseReason, ConnectOptions, Context, Event, Handler, Reactor, SocketId};

const HELP: &str = "\
client — sends stdin to a TCP server and copies its reply to stdout

USAGE: client --connect HOST:PORT

OPTIONS:
  --connect HOST:PORT         the server to connect to (required)
  -h, --help                  print this help

Sends all of stdin, then half-closes (FIN) and copies everything received to stdout until
the server closes. Exit status:
  0  the server closed cleanly
  1  an error, one line on stderr: connection refused or reset, a host name that does not
     resolve, a deadline, reading stdin or writing stdout failed
  2  a command-line error, one line on stderr: an unknown option, --connect missing or not
     HOST:PORT (an IP address or host name and a port number; IPv6 in brackets)
";

/// Bytes per stdin read, and per message on the channel.
const CHUNK: usize = 64 * 1024;
/// Chunks the channel holds: with `CHUNK`, at most 1 MiB of stdin waits for the socket.
const CHANNEL_CHUNKS: usize = 16;

fn parse() -> Result<Option<String>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut connect = None;
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("connect") => connect = Some(common::address(&mut args, "connect")?),
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    match connect {
        Some(c) => Ok(Some(c)),
        None => Err("--connect HOST:PORT is required".into()),
    }
}

fn main() -> ExitCode {
    common::init_logging("client");
    let target = match parse() {
        Ok(Some(t)) => t,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return common::usage_error("client", e),
    };
    match run(&target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever went wrong.
            eprintln!("client: {target}: {}", e.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// The first address `HOST:PORT` resolves to (a name lookup blocks, so it happens before the
/// reactor runs).
fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address found".to_string())
}

fn run(target: &str) -> Result<(), String> {
    let addr = resolve(target)?;
    let mut reactor = Reactor::new().map_err(|e| e.to_string())?;
    let waker = reactor.waker().map_err(|e| e.to_string())?;

    // The stdin thread: blocking reads into a bounded channel, a wake after each send. `send`
    // blocks while the channel is full — that is the backpressure reaching stdin.
    let (tx, rx) = sync_channel::<Result<Vec<u8>, String>>(CHANNEL_CHUNKS);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0; CHUNK];
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(buf)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(format!("reading stdin: {e}")),
            };
            let failed = chunk.is_err();
            // A send error means the reactor is gone (the connection closed): stop reading.
            if tx.send(chunk).is_err() || waker.wake().is_err() || failed {
                return;
            }
        }
        // EOF: dropping the sender is the signal (`Disconnected` once the channel is empty).
        drop(tx);
        let _ = waker.wake();
    });

    // Connect failures (refused, unreachable) are events, not this call's result.
    let id = reactor
        .connect(addr, ConnectOptions::new().allow_half_open(true))
        .map_err(|e| e.to_string())?;
    let mut client = Client {
        id,
        stdin: rx,
        connected: false,
        blocked: false,
        stdin_done: false,
        out: std::io::stdout().lock(),
        error: None,
    };
    reactor.serve(&mut client).map_err(|e| e.to_string())?;
    match client.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Client {
    id: SocketId,
    stdin: Receiver<Result<Vec<u8>, String>>,
    /// `Connect` arrived: writes go to an open socket from now on.
    connected: bool,
    /// The last `write` returned false: wait for `Drain` before taking more from stdin.
    blocked: bool,
    /// Stdin hit EOF (and we called `end()`), failed, or the socket refused a write.
    stdin_done: bool,
    out: StdoutLock<'static>,
    /// The one line to print if the run failed.
    error: Option<String>,
}

impl Client {
    /// Moves stdin chunks from the channel to the socket until the channel is empty or the
    /// socket asks us to wait.
    fn pump(&mut self, cx: &mut Context) {
        if !self.connected {
            // Chunks wait in the channel; `Connect` pumps them.
            return;
        }
        while !self.blocked && !self.stdin_done {
            match self.stdin.try_recv() {
                Ok(Ok(chunk)) => match cx.write(self.id, &chunk) {
                    Ok(true) => {}
                    // Queued, but over the high-water mark: wait for `Drain`.
                    Ok(false) => self.blocked = true,
                    // The socket is being destroyed; its `Close` tells why.
                    Err(_) => self.stdin_done = true,
                },
                Ok(Err(e)) => {
                    self.fail(e);
                    let _ = cx.destroy(self.id);
                }
                Err(TryRecvError::Empty) => return,
                // Stdin is done: half-close. Everything written goes out first, then our FIN.
                Err(TryRecvError::Disconnected) => {
                    self.stdin_done = true;
                    let _ = cx.end(self.id);
                }
            }
        }
    }

    /// Keeps the first error: it is the cause, later ones are consequences.
    fn fail(&mut self, error: String) {
        self.stdin_done = true;
        self.error.get_or_insert(error);
    }
}

impl Handler for Client {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Connect => {
                self.connected = true;
                self.pump(cx);
            }
            Event::Data(bytes) => {
                if let Err(e) = self.out.write_all(bytes) {
                    // Nobody reads our output (a closed pipe): no point going on.
                    self.fail(format!("writing stdout: {e}"));
                    let _ = cx.destroy(id);
                }
            }
            Event::Drain => {
                self.blocked = false;
                self.pump(cx);
            }
            Event::Error(e) => self.fail(e.to_string()),
            Event::Close(CloseInfo { reason, .. }) => {
                if let Err(e) = self.out.flush() {
                    self.fail(format!("writing stdout: {e}"));
                }
                match reason {
                    CloseReason::Graceful => {}
                    CloseReason::Deadline(d) => self.fail(format!("{d:?} deadline expired")),
                    other => self.fail(format!("connection closed: {other:?}")),
                }
                // The only socket is gone: `run` would return anyway; say so explicitly.
                cx.stop();
            }
            _ => {}
        }
    }

    fn on_wake(&mut self, cx: &mut Context) {
        self.pump(cx);
    }
}
