//! Engine.IO v4 packets: the type digit plus payload of one text message, and the encoded
//! [`Frame`] that the transports write.
//!
//! Owns: decoding one text packet (`"4hello"`, `"2probe"`, `"bAQID"`), encoding a packet
//! once into a [`Frame`] whose bytes are shared by every clone (fan-out encodes once).
//!
//! Does not own: polling bodies (several packets joined by `\x1e`, see
//! [`super::payload`]), raw WebSocket binary frames (the transport maps those to
//! [`Packet::Binary`] itself), size limits (the transports bound a message before it gets
//! here), or what a payload means (the OPEN JSON, Socket.IO text inside MESSAGE).
//!
//! Leniency follows the reference parser (`engine.io-parser` `decodePacket`): a payload on
//! CLOSE, UPGRADE or NOOP is accepted and dropped, because the reference accepts it and it
//! carries nothing; an unknown or missing type is an error.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Standard-alphabet base64, as the reference clients write it. Padding is optional on
/// decode: some encoders drop it, and it carries no information. Anything else outside the
/// alphabet is an error (the Node server's `Buffer.from` would silently skip it; we would
/// rather reject than relay bytes the sender did not mean).
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decoded Engine.IO v4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0` + handshake JSON; only the server sends it.
    Open(String),
    /// `1`: the peer closes the session.
    Close,
    /// `2` + optional payload (`"probe"` during an upgrade).
    Ping(String),
    /// `3` + optional payload, echoing the ping's.
    Pong(String),
    /// `4` + text: a message for the layer above.
    Message(String),
    /// A binary message: a raw WebSocket binary frame, or `b` + base64 in text.
    Binary(Bytes),
    /// `5`: completes the polling → WebSocket upgrade.
    Upgrade,
    /// `6`: closes a pending poll during an upgrade.
    Noop,
}

impl Packet {
    /// Decode one text packet: type digit + payload (`"4hello"`, `"2probe"`, `"3"`, `"6"`).
    ///
    /// A text starting with `b` is a base64 binary message, as in a polling body; the
    /// reference server accepts that form on WebSocket too (clients with `forceBase64`
    /// send it), so it is decoded here once for both transports.
    pub fn decode_text(text: &str) -> Result<Packet, PacketError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(PacketError::Empty)?;
        // `chars.as_str()` is the rest after the first char, whatever its width.
        let payload = chars.as_str();
        Ok(match kind {
            '0' => Packet::Open(payload.to_owned()),
            '1' => Packet::Close,
            '2' => Packet::Ping(payload.to_owned()),
            '3' => Packet::Pong(payload.to_owned()),
            '4' => Packet::Message(payload.to_owned()),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            'b' => Packet::Binary(Bytes::from(BASE64.decode(payload)?)),
            other => return Err(PacketError::UnknownType(other)),
        })
    }

    /// Encode for the wire, once; the result is cheap to clone for fan-out.
    ///
    /// Binary becomes a raw [`Frame::Binary`] (WebSocket form); the polling encoder turns it
    /// into `b` + base64.
    pub fn encode(&self) -> Frame {
        match self {
            Packet::Open(json) => Frame::text_with('0', json),
            Packet::Close => Frame::Text(Utf8Bytes::from_static("1")),
            Packet::Ping(data) => Frame::text_with('2', data),
            Packet::Pong(data) => Frame::text_with('3', data),
            Packet::Message(text) => Frame::message(text),
            Packet::Binary(data) => Frame::Binary(data.clone()),
            Packet::Upgrade => Frame::Text(Utf8Bytes::from_static("5")),
            Packet::Noop => Frame::Text(Utf8Bytes::from_static("6")),
        }
    }
}

/// An encoded outbound Engine.IO packet, ready for either transport. Cloning shares bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A text packet, type digit included.
    Text(Utf8Bytes),
    /// A binary message, raw (no type byte, as WebSocket carries it in v4).
    Binary(Bytes),
}

impl Frame {
    /// A MESSAGE packet carrying `text` (`"4"` + text), encoded once.
    pub fn message(text: &str) -> Frame {
        Frame::text_with('4', text)
    }

    /// Byte length on a WebSocket (text incl. type char; binary raw).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Binary(data) => data.len(),
        }
    }

    /// True for an empty binary frame; a text frame always holds its type digit.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn text_with(kind: char, payload: &str) -> Frame {
        let mut out = String::with_capacity(payload.len().saturating_add(1));
        out.push(kind);
        out.push_str(payload);
        Frame::Text(Utf8Bytes::from(out))
    }
}

/// Why a text packet could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in binary packet: {0}")]
    Base64(#[from] base64::DecodeError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text(frame: &Frame) -> &str {
        match frame {
            Frame::Text(t) => t.as_str(),
            Frame::Binary(_) => panic!("expected a text frame, got {frame:?}"),
        }
    }

    fn all_packets() -> Vec<Packet> {
        vec![
            Packet::Open(r#"{"sid":"abc","upgrades":["websocket"]}"#.to_owned()),
            Packet::Close,
            Packet::Ping(String::new()),
            Packet::Ping("probe".to_owned()),
            Packet::Pong(String::new()),
            Packet::Pong("probe".to_owned()),
            Packet::Message(String::new()),
            Packet::Message("hello".to_owned()),
            Packet::Message("2[\"é€😀\"]".to_owned()),
            Packet::Upgrade,
            Packet::Noop,
        ]
    }

    #[test]
    fn every_text_packet_round_trips() {
        for packet in all_packets() {
            let frame = packet.encode();
            let decoded = Packet::decode_text(text(&frame)).unwrap();
            assert_eq!(decoded, packet);
        }
    }

    #[test]
    fn binary_encodes_raw_and_base64_text_decodes() {
        let data = Bytes::from_static(&[1, 2, 3, 4]);
        assert_eq!(
            Packet::Binary(data.clone()).encode(),
            Frame::Binary(data.clone())
        );
        assert_eq!(
            Packet::decode_text("bAQIDBA==").unwrap(),
            Packet::Binary(data.clone())
        );
        // Padding is optional.
        assert_eq!(
            Packet::decode_text("bAQIDBA").unwrap(),
            Packet::Binary(data)
        );
        assert_eq!(
            Packet::decode_text("b").unwrap(),
            Packet::Binary(Bytes::new())
        );
    }

    #[test]
    fn wire_forms() {
        assert_eq!(text(&Packet::Ping("probe".into()).encode()), "2probe");
        assert_eq!(text(&Packet::Pong(String::new()).encode()), "3");
        assert_eq!(text(&Packet::Close.encode()), "1");
        assert_eq!(text(&Packet::Upgrade.encode()), "5");
        assert_eq!(text(&Packet::Noop.encode()), "6");
        assert_eq!(text(&Frame::message("2[\"a\"]")), "42[\"a\"]");
        assert_eq!(
            Frame::message("abc"),
            Packet::Message("abc".into()).encode()
        );
    }

    #[test]
    fn frame_len() {
        assert_eq!(Frame::message("é").len(), 3);
        assert!(!Frame::message("").is_empty());
        assert_eq!(Frame::Binary(Bytes::from_static(&[0; 7])).len(), 7);
        assert!(Frame::Binary(Bytes::new()).is_empty());
    }

    #[test]
    fn clones_share_bytes() {
        let frame = Frame::message("shared");
        let copy = frame.clone();
        let (Frame::Text(a), Frame::Text(b)) = (&frame, &copy) else {
            panic!("text frames expected");
        };
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }

    #[test]
    fn payload_on_bare_types_is_dropped_like_the_reference() {
        assert_eq!(Packet::decode_text("1junk").unwrap(), Packet::Close);
        assert_eq!(Packet::decode_text("5x").unwrap(), Packet::Upgrade);
        assert_eq!(Packet::decode_text("6probe").unwrap(), Packet::Noop);
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(Packet::decode_text(""), Err(PacketError::Empty));
        assert_eq!(Packet::decode_text("7"), Err(PacketError::UnknownType('7')));
        assert_eq!(
            Packet::decode_text("x4"),
            Err(PacketError::UnknownType('x'))
        );
        assert_eq!(
            Packet::decode_text("é4"),
            Err(PacketError::UnknownType('é'))
        );
        assert_eq!(
            Packet::decode_text("\u{1e}4"),
            Err(PacketError::UnknownType('\u{1e}'))
        );
        assert!(matches!(
            Packet::decode_text("b!!!!"),
            Err(PacketError::Base64(_))
        ));
        // URL-safe alphabet is not the standard one.
        assert!(matches!(
            Packet::decode_text("b-_8="),
            Err(PacketError::Base64(_))
        ));
        assert!(matches!(
            Packet::decode_text("bA"),
            Err(PacketError::Base64(_))
        ));
    }

    /// Any text packet: the payload kinds with strings that lean on the type digits,
    /// the separator, multi-byte and control characters.
    fn text_packet() -> impl Strategy<Value = Packet> {
        let payload = prop_oneof![any::<String>(), "[0-6b\\x1e\\x00 é😀\"{}]{0,12}",];
        prop_oneof![
            payload.clone().prop_map(Packet::Open),
            Just(Packet::Close),
            payload.clone().prop_map(Packet::Ping),
            payload.clone().prop_map(Packet::Pong),
            payload.prop_map(Packet::Message),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
        ]
    }

    proptest! {
        #[test]
        fn text_packets_round_trip(packet in text_packet()) {
            let frame = packet.encode();
            prop_assert_eq!(Packet::decode_text(text(&frame)).unwrap(), packet);
        }

        #[test]
        fn binary_round_trips_raw_and_as_base64(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let packet = Packet::Binary(Bytes::from(data));
            let Frame::Binary(raw) = packet.encode() else {
                panic!("binary packets encode as binary frames");
            };
            prop_assert_eq!(Packet::Binary(raw.clone()), packet.clone());
            // The text form a polling body or a `forceBase64` client sends.
            let text = format!("b{}", BASE64.encode(&raw));
            prop_assert_eq!(Packet::decode_text(&text).unwrap(), packet);
        }

        #[test]
        fn no_panic_on_arbitrary_text(
            input in prop_oneof![any::<String>(), "[0-7bAQ=+/_\\-é😀\\x1e\\x00 ]{0,16}"],
        ) {
            if let Ok(packet) = Packet::decode_text(&input) {
                // Whatever decodes encodes, and a text packet decodes back to itself.
                if let Frame::Text(t) = packet.encode() {
                    prop_assert_eq!(Packet::decode_text(t.as_str()).unwrap(), packet);
                }
            }
        }
    }
}
