//! The program's side of the reactor: a handler that receives events.

use crate::context::Context;
use crate::event::{Event, ListenerEvent};
use crate::id::{ListenerId, SocketId};

/// Receives every event of a reactor. Each call gets the [`Context`] to act on any socket;
/// what it does takes effect in the loop and its own events come after the call returns.
///
/// A closure `FnMut(&mut Context, SocketId, Event)` is a handler that ignores listener events:
///
/// ```no_run
/// use finwait::{Context, Event, ListenOptions, Reactor, SocketId};
///
/// let mut reactor = Reactor::new()?;
/// reactor.listen("127.0.0.1:0", ListenOptions::new())?;
/// // An echo server.
/// reactor.run(&mut |cx: &mut Context, id: SocketId, event: Event<'_>| {
///     if let Event::Data(bytes) = event {
///         let _ = cx.write(id, bytes);
///     }
/// })?;
/// # Ok::<(), finwait::Error>(())
/// ```
pub trait Handler {
    /// One socket event. See [`Event`] for the order guarantees.
    fn on_event(&mut self, cx: &mut Context, id: SocketId, event: Event<'_>);

    /// One listener event. The default ignores them.
    fn on_listener_event(&mut self, cx: &mut Context, id: ListenerId, event: ListenerEvent) {
        let _ = (cx, id, event);
    }

    /// A graceful shutdown ([`Context::shutdown`], or
    /// [`Context::shutdown_listener`] of the listener that accepted it) asks this socket to
    /// finish. It runs once per socket, at the socket's first service after the shutdown
    /// began — after the reactor read what was waiting on it, so a request that had already
    /// arrived has been delivered as `Data` (connections taken off a closing listener's
    /// accept queue included).
    ///
    /// The default ends the socket at once ([`Context::end`]: queued bytes flushed, then
    /// FIN). Override it to finish the work in progress first — answer the requests already
    /// received, then `end` — and the grace period still bounds it: whatever is open when it
    /// runs out is destroyed.
    ///
    /// ```no_run
    /// use finwait::{Context, Event, Handler, SocketId};
    ///
    /// struct Server { /* per-connection state */ }
    /// impl Handler for Server {
    ///     fn on_event(&mut self, cx: &mut Context, id: SocketId, event: Event<'_>) {
    ///         // ... answer requests; while `cx.is_shutting_down()`, answer with
    ///         // `Connection: close` and `end` after the answer.
    ///     }
    ///     fn on_shutdown_request(&mut self, cx: &mut Context, id: SocketId) {
    ///         // Nothing in progress on this connection: end it now. (A server with a
    ///         // response still to write would end it after writing it instead.)
    ///         let _ = cx.end(id);
    ///     }
    /// }
    /// ```
    fn on_shutdown_request(&mut self, cx: &mut Context, id: SocketId) {
        let _ = cx.end(id);
    }

    /// A [`Waker`](crate::Waker) of this reactor was woken (from another thread). The
    /// default does nothing.
    fn on_wake(&mut self, cx: &mut Context) {
        let _ = cx;
    }

    /// The reactor's graceful shutdown completed: every listener and socket is closed and
    /// `run` is about to return. The default does nothing.
    fn on_shutdown_complete(&mut self, cx: &mut Context) {
        let _ = cx;
    }
}

impl<F> Handler for F
where
    F: FnMut(&mut Context, SocketId, Event<'_>),
{
    fn on_event(&mut self, cx: &mut Context, id: SocketId, event: Event<'_>) {
        self(cx, id, event)
    }
}
