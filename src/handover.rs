//! Zero-downtime restart: handing the listening sockets to a successor process (SEMANTICS B4).
//!
//! Closing a listening socket resets everything in its accept queue, and a successor that
//! binds the port anew with `SO_REUSEPORT` splits the queue with the dying process. A handover
//! avoids both: the running process passes its listening sockets themselves to the successor
//! over a Unix-domain socket (`SCM_RIGHTS`, unix(7)). Both processes then hold the same
//! sockets — the same accept queues — and the old one simply stops accepting: nothing is
//! closed that could reset a queued connection, and every connection is served by exactly one
//! of the two.
//!
//! ```text
//! old (serving PATH)                         successor
//!   listening sockets  ── offer: fds + their addresses ──▶  checks every fd (a listening
//!                                                           TCP socket, bound where said),
//!                                                           adopts all of them or none
//!                      ◀── "accept" (or "refuse WHY") ──
//!   stops accepting (its fds closed, queues
//!   untouched), then a graceful shutdown of
//!   its connections; exits
//!                                                           serves handovers at PATH itself
//! ```
//!
//! A handover that fails half-way — the successor refuses, dies or stays silent past the
//! timeout — leaves the old side accepting as before, and logs why. Handovers are served one
//! at a time; a successor that connects while another is being handed the sockets waits, and
//! finds the sockets gone when its turn comes: it connects again, to whoever serves PATH then
//! ([`take_over`] does that by itself).
//!
//! The old side: [`Reactor::serve_handover`](crate::Reactor::serve_handover) or
//! [`Group::serve_handover`](crate::Group::serve_handover). The successor: [`take_over`], then
//! [`Offer::adopt`] into a reactor (or [`Group::adopt`](crate::Group::adopt)). Listening
//! sockets passed by systemd (`LISTEN_FDS`) or inherited across `exec` take the same path:
//! [`inherited`].
//!
//! The wire format, one message each way on a stream socket:
//!
//! ```text
//! offer  = "finwait-handover 1\n" *( "listener " ADDR "\n" ) "end\n"   (one fd per listener, in order)
//! answer = "accept\n" / "refuse " REASON "\n"
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;

const MAGIC: &str = "finwait-handover 1";
/// The most listening sockets one offer carries.
pub const MAX_LISTENERS: usize = 64;
/// How long either side waits for the other's message.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// A listening socket offered by the running process: the socket and the address it said it
/// is bound to (checked against the socket itself).
#[derive(Debug)]
pub struct Offered {
    /// The listening socket, non-blocking.
    pub listener: TcpListener,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// What the running process offered a successor: every listening socket it hands over,
/// checked. Accept it with [`adopt`](Self::adopt) (or [`accept`](Self::accept) after adopting
/// the sockets yourself); dropping it refuses the handover, and the old process keeps serving.
#[derive(Debug)]
pub struct Offer {
    stream: UnixStream,
    listeners: Vec<Offered>,
    answered: bool,
    path: PathBuf,
}

impl Offer {
    /// The offered listening sockets, in the order the old process gave them.
    pub fn listeners(&self) -> &[Offered] {
        &self.listeners
    }

    /// Takes the sockets out, to adopt them yourself (into a [`Group`](crate::Group::adopt),
    /// say); then serve handovers at [`path`](Self::path) and call [`accept`](Self::accept)
    /// — in that order, so that the next successor finds this process there — or
    /// [`refuse`](Self::refuse).
    pub fn take_listeners(&mut self) -> Vec<Offered> {
        std::mem::take(&mut self.listeners)
    }

    /// Tells the old process that every socket is adopted: it stops accepting and finishes
    /// its connections.
    ///
    /// # Errors
    ///
    /// The old process is gone (it can no longer accept on the sockets either: they are ours
    /// alone now, which is what it agreed to).
    pub fn accept(mut self) -> Result<()> {
        self.answered = true;
        self.stream.write_all(b"accept\n")?;
        Ok(())
    }

    /// Refuses the handover: the old process keeps serving. `why` is logged there.
    pub fn refuse(mut self, why: &str) {
        self.answered = true;
        let why = why.replace('\n', " ");
        let _ = self.stream.write_all(format!("refuse {why}\n").as_bytes());
    }

