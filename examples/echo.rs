//! echo — echoes every byte back (see CONTRACT.md).
//!
//! ```text
//! cargo run --release --example echo -- --listen 127.0.0.1:7000
//! ```
//!
//! What it teaches: backpressure. When the peer does not read, `write` returns false; the
//! server then pauses reading from that peer and resumes on `Drain`, so its memory stays
//! bounded whatever the peer does. The peer's FIN needs no code: without `allow_half_open`
//! the reactor ends the socket itself once everything echoed has been flushed.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use finwait::{Context, Event, ListenOptions, SocketId};

const HELP: &str = "\
echo — a TCP echo server on finwait

USAGE: echo [OPTIONS]

OPTIONS:
  --listen HOST:PORT          address to listen on (default 127.0.0.1:0: a free port)
  --idle-timeout-ms N         end() a connection with no traffic either way for N ms
                              (0 = off, the default)
  --shutdown-timeout-ms N     on SIGTERM/SIGINT, destroy connections still open after N ms
                              (default 5000); a second signal destroys them at once
  --reactors N                reactors (threads) serving the address, one SO_REUSEPORT
                              listener each (default 1)
  -h, --help                  print this help

Prints `listening on IP:PORT` once bound. Logs go to stderr (RUST_LOG=info|debug|trace).
";

struct Options {
    idle_timeout_ms: u64,
}

fn parse() -> Result<Option<(common::Server, Options)>, lexopt::Error> {
    common::parse_args(Options { idle_timeout_ms: 0 }, |o, name, args| {
        match name {
            "idle-timeout-ms" => o.idle_timeout_ms = common::value(args, "idle-timeout-ms")?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn main() -> ExitCode {
    common::main("echo", HELP, parse, serve)
}

fn serve((server, o): (common::Server, Options)) -> finwait::Result<()> {
    let idle = (o.idle_timeout_ms > 0).then(|| Duration::from_millis(o.idle_timeout_ms));
    common::serve(&server, ListenOptions::new().idle_timeout(idle), || {
        |cx: &mut Context, id: SocketId, event: Event<'_>| match event {
            Event::Data(bytes) => {
                // An error here only means the socket is already ending (its `Close` says how);
                // bytes read after our end() have nowhere to go and are dropped.
                if let Ok(false) = cx.write(id, bytes) {
                    let _ = cx.pause(id);
                }
            }
            Event::Drain => {
                let _ = cx.resume(id);
            }
            // Idle: end gracefully. Everything already echoed is flushed before the FIN.
            Event::Timeout => {
                let _ = cx.end(id);
            }
            _ => {}
        }
    })
}
