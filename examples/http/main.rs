//! http — a minimal HTTP/1.1 server: every GET gets `Hello, World!` (see CONTRACT.md).
//!
//! ```text
//! cargo run --release --example http -- --listen 127.0.0.1:8080
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! What it teaches: a request/response protocol on a byte stream. Each connection keeps a
//! small buffer of bytes not yet parsed; every `Data` appends to it and answers each complete
//! request head in order (pipelining), skipping request bodies without buffering them. The
//! head's syntax is httparse's; `request.rs` adds the server's policy (size limits,
//! keep-alive, body framing) on top, and is fuzzed (`fuzz/fuzz_targets/http_request.rs`).
//! Closing is always `end()`: the response is flushed, then the FIN, and finwait keeps
//! reading (we discard) until the client's FIN, so an answer such as 431 sent while the
//! client is still sending never turns into an RST that would destroy it.
//!
//! Shutdown. On SIGTERM/SIGINT, or once a successor took over (`--handover`), the reactor
//! asks every connection to finish (`Handler::on_shutdown_request`, after it read what was
//! waiting there). A request already received is answered with `Connection: close`, then
//! `end()`: the next one in the buffer of a connection paused for backpressure, or one that
//! arrives in the same turn (from then on every answer says `Connection: close`). A
//! connection with no complete request waits for its next one (answered the same way) while
//! requests keep coming, and is ended once it has been quiet for a moment (`common::quiet`:
//! 1 s, at most half the grace): ending it at once would leave a client whose request was
//! on its way — above all the first request of a connection accepted just before the
//! shutdown — with a FIN and no answer (Go's `http.Server.Shutdown` waits for a new
//! connection's first request for the same reason). Once ending, a connection is resumed
//! and read until the client's FIN *without parsing*: a client that pipelined without
//! reading may still send megabytes of requests nobody will answer, and parsing them kept
//! the server busy for seconds after its last client had gone. A write refused because the
//! socket was ended behind our back switches a connection to that mode too.
//!
//! Timers. One idle timer per connection (`set_timeout`), used in one of two modes:
//! - *idle* (between requests, or while a response or a body is moving): `Timeout` after
//!   `--idle-timeout-ms` without traffic → `end()`.
//! - *header* (a request head has started but is not complete): the header deadline is
//!   `first byte + --header-timeout-ms`. The idle timer is re-armed with the time left to
//!   that deadline on every `Data` that leaves the head incomplete, so a client that stalls
//!   gets its `Timeout` exactly at the deadline. Since traffic re-arms the idle timer, a
//!   client trickling one byte at a time would keep pushing the `Timeout` back: each `Data`
//!   therefore also compares the deadline with the reactor's clock itself. Either way the
//!   answer is `408` and `end()`. The timer is only touched when a head stays incomplete
//!   (or on a mode change), so a client sending whole requests costs no timer work.

#[path = "../common/mod.rs"]
mod common;
mod request;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use finwait::{Context, Event, Handler, ListenOptions, SocketId};

use request::{Parse, Request, Version};

/// The reactor's context, with each socket's [`Conn`] attached.
type Cx = Context<Conn>;

