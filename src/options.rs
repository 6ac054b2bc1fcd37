//! Options for the reactor, its listeners and its outgoing connections.

use std::net::SocketAddr;
use std::time::Duration;

use crate::socket::machine::ConnOptions;

/// Default high-water mark: `write` returns false once this many bytes are queued (Node v22).
pub const DEFAULT_HIGH_WATER_MARK: usize = 64 * 1024;

/// How a listener accepts and sets up its sockets.
///
/// ```
/// use finwait::ListenOptions;
/// let opts = ListenOptions::new().backlog(128).allow_half_open(true).high_water_mark(16 * 1024);
/// assert!(opts.allow_half_open);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// `listen(2)` backlog (default 1024).
    pub backlog: u32,
    /// Accepted sockets stay writable after the peer's FIN until the program calls `end()`
    /// (default false: the reactor ends them right after the `End` event).
    pub allow_half_open: bool,
    /// Accepted sockets' high-water mark (default 64 KiB).
    pub high_water_mark: usize,
    /// `TCP_NODELAY` on accepted sockets (default true: a reactor for request/response work
    /// should not wait for Nagle's algorithm).
    pub no_delay: bool,
    /// Idle timeout armed on every accepted socket (default none); see
    /// [`Context::set_timeout`](crate::Context::set_timeout).
    pub idle_timeout: Option<Duration>,
    /// Most sockets of this listener open at once (default unlimited). Beyond it, new
    /// connections are left unaccepted in the kernel backlog and accepted as soon as one of
    /// the listener's sockets closes. (Node instead accepts and drops them; leaving them
    /// queued loses nothing and costs no fd — once the backlog is full the kernel makes
    /// clients retry their SYN.)
    pub max_connections: Option<usize>,
    /// Most bytes an accepted socket may hold in its write queue (default none: unbounded,
    /// as in Node). A `write` that would queue more is refused whole with
    /// [`Error::QueueFull`](crate::Error::QueueFull) and changes nothing, so a program that
    /// ignores `write` returning `false` gets a clear error instead of growing without limit.
    /// The check counts the whole write as queued, even when the kernel could take part of
    /// it at once.
    pub max_queued: Option<usize>,
    /// `SO_REUSEPORT` (default false): other sockets may bind the same address — the
    /// listeners of a [`Group`](crate::Group)'s reactors, or a successor process during a
    /// restart — and the kernel spreads new connections over them by a hash of the 4-tuple.
    /// Only sockets of the same user may join (socket(7)).
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            allow_half_open: false,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            no_delay: true,
            idle_timeout: None,
            max_connections: None,
            max_queued: None,
            reuse_port: false,
        }
    }
}

impl ListenOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`backlog`](Self::backlog).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }
    /// Sets [`allow_half_open`](Self::allow_half_open).
    pub fn allow_half_open(mut self, allow: bool) -> Self {
        self.allow_half_open = allow;
        self
    }
    /// Sets [`high_water_mark`](Self::high_water_mark).
    pub fn high_water_mark(mut self, bytes: usize) -> Self {
        self.high_water_mark = bytes;
        self
    }
    /// Sets [`no_delay`](Self::no_delay).
    pub fn no_delay(mut self, no_delay: bool) -> Self {
        self.no_delay = no_delay;
        self
    }
    /// Sets [`idle_timeout`](Self::idle_timeout); `None` or zero disarms.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout.filter(|d| !d.is_zero());
        self
    }
    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }
    /// Sets [`max_queued`](Self::max_queued).
    ///
    /// ```
    /// use finwait::ListenOptions;
    /// let opts = ListenOptions::new().max_queued(Some(16 << 20));
    /// assert_eq!(opts.max_queued, Some(16 << 20));
    /// ```
    pub fn max_queued(mut self, bytes: Option<usize>) -> Self {
        self.max_queued = bytes;
        self
    }
    /// Sets [`reuse_port`](Self::reuse_port).
    pub fn reuse_port(mut self, reuse: bool) -> Self {
        self.reuse_port = reuse;
        self
    }

    pub(crate) fn conn(&self) -> ConnOptions {
        ConnOptions {
            allow_half_open: self.allow_half_open,
            high_water_mark: self.high_water_mark,
            max_queued: self.max_queued.unwrap_or(usize::MAX),
        }
    }
}

