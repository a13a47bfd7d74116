//! The relay's instruments, created and registered by `telemetry::metrics` (where the
//! names live); unregistered by default.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

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
        }
    }
}
