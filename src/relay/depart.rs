//! A socket leaving its namespace, whoever ends it (the client's DISCONNECT, the
//! connection closing, a reload that removed the namespace, the server API): off the
//! bus and the server API's registry, out of the connections gauge, and its leaves told
//! to the room members (presence), the namespace (announcements) and the webhooks.

use std::sync::Arc;

use super::shared::Shared;
use super::socket::Socket;
use super::{announce, control};

/// Take a socket out of the bus and announce its leaves where presence is on.
pub async fn depart(relay: &Shared, socket: &Arc<Socket>) {
    relay.release(socket.id());
    let left = relay.bus.remove_socket(&socket.nsp, socket.id()).await;
    // The relay's own room (the namespace's count) is announced on its own terms.
    let (namespace, left): (Vec<_>, Vec<_>) = left
        .into_iter()
        .partition(|(room, _)| &**room == announce::ROOM);
    for (_, count) in namespace {
        announce::leave(relay, socket, count);
    }
    let counted = std::mem::take(&mut *socket.counted_as.lock());
    if !counted.is_empty() {
        relay
            .meters
            .connections
            .with_label_values(&[&socket.nsp, counted])
            .dec();
    }
    if !left.is_empty() {
        relay.count_rooms(&socket.nsp);
    }
    socket.rooms.lock().clear();
    for (room, count) in &left {
        relay.report_membership(socket, room, false, *count);
    }
    let presence = relay
        .namespace(&socket.nsp)
        .is_some_and(|ns| ns.policy().config.presence);
    if presence {
        for (room, count) in left {
            control::announce(relay, socket, &room, "leave", count);
        }
    }
}
