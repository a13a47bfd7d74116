//! The presence messages between iorelay nodes: msgpack ([`rmp_serde`], fields by name)
//! on the pub/sub channel [`channel`], which no Node adapter reads.
//!
//! Every message is an [`Envelope`]: the format version, the sending node's id, its
//! sequence number, and a [`Body`]. A node numbers its [`Body::Changes`] 1, 2, 3…; its
//! other messages carry the number of the last one sent, so that a receiver that sees a
//! number it did not expect knows it missed something and asks for a snapshot.
//!
//! Everything read is hostile: [`decode`] refuses a message over its byte bound, bad
//! msgpack, another version, and names longer than [`MAX_NAME`]; declared list lengths
//! never allocate ahead of the data (serde caps its size hints), and the node table
//! bounds how much it keeps ([`super::roster`]).

use serde::{Deserialize, Serialize};

/// The format's version; a message of another is dropped.
pub const VERSION: u8 = 1;

/// Longest node id, namespace, room, socket id or user name, in bytes.
pub const MAX_NAME: usize = 512;

/// The channel of the presence messages for channel prefix `key`: outside the Node
/// adapters' `<key>#<nsp>#…` channels and patterns, which begin with `<key>#`.
pub fn channel(key: &str) -> String {
    format!("{key}-iorelay#presence#")
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`VERSION`].
    pub v: u8,
    /// The sender's node id.
    pub node: String,
    /// The sender's sequence number (see the module doc).
    pub seq: u64,
    /// What it says.
    pub body: Body,
}

/// What a node says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// Its sockets joined or left rooms, in this order.
    Changes(Vec<Change>),
    /// It is alive (every heartbeat interval).
    Beat,
    /// All its memberships as of `seq` (at start, and when asked).
    Snapshot(Vec<Membership>),
    /// The receivers should each send their snapshot (a node that starts, reconnects,
    /// or missed changes).
    Ask,
    /// It stops: its members left.
    Bye,
}

/// A socket of the sender in a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Namespace.
    pub nsp: String,
    /// Room.
    pub room: String,
    /// Socket id.
    pub id: String,
    /// Display name.
    pub user: Option<String>,
}

/// A socket of the sender joined (`join`) or left a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Joined (`true`) or left.
    pub join: bool,
    /// Who, where.
    pub m: Membership,
}

/// Why a message was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Bad {
    /// Over the byte bound.
    #[error("a presence message of {0} bytes is over the bound")]
    TooLarge(usize),
    /// Not msgpack of an envelope.
    #[error("an undecodable presence message: {0}")]
    Undecodable(String),
    /// Another format version.
    #[error("a presence message of version {0}")]
    Version(u8),
    /// A name over [`MAX_NAME`] or empty.
    #[error("a presence message with a bad name")]
    Name,
}

impl Envelope {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("an envelope of strings and numbers serializes")
    }
}

/// Read a message of at most `max` bytes.
pub fn decode(bytes: &[u8], max: usize) -> Result<Envelope, Bad> {
    if bytes.len() > max {
        return Err(Bad::TooLarge(bytes.len()));
    }
    let env: Envelope =
        rmp_serde::from_slice(bytes).map_err(|e| Bad::Undecodable(e.to_string()))?;
    if env.v != VERSION {
        return Err(Bad::Version(env.v));
    }
    let named = |s: &str| !s.is_empty() && s.len() <= MAX_NAME;
    let sound = |m: &Membership| {
        named(&m.nsp)
            && named(&m.room)
            && named(&m.id)
            && m.user.as_deref().is_none_or(|u| u.len() <= MAX_NAME)
    };
    let ok = named(&env.node)
        && match &env.body {
            Body::Changes(changes) => changes.iter().all(|c| sound(&c.m)),
            Body::Snapshot(members) => members.iter().all(sound),
            Body::Beat | Body::Ask | Body::Bye => true,
        };
    if !ok {
        return Err(Bad::Name);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(room: &str, id: &str) -> Membership {
        Membership {
            nsp: "/".into(),
            room: room.into(),
            id: id.into(),
            user: Some("ann".into()),
        }
    }

    fn envelope(body: Body) -> Envelope {
        Envelope {
            v: VERSION,
            node: "a1b2c3".into(),
            seq: 7,
            body,
        }
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = [
            Body::Changes(vec![
                Change {
                    join: true,
                    m: member("r", "s1"),
                },
                Change {
                    join: false,
                    m: member("r", "s1"),
                },
            ]),
            Body::Beat,
            Body::Snapshot(vec![member("r", "s1"), member("q", "s2")]),
            Body::Ask,
            Body::Bye,
        ];
        for body in bodies {
            let env = envelope(body);
            assert_eq!(decode(&env.encode(), 1 << 20), Ok(env));
        }
    }

    #[test]
    fn the_channel_is_outside_the_node_adapters_patterns() {
        let c = channel("socket.io");
        assert_eq!(c, "socket.io-iorelay#presence#");
        assert!(!c.starts_with("socket.io#"));
    }

    #[test]
    fn hostile_messages_are_refused() {
        let big = envelope(Body::Beat).encode();
        assert_eq!(decode(&big, 4), Err(Bad::TooLarge(big.len())));
        assert!(matches!(
            decode(b"\xc1not msgpack", 1 << 20),
            Err(Bad::Undecodable(_))
        ));
        assert!(matches!(decode(&[], 1 << 20), Err(Bad::Undecodable(_))));
        let mut other = envelope(Body::Beat);
        other.v = 9;
        assert_eq!(decode(&other.encode(), 1 << 20), Err(Bad::Version(9)));
        let mut long = member("r", "s");
        long.room = "x".repeat(MAX_NAME + 1);
        let env = envelope(Body::Snapshot(vec![long]));
        assert_eq!(decode(&env.encode(), 1 << 20), Err(Bad::Name));
        let mut anonymous = envelope(Body::Bye);
        anonymous.node = String::new();
        assert_eq!(decode(&anonymous.encode(), 1 << 20), Err(Bad::Name));
    }

    #[test]
    fn a_huge_declared_count_does_not_allocate_ahead_of_the_data() {
        // A map of 4 fields whose `body` claims a snapshot of 2^32-1 members and ends.
        let mut bytes = rmp_serde::to_vec_named(&envelope(Body::Ask)).unwrap();
        let at = bytes.windows(4).position(|w| w == b"body").unwrap() + 4;
        bytes.truncate(at);
        bytes.extend_from_slice(b"\x81\xa8snapshot\xdd\xff\xff\xff\xff");
        assert!(matches!(decode(&bytes, 1 << 20), Err(Bad::Undecodable(_))));
    }
}
