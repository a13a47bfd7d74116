//! Cluster-wide presence between iorelay nodes: each node's gateway (in the master)
//! publishes its host's memberships and hears the other nodes', so that counts,
//! `$rooms`, `$members`, `$presence` and the room webhooks span the cluster.
//!
//! **Where the memberships come from.** A worker reports each join and leave of its own
//! sockets (listed rooms, and the relay's own `$namespace` room, which holds every
//! connection of a namespace: its `announce` counts span the cluster too) to the master
//! over its control channel; the master keeps the host's table ([`roster::Host`], by
//! worker: a worker that dies leaves with its members) and publishes the changes.
//!
//! **Where they go.** The other nodes' memberships ([`roster::Roster`]) are handed to
//! every worker of the host ([`Tidings`]), which keeps them in its bus as one more peer
//! (`PeerAdapter::present`): the workers' counts, member lists and room lists include
//! them, and a worker announces each remote join and leave (`$presence`) to its own
//! members of the room (a connection or disconnection to its namespace, with
//! `announce`), with the cluster-wide count. A worker that starts gets all of
//! them first ([`Presence::all`]).
//!
//! **The protocol** ([`wire`], on its own pub/sub channel for both adapters): numbered
//! changes; a beat every `heartbeat_interval` with the last number; a snapshot at start
//! and when asked; a node that sees a gap, an unknown node, or starts asks for
//! snapshots. A node not heard from for `heartbeat_timeout` is dropped with its members
//! (their leaves announced); one that stops cleanly says goodbye and its members leave
//! at once; one that comes back has a new node id: a new node, and its old id expires.
//!
//! **Webhooks.** Each join and leave is reported by the node that holds the socket,
//! with the cluster-wide count (`room.occupied` at 1, `room.vacated` at 0). The leaves
//! of a node that died or said goodbye are reported by the live node with the lowest id
//! ([`roster::Roster::lowest`]), once.
//!
//! **Limits.** Eventually consistent: a count is what this node had heard when it
//! counted, so two first joins at the same moment on two nodes may both see a count of
//! 1 (two `room.occupied`); a node's members linger up to `heartbeat_timeout` after it
//! dies. Node socket.io servers have no presence channel: their sockets are not in these
//! counts (the server API still lists them, fetched on request).
//!
//! **The single-process mode** (`workers = 1`) takes part the same way: the process is
//! its host's only worker (0) and its own master (its bus is a `PeerAdapter` without
//! links, which keeps the other nodes as its one peer).
//! At most [`MAX_NODES`] other nodes, [`MAX_MEMBERS`] memberships per node and
//! [`MAX_TOTAL`] in all are kept; more are dropped and counted (`iorelay_cluster_dropped_total{reason="presence_bound"}`).

pub mod roster;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::meters::Meters;
use super::redis::{Publisher, Subscriptions};
use roster::{Host, Limits, Roster};
use wire::{Body, Change, Envelope, Membership};

/// Most other nodes kept.
pub const MAX_NODES: usize = 256;

/// Most memberships kept per node (and put in this node's snapshot).
pub const MAX_MEMBERS: usize = 100_000;

/// Most memberships kept of all other nodes together.
pub const MAX_TOTAL: usize = 1_000_000;

/// Largest presence message read.
const MAX_MESSAGE: usize = 32 << 20;

/// Least time between two asks, or two snapshots, of this node.
const PACE: Duration = Duration::from_secs(1);

/// Tidings waiting for the master: past this, hearing waits for it (and Redis's
/// messages wait in the subscription's bounded queue, then are dropped and counted; the
/// gaps are mended by snapshots).
const TIDINGS: usize = 1024;

/// How long a goodbye may take to publish.
const BYE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the master does with what presence heard.
#[derive(Debug, Default)]
pub struct Tidings {
    /// Present these to every worker, announcing them.
    pub changes: Vec<Change>,
    /// Leaves of members of a node that is gone, with the cluster-wide count after
    /// each: for the webhooks (only on the node that reports them, see the module doc).
    pub departed: Vec<(Membership, usize)>,
}

