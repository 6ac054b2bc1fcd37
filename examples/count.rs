//! count — counts the bytes a peer sends and answers after its FIN (see CONTRACT.md).
//!
//! ```text
//! cargo run --release --example count -- --listen 127.0.0.1:7002
//! printf 'hello' | cargo run --release --example client -- --connect 127.0.0.1:7002   # 5
//! ```
//!
//! What it teaches: half-open connections. With `allow_half_open` the peer's FIN (`End`)
//! means only "I have nothing more to send": our side stays writable until we `end()` it, so
//! the answer can follow the question's end. Without it the reactor would end the socket
//! right after `End` (a write made inside the `End` handler would still go out, but a server
//! that answers later — after a database call, say — would find the socket ended).

mod common;

use std::process::ExitCode;

use finwait::{Context, Event, ListenOptions, SocketId};

const HELP: &str = concat!(
    "\
count — answers each connection with the number of bytes it sent, after its FIN

USAGE: count [OPTIONS]

OPTIONS:
  --listen HOST:PORT          address to listen on (default 127.0.0.1:0: a free port)
  --shutdown-timeout-ms N     on SIGTERM/SIGINT, destroy connections still open after N ms
                              (default 5000); a second signal destroys them at once
  --reactors N                reactors (threads) serving the address, one SO_REUSEPORT
                              listener each (default 1)
",
    common_help!(),
    "  -h, --help                  print this help

Each connection: read until the peer half-closes (FIN), then write the byte count in
decimal and a newline, then FIN. Nothing is written before the peer's FIN.
Prints `listening on IP:PORT` once bound. Logs go to stderr (RUST_LOG=info|debug|trace).
"
);

/// count has no options of its own.
fn parse() -> Result<Option<common::Server>, lexopt::Error> {
    Ok(common::parse_args((), |_, _, _| Ok(false))?.map(|(server, ())| server))
}

fn main() -> ExitCode {
    common::main("count", HELP, parse, serve)
}

fn serve(server: common::Server) -> finwait::Result<()> {
    // The peer's FIN must not end our side: the answer comes after it.
    common::serve(&server, ListenOptions::new().allow_half_open(true), || {
        |cx: &mut Context, id: SocketId, event: Event<'_>| {
            // `Data` needs no code: the reactor already counts every byte it reads
            // (`bytes_read`), so this server keeps no per-connection state at all.
            if let Event::End = event {
                // `End` comes after the last `Data`, so the count is final. An error means the
                // socket was already ended (a shutdown started) or destroyed: nothing to answer.
                if let Ok(n) = cx.bytes_read(id) {
                    let _ = cx.end_with(id, format!("{n}\n").as_bytes());
                }
            }
        }
    })
}
