//! Broadcasts that ask the clients for an acknowledgement: another node's broadcast with
//! acks (`io.to(room).timeout(…).emitWithAck(…)` on a Node server of the cluster), which
//! the relay delivers with an ack id and whose clients' answers it hands to the cluster
//! (the [`AckSink`]) for the asking node.
//!
//! Each socket keeps the ack ids it was asked ([`Asked`], in [`asked`](super::asked)): at
//! most [`MAX_ASKED`], each for [`WINDOW`]; a socket that already waits on that many is
//! not asked again (nor counted).
//! A client's ACK with an id it was not asked, or asked too long ago, is dropped (it is
//! harmless, as before). The answer passed on is the ack's first argument, as socket.io's
//! adapters pass it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

pub use super::asked::{AckSink, Acked, Asked, MAX_ASKED, WINDOW};
use super::reply::outgoing;
use super::shared::Shared;
use super::socket::Socket;
use crate::socketio::packet as sio;

/// This process's ack ids (one per broadcast: each socket owes its own).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Send the event `text` (an EVENT without its id yet, see [`sio::encode_event`]'s
/// arguments) with `attachments` to `sockets`, each owing an ack for `request`; returns
/// how many were asked.
pub fn ask(
    sockets: &[Arc<Socket>],
    (name, args): (&str, &[&RawValue]),
    attachments: &[Bytes],
    request: &str,
) -> usize {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let request: Arc<str> = Arc::from(request);
    let now = Instant::now();
    let mut asked = 0;
    for socket in sockets {
        if !socket.asked.lock().ask(id, &request, now) {
            tracing::debug!(socket = %socket.id(), "an ack not asked: the socket owes too many");
            continue;
        }
        let text = sio::encode_event(&socket.nsp, name, args, Some(id), attachments.len());
        if socket.session().send(outgoing(&text, attachments)) {
            asked += 1;
        }
    }
    asked
}

/// `socket`'s client acknowledged `id` with `args` (a JSON array) and `attachments`.
pub fn answered(
    relay: &Shared,
    socket: &Socket,
    id: Option<u64>,
    args: Option<&RawValue>,
    attachments: &[Bytes],
) {
    let Some(request) = id.and_then(|id| socket.asked.lock().answer(id, Instant::now())) else {
        return;
    };
    use base64::Engine as _;
    relay.acked(Acked {
        request: request.to_string(),
        namespace: socket.nsp.to_string(),
        args: args.map_or_else(|| "[]".to_owned(), |a| a.get().to_owned()),
        binary: attachments
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .collect(),
    });
}
