//! The bus's contract: the [`Adapter`] trait and the values that cross it ([`Recipient`],
//! [`Target`], [`Pick`], [`Member`], [`RoomCount`]). Every implementation imports this file and it
//! imports none of them; the relay sees the bus only through it.

use std::sync::Arc;

pub use super::wire::Stamp;
use crate::engine::{BoxFuture, Outgoing, Session};

/// A socket as the bus sees it: who it is, and where its packets go.
#[derive(Debug)]
pub struct Recipient {
    /// The Socket.IO socket id (what the client sees as `socket.id`).
    pub id: Arc<str>,
    /// Display name from the CONNECT auth payload, if any.
    pub user: Option<Arc<str>>,
    /// The Engine.IO session that carries it.
    pub session: Arc<Session>,
}

/// A room with its member count: one entry of `$rooms`, the admin API's rooms and the
/// worker status document, serialized as `{"room":R,"count":N}` in all three.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomCount {
    /// The room's name.
    pub room: Arc<str>,
    /// Its members (host-wide on a multi-process bus).
    pub count: usize,
}

/// A member of a room, as listed by `$members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Socket id.
    pub id: Arc<str>,
    /// Display name, if any.
    pub user: Option<Arc<str>>,
}

/// Who a broadcast reaches within a namespace.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Members of any of these rooms; empty means every socket of the namespace.
    pub rooms: Vec<Arc<str>>,
    /// Leave this socket out (the sender, when it gets no echo).
    pub except: Option<Arc<str>>,
}

/// Which of this process's sockets a backend's emit reaches within a namespace (the
/// server API's `rooms`, `sockets` and `except`).
#[derive(Debug, Clone, Default)]
pub struct Pick {
    /// Members of any of these rooms.
    pub rooms: Vec<Arc<str>>,
    /// These sockets by id. With no `rooms` and no `sockets`: every socket.
    pub sockets: Vec<Arc<str>>,
    /// Leave out the members of these rooms, and the sockets with these ids.
    pub except: Vec<Arc<str>>,
}

/// Whether a room shows in listings ([`Adapter::rooms`], [`Adapter::room_count`]). Rooms
/// named `$…` are the relay's own (clients can never join such a name): one holds every
/// socket of a namespace so that its host-wide connection count is a room count. They are
/// joined, replicated and counted like any room, but never listed.
pub fn is_listed(room: &str) -> bool {
    !room.starts_with('$')
}

/// The result of removing a socket: the rooms it left, with their remaining counts.
pub type Departures = Vec<(Arc<str>, usize)>;

/// Called for each member of a lost peer: namespace, the member, a room it was in, and
/// that room's remaining host-wide count.
pub type DepartureHook = Box<dyn Fn(&str, &Member, &str, usize) + Send + Sync>;

/// A stamped broadcast that arrived from another process, as the record hook sees it.
#[derive(Debug)]
pub struct Stamped<'a> {
    /// The namespace.
    pub nsp: &'a str,
    /// Who it reaches here.
    pub target: &'a Target,
    /// Who accepted it, and when.
    pub stamp: Stamp,
    /// The packet as the origin delivered it.
    pub item: &'a Outgoing,
}

/// Called for each stamped broadcast that arrives from another process, before it is
/// delivered: returns whether the hook delivered it to this process's sockets itself
/// (it may need to, to send them something else, as an offset of its own); if not,
/// the bus delivers `item` as it came.
pub type RecordHook = Box<dyn Fn(&Stamped<'_>) -> bool + Send + Sync>;

/// A socket that dropped and whose client may come back for it (connection state
/// recovery), as the processes of a host tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkRecord {
    /// Namespace.
    pub nsp: Arc<str>,
    /// The socket.
    pub member: Member,
    /// Its rooms (the relay's own `$…` ones too).
    pub rooms: Vec<Arc<str>>,
    /// When it dropped, ms since the Unix epoch.
    pub dropped_ms: u64,
}

/// Whom a delivery reached, in the terms of [`Target`] and [`Pick`] together (what the
/// recovery log keeps of each event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    /// Members of any of these rooms.
    pub rooms: Vec<Arc<str>>,
    /// These sockets. With no `rooms` and no `ids`: every socket of the namespace.
    pub ids: Vec<Arc<str>>,
    /// Not the members of these rooms.
    pub except_rooms: Vec<Arc<str>>,
    /// Not these sockets.
    pub except_ids: Vec<Arc<str>>,
}

