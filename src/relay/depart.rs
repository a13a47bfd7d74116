//! A socket leaving its namespace, whoever ends it (the client's DISCONNECT, the
//! connection closing, a reload that removed the namespace, the server API): off the
//! bus and the server API's registry, out of the connections gauge, and its leaves told
//! to the room members (presence), the namespace (announcements) and the webhooks.
//!
//! In a namespace with `recovery`, a socket whose connection dropped (rather than one
//! its client disconnected, or the server refused) is parked as it leaves: this process
//! and, through the bus, every other keeps its rooms for its client to come back (see
//! [`restore`](super::restore)). The other processes' parked sockets, and the members of
//! a process that died, are parked here too ([`parking`], [`park_departed`]).

use std::sync::Arc;
use std::time::Instant;

use super::recovery::{Park, sessions};
use super::shared::Shared;
use super::socket::Socket;
use super::{announce, control};
use crate::adapter::{Member, ParkRecord, Parking};
use crate::engine::CloseReason;

/// Take a socket out of the bus and announce its leaves where presence is on.
pub async fn depart(relay: &Shared, socket: &Arc<Socket>) {
    sessions::gone(relay, socket);
    leave_bus(relay, socket, None).await;
}

/// [`depart`] for a socket whose connection closed for `reason`: parked when its
/// namespace has `recovery` and the client may come back.
pub async fn depart_closed(relay: &Shared, socket: &Arc<Socket>, reason: CloseReason) {
    if !(reason.is_recoverable() && recovers(relay, &socket.nsp)) {
        sessions::gone(relay, socket);
        return leave_bus(relay, socket, None).await;
    }
    sessions::parked(relay, socket);
    let mut rooms = socket.rooms.lock().clone();
    rooms.insert(Arc::from(announce::ROOM));
    let park = Park {
        rooms,
        user: socket.user().cloned(),
        at: Instant::now(),
    };
    let record = park.record(&socket.nsp, socket.id());
    relay.recovery.parked().park(&socket.nsp, socket.id(), park);
    leave_bus(relay, socket, Some(&record)).await;
    relay.recovery.changed();
}

/// What another process says of its sockets ([`Parking`]).
pub fn parking(relay: &Shared, parking: Parking<'_>) {
    match parking {
        Parking::Parked(record) => {
            // A stale word (a dead process's member announced late) about a socket that
            // is live here again changes nothing.
            let live_here = relay
                .held(&record.member.id)
                .is_some_and(|h| h.socket.nsp == record.nsp);
            if live_here || !recovers(relay, &record.nsp) {
                return;
            }
            let park = Park::from_record(record);
            relay
                .recovery
                .parked()
                .park(&record.nsp, &record.member.id, park);
            relay.recovery.changed();
        }
        Parking::Joined { nsp, id } => {
            if recovers(relay, nsp) {
                relay.recovery.parked().take(nsp, id);
            }
        }
        Parking::Logged(logged) => {
            if let Some(recovery) = relay
                .namespace(&logged.nsp)
                .and_then(|ns| ns.policy().config.recovery)
            {
                let retention = relay.retention(recovery.max_disconnection);
                super::deliver::handed_over(relay, logged, retention);
            }
        }
        Parking::Recorded(recorded) => {
            if let Some(history) = relay
                .namespace(&recorded.nsp)
                .and_then(|ns| ns.policy().config.history)
            {
                super::events::record_handed(relay, recorded, history.into());
            }
        }
        Parking::Evict { nsp, id, user } => {
            let held = relay
                .held(id)
                .filter(|h| &*h.socket.nsp == nsp && h.socket.user().map(|u| &**u) == user);
            if let Some(held) = held {
                tracing::debug!(
                    nsp,
                    socket = id,
                    "socket taken over by its client's new connection elsewhere"
                );
                held.socket.session().close(CloseReason::Replaced);
            }
        }
    }
}

/// A member of a process that died left `room`: park it (membership by membership) when
/// its namespace has `recovery`; its client may come back to this process.
pub fn park_departed(relay: &Shared, nsp: &str, member: &Member, room: &str) {
    let Some(ns) = relay.namespace(nsp).filter(|_| recovers(relay, nsp)) else {
        return;
    };
    let record = {
        let mut parked = relay.recovery.parked();
        parked.add_room(
            &ns.name,
            &member.id,
            member.user.clone(),
            Arc::from(room),
            Instant::now(),
        );
        parked.record(&ns.name, &member.id)
    };
    // The process it was on is gone: every other process is to know it too (and a new
    // one learns it in the snapshot), so that its client may come back to any of them.
    if let Some(record) = record {
        relay.bus.share_park(&record);
    }
    relay.recovery.changed();
}

fn recovers(relay: &Shared, nsp: &str) -> bool {
    relay
        .namespace(nsp)
        .is_some_and(|ns| ns.policy().config.recovery.is_some())
}

async fn leave_bus(relay: &Shared, socket: &Arc<Socket>, parked: Option<&ParkRecord>) {
    relay.release(socket.id());
    let left = match parked {
        Some(record) => relay.bus.remove_parked_socket(record).await,
        None => relay.bus.remove_socket(&socket.nsp, socket.id()).await,
    };
    // The relay's own room (the namespace's count) is announced on its own terms.
    let (namespace, left): (Vec<_>, Vec<_>) = left
        .into_iter()
        .partition(|(room, _)| &**room == announce::ROOM);
    for (room, count) in namespace {
        announce::leave(relay, socket, count);
        relay.report_membership(socket, &room, false, count);
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
