//! The cluster: several nodes (hosts), each with its workers, sharing rooms through Redis
//! in the formats of the Node adapters, so that iorelay nodes, Node socket.io servers
//! and `@socket.io/redis-emitter` processes are one cluster (`[cluster]`).
//!
//! A host is one node of the cluster, with one node id ([`node_id`]) that its master and
//! workers share:
//! - every worker publishes its clients' events ([`Outbound`], which the bus calls);
//! - the [`gateway`] (in the master, or the single process) alone reads Redis: it
//!   delivers other nodes' broadcasts to the host's sockets as a server API emit is
//!   delivered, answers their requests for the host's sockets, and publishes the host's
//!   server API emits.
//!
//! Two formats (`[cluster] adapter`), the [`dialect`]s: `redis` is `@socket.io/redis-adapter`
//! 8.x, whose messages and channels [`format`] holds; `redis-streams` is
//! `@socket.io/redis-streams-adapter` 0.3.x, whose messages [`message`] holds and whose
//! stream [`streams`] writes and reads (nothing lost to a Redis outage). [`answer`] holds
//! the answers to requests, [`redis`] the connections, [`meters`] the `iorelay_cluster_*`
//! instruments.
//!
//! [`front`] makes the server API cluster-wide with this node's own requests ([`ask`]).
//!
//! [`presence`] shares the iorelay nodes' room memberships (counts, `$rooms`,
//! `$members`, `$presence`, webhooks) on a channel of its own.
//!
//! With the streams adapter, [`sessions`] keeps the connection-state-recovery sessions in
//! Redis and reads the stream back for a client that comes back on another node (the
//! relay's side: [`remote`](crate::relay::recovery::remote)); the gateway delivers each
//! stream entry with its id as its stamp, and each node's entries carry their host's.
//!
//! Another node's broadcast with acks is asked of the host's clients
//! ([`asks`](crate::relay::asks)); their answers come back to the gateway (through the
//! master from a worker), which hands them to the asking node ([`acks`]).

pub mod acks;
pub mod answer;
pub mod ask;
pub mod dialect;
pub mod format;
pub mod front;
pub mod gateway;
pub mod message;
pub mod meters;
pub mod presence;
pub mod redis;
pub mod sessions;
pub mod streams;

use std::sync::Arc;

use crate::adapter::{Publish, Published};
use crate::http::control::Control;
pub use front::Clustered;
pub use gateway::Gateway;
pub use meters::Meters;

/// A node's id in the cluster (the `uid` of the Node adapter's messages): 12 random
/// hexadecimal digits, made once per daemon start (a Node server's is 6 characters; any
/// text that no other node has will do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId(pub String);

impl Default for NodeId {
    fn default() -> NodeId {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("the OS random source is available on Linux");
        NodeId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// The admin listener's control, and the gateway behind it if there is one.
pub type Front = (Arc<dyn Control>, Option<Arc<Gateway>>);

/// The admin listener's [`Control`] for a host with `config`: with a cluster, the
/// gateway is started on `host` and the control returned also publishes the host's API
/// emits; without one, `host` itself.
pub fn front(
    config: &crate::config::Config,
    node: &NodeId,
    host: Arc<dyn Control>,
    meters: &Meters,
    presence: Option<Arc<presence::Presence>>,
) -> Result<Front, redis::Error> {
    if !config.cluster.enabled() {
        return Ok((host, None));
    }
    let namespaces: Vec<String> = config.effective_namespaces().into_keys().collect();
    let gateway = Gateway::start(
        &config.cluster,
        node.0.clone(),
        &namespaces,
        host.clone(),
        meters.clone(),
    )?;
    tracing::info!(node = %node.0, key = %config.cluster.key, adapter = ?config.cluster.adapter, "cluster: this node joins through Redis");
    let front = Clustered {
        inner: host,
        gateway: gateway.clone(),
        presence,
    };
    Ok((Arc::new(front), Some(gateway)))
}

/// Make `bus` publish its clients' events to the cluster, if `config` has one.
pub fn publish_from(
    bus: &dyn crate::adapter::Adapter,
    config: &crate::config::Config,
    node: &NodeId,
    meters: &Meters,
) -> Result<(), redis::Error> {
    if config.cluster.enabled() {
        bus.set_publisher(Outbound::start(
            &config.cluster,
            node.0.clone(),
            meters.clone(),
        )?);
    }
    Ok(())
}

/// Keep the sessions of `relay`'s namespaces with `recovery` in the cluster, if
/// `config`'s adapter is the streams one (see [`sessions`]), so that their clients can
/// come back on any node.
pub fn keep_sessions(
    relay: &Arc<crate::relay::shared::Shared>,
    config: &crate::config::Config,
    node: &NodeId,
    meters: &Meters,
) -> Result<(), redis::Error> {
    if config.cluster.adapter != crate::config::cluster::AdapterKind::RedisStreams {
        return Ok(());
    }
    let store = sessions::Sessions::start(&config.cluster, node.0.clone(), meters.clone())?;
    relay.recovery.set_remote(Arc::new(store));
    tokio::spawn(crate::relay::recovery::sessions::keep_live(Arc::downgrade(
        relay,
    )));
    Ok(())
}

/// What a process publishes for its clients' events: a broadcast from this node, where
/// the Node adapter would put it.
#[derive(Debug)]
pub struct Outbound {
    uid: String,
    key: String,
    dialect: dialect::Dialect,
}

impl Outbound {
    /// Publish as node `uid` to the Redis of `config`.
    pub fn start(
        config: &crate::config::ClusterConfig,
        uid: String,
        meters: Meters,
    ) -> Result<Arc<Outbound>, redis::Error> {
        let client = redis::client(config)?;
        Ok(Arc::new(Outbound {
            uid,
            key: config.key.clone(),
            dialect: dialect::Dialect::start(config, &client, None, &meters)?,
        }))
    }
}

impl Publish for Outbound {
    fn publish(&self, nsp: &str, event: &Published<'_>) {
        let data = match format::data_of(event.name, event.args, event.attachments) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!(error = %err, "cluster: an event not published");
                return;
            }
        };
        let rooms: Vec<&str> = event.rooms.iter().map(|r| &**r).collect();
        let channels = format::Channels::of(&self.key, nsp);
        self.dialect.broadcast(
            &self.uid,
            nsp,
            &channels,
            &data,
            (&rooms, event.except),
            event.stamp,
        );
    }
}
