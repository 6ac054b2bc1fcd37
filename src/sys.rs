//! The syscalls finwait makes on sockets, one function per kind, so each has one place that
//! decides flags and error handling.

use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, SockRef, Socket, Type};

/// `send` with `MSG_NOSIGNAL`: a peer that reset the connection gives `EPIPE` instead of
/// killing a host program that did not ignore `SIGPIPE`.
pub(crate) fn send(stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
    SockRef::from(stream).send_with_flags(data, libc::MSG_NOSIGNAL)
}

/// `sendmsg` with several slices and `MSG_NOSIGNAL` (plain `writev` has no flags argument).
pub(crate) fn send_vectored(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    SockRef::from(stream).send_vectored_with_flags(slices, libc::MSG_NOSIGNAL)
}

pub(crate) fn recv(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    stream.read(buf)
}

pub(crate) fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)
}

/// Closes the fd; with `reset`, `SO_LINGER{on, 0}` first so the kernel sends RST and drops
/// its send buffer. Errors from the option are ignored: the close happens either way, and a
/// non-zero linger is never set (it would block `close` on a non-blocking socket).
pub(crate) fn close(stream: TcpStream, reset: bool) {
    if reset {
        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
    drop(stream);
}

/// A non-blocking listening socket with `SO_REUSEADDR` and the given backlog.
///
/// `TCP_NODELAY` is set on the listener: Linux copies it to every accepted socket, which
/// saves one `setsockopt` per connection.
pub(crate) fn listen(addr: SocketAddr, backlog: u32, no_delay: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(no_delay)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

pub(crate) fn set_keep_alive(stream: &TcpStream, idle: Option<Duration>) -> io::Result<()> {
    let sock = SockRef::from(stream);
    match idle {
        None => sock.set_keepalive(false),
        Some(idle) => sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle)),
    }
}

/// Whether an accept error means "out of file descriptors" (the listener must back off
/// instead of spinning on a connection it cannot take).
pub(crate) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accept errors that concern one connection only; the listener goes on accepting.
pub(crate) fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}
