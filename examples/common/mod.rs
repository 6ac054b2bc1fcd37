//! What every example server shares: the `listening on` line, graceful shutdown on
//! SIGTERM/SIGINT, the zero-downtime restart (`--handover PATH`), logging, and command-line
//! errors. Each example parses its own options with lexopt.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use finwait::handover::{self, Offer, Offered};
use finwait::{
    Context, Group, GroupOptions, Handler, ListenOptions, ListenerId, Reactor, ReactorOptions,
    Steering,
};

/// The options every example server takes (CONTRACT.md).
pub struct Server {
    /// `--listen HOST:PORT` (default loopback, a free port), checked to have that shape; a
    /// host name is resolved when serving starts.
    pub listen: String,
    /// `--shutdown-timeout-ms N` (default 5000).
    pub shutdown_ms: u64,
    /// `--reactors N` (default 1): reactors, one thread each, on the same address.
    pub reactors: usize,
    /// `--handover PATH`: take over from the instance serving handovers at PATH (else bind
    /// `--listen`), then serve handovers there.
    pub handover: Option<PathBuf>,
    /// `--reuse-port`: bind `--listen` with `SO_REUSEPORT` (one reactor; a group always
    /// does), so that another process can bind the same port — the naive restart.
    pub reuse_port: bool,
    /// `--steering hash|awake[:SLACK]` (default awake): how a group spreads new connections,
    /// and the load slack of `awake`.
    pub steering: Steering,
    pub steering_load_slack: Option<u32>,
}

/// The lines of `--help` for the options every server takes besides `--listen`,
/// `--shutdown-timeout-ms` and `--reactors` (each example's help ends its option list with
/// them).
#[macro_export]
macro_rules! common_help {
    () => {
        "  --handover PATH             zero-downtime restart through the Unix-domain socket PATH:
                              take over the listening sockets of the instance serving
                              handovers there (--listen is then ignored), else bind
                              --listen; then serve handovers at PATH. An instance that
                              handed over stops accepting (nothing queued is lost: its
                              successor owns the queue), finishes its connections as on
                              SIGTERM and exits 0. A handover that fails half-way leaves the
                              old instance serving; the new one exits 1. Listening sockets
                              passed by systemd (LISTEN_FDS) are adopted first
  --reuse-port                bind --listen with SO_REUSEPORT, so that a second instance can
                              bind the same port (a group of --reactors always does)
  --steering awake[:N]|hash   how a group of --reactors spreads new connections: awake (the
                              default) prefers a reactor that is awake while it holds fewer
                              than N (default 2) connections more than the least loaded (a
                              BPF program; needs CAP_BPF, else the hash); hash leaves it to
                              the kernel's hash of the 4-tuple
"
    };
}

/// Parses the command line: `--listen`, `--shutdown-timeout-ms` and `-h`/`--help` here; every
/// other `--name` goes to `option`, which reads its value from the parser and returns
/// `Ok(false)` for a name it does not know. `Ok(None)`: help was asked for.
pub fn parse_args<O>(
    mut own: O,
    mut option: impl FnMut(&mut O, &str, &mut lexopt::Parser) -> Result<bool, lexopt::Error>,
) -> Result<Option<(Server, O)>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut server = Server {
        listen: "127.0.0.1:0".to_string(),
        shutdown_ms: 5000,
        reactors: 1,
        handover: None,
        reuse_port: false,
        steering: Steering::PreferAwake,
        steering_load_slack: None,
    };
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("listen") => server.listen = address(&mut args, "listen")?,
            Long("shutdown-timeout-ms") => {
                server.shutdown_ms = value(&mut args, "shutdown-timeout-ms")?
            }
            Long("reactors") => {
                server.reactors = value(&mut args, "reactors")?;
                if server.reactors == 0 {
                    return Err("--reactors must be at least 1".into());
                }
            }
            Long("handover") => {
                let path = PathBuf::from(args.value()?);
                if path.file_name().is_none() {
                    let text = path.to_string_lossy().into_owned();
                    return Err(
                        invalid("handover", &text, "expected the path of a socket file").into(),
                    );
                }
                server.handover = Some(path);
            }
            Long("reuse-port") => server.reuse_port = true,
            Long("steering") => {
                let text = args.value()?.to_string_lossy().into_owned();
                let bad = || invalid("steering", &text, "expected awake, awake:N or hash");
                (server.steering, server.steering_load_slack) = match text.split_once(':') {
                    None if text == "awake" => (Steering::PreferAwake, None),
                    None if text == "hash" => (Steering::Hash, None),
                    Some(("awake", n)) => {
                        (Steering::PreferAwake, Some(n.parse().map_err(|_| bad())?))
                    }
                    _ => return Err(bad().into()),
                };
            }
            Short('h') | Long("help") => return Ok(None),
            Long(name) => {
                let name = name.to_owned();
                if !option(&mut own, &name, &mut args)? {
                    return Err(lexopt::Error::UnexpectedOption(format!("--{name}")));
                }
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some((server, own)))
}

