//! What a namespace says when a socket arrives or leaves: the `welcome` event to the
//! socket itself, and, with `announce = true`, `$presence` with `"room": null` and the
//! namespace's host-wide connection count (cluster-wide with Redis) to the others.
//!
//! The count is a room count: every socket of every namespace is a member of the
//! relay's own room [`ROOM`] (a `$` name, which no client can join and which the bus
//! never lists), so the bus replicates it between workers like any room, and a reload
//! that turns `announce` on counts the sockets connected before it too. Between workers
//! the count is eventually consistent, as room counts are.
//!
//! Room presence (`$presence` with a room name) is [`control`](super::control)'s.
//!
//! In a cluster the other iorelay nodes' connections count too: each socket's arrival
//! and leave in [`ROOM`] goes to the membership sink, which the cluster's presence
//! shares, and the other nodes' are announced here ([`arrived_elsewhere`],
//! [`departed`]).

use serde_json::value::RawValue;

use super::policy::Policy;
use super::reply::presence;
use super::shared::Shared;
use super::socket::Socket;
use crate::adapter::{Member, Target};
use crate::engine::{Frame, Outgoing};
use crate::socketio::packet as sio;

/// The relay's own room that holds every socket of a namespace.
pub const ROOM: &str = "$namespace";

/// Send `welcome` to a socket that just connected, if its namespace has one. Called
/// after the CONNECT answer and before the socket is on the bus, so that it comes before
/// anything relayed. Paced like `greet`, so that a client reading one WebSocket message
/// at a time sees it apart from the CONNECT.
pub fn welcome(relay: &Shared, policy: &Policy, socket: &Socket) {
    let Some(welcome) = &policy.config.welcome else {
        return;
    };
    let mut args: Vec<&RawValue> = policy.welcome_args.iter().map(AsRef::as_ref).collect();
    // With recovery a client takes any event's last string argument for its offset: give
    // it a true one.
    let offset = policy
        .config
        .recovery
        .map(|_| super::deliver::current_offset(relay));
    args.extend(offset.as_deref());
    let text = sio::encode_event(&socket.nsp, &welcome.event, &args, None, 0);
    socket
        .session()
        .send(Outgoing::Paced(Frame::message(&text)));
}

/// Count a connected socket in its namespace and, with `announce`, tell the others.
/// The membership sink hears of it (the cluster's presence shares it; webhooks are for
/// listed rooms only).
pub async fn arrive(relay: &Shared, policy: &Policy, socket: &Socket) {
    let count = relay.bus.join(&socket.nsp, ROOM, socket.id()).await;
    relay.report_membership(socket, ROOM, true, count);
    if policy.config.announce {
        let member = member_of(socket);
        let item = presence(&socket.nsp, &member, None, "join", count);
        let target = Target {
            rooms: Vec::new(),
            except: Some(member.id),
        };
        relay.bus.broadcast(&socket.nsp, &target, &item);
    }
}

/// Tell the namespace that `socket`, already off the bus, left it; `count` is what
/// remains.
pub fn leave(relay: &Shared, socket: &Socket, count: usize) {
    if announces(relay, &socket.nsp) {
        let item = presence(&socket.nsp, &member_of(socket), None, "leave", count);
        relay.bus.broadcast(&socket.nsp, &Target::default(), &item);
    }
}

/// Tell this process's sockets of `nsp` that `member` of another node arrived (that node
/// announces to its own sockets; `count` is the cluster-wide count).
pub fn arrived_elsewhere(relay: &Shared, nsp: &str, member: &Member, count: usize) {
    if announces(relay, nsp) {
        let item = presence(nsp, member, None, "join", count);
        relay.bus.broadcast_local(nsp, &Target::default(), &item);
    }
}

/// Tell this process's sockets of `nsp` that `member`, whose process is gone, left it
/// (every process announces to its own sockets).
pub fn departed(relay: &Shared, nsp: &str, member: &Member, count: usize) {
    if announces(relay, nsp) {
        let item = presence(nsp, member, None, "leave", count);
        relay.bus.broadcast_local(nsp, &Target::default(), &item);
    }
}

fn announces(relay: &Shared, nsp: &str) -> bool {
    relay
        .namespace(nsp)
        .is_some_and(|ns| ns.policy().config.announce)
}

fn member_of(socket: &Socket) -> Member {
    Member {
        id: socket.id().clone(),
        user: socket.user().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_presence_of_a_namespace_has_a_null_room() {
        let member = Member {
            id: Arc::from("s1"),
            user: Some(Arc::from("Ann")),
        };
        let item = presence("/live", &member, None, "join", 3);
        let text = match item.frames() {
            [Frame::Text(text)] => text.as_str().to_owned(),
            other => panic!("one text frame expected, got {other:?}"),
        };
        assert_eq!(
            text,
            r#"42/live,["$presence",{"room":null,"action":"join","id":"s1","user":"Ann","count":3}]"#
        );
    }

    #[test]
    fn the_room_is_the_relays_own() {
        assert!(!crate::adapter::is_listed(ROOM));
    }
}
