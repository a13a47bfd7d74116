//! Connection state recovery across the nodes of a cluster (`[cluster] adapter =
//! "redis-streams"`): what the relay needs of the cluster's store ([`Remote`]), and which
//! of the stream's broadcasts a client that comes back on another node missed
//! ([`replay`]).
//!
//! # Sessions
//! Each node keeps its live sockets' sessions in Redis (as the Node adapter keeps its
//! dropped ones, under `sio:session:<pid>`), refreshed while they live and rewritten when
//! their rooms change ([`sessions`](super::sessions) does it), so that a
//! node killed outright leaves them behind; a socket that drops is kept for its window, one
//! that leaves for good is forgotten. A client whose pid this host did not mint, or one
//! this host minted whose session another node now keeps, takes its session from there
//! ([`Remote::take`]: looked at, checked as any input, then `GETDEL`: one claim only).
//!
//! # What it missed
//! Every event an iorelay node writes to the stream carries its host stamp (origin and
//! sequence); every entry a node reads from the stream is delivered with the stamp
//! [`entry_stamp`] (origin [`STREAM_ORIGIN`], the entry id as its sequence), in stream
//! order. So a client's offset — its old host's position — says both which of that host's
//! events it had (their stamps) and up to which entry it had the other nodes' (the stream
//! origin's sequence). The stream from a little before that entry on, filtered by the
//! session's rooms, gives the rest; this host's own entries and those it has not delivered
//! yet are left to the live delivery that follows ([`replay`]); what this process
//! delivered while the stream was read comes from its own log. A trim of the stream past
//! the scan's start is told by `XINFO STREAM`'s `max-deleted-entry-id` (Redis 7 and later;
//! an older Redis does not tell it, and the client may then miss what was trimmed).
//!
//! Limits: an event of the old host that never reached the stream (the host was killed
//! before its write) is lost; the old host's server API emits carry no stamp and are
//! replayed after the last entry it had from others, which may repeat one; a socket that
//! connected or changed rooms less than a refresh before its node was killed comes back
//! as it was at the last write; a client that comes back elsewhere while its old node
//! lives and has not noticed the drop leaves a copy there until the ping timeout, whose
//! park then rewrites the session with the old rooms.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::adapter::Stamp;
use crate::engine::BoxFuture;
use crate::relay::history::{EventId, Position};

/// The origin of the stream's entries in positions.
pub const STREAM_ORIGIN: u32 = u32::MAX;

/// Bits of an entry's sequence kept in its stamp (an entry id is `<ms>-<seq>`; Redis
/// numbers the entries of one millisecond from 0).
const SEQ_BITS: u32 = 20;

/// How far before the last entry a client had from others its old host's events may lie
/// in the stream (they are written after their delivery, which may trail the stream by
/// the time the host's own links take).
pub const SLACK_MS: u64 = 5_000;

/// Most bytes of broadcasts read back for one claim.
pub const MAX_SCAN_BYTES: usize = 32 << 20;

/// A stream entry id, `(ms, seq)`.
pub type EntryId = (u64, u64);

/// The sequence number of entry `id` in [`STREAM_ORIGIN`]'s order.
pub fn entry_seq(id: EntryId) -> u64 {
    (id.0 << SEQ_BITS) | id.1.min((1 << SEQ_BITS) - 1)
}

/// The stamp of entry `id`, delivered as read from the stream.
pub fn entry_stamp(id: EntryId) -> Stamp {
    Stamp {
        origin: STREAM_ORIGIN,
        seq: entry_seq(id),
        at_ms: id.0,
    }
}

/// A session as kept in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its namespace.
    pub nsp: String,
    /// Its socket id.
    pub sid: String,
    /// Its private id (the key it is kept under).
    pub pid: String,
    /// Its rooms (the relay's own `$…` ones too).
    pub rooms: BTreeSet<String>,
    /// Its display name.
    pub user: Option<String>,
    /// When it first connected, ms since the epoch.
    pub since_ms: u64,
    /// The node that wrote it.
    pub node: String,
}

