//! The syscalls finwait makes on sockets, one function per kind, so each has one place that
//! decides flags and error handling.
//!
//! ## Which errors are retried, and which end a connection
//!
//! | syscall | retried here | left to readiness | anything else |
//! |---|---|---|---|
//! | `send`/`sendmsg` (`MSG_NOSIGNAL`) | `EINTR` | `EAGAIN`: the rest waits in the queue for the next writable edge | ends the connection: `ECONNRESET`/`EPIPE` as a peer reset (`EPIPE` is returned as `ECONNRESET`), others (`ENOBUFS`, `ENOMEM`, …) as an error; queued bytes are dropped, so the close sends RST |
//! | `recv` | `EINTR` | `EAGAIN`: wait for the next readable edge | ends the connection as above; `0` is the peer's FIN, unless `SO_ERROR` holds a reset ([`take_error`]) |
//! | `shutdown(SHUT_WR)` | `EINTR` | — | `ENOTCONN` means the RST got there first: `SO_ERROR` says which error to report (a reset) |
//! | `getsockopt(SO_ERROR)` | — | — | read once per `EPOLLERR` report and once per completed connect, never per read or write |
//! | `accept4` | `EINTR` | `EAGAIN`: the backlog is empty | `ECONNABORTED`, `EPROTO`, `EPERM`: that connection only, go on; `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: back off ([`is_fd_exhaustion`]); others back off and are reported |
//! | `connect` | — (non-blocking: Linux never waits in it, so it cannot say `EINTR`; mio does not retry it either) | `EINPROGRESS`: completion comes as writability, `SO_ERROR` says how it went | reported as `Error` + `Close` |
//! | `splice` (`SPLICE_F_NONBLOCK`) | `EINTR` | `EAGAIN`: from a socket into a pipe it means the socket is empty *or* the pipe is full (the caller tells them apart by what the pipe holds); from a pipe into a socket, the socket is full | ends the connection of the socket side, as `send`/`recv` (`EPIPE` as `ECONNRESET`) |
//! | `pipe2` | — | — | `EMFILE`/`ENFILE`: no kernel pipe, the pipe copies instead |
//! | `close` | never (Linux frees the fd even when `close` says `EINTR`) | — | ignored |
//! | `epoll_wait` | `EINTR` is a turn with no events | — | returned from `run`/`run_once` |
//! | `bpf`, `mmap`, `setsockopt(SO_ATTACH_REUSEPORT_EBPF)` (a group's steering, once at start) | `EINTR` | — | the group falls back to the kernel's hash (`EPERM` without `CAP_BPF`, `EINVAL` on kernels without the mapped array) |
//!
//! `EINTR` is retried inside each function, so no caller can lose a wake-up to it: a send
//! interrupted before it moved a byte is simply made again. (Linux restarts these calls on
//! its own for handlers installed with `SA_RESTART`, as `signal-hook` does, but a program may
//! install its own.) Tests inject each retried error through [`faults`] (test builds only)
//! and show it invisible to the peer, and inject the errors that end a connection to show
//! how they are reported. `EAGAIN` is injected into `accept4` alone: sockets are registered
//! edge-triggered, and a fake `EAGAIN` from a socket that is not full (or not empty) waits
//! for an edge the kernel never sends.

use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, SockRef, Socket, Type};

/// Runs `call` again while it fails with `EINTR`.
fn retry_eintr<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `send` with `MSG_NOSIGNAL`: a peer that reset the connection gives `EPIPE` instead of
/// killing a host program that did not ignore `SIGPIPE`.
pub(crate) fn send(stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
    retry_eintr(|| {
        faults::check(faults::Call::Send)?;
        SockRef::from(stream).send_with_flags(data, libc::MSG_NOSIGNAL)
    })
    .map_err(reset_not_epipe)
}

/// A send fails with `EPIPE` only once the connection is torn down: finwait never sends after
/// its own `shutdown(SHUT_WR)`, so it is the peer's reset — recorded as `EPIPE` when it came
/// after the peer's FIN (`tcp_reset`, net/ipv4/tcp_input.c), or the `SEND_SHUTDOWN` the reset
/// left behind. Reported as the reset it is, as [`take_error`] does.
fn reset_not_epipe(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EPIPE) {
        io::Error::from_raw_os_error(libc::ECONNRESET)
    } else {
        e
    }
}

