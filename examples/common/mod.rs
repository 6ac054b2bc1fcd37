//! What every example server shares: the `listening on` line, graceful shutdown on
//! SIGTERM/SIGINT, logging, and command-line errors. Each example parses its own options
//! with lexopt.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use finwait::{Group, GroupOptions, Handler, ListenOptions, ListenerId, Reactor};

/// The options every example server takes (CONTRACT.md).
pub struct Server {
    /// `--listen HOST:PORT` (default loopback, a free port); a host name is resolved.
    pub listen: String,
    /// `--shutdown-timeout-ms N` (default 5000).
    pub shutdown_ms: u64,
    /// `--reactors N` (default 1): reactors, one thread each, on the same address.
    pub reactors: usize,
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
    };
    let mut args = lexopt::Parser::from_env();
    while let Some(arg) = args.next()? {
        match arg {
            Long("listen") => server.listen = args.value()?.string()?,
            Long("shutdown-timeout-ms") => server.shutdown_ms = args.value()?.parse()?,
            Long("reactors") => {
                server.reactors = args.value()?.parse()?;
                if server.reactors == 0 {
                    return Err("--reactors must be at least 1".into());
                }
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
pub fn serve<H: Handler + 'static>(
    server: &Server,
    options: ListenOptions,
    make: impl Fn() -> H + Send + Sync + 'static,
) -> finwait::Result<()> {
    let grace = Duration::from_millis(server.shutdown_ms);
    if server.reactors <= 1 {
        let mut reactor = Reactor::new()?;
        listen(&mut reactor, server, options)?;
        reactor.run(&mut make())?;
        log::info!("stopped: {}", reactor.stats());
        return Ok(());
    }
    let group = Group::listen(
        server.listen.as_str(),
        GroupOptions::new(server.reactors)
            .listen(options)
            .shutdown_on_signals(Some(grace)),
        move |_| make(),
    )?;
    print_listening(group.local_addr())?;
    for (index, stats) in group.join()?.iter().enumerate() {
        log::info!("reactor {index} stopped: {stats}");
    }
    Ok(())
}

/// Listens on one reactor, prints the `listening on` line and arms the graceful shutdown on
/// SIGTERM/SIGINT (see [`serve`]).
pub fn listen(
    reactor: &mut Reactor,
    server: &Server,
    options: ListenOptions,
) -> finwait::Result<ListenerId> {
    reactor.shutdown_on_signals(Duration::from_millis(server.shutdown_ms))?;
    let listener = reactor.listen(server.listen.as_str(), options)?;
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
/// the help and exit 0, a bad option → the error, the help and exit 2), then `serve`
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
        Err(e) => return usage_error(name, help, e),
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error and the help, exit status 2.
pub fn usage_error(name: &str, help: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("{name}: {error}\n\n{help}");
    ExitCode::from(2)
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
                    Some(index) => write!(out, "reactor {index}: ")?,
                    None => write!(out, "{t}: ")?,
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
