//! Every metric name of the daemon, in one place: creates the instruments the engine and
//! the relay update, registers them with one registry, and renders the Prometheus text
//! exposition.
//!
//! Conventions: `iorelay_<subsystem>_<name>`, base units (bytes, seconds), `_total` for
//! counters, labels only from bounded sets (namespace names from the config, transports,
//! reasons) — never rooms or socket ids. The standard `process_*` metrics come unprefixed.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine;
use crate::relay;
use crate::webhooks;

/// The daemon's registry and its instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Everything registered, for `/metrics`.
    pub registry: Registry,
    /// Engine.IO instruments of the public endpoint.
    pub engine: engine::Meters,
    /// Relay instruments.
    pub relay: relay::Meters,
    /// Webhook instruments (the sender's are the master's; a worker counts what it could
    /// not forward).
    pub webhooks: webhooks::Meters,
    /// Worker processes restarted by the master.
    pub worker_restarts: IntCounter,
    /// Config reloads applied.
    pub reloads: IntCounter,
    /// Config reloads rejected (the old config stayed).
    pub reload_failures: IntCounter,
    /// Workers that did not confirm a reload the master validated, by reason (`timeout`,
    /// `refused`).
    pub reload_unconfirmed: IntCounterVec,
    /// Server API requests by route and HTTP status.
    pub api_requests: IntCounterVec,
    /// Admin listener requests refused for their `Host` header, by route.
    pub admin_host_refused: IntCounterVec,
    /// Broadcasts not sent to a sibling worker whose bus link was over its byte bound.
    pub bus_dropped: IntCounter,
    /// Cluster (Redis) instruments.
    pub cluster: crate::cluster::Meters,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric names here are valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names here are valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric names here are valid");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric names here are valid");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

