//! Room history: the last events relayed to each room (or to a whole namespace), kept
//! for clients that join late or come back (`$join` with `history`, `$history`, the
//! server API's `GET /api/v1/rooms/{room}/history`), and the positions readers give to
//! say what they have already seen.
//!
//! # Identity and positions
//! Every relayed event has an [`EventId`]: the process that accepted it (its origin, a
//! worker id) and that process's sequence number. The bus between workers is FIFO per
//! link, so each process sees every origin's events in sequence order, though events of
//! different origins may interleave differently on different processes. A reader's
//! [`Position`] is therefore the last sequence number seen *per origin*, not one index: a
//! process asked "what came after P" answers with the events whose sequence is above P's
//! for their origin, whatever its own interleaving — no gap and no duplicate when a
//! client moves to another worker. Sequence numbers start from the wall clock in
//! microseconds when a process starts, so a restarted worker (same origin id) continues
//! above its predecessor.
//!
//! # Bounds
//! Each log keeps at most `size` events for at most `ttl` (its namespace's
//! [`Keep`]); every event's bytes (name, JSON arguments, attachments and a fixed
//! overhead) are counted, and the whole store stays under a byte budget by dropping the
//! oldest event of the host — whichever log it is in — first. Logs that empty are
//! removed, so rooms that fall silent cost nothing after their `ttl`
//! ([`History::sweep`]).
//!
//! This module owns the store and the position format; what is recorded and when, and
//! how a reader is answered, is the relay's business.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

/// Bytes an event costs beyond its name, arguments and attachments (its record, the
/// `Arc`, the slots in the log and the index).
const OVERHEAD: usize = 128;

/// Most origins a position names: the workers of one host and the master (server API
/// emits) fit far below it.
const MAX_ORIGINS: usize = 128;

/// Which process accepted an event, and its place in that process's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    /// The accepting process (worker id; the master for server API emits).
    pub origin: u32,
    /// That process's sequence number, increasing.
    pub seq: u64,
}

/// One process's source of [`EventId`]s.
#[derive(Debug)]
pub struct Sequence {
    origin: AtomicU32,
    next: AtomicU64,
}

impl Default for Sequence {
    /// Origin 0's: a single process, or the master (server API emits).
    fn default() -> Sequence {
        Sequence::starting_now(0)
    }
}

impl Sequence {
    /// Ids for `origin`, starting at the wall clock in microseconds, so that a
    /// restarted process with the same origin id continues above its predecessor
    /// (which would have had to accept a million events a second for its whole life to
    /// get ahead of the clock).
    pub fn starting_now(origin: u32) -> Sequence {
        let micros = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Sequence {
            origin: AtomicU32::new(origin),
            next: AtomicU64::new(micros),
        }
    }

    /// Name the process (a worker learns its id after the relay is built, before it
    /// serves anyone).
    pub fn set_origin(&self, origin: u32) {
        self.origin.store(origin, Ordering::Relaxed);
    }

