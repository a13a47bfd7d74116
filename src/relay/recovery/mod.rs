//! Connection state recovery (the Socket.IO 4.6+ extension), host-wide: what a process
//! keeps so that a client that dropped for a moment gets its socket back — id, rooms,
//! user — with every event it missed, in order, on whichever worker it comes back to.
//!
//! # Offsets
//! In a namespace with `recovery`, every event delivered to a client ends with one more
//! argument, a string: the delivering process's [`Position`] (the last sequence number it
//! had delivered per origin, see [`history`](super::history)) just after this event. The
//! client keeps the last one it got and sends it back as `auth.offset`. Because each
//! process delivers under one lock (the [`Ledger`]'s) in the order it advances its
//! position, "seen at this position" means exactly "delivered before", on any process:
//! each origin's events reach every process in sequence order (its sequence numbers are
//! taken under the same lock, and the bus is FIFO per link). The origin's offset travels
//! in the frames it sends to the other processes; each replaces it with its own
//! ([`with_offset`]) before delivering.
//!
//! # Limits (known)
//! - A peer link over its backlog bound drops broadcasts (counted in
//!   `iorelay_messages_dropped_total{reason="bus_backlog"}`); a client of the receiving
//!   worker may then miss them for good, recovery included.
//! - A restored socket's missed events are the log's events to the rooms it was in when
//!   it dropped (as the official server does): one joined after its last offset may get
//!   that room's events from before the join.
//! - The wait for what the client saw on its old worker ends after a second; events of a
//!   link backlogged longer than that are delivered to the restored socket again.
//! - Rooms are restored as they were, not checked again against the join policy and the
//!   new CONNECT's token claims.
//!
//! # What is kept
//! - [`log`]: every delivered event of the namespace, with whom it reached, for the
//!   window (and the time a drop takes to notice), under `server.recovery_budget`.
//! - [`parked`]: the dropped sockets, kept by every process.
//! - [`pid`]: the private id that lets a client claim its socket, checkable by any
//!   process of the host.
//!
//! How a CONNECT uses them is in [`restore`](super::restore); this module owns the state
//! and its bounds.

pub mod log;
pub mod parked;
pub mod pid;
pub mod remote;
pub mod sessions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard, RwLock};
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::engine::{Frame, Outgoing};
use crate::relay::history::Position;
pub use log::{Entry, Log};
pub use parked::{Park, Parked};
pub use pid::{Claim, Key};

/// Bytes of the budget one parked socket stands for, to bound their number.
const PARKED_COST: usize = 2048;

/// What this process has delivered, and what it keeps of it: taken for every delivery
/// of a namespace with `recovery`, so that the order of deliveries is the order of
/// positions.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The last sequence number delivered here, per origin.
    pub position: Position,
    /// The events kept.
    pub log: Log,
}

/// This process's recovery state.
#[derive(Debug)]
pub struct Recovery {
    key: RwLock<Key>,
    ledger: Mutex<Ledger>,
    parked: Mutex<Parked>,
    /// Woken when a socket is parked or the position advances (a restore waiting for
    /// either).
    changed: Notify,
    /// When this process started: a new one (a restarted worker) learns the parked
    /// sockets from its peers once linked, so for a while "not kept here" proves nothing.
    started: Instant,
    /// The cluster's store, when sessions are kept there (the streams adapter).
    remote: std::sync::OnceLock<Arc<dyn remote::Remote>>,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            key: RwLock::new(Key::random()),
            ledger: Mutex::new(Ledger::default()),
            parked: Mutex::new(Parked::new(0)),
            changed: Notify::new(),
            started: Instant::now(),
            remote: std::sync::OnceLock::new(),
        }
    }
}

impl Recovery {
    /// Use the host's key (a worker gets the master's before it serves anyone).
    pub fn set_key(&self, key: Key) {
        *self.key.write() = key;
    }

    /// Keep sessions in the cluster's store too (the first one set stays).
    pub fn set_remote(&self, remote: Arc<dyn remote::Remote>) {
        let _ = self.remote.set(remote);
    }

    /// The cluster's store of sessions, if there is one.
    pub fn remote(&self) -> Option<&Arc<dyn remote::Remote>> {
        self.remote.get()
    }

    /// The host's key.
    pub fn key(&self) -> Key {
        self.key.read().clone()
    }

    /// `server.recovery_budget`: the log's bytes, and the parked sockets' number.
    pub fn set_budget(&self, bytes: usize) {
        self.ledger.lock().log.set_budget(bytes);
        self.parked.lock().set_capacity(bytes / PARKED_COST);
    }

    /// The ledger, locked: hold it across a delivery and nothing else (never across an
    /// await).
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock()
    }

    /// The dropped sockets, locked.
    pub fn parked(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock()
    }

    /// Whether this process is new enough that its peers may not have told it what they
    /// keep yet.
    pub fn is_new(&self, settle: Duration) -> bool {
        self.started.elapsed() < settle
    }

    /// Wake whoever waits for a park or a delivery.
    pub fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// Wait until `ready` holds, re-checked after every change, or until `deadline`;
    /// returns whether it holds.
    pub async fn wait_until(&self, deadline: Instant, ready: impl Fn() -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return ready();
            }
        }
    }

    /// Forget what is past its time: `window` gives a namespace's `max_disconnection`
    /// (none: no `recovery`); the log keeps each event for its namespace's retention.
    pub fn expire(&self, now: Instant, window: impl Fn(&str) -> Option<Duration>) {
        self.ledger
            .lock()
            .log
            .expire(now, |nsp| window(nsp).is_some());
        self.parked.lock().expire(now, &window);
    }
}

