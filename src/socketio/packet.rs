//! Socket.IO v5 packets: the text inside one Engine.IO MESSAGE, decoded and encoded.
//!
//! Owns the wire grammar
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`, the payload validity
//! rules of each packet type, and the builders the relay uses on its hot path (they write
//! straight into one `String`, no `serde_json::Value` tree). JSON payloads are kept raw
//! ([`RawValue`]) so that relayed arguments go out byte for byte as they came in.
//!
//! Does not own: the binary attachments themselves (see [`super::binary`]), what a
//! namespace, event or ack means (the relay), or size limits (the transport bounds the
//! message before it gets here; every loop here is linear in that size).
//!
//! # Strict or lenient
//! The reference decoder (`socket.io-parser` `decodeString`/`isPayloadValid`) is the
//! baseline. Where it is lenient in ways the reference client never uses, this decoder is
//! strict, because a relay forwards what it accepts to other clients:
//! - A namespace must end with `,`. The spec grammar puts the comma there and every
//!   encoder writes it; the reference decoder would also take `1/admin` (namespace to the
//!   end of the text), but then a missing comma silently turns the payload into namespace.
//! - An ack id fits in `u64` (the reference would round it through a float) and appears
//!   only where it means something: optional on EVENT, required on ACK, refused on
//!   CONNECT, DISCONNECT and CONNECT_ERROR.
//! - EVENT and ACK need a payload; the reference only checks a payload that is present.
//! - An event name must be a string. The reference also takes a number (a leftover of
//!   JavaScript's emitter turning keys into strings), but the relay matches policies and
//!   relays by name: a number has no single spelling (`1e2` and `100`), and re-encoding it
//!   as a string would change what receivers see. The reference client's typed API emits
//!   strings.
//! - Reserved event names (`connect`, `disconnect` …) are refused, as by the reference:
//!   relayed, they would make every receiving client's decoder throw and disconnect.
//! - In BINARY_EVENT/BINARY_ACK every placeholder (`{"_placeholder":true,"num":N}`) must
//!   name an announced attachment (`N` an integer below the count), for the same reason:
//!   receivers reject a bad one. Checking it walks the JSON, which serde_json caps at 128
//!   levels of nesting, so a binary payload nested deeper is refused.
//! - Leading zeros in the attachment count and the id are accepted, as by the reference.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The Socket.IO v5 packet types, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketKind {
    fn from_digit(digit: u8) -> Option<PacketKind> {
        Some(match digit {
            b'0' => PacketKind::Connect,
            b'1' => PacketKind::Disconnect,
            b'2' => PacketKind::Event,
            b'3' => PacketKind::Ack,
            b'4' => PacketKind::ConnectError,
            b'5' => PacketKind::BinaryEvent,
            b'6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            PacketKind::Connect => '0',
            PacketKind::Disconnect => '1',
            PacketKind::Event => '2',
            PacketKind::Ack => '3',
            PacketKind::ConnectError => '4',
            PacketKind::BinaryEvent => '5',
            PacketKind::BinaryAck => '6',
        }
    }

    /// BINARY_EVENT or BINARY_ACK: followed on the wire by its attachments.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }
}

/// One decoded Socket.IO packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub kind: PacketKind,
    /// `"/"` when absent on the wire.
    pub nsp: String,
    pub id: Option<u64>,
    /// The JSON payload, kept raw (not re-serialized).
    pub data: Option<Box<RawValue>>,
    /// Announced attachment count (binary kinds), else 0.
    pub attachments: usize,
}

/// An EVENT's name and its raw arguments, borrowed from the packet.
#[derive(Debug)]
pub struct Event<'a> {
    /// Borrowed unless the name held JSON escapes.
    pub name: Cow<'a, str>,
    pub args: Vec<&'a RawValue>,
}

/// Names the reference parser refuses as events: they have a meaning of their own to the
/// client or to Node's EventEmitter.
const RESERVED_EVENTS: [&str; 6] = [
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
        let rest = bytes.get(pos..).unwrap_or_default();
        // The namespace runs to the ',' before the id or payload, or to the end of the
        // packet when there is neither (`40/custom`, as the reference parser and the v5
        // conformance suite have it).
        match rest.iter().position(|&b| b == b',') {
            Some(len) => {
                let end = pos.saturating_add(len);
                let nsp = text
                    .get(pos..end)
                    .ok_or(PacketError::UnterminatedNamespace)?;
                pos = end.saturating_add(1);
                nsp.to_owned()
            }
            None => {
                let nsp = text.get(pos..).ok_or(PacketError::UnterminatedNamespace)?;
                pos = text.len();
                nsp.to_owned()
            }
        }
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
        let mut de = serde_json::Deserializer::from_str(json);
        Placeholders {
            attachments: self.attachments,
        }
        .deserialize(&mut de)
        .map_err(PacketError::InvalidPlaceholder)
    }

    /// Encode for the wire (the text of an Engine.IO MESSAGE). The inverse of [`decode`]
    /// for every packet it accepts; a binary kind with no attachments encodes as `0-`,
    /// which [`decode`] refuses.
    pub fn encode(&self) -> String {
        let data = self.data.as_deref().map_or("", RawValue::get);
        let mut out = String::with_capacity(HEADER_MAX + self.nsp.len() + data.len());
        push_header(&mut out, self.kind, self.attachments, &self.nsp, self.id);
        out.push_str(data);
        out
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

/// Walks a binary payload and fails on a placeholder that names no announced attachment,
/// mirroring what the reference `reconstructPacket` would throw on, without building a
/// value tree.
#[derive(Clone, Copy)]
struct Placeholders {
    attachments: usize,
}

impl<'de> DeserializeSeed<'de> for Placeholders {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Placeholders {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Later duplicates win, as in JSON.parse.
        let mut is_placeholder = false;
        let mut num = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Placeholder => {
                    is_placeholder = map.next_value_seed(Typed(self))? == Some(Scalar::True)
                }
                Key::Num => {
                    num = match map.next_value_seed(Typed(self))? {
                        Some(Scalar::Index(n)) => Some(n),
                        _ => None,
                    }
                }
                Key::Other => map.next_value_seed(self)?,
            }
        }
        if !is_placeholder {
            return Ok(());
        }
        match num {
            Some(n) if n < self.attachments as u64 => Ok(()),
            Some(n) => Err(de::Error::custom(format_args!(
                "placeholder {n} beyond {} attachments",
                self.attachments
            ))),
            None => Err(de::Error::custom("placeholder without an integer num")),
        }
    }
}

/// The object keys the placeholder check cares about.
enum Key {
    Placeholder,
    Num,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Key, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "_placeholder" => Key::Placeholder,
            "num" => Key::Num,
            _ => Key::Other,
        })
    }
}

/// The two scalars that make a placeholder: `true` and a non-negative integer index.
#[derive(PartialEq)]
enum Scalar {
    True,
    Index(u64),
}

/// A value under `_placeholder` or `num`: reports whether it is one of [`Scalar`], and
/// walks it like any other value when it is a container.
struct Typed(Placeholders);

impl<'de> DeserializeSeed<'de> for Typed {
    type Value = Option<Scalar>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<Scalar>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Typed {
    type Value = Option<Scalar>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Option<Scalar>, E> {
        Ok(v.then_some(Scalar::True))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, v: u64) -> Result<Option<Scalar>, E> {
        Ok(Some(Scalar::Index(v)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<Scalar>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Scalar>, A::Error> {
        self.0.visit_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Scalar>, A::Error> {
        self.0.visit_map(map).map(|()| None)
    }
}

/// Longest header: type digit, attachment count (`usize`), `-`, `,`, id (`u64`).
const HEADER_MAX: usize = 1 + 20 + 1 + 1 + 20;

/// `<type>[<n>-][<nsp>,][<id>]`. The main namespace (`"/"`, or empty) is left out.
/// `nsp` must not contain a comma: namespaces come from the decoder or the validated
/// config, and neither lets one through.
fn push_header(out: &mut String, kind: PacketKind, attachments: usize, nsp: &str, id: Option<u64>) {
    out.push(kind.digit());
    if kind.is_binary() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{attachments}-");
    }
    if !nsp.is_empty() && nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
}

/// Append `s` as a JSON string literal, escaped exactly as serde_json escapes it (`"`,
/// `\`, and control characters; short forms where JSON has them, else `\u00XX`).
/// Written here rather than through `serde_json::to_writer` so that it appends to the
/// output `String` in place and has no error path.
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices fall on char boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// Room for a JSON literal of `s` in the common case of few escapes.
fn json_str_len(s: &str) -> usize {
    s.len().saturating_add(2)
}