    /// The next id.
    pub fn next(&self) -> EventId {
        EventId {
            origin: self.origin.load(Ordering::Relaxed),
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// What a reader has seen: the last sequence number per origin. Written as
/// `origin-seq` pairs (sequence in base 36) joined by `.`, e.g. `1-kq3z9t.2-kq40aa`;
/// clients keep it as an opaque string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(BTreeMap<u32, u64>);

impl Position {
    /// Note that `id` was seen.
    pub fn advance(&mut self, id: EventId) {
        let seen = self.0.entry(id.origin).or_insert(id.seq);
        *seen = (*seen).max(id.seq);
    }

    /// Say that the last sequence number seen of `origin` is `seq` (whatever it was).
    pub fn set(&mut self, origin: u32, seq: u64) {
        self.0.insert(origin, seq);
    }

    /// The last sequence number seen of `origin`.
    pub fn seen(&self, origin: u32) -> Option<u64> {
        self.0.get(&origin).copied()
    }

    /// Whether the event `id` is at or before this position.
    pub fn has_seen(&self, id: EventId) -> bool {
        self.0.get(&id.origin).is_some_and(|&seq| id.seq <= seq)
    }

    /// Note everything `other` has seen.
    pub fn merge(&mut self, other: &Position) {
        for (&origin, &seq) in &other.0 {
            self.advance(EventId { origin, seq });
        }
    }

    /// Whether this position has seen everything `other` has.
    pub fn covers(&self, other: &Position) -> bool {
        other
            .0
            .iter()
            .all(|(&origin, &seq)| self.has_seen(EventId { origin, seq }))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (origin, seq)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{origin}-{}", base36(*seq))?;
        }
        Ok(())
    }
}

/// A position that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a history position")]
pub struct BadPosition;

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Position, BadPosition> {
        let mut seen = BTreeMap::new();
        if s.is_empty() {
            return Ok(Position(seen));
        }
        for pair in s.split('.') {
            let (origin, seq) = pair.split_once('-').ok_or(BadPosition)?;
            let origin: u32 = origin.parse().map_err(|_| BadPosition)?;
            if seq.is_empty() || seq.len() > 13 {
                return Err(BadPosition);
            }
            let seq = u64::from_str_radix(seq, 36).map_err(|_| BadPosition)?;
            // A repeated origin keeps its highest sequence (what joining positions gives).
            let kept = seen.entry(origin).or_insert(seq);
            *kept = (*kept).max(seq);
            if seen.len() > MAX_ORIGINS {
                return Err(BadPosition);
            }
        }
        Ok(Position(seen))
    }
}

/// `n` in base 36, lower case.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its identity.
    pub id: EventId,
    /// When the relay accepted it.
    pub at: SystemTime,
    /// The event name, as delivered.
    pub name: Arc<str>,
    /// Its arguments as delivered (metadata included), a JSON array with binary
    /// placeholders.
    pub args: Arc<str>,
    /// Its binary attachments.
    pub attachments: Vec<Bytes>,
}

impl Event {
    /// Its identity and time as the bus carries them to the other processes.
    pub fn stamp(&self) -> crate::adapter::Stamp {
        stamp_at(self.id, self.at)
    }

    /// The event a stamp names, with what it carried.
    pub fn stamped(
        stamp: crate::adapter::Stamp,
        name: Arc<str>,
        args: Arc<str>,
        attachments: Vec<Bytes>,
    ) -> Event {
        Event {
            id: EventId::of(stamp),
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(stamp.at_ms),
            name,
            args,
            attachments,
        }
    }

    /// A stamp for an event with id `id` accepted now.
    pub fn stamp_now(id: EventId) -> crate::adapter::Stamp {
        stamp_at(id, SystemTime::now())
    }

    /// The bytes it holds, as the store counts them.
    pub fn cost(&self) -> usize {
        OVERHEAD
            + self.name.len()
            + self.args.len()
            + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }
}

/// The stamp of event `id` accepted at `at`.
pub fn stamp_at(id: EventId, at: SystemTime) -> crate::adapter::Stamp {
    crate::adapter::Stamp {
        origin: id.origin,
        seq: id.seq,
        at_ms: epoch_ms(at),
    }
}

/// `at` in ms since the Unix epoch (0 before it), as stamps, pids and replies carry time.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventId {
    /// The id a stamp carries.
    pub fn of(stamp: crate::adapter::Stamp) -> EventId {
        EventId {
            origin: stamp.origin,
            seq: stamp.seq,
        }
    }
}

/// Which log: a room of a namespace, or the namespace's broadcasts to all (`room` none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The namespace.
    pub nsp: Arc<str>,
    /// The room; none for events to the whole namespace.
    pub room: Option<Arc<str>>,
}

/// How much a log keeps (its namespace's `history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Most events.
    pub size: usize,
    /// Longest an event is kept.
    pub ttl: Duration,
}

impl From<crate::config::HistoryConfig> for Keep {
    fn from(history: crate::config::HistoryConfig) -> Keep {
        Keep {
            size: history.size,
            ttl: history.ttl,
        }
    }
}

