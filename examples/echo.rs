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

use std::net::SocketAddr;
use std::process::ExitCode;

use finwait::{Context, Event, ListenOptions, Reactor, SocketId};

const HELP: &str = "\
echo — a TCP echo server on finwait

USAGE: echo [--listen HOST:PORT]

OPTIONS:
  --listen HOST:PORT   address to listen on (default 127.0.0.1:0; port 0 picks a free port)
  -h, --help           print this help
";

fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = match args.next() {
        Ok(a) => a,
        Err(e) => return usage_error(e),
    } {
        use lexopt::prelude::*;
        match arg {
            Long("listen") => match args.value().and_then(|v| v.parse()) {
                Ok(addr) => listen = addr,
                Err(e) => return usage_error(e),
            },
            Short('h') | Long("help") => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            _ => return usage_error(arg.unexpected()),
        }
    }
    if let Err(e) = serve(listen) {
        eprintln!("echo: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("echo: {e}\n\n{HELP}");
    ExitCode::from(2)
}

fn serve(addr: SocketAddr) -> finwait::Result<()> {
    let mut reactor = Reactor::new()?;
    let listener = reactor.listen(addr, ListenOptions::new())?;
    println!("listening on {}", reactor.listener_addr(listener)?);
    reactor.run(
        &mut |cx: &mut Context, id: SocketId, event: Event<'_>| match event {
            Event::Data(bytes) => {
                // A write that fails here only means the socket is already closing; its
                // `Close` event reports what happened.
                if let Ok(false) = cx.write(id, bytes) {
                    let _ = cx.pause(id);
                }
            }
            Event::Drain => {
                let _ = cx.resume(id);
            }
            _ => {}
        },
    )
}
