//! The in-process bus: sockets and room memberships of this process, in memory.
//!
//! One lock per namespace; fan-out holds it for reading only while it queues the shared
//! item on each recipient (`Session::send`, which appends or refuses, never waits).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use super::bus::{
    Adapter, Departures, Member, Pick, Publish, Published, Recipient, RoomCount, Target, is_listed,
};
use crate::engine::{BoxFuture, Outgoing};

/// One namespace's sockets and rooms.
#[derive(Debug, Default)]
struct Space {
    /// Every connected socket, by id.
    sockets: HashMap<Arc<str>, Arc<Recipient>>,
    /// Room name → its members. Empty rooms are removed.
    rooms: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Recipient>>>,
    /// Socket id → the rooms it is in, to leave them all on disconnect.
    memberships: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

/// One socket's memberships: namespace, socket id, display name, rooms.
pub type Membership = (String, Arc<str>, Option<Arc<str>>, Vec<Arc<str>>);

/// Sockets and rooms of this process only.
#[derive(Debug, Default)]
pub struct LocalAdapter {
    /// Namespace name → its space. Namespaces appear on first use.
    spaces: RwLock<HashMap<String, Arc<RwLock<Space>>>>,
    /// Where events go to reach other nodes (a cluster's).
    publisher: std::sync::OnceLock<Arc<dyn Publish>>,
}

impl LocalAdapter {
    /// An empty bus.
    pub fn new() -> LocalAdapter {
        LocalAdapter::default()
    }

    fn space(&self, nsp: &str) -> Arc<RwLock<Space>> {
        if let Some(s) = self.spaces.read().get(nsp) {
            return s.clone();
        }
        self.spaces
            .write()
            .entry(nsp.to_owned())
            .or_default()
            .clone()
    }

    /// Every membership of this process: (namespace, socket id, user, rooms), for a peer
    /// that needs the full picture.
    pub fn snapshot(&self) -> Vec<Membership> {
        let spaces: Vec<(String, Arc<RwLock<Space>>)> = self
            .spaces
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        for (nsp, space) in spaces {
            let s = space.read();
            for (id, rooms) in &s.memberships {
                let user = s.sockets.get(id).and_then(|r| r.user.clone());
                out.push((
                    nsp.clone(),
                    id.clone(),
                    user,
                    rooms.iter().cloned().collect(),
                ));
            }
        }
        out
    }

    /// The display name of a local socket.
    pub fn user_of(&self, nsp: &str, id: &str) -> Option<Arc<str>> {
        self.space(nsp)
            .read()
            .sockets
            .get(id)
            .and_then(|r| r.user.clone())
    }

    /// The names of the rooms with local members.
    pub fn room_names(&self, nsp: &str) -> Vec<Arc<str>> {
        self.space(nsp).read().rooms.keys().cloned().collect()
    }

    pub(crate) fn remove_now(&self, nsp: &str, id: &str) -> Departures {
        let space = self.space(nsp);
        let mut s = space.write();
        s.sockets.remove(id);
        let rooms = s.memberships.remove(id).unwrap_or_default();
        let mut left = Vec::with_capacity(rooms.len());
        for room in rooms {
            let remaining = match s.rooms.get_mut(&room) {
                Some(members) => {
                    members.remove(id);
                    members.len()
                }
                None => 0,
            };
            if remaining == 0 {
                s.rooms.remove(&room);
            }
            left.push((room, remaining));
        }
        left.sort();
        left
    }

    /// Join; returns the room's count and whether the room was empty here before.
    pub(crate) fn join_now(&self, nsp: &str, room: &str, id: &str) -> (usize, bool) {
        let space = self.space(nsp);
        let mut s = space.write();
        let Some(socket) = s.sockets.get(id).cloned() else {
            return (s.rooms.get(room).map_or(0, HashMap::len), false);
        };
        let existing = s.rooms.get_key_value(room).map(|(k, _)| k.clone());
        let created = existing.is_none();
        let room: Arc<str> = existing.unwrap_or_else(|| Arc::from(room));
        s.memberships
            .entry(socket.id.clone())
            .or_default()
            .insert(room.clone());
        let members = s.rooms.entry(room).or_default();
        members.insert(socket.id.clone(), socket);
        (members.len(), created)
    }

    /// Leave; returns the room's remaining count and whether this emptied it here.
    pub(crate) fn leave_now(&self, nsp: &str, room: &str, id: &str) -> (usize, bool) {
        let space = self.space(nsp);
        let mut s = space.write();
        if let Some(rooms) = s.memberships.get_mut(id) {
            rooms.remove(room);
        }
        let remaining = match s.rooms.get_mut(room) {
            Some(members) => {
                members.remove(id);
                members.len()
            }
            None => return (0, false),
        };
        if remaining == 0 {
            s.rooms.remove(room);
        }
        (remaining, remaining == 0)
    }
}

impl Adapter for LocalAdapter {
    fn set_publisher(&self, publisher: Arc<dyn Publish>) {
        let _ = self.publisher.set(publisher);
    }

