//! What the daemon's processes do with the cluster's presence
//! ([`crate::cluster::presence`]): a process with sockets keeps the other nodes'
//! memberships in its bus and announces their news to its own members ([`present`]);
//! the process that owns the webhook sender reports a gone node's leaves
//! ([`departed_events`]) when presence says it is the one to.

use std::sync::Arc;

use crate::adapter::{Member, PeerAdapter, is_listed};
use crate::cluster::presence::wire::{Change, Membership};
use crate::relay::announce::ROOM;
use crate::relay::{Shared, announce, control};

/// Keep the other nodes' memberships in the bus and, for news (`announce`), tell this
/// process's members of their rooms (the nodes that hold them announce to their own).
pub fn present(relay: &Shared, bus: &PeerAdapter, changes: Vec<Change>, announce: bool) {
    let mut touched = std::collections::BTreeSet::new();
    for Change { join, m } in changes {
        // Only what this process could hold itself: a served namespace, a room a client
        // could be in, or the namespace's own room (its connections).
        let namespace = m.room == ROOM;
        let room_like = is_listed(&m.room) && crate::api::check_room_name(&m.room).is_ok();
        if !((namespace || room_like) && relay.namespace(&m.nsp).is_some()) {
            continue;
        }
        let count = bus.present(&m.nsp, &m.room, &m.id, m.user.as_deref(), join);
        if announce {
            let member = Member {
                id: Arc::from(m.id),
                user: m.user.map(Arc::from),
            };
            match (namespace, join) {
                (true, true) => announce::arrived_elsewhere(relay, &m.nsp, &member, count),
                (true, false) => announce::departed(relay, &m.nsp, &member, count),
                (false, _) => {
                    let action = if join { "join" } else { "leave" };
                    control::announce_elsewhere(relay, &m.nsp, &member, &m.room, action, count);
                }
            }
        }
        touched.insert(m.nsp);
    }
    for nsp in touched {
        relay.count_rooms(&nsp);
    }
}

/// A join or leave of this process's own sockets as presence shares it: listed rooms
/// and the namespace's own room (its connections); none for a departed member of
/// another process (its process is gone, and the host's table lost it with that
/// process).
pub fn shared_change(change: &crate::relay::Membership) -> Option<Change> {
    if change.departed || !(is_listed(&change.room) || &*change.room == ROOM) {
        return None;
    }
    Some(Change {
        join: change.joined,
        m: Membership {
            nsp: change.nsp.to_string(),
            room: change.room.to_string(),
            id: change.socket.to_string(),
            user: change.user.as_deref().map(str::to_owned),
        },
    })
}

/// The webhook events of a gone node's members' leaves (each with the cluster-wide count
/// after it).
pub fn departed_events(departed: Vec<(Membership, usize)>) -> Vec<crate::webhooks::Event> {
    departed
        .into_iter()
        .flat_map(|(m, count)| {
            crate::webhooks::events_of(&crate::relay::Membership {
                nsp: Arc::from(m.nsp),
                room: Arc::from(m.room),
                socket: Arc::from(m.id),
                user: m.user.map(Arc::from),
                joined: false,
                count,
                departed: true,
            })
        })
        .collect()
}
