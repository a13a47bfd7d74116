//! Only the Engine.IO packet and polling-payload codecs of the daemon's `engine` (see the
//! crate documentation for why they are mounted from the daemon's source).

// Relative to this file's directory, `fuzz/src/`.
#[path = "../../src/engine/packet.rs"]
pub mod packet;
#[path = "../../src/engine/payload.rs"]
pub mod payload;

pub use packet::{Frame, Packet};