impl Audience {
    /// Who a relayed broadcast reached.
    pub fn of_target(target: &Target) -> Audience {
        Audience {
            rooms: target.rooms.clone(),
            except_ids: target.except.iter().cloned().collect(),
            ..Audience::default()
        }
    }

    /// Who a server API emit reached.
    pub fn of_pick(pick: &Pick) -> Audience {
        Audience {
            rooms: pick.rooms.clone(),
            ids: pick.sockets.clone(),
            except_rooms: pick.except.clone(),
            except_ids: pick.except.clone(),
        }
    }

    /// Whether socket `id`, a member of `rooms`, was reached.
    pub fn reaches(&self, id: &str, rooms: &std::collections::BTreeSet<Arc<str>>) -> bool {
        if self.except_ids.iter().any(|x| &**x == id)
            || self.except_rooms.iter().any(|r| rooms.contains(r))
        {
            return false;
        }
        (self.rooms.is_empty() && self.ids.is_empty())
            || self.ids.iter().any(|x| &**x == id)
            || self.rooms.iter().any(|r| rooms.contains(r))
    }
}

/// An event a process keeps for connection state recovery, as it hands it to a new
/// peer (which has none of the events from before it started).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Namespace.
    pub nsp: Arc<str>,
    /// Whom it reached.
    pub audience: Audience,
    /// Who accepted it, and when.
    pub stamp: Stamp,
    /// The packet as delivered.
    pub frames: Vec<crate::engine::Frame>,
}

/// An event of a room's history (or a namespace's, `room` none), as a process hands it to
/// a new peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Namespace.
    pub nsp: Arc<str>,
    /// The room; none for the namespace's broadcasts to all.
    pub room: Option<Arc<str>>,
    /// Who accepted it, and when.
    pub stamp: Stamp,
    /// The event name.
    pub name: Arc<str>,
    /// Its arguments, a JSON array with binary placeholders.
    pub args: Arc<str>,
    /// Its binary attachments.
    pub attachments: Vec<bytes::Bytes>,
}

/// What a process keeps that a new one (a restarted worker) has none of: the sockets it
/// keeps parked and the events it keeps for recovery, and the rooms' history.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// Parked sockets.
    pub parks: Vec<ParkRecord>,
    /// Events kept for recovery.
    pub logged: Vec<Logged>,
    /// History events.
    pub recorded: Vec<Recorded>,
}

/// What a new link's snapshot sends after the memberships.
pub type RecoverySource = Box<dyn Fn() -> Kept + Send + Sync>;

/// What the other processes say about the sockets that connection state recovery keeps.
#[derive(Debug)]
pub enum Parking<'a> {
    /// A socket dropped and may come back.
    Parked(&'a ParkRecord),
    /// A socket of theirs joined a room: it is live there (restored, if it was parked).
    Joined {
        /// Namespace.
        nsp: &'a str,
        /// Socket id.
        id: &'a str,
    },
    /// An event they keep (sent to a new process, after the snapshot): keep it too.
    Logged(&'a Logged),
    /// An event of their history (sent to a new process, after the snapshot): keep it
    /// too.
    Recorded(&'a Recorded),
    /// Its client came back to them as `user`: close it here if it is here as that user.
    Evict {
        /// Namespace.
        nsp: &'a str,
        /// Socket id.
        id: &'a str,
        /// The user the client came back as.
        user: Option<&'a str>,
    },
}

/// Called for each [`Parking`] message from another process.
pub type ParkingHook = Box<dyn Fn(Parking<'_>) + Send + Sync>;

/// A client's event as it goes to the other nodes of a cluster.
#[derive(Debug)]
pub struct Published<'a> {
    /// The event name.
    pub name: &'a str,
    /// Its arguments as delivered, binaries as numbered placeholders.
    pub args: &'a [&'a serde_json::value::RawValue],
    /// The binaries.
    pub attachments: &'a [bytes::Bytes],
    /// Members of any of these rooms; empty: every socket of the namespace.
    pub rooms: &'a [Arc<str>],
    /// Not these sockets.
    pub except: &'a [&'a str],
    /// Its stamp on this host, when it has one (namespaces with `recovery` or
    /// `history`).
    pub stamp: Option<crate::relay::history::EventId>,
}

/// Where a process's events go to reach the other nodes of a cluster.
pub trait Publish: Send + Sync + std::fmt::Debug + 'static {
    /// Send `event` of namespace `nsp` to the other nodes.
    fn publish(&self, nsp: &str, event: &Published<'_>);
}