fn args_len(args: &[&RawValue]) -> usize {
    args.iter().map(|a| a.get().len().saturating_add(1)).sum()
}

/// EVENT (`2/nsp,12["name",...]`), or BINARY_EVENT (`51-/nsp,[...]`) when
/// `attachments > 0`. `args` go out verbatim; `name` is JSON-escaped.
pub fn encode_event(
    nsp: &str,
    name: &str,
    args: &[&RawValue],
    id: Option<u64>,
    attachments: usize,
) -> String {
    let kind = if attachments > 0 {
        PacketKind::BinaryEvent
    } else {
        PacketKind::Event
    };
    let mut out =
        String::with_capacity(HEADER_MAX + nsp.len() + json_str_len(name) + args_len(args) + 2);
    push_header(&mut out, kind, attachments, nsp, id);
    out.push('[');
    push_json_str(&mut out, name);
    for arg in args {
        out.push(',');
        out.push_str(arg.get());
    }
    out.push(']');
    out
}

/// ACK (`3/nsp,12[...]`), or BINARY_ACK when `attachments > 0`.
pub fn encode_ack(nsp: &str, id: u64, args: &[&RawValue], attachments: usize) -> String {
    let kind = if attachments > 0 {
        PacketKind::BinaryAck
    } else {
        PacketKind::Ack
    };
    let mut out = String::with_capacity(HEADER_MAX + nsp.len() + args_len(args) + 2);
    push_header(&mut out, kind, attachments, nsp, Some(id));
    out.push('[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(arg.get());
    }
    out.push(']');
    out
}

