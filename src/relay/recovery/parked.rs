//! Sockets whose client dropped and may come back: what connection state recovery
//! restores (the socket's rooms and user), kept by every process of the host — from the
//! process's own drops, from the other processes' `Park` messages, and for the members
//! of a process that died, from its replica — so that the client may come back to any
//! worker, even when its own is gone.
//!
//! Bounded: at most `capacity` sockets (the oldest go first), each for its namespace's
//! `max_disconnection`. A socket that joins a room anywhere is live again, and its entry
//! here goes; a late word of it (a dead process's member parked by a survivor after it
//! was restored elsewhere) may put it back, which is harmless: a claim of a socket live
//! elsewhere takes it over first, and the entry expires.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::adapter::{Member, ParkRecord};

/// A dropped socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Park {
    /// Its rooms (the relay's own `$…` ones too).
    pub rooms: BTreeSet<Arc<str>>,
    /// Its display name.
    pub user: Option<Arc<str>>,
    /// When it dropped.
    pub at: Instant,
}

impl Park {
    /// What the bus carries of it.
    pub fn record(&self, nsp: &Arc<str>, id: &Arc<str>) -> ParkRecord {
        ParkRecord {
            nsp: nsp.clone(),
            member: Member {
                id: id.clone(),
                user: self.user.clone(),
            },
            rooms: self.rooms.iter().cloned().collect(),
            dropped_ms: wall_ms(self.at),
        }
    }

    /// From what the bus carries.
    pub fn from_record(record: &ParkRecord) -> Park {
        Park {
            rooms: record.rooms.iter().cloned().collect(),
            user: record.member.user.clone(),
            at: instant_of(record.dropped_ms),
        }
    }
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    crate::relay::history::epoch_ms(SystemTime::now())
}

/// `at` on the wall clock, in ms since the Unix epoch.
fn wall_ms(at: Instant) -> u64 {
    let ago = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
    now_ms().saturating_sub(ago)
}

/// The instant the wall-clock time `ms` was (now, for a time to come: another
/// process's clock is the same clock, but not the same instant).
fn instant_of(ms: u64) -> Instant {
    let ago = Duration::from_millis(now_ms().saturating_sub(ms));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// The dropped sockets this process keeps, by namespace and socket id.
#[derive(Debug, Default)]
pub struct Parked {
    sockets: HashMap<(Arc<str>, Arc<str>), Park>,
    capacity: usize,
}

impl Parked {
    /// Keep at most `capacity` sockets.
    pub fn new(capacity: usize) -> Parked {
        Parked {
            sockets: HashMap::new(),
            capacity,
        }
    }

    /// A new bound (a reload).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.sockets.len() > self.capacity {
            self.drop_oldest();
        }
    }

    /// Keep socket `id` of `nsp` as it dropped now (replacing what was kept of it).
    pub fn park(&mut self, nsp: &Arc<str>, id: &Arc<str>, park: Park) {
        if self.capacity == 0 {
            return;
        }
        let key = (nsp.clone(), id.clone());
        if !self.sockets.contains_key(&key) && self.sockets.len() >= self.capacity {
            self.drop_oldest();
        }
        self.sockets.insert(key, park);
    }

    /// Add `room` to what is kept of socket `id` (a dead process's members arrive one
    /// membership at a time), keeping it from `at` if it was not kept yet.
    pub fn add_room(
        &mut self,
        nsp: &Arc<str>,
        id: &Arc<str>,
        user: Option<Arc<str>>,
        room: Arc<str>,
        at: Instant,
    ) {
        let key = (nsp.clone(), id.clone());
        if let Some(park) = self.sockets.get_mut(&key) {
            park.rooms.insert(room);
            return;
        }
        let park = Park {
            rooms: BTreeSet::from([room]),
            user,
            at,
        };
        self.park(nsp, id, park);
    }

    /// Take socket `id` of `nsp` out, to restore it.
    pub fn take(&mut self, nsp: &str, id: &str) -> Option<Park> {
        self.sockets.remove(&(Arc::from(nsp), Arc::from(id)))
    }

    /// What is kept of socket `id` of `nsp`, left in place.
    pub fn peek(&self, nsp: &str, id: &str) -> Option<&Park> {
        self.sockets.get(&(Arc::from(nsp), Arc::from(id)))
    }

    /// Whether socket `id` of `nsp` is kept.
    pub fn contains(&self, nsp: &str, id: &str) -> bool {
        self.sockets.contains_key(&(Arc::from(nsp), Arc::from(id)))
    }

    /// Forget what is past its namespace's window (`window` says it; none: the
    /// namespace no longer has `recovery`).
    pub fn expire(&mut self, now: Instant, window: impl Fn(&str) -> Option<Duration>) {
        self.sockets.retain(|(nsp, _), park| {
            window(nsp).is_some_and(|w| now.saturating_duration_since(park.at) <= w)
        });
    }

    /// How many sockets are kept.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Every socket kept, as the bus shares them (for a new link's snapshot).
    pub fn records(&self) -> Vec<ParkRecord> {
        self.sockets
            .iter()
            .map(|((nsp, id), park)| park.record(nsp, id))
            .collect()
    }

    /// What is kept of socket `id` of `nsp`, as the bus shares it.
    pub fn record(&self, nsp: &str, id: &str) -> Option<ParkRecord> {
        let ((nsp, id), park) = self
            .sockets
            .get_key_value(&(Arc::from(nsp), Arc::from(id)))?;
        Some(park.record(nsp, id))
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    fn drop_oldest(&mut self) {
        let oldest = self
            .sockets
            .iter()
            .min_by_key(|(_, park)| park.at)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.sockets.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn park(rooms: &[&str], at: Instant) -> Park {
        Park {
            rooms: rooms.iter().map(|r| Arc::from(*r)).collect(),
            user: None,
            at,
        }
    }

    #[test]
    fn kept_until_taken_or_past_the_window() {
        let now = Instant::now();
        let (nsp, a, b): (Arc<str>, Arc<str>, Arc<str>) = ("/".into(), "a".into(), "b".into());
        let mut parked = Parked::new(10);
        parked.park(&nsp, &a, park(&["r"], now));
        parked.park(&nsp, &b, park(&["r"], now + Duration::from_secs(5)));
        parked.expire(now + Duration::from_secs(6), |_| {
            Some(Duration::from_secs(3))
        });
        assert!(!parked.contains("/", "a"));
        assert_eq!(parked.take("/", "b").map(|p| p.rooms.len()), Some(1));
        assert!(parked.is_empty());
    }

    #[test]
    fn memberships_of_a_dead_process_add_up_and_the_oldest_go_past_capacity() {
        let now = Instant::now();
        let nsp: Arc<str> = "/".into();
        let mut parked = Parked::new(2);
        for (id, room) in [("a", "r1"), ("a", "r2"), ("b", "r1")] {
            parked.add_room(&nsp, &Arc::from(id), None, Arc::from(room), now);
        }
        assert_eq!(parked.len(), 2);
        parked.park(
            &nsp,
            &Arc::from("c"),
            park(&[], now + Duration::from_secs(1)),
        );
        assert_eq!(parked.len(), 2);
        assert!(parked.contains("/", "c"));
        parked.expire(now, |_| None);
        assert!(parked.is_empty());
    }
}
