//! What a session sends: the [`Outgoing`] item that the upper layer hands to
//! [`Session::send`](super::Session::send), and the pause before a paced one.
//!
//! Its own module because the session, its queue and its WebSocket outbox all carry
//! these items: kept here, each of them depends on it and none on the others for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Frame;

/// One item of a session's outbound queue. A group (a binary Socket.IO packet and its
/// attachments) is queued and written as a unit, so that a full queue never splits it.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// One encoded packet.
    Frame(Frame),
    /// Several packets that belong together, shared across recipients.
    Group(Arc<[Frame]>),
    /// One packet written on its own after a short pause ([`PACE`]), so that a client
    /// reading one WebSocket message per socket read still sees it apart from the packet
    /// before (used for the greeting right after CONNECT).
    Paced(Frame),
    /// One packet that a later item with the same key makes obsolete (such as a room's
    /// member count): a client that is behind gets the latest of each key rather than
    /// every one, so that a storm of them cannot make it a slow consumer (see
    /// [`Session::send`](super::Session::send)). The key is shared by every recipient.
    Latest(Arc<str>, Frame),
    /// A WebSocket pong answering the client's WebSocket ping. Only a WebSocket carries
    /// it: it has no Engine.IO frames, so a polling response skips it.
    Pong(Bytes),
}

/// The pause before a [`Outgoing::Paced`] packet.
pub const PACE: Duration = Duration::from_millis(2);

impl Outgoing {
    /// The item for `frames` that arrived from elsewhere (another worker): one frame, one
    /// frame with a `latest` key, or a group.
    pub fn from_frames(mut frames: Vec<Frame>, latest: Option<String>) -> Outgoing {
        match (frames.len(), latest) {
            (1, Some(key)) => Outgoing::Latest(Arc::from(key), frames.remove(0)),
            (1, None) => Outgoing::Frame(frames.remove(0)),
            _ => Outgoing::Group(Arc::from(frames)),
        }
    }

    /// Its size on the wire.
    pub fn bytes(&self) -> usize {
        match self {
            Outgoing::Pong(data) => data.len(),
            _ => self.frames().iter().map(Frame::len).sum(),
        }
    }

    /// The key of a [`Outgoing::Latest`] item.
    pub fn latest_key(&self) -> Option<&Arc<str>> {
        match self {
            Outgoing::Latest(key, _) => Some(key),
            _ => None,
        }
    }

    /// The frames of this item, in order.
    pub fn frames(&self) -> &[Frame] {
        match self {
            Outgoing::Frame(f) | Outgoing::Paced(f) | Outgoing::Latest(_, f) => {
                std::slice::from_ref(f)
            }
            Outgoing::Group(g) => g,
            Outgoing::Pong(_) => &[],
        }
    }
}
