//! The server API on this process's side: a backend's [`Call`] answered for the sockets
//! this process holds (every worker answers for its own, the admin listener merges the
//! parts), or for the host where every process sees the same (rooms, members).
//!
//! A backend is trusted to place sockets where it likes: its joins skip the namespace's
//! join policy but keep `max_rooms`, and go through the same [`control::enter`] as a
//! client's `$join`, so presence is announced alike.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::control;
use super::deliver;
use super::events::{self, json_array};
use super::history::Position;
use super::history::{Event, EventId, Keep};
use super::policy::Refusal;
use super::recall;
use super::reply::outgoing;
use super::shared::{Held, Namespace, Shared};
use crate::adapter::{Pick, Stamp};
use crate::api::{Call, Emit, Failure, MemberInfo, Part, Relayed, RoomInfo, SocketInfo};
use crate::socketio::packet as sio;

/// Answer `call` for this process. An emit is recorded in the history of its rooms under
/// `stamp` (the master's, the same in every worker), or under this process's own id.
pub async fn answer(relay: &Shared, call: &Call, stamp: Option<Stamp>) -> Part {
    match answer_or_fail(relay, call, stamp).await {
        Ok(part) => part,
        Err(failure) => Part::Failed(failure),
    }
}

async fn answer_or_fail(
    relay: &Shared,
    call: &Call,
    stamp: Option<Stamp>,
) -> Result<Part, Failure> {
    match call {
        Call::Emit(emit) => emit_here(relay, emit, stamp),
        Call::Relay(relayed) => relay_here(relay, relayed, stamp),
        Call::Rooms { namespace } => {
            let names = match namespace {
                Some(n) => vec![declared(relay, n)?.name.to_string()],
                None => relay.namespace_names(),
            };
            let mut all = Vec::with_capacity(names.len());
            for name in names {
                let rooms = relay.bus.rooms(&name).await;
                let rooms = rooms
                    .into_iter()
                    .map(|r| RoomInfo {
                        room: r.room.to_string(),
                        count: r.count,
                    })
                    .collect();
                all.push((name, rooms));
            }
            Ok(Part::Rooms(all))
        }
        Call::Members { namespace, room } => {
            declared(relay, namespace)?;
            let members = relay.bus.members(namespace, room).await;
            let mut members: Vec<MemberInfo> = members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.id.to_string(),
                    user: m.user.as_deref().map(str::to_owned),
                })
                .collect();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Part::Members(members))
        }
        Call::Sockets { namespace, room } => {
            if let Some(n) = namespace {
                declared(relay, n)?;
            }
            let sockets = relay
                .held_in(namespace.as_deref())
                .into_iter()
                .filter(|h| room.as_ref().is_none_or(|r| h.socket.is_in(r)))
                .map(|h| describe(&h))
                .collect();
            Ok(Part::Sockets(sockets))
        }
        Call::Join {
            socket,
            namespace,
            room,
        } => {
            let ns = declared(relay, namespace)?;
            let Some(held) = held_in(relay, socket, namespace) else {
                return Ok(Part::NotHere);
            };
            if !crate::adapter::is_listed(room) {
                // `$…` rooms are the relay's own (a namespace's connection count).
                return Err(Failure::Invalid(Refusal::RoomReserved.message().to_owned()));
            }
            let policy = ns.policy();
            match control::enter(relay, &policy, &held.socket, room).await {
                Ok(count) => Ok(Part::Moved(count)),
                Err(Refusal::TooManyRooms) => {
                    Err(Failure::TooManyRooms(policy.config.limits.max_rooms))
                }
                Err(other) => Err(Failure::Invalid(other.message().to_owned())),
            }
        }
        Call::Leave {
            socket,
            namespace,
            room,
        } => {
            let ns = declared(relay, namespace)?;
            let Some(held) = held_in(relay, socket, namespace) else {
                return Ok(Part::NotHere);
            };
            let count = control::exit(relay, &ns.policy(), &held.socket, room).await;
            Ok(Part::Moved(count))
        }
        Call::Kick { socket, namespace } => {
            declared(relay, namespace)?;
            let Some(held) = held_in(relay, socket, namespace) else {
                return Ok(Part::NotHere);
            };
            Ok(if kick(&held).await {
                Part::Kicked
            } else {
                Part::NotHere
            })
        }
        Call::Disconnect { namespace, rooms } => {
            declared(relay, namespace)?;
            let mut disconnected = 0;
            for held in relay.held_in(Some(namespace)) {
                let chosen = rooms.is_empty() || rooms.iter().any(|r| held.socket.is_in(r));
                if chosen && kick(&held).await {
                    disconnected += 1;
                }
            }
            Ok(Part::Disconnected(disconnected))
        }
        Call::History {
            namespace,
            room,
            since,
            limit,
        } => {
            let ns = declared(relay, namespace)?;
            let keep = ns
                .policy()
                .config
                .history
                .ok_or_else(|| Failure::NoHistory(namespace.clone()))?;
            let since: Option<Position> = match since {
                Some(p) => Some(p.parse().map_err(|_| {
                    Failure::Invalid(format!("since {p:?} is not a history position"))
                })?),
                None => None,
            };
            let limit = limit.unwrap_or(keep.size).min(keep.size);
            Ok(Part::History(recall::for_api(
                relay,
                &ns.name,
                room,
                since.as_ref(),
                limit,
            )))
        }
    }
}

