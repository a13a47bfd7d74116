//! Property tests of the packet grammar on generated inputs: every valid packet survives
//! an encode/decode round trip (through [`Packet::encode`] and through the builders), and
//! no text makes the decoder or the payload accessors panic.
//!
//! The strategies are shared with the reassembly properties in [`crate::socketio::binary`].
//! `cargo fuzz` (the `fuzz/` directory) explores the same decoders further, guided by
//! coverage; these run on every `cargo test`.

#![allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use serde_json::value::RawValue;

use super::decode::RESERVED_EVENTS;
use super::tests::same;
use super::*;

/// The attachment cap the valid cases are decoded with.
pub(in crate::socketio) const MAX: usize = 4;

/// A generated valid packet, with what its payload accessors must give back.
#[derive(Debug, Clone)]
pub(in crate::socketio) struct Case {
    pub packet: Packet,
    /// The event name, for EVENT and BINARY_EVENT.
    pub name: Option<String>,
    /// The raw arguments, for EVENT, ACK and their binary kinds.
    pub args: Vec<String>,
}

/// Strings that lean on what JSON and the header grammar treat specially: ASCII control
/// characters, quotes, backslashes, the delimiters, multi-byte characters.
pub(in crate::socketio) fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => (0u8..0x80).prop_map(char::from),
        2 => prop::sample::select(vec!['"', '\\', '/', ',', '-', 'é', '😀', '\u{2028}']),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..12).prop_map(String::from_iter)
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = String> {
    prop::collection::vec((text(), json()), 0..4)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()).to_string())
}

/// The main namespace or a custom one: `/` and anything without a comma.
fn nsp() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::from("/")),
        text().prop_map(|s| format!("/{}", s.replace(',', ""))),
    ]
}

fn event_name() -> impl Strategy<Value = String> {
    text().prop_filter("reserved names are refused", |n| {
        !RESERVED_EVENTS.contains(&n.as_str())
    })
}

/// Arguments; with `attachments > 0`, some are placeholders naming one of them, at the
/// top level or nested.
fn args(attachments: usize) -> impl Strategy<Value = Vec<String>> {
    let plain = json().prop_map(|v| v.to_string());
    let arg = if attachments == 0 {
        plain.boxed()
    } else {
        let placeholder = |num: usize| format!(r#"{{"_placeholder":true,"num":{num}}}"#);
        prop_oneof![
            2 => plain,
            2 => (0..attachments).prop_map(placeholder),
            1 => (0..attachments).prop_map(move |n| format!(r#"{{"x":[{}]}}"#, placeholder(n))),
        ]
        .boxed()
    };
    prop::collection::vec(arg, 0..4)
}

fn array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

fn case_of(
    kind: PacketKind,
    nsp: String,
    id: Option<u64>,
    data: Option<String>,
    attachments: usize,
) -> Packet {
    Packet {
        kind,
        nsp,
        id,
        data: data.map(|d| RawValue::from_string(d).unwrap()),
        attachments,
    }
}

fn event(binary: bool) -> impl Strategy<Value = Case> {
    let attachments = if binary { 1..MAX + 1 } else { 0..1 };
    attachments.prop_flat_map(move |n| {
        (nsp(), any::<Option<u64>>(), event_name(), args(n)).prop_map(
            move |(nsp, id, name, args)| {
                let quoted = serde_json::to_string(&name).unwrap();
                let data =
                    array(std::iter::once(quoted.as_str()).chain(args.iter().map(String::as_str)));
                let kind = if binary {
                    PacketKind::BinaryEvent
                } else {
                    PacketKind::Event
                };
                Case {
                    packet: case_of(kind, nsp, id, Some(data), n),
                    name: Some(name),
                    args,
                }
            },
        )
    })
}

fn ack(binary: bool) -> impl Strategy<Value = Case> {
    let attachments = if binary { 1..MAX + 1 } else { 0..1 };
    attachments.prop_flat_map(move |n| {
        (nsp(), any::<u64>(), args(n)).prop_map(move |(nsp, id, args)| {
            let data = array(args.iter().map(String::as_str));
            let kind = if binary {
                PacketKind::BinaryAck
            } else {
                PacketKind::Ack
            };
            Case {
                packet: case_of(kind, nsp, Some(id), Some(data), n),
                name: None,
                args,
            }
        })
    })
}

/// Any valid packet of any kind.
pub(in crate::socketio) fn case() -> impl Strategy<Value = Case> {
    let plain = |packet| Case {
        packet,
        name: None,
        args: Vec::new(),
    };
    prop_oneof![
        (nsp(), prop::option::of(object())).prop_map(move |(nsp, data)| plain(case_of(
            PacketKind::Connect,
            nsp,
            None,
            data,
            0
        ))),
        nsp().prop_map(move |nsp| plain(case_of(PacketKind::Disconnect, nsp, None, None, 0))),
        (
            nsp(),
            prop_oneof![object(), text().prop_map(|s| Value::String(s).to_string())]
        )
            .prop_map(move |(nsp, data)| plain(case_of(
                PacketKind::ConnectError,
                nsp,
                None,
                Some(data),
                0
            ))),
        event(false),
        event(true),
        ack(false),
        ack(true),
    ]
}

/// Bits of the grammar that mutations splice in.
const PIECES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
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
    "18446744073709551616",
    "connect",
    "\\u00",
];

/// One edit of a text: insert, overwrite or delete around a position.
#[derive(Debug, Clone)]
pub(in crate::socketio) enum Edit {
    Insert(Index, &'static str),
    Overwrite(Index, &'static str),
    Delete(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let piece = prop::sample::select(PIECES);
    prop_oneof![
        (any::<Index>(), piece.clone()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<Index>(), piece).prop_map(|(at, p)| Edit::Overwrite(at, p)),
        (any::<Index>(), 1..4usize).prop_map(|(at, n)| Edit::Delete(at, n)),
    ]
}

/// Apply `edits` to `text`, char-wise so that the result stays a `String`.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        match edit {
            Edit::Insert(at, piece) => {
                let at = at.index(chars.len() + 1);
                chars.splice(at..at, piece.chars());
            }
            Edit::Overwrite(at, piece) if !chars.is_empty() => {
                let at = at.index(chars.len());
                let end = (at + piece.chars().count()).min(chars.len());
                chars.splice(at..end, piece.chars());
            }
            Edit::Delete(at, n) if !chars.is_empty() => {
                let at = at.index(chars.len());
                chars.drain(at..(at + n).min(chars.len()));
            }
            Edit::Overwrite(..) | Edit::Delete(..) => {}
        }
    }
    chars.into_iter().collect()
}

/// Texts for the no-panic properties: arbitrary strings, grammar soup, and valid
/// encodings with a few edits (the ones that reach deep into the payload rules).
pub(in crate::socketio) fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        1 => prop::collection::vec(prop::sample::select(PIECES), 0..16).prop_map(|p| p.concat()),
        4 => (case(), prop::collection::vec(edit(), 1..4))
            .prop_map(|(case, edits)| mutate(&case.packet.encode(), &edits)),
    ]
}