/// `sendmsg` with several slices and `MSG_NOSIGNAL` (plain `writev` has no flags argument).
pub(crate) fn send_vectored(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    retry_eintr(|| {
        faults::check(faults::Call::SendVectored)?;
        SockRef::from(stream).send_vectored_with_flags(slices, libc::MSG_NOSIGNAL)
    })
    .map_err(reset_not_epipe)
}

pub(crate) fn recv(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    retry_eintr(|| {
        faults::check(faults::Call::Recv)?;
        stream.read(buf)
    })
}

/// `shutdown(SHUT_WR)`. When the peer's RST got there first the socket is closed and Linux
/// says `ENOTCONN` (`inet_shutdown`, net/ipv4/af_inet.c) while the reset itself still waits
/// in `SO_ERROR`: that reset is the error returned. Should `SO_ERROR` be empty, the
/// connection was still torn down under us, and `ECONNRESET` is the honest name for it.
pub(crate) fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match retry_eintr(|| {
        faults::check(faults::Call::Shutdown)?;
        stream.shutdown(Shutdown::Write)
    }) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
            Err(take_error(stream)
                .unwrap_or_else(|| io::Error::from_raw_os_error(libc::ECONNRESET)))
        }
        other => other,
    }
}

/// Takes the socket's pending error (`SO_ERROR`), if any: after an `EPOLLERR` report this is
/// how a reset is learnt on a socket that nothing reads or writes (paused, after the peer's
/// FIN, nothing queued). Linux records an RST received in `CLOSE_WAIT` — after the peer's FIN
/// — as `EPIPE` (`tcp_reset`, net/ipv4/tcp_input.c); it is still the peer's reset and is
/// returned as `ECONNRESET`.
pub(crate) fn take_error(stream: &TcpStream) -> Option<io::Error> {
    match stream.take_error() {
        Ok(Some(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
            Some(io::Error::from_raw_os_error(libc::ECONNRESET))
        }
        Ok(error) => error,
        // getsockopt itself failed (it cannot for an open socket): nothing learnt.
        Err(_) => None,
    }
}

/// A kernel pipe for `splice`: (read end, write end), both non-blocking and close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    faults::check(faults::Call::Pipe)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `F_SETPIPE_SZ`: the kernel rounds up to a power of two of pages and refuses (`EPERM`)
/// sizes over `/proc/sys/fs/pipe-max-size`, and any growth once the user's pipes total
/// `/proc/sys/fs/pipe-user-pages-soft`, for unprivileged processes (fcntl(2), pipe(7)).
/// Returns the size set.
pub(crate) fn set_pipe_size(pipe: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    faults::check(faults::Call::SetPipeSize)?;
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on an fd we hold, with an integer argument.
    let set = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set as usize)
}

/// `F_GETPIPE_SZ`: the pipe's capacity in bytes.
#[cfg(test)]
pub(crate) fn pipe_size(pipe: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: fcntl on an fd we hold, no argument.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size as usize)
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel (`splice(2)`,
/// `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`); one of the two is a pipe. `Ok(0)` from a socket is
/// its peer's FIN. `EPIPE` is returned as the reset it is (see [`send`]).
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    retry_eintr(|| {
        faults::check(faults::Call::Splice)?;
        // SAFETY: splice between two fds we hold, no offsets.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
    .inspect_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            faults::note_splice_would_block(to);
        }
    })
    .map_err(reset_not_epipe)
}

/// Whether `SIGPIPE` is ignored in this process. A splice into a socket the peer reset raises
/// `SIGPIPE` (no `MSG_NOSIGNAL` reaches `tcp_sendmsg` through a pipe: `sk_stream_error`,
/// net/core/stream.c), so pipes splice only when it cannot kill the process: Rust binaries
/// ignore it from the start, a C host may not.
pub(crate) fn sigpipe_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into ours.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The socket's fd, for `splice`.
pub(crate) fn stream_fd(stream: &TcpStream) -> BorrowedFd<'_> {
    stream.as_fd()
}