/// Presence on a node.
pub struct Presence {
    node: String,
    channel: String,
    tables: Mutex<Tables>,
    publisher: Publisher,
    /// For the goodbye, which must be out before the process exits.
    conn: redis::aio::ConnectionManager,
    out: mpsc::Sender<Tidings>,
    /// Said goodbye: silent from then on.
    stopped: AtomicBool,
    meters: Meters,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Tables {
    host: Host,
    roster: Roster,
    /// When this node last asked for snapshots (asks are paced).
    asked: Option<Instant>,
    /// When this node last sent its snapshot (answers are paced: one serves every
    /// node that asked, and a flood of asks costs one per [`PACE`]).
    answered: Option<Instant>,
    /// A snapshot was asked for within [`PACE`] of the last: sent at the next beat.
    owed: bool,
}

impl Presence {
    /// Start presence for node `node` on the Redis of `config`: subscribe, say hello
    /// (a snapshot and an ask), beat. What it hears comes out of the receiver.
    pub fn start(
        config: &crate::config::ClusterConfig,
        node: String,
        meters: Meters,
    ) -> Result<(Arc<Presence>, mpsc::Receiver<Tidings>), super::redis::Error> {
        let client = super::redis::client(config)?;
        let publisher = Publisher::start(&client, meters.clone())?;
        let conn = super::redis::lazy_connection(&client)?;
        let channel = wire::channel(&config.key);
        let (out, rx) = mpsc::channel(TIDINGS);
        let presence = Arc::new(Presence {
            node,
            channel: channel.clone(),
            tables: Mutex::new(Tables {
                host: Host::default(),
                roster: Roster::new(Limits {
                    nodes: MAX_NODES,
                    members: MAX_MEMBERS,
                    total: MAX_TOTAL,
                }),
                asked: None,
                answered: None,
                owed: false,
            }),
            publisher,
            conn,
            out,
            stopped: AtomicBool::new(false),
            meters: meters.clone(),
        });
        let (subscribed, wanted) = watch::channel(Subscriptions {
            channels: [channel].into_iter().collect(),
            patterns: Default::default(),
        });
        // Its own `up` gauge: the gateway's subscription is the one the health watches.
        let sub_meters = Meters {
            up: prometheus::IntGauge::new("presence_up", "unregistered")
                .expect("a valid gauge name"),
            ..meters
        };
        let max =
            MAX_MESSAGE.min(usize::try_from(config.max_message.as_u64()).unwrap_or(usize::MAX));
        let incoming = super::redis::subscribe(client, wanted, max, sub_meters);
        let (interval, deadline) = (config.heartbeat_interval, config.heartbeat_timeout);
        tokio::spawn(presence.clone().hear(incoming, subscribed));
        tokio::spawn(presence.clone().beat(interval, deadline));
        Ok((presence, rx))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn send(&self, seq: u64, body: Body) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let env = Envelope {
            v: wire::VERSION,
            node: self.node.clone(),
            seq,
            body,
        };
        self.publisher.send(self.channel.clone(), env.encode());
    }

    fn send_snapshot(&self, tables: &mut Tables, now: Instant) {
        tables.answered = Some(now);
        tables.owed = false;
        let members = tables.host.snapshot(MAX_MEMBERS);
        self.send(tables.host.seq, Body::Snapshot(members));
    }

    /// Answer an ask with this node's snapshot now, or at the next beat if one went out
    /// within [`PACE`].
    fn answer(&self, tables: &mut Tables, now: Instant) {
        if paced(tables.answered, now) {
            tables.owed = true;
        } else {
            self.send_snapshot(tables, now);
        }
    }

    /// Ask the others for their snapshots, at most once per [`PACE`].
    fn ask(&self, tables: &mut Tables, now: Instant) {
        if paced(tables.asked, now) {
            return;
        }
        tables.asked = Some(now);
        self.send(tables.host.seq, Body::Ask);
    }

    /// Worker `worker` reports joins and leaves of its sockets.
    pub fn host(&self, worker: u32, changes: Vec<Change>) {
        let mut tables = self.tables.lock();
        let changes = tables.host.apply(worker, changes);
        self.publish_changes(&mut tables, changes);
    }

    /// Worker `worker` is gone (its process exited): its sockets left.
    pub fn worker_gone(&self, worker: u32) {
        let mut tables = self.tables.lock();
        let changes = tables.host.gone(worker);
        self.publish_changes(&mut tables, changes);
    }

    fn publish_changes(&self, tables: &mut Tables, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        tables.host.seq += 1;
        self.send(tables.host.seq, Body::Changes(changes));
    }

    /// Every membership of the other nodes, as joins (for a worker that starts).
    pub fn all(&self) -> Vec<Change> {
        self.tables.lock().roster.all()
    }

    /// The socket ids of `nsp` that other iorelay nodes hold in some room (already in
    /// the host's counts and lists).
    pub fn remote_memberships(&self, nsp: &str) -> std::collections::HashSet<(String, String)> {
        self.tables.lock().roster.memberships(nsp)
    }