    /// Completes the handover into `reactor`: adopts every offered socket with `options`
    /// (all or none), serves handovers at the same path from then on
    /// ([`Reactor::serve_handover`](crate::Reactor::serve_handover) with `grace`), and only
    /// then accepts — so that when the old process lets go, the path already leads to this
    /// one, and a successor that comes next finds it. On an error nothing stays adopted (the
    /// sockets are let go without touching their queues) and the handover is refused: the
    /// old process serves on.
    ///
    /// # Errors
    ///
    /// The first adoption error, binding the path, or [`Offer::accept`]'s.
    pub fn adopt<A: Default + 'static>(
        mut self,
        reactor: &mut crate::Reactor<A>,
        options: crate::ListenOptions,
        grace: Duration,
    ) -> Result<Vec<crate::ListenerId>> {
        let mut ids = Vec::new();
        let mut failed = None;
        for offered in self.take_listeners() {
            match reactor.listen_std(offered.listener, options.clone()) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    failed = Some((format!("cannot adopt {}: {e}", offered.addr), e));
                    break;
                }
            }
        }
        if failed.is_none()
            && let Err(e) = reactor.serve_handover(&self.path, grace)
        {
            failed = Some((format!("cannot serve handovers: {e}"), e));
        }
        if let Some((why, e)) = failed {
            for id in ids {
                let _ = reactor.context_mut().hand_over_listener(id);
            }
            self.refuse(&why);
            return Err(e);
        }
        self.accept()?;
        Ok(ids)
    }

    /// The path the offer came through (where this process should serve handovers next).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.stream.write_all(b"refuse the successor gave up\n");
        }
    }
}

/// Asks whoever serves handovers at `path` for its listening sockets.
///
/// Returns `Ok(None)` when nothing serves `path` (no socket file there, or a stale one that
/// refuses): bind as usual then. Retries a few times when the old process closed the
/// connection before offering anything (it was busy with another successor, whose turn
/// took its sockets).
///
/// # Errors
///
/// A malformed offer, fds that do not match what the offer says (not listening TCP
/// sockets, bound elsewhere, too few or too many) — the handover is refused and the old
/// process keeps serving — or an I/O error talking to it.
pub fn take_over(path: impl AsRef<Path>) -> Result<Option<Offer>> {
    let path = path.as_ref();
    for _ in 0..50 {
        let mut stream = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::Io(e)),
        };
        stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        match receive_offer(&mut stream) {
            // The old process no longer accepts on anything (it is shutting down): there
            // is nothing to take over.
            Ok(Some(listeners)) if listeners.is_empty() => {
                let _ = stream.write_all(b"refuse nothing was offered\n");
                return Ok(None);
            }
            Ok(Some(listeners)) => {
                return Ok(Some(Offer {
                    stream,
                    listeners,
                    answered: false,
                    path: path.to_path_buf(),
                }));
            }
            // Closed before offering: busy with another successor. Ask again.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let why = e.to_string();
                let _ = stream.write_all(format!("refuse {}\n", why.replace('\n', " ")).as_bytes());
                return Err(e);
            }
        }
    }
    Err(Error::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        "the running process kept closing the handover connection without an offer",
    )))
}

fn bad_offer(why: impl Into<String>) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, why.into()))
}

