//! Application events: policy checks, routing to a bus [`Target`], and the ack. `$…`
//! events go on to [`control`]; refusals are answered by
//! [`reply::refuse`](super::reply::refuse).
//!
//! The delivered packet is encoded once and shared by every recipient; with `meta`, it
//! carries one more argument, the sender's [`meta`](super::meta) object.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::control;
use super::deliver;
use super::history::{Event, EventId, Keep, Key};
use super::meta::Sender;
use super::policy::{Policy, Refusal, Resolved};
use super::reply::{outgoing, refuse};
use super::shared::{Counters, Shared};
use super::socket::Socket;
use crate::adapter::{Published, Stamped, Target};
use crate::config::{AckReply, Route};
use crate::engine::Frame;
use crate::socketio::Packet;
use crate::socketio::packet::{self as sio, PacketError};

/// Handle one EVENT or BINARY_EVENT from `socket`. Policy refusals are answered to the
/// client; only a packet that is not a valid event is an error (fatal for the session).
pub async fn handle(
    relay: &Shared,
    policy: &Policy,
    counters: &Counters,
    socket: &Arc<Socket>,
    packet: &Packet,
    attachments: Vec<Bytes>,
    now: Instant,
) -> Result<(), PacketError> {
    let event = packet.event()?;
    let name: &str = &event.name;
    counters.received.inc();
    let limits = &policy.config.limits;
    if !socket.take_token(now, limits.events_per_second, limits.burst) {
        refuse(relay, socket, name, packet.id, Refusal::RateLimited);
        return Ok(());
    }
    if !socket.take_address_token(&relay.addresses, now) {
        refuse(relay, socket, name, packet.id, Refusal::AddressRateLimited);
        return Ok(());
    }
    if packet
        .data
        .as_ref()
        .is_some_and(|data| nested_deeper(data.get(), limits.max_depth))
    {
        refuse(relay, socket, name, packet.id, Refusal::TooDeep);
        return Ok(());
    }
    if name.starts_with('$') {
        control::handle(relay, policy, socket, name, &event.args, packet.id).await;
        return Ok(());
    }
    if packet.attachments > policy.config.limits.max_attachments {
        refuse(relay, socket, name, packet.id, Refusal::TooManyAttachments);
        return Ok(());
    }
    let size = packet.data.as_ref().map_or(0, |d| d.get().len())
        + attachments.iter().map(Bytes::len).sum::<usize>();
    if size as u64 > policy.config.limits.max_event_size.0 {
        refuse(relay, socket, name, packet.id, Refusal::TooLarge);
        return Ok(());
    }
    let how = policy.resolve(name);
    let keep = policy.config.history.map(Keep::from);
    let retention = policy
        .config
        .recovery
        .map(|r| relay.retention(r.max_disconnection));
    let payload = Payload {
        args: &event.args,
        attachments: &attachments,
        announced: packet.attachments,
    };
    if let Err(error) = route(relay, counters, socket, &how, &payload, keep, retention) {
        refuse(relay, socket, name, packet.id, error);
        return Ok(());
    }
    if let Some(id) = packet.id {
        match how.ack {
            AckReply::Status => {
                socket.send_text(&sio::encode_ack_json(&socket.nsp, id, r#"[{"ok":true}]"#));
            }
            AckReply::Echo => {
                let text = sio::encode_ack(&socket.nsp, id, &event.args, attachments.len());
                socket.session().send(outgoing(&text, &attachments));
            }
        }
    }
    Ok(())
}

/// Whether the JSON text `json` nests arrays and objects deeper than `max` (the outer
/// array is level 1). One pass over the bytes, no recursion: brackets inside strings do
/// not count, and an escaped quote does not end a string.
fn nested_deeper(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// An event's arguments as the client sent them.
struct Payload<'a> {
    args: &'a [&'a RawValue],
    attachments: &'a [Bytes],
    /// The attachments the packet announced (its placeholders' numbering).
    announced: usize,
}

/// Deliver the event where its route says, and record it in the history of the rooms
/// (or the namespace) it went to when the namespace keeps one.
fn route(
    relay: &Shared,
    counters: &Counters,
    socket: &Arc<Socket>,
    how: &Resolved<'_>,
    payload: &Payload<'_>,
    keep: Option<Keep>,
    retention: Option<super::recovery::Retention>,
) -> Result<(), Refusal> {
    let rooms = match how.route {
        Route::None => return Err(Refusal::NotAllowed),
        Route::Discard => return Ok(()),
        Route::Sender => None,
        Route::Namespace => Some(Vec::new()),
        Route::Rooms => {
            let joined = socket.joined();
            if joined.is_empty() {
                return Err(Refusal::NoRoom);
            }
            Some(joined)
        }
        Route::Room(room) => Some(vec![Arc::from(room.as_str())]),
    };
    let now = SystemTime::now();
    let meta = (!how.meta.is_empty()).then(|| {
        let sender = Sender {
            id: socket.id(),
            user: socket.user().map(|u| &**u),
            ip: socket.address,
            origin: socket.origin.as_deref(),
        };
        how.meta.object(&sender, now)
    });
    // One more JSON argument after the others: binary placeholders keep their numbers.
    let with_meta: Vec<&RawValue>;
    let delivered_args: &[&RawValue] = match &meta {
        None => payload.args,
        Some(meta) => {
            with_meta = payload.args.iter().copied().chain([&**meta]).collect();
            &with_meta
        }
    };
    // Other nodes of a cluster get it as it is delivered here, without an offset (each
    // node's clients get their own), with its stamp when it has one.
    let publish = |rooms: &[Arc<str>], stamp: Option<EventId>| {
        let except = [&**socket.id()];
        relay.bus.publish(
            &socket.nsp,
            &Published {
                name: how.name,
                args: delivered_args,
                attachments: payload.attachments,
                rooms,
                except: &except,
                stamp,
            },
        );
    };
    if let Some(retention) = retention {
        // Recovery: sequenced, offset and logged under the ledger (see `deliver`).
        let target = rooms.map(|rooms| Target {
            rooms,
            except: Some(socket.id().clone()),
        });
        let echo = (how.echo || matches!(how.route, Route::Sender)).then(|| socket.session());
        let packet = deliver::Packet {
            nsp: &socket.nsp,
            name: how.name,
            args: delivered_args,
            attachments: payload.attachments,
            announced: payload.announced,
        };
        let (accepted, delivered) =
            deliver::accepted(relay, packet, target.as_ref(), echo, retention);
        if let Some(target) = &target {
            publish(&target.rooms, accepted.map(|(id, _)| id));
        }
        if let (Some((id, at)), Some(keep), Some(target)) = (accepted, keep, &target) {
            let event = Event {
                id,
                at,
                name: Arc::from(how.name),
                args: Arc::from(json_array(delivered_args)),
                attachments: payload.attachments.to_vec(),
            };
            record(relay, &socket.nsp, Arc::new(event), &target.rooms, keep);
        }
        counters.delivered.inc_by(delivered as u64);
        return Ok(());
    }
    let text = sio::encode_event(
        &socket.nsp,
        how.name,
        delivered_args,
        None,
        payload.announced,
    );
    let item = outgoing(&text, payload.attachments);
    let mut delivered = 0;
    if let Some(rooms) = rooms {
        let stamp = keep.map(|keep| {
            let event = Event {
                id: relay.sequence.next(),
                at: now,
                name: Arc::from(how.name),
                args: Arc::from(json_array(delivered_args)),
                attachments: payload.attachments.to_vec(),
            };
            let stamp = event.stamp();
            record(relay, &socket.nsp, Arc::new(event), &rooms, keep);
            stamp
        });
        publish(&rooms, stamp.map(EventId::of));
        let target = Target {
            rooms,
            except: Some(socket.id().clone()),
        };
        delivered += match stamp {
            Some(stamp) => relay
                .bus
                .broadcast_stamped(&socket.nsp, &target, &item, stamp),
            None => relay.bus.broadcast(&socket.nsp, &target, &item),
        };
    }
    if (how.echo || matches!(how.route, Route::Sender)) && socket.session().send(item) {
        delivered += 1;
    }
    counters.delivered.inc_by(delivered as u64);
    Ok(())
}

/// A stamped broadcast that another process accepted (the bus's record hook): kept in
/// the history of its rooms when its namespace keeps one, and, when the namespace has
/// `recovery`, delivered here under the ledger with this process's offset. Returns
/// whether it was delivered here.
pub fn record_remote(relay: &Shared, stamped: &Stamped<'_>) -> bool {
    let Some(ns) = relay.namespace(stamped.nsp) else {
        return false;
    };
    let policy = ns.policy();
    let recovery = policy.config.recovery;
    if let Some(history) = policy.config.history
        && let Some(event) = remote_event(stamped, recovery.is_some())
    {
        record(
            relay,
            &ns.name,
            Arc::new(event),
            &stamped.target.rooms,
            Keep::from(history),
        );
    }
    let Some(recovery) = recovery else {
        return false;
    };
    deliver::arrived(relay, stamped, relay.retention(recovery.max_disconnection));
    true
}

/// The history record of a peer's broadcast, decoded from its frames (the packet as
/// delivered: the event's text, then its attachments), without the origin's offset.
fn remote_event(stamped: &Stamped<'_>, has_offset: bool) -> Option<Event> {
    let frames = stamped.item.frames();
    let Some(Frame::Text(text)) = frames.first() else {
        return None;
    };
    // An Engine.IO MESSAGE: `4`, then the Socket.IO packet.
    let packet_text = text.as_str().strip_prefix('4')?;
    let Ok(packet) = sio::decode(packet_text, frames.len()) else {
        tracing::debug!(
            nsp = stamped.nsp,
            "a peer's broadcast did not decode; not recorded"
        );
        return None;
    };
    let event = packet.event().ok()?;
    let args = match event.args.split_last() {
        Some((last, rest)) if has_offset && super::recovery::is_offset_json(last.get()) => rest,
        _ => &event.args[..],
    };
    let attachments = frames[1..]
        .iter()
        .filter_map(|f| match f {
            Frame::Binary(b) => Some(b.clone()),
            Frame::Text(_) => None,
        })
        .collect();
    Some(Event::stamped(
        stamped.stamp,
        Arc::from(&*event.name),
        Arc::from(json_array(args)),
        attachments,
    ))
}

/// Keep a history event another process handed over (this one is new).
pub fn record_handed(relay: &Shared, recorded: &crate::adapter::Recorded, keep: Keep) {
    let event = Event::stamped(
        recorded.stamp,
        recorded.name.clone(),
        recorded.args.clone(),
        recorded.attachments.clone(),
    );
    let key = Key {
        nsp: recorded.nsp.clone(),
        room: recorded.room.clone(),
    };
    relay
        .history
        .record_handed(&key, keep, Arc::new(event), Instant::now());
    relay.count_history();
}

/// Keep `event` in the history of each of `rooms` (the namespace's own when empty).
pub fn record(relay: &Shared, nsp: &Arc<str>, event: Arc<Event>, rooms: &[Arc<str>], keep: Keep) {
    let now = Instant::now();
    if rooms.is_empty() {
        let key = Key {
            nsp: nsp.clone(),
            room: None,
        };
        relay.history.record(&key, keep, event, now);
        relay.count_history();
        return;
    }
    for room in rooms {
        let key = Key {
            nsp: nsp.clone(),
            room: Some(room.clone()),
        };
        relay.history.record(&key, keep, event.clone(), now);
    }
    relay.count_history();
}

/// `args` as one JSON array text.
pub fn json_array(args: &[&RawValue]) -> String {
    let mut json = String::with_capacity(2 + args.iter().map(|a| a.get().len() + 1).sum::<usize>());
    json.push('[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(arg.get());
    }
    json.push(']');
    json
}

#[cfg(test)]
mod tests {
    use super::nested_deeper;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!nested_deeper(r#"["x",1]"#, 1));
        assert!(nested_deeper(r#"["x",[1]]"#, 1));
        assert!(!nested_deeper(r#"["x",[1],{"a":[2]}]"#, 3));
        assert!(nested_deeper(r#"["x",{"a":[{}]}]"#, 3));
        assert!(!nested_deeper(r#"["x","[[[[{{{{"]"#, 1));
        assert!(!nested_deeper(r#"["x","\"[[[["]"#, 1));
        assert!(nested_deeper(r#"["x","\\",[[]]]"#, 2));
        let deep = format!(r#"["x",{}{}]"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(nested_deeper(&deep, 32));
        let ok = format!(r#"["x",{}{}]"#, "[".repeat(31), "]".repeat(31));
        assert!(!nested_deeper(&ok, 32));
    }
}
