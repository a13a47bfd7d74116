//! Engine.IO polling bodies (`engine::payload::decode`, and through it every text packet
//! decoder): no input panics, and a body that decodes re-encodes into one that decodes to
//! the same packets.
//!
//! The first byte picks the packet cap (0..=15), so that the cap's edge is explored too;
//! the rest is the body.

#![no_main]

use iorelay_fuzz::engine::payload;
use iorelay_fuzz::engine::{Frame, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cap, body)) = data.split_first() else {
        return;
    };
    let max = usize::from(cap & 0x0f);
    let Ok(packets) = payload::decode(body, max) else {
        return;
    };
    assert!(!packets.is_empty() && packets.len() <= max);
    let frames: Vec<Frame> = packets.iter().map(Packet::encode).collect();
    let mut again = Vec::new();
    payload::encode(&frames, &mut again);
    let back = payload::decode(&again, packets.len()).expect("a re-encoded body decodes");
    assert_eq!(back, packets);
});
