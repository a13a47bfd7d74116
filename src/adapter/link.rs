//! Why a link between relay processes ends: the one error type of
//! [`peer`](super::peer)'s links, kept apart so that the link code stays one screenful
//! shorter and the causes read in one place.

use super::wire::{VERSION, WireError};

/// Why a link ended other than by the peer closing it. Every one ends the link (and, on
/// the receiving side, drops the peer's replica once it has no other link): a peer that
/// broke the protocol once cannot be trusted with the rest of the stream.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Reading from the peer failed.
    #[error("reading from the peer failed: {0}")]
    Read(#[source] std::io::Error),
    /// Writing to the peer failed (it went away mid-write, typically).
    #[error("writing to the peer failed: {0}")]
    Write(#[source] std::io::Error),
    /// The peer sent a frame that does not decode.
    #[error("the peer sent a malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The peer's `Hello` names another wire version.
    #[error("the peer speaks wire version {0}, this process speaks {VERSION}")]
    Version(u16),
    /// The peer's first message was not `Hello`.
    #[error("the peer spoke before saying hello")]
    NoHello,
}
