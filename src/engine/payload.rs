//! HTTP long-polling bodies: several Engine.IO packets in one request or response.
//!
//! Owns the v4 payload format: UTF-8 text, packets joined by the record separator `\x1e`,
//! binary packets written as `b` + standard base64.
//!
//! Does not own: the HTTP exchange itself, `Content-Type`, the `maxPayload` byte limit
//! (the polling transport caps the body before it gets here), or single packets (see
//! [`super::packet`]). The packet-count cap is here because only the splitter sees it.
//!
//! Strictness: an empty part (`"4a\x1e\x1e4b"`, an empty body, a trailing separator) is an
//! error, as it is for the reference parser (`decodePayload` turns it into an error
//! packet); one bad part rejects the whole body, so that nothing after a parse error is
//! acted on.

use base64::Engine as _;

use super::packet::{BASE64, Frame, Packet, PacketError};

/// The record separator between packets of a polling body.
pub const SEPARATOR: u8 = 0x1e;

/// Decode a polling POST body: UTF-8, packets separated by `\x1e`; a part starting with
/// `b` is base64 (standard alphabet) binary → [`Packet::Binary`]. More than
/// `max_packets` parts, invalid UTF-8, bad base64, an empty part, or a bad packet → error.
pub fn decode(body: &[u8], max_packets: usize) -> Result<Vec<Packet>, PayloadError> {
    let text = std::str::from_utf8(body)?;
    let mut packets = Vec::new();
    // The separator is ASCII, so splitting the str on it never cuts a character.
    for (index, part) in text.split(char::from(SEPARATOR)).enumerate() {
        // Checked before decoding, so an oversized body costs no more than the cap.
        if index >= max_packets {
            return Err(PayloadError::TooManyPackets { max: max_packets });
        }
        if part.is_empty() {
            return Err(PayloadError::EmptyPacket { index });
        }
        let packet =
            Packet::decode_text(part).map_err(|source| PayloadError::Packet { index, source })?;
        packets.push(packet);
    }
    Ok(packets)
}

/// Append frames to a polling GET body: text as is, binary as `b` + base64, joined by
/// `\x1e`. When `out` already holds a body, a separator comes first, so that several calls
/// build one body.
pub fn encode<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut Vec<u8>) {
    for frame in frames {
        if !out.is_empty() {
            out.push(SEPARATOR);
        }
        match frame {
            Frame::Text(text) => out.extend_from_slice(text.as_bytes()),
            Frame::Binary(data) => {
                out.push(b'b');
                append_base64(data, out);
            }
        }
    }
}

/// Base64 straight into `out`, without an intermediate String.
fn append_base64(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let written = base64::encoded_len(data.len(), true).and_then(|len| {
        out.resize(start.saturating_add(len), 0);
        let tail = out.get_mut(start..)?;
        BASE64.encode_slice(data, tail).ok()
    });
    match written {
        Some(written) => out.truncate(start.saturating_add(written)),
        // Only reachable if the length overflows usize; fall back to the allocating path.
        None => {
            out.truncate(start);
            out.extend_from_slice(BASE64.encode(data).as_bytes());
        }
    }
}