/// Sends `data` with `fds` attached (`SCM_RIGHTS`, unix(7)) on a Unix-domain stream socket,
/// in one `sendmsg`: the receiver gets the fds with the first byte of `data`.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE is a pure computation on a length.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(payload) bytes, room for one header and
        // `raw`; CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                payload,
            );
        }
    }
    retry_eintr(|| {
        // SAFETY: `msg` describes valid buffers (see above).
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// Receives into `buf` on a Unix-domain stream socket, with up to `max_fds` fds attached
/// (`SCM_RIGHTS`); received fds are close-on-exec (`MSG_CMSG_CLOEXEC`). More fds than
/// `max_fds` are truncated by the kernel (and closed by it), which the caller sees as a count
/// that does not match what the message says.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let payload = max_fds * std::mem::size_of::<libc::c_int>();
    // SAFETY: CMSG_SPACE is a pure computation on a length.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    let n = retry_eintr(|| {
        // SAFETY: `msg` describes valid, writable buffers (see above).
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer with well-formed headers; each SCM_RIGHTS
    // payload is an array of fds now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                let count = len / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned((data as *const libc::c_int).add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fds))
}

/// A second fd for the same open socket (`F_DUPFD_CLOEXEC`): what a handover offers, while
/// the reactor keeps its own.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Whether `fd` is an open file descriptor of this process (`fcntl(F_GETFD)`).
pub(crate) fn is_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; an fd that is not open gives EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Sets close-on-exec on an inherited fd (systemd passes them without it).
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on an fd we hold.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above, setting a flag.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a listening TCP socket is bound to, after checking that `fd` is one: a stream socket
/// of the IPv4 or IPv6 family with `SO_ACCEPTCONN` set.
pub(crate) fn listening_tcp_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let socket = SockRef::from(&fd);
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if socket.r#type()? != Type::STREAM {
        return Err(invalid("not a stream socket"));
    }
    let addr = socket.local_addr()?;
    if !matches!(addr.domain(), Domain::IPV4 | Domain::IPV6) {
        return Err(invalid("not a TCP socket"));
    }
    if !socket.is_listener()? {
        return Err(invalid("not listening"));
    }
    addr.as_socket().ok_or_else(|| invalid("no IP address"))
}

/// Accepts one connection from the backlog (non-blocking, `SOCK_CLOEXEC`).
pub(crate) fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
    retry_eintr(|| {
        faults::check(faults::Call::Accept)?;
        listener.accept().map(|(stream, _)| stream)
    })
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

