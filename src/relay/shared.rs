//! What every connection of the relay shares: the declared namespaces (each with its
//! policy and counters), the bus, the instruments, the limits that apply before a
//! packet's namespace is known, and the membership sink that hears every join and leave
//! (the daemon makes them webhooks; the relay knows nothing of those).
//!
//! Owns that state and its swap on reload; compiling the config into policies (and the
//! errors doing so) is [`Relay`](super::Relay)'s job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use super::addresses::Addresses;
use super::history::{History, Sequence};
use super::meters::Meters;
use super::policy::Policy;
use super::recovery::{Recovery, Retention};
use super::socket::Socket;
use crate::adapter::{Adapter, Member};
use crate::engine::BoxFuture;

/// A declared namespace and its current policy.
#[derive(Debug)]
pub struct Namespace {
    /// Its name, `/` or `/chat`.
    pub name: Arc<str>,
    /// Swapped as a whole on reload; sockets read it per event.
    policy: RwLock<Arc<Policy>>,
    /// Its per-event counters, resolved once (a label lookup hashes and locks).
    pub counters: Counters,
}

impl Namespace {
    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }
}

/// A namespace's per-event counters (`namespace` label already applied).
#[derive(Debug, Clone)]
pub struct Counters {
    /// Events received from clients.
    pub received: prometheus::IntCounter,
    /// Event copies queued for recipients.
    pub delivered: prometheus::IntCounter,
}

impl Counters {
    fn new(meters: &Meters, nsp: &str) -> Counters {
        Counters {
            received: meters.received.with_label_values(&[nsp]),
            delivered: meters.delivered.with_label_values(&[nsp]),
        }
    }
}

/// What holds a socket: its connection, which can end it from the server's side.
pub trait Owner: Send + Sync {
    /// Disconnect the socket of namespace `nsp` as the server (the client hears a
    /// DISCONNECT); false when it was no longer connected.
    fn disconnect(&self, nsp: &str) -> BoxFuture<'_, bool>;
}

/// A socket of this process as the server API reaches it.
#[derive(Clone)]
pub struct Held {
    /// The socket.
    pub socket: Arc<Socket>,
    /// Its connection.
    pub owner: Weak<dyn Owner>,
}

/// A socket entered or left a room: what the membership sink (the webhooks) hears.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The namespace.
    pub nsp: Arc<str>,
    /// The room.
    pub room: Arc<str>,
    /// The socket.
    pub socket: Arc<str>,
    /// Its display name.
    pub user: Option<Arc<str>>,
    /// Entered (`true`) or left.
    pub joined: bool,
    /// The room's host-wide member count right after, as the bus returned it.
    pub count: usize,
    /// The member was on another process, which is gone (every survivor hears of it).
    pub departed: bool,
}

/// Where membership changes go; set once by the daemon.
pub type MembershipSink = Box<dyn Fn(Membership) + Send + Sync>;

/// State shared by every connection of the relay.
pub struct Shared {
    /// Declared namespaces by name. Reload replaces the map; existing sockets keep their
    /// `Namespace` and see its policy updates.
    namespaces: RwLock<Arc<HashMap<String, Arc<Namespace>>>>,
    /// Room storage and fan-out.
    pub bus: Arc<dyn Adapter>,
    /// Instruments.
    pub meters: Meters,
    /// Each client address's event budget.
    pub addresses: Addresses,
    /// The rooms' recent events (namespaces with `history`).
    pub history: History,
    /// Ids for the events this process accepts.
    pub sequence: Sequence,
    /// What connection state recovery keeps (namespaces with `recovery`).
    pub recovery: Recovery,
    /// How long a session may go without joining a namespace, in milliseconds.
    connect_timeout_ms: AtomicUsize,
    /// How long a dropped connection may take to notice (a ping interval and timeout),
    /// in milliseconds.
    drop_notice_ms: AtomicUsize,
    /// How long a binary packet may wait for its attachments, in milliseconds.
    attachment_timeout_ms: AtomicUsize,
    /// `engine.pending_budget`: most bytes of incomplete binary packets held in all.
    pending_budget: AtomicUsize,
    /// Bytes of incomplete binary packets held now, by every connection of the process.
    pending: AtomicUsize,
    /// The largest `max_attachments` of any namespace: the parser's bound before the
    /// packet's namespace is known.
    max_attachments: AtomicUsize,
    /// This process's connected sockets by id, for the server API.
    held: RwLock<HashMap<Arc<str>, Held>>,
    /// Whether any namespace's `auth` reads the handshake's cookies or `Authorization`:
    /// only then does a connection keep them (up to 8 KiB each), so that a relay
    /// without such auth spends nothing per connection on them.
    reads_handshake: AtomicBool,
    /// Whether any namespace's `meta` asks for `origin`: only then does a socket keep its
    /// handshake's `Origin`.
    keeps_origin: AtomicBool,
    /// Hears every join and leave of this process's sockets (none: nobody listens).
    membership: std::sync::OnceLock<MembershipSink>,
    /// Hears the clients' answers to broadcasts with acks (none: nobody asks).
    acks: std::sync::OnceLock<super::asked::AckSink>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// No namespaces yet (until [`Shared::install`]), delivering through `bus`.
    pub fn new(bus: Arc<dyn Adapter>, meters: Meters) -> Shared {
        Shared {
            namespaces: RwLock::new(Arc::new(HashMap::new())),
            bus,
            meters,
            addresses: Addresses::new(u32::MAX, u32::MAX),
            history: History::new(0),
            sequence: Sequence::starting_now(0),
            recovery: Recovery::default(),
            connect_timeout_ms: AtomicUsize::new(0),
            attachment_timeout_ms: AtomicUsize::new(0),
            drop_notice_ms: AtomicUsize::new(0),
            pending_budget: AtomicUsize::new(usize::MAX),
            pending: AtomicUsize::new(0),
            max_attachments: AtomicUsize::new(0),
            held: RwLock::new(HashMap::new()),
            reads_handshake: AtomicBool::new(false),
            keeps_origin: AtomicBool::new(false),
            membership: std::sync::OnceLock::new(),
            acks: std::sync::OnceLock::new(),
        }
    }

