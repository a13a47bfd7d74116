//! Only the worker bus wire codec of the daemon's `adapter` (see the crate documentation
//! for why it is mounted from the daemon's source).

// Relative to this file's directory, `fuzz/src/`.
#[path = "../../src/adapter/wire.rs"]
pub mod wire;
