//! The engine's settings, reloadable as a whole, and the OPEN packet they are announced
//! in.
//!
//! # Where the defaults live
//! Not here. The defaults a user sees are the config's (`config::EngineConfig` and
//! `server.max_connections`, each documented with its default), and the daemon turns the
//! config into these settings (`daemon::engine_settings`). A `Default` here would be a
//! second copy of the same numbers that nothing keeps in step, and pointing it at the
//! config instead would make the engine import the config, which the layering forbids
//! (`engine` imports nothing else from the crate). So [`Settings`] has no `Default`
//! outside tests; the engine's own tests use `Settings::default` there, with the
//! config's values written out once, so that its OPEN packet test reads like the
//! reference server's.

use std::time::Duration;

pub use super::admission::Limits as PerIp;
use super::origin::Origins;
use super::packet::{Frame, Packet};
use super::proxy::TrustedProxies;
use super::sid::Sid;
use super::transport::Transport;

/// Engine.IO settings, reloadable as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// Deadline for the pong, from when the ping is queued.
    pub ping_timeout: Duration,
    /// Largest POST body or WebSocket message accepted from a client.
    pub max_payload: usize,
    /// Deadline for each step of a polling → WebSocket upgrade.
    pub upgrade_timeout: Duration,
    /// Deadline for a polling POST body to arrive.
    pub body_timeout: Duration,
    /// Whether HTTP long-polling is enabled.
    pub polling: bool,
    /// Whether WebSocket is enabled.
    pub websocket: bool,
    /// Outbound queue length per session.
    pub write_queue: usize,
    /// Outbound bytes queued per session before it counts as a slow consumer.
    pub write_budget: usize,
    /// Outbound bytes queued by all sessions together (polling queues, WebSocket
    /// outboxes waiting for a full socket) before the one that would pass it is closed.
    pub outbound_budget: usize,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Per client address: most sessions, handshake rate and burst.
    pub per_ip: PerIp,
    /// The worker this engine runs in (its id prefixes session ids), in a multi-worker
    /// daemon.
    pub node: Option<u32>,
    /// Which pages besides the server's own may connect (handshakes, WebSockets, polling
    /// with CORS).
    pub origins: Origins,
    /// The peers whose `X-Forwarded-For` names the client.
    pub proxies: TrustedProxies,
}

impl Settings {
    /// Whether `transport` is enabled.
    pub fn allows(&self, transport: Transport) -> bool {
        match transport {
            Transport::Polling => self.polling,
            Transport::Websocket => self.websocket,
        }
    }

    /// The OPEN packet of session `sid` opened over `transport`: exactly `sid, upgrades,
    /// pingInterval, pingTimeout, maxPayload`. Only a polling session is offered the
    /// upgrade.
    pub(crate) fn open_packet(&self, sid: &Sid, transport: Transport) -> Frame {
        let upgrades = if transport == Transport::Polling && self.websocket {
            r#"["websocket"]"#
        } else {
            "[]"
        };
        let json = format!(
            r#"{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            sid,
            upgrades,
            self.ping_interval.as_millis(),
            self.ping_timeout.as_millis(),
            self.max_payload
        );
        Packet::Open(json).encode()
    }
}

/// The config's defaults (see the module documentation), for the engine's tests only.
#[cfg(test)]
impl Default for Settings {
    fn default() -> Self {
        Settings {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            polling: true,
            websocket: true,
            write_queue: 1024,
            write_budget: 4 << 20,
            outbound_budget: 512_000_000,
            max_sessions: 100_000,
            per_ip: PerIp {
                sessions: 1000,
                rate: 50,
                burst: 200,
            },
            node: None,
            origins: Origins::default(),
            proxies: TrustedProxies::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_packet_has_exactly_the_handshake_fields() {
        let sid = Sid::from_client("abc");
        let Frame::Text(t) = Settings::default().open_packet(&sid, Transport::Polling) else {
            panic!("open is text")
        };
        assert_eq!(
            t.as_str(),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let Frame::Text(t) = Settings::default().open_packet(&sid, Transport::Websocket) else {
            panic!("open is text")
        };
        assert!(t.contains(r#""upgrades":[],"#), "{t}");
    }
}
