//! mio_echo — the baseline: a minimal, correct echo server on raw mio, for the benchmarks.
//!
//! ```text
//! cargo run --release --example mio_echo -- --listen 127.0.0.1:7000
//! ```
//!
//! Edge-triggered: every socket is read until `WouldBlock`; what the kernel does not take is
//! kept in a per-connection buffer and reading stops until it is flushed (backpressure). On
//! the peer's EOF: flush, `shutdown(Write)`, close (the peer's FIN has arrived by then). One
//! 64 KiB read buffer is shared by all connections. No timeouts, no graceful shutdown:
//! SIGTERM ends the process (default action).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet written back.
    pending: Vec<u8>,
    /// Head of `pending` already written.
    head: usize,
    /// The last read did not end in `WouldBlock`: data may be waiting.
    readable: bool,
    /// The peer's FIN was read.
    eof: bool,
}

fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next().map(|v| v.parse()) {
                Some(Ok(addr)) => listen = addr,
                _ => return usage(),
            },
            "-h" | "--help" => {
                println!("mio_echo — raw mio echo server\n\nUSAGE: mio_echo [--listen HOST:PORT]");
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    match serve(listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mio_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("USAGE: mio_echo [--listen HOST:PORT]");
    ExitCode::from(2)
}

fn serve(addr: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&poll, &listener, &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                conn.readable = true;
            }
            if !service(conn, &mut buf) {
                // Closing the fd also removes it from epoll.
                drop(conns.remove(key));
            }
        }
    }
}

/// Binds with the same backlog as finwait's default (1024; mio's own `bind` uses 128, which
/// drops SYNs under a burst of connects and would skew the comparison).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn accept(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                if poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_ok()
                {
                    entry.insert(Conn {
                        stream,
                        pending: Vec::new(),
                        head: 0,
                        readable: true,
                        eof: false,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: leave the rest in the backlog until the next edge.
                eprintln!("mio_echo: accept: {e}");
                return;
            }
        }
    }
}

/// Flushes, reads and echoes until the kernel says `WouldBlock`. Returns false once the
/// connection is finished (or failed) and must be closed.
fn service(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        // Flush what is left from before; nothing new is read until it is gone.
        while conn.head < conn.pending.len() {
            match conn.stream.write(&conn.pending[conn.head..]) {
                Ok(n) => conn.head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if !conn.pending.is_empty() {
            conn.pending = Vec::new();
            conn.head = 0;
        }
        if conn.eof {
            // Everything echoed: send our FIN; the peer's already came, so we are done.
            let _ = conn.stream.shutdown(Shutdown::Write);
            return false;
        }
        if !conn.readable {
            return true;
        }
        let n = match conn.stream.read(buf) {
            Ok(0) => {
                conn.eof = true;
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.readable = false;
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        // Echo straight from the read buffer; keep only what the kernel did not take.
        let mut off = 0;
        while off < n {
            match conn.stream.write(&buf[off..n]) {
                Ok(w) => off += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if off < n {
            // The send buffer is full: keep the rest and wait for the writable edge.
            conn.pending.extend_from_slice(&buf[off..n]);
            return true;
        }
    }
}
