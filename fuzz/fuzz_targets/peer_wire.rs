//! The worker bus wire format (`adapter::wire::Message::decode`), read the way a link reads
//! it (`adapter::peer`: bytes appended to one buffer as they arrive, every whole frame taken
//! off after each read, the first error ending the link). No input panics; the buffer never
//! holds more than one frame's bounded length beyond what arrived, whatever a length field
//! announces; and every message that decodes re-encodes to exactly the bytes it came from
//! (the encoding is canonical), which decode to the same message.
//!
//! The first byte picks the size of each read (1..=256), so that frames split anywhere
//! are explored; the rest is the stream.

#![no_main]

use bytes::BytesMut;
use iorelay_fuzz::adapter::wire::{MAX_FRAME, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    let mut buf = BytesMut::new();
    // How much of `stream` has been taken off as whole frames.
    let mut taken = 0;
    'link: for read in stream.chunks(step) {
        buf.extend_from_slice(read);
        loop {
            let before = buf.len();
            match Message::decode(&mut buf) {
                Ok(Some(msg)) => {
                    let raw = &stream[taken..taken + before - buf.len()];
                    taken += raw.len();
                    let mut again = BytesMut::new();
                    msg.encode(&mut again);
                    assert_eq!(&again[..], raw, "{msg:?} re-encodes differently");
                    let back = Message::decode(&mut again)
                        .expect("a re-encoded message decodes")
                        .expect("a re-encoded message is whole");
                    assert_eq!(back, msg);
                    assert!(again.is_empty());
                }
                Ok(None) => break,
                Err(_) => break 'link,
            }
        }
        // What a length field may make the reader reserve is one frame at most (doubled
        // by the buffer's growth), never what an unchecked `u32` would ask for.
        assert!(
            buf.capacity() <= 2 * (4 + MAX_FRAME + stream.len()),
            "capacity {} after {} bytes",
            buf.capacity(),
            stream.len()
        );
    }
});
