//! Text to Socket.IO packets: [`decode`] with the validity rules of each packet type, and
//! the accessors that read a decoded payload ([`Packet::event`], [`Packet::ack_args`]).
//!
//! Every loop here is linear in the text, and no input makes it panic: the header is
//! scanned byte by byte (all delimiters are ASCII, so every position is a char boundary),
//! numbers stop at the first overflow, and the JSON is left to serde_json. Where this is
//! stricter than the reference parser, and why, is in the [parent module's
//! documentation](super).
//!
//! Does not own: the placeholder walk of binary payloads (see [`super::placeholders`]) or
//! encoding (see [`super::encode`]).

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::placeholders;
use super::{Event, Packet, PacketError, PacketKind};

/// Names the reference parser refuses as events: they have a meaning of their own to the
/// client or to Node's EventEmitter.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Parse one packet from the text of an Engine.IO MESSAGE, enforcing the v5 rules (see the
/// module documentation for where this is stricter than the reference).
pub fn decode(text: &str, max_attachments: usize) -> Result<Packet, PacketError> {
    let bytes = text.as_bytes();
    let first = *bytes.first().ok_or(PacketError::Empty)?;
    let kind = PacketKind::from_digit(first)
        .ok_or_else(|| PacketError::UnknownType(text.chars().next().unwrap_or_default()))?;
    // Every delimiter below is ASCII, so each `pos` is a char boundary of `text`.
    let mut pos = 1;

    let attachments = if kind.is_binary() {
        parse_attachments(bytes, &mut pos, max_attachments)?
    } else {
        0
    };

    let nsp = if bytes.get(pos) == Some(&b'/') {
        let rest = text.get(pos..).unwrap_or_default();
        // The namespace runs to the first ',', which is consumed, or to the end of the
        // packet when no id or payload follows (`40/custom`: the reference parser takes
        // it, and the v5 conformance suite sends it). There is no escape for a comma.
        let (nsp, consumed) = match rest.split_once(',') {
            Some((nsp, _)) => (nsp, nsp.len().saturating_add(1)),
            None => (rest, rest.len()),
        };
        pos = pos.saturating_add(consumed);
        nsp.to_owned()
    } else {
        String::from("/")
    };

    let id = parse_id(bytes, &mut pos)?;

    let rest = text.get(pos..).unwrap_or_default();
    let data = if rest.is_empty() {
        None
    } else {
        // Rejects invalid JSON and trailing garbage alike.
        Some(serde_json::from_str::<Box<RawValue>>(rest).map_err(PacketError::InvalidJson)?)
    };

    let packet = Packet {
        kind,
        nsp,
        id,
        data,
        attachments,
    };
    packet.validate()?;
    Ok(packet)
}

/// `<n>-` after a binary type digit: 1 ≤ n ≤ `max`. Stops as soon as the count passes
/// `max`, so a long run of digits costs nothing and cannot overflow.
fn parse_attachments(bytes: &[u8], pos: &mut usize, max: usize) -> Result<usize, PacketError> {
    let start = *pos;
    let mut count: usize = 0;
    while let Some(&b) = bytes.get(*pos) {
        if !b.is_ascii_digit() {
            break;
        }
        count = count
            .checked_mul(10)
            .and_then(|c| c.checked_add(usize::from(b - b'0')))
            .filter(|&c| c <= max)
            .ok_or(PacketError::TooManyAttachments { max })?;
        *pos += 1;
    }
    if *pos == start || bytes.get(*pos) != Some(&b'-') || count == 0 {
        return Err(PacketError::InvalidAttachments);
    }
    *pos += 1;
    Ok(count)
}

/// Optional decimal ack id; overflow of `u64` is an error, not a wrap.
fn parse_id(bytes: &[u8], pos: &mut usize) -> Result<Option<u64>, PacketError> {
    let start = *pos;
    let mut id: u64 = 0;
    while let Some(&b) = bytes.get(*pos) {
        if !b.is_ascii_digit() {
            break;
        }
        id = id
            .checked_mul(10)
            .and_then(|id| id.checked_add(u64::from(b - b'0')))
            .ok_or(PacketError::IdOverflow)?;
        *pos += 1;
    }
    Ok((*pos > start).then_some(id))
}

