//! Control events the relay answers itself: `$join`, `$leave`, `$rooms`, `$members`,
//! `$history` (answered by [`recall`]), and the `$presence` announcements that joins and
//! leaves cause. What the two listings show is the namespace's `rooms` and `members`
//! policy ([`Policy::may_list_members`]).
//!
//! Replies go through the ack when the client asked for one; refusals without an ack come
//! back as `$error` (see [`reply::refuse`](super::reply::refuse)).

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::policy::{Policy, Refusal};
use super::recall;
use super::reply::{outgoing, presence, refuse};
use super::shared::Shared;
use super::socket::Socket;
use crate::adapter::{Member, RoomCount, Target, is_listed};
use crate::config::Listing;
use crate::socketio::packet as sio;

/// Handle a `$…` event.
pub async fn handle(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    name: &str,
    args: &[&RawValue],
    ack: Option<u64>,
) {
    let result = match name {
        "$history" => {
            let recalled = recall::Ask::parse(args.first().copied())
                .and_then(|ask| recall::history(relay, policy, socket, &ask));
            match recalled {
                Ok(recalled) => answer(socket, ack, recalled),
                Err(error) => refuse(relay, socket, name, ack, error),
            }
            return;
        }
        "$join" if args.first().is_some_and(|a| a.get().starts_with('{')) => {
            match join_recalling(relay, policy, socket, args).await {
                Ok(recalled) => answer(socket, ack, recalled),
                Err(error) => refuse(relay, socket, name, ack, error),
            }
            return;
        }
        "$join" => join(relay, policy, socket, args).await,
        "$leave" => leave(relay, policy, socket, args).await,
        "$rooms" => rooms(relay, policy, socket).await,
        "$members" => members(relay, policy, socket, args).await,
        _ => Err(Refusal::UnknownControl),
    };
    match result {
        Ok(reply) => {
            if let Some(id) = ack {
                let body = Value::Array(vec![reply]).to_string();
                socket.send_text(&sio::encode_ack_json(&socket.nsp, id, &body));
            }
        }
        Err(error) => refuse(relay, socket, name, ack, error),
    }
}

/// Send a reply that may carry binary attachments (history) through the ack.
fn answer(socket: &Socket, ack: Option<u64>, recalled: recall::Recalled) {
    let Some(id) = ack else {
        return;
    };
    let mut fields = serde_json::Map::new();
    fields.insert("ok".to_owned(), Value::Bool(true));
    fields.extend(recalled.fields);
    let body = Value::Object(fields).to_string();
    let Ok(body) = RawValue::from_string(body) else {
        return;
    };
    let text = sio::encode_ack(&socket.nsp, id, &[&body], recalled.attachments.len());
    socket
        .session()
        .send(outgoing(&text, &recalled.attachments));
}

/// `$join {"room": R, "history": N}`: join, then the room's latest `N` events.
async fn join_recalling(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    args: &[&RawValue],
) -> Result<recall::Recalled, Refusal> {
    let first = args.first().ok_or(Refusal::RoomMissing)?;
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(first.get()) else {
        return Err(Refusal::RoomNotString);
    };
    let room = match fields.get("room") {
        Some(Value::String(room)) => room.clone(),
        Some(_) => return Err(Refusal::RoomNotString),
        None => return Err(Refusal::RoomMissing),
    };
    let wanted = match fields.get("history") {
        None | Some(Value::Null) => None,
        Some(n) => Some(recall::count(n)?),
    };
    let keep = match wanted {
        Some(_) => Some(policy.config.history.ok_or(Refusal::NoHistory)?),
        None => None,
    };
    policy.may_join(&room, &socket.grants)?;
    let count = enter(relay, policy, socket, &room).await?;
    let mut recalled = match (wanted, keep) {
        (Some(n), Some(keep)) => {
            recall::read(relay, &socket.nsp, Some(&room), None, n.min(keep.size))
        }
        _ => recall::Recalled::default(),
    };
    recalled
        .fields
        .insert("room".to_owned(), Value::String(room));
    recalled.fields.insert("count".to_owned(), json!(count));
    Ok(recalled)
}

/// The room name in the first argument.
fn room_arg(args: &[&RawValue]) -> Result<String, Refusal> {
    let first = args.first().ok_or(Refusal::RoomMissing)?;
    serde_json::from_str::<String>(first.get()).map_err(|_| Refusal::RoomNotString)
}

async fn join(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    args: &[&RawValue],
) -> Result<Value, Refusal> {
    let room = room_arg(args)?;
    policy.may_join(&room, &socket.grants)?;
    let count = enter(relay, policy, socket, &room).await?;
    Ok(json!({ "ok": true, "room": room, "count": count }))
}