/// Room membership and fan-out for every namespace.
pub trait Adapter: Send + Sync + 'static {
    /// Register a connected socket in a namespace.
    fn add_socket(&self, nsp: &str, socket: Arc<Recipient>);

    /// Forget a socket and leave all its rooms; returns the rooms left and what remains
    /// in each.
    fn remove_socket(&self, nsp: &str, id: &str) -> BoxFuture<'_, Departures>;

    /// Put a socket in a room; returns the room's member count afterwards.
    fn join(&self, nsp: &str, room: &str, id: &str) -> BoxFuture<'_, usize>;

    /// Take a socket out of a room; returns the room's member count afterwards.
    fn leave(&self, nsp: &str, room: &str, id: &str) -> BoxFuture<'_, usize>;

    /// Deliver `item` to every socket `target` names; returns how many copies were
    /// queued here. Never waits: a full socket queue is that socket's problem (see
    /// [`Session::send`]).
    fn broadcast(&self, nsp: &str, target: &Target, item: &Outgoing) -> usize;

    /// [`broadcast`](Adapter::broadcast) an event that the other processes record in
    /// their history under `stamp` (this process records it itself).
    fn broadcast_stamped(
        &self,
        nsp: &str,
        target: &Target,
        item: &Outgoing,
        stamp: Stamp,
    ) -> usize {
        let _ = stamp;
        self.broadcast(nsp, target, item)
    }

    /// Register what to do with stamped broadcasts from other processes.
    fn set_record_hook(&self, _hook: RecordHook) {}

    /// [`remove_socket`](Adapter::remove_socket) a socket that its client may come back
    /// for: the other processes keep it as `park` says ([`Parking::Parked`]).
    fn remove_parked_socket(&self, park: &ParkRecord) -> BoxFuture<'_, Departures> {
        self.remove_socket(&park.nsp, &park.member.id)
    }

    /// Tell the other processes of a socket parked here that was not this process's (a
    /// member of a process that died), so that its client may come back to any of them.
    fn share_park(&self, _park: &ParkRecord) {}

    /// Register where a new link's snapshot finds what recovery keeps here.
    fn set_recovery_source(&self, _source: RecoverySource) {}

    /// Ask the other processes to close socket `id` if they hold it as `user` (its
    /// client came back here); each that does parks it.
    fn evict(&self, _nsp: &str, _id: &str, _user: Option<&str>) {}

    /// Whether another process of this host holds socket `id` (as a member of some
    /// room): one that an eviction reaches. Other nodes' sockets are not.
    fn held_on_host(&self, nsp: &str, id: &str) -> bool {
        self.held_elsewhere(nsp, id)
    }

    /// Whether another process has socket `id` as a member of some room.
    fn held_elsewhere(&self, _nsp: &str, _id: &str) -> bool {
        false
    }

    /// Register what to do with the other processes' [`Parking`] messages.
    fn set_parking_hook(&self, _hook: ParkingHook) {}

    /// Register where events go to reach the other nodes of a cluster.
    fn set_publisher(&self, _publisher: Arc<dyn Publish>) {}

    /// Send a client's event to the other nodes of a cluster (nowhere without one). The
    /// host's processes get it through [`broadcast`](Adapter::broadcast), not here.
    fn publish(&self, _nsp: &str, _event: &Published<'_>) {}

    /// Deliver to this process's sockets only (announcements every process makes for
    /// itself, such as the leaves of a lost peer's members).
    fn broadcast_local(&self, nsp: &str, target: &Target, item: &Outgoing) -> usize {
        self.broadcast(nsp, target, item)
    }

    /// Deliver to this process's sockets that `pick` selects, each once; returns the
    /// copies queued. Every process runs it for its own sockets (the server API asks
    /// each worker), so it never crosses to other processes.
    fn deliver_local(&self, nsp: &str, pick: &Pick, item: &Outgoing) -> usize;

    /// How many rooms of the namespace have members ([`is_listed`] ones).
    fn room_count(&self, nsp: &str) -> usize;

    /// Register what to do when members elsewhere vanish without saying so (their
    /// process died): called once per (namespace, member, room, remaining count).
    fn set_departure_hook(&self, _hook: DepartureHook) {}

    /// The namespace's rooms with their member counts, sorted by name ([`is_listed`]
    /// ones).
    fn rooms(&self, nsp: &str) -> BoxFuture<'_, Vec<RoomCount>>;

    /// The members of a room.
    fn members(&self, nsp: &str, room: &str) -> BoxFuture<'_, Vec<Member>>;

    /// The member count of a room.
    fn count(&self, nsp: &str, room: &str) -> BoxFuture<'_, usize>;
}