#[derive(Debug)]
struct Kept {
    /// Place in the store's arrival order (the eviction order).
    arrival: u64,
    /// When it was recorded here, for `ttl`.
    recorded: Instant,
    event: Arc<Event>,
}

#[derive(Debug)]
struct Log {
    events: VecDeque<Kept>,
    keep: Keep,
}

/// How full the store is, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Logs (rooms and namespaces) with at least one event.
    pub logs: usize,
    /// Events kept.
    pub events: usize,
    /// Bytes counted.
    pub bytes: usize,
    /// Events dropped to stay within the byte budget, since start.
    pub evicted: u64,
}

/// The history of this process.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    logs: HashMap<Key, Log>,
    /// Each non-empty log by the arrival number of its oldest event: the first entry is
    /// the oldest event of the store.
    fronts: BTreeMap<u64, Key>,
    next_arrival: u64,
    events: usize,
    bytes: usize,
    budget: usize,
    evicted: u64,
}

impl History {
    /// An empty store that holds at most `budget` bytes.
    pub fn new(budget: usize) -> History {
        History {
            inner: Mutex::new(Inner {
                logs: HashMap::new(),
                fronts: BTreeMap::new(),
                next_arrival: 0,
                events: 0,
                bytes: 0,
                budget,
                evicted: 0,
            }),
        }
    }

    /// A new byte budget (a reload); a smaller one drops the oldest events now.
    pub fn set_budget(&self, budget: usize) {
        let mut inner = self.inner.lock();
        inner.budget = budget;
        inner.fit_budget();
    }

    /// Record `event` in the log `key`, which keeps what `keep` says (the latest `keep`
    /// applies to the whole log: a reload that shrinks it trims it).
    pub fn record(&self, key: &Key, keep: Keep, event: Arc<Event>, now: Instant) {
        let mut inner = self.inner.lock();
        if keep.size == 0 || keep.ttl.is_zero() {
            inner.remove_log(key);
            return;
        }
        let arrival = inner.next_arrival;
        inner.next_arrival += 1;
        inner.bytes += event.cost();
        inner.events += 1;
        let log = inner.logs.entry(key.clone()).or_insert_with(|| Log {
            events: VecDeque::new(),
            keep,
        });
        log.keep = keep;
        let was_empty = log.events.is_empty();
        log.events.push_back(Kept {
            arrival,
            recorded: now,
            event,
        });
        if was_empty {
            inner.fronts.insert(arrival, key.clone());
        }
        inner.trim(key, now);
        inner.fit_budget();
    }

    /// Record `event`, which another process kept from before this one started (a
    /// restarted worker is handed the host's history): in its place by time among the
    /// events `key` has, unless it has it already.
    pub fn record_handed(&self, key: &Key, keep: Keep, event: Arc<Event>, now: Instant) {
        let mut inner = self.inner.lock();
        if keep.size == 0 || keep.ttl.is_zero() {
            return;
        }
        let arrival = inner.next_arrival;
        inner.next_arrival += 1;
        let age = event.at.elapsed().unwrap_or_default();
        let recorded = now.checked_sub(age).unwrap_or(now);
        let cost = event.cost();
        let log = inner.logs.entry(key.clone()).or_insert_with(|| Log {
            events: VecDeque::new(),
            keep,
        });
        if log.events.iter().any(|k| k.event.id == event.id) {
            return;
        }
        let at = log
            .events
            .iter()
            .rposition(|k| (k.event.at, k.event.id) <= (event.at, event.id))
            .map_or(0, |i| i + 1);
        let old_front = log.events.front().map(|k| k.arrival);
        log.events.insert(
            at,
            Kept {
                arrival,
                recorded,
                event,
            },
        );
        if at == 0 {
            if let Some(old) = old_front {
                inner.fronts.remove(&old);
            }
            inner.fronts.insert(arrival, key.clone());
        }
        inner.bytes += cost;
        inner.events += 1;
        inner.trim(key, now);
        inner.fit_budget();
    }

