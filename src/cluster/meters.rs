//! The cluster's instruments (`iorelay_cluster_*`), registered with the daemon's others.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The cluster's instruments.
#[derive(Debug, Clone)]
pub struct Meters {
    /// 1 while subscribed on Redis (the master's, or a single process's).
    pub up: IntGauge,
    /// Subscriptions lost and made again.
    pub reconnects: IntCounter,
    /// Messages published.
    pub published: IntCounter,
    /// Messages that could not be published (Redis away or failing).
    pub publish_failures: IntCounter,
    /// Messages read from Redis.
    pub received: IntCounter,
    /// Messages dropped, by reason.
    pub dropped: IntCounterVec,
    /// Requests from other nodes answered, by type.
    pub requests: IntCounterVec,
    /// Stream entries held while Redis is away, to be written once it is back.
    pub held: IntGauge,
    /// Other iorelay nodes heard from (presence).
    pub nodes: IntGauge,
}

impl Meters {
    /// Register the instruments in `r`.
    pub fn register(r: &Registry) -> Meters {
        let gauge = IntGauge::new(
            "iorelay_cluster_up",
            "1 while this node is subscribed on the cluster's Redis, 0 while it is not (or no cluster is configured).",
        )
        .expect("metric names here are valid");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric names here are valid");
            r.register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])
                .expect("metric names here are valid");
            r.register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        r.register(Box::new(gauge.clone()))
            .expect("each metric is registered once");
        let held = IntGauge::new(
            "iorelay_cluster_held",
            "Stream entries (redis-streams) held in this process while Redis is away, written once it is back.",
        )
        .expect("metric names here are valid");
        r.register(Box::new(held.clone()))
            .expect("each metric is registered once");
        let nodes = IntGauge::new(
            "iorelay_cluster_nodes",
            "Other iorelay nodes this node hears from (cluster presence): a node silent past cluster.heartbeat_timeout, or gone with a goodbye, is not counted.",
        )
        .expect("metric names here are valid");
        r.register(Box::new(nodes.clone()))
            .expect("each metric is registered once");
        let meters = Meters {
            up: gauge,
            reconnects: counter(
                "iorelay_cluster_reconnects_total",
                "Redis subscriptions lost and made again (every channel is subscribed again).",
            ),
            published: counter(
                "iorelay_cluster_published_total",
                "Messages published to the cluster's Redis.",
            ),
            publish_failures: counter(
                "iorelay_cluster_publish_failures_total",
                "Messages that could not be published to the cluster's Redis (it was away or failing): dropped with redis, held and written later with redis-streams.",
            ),
            received: counter(
                "iorelay_cluster_received_total",
                "Messages read from the cluster's Redis.",
            ),
            dropped: counter_vec(
                "iorelay_cluster_dropped_total",
                "Cluster messages dropped, by reason (publish_queue, receive_queue, too_large, malformed, presence_malformed, presence_bound, presence_queue).",
                "reason",
            ),
            requests: counter_vec(
                "iorelay_cluster_requests_total",
                "Requests from other nodes handled, by type (all_rooms, remote_fetch, remote_join, …).",
                "type",
            ),
            held,
            nodes,
        };
        for reason in [
            "publish_queue",
            "receive_queue",
            "too_large",
            "malformed",
            "presence_malformed",
            "presence_bound",
            "presence_queue",
        ] {
            meters.dropped.with_label_values(&[reason]);
        }
        meters
    }
}
