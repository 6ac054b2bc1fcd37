//! The program's side of the reactor: a handler that receives events.

use crate::context::Context;
use crate::event::{Event, ListenerEvent};
use crate::id::{ListenerId, SocketId};
use crate::pipe::PipeSummary;

/// Receives every event of a reactor. Each call gets the [`Context`] to act on any socket;
/// what it does takes effect in the loop and its own events come after the call returns.
///
/// `A` is the per-socket **attachment** (see [`Context`]): every socket event comes with the
/// socket's own, as `&mut A` — state kept with the socket, no lookup. A handler that needs
/// none uses the default `()` and ignores that argument.
///
/// ```no_run
/// use finwait::{Context, Event, Handler, ListenOptions, Reactor, ReactorOptions, SocketId};
///
/// /// A line counter per connection: the attachment.
/// #[derive(Default)]
/// struct Lines {
///     seen: u64,
/// }
///
/// struct Counter;
/// impl Handler<Lines> for Counter {
///     fn on_event(&mut self, cx: &mut Context<Lines>, id: SocketId, lines: &mut Lines, event: Event<'_>) {
///         match event {
///             Event::Data(bytes) => lines.seen += bytes.iter().filter(|&&b| b == b'\n').count() as u64,
///             Event::End => {
///                 let _ = cx.end_with(id, format!("{} lines\n", lines.seen).as_bytes());
///             }
///             _ => {}
///         }
///     }
/// }
///
/// let mut reactor = Reactor::<Lines>::with_attachment(ReactorOptions::default())?;
/// reactor.listen("127.0.0.1:0", ListenOptions::new().allow_half_open(true))?;
/// reactor.serve(&mut Counter)?;
/// # Ok::<(), finwait::Error>(())
/// ```
///
/// A closure `FnMut(&mut Context<A>, SocketId, Event)` is a handler that ignores
/// attachments and listener events; [`Reactor::run`](crate::Reactor::run) takes one without
/// type annotations.
pub trait Handler<A = ()> {
    /// One socket event, with the socket's attachment. See [`Event`] for the order
    /// guarantees; the attachment is dropped after the socket's `Close`.
    fn on_event(&mut self, cx: &mut Context<A>, id: SocketId, attachment: &mut A, event: Event<'_>);

    /// One listener event. The default ignores them.
    fn on_listener_event(&mut self, cx: &mut Context<A>, id: ListenerId, event: ListenerEvent) {
        let _ = (cx, id, event);
    }

    /// A graceful shutdown ([`Context::shutdown`], or
    /// [`Context::shutdown_listener`] of the listener that accepted it) asks this socket to
    /// finish. It runs once per socket, at the socket's first service after the shutdown
    /// began — after the reactor read what was waiting on it, so a request that had already
    /// arrived has been delivered as `Data` (connections taken off a closing listener's
    /// accept queue included).
    ///
    /// Not called for a piped socket ([`Context::pipe`]): a pair ends when both of its peers
    /// are done, bounded by the grace period, so that an answer on its way through the pair is
    /// never cut off by ending one side early.
    ///
    /// The default ends the socket at once ([`Context::end`]: queued bytes flushed, then
    /// FIN). Override it to finish the work in progress first — answer the requests already
    /// received, then `end` — and the grace period still bounds it: whatever is open when it
    /// runs out is destroyed.
    ///
    /// ```no_run
    /// use finwait::{Context, Event, Handler, SocketId};
    ///
    /// #[derive(Default)]
    /// struct Request { answering: bool }
    ///
    /// struct Server;
    /// impl Handler<Request> for Server {
    ///     fn on_event(&mut self, cx: &mut Context<Request>, id: SocketId, request: &mut Request, event: Event<'_>) {
    ///         // ... answer requests; while `cx.is_shutting_down()`, answer with
    ///         // `Connection: close` and `end` after the answer.
    ///     }
    ///     fn on_shutdown_request(&mut self, cx: &mut Context<Request>, id: SocketId, request: &mut Request) {
    ///         // Nothing in progress on this connection: end it now. (One with an answer
    ///         // still to write ends after writing it instead.)
    ///         if !request.answering {
    ///             let _ = cx.end(id);
    ///         }
    ///     }
    /// }
    /// ```
    fn on_shutdown_request(&mut self, cx: &mut Context<A>, id: SocketId, attachment: &mut A) {
        let _ = attachment;
        let _ = cx.end(id);
    }

    /// A pipe ended: both its sockets closed (each got its own `Close` first). The default
    /// does nothing.
    fn on_pipe_closed(&mut self, cx: &mut Context<A>, summary: PipeSummary) {
        let _ = (cx, summary);
    }

    /// A [`Waker`](crate::Waker) of this reactor was woken (from another thread). The
    /// default does nothing.
    fn on_wake(&mut self, cx: &mut Context<A>) {
        let _ = cx;
    }

    /// The reactor's graceful shutdown completed: every listener and socket is closed and
    /// `run` is about to return. The default does nothing.
    fn on_shutdown_complete(&mut self, cx: &mut Context<A>) {
        let _ = cx;
    }
}

impl<A, F> Handler<A> for F
where
    F: FnMut(&mut Context<A>, SocketId, Event<'_>),
{
    fn on_event(&mut self, cx: &mut Context<A>, id: SocketId, _: &mut A, event: Event<'_>) {
        self(cx, id, event)
    }
}
