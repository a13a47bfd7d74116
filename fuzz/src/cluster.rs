//! Only the Redis message codec of the daemon's `cluster` (see the crate documentation
//! for why it is mounted from the daemon's source).

// Relative to this file's directory, `fuzz/src/`.
#[path = "../../src/cluster/format.rs"]
pub mod format;