/// Reads one offer: `Ok(None)` when the other side closed before sending anything.
fn receive_offer(stream: &mut UnixStream) -> Result<Option<Vec<Offered>>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut text = Vec::new();
    let mut fds = Vec::new();
    loop {
        let (n, mut got) = match sys::recv_with_fds(stream.as_fd(), &mut buf, MAX_LISTENERS + 1) {
            Ok(r) => r,
            // The old side's listener closed with us in its backlog: it handed the sockets to
            // the successor before us.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && text.is_empty() => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        fds.append(&mut got);
        if n == 0 {
            if text.is_empty() && fds.is_empty() {
                return Ok(None);
            }
            return Err(bad_offer("the offer was cut short"));
        }
        text.extend_from_slice(&buf[..n]);
        if text.ends_with(b"end\n") {
            break;
        }
        if text.len() > buf.len() {
            return Err(bad_offer("the offer is too long"));
        }
    }
    let text = String::from_utf8(text).map_err(|_| bad_offer("the offer is not text"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad_offer(
            "not a finwait handover offer (or another version)",
        ));
    }
    let mut addrs = Vec::new();
    for line in lines {
        if line == "end" {
            break;
        }
        let addr = line
            .strip_prefix("listener ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| bad_offer(format!("bad offer line {line:?}")))?;
        addrs.push(addr);
    }
    check_offered(addrs, fds).map(Some)
}

/// Every fd must be a listening TCP socket bound where the offer says, one per listener line:
/// all or none.
fn check_offered(addrs: Vec<SocketAddr>, fds: Vec<OwnedFd>) -> Result<Vec<Offered>> {
    if fds.len() != addrs.len() {
        return Err(bad_offer(format!(
            "the offer names {} listeners but carries {} fds",
            addrs.len(),
            fds.len()
        )));
    }
    let mut offered = Vec::with_capacity(fds.len());
    for (fd, said) in fds.into_iter().zip(addrs) {
        let actual = sys::listening_tcp_addr(fd.as_fd())
            .map_err(|e| bad_offer(format!("the fd offered for {said}: {e}")))?;
        if actual != said {
            return Err(bad_offer(format!(
                "the fd offered for {said} listens on {actual}"
            )));
        }
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        offered.push(Offered {
            listener,
            addr: actual,
        });
    }
    Ok(offered)
}

/// Listening sockets this process inherited: from systemd's socket activation (`LISTEN_FDS`,
/// `LISTEN_PID`: fds 3, 4, … — sd_listen_fds(3)) when it names this process. Each is checked
/// as a handover offer's are (listening TCP sockets, all or none), made non-blocking and
/// close-on-exec; the variables are removed so that children do not take them too.
///
/// Returns an empty list when nothing was passed.
///
/// # Errors
///
/// An fd that is not a listening TCP socket, or malformed variables.
pub fn inherited() -> Result<Vec<Offered>> {
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let count: usize = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .ok_or(Error::InvalidOption("LISTEN_FDS is not a number"))?;
    if count > MAX_LISTENERS {
        return Err(Error::InvalidOption("LISTEN_FDS names too many fds"));
    }
    // SAFETY: removing variables before any other thread of ours reads the environment
    // (called at start-up, as sd_listen_fds(3) with unset_environment is).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let mut offered = Vec::with_capacity(count);
    for fd in 3..3 + count as i32 {
        // An fd the variables name but that is not open is refused before it is owned (owning
        // a closed fd would close someone else's later).
        if !sys::is_open(fd) {
            return Err(bad_offer(format!("fd {fd} is not open")));
        }
        // SAFETY: the protocol gives these fds to this process, it is open (checked above),
        // and each is taken once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        sys::set_cloexec(fd.as_fd())?;
        let addr = sys::listening_tcp_addr(fd.as_fd())
            .map_err(|e| bad_offer(format!("inherited fd {}: {e}", 3 + offered.len())))?;
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        offered.push(Offered { listener, addr });
    }
    Ok(offered)
}

/// Makes copies of the listening sockets to offer (asking the reactors that hold them).
pub(crate) type Copies = dyn FnMut() -> io::Result<Vec<(OwnedFd, SocketAddr)>> + Send;

/// Asks a reactor, through its waker, for copies of the listening sockets it still accepts
/// on, and waits (bounded) for its answer.
pub(crate) fn ask_copies<A: 'static>(
    waker: &crate::Waker<A>,
) -> io::Result<Vec<(OwnedFd, SocketAddr)>> {
    let (tx, rx) = std::sync::mpsc::channel();
    waker
        .send(move |cx: &mut crate::Context<A>| {
            let _ = tx.send(cx.listener_copies());
        })
        .map_err(|e| io::Error::other(format!("the reactor is gone: {e}")))?;
    rx.recv_timeout(EXCHANGE_TIMEOUT)
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the reactor did not answer"))?
}

/// Serves handovers at a path, on a thread of its own: offers copies of the listening sockets
/// to a successor and, when it accepts, runs `on_accepted` (which stops the reactors'
/// accepting and shuts them down). One handover at most succeeds; after it the server stops.
/// Dropping it stops serving, and removes the socket file if it is still ours. Servers put
/// their socket file at the path and remove it under an exclusive `flock(2)` on its directory
/// (held for microseconds; waited for up to 1 s, then done without it).
#[derive(Debug)]
pub struct HandoverServer {
    path: PathBuf,
    /// Dropped to stop the thread: its peer, which the thread polls beside the socket,
    /// reads end-of-file (no polling on a timer while nobody hands over).
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    /// The socket file's inode, to tell ours from a successor's at the same path.
    ino: Arc<AtomicU64>,
}

impl HandoverServer {
    /// Binds `path` — atomically: a socket bound beside it is renamed over whatever is there,
    /// so a successor never finds the path missing — and serves handovers of `listeners`
    /// (copies of the sockets: the caller keeps its own).
    pub(crate) fn start(
        path: &Path,
        copies: Box<Copies>,
        on_accepted: Box<dyn FnOnce() + Send>,
    ) -> Result<HandoverServer> {
        let (uds, ino) = bind_atomically(path)?;
        let ino = Arc::new(AtomicU64::new(ino));
        let (stop, stopped) = UnixStream::pair()?;
        let thread = {
            let ino = Arc::clone(&ino);
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("finwait-handover".into())
                .spawn(move || serve(uds, &path, copies, on_accepted, &stopped, &ino))?
        };
        Ok(HandoverServer {
            path: path.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
            ino,
        })
    }

