//! Only the Redis message codecs of the daemon's `cluster`: the pub/sub adapter's
//! (`format`) and the streams adapter's (`message`), with the answers they build (see the
//! crate documentation for why they are mounted from the daemon's source).

// Relative to this file's directory, `fuzz/src/`.
#[path = "../../src/cluster/answer.rs"]
pub mod answer;
#[path = "../../src/cluster/format.rs"]
pub mod format;
#[path = "../../src/cluster/message.rs"]
pub mod message;