/// What must hold for any packet the decoder accepts: it re-encodes to an equivalent
/// packet, and the accessor of its kind succeeds.
fn check_accepted(packet: &Packet) {
    let text = packet.encode();
    let again = decode(&text, packet.attachments.max(1))
        .unwrap_or_else(|e| panic!("{packet:?} re-encoded as {text:?}: {e}"));
    assert!(same(packet, &again), "{packet:?} -> {text:?} -> {again:?}");
    match packet.kind {
        PacketKind::Event | PacketKind::BinaryEvent => {
            packet.event().unwrap();
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            packet.ack_args().unwrap();
        }
        PacketKind::Connect | PacketKind::Disconnect | PacketKind::ConnectError => {}
    }
}

proptest! {
    #[test]
    fn valid_packets_round_trip(case in case()) {
        let text = case.packet.encode();
        let back = decode(&text, MAX).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        prop_assert!(same(&case.packet, &back), "{:?} -> {text:?} -> {back:?}", case.packet);
        prop_assert_eq!(back.encode(), text);
        let args: Vec<&str> = match back.kind {
            PacketKind::Event | PacketKind::BinaryEvent => {
                let event = back.event().unwrap();
                prop_assert_eq!(Some(event.name.as_ref()), case.name.as_deref());
                event.args.iter().map(|a| a.get()).collect()
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                back.ack_args().unwrap().iter().map(|a| a.get()).collect()
            }
            _ => Vec::new(),
        };
        prop_assert_eq!(args, case.args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// The hot-path builders write exactly what [`Packet::encode`] writes for the same
    /// packet.
    #[test]
    fn builders_agree_with_encode(case in case()) {
        let p = &case.packet;
        let raw: Vec<Box<RawValue>> = case
            .args
            .iter()
            .map(|a| RawValue::from_string(a.clone()).unwrap())
            .collect();
        let args: Vec<&RawValue> = raw.iter().map(|a| &**a).collect();
        let built = match p.kind {
            PacketKind::Event | PacketKind::BinaryEvent => {
                let name = case.name.as_deref().unwrap();
                encode_event(&p.nsp, name, &args, p.id, p.attachments)
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                encode_ack(&p.nsp, p.id.unwrap(), &args, p.attachments)
            }
            PacketKind::Disconnect => encode_disconnect(&p.nsp),
            PacketKind::Connect | PacketKind::ConnectError => return Ok(()),
        };
        prop_assert_eq!(built, p.encode());
    }

    #[test]
    fn connect_builders_decode_back(nsp in nsp(), s in text()) {
        let granted = decode(&encode_connect(&nsp, &s), MAX).unwrap();
        prop_assert_eq!((granted.kind, granted.nsp.as_str()), (PacketKind::Connect, nsp.as_str()));
        let data: Value = serde_json::from_str(granted.data.unwrap().get()).unwrap();
        prop_assert_eq!(data, serde_json::json!({ "sid": s }));
        let refused = decode(&encode_connect_error(&nsp, &s), MAX).unwrap();
        prop_assert_eq!(refused.kind, PacketKind::ConnectError);
        let data: Value = serde_json::from_str(refused.data.unwrap().get()).unwrap();
        prop_assert_eq!(data, serde_json::json!({ "message": s }));
    }

    #[test]
    fn no_panic_on_hostile_text(text in hostile_text(), max in 0..=MAX) {
        if let Ok(packet) = decode(&text, max) {
            check_accepted(&packet);
        }
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(packet) = decode(&text, MAX) {
            check_accepted(&packet);
        }
    }
}
