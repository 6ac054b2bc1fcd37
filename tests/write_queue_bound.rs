//! `ListenOptions::max_queued`: a write that would pass the bound is refused whole with
//! `Error::QueueFull`, the connection goes on, and everything accepted before arrives.

mod common;

use common::*;
use finwait::{Context, Error, Event, ListenOptions, SocketId};

#[test]
fn write_past_max_queued_is_refused_whole_and_the_connection_goes_on() {
    let (mut reactor, _l, addr) = server(ListenOptions::new().max_queued(Some(1 << 20)));
    let mut s = peer(addr);
    let chunk = pattern(256 << 10);
    let mut accepted = 0usize;
    let mut refused = None;
    let mut h = recorder(|cx: &mut Context, id: SocketId, e: &Event<'_>| {
        if let Event::Accepted(_) = e {
            // The peer does not read yet: the kernel fills, then the queue, then the bound.
            loop {
                match cx.write(id, &chunk) {
                    Ok(_) => accepted += chunk.len(),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            cx.end(id).unwrap();
        }
    });
    run_until(&mut reactor, &mut h, |h, _| !h.sockets().is_empty());
    drop(h);
    let refused = refused.expect("a write was refused");
    assert!(
        matches!(refused, Error::QueueFull { limit, .. } if limit == 1 << 20),
        "{refused}"
    );
    // Everything accepted before the refusal arrives, then FIN.
    let mut h = recorder(|_: &mut Context, _: SocketId, _: &Event<'_>| {});
    let reader = std::thread::spawn(move || read_to_end(&mut s));
    run_until(&mut reactor, &mut h, |h, _| !h.closed.is_empty());
    let (got, ending) = reader.join().unwrap();
    assert_eq!(ending, Ending::Fin);
    assert_eq!(got.len(), accepted);
    assert!(got.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]));
}