/// How long a namespace's log keeps an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

impl Retention {
    /// For a namespace whose window is `window`: the window, plus the time the server
    /// may take to notice a drop (`notice`: a ping interval and timeout), plus a margin —
    /// a client may have missed events delivered to its dead connection before the drop
    /// was noticed.
    pub fn of(window: Duration, notice: Duration) -> Retention {
        Retention(window + notice + Duration::from_secs(5))
    }
}

/// `offset` as the JSON string argument it is sent as.
pub fn offset_arg(offset: &str) -> Box<RawValue> {
    RawValue::from_string(format!("\"{offset}\"")).expect("a position is plain ASCII")
}

/// Whether `json` (one JSON value) is an offset: a string holding a position.
pub fn is_offset_json(json: &str) -> bool {
    json.strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .is_some_and(looks_like_position)
}

/// `origin-seq` pairs joined by `.` (what [`Position`] writes), or nothing.
fn looks_like_position(text: &str) -> bool {
    text.is_empty()
        || text.split('.').all(|pair| {
            pair.split_once('-').is_some_and(|(origin, seq)| {
                !origin.is_empty()
                    && origin.bytes().all(|b| b.is_ascii_digit())
                    && !seq.is_empty()
                    && seq
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            })
        })
}

/// `item` (an event) with `offset` as its last argument: in place of the offset it ends
/// with, or added when it ends with none (an event from a process whose config did not
/// have `recovery` yet, during a reload).
pub fn with_offset(item: &Outgoing, offset: &str) -> Outgoing {
    let frames = item.frames();
    let Some(Frame::Text(text)) = frames.first() else {
        return item.clone();
    };
    let Some(body) = text.as_str().strip_suffix(']') else {
        return item.clone();
    };
    // Offsets hold no quote: the last one before the end opens a trailing offset.
    let kept = body
        .strip_suffix('"')
        .and_then(|b| b.rfind('"'))
        .filter(|&open| body[..open].ends_with(',') && is_offset_json(&body[open..]))
        .map_or(body, |open| &body[..open - 1]);
    let mut out = String::with_capacity(kept.len() + offset.len() + 4);
    out.push_str(kept);
    out.push_str(",\"");
    out.push_str(offset);
    out.push_str("\"]");
    let first = Frame::Text(out.into());
    match item {
        Outgoing::Group(group) => {
            let mut frames = group.to_vec();
            frames[0] = first;
            Outgoing::Group(Arc::from(frames))
        }
        Outgoing::Paced(_) => Outgoing::Paced(first),
        Outgoing::Latest(key, _) => Outgoing::Latest(key.clone(), first),
        Outgoing::Frame(_) | Outgoing::Pong(_) => Outgoing::Frame(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(item: &Outgoing) -> String {
        match &item.frames()[0] {
            Frame::Text(t) => t.as_str().to_owned(),
            Frame::Binary(_) => panic!("binary"),
        }
    }

    #[test]
    fn the_offset_argument_is_replaced_in_place() {
        let item = Outgoing::Frame(Frame::message(r#"2/chat,["m","a \"quoted\" one","1-abc"]"#));
        assert_eq!(
            text(&with_offset(&item, "1-abd.2-x")),
            r#"42/chat,["m","a \"quoted\" one","1-abd.2-x"]"#
        );
        let binary = Outgoing::Group(Arc::from(vec![
            Frame::message(r#"51-["b",{"_placeholder":true,"num":0},"0-1"]"#),
            Frame::Binary(Bytes::from_static(b"\x01")),
        ]));
        let spliced = with_offset(&binary, "0-2");
        assert_eq!(
            text(&spliced),
            r#"451-["b",{"_placeholder":true,"num":0},"0-2"]"#
        );
        assert_eq!(spliced.frames().len(), 2);
    }

    #[test]
    fn an_event_without_an_offset_gets_one_added() {
        for (packet, spliced) in [
            (r#"2["m",{"a":1}]"#, r#"42["m",{"a":1},"0-1"]"#),
            (r#"2["m"]"#, r#"42["m","0-1"]"#),
            (r#"2["m","hello"]"#, r#"42["m","hello","0-1"]"#),
            (r#"2["m","a,\"b"]"#, r#"42["m","a,\"b","0-1"]"#),
        ] {
            let item = Outgoing::Frame(Frame::message(packet));
            assert_eq!(text(&with_offset(&item, "0-1")), spliced);
        }
        let not_an_event = Outgoing::Frame(Frame::message(r#"2"x""#));
        assert_eq!(text(&with_offset(&not_an_event, "0-1")), r#"42"x""#);
        assert!(is_offset_json(r#""1-abc.22-z0""#));
        assert!(is_offset_json(r#""""#));
        for not in [
            r#""hello""#,
            r#""1-""#,
            r#""-1""#,
            r#""1-A""#,
            "1",
            r#""1-a.""#,
        ] {
            assert!(!is_offset_json(not), "{not}");
        }
    }

    #[tokio::test]
    async fn a_waiter_sees_a_change_made_after_it_checked() {
        let recovery = Arc::new(Recovery::default());
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let (recovery, flag) = (recovery.clone(), flag.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                recovery
                    .wait_until(deadline, || flag.load(std::sync::atomic::Ordering::SeqCst))
                    .await
            })
        };
        tokio::task::yield_now().await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        recovery.changed();
        assert!(waiter.await.unwrap());
        let deadline = Instant::now();
        assert!(!recovery.wait_until(deadline, || false).await);
    }
}
