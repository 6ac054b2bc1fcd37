//! goodbye — writes a message on each connection and closes it gracefully (see CONTRACT.md).
//!
//! ```text
//! cargo run --release --example goodbye -- --listen 127.0.0.1:7001 --message 'Bye!\n'
//! ```
//!
//! What it teaches: closing without an RST. A server that writes and closes at once loses its
//! own message whenever the peer had sent something first: Linux answers `close()` on a socket
//! with unread input by sending RST, and an RST makes the peer's kernel throw away whatever it
//! had not yet handed to the program. `destroy_soon` is the cure: flush, FIN, then read and
//! discard until the peer's FIN (bounded by the linger deadline), and only then close.

mod common;

use std::process::ExitCode;

use finwait::{Context, Event, ListenOptions, SocketId};

const HELP: &str = concat!(
    "\
goodbye — writes a message on every connection, then closes it gracefully

USAGE: goodbye [OPTIONS]

OPTIONS:
  --listen HOST:PORT          address to listen on (default 127.0.0.1:0: a free port)
  --message TEXT              what to write on each connection, then FIN (default
                              \"Goodbye\\n\"); the escapes \\n \\r \\t \\\\ stand for a newline,
                              a carriage return, a tab, a backslash (any other
                              backslash is an error); all else is sent as given
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
    message: String,
}

fn parse() -> Result<Option<(common::Server, Options)>, lexopt::Error> {
    let defaults = Options {
        message: "Goodbye\n".to_string(),
    };
    common::parse_args(defaults, |o, name, args| {
        match name {
            "message" => {
                let text: String = common::value(args, "message")?;
                o.message = unescape(&text).map_err(|e| common::invalid("message", &text, e))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// `--message` with its escapes replaced: `\n`, `\r`, `\t` and `\\`; any other backslash is
/// refused rather than guessed at.
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{other} (\\n \\r \\t \\\\ are understood)"
                ));
            }
            None => return Err("a lone backslash at the end (write \\\\ for one)".into()),
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    common::main("goodbye", HELP, parse, serve)
}

fn serve((server, o): (common::Server, Options)) -> finwait::Result<()> {
    let message = o.message.into_bytes();
    common::serve(&server, ListenOptions::new(), move || {
        let message = message.clone();
        move |cx: &mut Context, id: SocketId, event: Event<'_>| {
            if let Event::Accepted(_) = event {
                // Whatever the kernel does not take at once is queued; `destroy_soon` flushes
                // it before the FIN, so the message goes out whole even to a slow reader.
                let _ = cx.write(id, &message);
                // Not `end()`: we want nothing the peer sends (no `Data`, no `End`), and the
                // linger deadline bounds how long a peer that never sends its FIN can hold us.
                // Not `destroy()`: unread input would turn the close into an RST and cut the
                // message. Errors only mean the socket is already gone; its `Close` says how.
                let _ = cx.destroy_soon(id);
            }
        }
    })
}
