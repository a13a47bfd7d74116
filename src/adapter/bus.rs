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

/// Called for each stamped broadcast that arrives from another process: namespace, the
/// target's rooms (empty: the namespace), the stamp, and the frames as delivered.
pub type RecordHook = Box<dyn Fn(&str, &[String], Stamp, &[crate::engine::Frame]) + Send + Sync>;

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
