//! Socket.IO packet texts (`socketio::packet::decode` and the payload accessors): no input
//! panics, and a packet that decodes re-encodes into a text that decodes to the same
//! packet, whose event or ack arguments can be read.
//!
//! The first byte picks the attachment cap (0..=15); the rest, if UTF-8 (an Engine.IO
//! MESSAGE always is), is the packet text.

#![no_main]

use iorelay_fuzz::socketio::packet::{self, Packet, PacketKind};
use libfuzzer_sys::fuzz_target;

fn raw(p: &Packet) -> Option<&str> {
    p.data.as_deref().map(|d| d.get())
}

fuzz_target!(|data: &[u8]| {
    let Some((&cap, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(p) = packet::decode(text, usize::from(cap & 0x0f)) else {
        return;
    };
    let encoded = p.encode();
    let again = packet::decode(&encoded, p.attachments.max(1)).expect("re-encoded packet decodes");
    assert_eq!(
        (
            again.kind,
            &again.nsp,
            again.id,
            again.attachments,
            raw(&again)
        ),
        (p.kind, &p.nsp, p.id, p.attachments, raw(&p)),
        "{text:?} -> {encoded:?}"
    );
    match p.kind {
        PacketKind::Event | PacketKind::BinaryEvent => {
            p.event().expect("a decoded event has a name");
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            p.ack_args().expect("a decoded ack has arguments");
        }
        PacketKind::Connect | PacketKind::Disconnect | PacketKind::ConnectError => {}
    }
});
