//! The relay: namespaces with their policies, sockets, control events, application event
//! routing, acks and presence.
//!
//! Built on the two protocol layers: it is the [`engine::Handler`](crate::engine::Handler)
//! that receives every Engine.IO session and speaks Socket.IO on it. Room storage and
//! fan-out belong to the [`Adapter`] it is given; the relay never
//! keeps rooms of its own beyond each socket's list of what it joined.
//!
//! - [`connection`]: one Engine.IO session's Socket.IO side (packets, namespaces).
//! - [`events`]: application events → targets, acks and refusals.
//! - [`control`]: the `$join`, `$leave`, `$rooms`, `$members` control events and presence.
//! - [`policy`]: a namespace's config compiled for use.
//! - [`socket`]: one socket's state.

pub mod connection;
pub mod control;
pub mod events;
pub mod meters;
pub mod policy;
pub mod socket;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::adapter::Adapter;
use crate::config::Config;
use crate::engine::{Connection, Handler, HandshakeInfo, Session};

pub use meters::Meters;
pub use policy::Policy;

/// Errors building a relay from config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace's join pattern does not compile (validation should catch this first).
    #[error("namespaces.{namespace}.join: {source}")]
    Pattern {
        /// The namespace.
        namespace: String,
        /// The regex error.
        source: regex::Error,
    },
}

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

impl Namespace {
    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }
}

/// State shared by every connection of the relay.
pub struct Shared {
    /// Declared namespaces by name. Reload replaces the map; existing sockets keep their
    /// `Namespace` and see its policy updates.
    namespaces: RwLock<Arc<HashMap<String, Arc<Namespace>>>>,
    /// Room storage and fan-out.
    pub bus: Arc<dyn Adapter>,
    /// Instruments.
    pub meters: Meters,
    /// How long a session may go without joining a namespace, in milliseconds.
    connect_timeout_ms: AtomicUsize,
    /// The largest `max_attachments` of any namespace: the parser's bound before the
    /// packet's namespace is known.
    max_attachments: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
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

    /// The parser's attachment bound.
    pub fn max_attachments(&self) -> usize {
        self.max_attachments.load(Ordering::Relaxed)
    }

    /// Refresh the rooms gauge of a namespace after its memberships changed.
    pub fn count_rooms(&self, nsp: &str) {
        self.meters
            .rooms
            .with_label_values(&[nsp])
            .set(i64::try_from(self.bus.room_count(nsp)).unwrap_or(i64::MAX));
    }
}

/// The relay: the Engine.IO handler that serves Socket.IO by policy.
#[derive(Debug, Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay for `config`, delivering through `bus`.
    pub fn new(config: &Config, bus: Arc<dyn Adapter>, meters: Meters) -> Result<Relay, Error> {
        let shared = Arc::new(Shared {
            namespaces: RwLock::new(Arc::new(HashMap::new())),
            bus,
            meters,
            connect_timeout_ms: AtomicUsize::new(0),
            max_attachments: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&shared);
        shared
            .bus
            .set_departure_hook(Box::new(move |nsp, member, room, count| {
                if let Some(shared) = weak.upgrade() {
                    control::announce_departed(&shared, nsp, member, room, count);
                    shared.count_rooms(nsp);
                }
            }));
        let relay = Relay { shared };
        relay.reconfigure(config)?;
        Ok(relay)
    }

    /// Apply a new config: policies of existing namespaces change in place, new ones
    /// appear; a namespace no longer declared refuses new connections while its
    /// connected sockets stay.
    pub fn reconfigure(&self, config: &Config) -> Result<(), Error> {
        let declared = config.effective_namespaces();
        let mut compiled = HashMap::new();
        for (name, ns) in &declared {
            let policy = Policy::compile(ns).map_err(|source| Error::Pattern {
                namespace: name.clone(),
                source,
            })?;
            compiled.insert(name.clone(), policy);
        }
        let old = self.shared.namespaces.read().clone();
        let mut next = HashMap::new();
        for (name, policy) in compiled {
            let ns = match old.get(&name) {
                Some(existing) => {
                    *existing.policy.write() = policy;
                    existing.clone()
                }
                None => Arc::new(Namespace {
                    name: Arc::from(name.as_str()),
                    policy: RwLock::new(policy),
                    counters: Counters::new(&self.shared.meters, &name),
                }),
            };
            next.insert(name, ns);
        }
        let max_attachments = declared
            .values()
            .map(|n| n.limits.max_attachments)
            .max()
            .unwrap_or(0);
        self.shared
            .max_attachments
            .store(max_attachments, Ordering::Relaxed);
        let ms = usize::try_from(config.engine.connect_timeout.as_millis()).unwrap_or(usize::MAX);
        self.shared.connect_timeout_ms.store(ms, Ordering::Relaxed);
        *self.shared.namespaces.write() = Arc::new(next);
        Ok(())
    }

    /// The shared state (for the server API and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Handler for Relay {
    fn open(&self, session: &Arc<Session>, info: &HandshakeInfo) -> Arc<dyn Connection> {
        connection::Conn::open(self.shared.clone(), session.clone(), info)
    }
}
