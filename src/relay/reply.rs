//! What the relay sends on its own account, and the one encoding every delivery shares.
//!
//! - [`outgoing`]: a Socket.IO packet and its attachments as one queue item, built once
//!   and shared by every recipient (fan-out, presence, an echoed ack).
//! - [`refuse`]: a refused event or control request answered through the ack when the
//!   client asked for one, else with a `$error` event; counted by reason.
//! - [`send_event`]: a relay event with one JSON argument, to one socket.
//! - [`presence`]: the `$presence` event of room joins and leaves ([`control`](super::control))
//!   and of the namespace's announcements ([`announce`](super::announce)).
//!
//! Both [`events`](super::events) and [`control`](super::control) answer through here,
//! which is what keeps the arrow between those two pointing one way.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use serde_json::value::RawValue;

use super::policy::Refusal;
use super::shared::Shared;
use super::socket::Socket;
use crate::adapter::Member;
use crate::engine::{Frame, Outgoing};
use crate::socketio::packet as sio;

/// One Socket.IO packet (and its attachments) as a single queue item.
pub fn outgoing(text: &str, attachments: &[Bytes]) -> Outgoing {
    if attachments.is_empty() {
        Outgoing::Frame(Frame::message(text))
    } else {
        let mut frames = Vec::with_capacity(1 + attachments.len());
        frames.push(Frame::message(text));
        frames.extend(attachments.iter().cloned().map(Frame::Binary));
        Outgoing::Group(Arc::from(frames))
    }
}

/// The `$presence` event (`room` `None` for the namespace's own announcements), encoded
/// once for every recipient; keyed by namespace and room, so that a newer one supersedes
/// it for a client that is behind.
pub fn presence(
    nsp: &str,
    member: &Member,
    room: Option<&str>,
    action: &str,
    count: usize,
) -> Outgoing {
    let body = json!({
        "room": room,
        "action": action,
        "id": &*member.id,
        "user": member.user.as_deref(),
        "count": count,
    })
    .to_string();
    let raw = RawValue::from_string(body).expect("serde_json output is valid JSON");
    let text = sio::encode_event(nsp, "$presence", &[&raw], None, 0);
    // It carries the room's (or namespace's) count, so the newest one for a room is all
    // a lagging client needs: a storm of joins and leaves then costs it one queued
    // packet per room, never its connection (see engine::Outgoing::Latest).
    let key = format!("{nsp}\u{0}{}", room.unwrap_or(""));
    Outgoing::Latest(Arc::from(key), Frame::message(&text))
}

/// Tell the client its event was refused: through the ack when it asked for one, else
/// with a `$error` event.
pub fn refuse(relay: &Shared, socket: &Socket, event: &str, ack: Option<u64>, refusal: Refusal) {
    let error = refusal.message();
    tracing::debug!(socket = %socket.id(), nsp = %socket.nsp, event, error, "event refused");
    relay
        .meters
        .refused
        .with_label_values(&[&socket.nsp, refusal.label()])
        .inc();
    match ack {
        Some(id) => {
            let body = json!([{ "ok": false, "error": error }]).to_string();
            socket.send_text(&sio::encode_ack_json(&socket.nsp, id, &body));
        }
        None => {
            let body = json!({ "event": event, "error": error }).to_string();
            send_event(socket, "$error", &body);
        }
    }
}

/// Emit a relay event with one JSON argument to `socket` alone.
pub fn send_event(socket: &Socket, name: &str, json_arg: &str) {
    if let Ok(raw) = RawValue::from_string(json_arg.to_owned()) {
        socket.send_text(&sio::encode_event(&socket.nsp, name, &[&raw], None, 0));
    }
}