    fn publish(&self, nsp: &str, event: &Published<'_>) {
        if let Some(p) = self.publisher.get() {
            p.publish(nsp, event);
        }
    }

    fn add_socket(&self, nsp: &str, socket: Arc<Recipient>) {
        let space = self.space(nsp);
        space.write().sockets.insert(socket.id.clone(), socket);
    }

    fn remove_socket(&self, nsp: &str, id: &str) -> BoxFuture<'_, Departures> {
        let left = self.remove_now(nsp, id);
        Box::pin(async move { left })
    }

    fn join(&self, nsp: &str, room: &str, id: &str) -> BoxFuture<'_, usize> {
        let (n, _) = self.join_now(nsp, room, id);
        Box::pin(async move { n })
    }

    fn leave(&self, nsp: &str, room: &str, id: &str) -> BoxFuture<'_, usize> {
        let (n, _) = self.leave_now(nsp, room, id);
        Box::pin(async move { n })
    }

    fn broadcast(&self, nsp: &str, target: &Target, item: &Outgoing) -> usize {
        let space = self.space(nsp);
        let s = space.read();
        // The sender, looked up once: the loops compare pointers instead of reading
        // every member's id (a cache miss per member in a large room).
        let except = target
            .except
            .as_ref()
            .and_then(|e| s.sockets.get(e))
            .map(Arc::as_ptr);
        let skip = |r: &Arc<Recipient>| except == Some(Arc::as_ptr(r));
        let mut delivered = 0;
        let mut deliver = |r: &Recipient| {
            if r.session.send(item.clone()) {
                delivered += 1;
            }
        };
        match target.rooms.as_slice() {
            [] => {
                for r in s.sockets.values() {
                    if !skip(r) {
                        deliver(r);
                    }
                }
            }
            [room] => {
                if let Some(members) = s.rooms.get(room) {
                    for r in members.values() {
                        if !skip(r) {
                            deliver(r);
                        }
                    }
                }
            }
            rooms => {
                // A socket in several of the rooms gets the packet once.
                let mut seen: HashSet<&Arc<str>> = HashSet::new();
                for room in rooms {
                    let Some(members) = s.rooms.get(room) else {
                        continue;
                    };
                    for (id, r) in members {
                        if !skip(r) && seen.insert(id) {
                            deliver(r);
                        }
                    }
                }
            }
        }
        delivered
    }

    fn deliver_local(&self, nsp: &str, pick: &Pick, item: &Outgoing) -> usize {
        let space = self.space(nsp);
        let s = space.read();
        let mut chosen: HashMap<&Arc<str>, &Arc<Recipient>> = HashMap::new();
        if pick.rooms.is_empty() && pick.sockets.is_empty() {
            chosen.extend(s.sockets.iter());
        }
        for room in &pick.rooms {
            if let Some(members) = s.rooms.get(room) {
                chosen.extend(members.iter());
            }
        }
        for id in &pick.sockets {
            if let Some((id, r)) = s.sockets.get_key_value(id) {
                chosen.insert(id, r);
            }
        }
        for left_out in &pick.except {
            chosen.remove(left_out);
            if let Some(members) = s.rooms.get(left_out) {
                for id in members.keys() {
                    chosen.remove(id);
                }
            }
        }
        chosen
            .values()
            .filter(|r| r.session.send(item.clone()))
            .count()
    }

    fn room_count(&self, nsp: &str) -> usize {
        let space = self.space(nsp);
        let s = space.read();
        s.rooms.keys().filter(|r| is_listed(r)).count()
    }

    fn rooms(&self, nsp: &str) -> BoxFuture<'_, Vec<RoomCount>> {
        let list = self
            .rooms_now(nsp)
            .into_iter()
            .filter(|(room, _)| is_listed(room))
            .map(|(room, count)| RoomCount { room, count })
            .collect();
        Box::pin(async move { list })
    }

    fn members(&self, nsp: &str, room: &str) -> BoxFuture<'_, Vec<Member>> {
        let list = self.members_now(nsp, room);
        Box::pin(async move { list })
    }

    fn count(&self, nsp: &str, room: &str) -> BoxFuture<'_, usize> {
        let n = self.count_now(nsp, room);
        Box::pin(async move { n })
    }
}

impl LocalAdapter {
    /// The namespace's rooms with their local counts, sorted by name.
    pub(crate) fn rooms_now(&self, nsp: &str) -> Vec<(Arc<str>, usize)> {
        let space = self.space(nsp);
        let s = space.read();
        let sorted: BTreeMap<&Arc<str>, usize> =
            s.rooms.iter().map(|(k, v)| (k, v.len())).collect();
        sorted.into_iter().map(|(k, n)| (k.clone(), n)).collect()
    }