/// Serves `--listen` with `--reactors` reactors, each running the handler `make` builds for
/// it: one reactor on this thread, or a [`Group`] of N threads (one `SO_REUSEPORT` listener
/// each). Prints exactly one `listening on IP:PORT` line (flushed, so a parent process
/// reading the pipe sees it at once) and turns SIGTERM/SIGINT into a graceful shutdown of
/// every reactor: stop accepting (taking what waits in the accept queues), ask every
/// connection to finish, destroy what is left after `--shutdown-timeout-ms`, and return once
/// the last connection closed. A second signal stops at once (every connection destroyed).
/// The library logs both signals at warn, each reactor its own line (`init_logging` says
/// which reactor): `signal received: shutting down, N connections (grace ...); send it again
/// to stop now`, then `signal received again: stopping now (N connections destroyed)`.
///
/// Where the listening sockets come from, in this order: those systemd passed
/// (`LISTEN_FDS`, [`handover::inherited`]); with `--handover PATH`, those of the instance
/// serving handovers at PATH ([`handover::take_over`]: adopted all or none, `--listen`
/// ignored); else `--listen`, bound here. With `--handover`, handovers are then served at
/// PATH before the `listening on` line is printed (so a successor started after that line
/// finds this instance there); once one succeeds, this instance stops accepting, finishes
/// its connections as on SIGTERM (grace `--shutdown-timeout-ms`) and returns. A handover
/// that fails half-way is an error (refused: the old instance serves on).
pub fn serve<A: Default + 'static, H: Handler<A> + 'static>(
    server: &Server,
    options: ListenOptions,
    make: impl Fn() -> H + Send + Sync + 'static,
) -> finwait::Result<()> {
    let grace = Duration::from_millis(server.shutdown_ms);
    let source = sockets(server)?;
    if server.reactors <= 1 {
        let mut reactor = Reactor::<A>::with_attachment(ReactorOptions::default())?;
        reactor.shutdown_on_signals(grace)?;
        let options = options.reuse_port(server.reuse_port);
        let addr = match source {
            Sockets::Inherited(offered) => {
                let addr = offered[0].addr;
                for o in offered {
                    reactor.listen_std(o.listener, options.clone())?;
                }
                serve_handover(&mut reactor, server, grace)?;
                addr
            }
            Sockets::Offer(offer) => {
                let addr = offer.listeners()[0].addr;
                let path = offer.path().to_path_buf();
                // Adopts every socket, serves handovers at PATH, then tells the old instance.
                offer
                    .adopt(&mut reactor, options, grace)
                    .map_err(|e| taking_over(&path, e))?;
                addr
            }
            Sockets::Bind(addrs) => {
                // A bind error names the address (`127.0.0.1:7000: Address already in use`).
                let listener = reactor.listen(&addrs[..], options)?;
                serve_handover(&mut reactor, server, grace)?;
                reactor.listener_addr(listener)?
            }
        };
        print_listening(addr)?;
        reactor.serve(&mut make())?;
        log::info!("stopped: {}", reactor.stats());
        return Ok(());
    }
    let group_options = GroupOptions::new(server.reactors)
        .listen(options)
        .shutdown_on_signals(Some(grace))
        .steering(server.steering);
    let group_options = match server.steering_load_slack {
        Some(slack) => group_options.steering_load_slack(slack),
        None => group_options,
    };
    let make = move |_| make();
    let group = match source {
        Sockets::Inherited(offered) => {
            let mut group = Group::adopt(
                offered.into_iter().map(|o| o.listener).collect(),
                group_options,
                make,
            )?;
            if let Some(path) = &server.handover {
                group
                    .serve_handover(path, grace)
                    .map_err(|e| in_path(path, e))?;
            }
            group
        }
        Sockets::Offer(mut offer) => {
            let path = offer.path().to_path_buf();
            let offered = offer.take_listeners();
            let started = Group::adopt(
                offered.into_iter().map(|o| o.listener).collect(),
                group_options,
                make,
            );
            let mut group = match started {
                Ok(group) => group,
                Err(e) => {
                    // Nothing started: the copies of the sockets are let go (closing a copy
                    // does not touch the queues the old instance still serves).
                    offer.refuse(&format!("cannot adopt the sockets: {e}"));
                    return Err(taking_over(&path, e));
                }
            };
            // Handovers served at PATH before the old instance hears "accept", so that when
            // it lets go the path already leads here (as `Offer::adopt` does).
            if let Err(e) = group.serve_handover(&path, grace) {
                offer.refuse(&format!("cannot serve handovers: {e}"));
                let_go(group, grace);
                return Err(taking_over(&path, e));
            }
            // An error here: the old instance is no longer listening (it gave up waiting and
            // serves on, or it died).
            if let Err(e) = offer.accept() {
                let_go(group, grace);
                return Err(taking_over(&path, e));
            }
            group
        }
        Sockets::Bind(addrs) => {
            let mut group =
                Group::listen(&addrs[..], group_options, make).map_err(|e| naming(addrs[0], e))?;
            if let Some(path) = &server.handover
                && let Err(e) = group.serve_handover(path, grace)
            {
                group.shutdown(Duration::ZERO);
                let _ = group.join();
                return Err(in_path(path, e));
            }
            group
        }
    };
    log::info!("{} reactors, steering {:?}", group.len(), group.steering());
    print_listening(group.local_addr())?;
    for (index, stats) in group.join()?.iter().enumerate() {
        log::info!("reactor {index} stopped: {stats}");
    }
    Ok(())
}

