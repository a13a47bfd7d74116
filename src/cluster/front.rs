//! The admin listener's [`Control`] on a node of a cluster ([`Clustered`]): the server
//! API answers for the whole cluster. The host answers first (as without a cluster); then
//! - an emit goes out to the other nodes;
//! - the rooms, a room's members and the sockets add the other nodes' (fetched from
//!   them: a Node server's sockets too), where the host's answer does not have them
//!   already: with [`presence`](super::presence), the host's room counts and member
//!   lists include the other iorelay nodes' members, so only the sockets it does not
//!   know of (a Node server's) are added to them;
//! - a join, leave or disconnect of a socket this host does not hold goes to the node
//!   that holds it;
//! - a disconnect of rooms goes to every node (the count is this host's).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::Gateway;
use super::ask::{Ask, Remote, remotes};
use super::presence::Presence;
use crate::api::{Call, Reply};
use crate::engine::BoxFuture;
use crate::http::control::Control;

/// The host's control, made cluster-wide.
pub struct Clustered {
    /// The host.
    pub inner: Arc<dyn Control>,
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The cluster's presence: the other iorelay nodes' members are in the host's
    /// counts already, and are not counted again from their fetched sockets.
    pub presence: Option<Arc<Presence>>,
}

impl Control for Clustered {
    fn reload(&self) -> BoxFuture<'_, Value> {
        self.inner.reload()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        self.inner.metrics()
    }

    fn status(&self) -> BoxFuture<'_, Value> {
        self.inner.status()
    }

    fn call(&self, call: Call) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let mut reply = self.inner.call(call.clone()).await;
            match &call {
                Call::Emit(emit) if reply.status == 200 => self.gateway.publish_emit(emit),
                Call::Rooms { .. } if reply.status == 200 => self.add_rooms(&mut reply).await,
                Call::Members { namespace, room } if reply.status == 200 => {
                    let remote = self.fetch(namespace, Some(room)).await;
                    add_members(&mut reply, &remote);
                }
                Call::Sockets { namespace, room } if reply.status == 200 => {
                    let names = match namespace {
                        Some(n) => vec![n.clone()],
                        None => self.gateway.namespaces(),
                    };
                    for nsp in names {
                        let remote = self.fetch(&nsp, room.as_ref()).await;
                        add_sockets(&mut reply, &nsp, &remote);
                    }
                }
                Call::Join {
                    socket,
                    namespace,
                    room,
                }
                | Call::Leave {
                    socket,
                    namespace,
                    room,
                } if reply.status == 404 => {
                    let leave = matches!(call, Call::Leave { .. });
                    let what = Ask::Move {
                        sid: socket,
                        room,
                        leave,
                    };
                    let answers = self.gateway.ask(namespace, what).await;
                    if !answers.is_empty() {
                        let count = self.count(namespace, room, socket, leave).await;
                        reply = Reply::ok(json!({ "room": room, "count": count }));
                    }
                }
                Call::Kick { socket, namespace } if reply.status == 404 => {
                    let answers = self.gateway.ask(namespace, Ask::Kick(socket)).await;
                    if !answers.is_empty() {
                        reply = Reply::ok(json!({}));
                    }
                }
                Call::Disconnect { namespace, rooms } if reply.status == 200 => {
                    self.gateway.disconnect_elsewhere(namespace, rooms);
                }
                _ => {}
            }
            reply
        })
    }
}

impl Clustered {
    /// The other nodes' sockets of `nsp` (in `room`, if given).
    async fn fetch(&self, nsp: &str, room: Option<&String>) -> Vec<Remote> {
        let rooms: Vec<String> = room.into_iter().cloned().collect();
        remotes(&self.gateway.ask(nsp, Ask::Fetch(&rooms)).await)
    }

    /// [`Clustered::fetch`] with only the memberships that presence has not counted (one
    /// it has not heard of yet is counted from the fetch).
    async fn fetch_uncounted(&self, nsp: &str, room: Option<&String>) -> Vec<Remote> {
        let mut remote = self.fetch(nsp, room).await;
        if let Some(presence) = &self.presence {
            let counted = presence.remote_memberships(nsp);
            for socket in &mut remote {
                let id = socket.id.clone();
                socket
                    .rooms
                    .retain(|r| !counted.contains(&(r.clone(), id.clone())));
            }
            if let Some(room) = room {
                remote.retain(|s| s.rooms.contains(room));
            }
        }
        remote
    }

