//! Binary attachment reassembly: a BINARY_EVENT or BINARY_ACK text packet followed by the
//! binary Engine.IO messages it announced.
//!
//! Owns the per-connection state machine "waiting for N more attachments" and its two
//! protocol errors (text while waiting, binary when nothing waits), as in the reference
//! `socket.io-parser` `Decoder.add`.
//!
//! Bounds what a pending packet holds as its parts arrive: given a byte budget (the
//! event size limit of its namespace), attachments past it are counted but dropped at
//! once, and the packet completes marked [`Complete::oversized`] for the caller to refuse.
//! A client that announces ten attachments and sends nine large ones therefore pins no
//! more than the budget; the deadline for the missing ones is the caller's (it owns the
//! clock), helped by [`Reassembler::started`].
//!
//! Does not own: parsing the text packet (see [`super::packet`], which already caps the
//! announced count at the configured maximum and checks every placeholder against it).
//! Placeholders are not substituted: the relay forwards the packet text and the
//! attachments as they came.

use bytes::Bytes;

use super::packet::Packet;

/// A packet with all of its attachments, in arrival order (placeholder `num` indexes them).
#[derive(Debug)]
pub struct Complete {
    pub packet: Packet,
    pub attachments: Vec<Bytes>,
    /// The packet and its attachments were over the byte budget: `attachments` is empty
    /// (they were dropped as they came) and the packet is to be refused, not acted on.
    pub oversized: bool,
}

/// Collects the attachments of at most one pending binary packet per connection.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The binary packet waiting for its attachments; `None` when idle.
    pending: Option<Pending>,
    /// How many binary packets started waiting so far.
    started: u64,
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
struct Pending {
    packet: Packet,
    /// The attachments kept (none once over budget).
    attachments: Vec<Bytes>,
    /// Attachments received, kept or not.
    received: usize,
    /// Bytes still allowed.
    left: usize,
    /// Over budget: attachments are dropped as they come.
    oversized: bool,
}

/// Capacity reserved up front for attachments: the count is already bounded by the
/// decoder, but a hand-built packet could announce any number, and reserving that much
/// would abort on allocation.
const PREALLOCATE: usize = 16;

impl Reassembler {
    /// A decoded text packet: `Some(Complete)` at once when it has no attachments; `None`
    /// when it starts waiting. A text packet while attachments are pending is an error,
    /// and drops the pending packet (the connection is to be closed anyway).
    pub fn text(&mut self, packet: Packet) -> Result<Option<Complete>, ReassemblyError> {
        self.text_within(packet, usize::MAX)
    }

    /// [`Reassembler::text`], with a budget of `max_bytes` for the packet's data text and
    /// its attachments together.
    pub fn text_within(
        &mut self,
        packet: Packet,
        max_bytes: usize,
    ) -> Result<Option<Complete>, ReassemblyError> {
        if let Some(pending) = self.pending.take() {
            return Err(ReassemblyError::TextWhileWaiting {
                missing: pending.packet.attachments.saturating_sub(pending.received),
            });
        }
        if !packet.kind.is_binary() || packet.attachments == 0 {
            return Ok(Some(Complete {
                packet,
                attachments: Vec::new(),
                oversized: false,
            }));
        }
        let text = packet.data.as_ref().map_or(0, |d| d.get().len());
        self.started = self.started.wrapping_add(1);
        self.pending = Some(Pending {
            attachments: Vec::with_capacity(packet.attachments.min(PREALLOCATE)),
            received: 0,
            left: max_bytes.saturating_sub(text),
            oversized: text > max_bytes,
            packet,
        });
        Ok(None)
    }

    /// A number that changes each time a binary packet starts waiting: a deadline set
    /// for one packet checks it to know that the same packet still waits.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// One binary Engine.IO message: an attachment of the pending packet. `Some(Complete)`
    /// with the last one. Binary with nothing pending is an error.
    pub fn binary(&mut self, data: Bytes) -> Result<Option<Complete>, ReassemblyError> {
        let pending = self
            .pending
            .as_mut()
            .ok_or(ReassemblyError::UnexpectedBinary)?;
        pending.received += 1;
        if !pending.oversized && data.len() <= pending.left {
            pending.left -= data.len();
            pending.attachments.push(data);
        } else if !pending.oversized {
            pending.oversized = true;
            pending.attachments = Vec::new();
        }
        if pending.received < pending.packet.attachments {
            return Ok(None);
        }
        Ok(self.pending.take().map(|p| Complete {
            packet: p.packet,
            attachments: p.attachments,
            oversized: p.oversized,
        }))
    }

