//! The little of Engine.IO v4 and Socket.IO v5 (namespace "/", text frames over
//! WebSocket) that the load generator speaks, written by hand so that the hot path reads
//! a frame without a JSON parser and writes one with a single buffer.
//!
//! Owns: classifying a received text frame, encoding the emits the scenarios send,
//! finding a numeric field (the send timestamp, the sequence number) in a frame's text,
//! reading an ack's `"ok"`, the open packet's sid and the worker it names. Does not own:
//! sockets, timing or counting (see `client` and the scenarios).
//!
//! Frames (the engine packet type is the first character, Socket.IO's the second):
//! `0{…}` open, `2` ping (answered `3`), `1` close, `6` noop, `40{"sid":…}` connected to
//! "/", `41` disconnected, `42[…]` event, `43<id>[…]` ack, `44{…}` connect error.

/// What a received text frame is, as far as the scenarios care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Engine.IO ping (`2`, also `2probe`): answer `3`.
    Ping,
    /// Socket.IO CONNECT reply for "/" (`40{…}`).
    Connected,
    /// Socket.IO CONNECT_ERROR (`44{…}`).
    ConnectError,
    /// Socket.IO DISCONNECT (`41`) or Engine.IO close (`1`): the server ended the session.
    Disconnect,
    /// Socket.IO EVENT for "/": the text after `42` (`["name",…]`).
    Event(&'a str),
    /// Socket.IO ACK for "/": its id and the text after it (`[…]`).
    Ack(u64, &'a str),
    /// Anything else (pong, noop, binary packets, other namespaces): ignored.
    Other,
}

/// Classify one text frame without parsing its JSON.
pub fn classify(text: &str) -> Kind<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'2') => Kind::Ping,
        Some(b'1') => Kind::Disconnect,
        Some(b'4') => match b.get(1) {
            Some(b'0') => Kind::Connected,
            Some(b'1') => Kind::Disconnect,
            Some(b'2') => Kind::Event(&text[2..]),
            Some(b'3') => {
                let rest = &text[2..];
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                match rest[..digits].parse::<u64>() {
                    Ok(id) => Kind::Ack(id, &rest[digits..]),
                    Err(_) => Kind::Other,
                }
            }
            Some(b'4') => Kind::ConnectError,
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

/// Whether an event's text (after `42`) is the event `name`: `["name",` with no space,
/// as every server under test encodes (JSON.stringify, serde_json, compact Python).
pub fn is_event(event: &str, name: &str) -> bool {
    let b = event.as_bytes();
    b.len() > name.len() + 4
        && b[0] == b'['
        && b[1] == b'"'
        && &b[2..2 + name.len()] == name.as_bytes()
        && b[2 + name.len()] == b'"'
        && b[3 + name.len()] == b','
}

/// The unsigned integer after the first `"key":` in `text` (spaces allowed after the
/// colon). The payloads the generator sends carry only fixed keys and `x` padding, so
/// the first occurrence is the field, whatever the server did to the key order.
pub fn find_u64(text: &str, key: &str) -> Option<u64> {
    let at = find_key(text, key)?;
    digits(&text.as_bytes()[at..]).map(|(n, _)| n)
}

/// The `t` and `s` of a timestamped event (the text after `42`, see [`timed_emit`]).
/// The object as sent is `{"t":…,"s":…` right after the name, which a relay that passes
/// arguments through keeps: that is read in place; anything else (a server that
/// re-serialised the object) falls back to [`find_u64`].
pub fn timed_fields(event: &str, name: &str) -> Option<(u64, u64)> {
    let b = event.as_bytes();
    // `["` name `",{"t":`
    let at = name.len() + 4;
    if b.get(at..at + 5) == Some(b"{\"t\":".as_slice()) {
        let (t, used) = digits(&b[at + 5..])?;
        let rest = &b[at + 5 + used..];
        if rest.starts_with(b",\"s\":") {
            let (s, _) = digits(&rest[5..])?;
            return Some((t, s));
        }
    }
    Some((find_u64(event, "t")?, find_u64(event, "s")?))
}

/// A run of ASCII digits at the start of `b` as a u64, and its length.
fn digits(b: &[u8]) -> Option<(u64, usize)> {
    let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for d in &b[..len] {
        n = n * 10 + u64::from(d - b'0');
    }
    Some((n, len))
}

/// The boolean after the first `"key":` (spaces allowed around the colon).
pub fn find_bool(text: &str, key: &str) -> Option<bool> {
    let at = find_key(text, key)?;
    let rest = &text[at..];
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// Byte offset of the value after `"key"` and its colon.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let b = text.as_bytes();
    let k = key.as_bytes();
    let mut from = 0;
    while let Some(pos) = find_bytes(&b[from..], k) {
        let mut i = from + pos + k.len();
        // Only a quoted key counts: `"key"` followed by optional spaces and a colon.
        let quoted = from + pos >= 1 && b[from + pos - 1] == b'"' && b.get(i) == Some(&b'"');
        if quoted {
            i += 1;
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            if b.get(i) == Some(&b':') {
                i += 1;
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
                return Some(i);
            }
        }
        from += pos + 1;
    }
    None
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match hay[i..=last].iter().position(|c| *c == first) {
            None => return None,
            Some(p) => i += p,
        }
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// What an ack says about the emit it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// `{"ok":true,…}` first.
    Ok,
    /// `{"ok":false,…}`: the server refused the emit.
    Refused,
    /// No `"ok"` (a peer that echoes the arguments back): accepted.
    Plain,
}

/// Read an ack's verdict from its text (after the id).
pub fn ack_status(body: &str) -> AckStatus {
    match find_bool(body, "ok") {
        Some(true) => AckStatus::Ok,
        Some(false) => AckStatus::Refused,
        None => AckStatus::Plain,
    }
}

/// Append the decimal digits of `n`.
pub fn push_u64(buf: &mut String, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for d in &tmp[i..] {
        buf.push(char::from(*d));
    }
}

/// `42<ack>["$join","<room>"]`. The room is written as a JSON string.
pub fn join(ack: u64, room: &str) -> String {
    let mut s = String::with_capacity(room.len() + 24);
    s.push_str("42");
    push_u64(&mut s, ack);
    s.push_str("[\"$join\",");
    s.push_str(&serde_json::Value::from(room).to_string());
    s.push(']');
    s
}

/// A timestamped emit: `42[<ack>]["<event>",{"t":<ns>,"s":<seq>,"p":"xx…"}]`, padded
/// with `x` so that the object (the payload) is `payload` bytes long when it can be.
/// `t` is the send time in ns since the process epoch (see `clock`), `s` the sequence.
pub fn timed_emit(
    buf: &mut String,
    event: &str,
    ack: Option<u64>,
    t: u64,
    seq: u64,
    payload: usize,
) {
    buf.clear();
    buf.push_str("42");
    if let Some(id) = ack {
        push_u64(buf, id);
    }
    buf.push_str("[\"");
    buf.push_str(event);
    buf.push_str("\",");
    let object_start = buf.len();
    buf.push_str("{\"t\":");
    push_u64(buf, t);
    buf.push_str(",\"s\":");
    push_u64(buf, seq);
    buf.push_str(",\"p\":\"");
    // The object ends with `"}`: pad to `payload` bytes in all.
    let used = buf.len() - object_start + 2;
    for _ in used..payload {
        buf.push('x');
    }
    buf.push_str("\"}]");
}

/// The engine sid of an open packet (`0{"sid":…}`), or `None` when it is not one.
pub fn open_sid(text: &str) -> Option<String> {
    let json = text.strip_prefix('0')?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("sid")?.as_str().map(str::to_owned)
}

/// The characters that name iorelay's workers 0..64 at the front of a 23-character
/// engine sid (iorelay `src/engine/sid.rs`).
const NODE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The iorelay worker that owns an engine sid: only 23-character ids carry one (a
/// single-process iorelay and other servers use other lengths, so they have none).
pub fn sid_worker(sid: &str) -> Option<usize> {
    if sid.len() != 23 {
        return None;
    }
    let c = sid.bytes().next()?;
    NODE_CHARS.iter().position(|x| *x == c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn classifies_frames() {
        assert_eq!(classify("2"), Kind::Ping);
        assert_eq!(classify("40{\"sid\":\"x\"}"), Kind::Connected);
        assert_eq!(classify("44{\"message\":\"no\"}"), Kind::ConnectError);
        assert_eq!(classify("41"), Kind::Disconnect);
        assert_eq!(classify("1"), Kind::Disconnect);
        assert_eq!(classify("42[\"msg\",1]"), Kind::Event("[\"msg\",1]"));
        assert_eq!(
            classify("4312[{\"ok\":true}]"),
            Kind::Ack(12, "[{\"ok\":true}]")
        );
        assert_eq!(classify("43[]"), Kind::Other);
        assert_eq!(classify("6"), Kind::Other);
        assert_eq!(classify(""), Kind::Other);
        assert_eq!(classify("4"), Kind::Other);
    }

    #[test]
    fn finds_fields_in_any_order_and_spacing() {
        let mut buf = String::new();
        timed_emit(&mut buf, "msg", None, 123_456_789, 42, 100);
        let Kind::Event(ev) = classify(&buf) else {
            panic!("not an event: {buf}")
        };
        assert!(is_event(ev, "msg"));
        assert!(!is_event(ev, "ms"));
        assert_eq!(find_u64(ev, "t"), Some(123_456_789));
        assert_eq!(timed_fields(ev, "msg"), Some((123_456_789, 42)));
        assert_eq!(find_u64(ev, "s"), Some(42));
        let object = &ev[7..ev.len() - 1];
        assert_eq!(object.len(), 100, "{object}");
        assert!(serde_json::from_str::<serde_json::Value>(object).is_ok());

        let sorted = r#"["msg",{"p":"xxst","s": 7,"t" : 9}]"#;
        assert_eq!(find_u64(sorted, "s"), Some(7));
        assert_eq!(find_u64(sorted, "t"), Some(9));
        assert_eq!(find_u64(sorted, "q"), None);
        assert_eq!(timed_fields(sorted, "msg"), Some((9, 7)));
        assert_eq!(timed_fields(r#"["msg",{"t":1}]"#, "msg"), None);
        assert_eq!(find_u64(r#"{"t":"x"}"#, "t"), None);
    }

    #[test]
    fn emits_with_ack_ids() {
        let mut buf = String::new();
        timed_emit(&mut buf, "echo", Some(7), 1, 2, 10);
        assert!(buf.starts_with("427[\"echo\",{\"t\":1,\"s\":2,\"p\":\""));
        assert_eq!(join(0, "bench"), "420[\"$join\",\"bench\"]");
        assert_eq!(join(3, "a\"b"), "423[\"$join\",\"a\\\"b\"]");
    }

    #[test]
    fn reads_ack_status() {
        assert_eq!(
            ack_status(r#"[{"ok":true,"room":"bench","count":3}]"#),
            AckStatus::Ok
        );
        assert_eq!(
            ack_status(r#"[{"ok": false,"error":"rate"}]"#),
            AckStatus::Refused
        );
        assert_eq!(ack_status(r#"[{"t":1,"s":2}]"#), AckStatus::Plain);
        assert_eq!(ack_status(r#"[{"look":true}]"#), AckStatus::Plain);
    }

    #[test]
    fn reads_sid_and_worker() {
        let open = r#"0{"sid":"BAAAAAAAAAAAAAAAAAAAAAA","upgrades":[],"pingInterval":25000}"#;
        let sid = open_sid(open).unwrap();
        assert_eq!(sid_worker(&sid), Some(1));
        assert_eq!(sid_worker("AAAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(open_sid("0{"), None);
        assert_eq!(open_sid("40"), None);
    }

    #[test]
    fn digits() {
        for n in [0, 9, 10, 1234567890, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
