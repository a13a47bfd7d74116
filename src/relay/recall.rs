//! Answers from room history ([`history`](super::history)): `$history` and the
//! `history` option of `$join`.
//!
//! - `$history {"room": R, "since": P, "limit": N}`: the events of room `R` (one the
//!   socket is in), or of the namespace's broadcasts to all without `room`, that the
//!   position `P` has not seen (all without it), the latest `N` (default and cap: the
//!   namespace's `history.size`), oldest first.
//! - `$join {"room": R, "history": N}`: joins as `$join "R"` does, and the ack carries
//!   the room's latest `N` events too.
//!
//! Each event is `{"offset", "event", "args", "time"}`: its own position (an event's id,
//! which `since` accepts), the name and arguments as they were delivered (metadata
//! included), and when the relay accepted it (ms since the Unix epoch). The reply's
//! `position` covers `since` and every event in it: the `since` for the next ask.
//! Binary arguments come back as binary attachments of the ack, placeholders renumbered.

use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::history::{Event, Key, Position};
use super::policy::{Policy, Refusal};
use super::shared::Shared;
use super::socket::Socket;

/// What `$history` asks.
#[derive(Debug, Default, PartialEq)]
pub struct Ask {
    /// The room; none for the namespace's broadcasts.
    pub room: Option<String>,
    /// What the client has seen.
    pub since: Option<Position>,
    /// Most events wanted.
    pub limit: Option<usize>,
}

impl Ask {
    /// Read `$history`'s argument: an object with optional `room`, `since` and `limit`.
    pub fn parse(arg: Option<&serde_json::value::RawValue>) -> Result<Ask, Refusal> {
        let Some(arg) = arg else {
            return Ok(Ask::default());
        };
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(arg.get()) else {
            return Err(Refusal::BadHistoryAsk);
        };
        let room = match fields.get("room") {
            None | Some(Value::Null) => None,
            Some(Value::String(room)) => Some(room.clone()),
            Some(_) => return Err(Refusal::RoomNotString),
        };
        let since = match fields.get("since") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p.parse().map_err(|_| Refusal::BadHistoryAsk)?),
            Some(_) => return Err(Refusal::BadHistoryAsk),
        };
        let limit = match fields.get("limit") {
            None | Some(Value::Null) => None,
            Some(n) => Some(count(n)?),
        };
        Ok(Ask { room, since, limit })
    }
}

/// A count of events asked for: a non-negative integer.
pub fn count(value: &Value) -> Result<usize, Refusal> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(Refusal::BadHistoryAsk)
}

/// The reply: its JSON and the binary attachments it refers to.
#[derive(Debug, Default)]
pub struct Recalled {
    /// `{"events": [...], "position": "..."}`.
    pub fields: Map<String, Value>,
    /// The attachments, numbered as the placeholders in `fields` say.
    pub attachments: Vec<Bytes>,
}

/// Answer `ask` for `socket`: the room must be one it is in.
pub fn history(
    relay: &Shared,
    policy: &Policy,
    socket: &Socket,
    ask: &Ask,
) -> Result<Recalled, Refusal> {
    let keep = policy.config.history.ok_or(Refusal::NoHistory)?;
    if let Some(room) = &ask.room {
        policy.check_room_name(room)?;
        if !socket.is_in(room) {
            return Err(Refusal::NotInRoom);
        }
    }
    let limit = ask.limit.unwrap_or(keep.size).min(keep.size);
    Ok(read(
        relay,
        &socket.nsp,
        ask.room.as_deref(),
        ask.since.as_ref(),
        limit,
    ))
}

/// The latest `limit` events of `room` (the namespace's broadcasts without one) not
/// seen at `since`, as a reply.
pub fn read(
    relay: &Shared,
    nsp: &Arc<str>,
    room: Option<&str>,
    since: Option<&Position>,
    limit: usize,
) -> Recalled {
    let key = Key {
        nsp: nsp.clone(),
        room: room.map(Arc::from),
    };
    let events = relay.history.read(&key, since, limit, Instant::now());
    let mut position = since.cloned().unwrap_or_default();
    let mut attachments = Vec::new();
    let listed: Vec<Value> = events
        .iter()
        .map(|event| {
            position.advance(event.id);
            describe(event, &mut attachments)
        })
        .collect();
    let mut fields = Map::new();
    fields.insert("events".to_owned(), Value::Array(listed));
    fields.insert("position".to_owned(), Value::String(position.to_string()));
    Recalled {
        fields,
        attachments,
    }
}