    /// The path it serves.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for HandoverServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only our own socket file: after a handover the path is the successor's, and after
        // a failed one it may be the old server's again, rebound this very moment — the
        // check and the removal are one step under the directory's lock.
        let _lock = lock_directory_of(&self.path);
        let ino = self.ino.load(Ordering::Relaxed);
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The lock every server at a path in this directory takes to replace or remove its socket
/// file (a `flock(2)` on the directory, released when dropped). `None` (logged) if it cannot
/// be had within a second: the caller goes on without it, as before there was one.
fn lock_directory_of(path: &Path) -> Option<OwnedFd> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sys::lock_directory(dir, Duration::from_secs(1))
        .inspect_err(|e| log::warn!("handover: locking {}: {e}", dir.display()))
        .ok()
}

/// Binds a Unix-domain listener at `path` atomically: bound beside it, then renamed over
/// whatever is there, so that the path never goes missing. Returns it and its inode.
fn bind_atomically(path: &Path) -> Result<(UnixListener, u64)> {
    let file = path
        .file_name()
        .ok_or(Error::InvalidOption("the handover path names no file"))?;
    let mut temp_name = file.to_os_string();
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    // Not while another server at this path checks whether the file there is its own to
    // remove (see `HandoverServer::drop`).
    let _lock = lock_directory_of(path);
    let _ = std::fs::remove_file(&temp);
    let uds = UnixListener::bind(&temp).map_err(|e| Error::io_about(temp.display(), e))?;
    std::fs::rename(&temp, path).map_err(|e| Error::io_about(path.display(), e))?;
    let ino = std::fs::metadata(path)
        .map_err(|e| Error::io_about(path.display(), e))?
        .ino();
    uds.set_nonblocking(true)?;
    Ok((uds, ino))
}

/// The server thread: one successor at a time, until one accepts or `stopped` reads
/// end-of-file (the server was dropped). It sleeps in `poll` until either happens.
fn serve(
    mut uds: UnixListener,
    path: &Path,
    mut copies: Box<Copies>,
    on_accepted: Box<dyn FnOnce() + Send>,
    stopped: &UnixStream,
    ino: &AtomicU64,
) {
    loop {
        match sys::wait_readable(&[stopped.as_fd(), uds.as_fd()]) {
            Ok(ready) if ready[0] => return,
            Ok(_) => {}
            Err(e) => {
                log::warn!("handover at {}: poll: {e}", path.display());
                return;
            }
        }
        let stream = match uds.accept() {
            Ok((s, _)) => s,
            // Another wake-up for the same connection, or it went away: poll again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                log::warn!("handover at {}: accept: {e}", path.display());
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let listeners = match copies() {
            Ok(l) if l.len() > MAX_LISTENERS => {
                log::warn!(
                    "handover at {}: too many listeners to offer",
                    path.display()
                );
                continue;
            }
            Ok(l) => l,
            Err(e) => {
                log::warn!("handover at {}: no listeners to offer: {e}", path.display());
                continue;
            }
        };
        let count = listeners.len();
        match offer(stream, &listeners) {
            Ok(()) => {
                log::warn!(
                    "handed {count} listening socket{} over to a successor (through {}); \
                     finishing this process's connections",
                    if count == 1 { "" } else { "s" },
                    path.display()
                );
                drop(listeners);
                on_accepted();
                return;
            }
            Err(e) => {
                log::warn!("handover at {} failed, serving on: {e}", path.display());
                // The successor may have put its own socket at the path before it failed
                // (it serves there before it accepts): take the path back, or the next
                // successor would find nobody and bind anew.
                let ours = ino.load(Ordering::Relaxed);
                if std::fs::metadata(path).map_or(true, |m| m.ino() != ours) {
                    match bind_atomically(path) {
                        Ok((again, new_ino)) => {
                            uds = again;
                            ino.store(new_ino, Ordering::Relaxed);
                        }
                        Err(e) => log::warn!("handover at {}: rebinding: {e}", path.display()),
                    }
                }
            }
        }
    }
}

/// One exchange: the offer, then the successor's answer.
fn offer(mut stream: UnixStream, listeners: &[(OwnedFd, SocketAddr)]) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    let mut text = format!("{MAGIC}\n");
    for (_, addr) in listeners {
        text.push_str(&format!("listener {addr}\n"));
    }
    text.push_str("end\n");
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(fd, _)| fd.as_fd()).collect();
    let sent = sys::send_with_fds(stream.as_fd(), text.as_bytes(), &fds)?;
    stream.write_all(&text.as_bytes()[sent..])?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the successor went away without answering",
                ));
            }
            Ok(_) => answer.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the successor did not answer in time",
                ));
            }
            Err(e) => return Err(e),
        }
        if answer.len() > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer too long",
            ));
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    match answer.trim_end() {
        "accept" => Ok(()),
        other => Err(io::Error::other(format!(
            "the successor answered {:?}",
            other
        ))),
    }
}

#[cfg(test)]
mod tests;
