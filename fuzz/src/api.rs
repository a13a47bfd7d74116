//! Only the API token list of the daemon's `api`, which the config's validation checks
//! (see the crate documentation for why it is mounted from the daemon's source).

// Relative to this file's directory, `fuzz/src/`.
#[path = "../../src/api/tokens.rs"]
pub mod tokens;

pub use tokens::Tokens;
