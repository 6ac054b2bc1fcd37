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
//!
//! Shutdown (SIGTERM, or a handover to a successor with `--handover`): echo has no way to
//! say "this answer is the last" but the FIN, so each connection is ended right after its
//! next echo — the FIN travels right behind an answer — or once it has been quiet for a
//! moment (`common::quiet`: 1 s, at most half the grace). Ending every connection at once
//! would cut the request of a client whose bytes were on their way: a connection accepted a
//! moment before the shutdown, whose first bytes had not arrived yet, would get nothing but a
//! FIN (Go's `http.Server.Shutdown` waits for a new connection's first request for the same
//! reason). A connection whose peer is not reading its echoes ends at once (queued bytes
//! flushed, then FIN).

mod common;

use std::process::ExitCode;
use std::time::Duration;

use finwait::{Context, Event, Handler, ListenOptions, ReadyState, SocketId};

const HELP: &str = concat!(
    "\
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
",
    common_help!(),
    "  -h, --help                  print this help

Prints `listening on IP:PORT` once bound. Logs go to stderr (RUST_LOG=info|debug|trace).
"
);

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
    let quiet = common::quiet(&server);
    common::serve(
        &server,
        ListenOptions::new().idle_timeout(idle),
        move || Echo { quiet },
    )
}

struct Echo {
    /// How long a connection may stay quiet during a shutdown before it is ended.
    quiet: Duration,
}

impl Handler for Echo {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        match event {
            Event::Data(bytes) => {
                // An error here only means the socket is already ending (its `Close` says how);
                // bytes read after our end() have nowhere to go and are dropped.
                let below = cx.write(id, bytes);
                if cx.is_shutting_down() {
                    // The answer is queued: the FIN follows it.
                    let _ = cx.end(id);
                } else if let Ok(false) = below {
                    let _ = cx.pause(id);
                }
            }
            Event::Drain => {
                let _ = cx.resume(id);
            }
            // Idle, or quiet during a shutdown: end gracefully. Everything already echoed is
            // flushed before the FIN.
            Event::Timeout => {
                let _ = cx.end(id);
            }
            _ => {}
        }
    }

    /// What had arrived was echoed (and the connection ended) just before this call; a
    /// connection still open ends after its next echo, or once quiet for `quiet`.
    fn on_shutdown_request(&mut self, cx: &mut Context, id: SocketId, _: &mut ()) {
        if !matches!(cx.ready_state(id), Ok(ReadyState::Open)) {
            // Already ending (we ended it, or its FIN came: the reactor ends it after the
            // echo).
            return;
        }
        if cx.bytes_queued(id).unwrap_or(0) > 0 {
            // The peer is not reading its echoes (reading may be paused): flush, then FIN.
            let _ = cx.end(id);
            return;
        }
        if cx.set_timeout(id, Some(self.quiet)).is_err() {
            let _ = cx.end(id);
        }
    }
}
