//! The relay: namespaces with their policies, sockets, control events, application event
//! routing, acks and presence.
//!
//! Built on the two protocol layers: it is the [`engine::Handler`](crate::engine::Handler)
//! that receives every Engine.IO session and speaks Socket.IO on it. Room storage and
//! fan-out belong to the [`Adapter`] it is given; the relay never
//! keeps rooms of its own beyond each socket's list of what it joined.
//!
//! - [`connection`]: one Engine.IO session's Socket.IO side (packets, namespaces).
//! - [`events`]: application events → targets and acks.
//! - [`backend`]: the server API's calls, answered for this process's sockets.
//! - [`announce`]: the namespace's `welcome`, and `$presence` for connections.
//! - [`depart`]: a socket leaving its namespace, and everyone told.
//! - [`control`]: the `$join`, `$leave`, `$rooms`, `$members` control events and presence.
//! - [`reply`]: what the relay sends on its own account (refusals, `$error`) and the
//!   one packet → queue item encoding that replies and fan-out share.
//! - [`shared`]: the state every connection shares (namespaces, bus, meters).
//! - [`policy`]: a namespace's config compiled for use.
//! - [`meta`]: the sender's metadata appended to relayed events.
//! - [`auth`]: who may connect (JWT, cookies) and the identity a socket keeps.
//! - [`socket`]: one socket's state.
//! - [`rates`]: a connection's rate limits, kept across namespace reconnects.
//! - [`bucket`]: the token bucket every rate limit uses.
//! - [`addresses`]: each client address's event budget, shared by its connections.
//! - [`history`]: the last events of each room, and the positions readers have reached.
//! - [`recall`]: `$history` and `$join`'s `history`, answered from it.
//! - [`recovery`]: what connection state recovery keeps (offsets, the log of delivered
//!   events, the dropped sockets, pids); [`deliver`] sends events of namespaces with
//!   `recovery` through it, [`restore`] answers the CONNECT that claims a socket back.
//! - [`meters`]: the relay's instruments.
//!
//! Imports inside the relay point one way, down this list: `backend`, `connection` →
//! `events`, `depart` → `announce` → `control` → `reply` → `shared`, `policy`, `socket` → `meta`,
//! `auth`; this file composes them into the [`Relay`] handler, and none of them imports
//! it.

pub mod addresses;
pub mod announce;
pub mod asked;
pub mod asks;
pub mod auth;
pub mod backend;
pub mod bucket;
pub mod connection;
pub mod control;
pub mod deliver;
pub mod depart;
pub mod events;
pub mod history;
pub mod meta;
pub mod meters;
pub mod policy;
pub mod rates;
pub mod recall;
pub mod recovery;
pub mod reply;
pub mod restore;
pub mod shared;
pub mod socket;

use std::collections::HashMap;
use std::sync::Arc;

use crate::adapter::Adapter;
use crate::config::Config;
use crate::engine::{Connection, Handler, HandshakeInfo, Session};

pub use meters::Meters;
pub use policy::Policy;
pub use shared::{Counters, Membership, MembershipSink, Namespace, Shared};

/// Errors building a relay from config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace's policy does not compile: its join pattern, or a key file of its
    /// `auth.jwt` (validation catches these first; a file can change in between).
    #[error("namespaces.{namespace}.{source}")]
    Policy {
        /// The namespace.
        namespace: String,
        /// What did not compile.
        source: policy::CompileError,
    },
}

/// The relay: the Engine.IO handler that serves Socket.IO by policy.
#[derive(Debug, Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay for `config`, delivering through `bus`.
    pub fn new(config: &Config, bus: Arc<dyn Adapter>, meters: Meters) -> Result<Relay, Error> {
        let shared = Arc::new(Shared::new(bus, meters));
        let weak = Arc::downgrade(&shared);
        shared
            .bus
            .set_departure_hook(Box::new(move |nsp, member, room, count| {
                if let Some(shared) = weak.upgrade() {
                    depart::park_departed(&shared, nsp, member, room);
                    if crate::adapter::is_listed(room) {
                        control::announce_departed(&shared, nsp, member, room, count);
                        shared.report_departed(nsp, member, room, count);
                    } else {
                        announce::departed(&shared, nsp, member, count);
                    }
                    shared.count_rooms(nsp);
                }
            }));
        let weak = Arc::downgrade(&shared);
        shared.bus.set_record_hook(Box::new(move |stamped| {
            weak.upgrade()
                .is_some_and(|shared| events::record_remote(&shared, stamped))
        }));
        let weak = Arc::downgrade(&shared);
        shared.bus.set_parking_hook(Box::new(move |parking| {
            if let Some(shared) = weak.upgrade() {
                depart::parking(&shared, parking);
            }
        }));
        let weak = Arc::downgrade(&shared);
        shared.bus.set_recovery_source(Box::new(move || {
            weak.upgrade()
                .map(|shared| crate::adapter::Kept {
                    parks: shared.recovery.parked().records(),
                    logged: shared.recovery.ledger().log.export(),
                    recorded: shared.history.export(),
                })
                .unwrap_or_default()
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
            let policy = Policy::compile(ns).map_err(|source| Error::Policy {
                namespace: name.clone(),
                source,
            })?;
            compiled.insert(name.clone(), policy);
        }
        let max_attachments = declared
            .values()
            .map(|n| n.limits.max_attachments)
            .max()
            .unwrap_or(0);
        // Host-wide, shared out among the workers as the handshake limits are (the
        // kernel spreads an address's connections over them).
        let workers = u32::try_from(config.server.workers.resolve().max(1)).unwrap_or(1);
        self.shared.addresses.set_limits(
            config
                .server
                .events_per_ip_per_second
                .div_ceil(workers)
                .max(1),
            config.server.event_burst_per_ip.div_ceil(workers).max(1),
        );
        self.shared
            .history
            .set_budget(usize::try_from(config.server.history_budget.0).unwrap_or(usize::MAX));
        self.shared
            .recovery
            .set_budget(usize::try_from(config.server.recovery_budget.0).unwrap_or(usize::MAX));
        self.shared
            .set_drop_notice(config.engine.ping_interval + config.engine.ping_timeout);
        self.shared.set_pending_budget(
            usize::try_from(config.engine.pending_budget.0).unwrap_or(usize::MAX),
        );
        // A namespace that no longer keeps history (or is gone) frees what it kept.
        for key in self.shared.history.keys() {
            let keeps = declared
                .get(&*key.nsp)
                .is_some_and(|ns| ns.history.is_some());
            if !keeps {
                self.shared.history.forget(&key);
            }
        }
        self.shared.count_history();
        self.shared.install(
            compiled,
            max_attachments,
            config.engine.connect_timeout,
            config.engine.attachment_timeout,
        );
        Ok(())
    }

    /// Drop expired history (and what recovery keeps past its time) every few seconds,
    /// so that a room that fell silent frees its memory without anyone asking about it;
    /// ends with the relay.
    pub fn spawn_history_sweep(&self) {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let now = std::time::Instant::now();
                shared.history.sweep(now);
                shared.count_history();
                shared.recovery.expire(now, |nsp| {
                    let ns = shared.namespace(nsp)?;
                    ns.policy().config.recovery.map(|r| r.max_disconnection)
                });
                shared.count_recovery();
            }
        });
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
