//! What this process knows of the other processes' rooms: per peer (node id), a replica
//! of its memberships — socket ids and display names, never its sockets.
//!
//! Owns the bookkeeping only: applying a peer's `Join`/`Leave`/`Gone`, answering
//! host-wide counts and listings together with the local side, and handing back every
//! membership of a peer that is gone. Reading and writing links is
//! [`peer`](super::peer)'s job.
//!
//! One lock for all peers: it is taken for writing per membership change of a peer and
//! for reading per query, never during a fan-out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use super::bus::Member;

/// Member id → display name.
type Names = HashMap<Arc<str>, Option<Arc<str>>>;

/// One namespace of a peer's replica.
#[derive(Debug, Default)]
struct NsReplica {
    /// Room → member id → display name.
    rooms: HashMap<Arc<str>, Names>,
    /// Member id → its rooms.
    memberships: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl NsReplica {
    /// Returns the room when it was empty before.
    fn join(&mut self, room: Arc<str>, id: Arc<str>, user: Option<Arc<str>>) -> Option<Arc<str>> {
        self.memberships
            .entry(id.clone())
            .or_default()
            .insert(room.clone());
        let created = (!self.rooms.contains_key(&room)).then(|| room.clone());
        self.rooms.entry(room).or_default().insert(id, user);
        created
    }

    /// Returns the room when this emptied it.
    fn leave(&mut self, room: &str, id: &str) -> Option<Arc<str>> {
        if let Some(rooms) = self.memberships.get_mut(id) {
            rooms.remove(room);
            if rooms.is_empty() {
                self.memberships.remove(id);
            }
        }
        let members = self.rooms.get_mut(room)?;
        members.remove(id);
        if !members.is_empty() {
            return None;
        }
        self.rooms.remove_entry(room).map(|(room, _)| room)
    }

    /// Returns the rooms this emptied.
    fn gone(&mut self, id: &str) -> Vec<Arc<str>> {
        let mut emptied = Vec::new();
        for room in self.memberships.remove(id).unwrap_or_default() {
            if let Some(members) = self.rooms.get_mut(&room) {
                members.remove(id);
                if members.is_empty() {
                    self.rooms.remove(&room);
                    emptied.push(room);
                }
            }
        }
        emptied
    }
}

/// A peer's memberships, by namespace.
type Replica = HashMap<String, NsReplica>;

/// One membership of a peer that is gone: the member left `room` of `nsp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    /// Namespace.
    pub nsp: String,
    /// The member.
    pub member: Member,
    /// A room it was in.
    pub room: Arc<str>,
}

/// Every peer's replica.
#[derive(Debug, Default)]
pub struct Replicas {
    /// Node id → its memberships.
    by_node: RwLock<HashMap<u32, Replica>>,
}

impl Replicas {
    /// Start an (empty) replica for `node`, keeping one it already has.
    pub fn add_peer(&self, node: u32) {
        self.by_node.write().entry(node).or_default();
    }

    /// `node`'s member `id` (named `user`) joined `room`; returns the room when `node`
    /// had no member in it before.
    pub fn join(
        &self,
        node: u32,
        nsp: &str,
        room: String,
        id: String,
        user: Option<String>,
    ) -> Option<Arc<str>> {
        self.with(node, nsp, |r| {
            r.join(Arc::from(room), Arc::from(id), user.map(Arc::from))
        })
    }

    /// `node`'s member `id` left `room`; returns the room when `node` has no member in
    /// it any more.
    pub fn leave(&self, node: u32, nsp: &str, room: &str, id: &str) -> Option<Arc<str>> {
        self.with(node, nsp, |r| r.leave(room, id))
    }

    /// `node`'s member `id` disconnected: it left all its rooms; returns those `node`
    /// has no member in any more.
    pub fn gone(&self, node: u32, nsp: &str, id: &str) -> Vec<Arc<str>> {
        self.with(node, nsp, |r| r.gone(id))
    }

    fn with<T>(&self, node: u32, nsp: &str, f: impl FnOnce(&mut NsReplica) -> T) -> T {
        let mut by_node = self.by_node.write();
        f(by_node
            .entry(node)
            .or_default()
            .entry(nsp.to_owned())
            .or_default())
    }

    /// Forget `node`; returns each of its memberships, so that their leaves can be
    /// announced (empty when it had none or was unknown).
    pub fn remove(&self, node: u32) -> Vec<Departed> {
        let Some(replica) = self.by_node.write().remove(&node) else {
            return Vec::new();
        };
        let mut departed = Vec::new();
        for (nsp, ns) in replica {
            for (id, rooms) in ns.memberships {
                for room in rooms {
                    let user = ns
                        .rooms
                        .get(&room)
                        .and_then(|m| m.get(&id))
                        .cloned()
                        .flatten();
                    let member = Member {
                        id: id.clone(),
                        user,
                    };
                    departed.push(Departed {
                        nsp: nsp.clone(),
                        member,
                        room,
                    });
                }
            }
        }
        departed
    }

    /// Whether any peer has member `id` in some room of `nsp`.
    pub fn has_member(&self, nsp: &str, id: &str) -> bool {
        self.has_member_on(|_| true, nsp, id)
    }