    /// Tell `sink` of every join and leave from now on (the first sink set stays).
    pub fn set_membership_sink(&self, sink: MembershipSink) {
        let _ = self.membership.set(sink);
    }

    /// Tell `sink` the clients' answers to broadcasts with acks (the first sink set
    /// stays).
    pub fn set_ack_sink(&self, sink: super::asked::AckSink) {
        let _ = self.acks.set(sink);
    }

    /// A client answered a broadcast with acks.
    pub fn acked(&self, acked: super::asked::Acked) {
        if let Some(sink) = self.acks.get() {
            sink(acked);
        }
    }

    /// `socket` entered (`joined`) or left `room`, which has `count` members now.
    pub fn report_membership(&self, socket: &Socket, room: &str, joined: bool, count: usize) {
        if let Some(sink) = self.membership.get() {
            sink(Membership {
                nsp: socket.nsp.clone(),
                room: Arc::from(room),
                socket: socket.id().clone(),
                user: socket.user().cloned(),
                joined,
                count,
                departed: false,
            });
        }
    }

    /// `member` of another process, which is gone, left `room` (`count` members now).
    pub fn report_departed(&self, nsp: &str, member: &Member, room: &str, count: usize) {
        if let Some(sink) = self.membership.get() {
            sink(Membership {
                nsp: Arc::from(nsp),
                room: Arc::from(room),
                socket: member.id.clone(),
                user: member.user.clone(),
                joined: false,
                count,
                departed: true,
            });
        }
    }

    /// Whether new connections must keep their handshake's cookies and `Authorization`
    /// (a reload that adds such auth applies to connections made after it).
    pub fn reads_handshake(&self) -> bool {
        self.reads_handshake.load(Ordering::Relaxed)
    }

    /// Whether new connections must keep their handshake's `Origin` (for `meta`'s
    /// `origin`; a reload that asks for it applies to connections made after it).
    pub fn keeps_origin(&self) -> bool {
        self.keeps_origin.load(Ordering::Relaxed)
    }

    /// Put compiled policies in force: a namespace declared before keeps its identity
    /// (its sockets see the new policy), a new one appears, one missing from `policies`
    /// refuses new connections while its connected sockets stay.
    pub fn install(
        &self,
        policies: HashMap<String, Arc<Policy>>,
        max_attachments: usize,
        connect_timeout: Duration,
        attachment_timeout: Duration,
    ) {
        let reads = policies.values().any(|p| p.gate.reads_handshake());
        self.reads_handshake.store(reads, Ordering::Relaxed);
        let origin = policies.values().any(|p| p.wants_origin());
        self.keeps_origin.store(origin, Ordering::Relaxed);
        let old = self.namespaces.read().clone();
        let mut next = HashMap::with_capacity(policies.len());
        for (name, policy) in policies {
            let ns = match old.get(&name) {
                Some(existing) => {
                    *existing.policy.write() = policy;
                    existing.clone()
                }
                None => Arc::new(Namespace {
                    name: Arc::from(name.as_str()),
                    policy: RwLock::new(policy),
                    counters: Counters::new(&self.meters, &name),
                }),
            };
            next.insert(name, ns);
        }
        self.max_attachments
            .store(max_attachments, Ordering::Relaxed);
        let ms = usize::try_from(connect_timeout.as_millis()).unwrap_or(usize::MAX);
        self.connect_timeout_ms.store(ms, Ordering::Relaxed);
        let ms = usize::try_from(attachment_timeout.as_millis()).unwrap_or(usize::MAX);
        self.attachment_timeout_ms.store(ms, Ordering::Relaxed);
        *self.namespaces.write() = Arc::new(next);
    }