/// ACK whose arguments are already one JSON array text, e.g. `[{"ok":true}]`, written as
/// is (the caller vouches for it).
pub fn encode_ack_json(nsp: &str, id: u64, json_args: &str) -> String {
    let mut out = String::with_capacity(HEADER_MAX + nsp.len() + json_args.len());
    push_header(&mut out, PacketKind::Ack, 0, nsp, Some(id));
    out.push_str(json_args);
    out
}

/// CONNECT granted: `0/nsp,{"sid":"..."}` (`0{...}` for `/`).
pub fn encode_connect(nsp: &str, sid: &str) -> String {
    let mut out = String::with_capacity(HEADER_MAX + nsp.len() + json_str_len(sid) + 8);
    push_header(&mut out, PacketKind::Connect, 0, nsp, None);
    out.push_str("{\"sid\":");
    push_json_str(&mut out, sid);
    out.push('}');
    out
}

/// CONNECT refused: `4/nsp,{"message":"..."}`, the message JSON-escaped.
pub fn encode_connect_error(nsp: &str, message: &str) -> String {
    let mut out = String::with_capacity(HEADER_MAX + nsp.len() + json_str_len(message) + 12);
    push_header(&mut out, PacketKind::ConnectError, 0, nsp, None);
    out.push_str("{\"message\":");
    push_json_str(&mut out, message);
    out.push('}');
    out
}

/// DISCONNECT: `1` or `1/nsp,`.
pub fn encode_disconnect(nsp: &str) -> String {
    let mut out = String::with_capacity(HEADER_MAX + nsp.len());
    push_header(&mut out, PacketKind::Disconnect, 0, nsp, None);
    out
}

