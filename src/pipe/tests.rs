//! The spliced path's traps, with faults injected into its syscalls (test builds only): no
//! kernel pipe to be had (out of fds) → the pair copies; a pipe that may not grow keeps the
//! kernel's size, one smaller than that is not used; `EINTR` in `splice` → retried,
//! invisible to the peers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::pipe::splice::{KERNEL_PIPE_SIZE, LARGE_PIPES_BUDGET, PipePool};
use crate::sys::{
    self,
    faults::{self, Call},
};
use crate::{ConnectOptions, Context, Event, Handler, ListenOptions, PipeOptions, PipeSummary};
use crate::{Reactor, SocketId, Splice};

const LIMIT: Duration = Duration::from_secs(30);
const SIZE: usize = 2 << 20;

struct Proxy {
    upstream: std::net::SocketAddr,
    summary: Option<PipeSummary>,
}

impl Handler for Proxy {
    fn on_event(&mut self, cx: &mut Context, id: SocketId, _: &mut (), event: Event<'_>) {
        if let Event::Accepted(_) = event {
            let up = cx.connect(self.upstream, ConnectOptions::new()).unwrap();
            cx.pipe(id, up, PipeOptions::new().splice(Splice::On))
                .unwrap();
        }
    }

    fn on_pipe_closed(&mut self, _: &mut Context, summary: PipeSummary) {
        self.summary = Some(summary);
    }
}

/// A reactor splicing every accepted connection to `upstream`, and its listener's address.
fn proxy_to(upstream: &TcpListener) -> (Reactor, Proxy, std::net::SocketAddr) {
    let mut reactor = Reactor::new().unwrap();
    let l = reactor.listen("127.0.0.1:0", ListenOptions::new()).unwrap();
    let addr = reactor.listener_addr(l).unwrap();
    let h = Proxy {
        upstream: upstream.local_addr().unwrap(),
        summary: None,
    };
    (reactor, h, addr)
}

/// Runs the reactor until its pair ended; its summary.
fn run_until_the_pair_ends(reactor: &mut Reactor, h: &mut Proxy) -> PipeSummary {
    let start = Instant::now();
    while h.summary.is_none() {
        assert!(start.elapsed() < LIMIT, "the pair never ended");
        reactor
            .run_once(h, Some(Duration::from_millis(20)))
            .unwrap();
    }
    h.summary.take().unwrap()
}

/// The client sends `SIZE` patterned bytes and its FIN through the pair; the upstream reads
/// them to the end and closes. Returns what the upstream read and the summary.
fn send_through() -> (Vec<u8>, PipeSummary) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut reactor, mut h, addr) = proxy_to(&upstream);
    let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        c.write_all(&sent).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).map(|_| rest)
    });
    let server = std::thread::spawn(move || {
        let (mut up, _) = upstream.accept().unwrap();
        up.set_read_timeout(Some(LIMIT)).unwrap();
        let mut got = Vec::new();
        up.read_to_end(&mut got).unwrap();
        got
    });
    let summary = run_until_the_pair_ends(&mut reactor, &mut h);
    assert_eq!(
        client.join().unwrap().unwrap(),
        b"",
        "the client got bytes or no FIN"
    );
    let got = server.join().unwrap();
    assert!(
        got == payload,
        "the upstream read {} other bytes",
        got.len()
    );
    (got, summary)
}

/// With every `call` failing with `errno`, the pair still forwards every byte, all of them
/// copied.
fn copies_every_byte_while_failing(call: Call, errno: i32, why: &str) {
    faults::inject(call, errno, usize::MAX);
    let (_, summary) = send_through();
    assert!(faults::take_hits().contains(&(call, errno)));
    assert_eq!(summary.a_to_b, SIZE as u64);
    assert_eq!(summary.a_to_b_spliced, 0, "{why}");
}

#[test]
fn no_kernel_pipe_to_be_had_means_the_pair_copies() {
    copies_every_byte_while_failing(
        Call::Pipe,
        libc::EMFILE,
        "nothing can be spliced without a pipe",
    );
}

#[test]
fn pipes_are_sized_as_asked_and_at_the_kernel_default_otherwise() {
    let mut pool = PipePool::new(4, Some(256 << 10));
    let pipe = pool.take().unwrap();
    assert_eq!(sys::pipe_size(pipe.write_end()).unwrap(), 256 << 10);
    let mut pool = PipePool::new(4, None);
    let pipe = pool.take().unwrap();
    assert_eq!(sys::pipe_size(pipe.write_end()).unwrap(), KERNEL_PIPE_SIZE);
}

/// Large pipes share one budget per reactor, counted at the size the kernel gives (a power of
/// two of pages); past it pipes have the kernel's size, and a large pipe given back makes room
/// for the next.
#[test]
fn large_pipes_share_a_budget_and_the_rest_have_the_kernel_default() {
    fill_the_large_pipes_budget(256 << 10, 256 << 10);
    fill_the_large_pipes_budget(300 << 10, 512 << 10);
}

