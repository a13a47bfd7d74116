//! The relay's instruments, created and registered by `telemetry::metrics` (where the
//! names live); unregistered by default.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// Relay instruments. Labels come from bounded sets: namespace names from the config,
/// transports, refusal reasons — never rooms or socket ids.
#[derive(Debug, Clone)]
pub struct Meters {
    /// Connected sockets, by `namespace` and `transport`.
    pub connections: IntGaugeVec,
    /// Events received from clients (control events included), by `namespace`.
    pub received: IntCounterVec,
    /// Event copies queued for recipients, by `namespace`.
    pub delivered: IntCounterVec,
    /// Events refused by policy, by `namespace` and `reason`.
    pub refused: IntCounterVec,
    /// Rooms with at least one member, by `namespace`.
    pub rooms: IntGaugeVec,
    /// CONNECTs refused by a namespace's `auth`, by `namespace` and `reason`.
    pub auth_refused: IntCounterVec,
    /// Events kept in room history.
    pub history_events: IntGauge,
    /// Bytes of room history, as the store counts them.
    pub history_bytes: IntGauge,
    /// History events dropped to stay within `server.history_budget`.
    pub history_evicted: IntCounter,
    /// Dropped sockets kept for connection state recovery.
    pub recovery_sessions: IntGauge,
    /// Events kept for connection state recovery.
    pub recovery_events: IntGauge,
    /// Bytes of events kept for recovery, as counted against `server.recovery_budget`.
    pub recovery_bytes: IntGauge,
    /// Recovery events dropped to stay within `server.recovery_budget`.
    pub recovery_evicted: IntCounter,
    /// CONNECTs that claimed a dropped socket, by `namespace` and `result` (`recovered`,
    /// or why not).
    pub recoveries: IntCounterVec,
}

impl Default for Meters {
    /// Unregistered instruments, for relays nobody scrapes.
    fn default() -> Self {
        let opts = || Opts::new("unregistered", "unregistered");
        let gauge = |labels: &[&str]| {
            IntGaugeVec::new(opts(), labels).expect("static metric options are valid")
        };
        let counter = |labels: &[&str]| {
            IntCounterVec::new(opts(), labels).expect("static metric options are valid")
        };
        Meters {
            connections: gauge(&["namespace", "transport"]),
            received: counter(&["namespace"]),
            delivered: counter(&["namespace"]),
            refused: counter(&["namespace", "reason"]),
            rooms: gauge(&["namespace"]),
            auth_refused: counter(&["namespace", "reason"]),
            history_events: IntGauge::with_opts(opts()).expect("static metric options are valid"),
            history_bytes: IntGauge::with_opts(opts()).expect("static metric options are valid"),
            history_evicted: IntCounter::with_opts(opts())
                .expect("static metric options are valid"),
            recovery_sessions: IntGauge::with_opts(opts())
                .expect("static metric options are valid"),
            recovery_events: IntGauge::with_opts(opts()).expect("static metric options are valid"),
            recovery_bytes: IntGauge::with_opts(opts()).expect("static metric options are valid"),
            recovery_evicted: IntCounter::with_opts(opts())
                .expect("static metric options are valid"),
            recoveries: counter(&["namespace", "result"]),
        }
    }
}
