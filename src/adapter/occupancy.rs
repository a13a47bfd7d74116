//! How many rooms of a namespace have members anywhere on the host, kept up to date
//! instead of computed: each source (this process, each peer's replica) reports when a
//! room becomes occupied or empty there, and the count of a namespace is read in O(1)
//! (it used to copy every room name of the host per `$join`, `$leave` and disconnect).
//!
//! Reports from concurrent tasks may arrive out of order (an "empty" before the matching
//! "occupied"): each room keeps a signed number of sources, and a room counts while that
//! number is positive, so the total is right once every report is in.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::bus::is_listed;

/// One namespace: room → sources holding it (signed), and how many rooms are positive.
#[derive(Debug, Default)]
struct Space {
    sources: HashMap<Arc<str>, i64>,
    occupied: usize,
}

/// Occupied rooms per namespace.
#[derive(Debug, Default)]
pub struct Occupancy {
    spaces: Mutex<HashMap<String, Space>>,
}

impl Occupancy {
    /// `room` of `nsp` became occupied in one source.
    pub fn up(&self, nsp: &str, room: &Arc<str>) {
        self.step(nsp, room, 1);
    }

    /// `room` of `nsp` became empty in one source.
    pub fn down(&self, nsp: &str, room: &Arc<str>) {
        self.step(nsp, room, -1);
    }

    fn step(&self, nsp: &str, room: &Arc<str>, by: i64) {
        if !is_listed(room) {
            // The relay's own rooms are never counted as rooms.
            return;
        }
        let mut spaces = self.spaces.lock();
        let space = match spaces.get_mut(nsp) {
            Some(space) => space,
            None => spaces.entry(nsp.to_owned()).or_default(),
        };
        let n = space.sources.entry(room.clone()).or_insert(0);
        let before = *n > 0;
        *n += by;
        let after = *n > 0;
        if *n == 0 {
            space.sources.remove(room);
        }
        match (before, after) {
            (false, true) => space.occupied += 1,
            (true, false) => space.occupied = space.occupied.saturating_sub(1),
            _ => {}
        }
    }

    /// How many rooms of `nsp` have members somewhere.
    pub fn count(&self, nsp: &str) -> usize {
        self.spaces.lock().get(nsp).map_or(0, |s| s.occupied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_count_once_whatever_the_number_or_order_of_sources() {
        let o = Occupancy::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        o.up("/", &a);
        o.up("/", &a);
        o.up("/", &b);
        o.up("/x", &a);
        o.up("/", &Arc::from("$namespace"));
        assert_eq!((o.count("/"), o.count("/x"), o.count("/none")), (2, 1, 0));
        o.down("/", &a);
        assert_eq!(o.count("/"), 2, "a is still held by one source");
        o.down("/", &a);
        assert_eq!(o.count("/"), 1);
        // An "empty" report overtaking its "occupied" one.
        o.down("/", &b);
        o.down("/", &b);
        assert_eq!(o.count("/"), 0);
        o.up("/", &b);
        assert_eq!(o.count("/"), 0, "b's sources net to zero");
        o.up("/", &b);
        assert_eq!(o.count("/"), 1);
    }
}
