//! proxy — a TCP proxy: every accepted connection is forwarded to `--upstream` (see
//! CONTRACT.md).
//!
//! ```text
//! cargo run --release --example proxy -- --upstream 127.0.0.1:8080 --listen 127.0.0.1:7000
//! ```
//!
//! What it teaches: how little a proxy needs. Each accepted socket gets an outgoing one and
//! the two are piped (`Context::pipe`): bytes flow both ways with backpressure, a FIN travels
//! across after every byte before it, each socket closes by itself once both of its
//! directions have ended, and an error or RST on one side resets the other — so a peer
//! learns that the stream broke instead of mistaking a truncated stream for a complete one.
//! An unreachable upstream resets the client. The pipe reports each pair's end once.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;

use finwait::{
    ConnectOptions, Context, Event, Handler, ListenOptions, PipeOptions, PipeSummary, SocketId,
    Splice,
};

const HELP: &str = concat!(
    "\
proxy — a TCP proxy on finwait

USAGE: proxy --upstream HOST:PORT [OPTIONS]

OPTIONS:
  --upstream HOST:PORT        where to forward every accepted connection (required)
  --listen HOST:PORT          address to listen on (default 127.0.0.1:0: a free port)
  --shutdown-timeout-ms N     on SIGTERM/SIGINT, destroy connections still open after N ms
                              (default 5000); a second signal destroys them at once
  --reactors N                reactors (threads) serving the address, one SO_REUSEPORT
                              listener each (default 1)
  --splice auto|on|off        forward with splice(2), kernel to kernel: auto (default) once
                              a direction streams, on from the start, off: always copy
",
    common_help!(),
    "  -h, --help                  print this help

Prints `listening on IP:PORT` once bound. Logs go to stderr (RUST_LOG=info|debug|trace).
A FIN from either side is forwarded (after all data before it); an RST or error on either
side resets the other; an unreachable upstream resets the client.
"
);

/// proxy's own options: the upstream (`HOST:PORT`, resolved when serving starts) and when to
/// splice.
#[derive(Default)]
struct Own {
    upstream: Option<String>,
    splice: Option<Splice>,
}

fn parse() -> Result<Option<(common::Server, String, Splice)>, lexopt::Error> {
    let parsed = common::parse_args(Own::default(), |own, name, args| {
        match name {
            "upstream" => own.upstream = Some(common::address(args, "upstream")?),
            "splice" => {
                let text: String = common::value(args, "splice")?;
                own.splice = Some(match text.as_str() {
                    "auto" => Splice::Auto,
                    "on" => Splice::On,
                    "off" => Splice::Off,
                    _ => {
                        return Err(
                            common::invalid("splice", &text, "expected auto, on or off").into()
                        );
                    }
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let Some((server, own)) = parsed else {
        return Ok(None);
    };
    let upstream = own.upstream.ok_or("--upstream HOST:PORT is required")?;
    Ok(Some((server, upstream, own.splice.unwrap_or_default())))
}

fn main() -> ExitCode {
    common::main("proxy", HELP, parse, serve)
}

struct Proxy {
    upstream: SocketAddr,
    pipe: PipeOptions,
}

impl Handler for Proxy {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        if let Event::Accepted(_) = event {
            let piped = cx
                .connect(self.upstream, ConnectOptions::new())
                .and_then(|upstream| cx.pipe(id, upstream, self.pipe));
            if let Err(e) = piped {
                // Not a network outcome (those arrive as events and the pipe handles them)
                // but a local failure such as running out of fds: nothing to forward to.
                log::warn!("{id}: cannot connect upstream: {e}");
                let _ = cx.reset_and_destroy(id);
            }
        }
    }

    fn on_pipe_closed(&mut self, _: &mut Context, pair: PipeSummary) {
        log::debug!(
            "{}: {} bytes up, {} down; {:?} closed first ({:?}, {:?})",
            pair.pipe,
            pair.a_to_b,
            pair.b_to_a,
            pair.first_closed,
            pair.a_close.reason,
            pair.b_close.reason
        );
    }
}

fn serve((server, upstream, splice): (common::Server, String, Splice)) -> finwait::Result<()> {
    // Resolved once, at start-up: a host name is looked up here, not per connection (the
    // lookup blocks). Its error names the option: `--upstream HOST:PORT: ...`.
    let upstream = common::resolve("upstream", &upstream)?[0];
    common::serve(&server, ListenOptions::new(), move || Proxy {
        upstream,
        pipe: PipeOptions::new().splice(splice),
    })
}