impl Packet {
    /// Check id and payload against the rules for this kind (see the module docs).
    fn validate(&self) -> Result<(), PacketError> {
        let kind = self.kind;
        let invalid = |reason| PacketError::InvalidPayload { kind, reason };
        let json = self.data.as_deref().map(|raw| raw.get().trim_start());
        match kind {
            PacketKind::Connect | PacketKind::Disconnect | PacketKind::ConnectError => {
                if self.id.is_some() {
                    return Err(PacketError::UnexpectedId(kind));
                }
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                if self.id.is_none() {
                    return Err(PacketError::MissingId(kind));
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent => {}
        }
        match kind {
            PacketKind::Connect => match json {
                None => Ok(()),
                Some(json) if json.starts_with('{') => Ok(()),
                Some(_) => Err(invalid("not an object")),
            },
            PacketKind::Disconnect => match json {
                None => Ok(()),
                Some(_) => Err(invalid("takes no payload")),
            },
            PacketKind::ConnectError => match json {
                Some(json) if json.starts_with('{') || json.starts_with('"') => Ok(()),
                Some(_) => Err(invalid("neither an object nor a string")),
                None => Err(invalid("missing")),
            },
            PacketKind::Event | PacketKind::BinaryEvent => {
                let json = json.ok_or_else(|| invalid("missing"))?;
                // The JSON is known valid, so the first token after `[` tells the type of
                // the first element without parsing the arguments.
                let inner = json
                    .strip_prefix('[')
                    .ok_or_else(|| invalid("not an array"))?
                    .trim_start_matches(is_json_space);
                if inner.starts_with(']') {
                    return Err(invalid("empty array"));
                }
                let token =
                    string_token(inner).ok_or_else(|| invalid("event name not a string"))?;
                event_name(kind, token)?;
                self.check_placeholders(json)
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let json = json.ok_or_else(|| invalid("missing"))?;
                if !json.starts_with('[') {
                    return Err(invalid("not an array"));
                }
                self.check_placeholders(json)
            }
        }
    }

    fn check_placeholders(&self, json: &str) -> Result<(), PacketError> {
        if !self.kind.is_binary() {
            return Ok(());
        }
        placeholders::check(json, self.attachments).map_err(PacketError::InvalidPlaceholder)
    }

    /// For Event/BinaryEvent: the event name and its raw arguments (borrowed from data).
    pub fn event(&self) -> Result<Event<'_>, PacketError> {
        let kind = self.kind;
        if !matches!(kind, PacketKind::Event | PacketKind::BinaryEvent) {
            return Err(PacketError::WrongKind {
                expected: "an event",
                got: kind,
            });
        }
        let mut args = self.array()?.into_iter();
        let first = args.next().ok_or(PacketError::InvalidPayload {
            kind,
            reason: "empty array",
        })?;
        let name = event_name(kind, first.get())?;
        Ok(Event {
            name,
            args: args.collect(),
        })
    }

    /// For Ack/BinaryAck: the raw arguments.
    pub fn ack_args(&self) -> Result<Vec<&RawValue>, PacketError> {
        if !matches!(self.kind, PacketKind::Ack | PacketKind::BinaryAck) {
            return Err(PacketError::WrongKind {
                expected: "an ack",
                got: self.kind,
            });
        }
        self.array()
    }

    /// The payload as a list of raw elements.
    fn array(&self) -> Result<Vec<&RawValue>, PacketError> {
        let kind = self.kind;
        let json = self
            .data
            .as_deref()
            .ok_or(PacketError::InvalidPayload {
                kind,
                reason: "missing",
            })?
            .get();
        if !json.trim_start().starts_with('[') {
            return Err(PacketError::InvalidPayload {
                kind,
                reason: "not an array",
            });
        }
        serde_json::from_str(json).map_err(PacketError::InvalidJson)
    }
}

fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The complete JSON string literal at the start of `json` (quotes included), if the first
/// value is a string. `json` must be valid JSON from that point.
fn string_token(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i = i.checked_add(2)?,
            b'"' => return json.get(..=i),
            _ => i += 1,
        }
    }
}

/// Unescape an event-name literal and refuse reserved names.
fn event_name(kind: PacketKind, token: &str) -> Result<Cow<'_, str>, PacketError> {
    if !token.starts_with('"') {
        return Err(PacketError::InvalidPayload {
            kind,
            reason: "event name not a string",
        });
    }
    let name = match token.get(1..token.len().saturating_sub(1)) {
        // Valid JSON without escapes: the text between the quotes is the name.
        Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
        _ => Cow::Owned(serde_json::from_str::<String>(token).map_err(PacketError::InvalidJson)?),
    };
    if let Some(reserved) = RESERVED_EVENTS.iter().find(|r| **r == name) {
        return Err(PacketError::ReservedEvent(reserved));
    }
    Ok(name)
}
