//! Socket.IO v5 packets: the text inside one Engine.IO MESSAGE, decoded and encoded.
//!
//! Owns the wire grammar
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`, the payload validity
//! rules of each packet type, and the builders the relay uses on its hot path. JSON
//! payloads are kept raw ([`RawValue`]) so that relayed arguments go out byte for byte as
//! they came in. Split by job:
//! - this file: the packet type ([`Packet`], [`PacketKind`], [`Event`]) and its error;
//! - `decode.rs`: text to [`Packet`] ([`decode`]), the validity rules, the payload
//!   accessors ([`Packet::event`], [`Packet::ack_args`]);
//! - `placeholders.rs`: the walk that checks a binary payload's placeholders;
//! - `encode.rs`: [`Packet::encode`] and the `encode_*` builders ([`encode_event`] …).
//!
//! Does not own: the binary attachments themselves (see [`super::binary`]), what a
//! namespace, event or ack means (the relay), or size limits (the transport bounds the
//! message before it gets here; every loop here is linear in that size).
//!
//! # Strict or lenient
//! The reference decoder (`socket.io-parser` `decodeString`/`isPayloadValid`) is the
//! baseline. Where it is lenient in ways the reference client never uses, this decoder is
//! strict, because a relay forwards what it accepts to other clients:
//! - A namespace starts with `/` and runs to the first `,`, or to the end of the packet
//!   when no id or payload follows (`40/custom`, `41/custom`), as in the reference decoder
//!   and the v5 conformance suite. Every encoder, ours included, writes the comma. There
//!   is no escape, so a namespace never holds a comma (the v5 spec forbids one). Without
//!   the comma, whatever follows becomes part of the namespace: `2/admin["a"]` is an EVENT
//!   on `/admin["a"]` with no payload, refused below, and `0/admin{}` asks for a namespace
//!   that no config declares.
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

use serde_json::value::RawValue;

mod decode;
mod encode;
mod placeholders;

pub use decode::{RESERVED_EVENTS, decode};
pub use encode::{
    encode_ack, encode_ack_json, encode_connect, encode_connect_error, encode_connect_with_pid,
    encode_disconnect, encode_event,
};

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

// The `#[inline]`s keep these one-liners inlined on the hot path now that the decoder and
// the encoder live in sibling modules (which may land in other codegen units).
impl PacketKind {
    /// The kind whose wire digit is `digit`, if any.
    #[inline]
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

    /// The type digit that starts the packet on the wire.
    #[inline]
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
    #[inline]
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
mod tests;

#[cfg(test)]
pub(super) mod proptests;