    /// The namespace of the packet waiting for attachments.
    pub fn pending_nsp(&self) -> Option<&str> {
        self.pending.as_ref().map(|p| p.packet.nsp.as_str())
    }

    /// Bytes the pending packet holds (its attachments so far), 0 when idle.
    pub fn held(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |p| p.attachments.iter().map(Bytes::len).sum())
    }

    /// True while a binary packet waits for attachments.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }
}

/// A binary message out of sequence: a protocol violation by the peer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReassemblyError {
    #[error("text packet while {missing} attachment(s) are still expected")]
    TextWhileWaiting { missing: usize },
    #[error("binary message with no binary packet waiting for it")]
    UnexpectedBinary,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should stop loudly")]
mod tests {
    use proptest::prelude::*;

    use super::super::packet::proptests::{MAX, case, hostile_text};
    use super::super::packet::{PacketKind, decode};
    use super::*;

    fn text_packet(text: &str) -> Packet {
        decode(text, 10).unwrap()
    }

    #[test]
    fn plain_packets_complete_at_once() {
        let mut r = Reassembler::default();
        for text in ["0", "2[\"a\"]", "31[]", "1/a,"] {
            let done = r.text(text_packet(text)).unwrap().unwrap();
            assert!(done.attachments.is_empty());
            assert_eq!(done.packet.encode(), text);
            assert!(!r.is_waiting());
        }
    }

    #[test]
    fn binary_event_collects_its_attachments_in_order() {
        let mut r = Reassembler::default();
        let text =
            r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(r.text(text_packet(text)).unwrap().is_none());
        assert!(r.is_waiting());
        assert!(r.binary(Bytes::from_static(&[1, 2])).unwrap().is_none());
        assert!(r.is_waiting());
        let done = r.binary(Bytes::from_static(&[3, 4])).unwrap().unwrap();
        assert!(!r.is_waiting());
        assert_eq!(done.packet.kind, PacketKind::BinaryEvent);
        assert_eq!(done.packet.encode(), text);
        assert_eq!(
            done.attachments,
            [Bytes::from_static(&[1, 2]), Bytes::from_static(&[3, 4])]
        );
        // Idle again: the next packet goes through.
        assert!(r.text(text_packet("2[\"next\"]")).unwrap().is_some());
    }