/// A non-blocking connect to `addr`, from `local` when given (see
/// [`ConnectOptions::local_addr`](crate::ConnectOptions::local_addr)). Returns once the SYN
/// is on its way; the outcome is reported by the poller.
pub(crate) fn connect(addr: SocketAddr, local: Option<SocketAddr>) -> io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr);
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if local.port() == 0 {
        // Choose the port at connect time, unique for the 4-tuple, instead of at bind time,
        // unique for the local address alone (which would cap a source address at one
        // ephemeral range of connections in all, TIME_WAIT included). socket2 has no setter
        // for it. Best effort: without it (Linux < 4.2) the bind still works.
        let on: libc::c_int = 1;
        // SAFETY: the fd is open (owned by `socket`), and the option value is a live c_int
        // whose size is passed along.
        let _ = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    socket.bind(&local.into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Registers a listener with the poller **level-triggered** (mio only offers edge-triggered
/// registrations): while connections wait in the backlog every poll reports the listener, so
/// the loop can accept one per turn and never call `accept` just to learn the backlog is
/// empty. That last `accept` is not cheap — Linux allocates a socket inode before it finds
/// nothing to accept — and with edge-triggered readiness it is needed after every burst,
/// which under connection churn means once per connection. (nginx drives its listeners the
/// same way.) `interested == false` keeps the registration but reports nothing: a listener
/// that must leave connections in the backlog (at `max_connections`, backing off after fd
/// exhaustion) would otherwise wake every poll.
///
/// The event's data is the mio token, so `mio::Poll` delivers these events like its own.
pub(crate) fn register_listener(
    poller: BorrowedFd<'_>,
    listener: &TcpListener,
    token: mio::Token,
    interested: bool,
) -> io::Result<()> {
    epoll_ctl(poller, libc::EPOLL_CTL_ADD, listener, token, interested)
}

/// Turns a listener's level-triggered interest on or off (see [`register_listener`]).
pub(crate) fn set_listener_interest(
    poller: BorrowedFd<'_>,
    listener: &TcpListener,
    token: mio::Token,
    interested: bool,
) -> io::Result<()> {
    epoll_ctl(poller, libc::EPOLL_CTL_MOD, listener, token, interested)
}

/// Removes a listener from the poller before its fd is closed. Closing an fd removes it from
/// epoll only when no other fd refers to the same open file description (epoll(7), "Will
/// closing a file descriptor cause it to be removed from all epoll interest lists?"): a
/// listener handed to a successor, or adopted from systemd, is still open elsewhere, and its
/// level-triggered readiness would otherwise wake this poller for ever.
pub(crate) fn deregister_listener(
    poller: BorrowedFd<'_>,
    listener: &TcpListener,
) -> io::Result<()> {
    epoll_ctl(poller, libc::EPOLL_CTL_DEL, listener, mio::Token(0), false)
}

fn epoll_ctl(
    poller: BorrowedFd<'_>,
    op: libc::c_int,
    listener: &TcpListener,
    token: mio::Token,
    interested: bool,
) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: if interested { libc::EPOLLIN as u32 } else { 0 },
        u64: token.0 as u64,
    };
    // SAFETY: both fds are open for the duration of the call (borrowed), and `event` is a
    // valid, initialised epoll_event that the kernel only reads.
    let rc = unsafe { libc::epoll_ctl(poller.as_raw_fd(), op, listener.as_raw_fd(), &mut event) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking listening socket with `SO_REUSEADDR` and the given backlog.
///
/// `TCP_NODELAY` is set on the listener: Linux copies it to every accepted socket, which
/// saves one `setsockopt` per connection.
///
/// With `reuse_port`, `SO_REUSEPORT` lets several sockets (one per reactor of a group, or a
/// successor process) bind the same address; the kernel spreads incoming connections over
/// them by a hash of the 4-tuple (socket(7)).
pub(crate) fn listen(
    addr: SocketAddr,
    backlog: u32,
    no_delay: bool,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    Ok(TcpListener::from_std(listen_std(
        addr, backlog, no_delay, reuse_port,
    )?))
}

/// [`listen`] as a `std` listener, for a caller that hands it to another thread.
pub(crate) fn listen_std(
    addr: SocketAddr,
    backlog: u32,
    no_delay: bool,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_tcp_nodelay(no_delay)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Prepares a listening socket made elsewhere (a `std` listener, an fd inherited from systemd
/// or a predecessor) for the reactor: checks it listens, makes it non-blocking, and sets
/// `TCP_NODELAY` on it so accepted sockets inherit it.
pub(crate) fn adopt_listener(
    listener: std::net::TcpListener,
    no_delay: bool,
) -> io::Result<TcpListener> {
    let sock = SockRef::from(&listener);
    if !sock.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is not listening (listen(2) was not called on it)",
        ));
    }
    listener.set_nonblocking(true)?;
    sock.set_tcp_nodelay(no_delay)?;
    Ok(TcpListener::from_std(listener))
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
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

/// Fault injection for tests: the next calls of a kind fail with a chosen errno before they
/// reach the kernel. Compiled to nothing outside `cfg(test)`.
pub(crate) mod faults {
    use std::io;

    /// The syscalls a test can make fail.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) enum Call {
        Send,
        SendVectored,
        Recv,
        Shutdown,
        Accept,
        Splice,
        Pipe,
        SetPipeSize,
    }

    #[cfg(test)]
    thread_local! {
        static PLAN: std::cell::RefCell<Vec<(Call, i32, usize)>> =
            const { std::cell::RefCell::new(Vec::new()) };
        static HITS: std::cell::RefCell<Vec<(Call, i32)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Makes the next `times` calls of `call` on this thread fail with `errno`.
    #[cfg(test)]
    pub(crate) fn inject(call: Call, errno: i32, times: usize) {
        PLAN.with(|p| p.borrow_mut().push((call, errno, times)));
    }

    /// The injected failures that happened on this thread, oldest first; clears the plan.
    #[cfg(test)]
    pub(crate) fn take_hits() -> Vec<(Call, i32)> {
        PLAN.with(|p| p.borrow_mut().clear());
        HITS.with(|h| std::mem::take(&mut *h.borrow_mut()))
    }

    #[cfg(test)]
    #[inline]
    pub(super) fn check(call: Call) -> io::Result<()> {
        let errno = PLAN.with(|p| {
            let mut plan = p.borrow_mut();
            let i = plan.iter().position(|&(c, _, n)| c == call && n > 0)?;
            plan[i].2 -= 1;
            Some(plan[i].1)
        });
        match errno {
            Some(errno) => {
                HITS.with(|h| h.borrow_mut().push((call, errno)));
                Err(io::Error::from_raw_os_error(errno))
            }
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    pub(super) fn check(_: Call) -> io::Result<()> {
        Ok(())
    }

    #[cfg(test)]
    thread_local! {
        static SPLICES_INTO_FULL_SOCKET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Counts an `EAGAIN` from a splice whose destination is a socket: a syscall spent on a
    /// destination that had no room.
    #[cfg(test)]
    pub(super) fn note_splice_would_block(to: std::os::fd::BorrowedFd<'_>) {
        use std::os::fd::AsRawFd;
        // SAFETY: fstat on an fd the caller holds, into a zeroed stat.
        let is_socket = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(to.as_raw_fd(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
        };
        if is_socket {
            SPLICES_INTO_FULL_SOCKET.with(|c| c.set(c.get() + 1));
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    pub(super) fn note_splice_would_block(_: std::os::fd::BorrowedFd<'_>) {}

    /// How many splices into a socket failed with `EAGAIN` on this thread; resets the count.
    #[cfg(test)]
    pub(crate) fn take_splices_into_full_socket() -> usize {
        SPLICES_INTO_FULL_SOCKET.with(|c| c.replace(0))
    }
}

/// Registers a connected (or connecting) socket with the poller for both directions,
/// edge-triggered: one `epoll_ctl` for its whole life.
pub(crate) fn register_socket(
    registry: &mio::Registry,
    stream: &mut TcpStream,
    token: mio::Token,
) -> io::Result<()> {
    registry.register(
        stream,
        token,
        mio::Interest::READABLE | mio::Interest::WRITABLE,
    )
}

pub(crate) fn set_no_delay(stream: &TcpStream, no_delay: bool) -> io::Result<()> {
    stream.set_nodelay(no_delay)
}

pub(crate) fn local_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
    stream.local_addr()
}

pub(crate) fn peer_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
    stream.peer_addr()
}

pub(crate) fn listener_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
    listener.local_addr()
}

/// How a non-blocking connect turned out, once the poller reported the socket writable:
/// `Ok(true)` connected, `Ok(false)` still connecting (a spurious wake-up), or the error the
/// connect failed with (`SO_ERROR`, as-is: a refused connect is `ECONNREFUSED`).
pub(crate) fn connect_outcome(stream: &TcpStream) -> io::Result<bool> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Err(e),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        },
    }
}

/// A new epoll instance, and a second handle on it for registering from the `Context`.
pub(crate) fn poller() -> io::Result<(mio::Poll, mio::Registry)> {
    let poll = mio::Poll::new()?;
    let registry = poll.registry().try_clone()?;
    Ok((poll, registry))
}

/// `epoll_wait` for at most `timeout` (`None`: until something happens). `EINTR` is a turn
/// with no events: the loop goes on (timers, queued work) and polls again.
pub(crate) fn poll(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Option<Duration>,
) -> io::Result<()> {
    match poll.poll(events, timeout) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        other => other,
    }
}

/// Registers the signal pipe of `signal-hook` (readable when SIGINT/SIGTERM arrived).
pub(crate) fn register_signals(
    registry: &mio::Registry,
    signals: &mut signal_hook_mio::v1_0::Signals,
    token: mio::Token,
) -> io::Result<()> {
    registry.register(signals, token, mio::Interest::READABLE)
}

/// An eventfd registered with the poller, for waking it from another thread.
pub(crate) fn waker(registry: &mio::Registry, token: mio::Token) -> io::Result<mio::Waker> {
    mio::Waker::new(registry, token)
}

/// An exclusive `flock(2)` on the directory `dir`, held until the returned fd is dropped.
/// Waits up to `limit` for another holder (`LOCK_NB`, retried every millisecond), then
/// returns `WouldBlock`.
pub(crate) fn lock_directory(dir: &Path, limit: Duration) -> io::Result<OwnedFd> {
    let dir = std::fs::File::open(dir)?;
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on an fd we hold.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(OwnedFd::from(dir));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock if start.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => return Err(e),
        }
    }
}

/// `poll(2)` for readability (or hang-up) of `fds`, waiting as long as it takes; which of them
/// are. `EINTR` is retried.
pub(crate) fn wait_readable(fds: &[BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    retry_eintr(|| {
        // SAFETY: `polled` is a valid array of `polled.len()` pollfds for the call.
        let rc = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    })?;
    Ok(polled.iter().map(|p| p.revents != 0).collect())
}

/// `bpf(2)` commands and constants used by the group's listener steering (`group/steering.rs`),
/// from `linux/bpf.h`.
pub(crate) mod bpf {
    pub(crate) const MAP_TYPE_ARRAY: u32 = 2;
    pub(crate) const MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
    pub(crate) const PROG_TYPE_SK_REUSEPORT: u32 = 21;
    /// `BPF_SK_REUSEPORT_SELECT`: the program picks a listener for new connections only;
    /// migration (`tcp_migrate_req`) stays the kernel's, by hash.
    pub(crate) const SK_REUSEPORT_SELECT: u32 = 39;
    /// `BPF_F_MMAPABLE`: the array's values can be mapped into the process (Linux 5.5).
    pub(crate) const F_MMAPABLE: u32 = 1 << 10;
    pub(crate) const CMD_MAP_CREATE: libc::c_int = 0;
    pub(crate) const CMD_MAP_UPDATE_ELEM: libc::c_int = 2;
    pub(crate) const CMD_MAP_DELETE_ELEM: libc::c_int = 3;
    pub(crate) const CMD_PROG_LOAD: libc::c_int = 5;
}

#[repr(C)]
#[derive(Default)]
struct BpfMapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct BpfMapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct BpfProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf(cmd, attr, sizeof attr)`: the kernel reads the fields it knows of `attr` and takes
/// the rest of its union as zero.
fn bpf_call<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    retry_eintr(|| {
        // SAFETY: `attr` is a `repr(C)` prefix of `union bpf_attr` for `cmd`, valid for the
        // call; the kernel writes nothing past `size_of::<T>()`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T as *mut libc::c_void,
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    })
}

/// `bpf(BPF_MAP_CREATE)`: a new map; its fd.
pub(crate) fn bpf_map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = BpfMapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    let fd = bpf_call(bpf::CMD_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this fd, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `bpf(BPF_MAP_UPDATE_ELEM)` with `BPF_ANY`: `key` and `value` must have the map's sizes.
pub(crate) fn bpf_map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = BpfMapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: 0,
    };
    bpf_call(bpf::CMD_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `bpf(BPF_MAP_DELETE_ELEM)`: `key` must have the map's key size; `ENOENT` (nothing there)
/// is not an error.
pub(crate) fn bpf_map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut attr = BpfMapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    };
    match bpf_call(bpf::CMD_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}

/// `bpf(BPF_PROG_LOAD)`: loads `insns` (encoded `struct bpf_insn`s). Loaded without a
/// verifier log: a log that overflows its buffer fails the load itself (`ENOSPC`), and the
/// verifier writes a line per instruction it checks. Only when the load fails is it tried
/// again with a log, whose end the error then carries.
pub(crate) fn bpf_prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[u64],
    name: &str,
) -> io::Result<OwnedFd> {
    let license = c"MIT OR Apache-2.0";
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let load = |log: &mut [u8]| {
        let mut attr = BpfProgLoad {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            prog_ifindex: 0,
            expected_attach_type,
        };
        bpf_call(bpf::CMD_PROG_LOAD, &mut attr)
    };
    let e = match load(&mut []) {
        // SAFETY: the kernel just returned this fd, owned by no one else.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 20];
    if let Ok(fd) = load(&mut log) {
        // Loaded the second time after all: keep it.
        // SAFETY: as above.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let tail: Vec<&str> = text.lines().rev().take(4).collect();
    if tail.is_empty() {
        Err(e)
    } else {
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(io::Error::new(
            e.kind(),
            format!("{e}; verifier: {}", tail.join(" | ")),
        ))
    }
}

/// `setsockopt(SO_ATTACH_REUSEPORT_EBPF)`: `prog` picks the listener of `listener`'s
/// `SO_REUSEPORT` group for each new connection (socket(7)); it replaces a program attached
/// before.
pub(crate) fn attach_reuseport_prog(
    listener: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
) -> io::Result<()> {
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: a plain `int` option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_EBPF,
            &fd as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mmap(MAP_SHARED)` of `len` bytes of `fd` from offset 0, readable and writable.
pub(crate) fn mmap_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: a fresh mapping chosen by the kernel; nothing else is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(ptr as *mut u8).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// `munmap` of a mapping made by [`mmap_shared`].
///
/// # Safety
///
/// `ptr`/`len` are one mapping from [`mmap_shared`], and nothing uses it afterwards.
pub(crate) unsafe fn munmap(ptr: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: per this function's contract.
    unsafe {
        libc::munmap(ptr.as_ptr() as *mut libc::c_void, len);
    }
}

/// The page size (`sysconf(_SC_PAGESIZE)`).
pub(crate) fn page_size() -> usize {
    // SAFETY: no arguments to get wrong.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

#[cfg(test)]
mod tests;
