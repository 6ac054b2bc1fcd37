//! tokio_echo — a tokio echo server (current-thread runtime), for the benchmarks.
//!
//! ```text
//! cargo run --release -p finwait-bench --example tokio_echo -- --listen 127.0.0.1:7000
//! ```
//!
//! One task per connection: wait until readable, read into a 64 KiB buffer shared by all
//! tasks of the thread, write back what the kernel takes at once and keep only the rest in a
//! per-connection buffer (flushed before reading again: backpressure). This costs an idle
//! connection no buffer, like the mio and finwait servers, instead of the 8 KiB that
//! `tokio::io::copy` allocates per task. On EOF: flush, `shutdown(Write)`, close. SIGTERM
//! ends the process (default action).

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
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
                println!(
                    "tokio_echo — tokio current-thread echo server\n\n\
                     USAGE: tokio_echo [--listen HOST:PORT]"
                );
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("USAGE: tokio_echo [--listen HOST:PORT]");
    ExitCode::from(2)
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    // The same backlog as finwait's default (tokio's `bind` uses 128, which drops SYNs under
    // a burst of connects and would skew the comparison).
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = echo(stream).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("tokio_echo: accept: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        stream.readable().await?;
        // Read and write back synchronously while the shared buffer is borrowed.
        let eof = BUF.with(|buf| -> io::Result<bool> {
            let mut buf = buf.borrow_mut();
            loop {
                let n = match stream.try_read(&mut buf) {
                    Ok(0) => return Ok(true),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let mut off = 0;
                while off < n {
                    match stream.try_write(&buf[off..n]) {
                        Ok(w) => off += w,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if off < n {
                    pending.extend_from_slice(&buf[off..n]);
                    return Ok(false);
                }
            }
        })?;
        if !pending.is_empty() {
            stream.write_all(&pending).await?;
            pending = Vec::new();
        }
        if eof {
            stream.shutdown().await?;
            return Ok(());
        }
    }
}