    /// Look up a declared namespace.
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().get(name).cloned()
    }

    /// The declared namespaces' names, sorted.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.namespaces.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// The connect timeout in force.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed) as u64)
    }

    /// Set `engine.pending_budget` (a reload applies to what arrives next).
    pub fn set_pending_budget(&self, bytes: usize) {
        self.pending_budget.store(bytes, Ordering::Relaxed);
    }

    /// Account for a connection's incomplete binary packet growing by `grow` bytes;
    /// false (and nothing counted) when growing would go over
    /// the budget.
    pub fn hold_pending(&self, grow: usize) -> bool {
        let budget = self.pending_budget.load(Ordering::Relaxed);
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(grow).filter(|&total| total <= budget)
            })
            .is_ok()
    }

    /// Bytes of a connection's incomplete binary packet no longer held.
    pub fn release_pending(&self, bytes: usize) {
        // Never below zero, whatever a caller gets wrong.
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Bytes of incomplete binary packets held now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The attachment deadline in force.
    pub fn attachment_timeout(&self) -> Duration {
        Duration::from_millis(self.attachment_timeout_ms.load(Ordering::Relaxed) as u64)
    }

    /// The parser's attachment bound.
    pub fn max_attachments(&self) -> usize {
        self.max_attachments.load(Ordering::Relaxed)
    }

    /// Keep a connected socket reachable by the server API until [`Shared::release`].
    pub fn hold(&self, socket: &Arc<Socket>, owner: Weak<dyn Owner>) {
        let held = Held {
            socket: socket.clone(),
            owner,
        };
        self.held.write().insert(socket.id().clone(), held);
    }

    /// Forget a socket that left.
    pub fn release(&self, id: &str) {
        self.held.write().remove(id);
    }

    /// A connected socket of this process.
    pub fn held(&self, id: &str) -> Option<Held> {
        self.held.read().get(id).cloned()
    }

    /// This process's connected sockets of `nsp` (of every namespace when `None`).
    pub fn held_in(&self, nsp: Option<&str>) -> Vec<Held> {
        self.held
            .read()
            .values()
            .filter(|h| nsp.is_none_or(|n| *h.socket.nsp == *n))
            .cloned()
            .collect()
    }

    /// Refresh the history instruments after the store changed.
    pub fn count_history(&self) {
        let usage = self.history.usage();
        let m = &self.meters;
        m.history_events
            .set(i64::try_from(usage.events).unwrap_or(i64::MAX));
        m.history_bytes
            .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
        m.history_evicted
            .inc_by(usage.evicted.saturating_sub(m.history_evicted.get()));
    }

    /// How long a dropped connection may take to notice (`engine`'s ping interval plus
    /// timeout).
    pub fn set_drop_notice(&self, notice: Duration) {
        let ms = usize::try_from(notice.as_millis()).unwrap_or(usize::MAX);
        self.drop_notice_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the recovery log keeps an event of a namespace with `window`.
    pub fn retention(&self, window: Duration) -> Retention {
        let notice = self.drop_notice_ms.load(Ordering::Relaxed) as u64;
        Retention::of(window, Duration::from_millis(notice))
    }

    /// Refresh the recovery gauges.
    pub fn count_recovery(&self) {
        let usage = self.recovery.ledger().log.usage();
        let parked = self.recovery.parked().len();
        let m = &self.meters;
        m.recovery_sessions
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
        m.recovery_events
            .set(i64::try_from(usage.events).unwrap_or(i64::MAX));
        m.recovery_bytes
            .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
        m.recovery_evicted
            .inc_by(usage.evicted.saturating_sub(m.recovery_evicted.get()));
    }

    /// Refresh the rooms gauge of a namespace after its memberships changed.
    pub fn count_rooms(&self, nsp: &str) {
        self.meters
            .rooms
            .with_label_values(&[nsp])
            .set(i64::try_from(self.bus.room_count(nsp)).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::LocalAdapter;
    use crate::config::NamespaceConfig;

    fn policies(names: &[(&str, bool)]) -> HashMap<String, Arc<Policy>> {
        names
            .iter()
            .map(|(name, echo)| {
                let config = NamespaceConfig {
                    echo: *echo,
                    ..NamespaceConfig::default()
                };
                let policy = Policy::compile(&config).expect("valid policy");
                ((*name).to_owned(), policy)
            })
            .collect()
    }

    /// A reload keeps a declared namespace's identity (its sockets hold it) and swaps
    /// its policy in place; a namespace no longer declared is no longer found.
    #[test]
    fn install_swaps_policies_in_place() {
        let shared = Shared::new(Arc::new(LocalAdapter::new()), Meters::default());
        shared.install(
            policies(&[("/", false), ("/gone", false)]),
            2,
            Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let root = shared.namespace("/").expect("declared");
        assert!(!root.policy().config.echo);
        assert_eq!(shared.namespace_names(), vec!["/", "/gone"]);

        shared.install(
            policies(&[("/", true)]),
            7,
            Duration::from_millis(1500),
            Duration::from_millis(700),
        );
        let again = shared.namespace("/").expect("still declared");
        assert!(Arc::ptr_eq(&root, &again), "the same namespace");
        assert!(root.policy().config.echo, "held copies see the new policy");
        assert!(shared.namespace("/gone").is_none());
        assert_eq!(shared.max_attachments(), 7);
        assert_eq!(shared.connect_timeout(), Duration::from_millis(1500));
        assert_eq!(shared.attachment_timeout(), Duration::from_millis(700));
    }
}
