//! The memberships presence keeps: this host's, by worker ([`Host`], what the gateway
//! publishes), and the other iorelay nodes', by node ([`Roster`], what it presents to
//! the workers). Pure bookkeeping: no I/O, no clock of its own (the caller passes
//! `now`), so that the rules are tested here — a gap in a node's numbers asks for a
//! snapshot, a snapshot replaces what was known of the node, a node silent past the
//! deadline (or saying goodbye) leaves with all its members.
//!
//! Bounded: at most [`Limits::nodes`] nodes and [`Limits::members`] memberships per
//! node are kept; what is over is dropped and counted by the caller (`Outcome::dropped`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::wire::{Body, Change, Envelope, Membership};

/// (namespace, room, socket id).
type Key = (String, String, String);

/// A set of memberships with per-room counts.
#[derive(Debug, Default)]
pub struct Members {
    /// Each membership → the member's display name.
    set: HashMap<Key, Option<String>>,
    /// (namespace, room) → members.
    counts: HashMap<(String, String), usize>,
}

impl Members {
    fn key(m: &Membership) -> Key {
        (m.nsp.clone(), m.room.clone(), m.id.clone())
    }

    /// Add `m`; whether it is new.
    fn join(&mut self, m: &Membership) -> bool {
        let fresh = self.set.insert(Self::key(m), m.user.clone()).is_none();
        if fresh {
            *self
                .counts
                .entry((m.nsp.clone(), m.room.clone()))
                .or_default() += 1;
        }
        fresh
    }