/// How long a connection with nothing to answer may stay quiet during a graceful shutdown
/// before the examples end it: 1 s, at most half the grace. Long enough for a request already
/// on its way (above all the first request of a connection accepted just before the
/// shutdown) to arrive and be answered; short enough that idle connections do not hold the
/// exit back.
pub fn quiet(server: &Server) -> Duration {
    Duration::from_millis(server.shutdown_ms / 2).min(Duration::from_secs(1))
}

/// Where the listening sockets come from (see [`serve`]).
enum Sockets {
    /// Passed by systemd.
    Inherited(Vec<Offered>),
    /// Offered by the instance serving handovers at `--handover PATH`.
    Offer(Offer),
    /// None: bind `--listen`.
    Bind(Vec<SocketAddr>),
}

fn sockets(server: &Server) -> finwait::Result<Sockets> {
    let inherited = handover::inherited().map_err(|e| {
        let kind = e.io_kind().unwrap_or(std::io::ErrorKind::Other);
        std::io::Error::new(kind, format!("LISTEN_FDS: {e}"))
    })?;
    if !inherited.is_empty() {
        return Ok(Sockets::Inherited(inherited));
    }
    if let Some(path) = &server.handover
        && let Some(offer) = handover::take_over(path).map_err(|e| taking_over(path, e))?
    {
        return Ok(Sockets::Offer(offer));
    }
    Ok(Sockets::Bind(resolve("listen", &server.listen)?))
}

