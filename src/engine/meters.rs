//! The engine's instruments: handles to counters and gauges that the telemetry layer
//! creates, names and registers (see `telemetry::metrics`). The engine only updates them;
//! without a registry (tests) they count into the void.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::Transport;

/// Engine.IO instruments.
#[derive(Debug, Clone)]
pub struct Meters {
    /// Open sessions, by `transport`.
    pub sessions: IntGaugeVec,
    /// Sessions opened, by `transport` of the handshake.
    pub opened: IntCounterVec,
    /// Sessions closed, by `reason` (a `CloseReason` name).
    pub closed: IntCounterVec,
    /// Bytes read from clients, by `transport`.
    pub received_bytes: IntCounterVec,
    /// Bytes written to clients, by `transport`.
    pub sent_bytes: IntCounterVec,
    /// Outgoing packets not queued because the client's queue was full.
    pub dropped_slow: IntCounter,
    /// Outgoing packets not queued because the worker's outbound budget was reached (the
    /// client is closed as `memory_budget`).
    pub dropped_budget: IntCounter,
    /// [`Outgoing::Latest`](super::Outgoing::Latest) packets a lagging client did not
    /// get because a newer one of the same key replaced them.
    pub superseded: IntCounter,
    /// Engine.IO requests refused because of their `Origin`.
    pub origin_refused: IntCounter,
    /// Handshakes refused by a connection limit, by `reason` (`session_limit`,
    /// `ip_sessions`, `ip_rate`).
    pub refused: IntCounterVec,
    /// `received_bytes` and `sent_bytes` for WebSocket, resolved once: they count every
    /// message, and a label lookup hashes and locks.
    pub websocket: TransportBytes,
}

/// One transport's byte counters.
#[derive(Debug, Clone)]
pub struct TransportBytes {
    /// Bytes read from clients.
    pub received: IntCounter,
    /// Bytes written to clients.
    pub sent: IntCounter,
}

impl TransportBytes {
    /// The counters of `transport` in `received` and `sent`.
    pub fn new(received: &IntCounterVec, sent: &IntCounterVec, transport: Transport) -> Self {
        TransportBytes {
            received: received.with_label_values(&[transport.as_str()]),
            sent: sent.with_label_values(&[transport.as_str()]),
        }
    }
}

impl Default for Meters {
    /// Unregistered instruments, for engines nobody scrapes.
    fn default() -> Self {
        fn gauge(labels: &[&str]) -> IntGaugeVec {
            IntGaugeVec::new(Opts::new("unregistered", "unregistered"), labels)
                .expect("static metric options are valid")
        }
        fn counter(labels: &[&str]) -> IntCounterVec {
            IntCounterVec::new(Opts::new("unregistered", "unregistered"), labels)
                .expect("static metric options are valid")
        }
        let received_bytes = counter(&["transport"]);
        let sent_bytes = counter(&["transport"]);
        Meters {
            sessions: gauge(&["transport"]),
            opened: counter(&["transport"]),
            closed: counter(&["reason"]),
            websocket: TransportBytes::new(&received_bytes, &sent_bytes, Transport::Websocket),
            received_bytes,
            sent_bytes,
            dropped_slow: IntCounter::new("unregistered", "unregistered")
                .expect("static metric options are valid"),
            dropped_budget: IntCounter::new("unregistered", "unregistered")
                .expect("static metric options are valid"),
            superseded: IntCounter::new("unregistered", "unregistered")
                .expect("static metric options are valid"),
            origin_refused: IntCounter::new("unregistered", "unregistered")
                .expect("static metric options are valid"),
            refused: counter(&["reason"]),
        }
    }
}