    /// A room's local members, sorted by id.
    pub(crate) fn members_now(&self, nsp: &str, room: &str) -> Vec<Member> {
        let space = self.space(nsp);
        let mut list: Vec<Member> = {
            let s = space.read();
            s.rooms
                .get(room)
                .map(|m| {
                    m.values()
                        .map(|r| Member {
                            id: r.id.clone(),
                            user: r.user.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// A room's local member count.
    pub(crate) fn count_now(&self, nsp: &str, room: &str) -> usize {
        self.space(nsp)
            .read()
            .rooms
            .get(room)
            .map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CloseReason;
    use crate::testutil::{drain, item, recipient};

    #[tokio::test]
    async fn rooms_count_and_list_members() {
        let bus = LocalAdapter::new();
        let (a, b) = (recipient("a", 8), recipient("b", 8));
        bus.add_socket("/", a.clone());
        bus.add_socket("/", b.clone());
        assert_eq!(bus.join("/", "r", "a").await, 1);
        assert_eq!(bus.join("/", "r", "b").await, 2);
        assert_eq!(
            bus.join("/", "r", "b").await,
            2,
            "joining twice counts once"
        );
        assert_eq!(bus.join("/", "s", "b").await, 1);
        assert_eq!(
            bus.join("/other", "r", "a").await,
            0,
            "namespaces are apart"
        );
        let rooms = bus.rooms("/").await;
        assert_eq!(
            rooms
                .iter()
                .map(|r| (&*r.room, r.count))
                .collect::<Vec<_>>(),
            vec![("r", 2), ("s", 1)],
            "sorted by name with counts"
        );
        let members = bus.members("/", "r").await;
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].user.as_deref(), Some("user-a"));
        assert_eq!(bus.leave("/", "r", "a").await, 1);
        let left = bus.remove_socket("/", "b").await;
        assert_eq!(left, vec![(Arc::from("r"), 0), (Arc::from("s"), 0)]);
        assert!(bus.rooms("/").await.is_empty(), "empty rooms disappear");
    }

    /// A `$…` room (the relay's own) is counted like any room but never listed.
    #[tokio::test]
    async fn dollar_rooms_count_but_are_not_listed() {
        let bus = LocalAdapter::new();
        let a = recipient("a", 8);
        bus.add_socket("/", a.clone());
        assert_eq!(bus.join("/", "$all", "a").await, 1);
        assert_eq!(bus.join("/", "r", "a").await, 1);
        assert_eq!(bus.count("/", "$all").await, 1);
        assert_eq!(bus.room_count("/"), 1);
        let rooms = bus.rooms("/").await;
        assert_eq!(rooms.len(), 1);
        assert_eq!(&*rooms[0].room, "r");
    }

    #[tokio::test]
    async fn broadcast_reaches_each_member_once_except_the_sender() {
        let bus = LocalAdapter::new();
        let (a, b, c) = (recipient("a", 8), recipient("b", 8), recipient("c", 8));
        for r in [&a, &b, &c] {
            bus.add_socket("/", r.clone());
        }
        for (room, id) in [("r", "a"), ("r", "b"), ("s", "b"), ("s", "a")] {
            bus.join("/", room, id).await;
        }
        let target = Target {
            rooms: vec![Arc::from("r"), Arc::from("s")],
            except: Some(Arc::from("a")),
        };
        assert_eq!(bus.broadcast("/", &target, &item("2[\"x\"]")), 1);
        assert_eq!(
            drain(&b),
            vec!["42[\"x\"]"],
            "in both rooms, delivered once"
        );
        assert!(drain(&a).is_empty(), "the sender is left out");
        assert!(drain(&c).is_empty(), "not a member");
        bus.broadcast("/", &Target::default(), &item("2[\"all\"]"));
        assert_eq!(
            drain(&c),
            vec!["42[\"all\"]"],
            "no rooms: the whole namespace"
        );
    }

    #[tokio::test]
    async fn a_slow_reader_is_dropped_and_the_others_get_everything() {
        let bus = LocalAdapter::new();
        let (slow, fast) = (recipient("slow", 4), recipient("fast", 4));
        bus.add_socket("/", slow.clone());
        bus.add_socket("/", fast.clone());
        bus.join("/", "r", "slow").await;
        bus.join("/", "r", "fast").await;
        let target = Target {
            rooms: vec![Arc::from("r")],
            except: None,
        };
        let mut received = Vec::new();
        for i in 0..100 {
            bus.broadcast("/", &target, &item(&format!("2[{i}]")));
            // The fast reader keeps up; the slow one never reads.
            received.extend(drain(&fast));
        }
        assert_eq!(received.len(), 100);
        assert_eq!(received[99], "42[99]");
        assert!(slow.session.is_closed());
        assert_eq!(slow.session.close_reason(), Some(CloseReason::SlowConsumer));
        assert!(!fast.session.is_closed());
    }
}