/// A broadcast read back from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its entry id.
    pub id: EntryId,
    /// The node that wrote it.
    pub node: String,
    /// Its stamp on that node, when an iorelay node wrote it.
    pub stamp: Option<EventId>,
    /// The event name.
    pub name: String,
    /// Its arguments, a JSON array with binaries as numbered placeholders.
    pub args: String,
    /// The binaries.
    pub attachments: Vec<Bytes>,
    /// Members of any of these rooms (none: everyone).
    pub rooms: Vec<String>,
    /// Not the members of these rooms.
    pub except: Vec<String>,
}

/// Which sessions a claim takes.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// Of this namespace.
    pub nsp: &'a str,
    /// Of this user.
    pub user: Option<&'a str>,
    /// Only another node's.
    pub foreign: bool,
}

impl Want<'_> {
    /// Whether `session`, kept under `pid` and read as node `node`, is one to take: what
    /// Redis holds is checked as anything from the network (a socket id as this relay
    /// makes them, kept under its own pid).
    pub fn takes(&self, session: &Session, pid: &str, node: &str) -> bool {
        let sid_ok = (1..=64).contains(&session.sid.len())
            && session
                .sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        sid_ok
            && session.pid == pid
            && session.nsp == self.nsp
            && session.user.as_deref() == self.user
            && !(self.foreign && session.node == node)
    }
}

/// Why the cluster could not give a session's missed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Some of them were trimmed from the stream (or more than can be replayed).
    Gap,
    /// Redis could not be asked.
    Down(String),
}

/// The cluster's store of sessions and its stream, as the relay uses them.
pub trait Remote: Send + Sync + std::fmt::Debug + 'static {
    /// This node's id.
    fn node(&self) -> &str;
    /// Keep `session` for `ttl` (replacing what was kept under its pid). Not waited for;
    /// returns whether it was queued (a full queue drops it).
    fn keep(&self, session: &Session, ttl: Duration) -> bool;
    /// Forget the session kept under `pid`. Not waited for.
    fn forget(&self, pid: &str);
    /// Take the session kept under `pid`, if it is one that `want` takes (looked at with
    /// `GET`, then taken with `GETDEL`: no one else can take it after); any other is left
    /// where it is, for whoever it is (a Node server's, another user's, this node's own).
    fn take<'a>(
        &'a self,
        pid: &'a str,
        want: Want<'a>,
    ) -> BoxFuture<'a, Result<Option<Session>, Unavailable>>;
    /// The broadcasts of `nsp` in the stream from entry `from` on, in order, and the id of
    /// the last entry read (`from` when there was none); [`Unavailable::Gap`] past
    /// [`MAX_SCAN_BYTES`] of them.
    fn since<'a>(
        &'a self,
        nsp: &'a str,
        from: EntryId,
    ) -> BoxFuture<'a, Result<(Vec<Logged>, EntryId), Unavailable>>;
}

/// Where a client's missed broadcasts start in the stream: a little before the last entry
/// it had from other nodes (`after`'s stream origin), or before it connected.
pub fn scan_from(after: &Position, since_ms: u64) -> EntryId {
    let ms = after
        .seen(STREAM_ORIGIN)
        .map_or(since_ms, |seq| (seq >> SEQ_BITS).max(since_ms));
    (ms.saturating_sub(SLACK_MS), 0)
}

