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
use super::meta::Sender;
use super::policy::{Policy, Refusal, Resolved};
use super::reply::{outgoing, refuse};
use super::shared::{Counters, Shared};
use super::socket::Socket;
use crate::adapter::Target;
use crate::config::{AckReply, Route};
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
    if let Err(error) = route(
        relay,
        counters,
        socket,
        &how,
        &event.args,
        &attachments,
        packet.attachments,
    ) {
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

/// Deliver the event where its route says.
fn route(
    relay: &Shared,
    counters: &Counters,
    socket: &Arc<Socket>,
    how: &Resolved<'_>,
    args: &[&RawValue],
    attachments: &[Bytes],
    announced: usize,
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
    let text = if how.meta.is_empty() {
        sio::encode_event(&socket.nsp, how.name, args, None, announced)
    } else {
        // One more JSON argument after the others: binary placeholders keep their numbers.
        let sender = Sender {
            id: socket.id(),
            user: socket.user().map(|u| &**u),
            ip: socket.address,
            origin: socket.origin.as_deref(),
        };
        let meta = how.meta.object(&sender, SystemTime::now());
        let mut with_meta = Vec::with_capacity(args.len() + 1);
        with_meta.extend_from_slice(args);
        with_meta.push(&*meta);
        sio::encode_event(&socket.nsp, how.name, &with_meta, None, announced)
    };
    let item = outgoing(&text, attachments);
    let mut delivered = 0;
    if let Some(rooms) = rooms {
        let target = Target {
            rooms,
            except: Some(socket.id().clone()),
        };
        delivered += relay.bus.broadcast(&socket.nsp, &target, &item);
    }
    if (how.echo || matches!(how.route, Route::Sender)) && socket.session().send(item) {
        delivered += 1;
    }
    counters.delivered.inc_by(delivered as u64);
    Ok(())
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
