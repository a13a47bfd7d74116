//! Only the admin listener's allowed `Host` names of the daemon's `http`, which the
//! config's validation checks (see the crate documentation for why it is mounted from the
//! daemon's source).

// Relative to this file's directory, `fuzz/src/`.
#[path = "../../src/http/host.rs"]
pub mod host;
