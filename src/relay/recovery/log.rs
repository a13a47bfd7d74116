//! The events kept for connection state recovery: per namespace with `recovery`, every
//! event relayed to its rooms or to all of it, as delivered, with whom it reached — for
//! as long as a dropped client may come back (and the time it takes to notice a drop).
//!
//! Unlike room history ([`history`](super::super::history)), which keeps the latest
//! events of each room for anyone who asks, this log answers one question: which events
//! would socket S (in these rooms) have received after position P. So an entry keeps its
//! [`Audience`], and the log keeps everything within its time, bounded by a byte budget
//! shared by every namespace. An event dropped for the budget before its time is
//! remembered per origin (its sequence number): a client whose position is before it may
//! have missed it, and is not recovered (a partial replay would be a silent gap).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adapter::{Audience, Logged};
#[cfg(test)]
use crate::adapter::{Pick, Target};
use crate::engine::Outgoing;
use crate::relay::history::{EventId, Position};

/// Bytes an entry costs beyond its frames (the record, its audience's pointers, the slot).
const OVERHEAD: usize = 160;

/// One event as delivered.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its identity.
    pub id: EventId,
    /// When it was accepted, ms since the Unix epoch.
    pub at_ms: u64,
    /// Who it reached.
    pub audience: Audience,
    /// The packet, with the offset it was delivered with here as its last argument.
    pub item: Outgoing,
}

impl Entry {
    fn cost(&self) -> usize {
        OVERHEAD + self.item.bytes()
    }
}

#[derive(Debug)]
struct Kept {
    arrival: u64,
    recorded: Instant,
    entry: Entry,
}

#[derive(Debug, Default)]
struct Space {
    entries: VecDeque<Kept>,
    /// How long an entry stays.
    retention: Duration,
    /// Per origin, the highest sequence number dropped for the budget before its time.
    lost: BTreeMap<u32, u64>,
}

/// How full the log is, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Events kept.
    pub events: usize,
    /// Bytes counted.
    pub bytes: usize,
    /// Events dropped for the budget before their time, since start.
    pub evicted: u64,
}

/// Every namespace's recovery log of this process.
#[derive(Debug, Default)]
pub struct Log {
    spaces: HashMap<Arc<str>, Space>,
    /// The ids of the entries kept (an event another process hands over may be here
    /// already).
    ids: HashSet<EventId>,
    /// The last sequence number kept per origin, whether delivered here or handed over.
    kept: Position,
    next_arrival: u64,
    events: usize,
    bytes: usize,
    budget: usize,
    evicted: u64,
}

impl Log {
    /// An empty log holding at most `budget` bytes.
    pub fn new(budget: usize) -> Log {
        Log {
            budget,
            ..Log::default()
        }
    }

