//! The two Engine.IO transports by name ([`Transport`]: the `transport=` query value
//! and the `transport` label of every metric), and the state of the transport carrying
//! a session ([`TransportKind`], which counts as polling until an upgrade completes).
//!
//! The only place that spells `"polling"` and `"websocket"`: the metrics, the status
//! documents and the request parser all take the names from here.

use std::fmt;

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl Transport {
    /// Both transports, for sums over the `transport` label.
    pub const ALL: [Transport; 2] = [Transport::Polling, Transport::Websocket];

    /// Its name on the wire (`transport=`) and its metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }

    /// The transport a `transport=` value names.
    pub fn from_name(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which transport carries a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// Probed over WebSocket; polling still carries it until the client sends UPGRADE.
    Upgrading,
    /// WebSocket.
    Websocket,
    /// A WebSocket for it has been accepted and the probe is awaited.
    Probing,
}

impl TransportKind {
    /// The transport it counts as in the metrics: polling until the upgrade completes.
    pub fn counted_as(self) -> Transport {
        match self {
            TransportKind::Websocket => Transport::Websocket,
            TransportKind::Polling | TransportKind::Upgrading | TransportKind::Probing => {
                Transport::Polling
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_upgrade_counts_as_polling_until_done() {
        for t in Transport::ALL {
            assert_eq!(Transport::from_name(t.as_str()), Some(t));
        }
        assert_eq!(Transport::from_name("flash"), None);
        assert_eq!(TransportKind::Probing.counted_as(), Transport::Polling);
        assert_eq!(TransportKind::Upgrading.counted_as(), Transport::Polling);
        assert_eq!(TransportKind::Websocket.counted_as(), Transport::Websocket);
    }
}