/// The rooms a verified token puts a new socket in (its `join` claim), each as a
/// `$join` would (names checked, `max_rooms`, presence), but not subject to the
/// namespace's join policy: the token's issuer chose them. A room that fails a check
/// is skipped with a log line; the connection stays.
pub async fn join_at_connect(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    rooms: &[String],
) {
    for room in rooms {
        let entered = match policy.check_room_name(room) {
            Ok(()) => enter(relay, policy, socket, room).await.map(|_| ()),
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = entered {
            tracing::info!(nsp = %socket.nsp, socket = %socket.id(), reason = refusal.label(), "room of the token's join claim skipped");
        }
    }
}

/// A restored socket is back in `rooms` (joined on the bus already, see
/// [`restore::resume`](super::restore::resume)): counted and announced as joins.
pub async fn rejoined(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    rooms: Vec<(Arc<str>, crate::engine::BoxFuture<'_, usize>)>,
) {
    for (room, count) in rooms {
        let count = count.await;
        relay.report_membership(socket, &room, true, count);
        if policy.config.presence {
            announce(relay, socket, &room, "join", count);
        }
    }
    relay.count_rooms(&socket.nsp);
}

async fn leave(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    args: &[&RawValue],
) -> Result<Value, Refusal> {
    let room = room_arg(args)?;
    policy.check_room_name(&room)?;
    let count = exit(relay, policy, socket, &room).await;
    Ok(json!({ "ok": true, "room": room, "count": count }))
}

/// Put `socket` in `room` — on the bus, in its own list, announced where presence is on
/// — unless it is there already, within `max_rooms`; the room's member count
/// afterwards. `$join`, the token's `join` claim and the server API's join all come
/// here (the join policy is the caller's to check).
pub async fn enter(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    room: &str,
) -> Result<usize, Refusal> {
    if socket.is_in(room) {
        return Ok(relay.bus.count(&socket.nsp, room).await);
    }
    if socket.rooms.lock().len() >= policy.config.limits.max_rooms {
        return Err(Refusal::TooManyRooms);
    }
    let held_here = relay.held(room).is_some_and(|h| h.socket.nsp == socket.nsp);
    if held_here || relay.bus.held_elsewhere(&socket.nsp, room) {
        return Err(Refusal::RoomIsSocket);
    }
    let count = relay.bus.join(&socket.nsp, room, socket.id()).await;
    relay.count_rooms(&socket.nsp);
    socket.rooms.lock().insert(Arc::from(room));
    relay.report_membership(socket, room, true, count);
    if policy.config.presence {
        announce(relay, socket, room, "join", count);
    }
    Ok(count)
}

/// Take `socket` out of `room` (announced where presence is on) if it is in it; the
/// room's member count afterwards.
pub async fn exit(relay: &Shared, policy: &Policy, socket: &Arc<Socket>, room: &str) -> usize {
    let was_in = socket.rooms.lock().remove(room);
    if !was_in {
        return relay.bus.count(&socket.nsp, room).await;
    }
    let count = relay.bus.leave(&socket.nsp, room, socket.id()).await;
    relay.count_rooms(&socket.nsp);
    relay.report_membership(socket, room, false, count);
    if policy.config.presence {
        announce(relay, socket, room, "leave", count);
    }
    count
}

async fn members(
    relay: &Shared,
    policy: &Policy,
    socket: &Arc<Socket>,
    args: &[&RawValue],
) -> Result<Value, Refusal> {
    let room = room_arg(args)?;
    policy.may_list_members(&room, socket.is_in(&room), &socket.grants)?;
    let members: Vec<Value> = relay
        .bus
        .members(&socket.nsp, &room)
        .await
        .into_iter()
        .map(|m| json!({ "id": &*m.id, "user": m.user.as_deref() }))
        .collect();
    Ok(json!({ "ok": true, "room": room, "members": members }))
}

/// `$rooms` under the namespace's `rooms` policy: every listed room of the namespace, or
/// the socket's own (each counted host-wide), or a refusal.
async fn rooms(relay: &Shared, policy: &Policy, socket: &Arc<Socket>) -> Result<Value, Refusal> {
    let rooms = match policy.config.rooms {
        Listing::None => return Err(Refusal::ListingDisabled),
        Listing::All => relay.bus.rooms(&socket.nsp).await,
        Listing::Joined => {
            // At most `max_rooms` look-ups, in name order as the full listing is.
            let mut own = Vec::new();
            for room in socket.joined().into_iter().filter(|r| is_listed(r)) {
                let count = relay.bus.count(&socket.nsp, &room).await;
                own.push(RoomCount { room, count });
            }
            own
        }
    };
    Ok(json!({ "ok": true, "rooms": rooms }))
}

/// Tell the other members of `room` that `socket` joined or left it.
pub fn announce(relay: &Shared, socket: &Socket, room: &str, action: &str, count: usize) {
    let member = Member {
        id: socket.id().clone(),
        user: socket.user().cloned(),
    };
    let item = presence(&socket.nsp, &member, Some(room), action, count);
    let target = Target {
        rooms: vec![Arc::from(room)],
        except: Some(member.id),
    };
    relay.bus.broadcast(&socket.nsp, &target, &item);
}

/// Tell this process's members of `room` that `member`, who was elsewhere, left it (its
/// process is gone; every process announces to its own sockets).
pub fn announce_departed(relay: &Shared, nsp: &str, member: &Member, room: &str, count: usize) {
    announce_elsewhere(relay, nsp, member, room, "leave", count);
}

/// Tell this process's members of `room` that `member` of another process or node
/// joined or left it (`action`; `count` members now): that one announces to its own
/// sockets, every process to its own.
pub fn announce_elsewhere(
    relay: &Shared,
    nsp: &str,
    member: &Member,
    room: &str,
    action: &str,
    count: usize,
) {
    let presence_on = relay
        .namespace(nsp)
        .is_some_and(|ns| ns.policy().config.presence);
    if !presence_on {
        return;
    }
    let item = presence(nsp, member, Some(room), action, count);
    let target = Target {
        rooms: vec![Arc::from(room)],
        except: None,
    };
    relay.bus.broadcast_local(nsp, &target, &item);
}
