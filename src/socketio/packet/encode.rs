//! Socket.IO packets to text: [`Packet::encode`] and the builders the relay calls on its
//! hot path.
//!
//! The builders write the header, the JSON-escaped strings and the raw arguments straight
//! into one `String` sized up front: no `serde_json::Value` tree, no intermediate
//! allocation, no error path. Arguments ([`RawValue`]) go out byte for byte as they came
//! in.
//!
//! Does not own: which namespace, event or ack to send (the relay), or checking what it is
//! given: the callers pass namespaces from the decoder or the validated config (never one
//! with a comma) and arguments that are valid JSON.

use std::fmt::Write as _;

use serde_json::value::RawValue;

use super::{Packet, PacketKind};

impl Packet {
    /// Encode for the wire (the text of an Engine.IO MESSAGE). For every packet that
    /// [`super::decode`] accepts, decoding the result gives the same packet back (the
    /// text may differ: an explicit main namespace `/,`, leading zeros and whitespace
    /// around the JSON are dropped, a namespace without a comma gets one). A binary kind
    /// with no attachments encodes as `0-`, which the decoder refuses.
    pub fn encode(&self) -> String {
        let data = self.data.as_deref().map_or("", RawValue::get);
        let mut out = String::with_capacity(HEADER_MAX + self.nsp.len() + data.len());
        push_header(&mut out, self.kind, self.attachments, &self.nsp, self.id);
        out.push_str(data);
        out
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

/// CONNECT accepted with connection state recovery: `0/nsp,{"sid":"...","pid":"..."}`.
pub fn encode_connect_with_pid(nsp: &str, sid: &str, pid: &str) -> String {
    let mut out =
        String::with_capacity(HEADER_MAX + nsp.len() + json_str_len(sid) + json_str_len(pid) + 16);
    push_header(&mut out, PacketKind::Connect, 0, nsp, None);
    out.push_str("{\"sid\":");
    push_json_str(&mut out, sid);
    out.push_str(",\"pid\":");
    push_json_str(&mut out, pid);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::socketio::packet::proptests::text;

    fn ours(s: &str) -> String {
        let mut out = String::new();
        push_json_str(&mut out, s);
        out
    }

    #[test]
    fn json_escaping_matches_serde_json_on_every_ascii_char() {
        for c in (0u8..0x80).map(char::from) {
            let s = format!("a{c}b");
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
        for s in [
            "",
            "plain",
            "é€😀",
            "\u{2028}\u{2029}",
            "\"\\\"",
            "\u{0}\u{1f}x\u{7f}",
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn json_escaping_matches_serde_json(s in prop_oneof![text(), any::<String>()]) {
            prop_assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