impl Metrics {
    /// A fresh registry with every instrument of the daemon, plus the process collector.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let dropped = counter_vec(
            r,
            "iorelay_messages_dropped_total",
            "Outgoing messages not delivered, by reason.",
            &["reason"],
        );
        let received_bytes = counter_vec(
            r,
            "iorelay_received_bytes_total",
            "Bytes received from clients, by transport.",
            &["transport"],
        );
        let sent_bytes = counter_vec(
            r,
            "iorelay_sent_bytes_total",
            "Bytes sent to clients, by transport.",
            &["transport"],
        );
        let engine = engine::Meters {
            sessions: gauge_vec(
                r,
                "iorelay_engine_sessions",
                "Open Engine.IO sessions, by transport.",
                &["transport"],
            ),
            opened: counter_vec(
                r,
                "iorelay_connections_accepted_total",
                "Engine.IO sessions opened, by the transport of their handshake.",
                &["transport"],
            ),
            closed: counter_vec(
                r,
                "iorelay_engine_sessions_closed_total",
                "Engine.IO sessions closed, by reason.",
                &["reason"],
            ),
            websocket: engine::TransportBytes::new(
                &received_bytes,
                &sent_bytes,
                engine::Transport::Websocket,
            ),
            received_bytes,
            sent_bytes,
            dropped_slow: dropped.with_label_values(&["slow_consumer"]),
            dropped_budget: dropped.with_label_values(&["memory_budget"]),
            superseded: dropped.with_label_values(&["superseded"]),
            origin_refused: counter(
                r,
                "iorelay_origin_refused_total",
                "Engine.IO requests (handshakes, WebSockets, polling) refused for their Origin.",
            ),
            refused: counter_vec(
                r,
                "iorelay_connections_refused_total",
                "Engine.IO handshakes refused by a connection limit, by reason.",
                &["reason"],
            ),
        };
        let relay = relay::Meters {
            connections: gauge_vec(
                r,
                "iorelay_connections",
                "Connected Socket.IO sockets, by namespace and transport.",
                &["namespace", "transport"],
            ),
            received: counter_vec(
                r,
                "iorelay_events_received_total",
                "Events received from clients, control events included, by namespace.",
                &["namespace"],
            ),
            delivered: counter_vec(
                r,
                "iorelay_events_delivered_total",
                "Event copies queued for recipients, by namespace.",
                &["namespace"],
            ),
            refused: counter_vec(
                r,
                "iorelay_events_refused_total",
                "Client events refused by policy, by namespace and reason.",
                &["namespace", "reason"],
            ),
            rooms: gauge_vec(
                r,
                "iorelay_rooms",
                "Rooms with at least one member, by namespace.",
                &["namespace"],
            ),
            auth_refused: counter_vec(
                r,
                "iorelay_auth_refused_total",
                "Connections to a namespace refused by its auth, by namespace and reason.",
                &["namespace", "reason"],
            ),
            history_events: gauge(
                r,
                "iorelay_history_events",
                "Events kept in room history (each worker keeps the host's).",
            ),
            history_bytes: gauge(
                r,
                "iorelay_history_bytes",
                "Bytes of room history kept, as counted against server.history_budget.",
            ),
            history_evicted: counter(
                r,
                "iorelay_history_evicted_total",
                "History events dropped before their time to stay within server.history_budget.",
            ),
            recovery_sessions: gauge(
                r,
                "iorelay_recovery_sessions",
                "Dropped sockets kept for connection state recovery (each worker keeps the host's).",
            ),
            recovery_events: gauge(
                r,
                "iorelay_recovery_events",
                "Events kept for connection state recovery (each worker keeps the host's).",
            ),
            recovery_bytes: gauge(
                r,
                "iorelay_recovery_bytes",
                "Bytes of events kept for recovery, as counted against server.recovery_budget.",
            ),
            recovery_evicted: counter(
                r,
                "iorelay_recovery_evicted_total",
                "Recovery events dropped before their time to stay within server.recovery_budget.",
            ),
            recoveries: counter_vec(
                r,
                "iorelay_recovery_total",
                "CONNECTs that claimed a dropped socket, by namespace and result (recovered, or why not).",
                &["namespace", "result"],
            ),
        };
        let webhooks = webhooks::Meters {
            events: counter_vec(
                r,
                "iorelay_webhook_events_total",
                "Webhook events queued for delivery, by event.",
                &["event"],
            ),
            deliveries: counter_vec(
                r,
                "iorelay_webhook_deliveries_total",
                "Webhook POST attempts, by outcome (ok, status, timeout, error).",
                &["outcome"],
            ),
            dropped: counter_vec(
                r,
                "iorelay_webhook_dropped_total",
                "Webhook events not delivered, by reason (queue_full, retries_exhausted).",
                &["reason"],
            ),
            queued: {
                let g = IntGauge::new(
                    "iorelay_webhook_queue_events",
                    "Webhook events waiting for delivery.",
                )
                .expect("metric names here are valid");
                r.register(Box::new(g.clone()))
                    .expect("each metric is registered once");
                g
            },
        };
        webhooks.touch();
        let build = gauge_vec(
            r,
            "iorelay_build_info",
            "Always 1; the labels describe the build.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Metrics {
            bus_dropped: dropped.with_label_values(&["bus_backlog"]),
            worker_restarts: counter(
                r,
                "iorelay_worker_restarts_total",
                "Worker processes restarted by the master.",
            ),
            reloads: counter(
                r,
                "iorelay_config_reloads_total",
                "Configuration reloads applied.",
            ),
            reload_failures: counter(
                r,
                "iorelay_config_reload_failures_total",
                "Configuration reloads rejected; the previous configuration stayed in force.",
            ),
            reload_unconfirmed: counter_vec(
                r,
                "iorelay_config_reload_unconfirmed_total",
                "Workers that did not confirm a validated reload, by reason (timeout, refused).",
                &["reason"],
            ),
            api_requests: counter_vec(
                r,
                "iorelay_api_requests_total",
                "Server API requests (/api/v1/), by route and HTTP status.",
                &["route", "status"],
            ),
            admin_host_refused: counter_vec(
                r,
                "iorelay_admin_host_refused_total",
                "Admin listener requests refused (421) because their Host header names neither an IP address, localhost nor admin.allowed_hosts; route is healthz, readyz, metrics, api or other.",
                &["route"],
            ),
            cluster: crate::cluster::Meters::register(r),
            registry,
            engine,
            relay,
            webhooks,
        };
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(err) = metrics.registry.register(Box::new(process)) {
            tracing::warn!(error = %err, "process metrics unavailable");
        }
        metrics
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(err) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %err, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_the_conventions() {
        let m = Metrics::new();
        m.engine.opened.with_label_values(&["websocket"]).inc();
        m.relay.received.with_label_values(&["/"]).inc_by(3);
        m.engine.dropped_slow.inc();
        let text = m.render();
        assert!(text.contains("iorelay_connections_accepted_total{transport=\"websocket\"} 1"));
        assert!(text.contains("iorelay_events_received_total{namespace=\"/\"} 3"));
        assert!(text.contains("iorelay_messages_dropped_total{reason=\"slow_consumer\"} 1"));
        assert!(text.contains("iorelay_build_info{version="));
        assert!(text.contains("process_resident_memory_bytes"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE iorelay_")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "counters and only counters end in _total: {line}"
            );
        }
    }
}
