//! The receive path of one polling connection: a body through `engine::payload::decode`,
//! each MESSAGE through `socketio::packet::decode`, binary packets and their attachments
//! through `socketio::Reassembler`. No input panics, and whatever completes carries exactly
//! the attachments its packet announced.
//!
//! The input is split at `0xff` bytes (never valid UTF-8, so never inside a body) into
//! several polling bodies fed to one reassembler in turn, as successive POSTs would be.

#![no_main]

use iorelay_fuzz::engine::{Packet, payload};
use iorelay_fuzz::socketio::{Reassembler, packet};
use libfuzzer_sys::fuzz_target;

/// The relay's default cap on announced attachments is far higher; a small one makes the
/// fuzzer meet the limit.
const MAX_ATTACHMENTS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let mut reassembler = Reassembler::default();
    for body in data.split(|&b| b == 0xff) {
        let Ok(packets) = payload::decode(body, 16) else {
            continue;
        };
        for engine_packet in packets {
            let result = match engine_packet {
                Packet::Message(text) => match packet::decode(&text, MAX_ATTACHMENTS) {
                    Ok(p) => reassembler.text(p),
                    Err(_) => continue,
                },
                Packet::Binary(data) => reassembler.binary(data),
                _ => continue,
            };
            match result {
                Ok(Some(done)) => {
                    let want = if done.packet.kind.is_binary() {
                        done.packet.attachments
                    } else {
                        0
                    };
                    assert_eq!(done.attachments.len(), want);
                    assert!(!reassembler.is_waiting());
                }
                Ok(None) => assert!(reassembler.is_waiting()),
                Err(_) => assert!(!reassembler.is_waiting()),
            }
        }
    }
});