/// Of `logged` (the stream from [`scan_from`] on), what the client of `session` missed and
/// this host will not deliver live: `after` is what the client says it saw (its old host's
/// position), `here` this process's position now (under its ledger), `node` this node.
pub fn replay<'a>(
    logged: &'a [Logged],
    session: &Session,
    after: &Position,
    here: &Position,
    node: &str,
) -> Vec<&'a Logged> {
    let had_from_others = after.seen(STREAM_ORIGIN).unwrap_or(0);
    let delivered_here = here.seen(STREAM_ORIGIN).unwrap_or(0);
    logged
        .iter()
        .filter(|e| reaches(e, session))
        .filter(|e| {
            let seq = entry_seq(e.id);
            if e.node == node {
                // This host's own: replayed if delivered here already (else it comes
                // live) and not had: by its stamp when the session was this host's too,
                // else when read after the offset on the old host.
                let had = match e.stamp {
                    Some(stamp) if session.node == node => after.has_seen(stamp),
                    _ => seq <= had_from_others,
                };
                return !had && e.stamp.is_none_or(|s| here.has_seen(s));
            }
            if seq > delivered_here {
                return false;
            }
            match e.stamp {
                Some(stamp) if e.node == session.node => !after.has_seen(stamp),
                _ => seq > had_from_others,
            }
        })
        .collect()
}

/// Whether a broadcast to `e`'s rooms reaches a member of the session's rooms (its own id
/// is one of them).
fn reaches(e: &Logged, session: &Session) -> bool {
    let member = |room: &String| session.sid == *room || session.rooms.contains(room);
    let included = e.rooms.is_empty() || e.rooms.iter().any(member);
    included && !e.except.iter().any(member)
}

/// A session's rooms as the relay keeps them.
pub fn rooms_of(session: &Session) -> BTreeSet<Arc<str>> {
    session
        .rooms
        .iter()
        .map(|r| Arc::from(r.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(id: EntryId, node: &str, stamp: Option<(u32, u64)>, rooms: &[&str]) -> Logged {
        Logged {
            id,
            node: node.into(),
            stamp: stamp.map(|(origin, seq)| EventId { origin, seq }),
            name: "m".into(),
            args: "[]".into(),
            attachments: Vec::new(),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            except: Vec::new(),
        }
    }

    fn position(pairs: &[(u32, u64)]) -> Position {
        let mut p = Position::default();
        for &(origin, seq) in pairs {
            p.advance(EventId { origin, seq });
        }
        p
    }

    #[test]
    fn entry_stamps_keep_the_stream_order() {
        let ids = [(5, 0), (5, 1), (5, 9999), (6, 0), (1_800_000_000_000, 3)];
        for pair in ids.windows(2) {
            assert!(entry_seq(pair[0]) < entry_seq(pair[1]));
        }
        assert_eq!(entry_stamp((7, 2)).at_ms, 7);
        let after = position(&[(STREAM_ORIGIN, entry_seq((90_000, 1)))]);
        assert_eq!(scan_from(&after, 10_000), (85_000, 0));
        assert_eq!(scan_from(&Position::default(), 10_000), (5_000, 0));
    }

    #[test]
    fn the_replay_is_what_the_client_missed_and_will_not_get_live() {
        let session = Session {
            nsp: "/".into(),
            sid: "s1".into(),
            pid: "p".into(),
            rooms: ["r".to_owned()].into(),
            user: None,
            since_ms: 0,
            node: "A".into(),
        };
        let stream = vec![
            logged((100, 0), "C", None, &["r"]), // had on A (before its offset)
            logged((101, 0), "A", Some((1, 10)), &["r"]), // had on A (stamp seen)
            logged((102, 0), "A", Some((1, 11)), &["r"]), // missed on A
            logged((103, 0), "C", None, &["other"]), // not its rooms
            logged((104, 0), "C", None, &["r"]), // missed: after the offset
            logged((105, 0), "B", Some((2, 7)), &["s1"]), // this host's, delivered here
            logged((106, 0), "B", Some((2, 8)), &[]), // this host's, not delivered yet
            logged((107, 0), "C", None, &[]),    // not delivered here yet: comes live
        ];
        let after = position(&[(1, 10), (STREAM_ORIGIN, entry_seq((100, 0)))]);
        let here = position(&[(2, 7), (STREAM_ORIGIN, entry_seq((104, 0)))]);
        let ids: Vec<EntryId> = replay(&stream, &session, &after, &here, "B")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![(102, 0), (104, 0), (105, 0)]);
    }
}