    /// The cluster-wide member count of a room, once `sid` joined it (`leave`: left it).
    /// The move is counted even when the listing does not show it yet (the streams
    /// adapter's move is written to the stream, not answered once done).
    async fn count(&self, nsp: &str, room: &str, sid: &str, leave: bool) -> usize {
        let call = Call::Members {
            namespace: nsp.to_owned(),
            room: room.to_owned(),
        };
        let members = self.inner.call(call).await.body["members"].take();
        let members = members.as_array().map_or(&[][..], Vec::as_slice);
        let here = members.len();
        let remote = self.fetch_uncounted(nsp, Some(&room.to_owned())).await;
        // Counted already (here, or by presence), or not yet (the move is on its way).
        let listed = remote.iter().any(|s| s.id == sid)
            || members.iter().any(|m| m["id"].as_str() == Some(sid));
        match (leave, listed) {
            (false, false) => here + remote.len() + 1,
            (true, true) => (here + remote.len()).saturating_sub(1),
            _ => here + remote.len(),
        }
    }

    async fn add_rooms(&self, reply: &mut Reply) {
        let names: Vec<String> = reply.body["namespaces"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for nsp in names {
            let remote = self.fetch_uncounted(&nsp, None).await;
            let list = &mut reply.body["namespaces"][&nsp];
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for r in list.as_array().into_iter().flatten() {
                if let (Some(room), Some(n)) = (r["room"].as_str(), r["count"].as_u64()) {
                    counts.insert(room.to_owned(), n);
                }
            }
            for socket in &remote {
                for room in &socket.rooms {
                    if crate::adapter::is_listed(room) {
                        *counts.entry(room.clone()).or_default() += 1;
                    }
                }
            }
            *list = counts
                .into_iter()
                .map(|(room, count)| json!({ "room": room, "count": count }))
                .collect();
        }
    }
}

fn add_members(reply: &mut Reply, remote: &[Remote]) {
    let Some(list) = reply.body["members"].as_array_mut() else {
        return;
    };
    for socket in remote {
        if !list.iter().any(|m| m["id"] == socket.id.as_str()) {
            list.push(json!({ "id": socket.id, "user": socket.user }));
        }
    }
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
}

fn add_sockets(reply: &mut Reply, nsp: &str, remote: &[Remote]) {
    let Some(list) = reply.body["sockets"].as_array_mut() else {
        return;
    };
    for socket in remote {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(socket.issued);
        list.push(json!({
            "id": socket.id,
            "namespace": nsp,
            "user": socket.user,
            "rooms": socket.rooms,
            "transport": socket.transport.as_deref().unwrap_or("unknown"),
            "address": socket.address,
            "connected_at": humantime::format_rfc3339_millis(at).to_string(),
        }));
    }
    list.sort_by(|a, b| {
        (a["namespace"].as_str(), a["id"].as_str())
            .cmp(&(b["namespace"].as_str(), b["id"].as_str()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, rooms: &[&str]) -> Remote {
        Remote {
            id: id.into(),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            user: None,
            address: "10.0.0.9".into(),
            issued: 0,
            transport: None,
        }
    }

    #[test]
    fn remote_members_and_sockets_join_the_host_lists_sorted() {
        let mut reply = Reply::ok(json!({ "members": [{ "id": "b", "user": null }] }));
        add_members(&mut reply, &[remote("a", &["r"]), remote("b", &["r"])]);
        assert_eq!(
            reply.body["members"],
            json!([{ "id": "a", "user": null }, { "id": "b", "user": null }])
        );
        let mut reply = Reply::ok(json!({ "sockets": [] }));
        add_sockets(&mut reply, "/", &[remote("z", &["r"])]);
        assert_eq!(reply.body["sockets"][0]["transport"], "unknown");
        assert_eq!(
            reply.body["sockets"][0]["connected_at"],
            "1970-01-01T00:00:00.000Z"
        );
    }
}