    #[test]
    fn binary_ack_with_one_attachment() {
        let mut r = Reassembler::default();
        assert!(
            r.text(text_packet(r#"61-15["bar",{"_placeholder":true,"num":0}]"#))
                .unwrap()
                .is_none()
        );
        let done = r.binary(Bytes::new()).unwrap().unwrap();
        assert_eq!(done.packet.id, Some(15));
        assert_eq!(done.attachments, [Bytes::new()]);
    }

    #[test]
    fn text_while_waiting_is_an_error() {
        let mut r = Reassembler::default();
        r.text(text_packet(r#"52-["a"]"#)).unwrap();
        r.binary(Bytes::from_static(b"x")).unwrap();
        assert_eq!(
            r.text(text_packet("2[\"b\"]")).unwrap_err(),
            ReassemblyError::TextWhileWaiting { missing: 1 }
        );
        // The pending packet is dropped with the error.
        assert!(!r.is_waiting());
        assert_eq!(
            r.binary(Bytes::new()).unwrap_err(),
            ReassemblyError::UnexpectedBinary
        );
    }

    #[test]
    fn unexpected_binary_is_an_error() {
        let mut r = Reassembler::default();
        assert_eq!(
            r.binary(Bytes::from_static(b"x")).unwrap_err(),
            ReassemblyError::UnexpectedBinary
        );
        r.text(text_packet(r#"51-["a"]"#)).unwrap();
        r.binary(Bytes::new()).unwrap().unwrap();
        assert_eq!(
            r.binary(Bytes::new()).unwrap_err(),
            ReassemblyError::UnexpectedBinary
        );
    }

    #[test]
    fn hand_built_packets_cannot_exhaust_memory() {
        let mut r = Reassembler::default();
        let mut packet = text_packet(r#"51-["a"]"#);
        packet.attachments = usize::MAX;
        assert!(r.text(packet).unwrap().is_none());
        assert!(r.binary(Bytes::new()).unwrap().is_none());
        // A binary kind that announces none completes at once.
        let mut packet = text_packet(r#"51-["a"]"#);
        packet.attachments = 0;
        let mut r = Reassembler::default();
        assert!(r.text(packet).unwrap().is_some());
    }

    /// Issue 13, item 3: attachments over the budget are dropped as they arrive, not
    /// kept until the packet completes; the packet completes marked oversized.
    #[test]
    fn attachments_over_the_budget_are_dropped_as_they_arrive() {
        let mut r = Reassembler::default();
        let text = r#"53-["a",{"_placeholder":true,"num":0}]"#;
        let budget = 100;
        let before = r.started();
        assert!(r.text_within(text_packet(text), budget).unwrap().is_none());
        assert_ne!(r.started(), before);
        assert!(r.binary(Bytes::from(vec![0u8; 50])).unwrap().is_none());
        assert_eq!(r.held(), 50);
        assert!(r.binary(Bytes::from(vec![0u8; 60])).unwrap().is_none());
        assert_eq!(r.held(), 0, "nothing kept once over budget");
        let done = r.binary(Bytes::from(vec![0u8; 1])).unwrap().unwrap();
        assert!(done.oversized);
        assert!(done.attachments.is_empty());
        // Within the budget, nothing changes.
        assert!(r.text_within(text_packet(text), 1000).unwrap().is_none());
        for _ in 0..3 {
            r.binary(Bytes::from(vec![0u8; 50])).unwrap();
        }
        assert!(!r.is_waiting());
        // A data text over the budget alone is oversized too.
        assert!(
            r.text_within(text_packet(r#"51-["a"]"#), 3)
                .unwrap()
                .is_none()
        );
        assert!(r.binary(Bytes::new()).unwrap().unwrap().oversized);
    }

    /// One Engine.IO message as the connection hands it over.
    #[derive(Debug, Clone)]
    enum Message {
        Text(String),
        Binary(Vec<u8>),
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            hostile_text().prop_map(Message::Text),
            case().prop_map(|c| Message::Text(c.packet.encode())),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(Message::Binary),
        ]
    }

    proptest! {
        /// A valid packet followed by as many attachments as it announces comes out
        /// whole: the same packet, the attachments in order.
        #[test]
        fn packets_with_their_attachments_reassemble(
            case in case(),
            data in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), MAX),
        ) {
            let mut r = Reassembler::default();
            let text = case.packet.encode();
            let packet = decode(&text, MAX).unwrap();
            let attachments: Vec<Bytes> =
                data.into_iter().take(packet.attachments).map(Bytes::from).collect();
            let mut done = r.text(packet).unwrap();
            for (i, a) in attachments.iter().enumerate() {
                prop_assert!(done.is_none(), "complete before attachment {i}");
                prop_assert!(r.is_waiting());
                done = r.binary(a.clone()).unwrap();
            }
            let done = done.expect("complete after the last attachment");
            prop_assert!(!r.is_waiting());
            prop_assert_eq!(done.packet.encode(), text);
            prop_assert_eq!(done.attachments, attachments);
        }

        /// Any sequence of messages: no panic, and whatever completes holds exactly the
        /// attachments its packet announced.
        #[test]
        fn no_panic_on_any_message_sequence(
            messages in prop::collection::vec(message(), 0..12),
        ) {
            let mut r = Reassembler::default();
            for message in messages {
                let result = match message {
                    Message::Text(text) => match decode(&text, MAX) {
                        Ok(packet) => r.text(packet),
                        Err(_) => continue,
                    },
                    Message::Binary(data) => r.binary(Bytes::from(data)),
                };
                match result {
                    Ok(Some(done)) => {
                        let want = if done.packet.kind.is_binary() {
                            done.packet.attachments
                        } else {
                            0
                        };
                        prop_assert_eq!(done.attachments.len(), want);
                        prop_assert!(!r.is_waiting());
                    }
                    Ok(None) => prop_assert!(r.is_waiting()),
                    // Either error leaves the reassembler idle, ready for the next packet.
                    Err(_) => prop_assert!(!r.is_waiting()),
                }
            }
        }
    }
}