fn fill_the_large_pipes_budget(asked: usize, size: usize) {
    let mut pool = PipePool::new(usize::MAX, Some(asked));
    let large: Vec<_> = (0..LARGE_PIPES_BUDGET / size)
        .map(|_| pool.take().unwrap())
        .collect();
    for pipe in &large {
        assert_eq!(sys::pipe_size(pipe.write_end()).unwrap(), size);
    }
    let past = pool.take().unwrap();
    assert_eq!(sys::pipe_size(past.write_end()).unwrap(), KERNEL_PIPE_SIZE);
    pool.give_back(past);
    let mut large = large;
    pool.give_back(large.pop().unwrap());
    let again = pool.take().unwrap();
    assert_eq!(sys::pipe_size(again.write_end()).unwrap(), size);
}

/// A size over the large-pipe budget (here no pipe could have it) is never asked for: such
/// pipes have the kernel's default.
#[test]
fn an_impossible_pipe_size_leaves_the_kernel_default() {
    let mut pool = PipePool::new(4, Some(usize::MAX));
    let pipes: Vec<_> = (0..2).map(|_| pool.take().unwrap()).collect();
    for pipe in &pipes {
        assert_eq!(sys::pipe_size(pipe.write_end()).unwrap(), KERNEL_PIPE_SIZE);
    }
}

/// Refused growth (`EPERM`: over `pipe-max-size`, or the user's pipe pages are spent)
/// leaves the pipe at the kernel's default, which still splices.
#[test]
fn a_pipe_that_may_not_grow_keeps_the_kernel_default() {
    let mut pool = PipePool::new(4, Some(1 << 20));
    faults::inject(Call::SetPipeSize, libc::EPERM, 1);
    let pipe = pool.take().unwrap();
    assert_eq!(faults::take_hits(), [(Call::SetPipeSize, libc::EPERM)]);
    assert_eq!(sys::pipe_size(pipe.write_end()).unwrap(), KERNEL_PIPE_SIZE);
    assert_eq!(pool.open(), 1);
}

/// Past the user's soft limit on pipe pages the kernel makes 2-page pipes and refuses to
/// grow them: such a pipe is closed and not counted, and the pair copies every byte.
#[test]
fn a_pipe_that_cannot_have_the_kernel_default_is_not_used_and_the_pair_copies() {
    let mut pool = PipePool::new(4, None);
    faults::inject(Call::SetPipeSize, libc::EPERM, 1);
    assert!(pool.take().is_none());
    assert_eq!(
        pool.open(),
        0,
        "a closed pipe still counted against the bound"
    );
    assert_eq!(faults::take_hits(), [(Call::SetPipeSize, libc::EPERM)]);

    copies_every_byte_while_failing(
        Call::SetPipeSize,
        libc::EPERM,
        "bytes went through a pipe of 2 pages",
    );
}

#[test]
fn eintr_in_splice_is_retried_and_invisible() {
    faults::inject(Call::Splice, libc::EINTR, 5);
    let (_, summary) = send_through();
    assert_eq!(faults::take_hits().len(), 5);
    assert_eq!(summary.a_to_b, SIZE as u64);
    assert!(summary.a_to_b_spliced > 0, "the pair never spliced");
}

/// A destination known to be full is not spliced into again until its writable edge: every
/// readable edge of the source used to cost a splice that failed with `EAGAIN`. The upstream
/// reads nothing until the client has filled the path (or 400 turns passed), then everything.
#[test]
fn full_destination_is_not_spliced_into_again_before_its_writable_edge() {
    const BIG: usize = 16 << 20;
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    // A small receive buffer at the upstream (accepted sockets inherit it), so that the path
    // cannot absorb the client's bytes while the upstream reads nothing.
    socket2::SockRef::from(&upstream)
        .set_recv_buffer_size(64 << 10)
        .unwrap();
    let (mut reactor, mut h, addr) = proxy_to(&upstream);
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (wrote_all, all_written) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        // Small segments: many readable edges at the proxy while the upstream is full.
        c.set_nodelay(true).unwrap();
        let chunk = vec![7u8; 4 << 10];
        for _ in 0..BIG / chunk.len() {
            c.write_all(&chunk).unwrap();
        }
        let _ = wrote_all.send(());
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).map(|_| rest)
    });
    let server = std::thread::spawn(move || {
        let (mut up, _) = upstream.accept().unwrap();
        up.set_read_timeout(Some(LIMIT)).unwrap();
        let _ = wait.recv();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match up.read(&mut buf).unwrap() {
                0 => return got,
                n => got += n,
            }
        }
    });
    faults::take_splices_into_full_socket();
    // The stall: the client writes while the upstream reads nothing, so the pipe and the
    // upstream's buffers fill while the client's bytes keep arriving at the proxy.
    for _ in 0..400 {
        reactor
            .run_once(&mut h, Some(Duration::from_millis(5)))
            .unwrap();
        if all_written.try_recv().is_ok() {
            break;
        }
    }
    let during_stall = faults::take_splices_into_full_socket();
    go.send(()).unwrap();
    let summary = run_until_the_pair_ends(&mut reactor, &mut h);
    assert_eq!(server.join().unwrap(), BIG, "the upstream got other bytes");
    assert_eq!(client.join().unwrap().unwrap(), b"");
    assert_eq!(summary.a_to_b, BIG as u64);
    assert!(summary.a_to_b_spliced > 0, "the pair never spliced");
    let after = faults::take_splices_into_full_socket();
    // One `EAGAIN` may follow a splice that filled the socket exactly, one a writable edge
    // the upstream's window closed behind; every source edge cost one before (7-23 here).
    assert!(
        during_stall <= 2,
        "{during_stall} splices into the full upstream while it read nothing ({after} after)"
    );
}