/// Why a Socket.IO packet was refused. Every one is a protocol violation by the peer.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("malformed attachment count (want `<n>-` with n >= 1)")]
    InvalidAttachments,
    #[error("more than {max} attachments announced")]
    TooManyAttachments { max: usize },
    #[error("namespace not terminated by ','")]
    UnterminatedNamespace,
    #[error("ack id does not fit in 64 bits")]
    IdOverflow,
    #[error("{0:?} packet takes no ack id")]
    UnexpectedId(PacketKind),
    #[error("{0:?} packet needs an ack id")]
    MissingId(PacketKind),
    #[error("invalid JSON payload: {0}")]
    InvalidJson(serde_json::Error),
    #[error("invalid {kind:?} payload: {reason}")]
    InvalidPayload {
        kind: PacketKind,
        reason: &'static str,
    },
    #[error("reserved event name {0:?}")]
    ReservedEvent(&'static str),
    #[error("invalid binary placeholder: {0}")]
    InvalidPlaceholder(serde_json::Error),
    #[error("{got:?} packet is not {expected}")]
    WrongKind {
        expected: &'static str,
        got: PacketKind,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    const MAX: usize = 10;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn packet(
        kind: PacketKind,
        nsp: &str,
        id: Option<u64>,
        data: Option<&str>,
        n: usize,
    ) -> Packet {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data: data.map(raw),
            attachments: n,
        }
    }

    fn same(a: &Packet, b: &Packet) -> bool {
        a.kind == b.kind
            && a.nsp == b.nsp
            && a.id == b.id
            && a.attachments == b.attachments
            && a.data.as_deref().map(RawValue::get) == b.data.as_deref().map(RawValue::get)
    }

    fn err(text: &str) -> PacketError {
        match decode(text, MAX) {
            Ok(p) => panic!("{text:?} decoded to {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        use PacketKind::*;
        let placeholder = r#"["bin",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let cases = [
            packet(Connect, "/", None, None, 0),
            packet(Connect, "/admin", None, Some(r#"{"token":"123"}"#), 0),
            packet(Connect, "/", None, Some(r#"{"sid":"x","pid":"y"}"#), 0),
            packet(Disconnect, "/", None, None, 0),
            packet(Disconnect, "/admin", None, None, 0),
            packet(Event, "/", None, Some(r#"["foo"]"#), 0),
            packet(
                Event,
                "/chat",
                Some(12),
                Some(r#"["foo",1,{"a":[true,null]}]"#),
                0,
            ),
            packet(
                Event,
                "/",
                Some(u64::MAX),
                Some(r#"["é€😀","\u0000\""]"#),
                0,
            ),
            packet(Ack, "/", Some(0), Some("[]"), 0),
            packet(Ack, "/admin", Some(13), Some(r#"["bar"]"#), 0),
            packet(
                ConnectError,
                "/",
                None,
                Some(r#"{"message":"Not authorized"}"#),
                0,
            ),
            packet(ConnectError, "/a", None, Some(r#""plain""#), 0),
            packet(BinaryEvent, "/", None, Some(placeholder), 2),
            packet(BinaryEvent, "/admin", Some(7), Some(placeholder), 2),
            packet(
                BinaryAck,
                "/",
                Some(15),
                Some(r#"[{"_placeholder":true,"num":0}]"#),
                1,
            ),
            packet(BinaryAck, "/x", Some(1), Some("[]"), MAX),
        ];
        for p in &cases {
            let text = p.encode();
            let back = decode(&text, MAX).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(same(p, &back), "{p:?} -> {text:?} -> {back:?}");
            assert_eq!(back.encode(), text);
        }
    }

    #[test]
    fn spec_examples() {
        let examples = [
            "0",
            r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
            r#"4{"message":"Not authorized"}"#,
            r#"2["foo"]"#,
            r#"2/admin,["bar"]"#,
            r#"51-["baz",{"_placeholder":true,"num":0}]"#,
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            r#"212["foo"]"#,
            r#"3/admin,13["bar"]"#,
            r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
            "1",
            "1/admin,",
            "0/admin,",
            r#"61-/admin,1[{"_placeholder":true,"num":0}]"#,
        ];
        for text in examples {
            let p = decode(text, MAX).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(p.encode(), text);
        }
        let p = decode(
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            MAX,
        )
        .unwrap();
        assert_eq!(p.kind, PacketKind::BinaryEvent);
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.attachments, 2);
        assert_eq!(p.id, None);
        let p = decode(r#"3/admin,13["bar"]"#, MAX).unwrap();
        assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(13)));
    }

    #[test]
    fn lenient_where_the_reference_is() {
        // Whitespace around JSON, leading zeros, an explicit main namespace.
        let p = decode("2/,007 [ \"a\" , 1 ] ", MAX).unwrap();
        assert_eq!((p.nsp.as_str(), p.id), ("/", Some(7)));
        assert_eq!(p.encode(), "27[ \"a\" , 1 ]");
        let p = decode("5002-[\"a\"]", MAX).unwrap();
        assert_eq!(p.attachments, 2);
        // A placeholder that is not `true` is plain data.
        decode(r#"51-["a",{"_placeholder":"true","num":9}]"#, MAX).unwrap();
        decode(r#"51-["a",{"_placeholder":false}]"#, MAX).unwrap();
        // A non-binary event may carry placeholder-looking objects: nobody resolves them.
        decode(r#"2["a",{"_placeholder":true,"num":99}]"#, MAX).unwrap();
        // Empty event names and odd namespaces are fine.
        decode(r#"2[""]"#, MAX).unwrap();
        assert_eq!(decode("1/a b/é,", MAX).unwrap().nsp, "/a b/é");
    }

    #[test]
    fn malformed_header() {
        assert!(matches!(err(""), PacketError::Empty));
        assert!(matches!(err("7"), PacketError::UnknownType('7')));
        assert!(matches!(err("é"), PacketError::UnknownType('é')));
        assert!(matches!(err("a[]"), PacketError::UnknownType('a')));
        for text in [
            "5",
            "5-[\"a\"]",
            "5[\"a\"]",
            "51[\"a\"]",
            "50-[\"a\"]",
            "6x-1[]",
            "5 1-[\"a\"]",
        ] {
            assert!(
                matches!(err(text), PacketError::InvalidAttachments),
                "{text:?}"
            );
        }
        assert!(matches!(
            err("5999999999999999999999-[\"a\"]"),
            PacketError::TooManyAttachments { max: MAX }
        ));
        assert!(matches!(
            err("611-1[]"),
            PacketError::TooManyAttachments { max: MAX }
        ));
        assert!(matches!(
            decode("51-[\"a\"]", 0),
            Err(PacketError::TooManyAttachments { max: 0 })
        ));
        let huge = format!("5{}-[\"a\"]", "9".repeat(100_000));
        assert!(matches!(
            decode(&huge, usize::MAX),
            Err(PacketError::TooManyAttachments { .. })
        ));
        // Without a comma the namespace runs to the end: an EVENT then has no payload.
        assert!(matches!(
            err("2/admin[\"a\"]"),
            PacketError::InvalidPayload { .. }
        ));
        let p = decode("1/admin", MAX).unwrap();
        assert_eq!((p.kind, p.nsp.as_str()), (PacketKind::Disconnect, "/admin"));
        let p = decode("0/custom", MAX).unwrap();
        assert_eq!((p.kind, p.nsp.as_str()), (PacketKind::Connect, "/custom"));
        assert!(matches!(
            err("218446744073709551616[\"a\"]"),
            PacketError::IdOverflow
        ));
        assert!(matches!(
            err(&format!("3{}[]", "9".repeat(50))),
            PacketError::IdOverflow
        ));
        decode("218446744073709551615[\"a\"]", MAX).unwrap();
    }

    #[test]
    fn ids_only_where_they_mean_something() {
        assert!(matches!(
            err("01{}"),
            PacketError::UnexpectedId(PacketKind::Connect)
        ));
        assert!(matches!(
            err("1/a,1"),
            PacketError::UnexpectedId(PacketKind::Disconnect)
        ));
        assert!(matches!(
            err("41\"x\""),
            PacketError::UnexpectedId(PacketKind::ConnectError)
        ));
        assert!(matches!(
            err("3[]"),
            PacketError::MissingId(PacketKind::Ack)
        ));
        assert!(matches!(
            err("61-[{\"_placeholder\":true,\"num\":0}]"),
            PacketError::MissingId(PacketKind::BinaryAck)
        ));
    }

    #[test]
    fn malformed_payload() {
        use PacketKind::*;
        let invalid = |text: &str, want: PacketKind| match err(text) {
            PacketError::InvalidPayload { kind, .. } => assert_eq!(kind, want, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        };
        invalid("0[]", Connect);
        invalid("0\"x\"", Connect);
        invalid("0/a,null", Connect);
        invalid("1{}", Disconnect);
        invalid("1/a,[]", Disconnect);
        invalid("2", Event);
        invalid("2/a,", Event);
        invalid("2[]", Event);
        invalid("2[ ]", Event);
        invalid("2{}", Event);
        invalid("2\"ev\"", Event);
        invalid("2[1]", Event);
        invalid("2[1.5,\"a\"]", Event);
        invalid("2[null]", Event);
        invalid("2[[\"a\"]]", Event);
        invalid("2[{\"a\":1}]", Event);
        invalid("51-[]", BinaryEvent);
        invalid("51-[{\"_placeholder\":true,\"num\":0}]", BinaryEvent);
        invalid("31{}", Ack);
        invalid("31\"a\"", Ack);
        invalid("3/a,1", Ack);
        invalid("4", ConnectError);
        invalid("4[]", ConnectError);
        invalid("4/a,true", ConnectError);
        invalid("4null", ConnectError);
    }

    #[test]
    fn invalid_json() {
        for text in [
            "2[\"a\"",
            "2[\"a\"]]",
            "2[\"a\"] x",
            "2[\"a\",]",
            "2['a']",
            "0{",
            "0{}{}",
            "2 ",
            "2[\"a\u{1}\"]",
            "2[\"\\x\"]",
            "4\"unterminated",
            "3/a,1[1,2",
        ] {
            assert!(matches!(err(text), PacketError::InvalidJson(_)), "{text:?}");
        }
    }

    #[test]
    fn reserved_event_names() {
        for name in RESERVED_EVENTS {
            let text = format!("2[\"{name}\",1]");
            assert!(
                matches!(err(&text), PacketError::ReservedEvent(n) if n == name),
                "{text:?}"
            );
        }
        // Escapes do not hide a reserved name.
        assert!(matches!(
            err(r#"2["\u0063onnect"]"#),
            PacketError::ReservedEvent("connect")
        ));
        assert!(matches!(
            err(r#"51-["disconnect",{"_placeholder":true,"num":0}]"#),
            PacketError::ReservedEvent("disconnect")
        ));
        // Near misses are ordinary names.
        decode(r#"2["Connect"]"#, MAX).unwrap();
        decode(r#"2["connect "]"#, MAX).unwrap();
    }

    #[test]
    fn placeholders_must_name_an_attachment() {
        for text in [
            r#"51-["a",{"_placeholder":true,"num":1}]"#,
            r#"51-["a",{"_placeholder":true,"num":-1}]"#,
            r#"51-["a",{"_placeholder":true,"num":0.0}]"#,
            r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
            r#"51-["a",{"_placeholder":true}]"#,
            r#"51-["a",{"_placeholder":true,"num":null}]"#,
            r#"51-["a",{"_placeholder":true,"num":18446744073709551616}]"#,
            r#"51-["a",{"x":[{"y":{"_placeholder":true,"num":5}}]}]"#,
            r#"52-["a",{"_placeholder":{"_placeholder":true,"num":2},"num":0}]"#,
            r#"61-1[{"num":0,"_placeholder":true,"num":3}]"#,
            r#"61-1[{"num":0,"_placeholder":false,"_placeholder":true,"num":1}]"#,
        ] {
            assert!(
                matches!(err(text), PacketError::InvalidPlaceholder(_)),
                "{text:?}"
            );
        }
        for text in [
            r#"52-["a",{"x":[{"y":{"_placeholder":true,"num":1}}]},{"_placeholder":true,"num":0}]"#,
            r#"61-1[{"num":7,"_placeholder":true,"num":0}]"#,
            r#"61-1[{"_placeholder":true,"num":0,"extra":[1,"2",null]}]"#,
            // Attachments that no placeholder names are allowed, as by the reference.
            r#"53-["a",{"_placeholder":true,"num":2}]"#,
        ] {
            decode(text, MAX).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
        // Deep nesting is refused (serde_json's recursion limit), not a stack overflow.
        let deep = format!("51-[\"a\",{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(err(&deep), PacketError::InvalidPlaceholder(_)));
    }

    #[test]
    fn deep_text_event_is_not_walked() {
        // Plain events are never walked, so nesting is only bounded by the message size.
        let deep = format!("2[\"a\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        let p = decode(&deep, MAX).unwrap();
        assert_eq!(p.event().unwrap().args.len(), 1);
    }

    #[test]
    fn event_borrows_name_and_args() {
        let p = decode(r#"2/chat,5["msg",{"text":"hi"}, 2 ,"x"]"#, MAX).unwrap();
        let ev = p.event().unwrap();
        assert!(matches!(ev.name, Cow::Borrowed("msg")));
        let args: Vec<&str> = ev.args.iter().map(|a| a.get()).collect();
        assert_eq!(args, [r#"{"text":"hi"}"#, "2", r#""x""#]);

        let p = decode(r#"2["a\"b\u00e9\n"]"#, MAX).unwrap();
        let ev = p.event().unwrap();
        assert!(matches!(&ev.name, Cow::Owned(n) if n == "a\"bé\n"));
        assert!(ev.args.is_empty());
    }

    #[test]
    fn event_and_ack_check_the_kind() {
        let ack = decode("3/a,4[1,\"two\"]", MAX).unwrap();
        let args: Vec<&str> = ack.ack_args().unwrap().iter().map(|a| a.get()).collect();
        assert_eq!(args, ["1", "\"two\""]);
        assert!(matches!(ack.event(), Err(PacketError::WrongKind { .. })));
        let ev = decode("2[\"a\"]", MAX).unwrap();
        assert!(matches!(ev.ack_args(), Err(PacketError::WrongKind { .. })));
        assert!(decode("31[]", MAX).unwrap().ack_args().unwrap().is_empty());
        let bin = decode(r#"61-1[{"_placeholder":true,"num":0}]"#, MAX).unwrap();
        assert_eq!(bin.ack_args().unwrap().len(), 1);
    }

    #[test]
    fn event_revalidates_hand_built_packets() {
        use PacketKind::*;
        let bad = [
            packet(Event, "/", None, None, 0),
            packet(Event, "/", None, Some("{}"), 0),
            packet(Event, "/", None, Some("[]"), 0),
            packet(Event, "/", None, Some("[1]"), 0),
            packet(Event, "/", None, Some(r#"["disconnect"]"#), 0),
        ];
        for p in &bad {
            assert!(p.event().is_err(), "{p:?}");
        }
        assert!(packet(Ack, "/", Some(1), Some("{}"), 0).ack_args().is_err());
        assert!(packet(Ack, "/", Some(1), None, 0).ack_args().is_err());
    }

    #[test]
    fn builders() {
        let args = [raw(r#"{"a":1}"#), raw("[2]")];
        let args: Vec<&RawValue> = args.iter().map(|a| &**a).collect();
        assert_eq!(
            encode_event("/", "msg", &args, None, 0),
            r#"2["msg",{"a":1},[2]]"#
        );
        assert_eq!(
            encode_event("/chat", "m", &[], Some(12), 0),
            r#"2/chat,12["m"]"#
        );
        assert_eq!(
            encode_event("/chat", "m", &args, Some(3), 2),
            r#"52-/chat,3["m",{"a":1},[2]]"#
        );
        assert_eq!(encode_event("", "m", &[], None, 0), r#"2["m"]"#);
        assert_eq!(encode_event("/", "a\"b\\", &[], None, 0), r#"2["a\"b\\"]"#);
        assert_eq!(encode_ack("/", 7, &[], 0), "37[]");
        assert_eq!(encode_ack("/n", 7, &args, 0), r#"3/n,7[{"a":1},[2]]"#);
        assert_eq!(encode_ack("/n", 7, &args, 1), r#"61-/n,7[{"a":1},[2]]"#);
        assert_eq!(
            encode_ack_json("/", 1, r#"[{"ok":true}]"#),
            r#"31[{"ok":true}]"#
        );
        assert_eq!(
            encode_ack_json("/n", 2, r#"[{"ok":true}]"#),
            r#"3/n,2[{"ok":true}]"#
        );
        assert_eq!(encode_connect("/", "abc"), r#"0{"sid":"abc"}"#);
        assert_eq!(encode_connect("/admin", "abc"), r#"0/admin,{"sid":"abc"}"#);
        assert_eq!(
            encode_connect_error("/", "Not \"authorized\"\n"),
            r#"4{"message":"Not \"authorized\"\n"}"#
        );
        assert_eq!(encode_connect_error("/x", "no"), r#"4/x,{"message":"no"}"#);
        assert_eq!(encode_disconnect("/"), "1");
        assert_eq!(encode_disconnect("/admin"), "1/admin,");
    }

    #[test]
    fn builders_decode_back() {
        let arg = raw(r#"{"_placeholder":true,"num":0}"#);
        let args = [&*arg];
        let texts = [
            encode_event(
                "/chat",
                "weird \u{0}\u{1f}\u{7f}\"\\/ é😀",
                &args,
                Some(9),
                1,
            ),
            encode_event("/", "x", &args, None, 0),
            encode_ack("/chat", 9, &args, 1),
            encode_ack("/", u64::MAX, &[], 0),
            encode_ack_json("/", 1, "[]"),
            encode_connect("/chat", "s\"id"),
            encode_connect_error("/chat", "bad\u{8}\u{c}"),
            encode_disconnect("/chat"),
        ];
        for text in &texts {
            let p = decode(text, MAX).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(&p.encode(), text);
        }
        let p = decode(&texts[0], MAX).unwrap();
        assert_eq!(p.event().unwrap().name, "weird \u{0}\u{1f}\u{7f}\"\\/ é😀");
        assert_eq!(p.attachments, 1);
    }

    #[test]
    fn json_escaping_matches_serde_json() {
        let mut samples: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        samples.extend(
            [
                "",
                "plain",
                "é€😀",
                "\u{2028}\u{2029}",
                "\"\\\"",
                "\u{0}\u{1f}x\u{7f}",
            ]
            .map(String::from),
        );
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..500 {
            let s: String = (0..rng.below(12))
                .filter_map(|_| char::from_u32(rng.below(0x300) as u32))
                .collect();
            samples.push(s);
        }
        for s in &samples {
            let mut ours = String::new();
            push_json_str(&mut ours, s);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn no_panic_on_arbitrary_input() {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "9",
            "-",
            "/",
            ",",
            "[",
            "]",
            "{",
            "}",
            "\"",
            "\\",
            ":",
            "true",
            "null",
            "_placeholder",
            "num",
            "é",
            "😀",
            "\u{1}",
            " ",
            "99999999999",
            "connect",
            "\\u00",
        ];
        let seeds = [
            r#"0/admin,{"token":"123"}"#,
            r#"2/chat,12["msg",{"a":[1,2]},"x"]"#,
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            r#"61-15["bar",{"_placeholder":true,"num":0}]"#,
            r#"4{"message":"no"}"#,
            "1/admin,",
            "3/a,4[1,\"two\"]",
            "",
        ];
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut decoded = 0;
        for round in 0..6000 {
            let mut s: Vec<char> = seeds[round % seeds.len()].chars().collect();
            for _ in 0..1 + rng.below(4) {
                let piece: Vec<char> = PIECES[rng.below(PIECES.len())].chars().collect();
                match rng.below(3) {
                    0 => {
                        let at = rng.below(s.len() + 1);
                        s.splice(at..at, piece);
                    }
                    1 if !s.is_empty() => {
                        let at = rng.below(s.len());
                        let end = (at + piece.len()).min(s.len());
                        s.splice(at..end, piece);
                    }
                    _ if !s.is_empty() => {
                        let at = rng.below(s.len());
                        let end = (at + 1 + rng.below(3)).min(s.len());
                        s.drain(at..end);
                    }
                    _ => {}
                }
            }
            let text: String = s.into_iter().collect();
            if let Ok(p) = decode(&text, 1 + rng.below(3)) {
                decoded += 1;
                // What decodes re-encodes to an equivalent packet, and its accessors hold.
                let again = decode(&p.encode(), p.attachments.max(1)).unwrap();
                assert!(same(&p, &again), "{text:?}");
                match p.kind {
                    PacketKind::Event | PacketKind::BinaryEvent => {
                        p.event().unwrap();
                    }
                    PacketKind::Ack | PacketKind::BinaryAck => {
                        p.ack_args().unwrap();
                    }
                    _ => {}
                }
            }
        }
        // The mutations should leave a fair share valid, or the test checks little.
        assert!(decoded > 300, "only {decoded} inputs decoded");
    }
}