    /// A new budget (a reload); a smaller one drops the oldest entries now.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.fit();
    }

    /// Whether the event `id` is kept.
    pub fn contains(&self, id: EventId) -> bool {
        self.ids.contains(&id)
    }

    /// Whether every event `position` has seen from an origin is kept, or was before.
    pub fn covers(&self, position: &Position) -> bool {
        self.kept.covers(position)
    }

    /// Every entry, as a new process is handed them.
    pub fn export(&self) -> Vec<Logged> {
        self.spaces
            .iter()
            .flat_map(|(nsp, space)| {
                space.entries.iter().map(|k| Logged {
                    nsp: nsp.clone(),
                    audience: k.entry.audience.clone(),
                    stamp: crate::adapter::Stamp {
                        origin: k.entry.id.origin,
                        seq: k.entry.id.seq,
                        at_ms: k.entry.at_ms,
                    },
                    frames: k.entry.item.frames().to_vec(),
                })
            })
            .collect()
    }

    /// Keep `entry` of `nsp` for `retention` (unless it is kept already).
    pub fn push(&mut self, nsp: &Arc<str>, retention: Duration, entry: Entry, now: Instant) {
        if !self.ids.insert(entry.id) {
            return;
        }
        self.kept.advance(entry.id);
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.events += 1;
        self.bytes += entry.cost();
        let space = self.spaces.entry(nsp.clone()).or_default();
        space.retention = retention;
        space.entries.push_back(Kept {
            arrival,
            recorded: now,
            entry,
        });
        self.fit();
    }

    /// Drop what is past its time, and the namespaces that no longer keep anything
    /// (`keeps` says whether one still has `recovery`).
    pub fn expire(&mut self, now: Instant, keeps: impl Fn(&str) -> bool) {
        let (mut events, mut bytes) = (0, 0);
        let ids = &mut self.ids;
        self.spaces.retain(|nsp, space| {
            let retention = space.retention;
            let live = keeps(nsp);
            while let Some(front) = space.entries.front() {
                if live && now.saturating_duration_since(front.recorded) <= retention {
                    break;
                }
                let gone = space.entries.pop_front().expect("front exists");
                ids.remove(&gone.entry.id);
                events += 1;
                bytes += gone.entry.cost();
            }
            live
        });
        self.events -= events;
        self.bytes -= bytes;
    }

    /// The entries of `nsp` that socket `id` (in `rooms`) would have received and has
    /// not seen at `after`, in the order they were delivered here; `None` when one it
    /// may have missed is no longer kept.
    pub fn missed(
        &self,
        nsp: &str,
        id: &str,
        rooms: &BTreeSet<Arc<str>>,
        after: &Position,
    ) -> Option<Vec<&Entry>> {
        let Some(space) = self.spaces.get(nsp) else {
            return Some(Vec::new());
        };
        let gap = space
            .lost
            .iter()
            .any(|(&origin, &seq)| !after.has_seen(EventId { origin, seq }));
        if gap {
            return None;
        }
        // Each origin's events in sequence order (events handed over by another process
        // come after those delivered here), the origins interleaved by time.
        let mut by_origin: BTreeMap<u32, VecDeque<&Entry>> = BTreeMap::new();
        for entry in space.entries.iter().map(|k| &k.entry) {
            if !after.has_seen(entry.id) && entry.audience.reaches(id, rooms) {
                by_origin
                    .entry(entry.id.origin)
                    .or_default()
                    .push_back(entry);
            }
        }
        for queue in by_origin.values_mut() {
            queue.make_contiguous().sort_by_key(|e| e.id.seq);
        }
        let mut missed = Vec::new();
        loop {
            let next = by_origin
                .iter()
                .filter_map(|(&origin, q)| Some((q.front()?.at_ms, origin)))
                .min();
            let Some((_, origin)) = next else {
                break;
            };
            let queue = by_origin.get_mut(&origin).expect("found above");
            missed.extend(queue.pop_front());
        }
        Some(missed)
    }

    /// A position that has seen every entry of `nsp` accepted before `at_ms`: where a
    /// client that connected then and received nothing since stands.
    pub fn position_before(&self, nsp: &str, at_ms: u64) -> Position {
        let mut position = Position::default();
        if let Some(space) = self.spaces.get(nsp) {
            for (&origin, &seq) in &space.lost {
                position.advance(EventId { origin, seq });
            }
            for kept in &space.entries {
                if kept.entry.at_ms < at_ms {
                    position.advance(kept.entry.id);
                }
            }
        }
        position
    }

    /// How full it is.
    pub fn usage(&self) -> Usage {
        Usage {
            events: self.events,
            bytes: self.bytes,
            evicted: self.evicted,
        }
    }

    /// Drop the oldest entries of any namespace until the log fits its budget.
    fn fit(&mut self) {
        while self.bytes > self.budget {
            let oldest = self
                .spaces
                .iter()
                .filter_map(|(nsp, s)| Some((s.entries.front()?.arrival, nsp.clone())))
                .min();
            let Some((_, nsp)) = oldest else {
                return;
            };
            let space = self.spaces.get_mut(&nsp).expect("found above");
            let gone = space.entries.pop_front().expect("found above");
            let id = gone.entry.id;
            self.ids.remove(&id);
            let lost = space.lost.entry(id.origin).or_insert(id.seq);
            *lost = (*lost).max(id.seq);
            self.events -= 1;
            self.bytes -= gone.entry.cost();
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Frame;

    fn entry(origin: u32, seq: u64, rooms: &[&str], except: Option<&str>) -> Entry {
        Entry {
            id: EventId { origin, seq },
            at_ms: seq,
            audience: Audience::of_target(&Target {
                rooms: rooms.iter().map(|r| Arc::from(*r)).collect(),
                except: except.map(Arc::from),
            }),
            item: Outgoing::Frame(Frame::message(&format!("2[\"e\",{seq},\"x\"]"))),
        }
    }

    fn set(rooms: &[&str]) -> BTreeSet<Arc<str>> {
        rooms.iter().map(|r| Arc::from(*r)).collect()
    }

    fn seqs(entries: Option<Vec<&Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.id.seq).collect())
    }

    #[test]
    fn a_socket_misses_only_what_reached_it_after_its_position() {
        let nsp: Arc<str> = Arc::from("/");
        let now = Instant::now();
        let mut log = Log::new(1 << 20);
        let hour = Duration::from_secs(3600);
        log.push(&nsp, hour, entry(1, 10, &["a"], None), now);
        log.push(&nsp, hour, entry(2, 5, &[], None), now);
        log.push(&nsp, hour, entry(1, 11, &["b"], None), now);
        log.push(&nsp, hour, entry(1, 12, &["a"], Some("me")), now);
        log.push(&nsp, hour, entry(2, 6, &["a", "b"], None), now);
        let mut seen = Position::default();
        seen.advance(EventId { origin: 1, seq: 10 });
        let missed = log.missed("/", "me", &set(&["a"]), &seen);
        assert_eq!(seqs(missed), Some(vec![5, 6]));
        let missed = log.missed("/", "you", &set(&["a"]), &seen);
        // In time order (here a sequence number is its time).
        assert_eq!(seqs(missed), Some(vec![5, 6, 12]));
        assert_eq!(
            seqs(log.missed("/other", "me", &set(&[]), &seen)),
            Some(vec![])
        );
    }

    #[test]
    fn an_event_dropped_for_the_budget_past_a_position_refuses_it() {
        let nsp: Arc<str> = Arc::from("/");
        let now = Instant::now();
        let one = entry(1, 1, &[], None).cost();
        let mut log = Log::new(one * 2);
        let hour = Duration::from_secs(3600);
        for seq in 1..=3 {
            log.push(&nsp, hour, entry(1, seq, &[], None), now);
        }
        assert_eq!(log.usage().events, 2);
        assert_eq!(log.usage().evicted, 1);
        let mut at = Position::default();
        assert!(log.missed("/", "x", &set(&[]), &at).is_none());
        at.advance(EventId { origin: 1, seq: 1 });
        assert_eq!(seqs(log.missed("/", "x", &set(&[]), &at)), Some(vec![2, 3]));
        let start = log.position_before("/", 3);
        assert_eq!(seqs(log.missed("/", "x", &set(&[]), &start)), Some(vec![3]));
    }

    #[test]
    fn entries_expire_and_dropped_namespaces_go() {
        let nsp: Arc<str> = Arc::from("/");
        let now = Instant::now();
        let mut log = Log::new(1 << 20);
        log.push(&nsp, Duration::from_secs(1), entry(1, 1, &[], None), now);
        log.push(
            &nsp,
            Duration::from_secs(1),
            entry(1, 2, &[], None),
            now + Duration::from_secs(1),
        );
        log.expire(now + Duration::from_millis(1500), |_| true);
        assert_eq!(log.usage().events, 1);
        log.expire(now, |_| false);
        assert_eq!(log.usage(), Usage::default());
    }

    #[test]
    fn an_api_pick_reaches_rooms_and_ids_minus_exceptions() {
        let pick = Pick {
            rooms: vec![Arc::from("a")],
            sockets: vec![Arc::from("s1")],
            except: vec![Arc::from("banned"), Arc::from("s2")],
        };
        let audience = Audience::of_pick(&pick);
        assert!(audience.reaches("s1", &set(&[])));
        assert!(audience.reaches("s3", &set(&["a"])));
        assert!(!audience.reaches("s2", &set(&["a"])));
        assert!(!audience.reaches("s4", &set(&["a", "banned"])));
        assert!(!audience.reaches("s4", &set(&["b"])));
    }
}