    /// Whether a peer that `which` picks has member `id` in `nsp`.
    pub fn has_member_on(&self, which: impl Fn(u32) -> bool, nsp: &str, id: &str) -> bool {
        self.by_node.read().iter().any(|(&node, r)| {
            which(node) && r.get(nsp).is_some_and(|ns| ns.memberships.contains_key(id))
        })
    }

    /// Whether `node`'s member `id` is in `room` of `nsp`.
    pub fn contains(&self, node: u32, nsp: &str, room: &str, id: &str) -> bool {
        self.by_node
            .read()
            .get(&node)
            .and_then(|r| r.get(nsp))
            .and_then(|ns| ns.rooms.get(room))
            .is_some_and(|members| members.contains_key(id))
    }

    /// How many members the peers have in `room`.
    pub fn count(&self, nsp: &str, room: &str) -> usize {
        self.by_node
            .read()
            .values()
            .filter_map(|r| r.get(nsp))
            .filter_map(|ns| ns.rooms.get(room))
            .map(HashMap::len)
            .sum()
    }

    /// Add the names of the peers' rooms of `nsp` to `names`.
    pub fn add_room_names(&self, nsp: &str, names: &mut HashSet<Arc<str>>) {
        for replica in self.by_node.read().values() {
            if let Some(ns) = replica.get(nsp) {
                names.extend(ns.rooms.keys().cloned());
            }
        }
    }

    /// Add the peers' member counts of each room of `nsp` to `counts`.
    pub fn add_room_counts(&self, nsp: &str, counts: &mut BTreeMap<Arc<str>, usize>) {
        for replica in self.by_node.read().values() {
            if let Some(ns) = replica.get(nsp) {
                for (room, members) in &ns.rooms {
                    *counts.entry(room.clone()).or_default() += members.len();
                }
            }
        }
    }

    /// Add the peers' members of `room` to `list`, each id once (`seen` holds the ids
    /// already listed).
    pub fn add_members(
        &self,
        nsp: &str,
        room: &str,
        list: &mut Vec<Member>,
        seen: &mut BTreeSet<Arc<str>>,
    ) {
        for replica in self.by_node.read().values() {
            if let Some(members) = replica.get(nsp).and_then(|ns| ns.rooms.get(room)) {
                for (id, user) in members {
                    if seen.insert(id.clone()) {
                        list.push(Member {
                            id: id.clone(),
                            user: user.clone(),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, user: Option<&str>) -> Member {
        Member {
            id: Arc::from(id),
            user: user.map(Arc::from),
        }
    }

    #[test]
    fn joins_leaves_and_gone_keep_both_indexes_in_step() {
        let r = Replicas::default();
        r.join(7, "/", "a".into(), "x".into(), Some("ann".into()));
        r.join(7, "/", "b".into(), "x".into(), Some("ann".into()));
        r.join(8, "/", "a".into(), "y".into(), None);
        r.join(8, "/other", "a".into(), "z".into(), None);
        assert_eq!(r.count("/", "a"), 2, "summed over peers");
        assert_eq!(r.count("/", "b"), 1);
        assert_eq!(r.count("/other", "a"), 1, "namespaces are apart");

        r.leave(7, "/", "a", "x");
        assert_eq!(r.count("/", "a"), 1);
        r.gone(7, "/", "x");
        assert_eq!(r.count("/", "b"), 0);
        let mut names = HashSet::new();
        r.add_room_names("/", &mut names);
        assert_eq!(names, HashSet::from([Arc::from("a")]), "empty rooms go");
        assert!(r.remove(7).is_empty(), "peer 7 has nobody left");
    }

    #[test]
    fn listings_merge_into_what_the_caller_has() {
        let r = Replicas::default();
        r.join(7, "/", "a".into(), "x".into(), Some("ann".into()));
        r.join(7, "/", "a".into(), "local".into(), None);
        let mut counts = BTreeMap::from([(Arc::from("a"), 1), (Arc::from("b"), 1)]);
        r.add_room_counts("/", &mut counts);
        assert_eq!(counts[&Arc::from("a")], 3);
        assert_eq!(counts[&Arc::from("b")], 1);

        let mut list = vec![member("local", Some("me"))];
        let mut seen = BTreeSet::from([Arc::from("local")]);
        r.add_members("/", "a", &mut list, &mut seen);
        list.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            list,
            vec![member("local", Some("me")), member("x", Some("ann"))],
            "an id already listed is not listed twice"
        );
    }

    #[test]
    fn a_removed_peer_hands_back_every_membership() {
        let r = Replicas::default();
        r.add_peer(7);
        r.join(7, "/", "a".into(), "x".into(), Some("ann".into()));
        r.join(7, "/", "b".into(), "x".into(), Some("ann".into()));
        r.join(9, "/", "a".into(), "y".into(), None);
        let mut departed = r.remove(7);
        departed.sort_by(|a, b| a.room.cmp(&b.room));
        let rooms: Vec<_> = departed.iter().map(|d| &*d.room).collect();
        assert_eq!(rooms, vec!["a", "b"]);
        assert!(
            departed
                .iter()
                .all(|d| d.member == member("x", Some("ann")))
        );
        assert_eq!(r.count("/", "a"), 1, "the other peer stays");
        assert!(r.remove(7).is_empty(), "removed once");
    }
}