    /// Take `m` out; whether it was there.
    fn leave(&mut self, m: &Membership) -> bool {
        if self.set.remove(&Self::key(m)).is_none() {
            return false;
        }
        let room = (m.nsp.clone(), m.room.clone());
        if let Some(n) = self.counts.get_mut(&room) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&room);
            }
        }
        true
    }

    fn contains(&self, m: &Membership) -> bool {
        self.set.contains_key(&Self::key(m))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Members of `room`.
    pub fn count(&self, nsp: &str, room: &str) -> usize {
        self.counts
            .get(&(nsp.to_owned(), room.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every membership, sorted (a stable snapshot).
    pub fn all(&self) -> Vec<Membership> {
        let mut all: Vec<Membership> = self
            .set
            .iter()
            .map(|((nsp, room, id), user)| Membership {
                nsp: nsp.clone(),
                room: room.clone(),
                id: id.clone(),
                user: user.clone(),
            })
            .collect();
        all.sort_by(|a, b| (&a.nsp, &a.room, &a.id).cmp(&(&b.nsp, &b.room, &b.id)));
        all
    }
}

/// This host's memberships, by worker, and the number of its last published change.
#[derive(Debug, Default)]
pub struct Host {
    by_worker: HashMap<u32, Members>,
    /// The number of the last [`Body::Changes`] published.
    pub seq: u64,
}

impl Host {
    /// Worker `worker` reports `changes`; returns those that change the host's set (a
    /// repeated join or a leave of an unknown membership is nothing to publish).
    pub fn apply(&mut self, worker: u32, changes: Vec<Change>) -> Vec<Change> {
        let members = self.by_worker.entry(worker).or_default();
        changes
            .into_iter()
            .filter(|c| match c.join {
                true => members.join(&c.m),
                false => members.leave(&c.m),
            })
            .collect()
    }

    /// Worker `worker` is gone: its memberships, as leaves.
    pub fn gone(&mut self, worker: u32) -> Vec<Change> {
        let members = self.by_worker.remove(&worker).unwrap_or_default();
        leaves(members.all())
    }

    /// Every membership of the host, at most `max`.
    pub fn snapshot(&self, max: usize) -> Vec<Membership> {
        let mut all: Vec<Membership> = self.by_worker.values().flat_map(Members::all).collect();
        all.truncate(max);
        all
    }

    /// Members of `room` on this host.
    pub fn count(&self, nsp: &str, room: &str) -> usize {
        self.by_worker.values().map(|m| m.count(nsp, room)).sum()
    }
}

/// How much of the other nodes is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nodes.
    pub nodes: usize,
    /// Memberships per node.
    pub members: usize,
    /// Memberships of all nodes together.
    pub total: usize,
}

/// What an applied message means here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Memberships to present to the workers, in order.
    pub changes: Vec<Change>,
    /// The leaves are of a node that said goodbye (nobody announced them).
    pub departed: bool,
    /// A gap or an unknown node: ask for snapshots.
    pub ask: bool,
    /// Another node asks for this node's snapshot.
    pub answer: bool,
    /// Nodes or memberships over the bounds, not kept.
    pub dropped: usize,
}

/// One other node.
#[derive(Debug)]
struct Node {
    /// The number of its last change seen.
    seq: u64,
    /// When it was last heard from.
    heard: Instant,
    members: Members,
}

/// The other iorelay nodes' memberships, by node id.
#[derive(Debug)]
pub struct Roster {
    nodes: HashMap<String, Node>,
    /// Memberships of all nodes.
    total: usize,
    limits: Limits,
}

impl Roster {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Roster {
        Roster {
            nodes: HashMap::new(),
            total: 0,
            limits,
        }
    }

    /// Apply another node's message, heard at `now`.
    pub fn apply(&mut self, env: Envelope, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        if let Body::Ask = env.body {
            out.answer = true;
        }
        if let Body::Bye = env.body {
            if let Some(node) = self.nodes.remove(&env.node) {
                self.total -= node.members.len();
                out.changes = leaves(node.members.all());
                out.departed = true;
            }
            return out;
        }
        let known = self.nodes.contains_key(&env.node);
        if !known && self.nodes.len() >= self.limits.nodes {
            out.dropped = 1;
            return out;
        }
        let node = self.nodes.entry(env.node).or_insert_with(|| Node {
            seq: 0,
            heard: now,
            members: Members::default(),
        });
        node.heard = now;
        let held = node.members.len();
        // Room for new memberships of this node: its own bound, and what the others
        // leave of the total.
        let others = self.total - held;
        let max = self
            .limits
            .members
            .min(self.limits.total.saturating_sub(others));
        match env.body {
            Body::Changes(changes) => {
                out.ask = !known || env.seq != node.seq + 1;
                node.seq = env.seq;
                for c in changes {
                    let changed = match c.join {
                        true if node.members.len() >= max && !node.members.contains(&c.m) => {
                            out.dropped += 1;
                            false
                        }
                        true => node.members.join(&c.m),
                        false => node.members.leave(&c.m),
                    };
                    if changed {
                        out.changes.push(c);
                    }
                }
            }
            Body::Snapshot(members) => {
                node.seq = env.seq;
                let fresh: HashSet<&Membership> = members.iter().collect();
                let stale: Vec<Membership> = node
                    .members
                    .all()
                    .into_iter()
                    .filter(|m| !fresh.contains(m))
                    .collect();
                for m in stale {
                    node.members.leave(&m);
                    out.changes.push(Change { join: false, m });
                }
                for m in members {
                    if node.members.contains(&m) {
                        continue;
                    }
                    if node.members.len() >= max {
                        out.dropped += 1;
                        continue;
                    }
                    node.members.join(&m);
                    out.changes.push(Change { join: true, m });
                }
            }
            Body::Beat | Body::Ask => out.ask = !known || env.seq != node.seq,
            Body::Bye => {}
        }
        self.total = others + node.members.len();
        out
    }

    /// Drop the nodes not heard from since `now - deadline`: their memberships, as
    /// leaves (nobody announced them), with the nodes' ids.
    pub fn expire(&mut self, now: Instant, deadline: Duration) -> (Vec<String>, Vec<Change>) {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.heard) > deadline)
            .map(|(id, _)| id.clone())
            .collect();
        let mut changes = Vec::new();
        for id in &dead {
            if let Some(node) = self.nodes.remove(id) {
                self.total -= node.members.len();
                changes.extend(leaves(node.members.all()));
            }
        }
        (dead, changes)
    }

    /// Every membership of the other nodes, as joins (for a worker that starts).
    pub fn all(&self) -> Vec<Change> {
        self.nodes
            .values()
            .flat_map(|n| n.members.all())
            .map(|m| Change { join: true, m })
            .collect()
    }

    /// Members of `room` on the other nodes.
    pub fn count(&self, nsp: &str, room: &str) -> usize {
        self.nodes
            .values()
            .map(|n| n.members.count(nsp, room))
            .sum()
    }

    /// The memberships of `nsp` that the other nodes hold: `(room, socket id)`.
    pub fn memberships(&self, nsp: &str) -> HashSet<(String, String)> {
        self.nodes
            .values()
            .flat_map(|n| n.members.set.keys())
            .filter(|(n, _, _)| n == nsp)
            .map(|(_, room, id)| (room.clone(), id.clone()))
            .collect()
    }

    /// Whether node `me` has the lowest id of the live nodes (it speaks for the
    /// cluster about a dead node's members: their webhooks).
    pub fn lowest(&self, me: &str) -> bool {
        self.nodes.keys().all(|n| n.as_str() > me)
    }

    /// How many other nodes are known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no other node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn leaves(members: Vec<Membership>) -> Vec<Change> {
    members
        .into_iter()
        .map(|m| Change { join: false, m })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::wire::VERSION;
    use super::*;

    fn m(room: &str, id: &str) -> Membership {
        Membership {
            nsp: "/".into(),
            room: room.into(),
            id: id.into(),
            user: None,
        }
    }

    fn env(node: &str, seq: u64, body: Body) -> Envelope {
        Envelope {
            v: VERSION,
            node: node.into(),
            seq,
            body,
        }
    }

    fn join(room: &str, id: &str) -> Change {
        Change {
            join: true,
            m: m(room, id),
        }
    }

    fn roster() -> Roster {
        Roster::new(Limits {
            nodes: 2,
            members: 3,
            total: 5,
        })
    }

    #[test]
    fn deltas_in_order_apply_and_a_gap_asks_for_a_snapshot() {
        let mut r = roster();
        let now = Instant::now();
        // A node first heard from: what it says is kept, and its snapshot is wanted.
        let out = r.apply(env("b", 1, Body::Changes(vec![join("r", "s1")])), now);
        assert_eq!(out.changes, vec![join("r", "s1")]);
        assert!(out.ask);
        let out = r.apply(env("b", 2, Body::Changes(vec![join("r", "s2")])), now);
        assert!(!out.ask, "the next number");
        assert_eq!(r.count("/", "r"), 2);
        // A repeated join changes nothing; a leave does.
        let leave = Change {
            join: false,
            m: m("r", "s1"),
        };
        let out = r.apply(
            env("b", 3, Body::Changes(vec![join("r", "s2"), leave.clone()])),
            now,
        );
        assert_eq!(out.changes, vec![leave]);
        // Number 5 after 3: one was missed.
        let out = r.apply(env("b", 5, Body::Changes(vec![])), now);
        assert!(out.ask);
        // A beat with the number last seen is fine; another is a gap.
        assert!(!r.apply(env("b", 5, Body::Beat), now).ask);
        assert!(r.apply(env("b", 6, Body::Beat), now).ask);
        assert_eq!(
            r.memberships("/"),
            HashSet::from([("r".to_owned(), "s2".to_owned())])
        );
    }

    #[test]
    fn a_snapshot_replaces_what_was_known() {
        let mut r = roster();
        let now = Instant::now();
        r.apply(
            env(
                "b",
                1,
                Body::Changes(vec![join("r", "s1"), join("r", "s2")]),
            ),
            now,
        );
        let out = r.apply(
            env("b", 4, Body::Snapshot(vec![m("r", "s2"), m("q", "s3")])),
            now,
        );
        assert_eq!(
            out.changes,
            vec![
                Change {
                    join: false,
                    m: m("r", "s1")
                },
                join("q", "s3")
            ]
        );
        assert!(!out.ask);
        assert!(!r.apply(env("b", 4, Body::Beat), now).ask, "in step again");
        assert_eq!(r.all().len(), 2);
    }

    #[test]
    fn a_silent_node_leaves_after_the_deadline_and_a_goodbye_at_once() {
        let mut r = roster();
        let t0 = Instant::now();
        r.apply(env("b", 1, Body::Changes(vec![join("r", "s1")])), t0);
        r.apply(env("c", 1, Body::Changes(vec![join("r", "s2")])), t0);
        let deadline = Duration::from_secs(10);
        let (dead, gone) = r.expire(t0 + Duration::from_secs(5), deadline);
        assert!(dead.is_empty() && gone.is_empty());
        r.apply(env("c", 1, Body::Beat), t0 + Duration::from_secs(8));
        let (dead, gone) = r.expire(t0 + Duration::from_secs(11), deadline);
        assert_eq!(dead, vec!["b".to_owned()]);
        assert_eq!(
            gone,
            vec![Change {
                join: false,
                m: m("r", "s1")
            }]
        );
        assert_eq!(r.count("/", "r"), 1);
        let out = r.apply(env("c", 1, Body::Bye), t0 + Duration::from_secs(12));
        assert!(out.departed);
        assert_eq!(out.changes.len(), 1);
        assert!(r.is_empty());
        // A node that comes back under a new id is a new node.
        let out = r.apply(env("b2", 1, Body::Snapshot(vec![m("r", "s1")])), t0);
        assert_eq!(out.changes, vec![join("r", "s1")]);
    }

    #[test]
    fn nodes_and_members_over_the_bounds_are_dropped_and_counted() {
        let mut r = roster();
        let now = Instant::now();
        r.apply(env("b", 1, Body::Beat), now);
        r.apply(env("c", 1, Body::Beat), now);
        let out = r.apply(env("d", 1, Body::Changes(vec![join("r", "s")])), now);
        assert_eq!(out.dropped, 1);
        assert!(out.changes.is_empty());
        assert_eq!(r.len(), 2);
        let many: Vec<Membership> = (0..1000).map(|i| m("r", &format!("s{i}"))).collect();
        let out = r.apply(env("b", 1, Body::Snapshot(many)), now);
        assert_eq!((out.changes.len(), out.dropped), (3, 997));
        let out = r.apply(env("b", 2, Body::Changes(vec![join("r", "new")])), now);
        assert_eq!(out.dropped, 1);
        // Node c may add 2 more before the total (5) is reached.
        let many: Vec<Membership> = (0..3).map(|i| m("q", &format!("c{i}"))).collect();
        let out = r.apply(env("c", 1, Body::Snapshot(many)), now);
        assert_eq!((out.changes.len(), out.dropped), (2, 1));
        // Leaving makes room again.
        r.apply(env("b", 0, Body::Bye), now);
        let out = r.apply(env("c", 2, Body::Changes(vec![join("q", "c2")])), now);
        assert_eq!((out.changes.len(), out.dropped), (1, 0));
    }

    #[test]
    fn the_lowest_live_node_speaks_for_the_cluster() {
        let mut r = roster();
        let now = Instant::now();
        assert!(r.lowest("m"), "alone");
        r.apply(env("p", 0, Body::Beat), now);
        assert!(r.lowest("m"));
        r.apply(env("a", 0, Body::Beat), now);
        assert!(!r.lowest("m"));
    }

    #[test]
    fn the_host_table_publishes_real_changes_and_a_dead_workers_leaves() {
        let mut h = Host::default();
        assert_eq!(h.apply(0, vec![join("r", "s1"), join("r", "s1")]).len(), 1);
        h.apply(1, vec![join("r", "s2")]);
        assert_eq!(h.count("/", "r"), 2);
        assert_eq!(h.snapshot(1).len(), 1, "bounded");
        let gone = h.gone(1);
        assert_eq!(
            gone,
            vec![Change {
                join: false,
                m: m("r", "s2")
            }]
        );
        assert_eq!(h.count("/", "r"), 1);
        assert!(h.gone(1).is_empty());
    }
}