/// How an outgoing connection is set up.
///
/// ```
/// use finwait::ConnectOptions;
/// use std::time::Duration;
/// let opts = ConnectOptions::new().connect_timeout(Some(Duration::from_secs(3)));
/// assert_eq!(opts.connect_timeout, Some(Duration::from_secs(3)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// See [`ListenOptions::allow_half_open`] (default false).
    pub allow_half_open: bool,
    /// See [`ListenOptions::high_water_mark`] (default 64 KiB).
    pub high_water_mark: usize,
    /// See [`ListenOptions::no_delay`] (default true).
    pub no_delay: bool,
    /// See [`ListenOptions::max_queued`] (default none).
    pub max_queued: Option<usize>,
    /// Give up connecting after this long (default none: the kernel's own SYN retries decide).
    pub connect_timeout: Option<Duration>,
    /// The local address to connect from (Node's `localAddress` / `localPort`; default none:
    /// the kernel picks). Port 0 lets the kernel pick the port at connect time, for the
    /// whole 4-tuple (`IP_BIND_ADDRESS_NO_PORT`), so many connections from one source address
    /// share the ephemeral ports as they would without binding. Must be of the same family
    /// as the remote address. A bind that fails (address in use, not local) is reported like
    /// a failed connect: [`Event::Error`](crate::Event::Error) then
    /// [`Event::Close`](crate::Event::Close).
    pub local_addr: Option<SocketAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            allow_half_open: false,
            high_water_mark: DEFAULT_HIGH_WATER_MARK,
            no_delay: true,
            max_queued: None,
            connect_timeout: None,
            local_addr: None,
        }
    }
}

impl ConnectOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`allow_half_open`](Self::allow_half_open).
    pub fn allow_half_open(mut self, allow: bool) -> Self {
        self.allow_half_open = allow;
        self
    }
    /// Sets [`high_water_mark`](Self::high_water_mark).
    pub fn high_water_mark(mut self, bytes: usize) -> Self {
        self.high_water_mark = bytes;
        self
    }
    /// Sets [`no_delay`](Self::no_delay).
    pub fn no_delay(mut self, no_delay: bool) -> Self {
        self.no_delay = no_delay;
        self
    }
    /// Sets [`max_queued`](Self::max_queued).
    pub fn max_queued(mut self, bytes: Option<usize>) -> Self {
        self.max_queued = bytes;
        self
    }
    /// Sets [`connect_timeout`](Self::connect_timeout); `None` or zero disarms.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout.filter(|d| !d.is_zero());
        self
    }
    /// Sets [`local_addr`](Self::local_addr).
    ///
    /// ```
    /// use finwait::ConnectOptions;
    /// // Connect from 127.0.0.2, any port.
    /// let opts = ConnectOptions::new().local_addr(Some("127.0.0.2:0".parse().unwrap()));
    /// assert_eq!(opts.local_addr, Some("127.0.0.2:0".parse().unwrap()));
    /// ```
    pub fn local_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.local_addr = addr;
        self
    }

    pub(crate) fn conn(&self) -> ConnOptions {
        ConnOptions {
            allow_half_open: self.allow_half_open,
            high_water_mark: self.high_water_mark,
            max_queued: self.max_queued.unwrap_or(usize::MAX),
        }
    }
}

