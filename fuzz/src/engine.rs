//! Only the parts of the daemon's `engine` that the mounted code uses: the Engine.IO packet
//! and polling-payload codecs, and the origin and trusted-proxy lists that the config's
//! validation parses with (see the crate documentation for why they are mounted from the
//! daemon's source).

// Relative to this file's directory, `fuzz/src/`.
// The CORS helpers of this file serve the engine, not validation.
#[allow(dead_code, reason = "only Origins::parse is used here")]
#[path = "../../src/engine/origin.rs"]
pub mod origin;
#[path = "../../src/engine/packet.rs"]
pub mod packet;
#[path = "../../src/engine/payload.rs"]
pub mod payload;
#[path = "../../src/engine/proxy.rs"]
pub mod proxy;

pub use origin::Origins;
pub use packet::{Frame, Packet};
pub use proxy::TrustedProxies;
