//! tokio_proxy — the idiomatic tokio TCP proxy, a peer of the proxy benchmark
//! (`scripts/proxy_bench.sh`, BENCHMARKS.md "Proxy").
//!
//! ```text
//! cargo run --release -p finwait-bench --example tokio_proxy -- --upstream 127.0.0.1:8080
//! ```
//!
//! `current_thread` runtime (one thread), one task per accepted connection: connect to the
//! upstream, `TCP_NODELAY` on both sockets, then `tokio::io::copy_bidirectional` (an 8 KiB
//! buffer per direction) until both directions have ended; it passes a FIN on with
//! `shutdown()` after the bytes before it. On an error (a reset, a refused upstream) both
//! sockets are simply dropped, as idiomatic code does. Prints exactly one `listening on
//! IP:PORT` line once bound; SIGTERM ends the process (default action).

use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use tokio::net::{TcpSocket, TcpStream};

const USAGE: &str = "USAGE: tokio_proxy --upstream HOST:PORT [--listen HOST:PORT]";

fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next().map(|v| v.parse()) {
                Some(Ok(addr)) => listen = addr,
                _ => return usage(),
            },
            "--upstream" => match args.next().and_then(|v| v.to_socket_addrs().ok()?.next()) {
                Some(addr) => upstream = Some(addr),
                None => return usage(),
            },
            "-h" | "--help" => {
                println!("tokio_proxy — tokio copy_bidirectional proxy, one thread\n\n{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let Some(upstream) = upstream else {
        return usage();
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(listen, upstream)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

async fn serve(addr: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    // The backlog of the other peers (tokio's `bind` uses 128, which drops SYNs under a burst).
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
            Ok((client, _)) => {
                tokio::spawn(async move {
                    let _ = forward(client, upstream).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("tokio_proxy: accept: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