/// Reactor-wide settings.
///
/// ```
/// use finwait::ReactorOptions;
/// use std::time::Duration;
/// let opts = ReactorOptions::new().fin_wait(Some(Duration::from_secs(5)));
/// assert_eq!(opts.fin_wait, Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReactorOptions {
    /// After `end()`, how long the socket may go without progress — no byte flushed, no byte
    /// read, no FIN from the peer — before it is destroyed with
    /// [`CloseReason::Deadline`](crate::CloseReason::Deadline)`(FinWait)` (default 30 s).
    /// This bounds both a peer that never sends its FIN and one that never reads what we
    /// flush, while a slow but moving transfer is never cut. `None` waits forever, as Node
    /// does — a socket whose peer vanished then holds its fd for good.
    pub fin_wait: Option<Duration>,
    /// How long `destroy_soon` may take in all — flush, FIN, wait for the peer's FIN —
    /// before the socket is destroyed (default 5 s).
    pub linger: Duration,
    /// How long accepting pauses after the process ran out of file descriptors (default
    /// 100 ms): long enough not to spin, short enough to serve again soon after fds free up.
    pub accept_retry: Duration,
    /// How many bytes one socket may read in one turn before the other ready sockets get
    /// their go (default 8 MiB, at least 1: one read per turn).
    ///
    /// This is the trade between bulk throughput and fairness. A socket whose peer streams
    /// without pause is read in long runs while the data is still in cache and its peer is
    /// still busy writing; cutting the runs short makes both ends sleep and wake far more
    /// often (on loopback a 256 KiB budget cost about 25 % more CPU per byte with 16
    /// streaming connections, see BENCHMARKS.md). A smaller budget bounds how long a busy
    /// stream can delay the others: roughly `read_budget` / (a few GiB/s) per ready socket
    /// per turn.
    pub read_budget: usize,
    /// The most kernel pipes the reactor's [pipes](crate::Context::pipe) may hold for
    /// `splice` at once (default 1024; each is two fds, one per spliced direction of a pair
    /// that streams). Past it, and when the process is out of fds, a pipe copies instead.
    pub splice_pipes: usize,
    /// The size in bytes asked for each kernel pipe (`F_SETPIPE_SZ`, rounded up by the
    /// kernel to a power of two of pages; default 256 KiB, `None`: the kernel's 64 KiB).
    ///
    /// A larger pipe moves more per `splice`: through the proxy example on loopback, 256 KiB
    /// pipes cost about 17 % less CPU per GiB than 64 KiB ones (BENCHMARKS.md, "Larger
    /// pipes"). The cost is kernel memory: a pipe holds up to its size of a stream whose
    /// destination is slow — little next to the two sockets' own buffers, which reach
    /// several MiB each.
    ///
    /// The kernel charges pipe capacity to the user: an unprivileged one (without
    /// `CAP_SYS_RESOURCE`) may not ask for more than `/proc/sys/fs/pipe-max-size` (1 MiB by
    /// default), and once its pipes total `/proc/sys/fs/pipe-user-pages-soft` (64 MiB by
    /// default) it gets no larger pipes and new ones of 2 pages (pipe(7)). The charge is for the capacity, empty or not, and a spliced direction
    /// keeps its pipe until it ends. So that a few streams do not spend it all, a reactor's
    /// pipes larger than 64 KiB have 16 MiB in all (64 pipes of 256 KiB); further pipes get
    /// the kernel's 64 KiB, as does one the kernel will not enlarge. A pipe that cannot have
    /// even that is closed, and its direction copies instead. Nothing is lost either way.
    pub splice_pipe_size: Option<usize>,
}

impl Default for ReactorOptions {
    fn default() -> Self {
        ReactorOptions {
            fin_wait: Some(Duration::from_secs(30)),
            linger: Duration::from_secs(5),
            accept_retry: Duration::from_millis(100),
            read_budget: 8 << 20,
            splice_pipes: 1024,
            splice_pipe_size: Some(crate::pipe::splice::DEFAULT_PIPE_SIZE),
        }
    }
}

impl ReactorOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`fin_wait`](Self::fin_wait); zero is treated as `None`.
    pub fn fin_wait(mut self, wait: Option<Duration>) -> Self {
        self.fin_wait = wait.filter(|d| !d.is_zero());
        self
    }
    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
    /// Sets [`accept_retry`](Self::accept_retry), at least 1 ms (zero would spin).
    pub fn accept_retry(mut self, retry: Duration) -> Self {
        self.accept_retry = retry.max(Duration::from_millis(1));
        self
    }
    /// Sets [`read_budget`](Self::read_budget), at least 1 byte (zero would never read).
    ///
    /// ```
    /// use finwait::ReactorOptions;
    /// // Latency-sensitive sockets share the loop with bulk streams: shorter runs.
    /// let opts = ReactorOptions::new().read_budget(512 * 1024);
    /// assert_eq!(opts.read_budget, 512 * 1024);
    /// assert_eq!(ReactorOptions::new().read_budget(0).read_budget, 1);
    /// ```
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes.max(1);
        self
    }
    /// Sets [`splice_pipes`](Self::splice_pipes); 0 turns splicing off.
    pub fn splice_pipes(mut self, pipes: usize) -> Self {
        self.splice_pipes = pipes;
        self
    }
    /// Sets [`splice_pipe_size`](Self::splice_pipe_size).
    ///
    /// ```
    /// use finwait::ReactorOptions;
    /// // Many streams at once as an unprivileged user: the kernel's 64 KiB pipes, so that
    /// // up to 1024 of them fit in the default 64 MiB of pipe pages per user.
    /// let opts = ReactorOptions::new().splice_pipe_size(None);
    /// assert_eq!(opts.splice_pipe_size, None);
    /// assert_eq!(ReactorOptions::new().splice_pipe_size, Some(256 * 1024));
    /// ```
    pub fn splice_pipe_size(mut self, bytes: Option<usize>) -> Self {
        self.splice_pipe_size = bytes;
        self
    }
}
