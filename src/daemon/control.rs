//! The control channel between the master and each worker: newline-delimited JSON over a
//! Unix socket pair the master creates for each worker. Low rate, never on the message
//! path: the config, heartbeats, metrics and status requests, server API calls, webhook
//! events (worker → master: one line per join or leave while webhooks are on), shutdown.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{Call, Part};
use crate::config::Config;

/// Master → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// The first message: the config to run with, and the host's key for the pids of
    /// connection state recovery (the same in every worker, so that any of them can
    /// restore a socket another one held).
    Start {
        /// The config.
        config: Box<Config>,
        /// The pid key, as text.
        key: String,
        /// The host's node id in a cluster (the same in every worker).
        #[serde(default)]
        node: String,
    },
    /// The config to switch to (reload).
    Config(Box<Config>),
    /// Heartbeat; answer with the same number.
    Ping(u64),
    /// Send the metrics exposition and status.
    Report(u64),
    /// Send the metrics exposition only (a `/metrics` scrape: no status document, which
    /// lists every room of the host). Answered with a `Report` whose status is null.
    Metrics(u64),
    /// Stop accepting, close clients' transports, drain (`true`) or not, exit.
    Shutdown(bool),
    /// Memberships of the cluster's other iorelay nodes that changed (or all of them,
    /// for a worker that starts): kept in the bus; announced to the rooms' members when
    /// `announce`.
    Cluster {
        /// The changes, in order.
        changes: Vec<crate::cluster::presence::wire::Change>,
        /// Whether they are news (not a starting worker's catch-up).
        announce: bool,
    },
    /// A server API call to answer for this worker's sockets.
    Api {
        /// The request number.
        id: u64,
        /// The call.
        call: Call,
        /// The id an emit is recorded under in every worker's history.
        #[serde(default)]
        stamp: Option<crate::adapter::Stamp>,
    },
}

/// Worker → master.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToMaster {
    /// Listening and linked: ready to serve.
    Ready,
    /// Heartbeat answer.
    Pong(u64),
    /// Answer to `Report`.
    Report {
        /// The request number.
        id: u64,
        /// Prometheus text exposition of the worker.
        metrics: String,
        /// The worker's status document.
        status: Value,
    },
    /// Answer to `Api`.
    Api {
        /// The request number.
        id: u64,
        /// This worker's part of the answer.
        part: Part,
    },
    /// Webhook events of this worker's joins and leaves, for the master's sender.
    Webhooks(Vec<crate::webhooks::Event>),
    /// A client's answer to another node's broadcast with acks, for the gateway.
    Acked(crate::relay::asks::Acked),
    /// This worker's sockets' joins and leaves, for the cluster's presence.
    Presence(Vec<crate::cluster::presence::wire::Change>),
    /// A config was applied (`true`) or refused (`false`, with the reason).
    Applied {
        /// Whether it is in force.
        ok: bool,
        /// Why not.
        error: Option<String>,
    },
}

/// One line of the channel.
pub fn encode<T: Serialize>(msg: &T) -> String {
    let mut line = serde_json::to_string(msg).expect("control messages always serialize");
    line.push('\n');
    line
}
