//! Helpers shared by the unit tests (compiled only for tests).

use std::sync::Arc;

use crate::adapter::Recipient;
use crate::engine::sid::Sid;
use crate::engine::{Frame, Outgoing, Session, TransportKind};

/// A bus recipient on a fresh WebSocket session with a queue of `queue` items, named
/// `user-<id>`.
pub fn recipient(id: &str, queue: usize) -> Arc<Recipient> {
    Arc::new(Recipient {
        id: Arc::from(id),
        user: Some(Arc::from(format!("user-{id}"))),
        session: Session::new(
            Sid::random(),
            TransportKind::Websocket,
            queue,
            Default::default(),
            crate::engine::budget::Budget::unlimited(),
        ),
    })
}

/// One Socket.IO packet text as a queue item.
pub fn item(text: &str) -> Outgoing {
    Outgoing::Frame(Frame::message(text))
}

/// Take every text frame queued for `r`.
pub fn drain(r: &Recipient) -> Vec<String> {
    let _carrier = r
        .session
        .carrier
        .try_lock()
        .expect("nobody else holds the queue");
    let mut out = Vec::new();
    while let Some(item) = r.session.queue.try_recv() {
        for f in item.frames() {
            if let Frame::Text(t) = f {
                out.push(t.as_str().to_owned());
            }
        }
    }
    out
}
