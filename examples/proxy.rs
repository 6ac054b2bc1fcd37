//! proxy — a TCP proxy: every accepted connection is forwarded to `--upstream` (see
//! CONTRACT.md).
//!
//! ```text
//! cargo run --release --example proxy -- --upstream 127.0.0.1:8080 --listen 127.0.0.1:7000
//! ```
//!
//! What it teaches: pairing two sockets. Each accepted socket gets an outgoing one; bytes
//! flow both ways with backpressure (a full queue on one side pauses reading on the other,
//! `Drain` resumes it). Both sides allow half-open, so a FIN travels across on its own
//! (`End` on one side → `end()` on the other, which finwait sends after every queued byte)
//! and each socket closes by itself once both of its directions have ended. An error or RST
//! on one side resets the other, so its peer learns that the stream broke instead of
//! mistaking a truncated stream for a complete one.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;

use finwait::{
    CloseInfo, CloseReason, ConnectOptions, Context, Event, Handler, ListenOptions, SocketId,
};

const HELP: &str = "\
proxy — a TCP proxy on finwait

USAGE: proxy --upstream HOST:PORT [OPTIONS]

OPTIONS:
  --upstream HOST:PORT        where to forward every accepted connection (required)
  --listen HOST:PORT          address to listen on (default 127.0.0.1:0: a free port)
  --shutdown-timeout-ms N     on SIGTERM/SIGINT, destroy connections still open after N ms
                              (default 5000); a second signal destroys them at once
  --reactors N                reactors (threads) serving the address, one SO_REUSEPORT
                              listener each (default 1)
  -h, --help                  print this help

Prints `listening on IP:PORT` once bound. Logs go to stderr (RUST_LOG=info|debug|trace).
A FIN from either side is forwarded (after all data before it); an RST or error on either
side resets the other; an unreachable upstream resets the client.
";

/// The upstream, the one option of proxy's own (`HOST:PORT`, resolved when serving starts).
fn parse() -> Result<Option<(common::Server, String)>, lexopt::Error> {
    let parsed = common::parse_args(None, |upstream, name, args| {
        match name {
            "upstream" => *upstream = Some(common::address(args, "upstream")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let Some((server, upstream)) = parsed else {
        return Ok(None);
    };
    let upstream = upstream.ok_or("--upstream HOST:PORT is required")?;
    Ok(Some((server, upstream)))
}

fn main() -> ExitCode {
    common::main("proxy", HELP, parse, serve)
}

/// Each socket's attachment: the other half of its pair (`None` once that is gone).
#[derive(Default)]
struct Side {
    partner: Option<SocketId>,
}

struct Proxy {
    upstream: SocketAddr,
}

impl Handler<Side> for Proxy {
    fn on_event(
        &mut self,
        cx: &mut Context<Side>,
        id: SocketId,
        side: &mut Side,
        event: Event<'_>,
    ) {
        match event {
            Event::Accepted(_) => {
                let options = ConnectOptions::new().allow_half_open(true);
                match cx.connect(self.upstream, options) {
                    Ok(up) => {
                        side.partner = Some(up);
                        if let Ok(up_side) = cx.attachment_mut(up) {
                            up_side.partner = Some(id);
                        }
                    }
                    Err(e) => {
                        // Not a network outcome (those arrive as events) but a local failure
                        // such as running out of fds: nothing to forward to, tell the client.
                        log::warn!("{id}: cannot connect upstream: {e}");
                        let _ = cx.reset_and_destroy(id);
                    }
                }
            }
            Event::Data(bytes) => {
                let Some(other) = side.partner else {
                    return;
                };
                // While the upstream is still connecting, finwait queues the write and sends
                // it once connected, so early client data needs no special case. An error
                // (`WriteAfterEnd` during a shutdown, `Destroyed` when the other side just
                // failed) means the other side's own events decide what happens next.
                if let Ok(false) = cx.write(other, bytes) {
                    // The other side's queue is over its high-water mark: stop reading here
                    // until it drains, so memory stays bounded by the peers' speeds.
                    let _ = cx.pause(id);
                }
            }
            Event::Drain => {
                if let Some(other) = side.partner {
                    let _ = cx.resume(other);
                }
            }
            Event::End => {
                // The peer finished sending; pass the FIN on. finwait sends it after every
                // byte already queued on the other side, so no data overtakes it.
                if let Some(other) = side.partner {
                    let _ = cx.end(other);
                }
            }
            Event::Close(info) => {
                let Some(other) = side.partner.take() else {
                    return;
                };
                // The partner outlives this side: it must not act on it any more.
                if let Ok(other_side) = cx.attachment_mut(other) {
                    other_side.partner = None;
                }
                on_close(cx, id, other, info);
            }
            _ => {}
        }
    }
}

/// One side of a pair closed while the other (`other`) may still be live.
fn on_close(cx: &mut Context<Side>, id: SocketId, other: SocketId, info: CloseInfo) {
    let broken = info.had_error
        || matches!(info.reason, CloseReason::PeerReset | CloseReason::Error)
        // Bytes meant for this side's peer were dropped (a FIN-wait deadline on a peer
        // that stopped reading): the stream is truncated, which only a reset can say.
        || info.unsent > 0;
    if broken {
        // RST on the other side: its peer sees ECONNRESET, as if talking to the broken side
        // directly. This also covers an unreachable upstream: a refused (or failed) connect
        // closes the upstream socket with an error before it ever connected, and the client
        // is reset at once. A reset rather than `destroy()` because a FIN would tell the
        // client "the server accepted and finished normally", and a client that already
        // sent a request would take the silence for an empty answer; the RST is the closest
        // thing to the ECONNREFUSED it would have got connecting directly.
        log::debug!("{id}: closed ({info:?}); resetting {other}");
        let _ = cx.reset_and_destroy(other);
        return;
    }
    match info.reason {
        // Both directions ended through this pair: the other side has both FINs too and
        // closes by itself once its queue is flushed.
        CloseReason::Graceful => {}
        // Our own destroy or reset, made because the other side failed: it is already gone.
        CloseReason::LocalDestroy | CloseReason::LocalReset => {}
        // A plain local close without data loss (say a FIN-wait deadline on a peer that
        // never sent its FIN): no reset, but the other side must not wait for a partner
        // that is gone. Flush, FIN, and discard its input until its peer's FIN (bounded by
        // the linger time). During a shutdown whose grace ran out, the other side is being
        // destroyed too and these calls just fail.
        _ => {
            let _ = cx.resume(other);
            let _ = cx.destroy_soon(other);
        }
    }
}

fn serve((server, upstream): (common::Server, String)) -> finwait::Result<()> {
    // Resolved once, at start-up: a host name is looked up here, not per connection (the
    // lookup blocks). Its error names the option: `--upstream HOST:PORT: ...`.
    let upstream = common::resolve("upstream", &upstream)?[0];
    common::serve(
        &server,
        ListenOptions::new().allow_half_open(true),
        move || Proxy { upstream },
    )
}
