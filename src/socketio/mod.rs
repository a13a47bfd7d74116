//! Socket.IO v5 packets: parsing, encoding and binary attachment reassembly.
//!
//! Pure code over strings and bytes — no I/O, no knowledge of rooms or sessions — so that
//! it can be unit-tested and fuzzed in isolation. It imports nothing from the rest of the
//! crate, and must keep it so: the `cargo fuzz` targets (`fuzz/`, see `fuzz/src/lib.rs`)
//! compile these files on their own.

pub mod binary;
pub mod packet;

pub use binary::Reassembler;
pub use packet::{Packet, PacketError, PacketKind};