/// The namespace, when the config declares it.
fn declared(relay: &Shared, name: &str) -> Result<Arc<Namespace>, Failure> {
    relay
        .namespace(name)
        .ok_or_else(|| Failure::NoNamespace(name.to_owned()))
}

/// The socket `id`, when this process holds it and it belongs to `nsp`.
fn held_in(relay: &Shared, id: &str, nsp: &str) -> Option<Held> {
    relay.held(id).filter(|h| *h.socket.nsp == *nsp)
}

async fn kick(held: &Held) -> bool {
    match held.owner.upgrade() {
        Some(owner) => owner.disconnect(&held.socket.nsp).await,
        None => false,
    }
}

fn describe(held: &Held) -> SocketInfo {
    let socket = &held.socket;
    SocketInfo {
        id: socket.id().to_string(),
        namespace: socket.nsp.to_string(),
        user: socket.user().map(|u| u.to_string()),
        rooms: socket.joined().iter().map(|r| r.to_string()).collect(),
        transport: (*socket.counted_as.lock()).to_owned(),
        address: socket.address.to_string(),
        connected_at: humantime::format_rfc3339_millis(socket.since).to_string(),
    }
}

/// An emit of the server API, made into the event it delivers.
fn emit_here(relay: &Shared, emit: &Emit, stamp: Option<Stamp>) -> Result<Part, Failure> {
    let attachments = decode_binaries(&emit.binary)?;
    let mut args: Vec<Box<RawValue>> = Vec::with_capacity(emit.args.len() + attachments.len());
    for arg in &emit.args {
        args.push(raw(&arg.to_string()));
    }
    for num in 0..attachments.len() {
        args.push(raw(&format!(r#"{{"_placeholder":true,"num":{num}}}"#)));
    }
    let pick = Pick {
        rooms: names(&emit.rooms),
        sockets: names(&emit.sockets),
        except: names(&emit.except),
    };
    let recorded = emit.sockets.is_empty() || !emit.rooms.is_empty();
    let event = Outbound {
        nsp: &emit.namespace,
        name: &emit.event,
        args,
        attachments,
        pick,
        recorded,
    };
    deliver_here(relay, event, stamp)
}

/// An event another node of the cluster broadcast: its arguments hold their own
/// placeholders, and a room may be a socket's id (as on a Node server).
fn relay_here(relay: &Shared, relayed: &Relayed, stamp: Option<Stamp>) -> Result<Part, Failure> {
    let attachments = decode_binaries(&relayed.binary)?;
    let args: Vec<Box<RawValue>> = serde_json::from_str(&relayed.args)
        .map_err(|e| Failure::Invalid(format!("args are not a JSON array: {e}")))?;
    if let Some(request) = &relayed.ack {
        // Asked of each chosen socket here; neither kept for recovery nor in history (an
        // ack cannot be answered on another node), as socket.io does.
        let ns = declared(relay, &relayed.namespace)?;
        let chosen: Vec<Arc<super::socket::Socket>> = relay
            .held_in(Some(&ns.name))
            .into_iter()
            .map(|held| held.socket)
            .filter(|socket| {
                let is = |name: &String| {
                    **socket.id() == **name || socket.rooms.lock().contains(name.as_str())
                };
                (relayed.rooms.is_empty() || relayed.rooms.iter().any(is))
                    && !relayed.except.iter().any(is)
            })
            .collect();
        let args: Vec<&RawValue> = args.iter().map(AsRef::as_ref).collect();
        let asked = super::asks::ask(&chosen, (&relayed.event, &args), &attachments, request);
        return Ok(Part::Delivered(asked));
    }
    // A name that is a socket of this process is that socket; any other a room (no
    // client may join a room named after a connected socket: `control::enter`).
    let (sockets, rooms): (Vec<Arc<str>>, Vec<Arc<str>>) = names(&relayed.rooms)
        .into_iter()
        .partition(|name| held_in(relay, name, &relayed.namespace).is_some());
    let recorded = sockets.is_empty() || !rooms.is_empty();
    let pick = Pick {
        sockets,
        rooms,
        except: names(&relayed.except),
    };
    let event = Outbound {
        nsp: &relayed.namespace,
        name: &relayed.event,
        args,
        attachments,
        pick,
        recorded,
    };
    let stamp = stamp.or_else(|| relayed.entry.map(super::recovery::remote::entry_stamp));
    deliver_here(relay, event, stamp)
}

fn decode_binaries(binary: &[String]) -> Result<Vec<Bytes>, Failure> {
    let mut attachments = Vec::with_capacity(binary.len());
    for (i, data) in binary.iter().enumerate() {
        let bytes = crate::api::decode_binary(data)
            .ok_or_else(|| Failure::Invalid(format!("binary[{i}] is not base64")))?;
        attachments.push(Bytes::from(bytes));
    }
    Ok(attachments)
}

/// An event from outside the namespace's clients, for the sockets it picks.
struct Outbound<'a> {
    nsp: &'a str,
    name: &'a str,
    args: Vec<Box<RawValue>>,
    attachments: Vec<Bytes>,
    pick: Pick,
    /// Whether it goes in the history of its rooms (an event to some sockets only
    /// concerns nobody later).
    recorded: bool,
}

/// Encode the event once and queue it for the chosen sockets of this process.
fn deliver_here(
    relay: &Shared,
    event: Outbound<'_>,
    stamp: Option<Stamp>,
) -> Result<Part, Failure> {
    let ns = declared(relay, event.nsp)?;
    let attachments = event.attachments;
    let args: Vec<&RawValue> = event.args.iter().map(AsRef::as_ref).collect();
    let text = sio::encode_event(&ns.name, event.name, &args, None, attachments.len());
    let size = text.len() + attachments.iter().map(Bytes::len).sum::<usize>();
    let limit =
        usize::try_from(ns.policy().config.limits.max_event_size.bytes()).unwrap_or(usize::MAX);
    if size > limit {
        return Err(Failure::TooLarge { size, limit });
    }
    let policy = ns.policy();
    let recovery = policy.config.recovery;
    // With recovery, every event is sequenced, so that it carries an offset.
    let recorded = event.recorded;
    let stamp = (recovery.is_some() || (recorded && policy.config.history.is_some())).then(|| {
        stamp.unwrap_or_else(|| {
            let id = relay.sequence.next();
            Event::stamp_now(id)
        })
    });
    if let (Some(history), Some(stamp), true) = (policy.config.history, stamp, recorded) {
        let kept = Event::stamped(
            stamp,
            Arc::from(event.name),
            Arc::from(json_array(&args)),
            attachments.clone(),
        );
        events::record(
            relay,
            &ns.name,
            Arc::new(kept),
            &event.pick.rooms,
            Keep::from(history),
        );
    }
    let pick = event.pick;
    let delivered = match (recovery, stamp) {
        (Some(recovery), Some(stamp)) => {
            let packet = deliver::Packet {
                nsp: &ns.name,
                name: event.name,
                args: &args,
                attachments: &attachments,
                announced: attachments.len(),
            };
            let retention = relay.retention(recovery.max_disconnection);
            deliver::emitted(
                relay,
                packet,
                EventId::of(stamp),
                stamp.at_ms,
                &pick,
                retention,
            )
        }
        _ => {
            let item = outgoing(&text, &attachments);
            relay.bus.deliver_local(&ns.name, &pick, &item)
        }
    };
    ns.counters.delivered.inc_by(delivered as u64);
    Ok(Part::Delivered(delivered))
}

fn names(list: &[String]) -> Vec<Arc<str>> {
    let unique: HashSet<&str> = list.iter().map(String::as_str).collect();
    unique.into_iter().map(Arc::from).collect()
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("serialized JSON is valid")
}