/// With `--handover PATH`, serves handovers of `reactor`'s listeners there.
fn serve_handover<A: Default + 'static>(
    reactor: &mut Reactor<A>,
    server: &Server,
    grace: Duration,
) -> finwait::Result<()> {
    match &server.handover {
        Some(path) => reactor
            .serve_handover(path, grace)
            .map_err(|e| in_path(path, e)),
        None => Ok(()),
    }
}

/// A group that adopted offered sockets but cannot complete the handover lets them go
/// without touching their queues (the old instance serves them on), then stops.
fn let_go<A: Default + 'static>(group: Group<A>, grace: Duration) {
    for index in 0..group.len() {
        if let Some(waker) = group.waker(index) {
            let _ = waker.send(move |cx: &mut Context<A>| {
                for id in cx.listener_ids() {
                    let _ = cx.hand_over_listener(id);
                }
                cx.shutdown(grace);
            });
        }
    }
    let _ = group.join();
}

/// A failed takeover, on one line: `--handover PATH: taking over failed: why`.
fn taking_over(path: &Path, e: finwait::Error) -> finwait::Error {
    about(path, "taking over failed: ", e)
}

/// `--handover PATH: e`, on one line.
fn in_path(path: &Path, e: finwait::Error) -> finwait::Error {
    about(path, "", e)
}

fn about(path: &Path, what: &str, e: finwait::Error) -> finwait::Error {
    let kind = e.io_kind().unwrap_or(std::io::ErrorKind::Other);
    let text = e.to_string().replace('\n', " ");
    std::io::Error::new(kind, format!("--handover {}: {what}{text}", path.display())).into()
}

/// `e`, saying which address it is about unless it already does. (`Reactor::listen` names
/// the address in its bind errors; `Group::listen` does not, in this version.)
fn naming(addr: SocketAddr, e: finwait::Error) -> finwait::Error {
    let text = e.to_string();
    if text.contains(&addr.to_string()) {
        return e;
    }
    let kind = e.io_kind().unwrap_or(std::io::ErrorKind::Other);
    std::io::Error::new(kind, format!("{addr}: {text}")).into()
}

/// Listens on one reactor (the first of `addrs` that binds), prints the `listening on` line
/// and arms the graceful shutdown on SIGTERM/SIGINT (see [`serve`]).
pub fn listen<A: Default>(
    reactor: &mut Reactor<A>,
    addrs: &[SocketAddr],
    shutdown_ms: u64,
    options: ListenOptions,
) -> finwait::Result<ListenerId> {
    reactor.shutdown_on_signals(Duration::from_millis(shutdown_ms))?;
    // A bind error names the address (`127.0.0.1:7000: Address already in use`).
    let listener = reactor.listen(addrs, options)?;
    print_listening(reactor.listener_addr(listener)?)?;
    Ok(listener)
}

fn print_listening(addr: SocketAddr) -> finwait::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()?;
    Ok(())
}