/// Why a polling body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("payload is not valid UTF-8: {0}")]
    InvalidUtf8(#[from] std::str::Utf8Error),
    #[error("payload holds more than {max} packets")]
    TooManyPackets { max: usize },
    #[error("payload part {index} is empty")]
    EmptyPacket { index: usize },
    #[error("payload part {index}: {source}")]
    Packet {
        index: usize,
        #[source]
        source: PacketError,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn body(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frames, &mut out);
        out
    }

    #[test]
    fn spec_examples() {
        assert_eq!(
            decode(b"4hello\x1e2\x1e4world", 10).unwrap(),
            vec![
                Packet::Message("hello".into()),
                Packet::Ping(String::new()),
                Packet::Message("world".into()),
            ]
        );
        assert_eq!(
            decode(b"4hello\x1ebAQIDBA==", 10).unwrap(),
            vec![
                Packet::Message("hello".into()),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            ]
        );
    }

    #[test]
    fn mixed_text_and_binary_round_trip() {
        let packets = vec![
            Packet::Message("2[\"é€😀\"]".into()),
            Packet::Binary(Bytes::from_static(&[0, 0x1e, 0xff, b'b'])),
            Packet::Ping("probe".into()),
            Packet::Binary(Bytes::new()),
            Packet::Noop,
            Packet::Binary(Bytes::from_static(b"hello world")),
            Packet::Close,
        ];
        let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
        let encoded = body(&frames);
        assert_eq!(decode(&encoded, packets.len()).unwrap(), packets);
    }

    #[test]
    fn encode_wire_form() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        assert_eq!(body(&frames), b"4hello\x1ebAQIDBA==".to_vec());
        assert_eq!(body(&[Frame::message("x")]), b"4x".to_vec());
        assert!(body(&[]).is_empty());
    }

    #[test]
    fn encode_appends_to_an_existing_body() {
        let mut out = Vec::new();
        encode([&Frame::message("a")], &mut out);
        encode([&Frame::message("b"), &Packet::Noop.encode()], &mut out);
        assert_eq!(out, b"4a\x1e4b\x1e6".to_vec());
    }

    #[test]
    fn single_packet_body() {
        assert_eq!(decode(b"5", 1).unwrap(), vec![Packet::Upgrade]);
    }

    #[test]
    fn too_many_packets() {
        assert_eq!(
            decode(b"4a\x1e4b\x1e4c", 2),
            Err(PayloadError::TooManyPackets { max: 2 })
        );
        assert_eq!(decode(b"4a\x1e4b\x1e4c", 3).unwrap().len(), 3);
        assert_eq!(
            decode(b"4a", 0),
            Err(PayloadError::TooManyPackets { max: 0 })
        );
        let many = vec![SEPARATOR; 100_000];
        assert_eq!(
            decode(&many, 16),
            Err(PayloadError::EmptyPacket { index: 0 })
        );
        let many = "2\x1e".repeat(100_000);
        assert_eq!(
            decode(many.as_bytes(), 16),
            Err(PayloadError::TooManyPackets { max: 16 })
        );
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(decode(b"", 10), Err(PayloadError::EmptyPacket { index: 0 }));
        assert_eq!(
            decode(b"4a\x1e", 10),
            Err(PayloadError::EmptyPacket { index: 1 })
        );
        assert_eq!(
            decode(b"4a\x1e\x1e4b", 10),
            Err(PayloadError::EmptyPacket { index: 1 })
        );
        assert!(matches!(
            decode(b"4a\x1e4\xff\xfe", 10),
            Err(PayloadError::InvalidUtf8(_))
        ));
        // A truncated multi-byte character.
        assert!(matches!(
            decode("4é".as_bytes().split_last().unwrap().1, 10),
            Err(PayloadError::InvalidUtf8(_))
        ));
        assert_eq!(
            decode(b"4a\x1e9", 10),
            Err(PayloadError::Packet {
                index: 1,
                source: PacketError::UnknownType('9')
            })
        );
        assert!(matches!(
            decode(b"4a\x1eb%%%", 10),
            Err(PayloadError::Packet {
                index: 1,
                source: PacketError::Base64(_)
            })
        ));
    }

    /// Any packet a polling body can carry: text payloads without the separator (the
    /// format has no escape for it; the reference has the same limit), and binary.
    fn packet() -> impl Strategy<Value = Packet> {
        let payload = "[^\\x1e]{0,12}";
        prop_oneof![
            payload.prop_map(Packet::Open),
            Just(Packet::Close),
            payload.prop_map(Packet::Ping),
            payload.prop_map(Packet::Pong),
            payload.prop_map(Packet::Message),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(|d| Packet::Binary(Bytes::from(d))),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
        ]
    }

    /// Bodies for the no-panic property: arbitrary bytes, bytes from the format's own
    /// alphabet, and valid bodies with a few bytes changed.
    fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
        let alphabet = prop::sample::select(b"0123456bAQID=+/-\x1e\x00\xff\xc3\xa9 ".to_vec());
        let valid = prop::collection::vec(packet(), 1..4).prop_map(|packets| {
            let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
            body(&frames)
        });
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..48),
            prop::collection::vec(alphabet.clone(), 0..24),
            (
                valid,
                prop::collection::vec((any::<prop::sample::Index>(), alphabet, 0..3u8), 1..4)
            )
                .prop_map(|(mut body, edits)| {
                    for (at, b, op) in edits {
                        match op {
                            0 => body.insert(at.index(body.len() + 1), b),
                            1 if !body.is_empty() => {
                                let i = at.index(body.len());
                                body[i] = b;
                            }
                            _ if !body.is_empty() => {
                                body.remove(at.index(body.len()));
                            }
                            _ => {}
                        }
                    }
                    body
                }),
        ]
    }

    proptest! {
        #[test]
        fn bodies_round_trip(packets in prop::collection::vec(packet(), 1..8)) {
            let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
            prop_assert_eq!(decode(&body(&frames), packets.len()).unwrap(), packets);
        }

        #[test]
        fn no_panic_on_arbitrary_bodies(input in hostile_body(), max in 0..6usize) {
            if let Ok(packets) = decode(&input, max) {
                // What decodes re-encodes into a body that decodes to the same packets.
                let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
                prop_assert_eq!(decode(&body(&frames), packets.len()).unwrap(), packets);
            }
        }
    }
}