    /// Say goodbye (the node stops): the others drop its members at once. Nothing is
    /// published after it.
    pub async fn bye(&self) {
        let seq = self.tables.lock().host.seq;
        self.stopped.store(true, Ordering::Relaxed);
        let env = Envelope {
            v: wire::VERSION,
            node: self.node.clone(),
            seq,
            body: Body::Bye,
        };
        let mut conn = self.conn.clone();
        let sent = tokio::time::timeout(
            BYE_TIMEOUT,
            redis::AsyncCommands::publish::<_, _, ()>(&mut conn, &self.channel, env.encode()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!(node = %self.node, "cluster: the goodbye was not published; the other nodes drop this node's members after their deadline");
        }
    }

    /// Apply what the other nodes say, until the subscription ends (held by
    /// `_subscribed`: the subscription lasts while its sender does).
    async fn hear(
        self: Arc<Self>,
        mut incoming: mpsc::Receiver<super::redis::Incoming>,
        _subscribed: watch::Sender<Subscriptions>,
    ) {
        while let Some(msg) = incoming.recv().await {
            let env = match wire::decode(&msg.payload, MAX_MESSAGE) {
                Ok(env) => env,
                Err(err) => {
                    self.meters
                        .dropped
                        .with_label_values(&["presence_malformed"])
                        .inc();
                    tracing::warn!(error = %err, "cluster: a presence message dropped");
                    continue;
                }
            };
            if env.node == self.node || self.stopped.load(Ordering::Relaxed) {
                continue;
            }
            let (changes, departed) = self.heard(env);
            self.tell(changes, departed).await;
        }
    }

    /// Apply another node's message; what to tell the master.
    fn heard(&self, env: Envelope) -> (Vec<Change>, Vec<(Membership, usize)>) {
        let from = env.node.clone();
        let now = Instant::now();
        let mut tables = self.tables.lock();
        let before = tables.roster.len();
        let out = tables.roster.apply(env, now);
        if tables.roster.len() > before {
            tracing::info!(node = %from, "cluster: another iorelay node heard");
        }
        self.count_nodes(&tables);
        if out.dropped > 0 {
            self.meters
                .dropped
                .with_label_values(&["presence_bound"])
                .inc_by(out.dropped as u64);
            tracing::warn!(node = %from, dropped = out.dropped, "cluster: presence of another node over the bounds, partly dropped");
        }
        if out.answer {
            self.answer(&mut tables, now);
        }
        if out.ask {
            self.ask(&mut tables, now);
        }
        if out.departed {
            tracing::info!(node = %from, members = out.changes.len(), "cluster: a node said goodbye");
        }
        let departed = match out.departed {
            true => self.departures(&tables, &out.changes),
            false => Vec::new(),
        };
        (out.changes, departed)
    }

    fn count_nodes(&self, tables: &Tables) {
        self.meters
            .nodes
            .set(i64::try_from(tables.roster.len()).unwrap_or(i64::MAX));
    }

    /// The webhooks' view of `leaves` of a gone node, already out of the tables: each
    /// with the cluster-wide count after it (empty unless this node reports them).
    fn departures(&self, tables: &Tables, leaves: &[Change]) -> Vec<(Membership, usize)> {
        if !tables.roster.lowest(&self.node) {
            return Vec::new();
        }
        let mut left: HashMap<(&str, &str), usize> = HashMap::new();
        for c in leaves {
            *left.entry((&c.m.nsp, &c.m.room)).or_default() += 1;
        }
        leaves
            .iter()
            .map(|c| {
                let later = left
                    .get_mut(&(c.m.nsp.as_str(), c.m.room.as_str()))
                    .expect("every leave was counted");
                *later -= 1;
                let count = tables.host.count(&c.m.nsp, &c.m.room)
                    + tables.roster.count(&c.m.nsp, &c.m.room)
                    + *later;
                (c.m.clone(), count)
            })
            .collect()
    }

    async fn tell(&self, changes: Vec<Change>, departed: Vec<(Membership, usize)>) {
        if !changes.is_empty() || !departed.is_empty() {
            let _ = self.out.send(Tidings { changes, departed }).await;
        }
    }

    /// Say hello, then beat every `interval` and drop the nodes silent for `deadline`.
    async fn beat(self: Arc<Self>, interval: Duration, deadline: Duration) {
        {
            let mut tables = self.tables.lock();
            let now = Instant::now();
            self.send_snapshot(&mut tables, now);
            self.ask(&mut tables, now);
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        while !self.stopped.load(Ordering::Relaxed) {
            tick.tick().await;
            let (changes, departed) = self.beat_once(deadline);
            self.tell(changes, departed).await;
        }
    }

    /// One beat (or the snapshot owed), and the nodes silent past `deadline` dropped;
    /// what to tell the master.
    fn beat_once(&self, deadline: Duration) -> (Vec<Change>, Vec<(Membership, usize)>) {
        let mut tables = self.tables.lock();
        let now = Instant::now();
        match tables.owed {
            true => self.send_snapshot(&mut tables, now),
            false => self.send(tables.host.seq, Body::Beat),
        }
        let (dead, changes) = tables.roster.expire(now, deadline);
        self.count_nodes(&tables);
        if dead.is_empty() {
            return (changes, Vec::new());
        }
        tracing::warn!(nodes = ?dead, members = changes.len(), "cluster: nodes silent past cluster.heartbeat_timeout dropped with their members");
        let departed = self.departures(&tables, &changes);
        (changes, departed)
    }
}

/// Whether something done `at` was done within [`PACE`] of `now`.
fn paced(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| now.saturating_duration_since(at) < PACE)
}