/// The latest `limit` events of `room` not seen at `since`, as the server API lists
/// them: each with its own attachments as `binary` (base64, standard alphabet), which its
/// placeholders number from 0.
pub fn for_api(
    relay: &Shared,
    nsp: &Arc<str>,
    room: &str,
    since: Option<&Position>,
    limit: usize,
) -> Vec<Value> {
    let key = Key {
        nsp: nsp.clone(),
        room: Some(Arc::from(room)),
    };
    let events = relay.history.read(&key, since, limit, Instant::now());
    events
        .iter()
        .map(|event| {
            let mut fields = fields(event);
            let binary: Vec<Value> = event
                .attachments
                .iter()
                .map(|b| Value::String(base64::Engine::encode(&STANDARD, b)))
                .collect();
            fields.insert("binary".to_owned(), Value::Array(binary));
            Value::Object(fields)
        })
        .collect()
}

/// One event as the reply lists it; its attachments are appended to `attachments` and
/// its placeholders renumbered to match.
fn describe(event: &Event, attachments: &mut Vec<Bytes>) -> Value {
    let mut fields = fields(event);
    if !event.attachments.is_empty() {
        if let Some(args) = fields.get_mut("args") {
            renumber(args, attachments.len());
        }
        attachments.extend(event.attachments.iter().cloned());
    }
    Value::Object(fields)
}

/// `offset`, `event`, `args` and `time` of `event`.
fn fields(event: &Event) -> Map<String, Value> {
    let args: Value = serde_json::from_str(&event.args).unwrap_or(Value::Array(Vec::new()));
    let mut one = Position::default();
    one.advance(event.id);
    let time = super::history::epoch_ms(event.at);
    let mut fields = Map::new();
    fields.insert("offset".to_owned(), Value::String(one.to_string()));
    fields.insert("event".to_owned(), Value::String(event.name.to_string()));
    fields.insert("args".to_owned(), args);
    fields.insert("time".to_owned(), json!(time));
    fields
}

/// Add `base` to the number of every binary placeholder in `value`.
fn renumber(value: &mut Value, base: usize) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| renumber(v, base)),
        Value::Object(fields) => {
            if fields.get("_placeholder") == Some(&Value::Bool(true))
                && let Some(num) = fields.get("num").and_then(Value::as_u64)
            {
                fields.insert("num".to_owned(), json!(num + base as u64));
                return;
            }
            fields.values_mut().for_each(|v| renumber(v, base));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn asks_parse_and_bad_ones_are_refused() {
        assert_eq!(Ask::parse(None), Ok(Ask::default()));
        let ask = Ask::parse(Some(&raw(r#"{"room":"a","since":"1-z","limit":5}"#))).unwrap();
        assert_eq!(ask.room.as_deref(), Some("a"));
        assert_eq!(ask.limit, Some(5));
        assert_eq!(ask.since.unwrap().to_string(), "1-z");
        for bad in [
            r#""a""#,
            r#"{"since":"x"}"#,
            r#"{"limit":-1}"#,
            r#"{"limit":"5"}"#,
            r#"{"since":5}"#,
        ] {
            assert_eq!(
                Ask::parse(Some(&raw(bad))),
                Err(Refusal::BadHistoryAsk),
                "{bad}"
            );
        }
        assert_eq!(
            Ask::parse(Some(&raw(r#"{"room":5}"#))),
            Err(Refusal::RoomNotString)
        );
    }

    #[test]
    fn placeholders_are_renumbered_past_earlier_events() {
        let mut args: Value = serde_json::from_str(
            r#"[{"_placeholder":true,"num":0},{"a":[{"_placeholder":true,"num":1}]},"x"]"#,
        )
        .unwrap();
        renumber(&mut args, 3);
        assert_eq!(
            args,
            json!([{"_placeholder":true,"num":3},{"a":[{"_placeholder":true,"num":4}]},"x"])
        );
    }
}