    /// Every event kept, as a new process is handed them.
    pub fn export(&self) -> Vec<crate::adapter::Recorded> {
        let inner = self.inner.lock();
        inner
            .logs
            .iter()
            .flat_map(|(key, log)| {
                log.events.iter().map(|k| crate::adapter::Recorded {
                    nsp: key.nsp.clone(),
                    room: key.room.clone(),
                    stamp: k.event.stamp(),
                    name: k.event.name.clone(),
                    args: k.event.args.clone(),
                    attachments: k.event.attachments.clone(),
                })
            })
            .collect()
    }

    /// The events of `key` not seen at `after` (all without it), oldest first, at most
    /// the latest `limit` of them.
    pub fn read(
        &self,
        key: &Key,
        after: Option<&Position>,
        limit: usize,
        now: Instant,
    ) -> Vec<Arc<Event>> {
        let mut inner = self.inner.lock();
        inner.trim(key, now);
        let Some(log) = inner.logs.get(key) else {
            return Vec::new();
        };
        let unseen: Vec<&Kept> = log
            .events
            .iter()
            .filter(|k| after.is_none_or(|p| !p.has_seen(k.event.id)))
            .collect();
        let skip = unseen.len().saturating_sub(limit);
        unseen[skip..].iter().map(|k| k.event.clone()).collect()
    }

    /// Drop every event past its log's `ttl` (called periodically, so that a room that
    /// fell silent frees its memory without being asked about).
    pub fn sweep(&self, now: Instant) {
        let mut inner = self.inner.lock();
        let keys: Vec<Key> = inner.logs.keys().cloned().collect();
        for key in keys {
            inner.trim(&key, now);
        }
    }

    /// Forget a log (its namespace no longer keeps history).
    pub fn forget(&self, key: &Key) {
        self.inner.lock().remove_log(key);
    }

    /// The logs kept, for the relay to apply a new config to them.
    pub fn keys(&self) -> Vec<Key> {
        self.inner.lock().logs.keys().cloned().collect()
    }

    /// How full the store is.
    pub fn usage(&self) -> Usage {
        let inner = self.inner.lock();
        Usage {
            logs: inner.logs.len(),
            events: inner.events,
            bytes: inner.bytes,
            evicted: inner.evicted,
        }
    }
}

impl Inner {
    /// Drop the oldest events of `key` over its size or past its ttl.
    fn trim(&mut self, key: &Key, now: Instant) {
        loop {
            let Some(log) = self.logs.get(key) else {
                return;
            };
            let over = log.events.len() > log.keep.size;
            let expired = log
                .events
                .front()
                .is_some_and(|k| now.saturating_duration_since(k.recorded) > log.keep.ttl);
            if !(over || expired) {
                return;
            }
            self.pop_front(key);
        }
    }

    /// Drop the oldest events of the store until it fits its budget.
    fn fit_budget(&mut self) {
        while self.bytes > self.budget {
            let Some(key) = self.fronts.values().next().cloned() else {
                return;
            };
            self.pop_front(&key);
            self.evicted += 1;
        }
    }

    /// Drop the oldest event of `key`, keeping the index and counts right.
    fn pop_front(&mut self, key: &Key) {
        let Some(log) = self.logs.get_mut(key) else {
            return;
        };
        let Some(gone) = log.events.pop_front() else {
            return;
        };
        self.fronts.remove(&gone.arrival);
        self.bytes -= gone.event.cost();
        self.events -= 1;
        match log.events.front() {
            Some(next) => {
                self.fronts.insert(next.arrival, key.clone());
            }
            None => {
                self.logs.remove(key);
            }
        }
    }