/// The `main` every example server shares: logging from `RUST_LOG`, options (`--help` →
/// the help and exit 0, a bad option → one line naming it, a hint and exit 2), then `serve`
/// (an error → one line on stderr and exit 1; a graceful shutdown → exit 0).
pub fn main<O>(
    name: &str,
    help: &str,
    parse: fn() -> Result<Option<O>, lexopt::Error>,
    serve: fn(O) -> finwait::Result<()>,
) -> ExitCode {
    init_logging(name);
    let options = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(name, e),
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command-line error: one line that says what is wrong (naming the option), a hint, exit
/// status 2. The whole help is only printed when asked for.
pub fn usage_error(name: &str, error: impl Display) -> ExitCode {
    eprintln!("{name}: {error}\ntry '{name} --help'");
    ExitCode::from(2)
}

/// The value of option `--name`, parsed; an error names the option and the value
/// (`--shutdown-timeout-ms: invalid value "-5": invalid digit found in string`).
pub fn value<T>(args: &mut lexopt::Parser, name: &str) -> Result<T, lexopt::Error>
where
    T: FromStr,
    T::Err: Display,
{
    let raw = args.value()?;
    let text = raw
        .to_str()
        .ok_or_else(|| format!("--{name}: invalid value {raw:?}: not UTF-8"))?;
    text.parse().map_err(|e| invalid(name, text, e).into())
}

/// `--name: invalid value "TEXT": why`, on one line.
pub fn invalid(name: &str, text: &str, why: impl Display) -> String {
    // Quoted as typed (a backslash stays one backslash); only control characters, which
    // could break the line, are escaped.
    let mut quoted = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if c.is_control() {
            quoted.extend(c.escape_default());
        } else {
            quoted.push(c);
        }
    }
    format!("--{name}: invalid value \"{quoted}\": {why}")
}

/// The value of option `--name`, which must look like `HOST:PORT` (an IP address or a host
/// name, a port number; an IPv6 address in brackets). Whether a name resolves is only known
/// when it is looked up ([`resolve`]); a value of the wrong shape is a command-line error
/// naming the option.
pub fn address(args: &mut lexopt::Parser, name: &str) -> Result<String, lexopt::Error> {
    let text: String = value(args, name)?;
    check_host_port(&text).map_err(|e| invalid(name, &text, e))?;
    Ok(text)
}

fn check_host_port(text: &str) -> Result<(), String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected HOST:PORT".into());
    };
    if host.contains([':', '[', ']']) {
        return Err("expected HOST:PORT (an IPv6 address goes in brackets: [::1]:PORT)".into());
    }
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("expected HOST:PORT".into());
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| format!("invalid port {port:?} (0 to 65535)"))
}

/// Resolves the `HOST:PORT` given to option `--name` (a host name is looked up, which may
/// block: done once, before any reactor runs). The error names the option and the value.
pub fn resolve(name: &str, text: &str) -> finwait::Result<Vec<SocketAddr>> {
    let named = |e: &dyn Display| std::io::Error::other(format!("--{name} {text}: {e}"));
    let addrs: Vec<SocketAddr> = text.to_socket_addrs().map_err(|e| named(&e))?.collect();
    if addrs.is_empty() {
        return Err(named(&"resolves to no address").into());
    }
    Ok(addrs)
}

/// Logs to stderr at the level in `RUST_LOG` (default `warn`), one compact line per record:
/// `NAME: message`, with the reactor that logged it when there are several
/// (`echo: reactor 1: signal received: ...`) and the level unless it is `warn` or `info`
/// (`http: debug: ...`).
pub fn init_logging(name: &str) {
    let name = name.to_owned();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(move |out, record| {
            write!(out, "{name}: ")?;
            // A `Group` runs reactor N on a thread named `finwait-N`; the main thread (one
            // reactor, or the code around a group) needs no name.
            let thread = std::thread::current();
            match thread.name() {
                Some("main") | None => {}
                Some(t) => match t.strip_prefix("finwait-") {
                    Some(index) if index.parse::<usize>().is_ok() => {
                        write!(out, "reactor {index}: ")?
                    }
                    // The library's other threads (`finwait-handover`): no reactor.
                    Some(_) | None => write!(out, "{t}: ")?,
                },
            }
            match record.level() {
                log::Level::Warn | log::Level::Info => {}
                level => write!(out, "{}: ", level.as_str().to_ascii_lowercase())?,
            }
            writeln!(out, "{}", record.args())
        })
        .init();
}