const HELP: &str = concat!(
    "\
http — a minimal HTTP/1.1 server on finwait

USAGE: http [OPTIONS]

Answers every GET with `200 Hello, World!`, HEAD with the same headers, other methods with
405. Keep-alive and pipelining as in HTTP/1.1; HTTP/1.0 closes unless it asks for
keep-alive. Malformed requests get 400, header sections over 8 KiB 431, request bodies in a
transfer coding (Transfer-Encoding: chunked) 501, then the connection ends.

OPTIONS:
  --listen HOST:PORT          address to listen on (default 127.0.0.1:0: a free port)
  --idle-timeout-ms N         end() a connection with no traffic either way for N ms
                              between requests (default 5000, 0 = off)
  --header-timeout-ms N       answer 408 and end() when a request's header section is not
                              complete N ms after its first byte (default 10000, 0 = off)
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

const BODY: &[u8] = b"Hello, World!\n";

struct Options {
    idle_timeout_ms: u64,
    header_timeout_ms: u64,
}

fn parse_args() -> Result<Option<(common::Server, Options)>, lexopt::Error> {
    let defaults = Options {
        idle_timeout_ms: 5000,
        header_timeout_ms: 10_000,
    };
    common::parse_args(defaults, |o, name, args| {
        match name {
            "idle-timeout-ms" => o.idle_timeout_ms = common::value(args, "idle-timeout-ms")?,
            "header-timeout-ms" => o.header_timeout_ms = common::value(args, "header-timeout-ms")?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn main() -> ExitCode {
    common::main("http", HELP, parse_args, serve)
}

/// What the connection's idle timer is currently armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// `--idle-timeout-ms` (or off).
    Idle,
    /// The header deadline of a started head.
    Header,
    /// Disarmed: the connection is ending.
    Off,
}

/// Per-connection state: the socket's attachment, handed to every event of it.
struct Conn {
    /// Bytes received and not yet parsed start at `buf[pos]`. Appended to only while not
    /// blocked, and parsing consumes it until an incomplete head (under `MAX_HEAD` bytes, or
    /// the parser says 431), so it never holds more than `MAX_HEAD` + one read.
    buf: Vec<u8>,
    pos: usize,
    /// Body bytes of the last request still to be skipped.
    skip: u64,
    /// When the first byte of the current, still incomplete head arrived.
    head_started: Option<Instant>,
    /// A response could not be queued under the high-water mark: reading is paused and the
    /// rest of `buf` waits for `Drain`.
    blocked: bool,
    /// We called `end()` (or the peer ended): further input is discarded.
    ending: bool,
    timer: Timer,
}

impl Default for Conn {
    fn default() -> Conn {
        Conn {
            buf: Vec::new(),
            pos: 0,
            skip: 0,
            head_started: None,
            blocked: false,
            ending: false,
            timer: Timer::Idle,
        }
    }
}

struct Server {
    idle: Option<Duration>,
    header: Option<Duration>,
    /// How long a connection with nothing to answer may stay quiet during a shutdown.
    quiet: Duration,
}

impl Handler<Conn> for Server {
    fn on_event(&mut self, cx: &mut Cx, id: SocketId, c: &mut Conn, event: Event<'_>) {
        match event {
            Event::Data(mut bytes) => {
                if c.ending {
                    // After end(): finwait reads until the peer's FIN; nothing to do here.
                    return;
                }
                if c.pos == c.buf.len() {
                    // Nothing buffered: skip body bytes straight from the read buffer.
                    c.buf.clear();
                    c.pos = 0;
                    let n = c.skip.min(bytes.len() as u64) as usize;
                    c.skip -= n as u64;
                    bytes = &bytes[n..];
                }
                c.buf.extend_from_slice(bytes);
                self.process(cx, id, c);
            }
            Event::Drain => {
                if !c.blocked || c.ending {
                    return;
                }
                c.blocked = false;
                self.process(cx, id, c);
                if !c.blocked && !c.ending {
                    let _ = cx.resume(id);
                }
            }
            Event::Timeout => self.on_timeout(cx, id, c),
            Event::End => {
                // The client finished sending. Without allow_half_open finwait ends the
                // socket right after this handler, after every response already queued; a
                // partial head left in the buffer can never complete and is dropped.
                c.ending = true;
            }
            // The attachment is dropped with the socket after `Close`: nothing to clean up.
            _ => {}
        }
    }

    /// The graceful shutdown asks this connection to finish. Whatever had arrived was read
    /// (and answered, with `Connection: close`) before this call, unless the connection was
    /// paused: then the next request waiting in its buffer gets that last answer.
    fn on_shutdown_request(&mut self, cx: &mut Cx, id: SocketId, c: &mut Conn) {
        if c.ending {
            return;
        }
        if c.blocked {
            c.blocked = false;
            let _ = cx.resume(id);
        }
        self.process(cx, id, c);
        // No complete request was waiting (an idle keep-alive connection, a new one whose
        // first request has not arrived, or a head still arriving): the next request gets
        // the last answer; a connection quiet for `quiet` is ended (`process` armed the
        // timer for the shutdown; a head in progress keeps its header deadline).
        if !c.ending && c.timer != Timer::Header {
            c.timer = Timer::Idle;
            if cx.set_timeout(id, Some(self.quiet)).is_err() {
                finish(cx, id, c);
            }
        }
    }
}

impl Server {
    /// The idle timeout in force: `--idle-timeout-ms`, or `quiet` during a shutdown.
    fn idle(&self, cx: &Cx) -> Option<Duration> {
        if cx.is_shutting_down() {
            Some(self.idle.map_or(self.quiet, |idle| idle.min(self.quiet)))
        } else {
            self.idle
        }
    }

    /// Answers every complete request in the buffer, in order, then sets the timer. During a
    /// graceful shutdown the first answer says `Connection: close` and ends the connection.
    fn process(&mut self, cx: &mut Cx, id: SocketId, c: &mut Conn) {
        let mut incomplete = false;
        while !c.ending && !c.blocked {
            let available = (c.buf.len() - c.pos) as u64;
            if c.skip > 0 {
                let n = c.skip.min(available);
                c.skip -= n;
                c.pos += n as usize;
                if c.skip > 0 {
                    break;
                }
            }
            if c.pos == c.buf.len() {
                break;
            }
            match request::parse(&c.buf[c.pos..]) {
                Ok(Parse::Incomplete) => {
                    incomplete = true;
                    break;
                }
                Ok(Parse::Complete { request, head_len }) => {
                    c.pos += head_len;
                    c.skip = request.content_length;
                    c.head_started = None;
                    match respond(cx, id, &request, cx.is_shutting_down()) {
                        Answer::Refused => {
                            // The socket was ended (or destroyed) without us: nothing more
                            // can be answered.
                            log::debug!("{id}: writes refused, discarding further requests");
                            finish(cx, id, c);
                        }
                        Answer::Queued {
                            keep_alive: false, ..
                        } => finish(cx, id, c),
                        Answer::Queued { below: true, .. } => {}
                        Answer::Queued { below: false, .. } => {
                            // The client is not reading its responses: stop reading its
                            // requests until they drain.
                            c.blocked = true;
                            let _ = cx.pause(id);
                        }
                    }
                }
                Err(e) => {
                    // 400, 431 or 501: either way the next request's start is unknown.
                    log::debug!("{id}: request head refused: {e:?}");
                    let _ = cx.write_owned(id, error_response(e.status(), e.reason()));
                    finish(cx, id, c);
                }
            }
        }
        // Drop what was consumed; what is left is an incomplete head or waits for `Drain`.
        if c.pos == c.buf.len() {
            c.buf.clear();
        } else {
            c.buf.drain(..c.pos);
        }
        c.pos = 0;
        if c.ending {
            return;
        }
        let header_deadline = match self.header {
            Some(limit) if incomplete && !c.blocked => {
                Some(*c.head_started.get_or_insert(cx.now()) + limit)
            }
            _ => {
                c.head_started = None;
                None
            }
        };
        match header_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(cx.now());
                if left.is_zero() {
                    // A trickling client: traffic kept re-arming the timer, the clock says
                    // the deadline passed.
                    request_timeout(cx, id, c);
                } else {
                    c.timer = Timer::Header;
                    let _ = cx.set_timeout(id, Some(left));
                }
            }
            None if c.timer != Timer::Idle => {
                c.timer = Timer::Idle;
                let _ = cx.set_timeout(id, self.idle(cx));
            }
            None => {}
        }
    }

    fn on_timeout(&mut self, cx: &mut Cx, id: SocketId, c: &mut Conn) {
        match c.timer {
            Timer::Off => {}
            Timer::Idle => {
                log::debug!("{id}: idle, ending");
                finish(cx, id, c);
            }
            Timer::Header => match (c.head_started, self.header) {
                (Some(started), Some(limit)) => {
                    let deadline = started + limit;
                    if cx.now() >= deadline {
                        request_timeout(cx, id, c);
                    } else {
                        // Fired early only if re-armed by traffic in between; aim again.
                        let left = deadline.saturating_duration_since(cx.now());
                        let _ = cx.set_timeout(id, Some(left));
                    }
                }
                _ => {
                    c.timer = Timer::Idle;
                    let _ = cx.set_timeout(id, self.idle(cx));
                }
            },
        }
    }
}

/// What became of a response.
enum Answer {
    /// Queued. `below`: the write queue is still under the high-water mark; `keep_alive`: the
    /// connection stays open for the next request.
    Queued { below: bool, keep_alive: bool },
    /// The socket takes no more writes: it was ended (or destroyed) without us.
    Refused,
}

/// Writes the response to one request; with `last`, it says `Connection: close` whatever the
/// request asked for.
fn respond(cx: &mut Cx, id: SocketId, request: &Request, last: bool) -> Answer {
    let keep_alive = request.keep_alive && !last;
    let (status, extra, body): (&str, &str, &[u8]) = match request.method.as_str() {
        "GET" => ("200 OK", "", BODY),
        "HEAD" => ("200 OK", "", b""),
        _ => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            b"Method Not Allowed\n",
        ),
    };
    // HEAD announces the length a GET would have.
    let length = if request.method == "HEAD" {
        BODY.len()
    } else {
        body.len()
    };
    let connection = match (request.version, keep_alive) {
        (_, false) => "Connection: close\r\n",
        (Version::Http10, true) => "Connection: keep-alive\r\n",
        (Version::Http11, true) => "",
    };
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\
             {extra}{connection}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    match cx.write_owned(id, out) {
        Ok(below) => Answer::Queued { below, keep_alive },
        Err(_) => Answer::Refused,
    }
}

fn error_response(status: u16, reason: &str) -> Vec<u8> {
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn request_timeout(cx: &mut Cx, id: SocketId, c: &mut Conn) {
    log::debug!("{id}: request header timeout");
    let _ = cx.write_owned(id, error_response(408, "Request Timeout"));
    finish(cx, id, c);
}

/// Ends the connection: queued responses, then FIN. finwait goes on reading until the
/// client's FIN (bounded by its FIN-wait deadline); we ignore what it reads.
fn finish(cx: &mut Cx, id: SocketId, c: &mut Conn) {
    c.ending = true;
    c.blocked = false;
    c.head_started = None;
    c.buf = Vec::new();
    c.pos = 0;
    c.timer = Timer::Off;
    let _ = cx.set_timeout(id, None);
    // Reading may have been paused for backpressure: the discarding reads must go on.
    let _ = cx.resume(id);
    let _ = cx.end(id);
}

fn serve((args, o): (common::Server, Options)) -> finwait::Result<()> {
    let ms = |n: u64| (n > 0).then(|| Duration::from_millis(n));
    let idle = ms(o.idle_timeout_ms);
    let header = ms(o.header_timeout_ms);
    let quiet = common::quiet(&args);
    common::serve(&args, ListenOptions::new().idle_timeout(idle), move || {
        Server {
            idle,
            header,
            quiet,
        }
    })
}