    fn remove_log(&mut self, key: &Key) {
        while self.logs.contains_key(key) {
            self.pop_front(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str) -> Key {
        Key {
            nsp: Arc::from("/"),
            room: Some(Arc::from(room)),
        }
    }

    fn event(origin: u32, seq: u64, args: &str) -> Arc<Event> {
        Arc::new(Event {
            id: EventId { origin, seq },
            at: SystemTime::UNIX_EPOCH,
            name: Arc::from("x"),
            args: Arc::from(args),
            attachments: Vec::new(),
        })
    }

    const KEEP: Keep = Keep {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    fn args(events: &[Arc<Event>]) -> Vec<&str> {
        events.iter().map(|e| &*e.args).collect()
    }

    #[test]
    fn events_handed_over_take_their_place_by_time_once() {
        let store = History::new(1 << 20);
        let now = Instant::now();
        let at = |ms: u64, origin: u32, seq: u64, args: &str| {
            let mut e = (*event(origin, seq, args)).clone();
            e.at = SystemTime::now() - Duration::from_secs(30) + Duration::from_millis(ms);
            Arc::new(e)
        };
        let keep = Keep { size: 10, ..KEEP };
        // Live events first (what a restarted worker saw since it started)...
        store.record(&key("r"), keep, at(300, 1, 30, "c"), now);
        store.record(&key("r"), keep, at(400, 2, 40, "d"), now);
        // ...then the others' history, older, some of it twice.
        store.record_handed(&key("r"), keep, at(100, 1, 10, "a"), now);
        store.record_handed(&key("r"), keep, at(200, 2, 20, "b"), now);
        store.record_handed(&key("r"), keep, at(100, 1, 10, "a"), now);
        store.record_handed(&key("r"), keep, at(400, 2, 40, "d"), now);
        assert_eq!(
            args(&store.read(&key("r"), None, 10, now)),
            ["a", "b", "c", "d"]
        );
        assert_eq!(store.usage().events, 4);
        let exported: Vec<u64> = store.export().iter().map(|r| r.stamp.seq).collect();
        assert_eq!(exported, [10, 20, 30, 40]);
        // The front moved: the oldest goes first when the budget shrinks.
        store.set_budget(store.usage().bytes - 1);
        assert_eq!(args(&store.read(&key("r"), None, 10, now)), ["b", "c", "d"]);
    }

    #[test]
    fn a_log_keeps_the_latest_size_events_oldest_first() {
        let history = History::new(usize::MAX);
        let now = Instant::now();
        for i in 0..5 {
            history.record(&key("a"), KEEP, event(1, i, &format!("[{i}]")), now);
        }
        history.record(&key("b"), KEEP, event(1, 9, "[9]"), now);
        let a = history.read(&key("a"), None, 100, now);
        assert_eq!(args(&a), ["[2]", "[3]", "[4]"]);
        assert_eq!(args(&history.read(&key("a"), None, 2, now)), ["[3]", "[4]"]);
        assert_eq!(args(&history.read(&key("b"), None, 100, now)), ["[9]"]);
        assert!(history.read(&key("c"), None, 100, now).is_empty());
        let usage = history.usage();
        assert_eq!((usage.logs, usage.events), (2, 4));
        assert_eq!(
            usage.bytes,
            a.iter().map(|e| e.cost()).sum::<usize>() + event(1, 9, "[9]").cost()
        );
    }

    #[test]
    fn events_past_the_ttl_are_gone_and_silent_rooms_cost_nothing() {
        let history = History::new(usize::MAX);
        let t0 = Instant::now();
        history.record(&key("a"), KEEP, event(1, 1, "[1]"), t0);
        history.record(
            &key("a"),
            KEEP,
            event(1, 2, "[2]"),
            t0 + Duration::from_secs(30),
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(args(&history.read(&key("a"), None, 10, later)), ["[2]"]);
        history.sweep(t0 + Duration::from_secs(200));
        assert_eq!(history.usage(), Usage::default());
    }

    #[test]
    fn the_budget_drops_the_oldest_event_of_the_store_first() {
        let one = event(1, 0, "[0]").cost();
        let history = History::new(3 * one);
        let now = Instant::now();
        history.record(&key("a"), KEEP, event(1, 0, "[0]"), now);
        history.record(&key("b"), KEEP, event(1, 1, "[1]"), now);
        history.record(&key("a"), KEEP, event(1, 2, "[2]"), now);
        history.record(&key("b"), KEEP, event(1, 3, "[3]"), now);
        assert_eq!(args(&history.read(&key("a"), None, 10, now)), ["[2]"]);
        assert_eq!(
            args(&history.read(&key("b"), None, 10, now)),
            ["[1]", "[3]"]
        );
        assert_eq!(history.usage().evicted, 1);
        history.set_budget(one);
        assert!(history.read(&key("a"), None, 10, now).is_empty());
        assert_eq!(args(&history.read(&key("b"), None, 10, now)), ["[3]"]);
        assert_eq!(history.usage().bytes, one);
    }

    #[test]
    fn a_position_selects_unseen_events_per_origin_whatever_the_interleaving() {
        // Worker 1 saw: 1/10, 2/20, 1/11, 2/21; worker 2 saw them as 2/20, 1/10, 2/21, 1/11.
        let here = History::new(usize::MAX);
        let there = History::new(usize::MAX);
        let keep = Keep {
            size: 10,
            ttl: Duration::from_secs(60),
        };
        let now = Instant::now();
        for (o, s) in [(1, 10), (2, 20), (1, 11), (2, 21)] {
            here.record(&key("a"), keep, event(o, s, &format!("[\"{o}/{s}\"]")), now);
        }
        for (o, s) in [(2, 20), (1, 10), (2, 21), (1, 11)] {
            there.record(&key("a"), keep, event(o, s, &format!("[\"{o}/{s}\"]")), now);
        }
        // A client on worker 1 got the first two, then moved to worker 2.
        let mut seen = Position::default();
        for e in &here.read(&key("a"), None, 10, now)[..2] {
            seen.advance(e.id);
        }
        let rest = there.read(&key("a"), Some(&seen), 10, now);
        assert_eq!(args(&rest), [r#"["2/21"]"#, r#"["1/11"]"#]);
    }

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let mut p = Position::default();
        p.advance(EventId {
            origin: 2,
            seq: 1_733_210_000_000_001,
        });
        p.advance(EventId { origin: 1, seq: 35 });
        p.advance(EventId { origin: 1, seq: 7 });
        let text = p.to_string();
        assert_eq!(text, "1-z.2-h2ddojudq9");
        assert_eq!(text.parse::<Position>(), Ok(p));
        assert_eq!("".parse::<Position>(), Ok(Position::default()));
        // A repeated origin keeps its highest sequence.
        assert_eq!(
            "1-1.1-2".parse::<Position>().map(|p| p.to_string()),
            Ok("1-2".to_owned())
        );
        for bad in [
            "x",
            "1",
            "1-",
            "-1",
            "1-!",
            "1-1..2-2",
            "99999999999-1",
            "1-zzzzzzzzzzzzzz",
        ] {
            assert_eq!(bad.parse::<Position>(), Err(BadPosition), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_ORIGINS).map(|o| format!("{o}-1")).collect();
        assert_eq!(many.join(".").parse::<Position>(), Err(BadPosition));
    }

    #[test]
    fn sequences_continue_above_a_predecessor() {
        let first = Sequence::starting_now(3);
        let a = first.next();
        let b = first.next();
        assert_eq!((a.origin, b.seq), (3, a.seq + 1));
        // A restart comes later than the predecessor's last id on the clock (a worker is
        // restarted after a backoff; here, after the clock has passed it).
        let micros = || {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
        };
        while micros() <= b.seq {
            std::hint::spin_loop();
        }
        let restarted = Sequence::starting_now(3);
        assert!(restarted.next().seq > b.seq);
    }

    #[test]
    fn a_keep_of_nothing_forgets_the_log() {
        let history = History::new(usize::MAX);
        let now = Instant::now();
        history.record(&key("a"), KEEP, event(1, 1, "[1]"), now);
        let off = Keep { size: 0, ..KEEP };
        history.record(&key("a"), off, event(1, 2, "[2]"), now);
        assert_eq!(history.usage(), Usage::default());
    }
}
