//! Example-based tests of the packet grammar: the spec examples, every rule of the
//! decoder with the error it gives, and the builders. The generated inputs are in
//! [`super::proptests`].

#![allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::decode::RESERVED_EVENTS;
use super::*;

const MAX: usize = 10;

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap()
}

fn packet(kind: PacketKind, nsp: &str, id: Option<u64>, data: Option<&str>, n: usize) -> Packet {
    Packet {
        kind,
        nsp: nsp.to_owned(),
        id,
        data: data.map(raw),
        attachments: n,
    }
}

pub(super) fn same(a: &Packet, b: &Packet) -> bool {
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
    // Re-encoded, it gets the comma every encoder writes.
    assert_eq!(p.encode(), "0/custom,");
    // The first comma ends the namespace: what follows is id and payload.
    let p = decode("3/a,b,1[]", MAX);
    assert!(matches!(p, Err(PacketError::InvalidJson(_))), "{p:?}");
    let overflow = err("218446744073709551616[\"a\"]");
    assert!(matches!(overflow, PacketError::IdOverflow));
    assert_eq!(overflow.to_string(), "ack id does not fit in 64 bits");
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
