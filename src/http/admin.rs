//! The admin listener's routes: `/healthz`, `/readyz` and `/metrics` (open, for health
//! checks and Prometheus), and everything under `/api/v1/` (the server API and the ops
//! routes, behind a bearer token: [`api`](super::api)). Every route first checks the
//! request's `Host` ([`host`](super::host)) against DNS rebinding. Never exposed publicly by default
//! (loopback). Also the [`Control`] of a single process ([`Local`]) and the status
//! document it and each worker build ([`Status`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use serde_json::Value;

use super::api::{self, Access};
use super::control::{Control, Reloader};
use super::response::plain;
use crate::adapter::RoomCount;
use crate::api::{Call, Reply};
use crate::engine::{BoxFuture, Engine, Transport};
use crate::relay::{Relay, backend};
use crate::telemetry::metrics::Metrics;

/// The daemon's serving state, as health checks report it: a latch that goes
/// starting → serving → draining.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
    /// `iorelay_cluster_up`, on a node of a cluster.
    cluster: std::sync::OnceLock<prometheus::IntGauge>,
}

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    /// Every listener is up: report healthy and ready.
    pub fn serving(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, SERVING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown began: report unhealthy and not ready from now on.
    pub fn draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// Whether the daemon serves.
    pub fn is_serving(&self) -> bool {
        self.state.load(Ordering::Acquire) == SERVING
    }

    /// Report the cluster's state (`up`, 1 while subscribed on Redis) on `/readyz`.
    pub fn watch_cluster(&self, up: prometheus::IntGauge) {
        let _ = self.cluster.set(up);
    }

    /// Whether this node is in a cluster that it cannot reach.
    pub fn cluster_degraded(&self) -> bool {
        self.cluster.get().is_some_and(|up| up.get() == 0)
    }
}

/// What the admin listener serves.
#[derive(Clone)]
pub struct Admin {
    /// The serving state.
    pub health: Arc<Health>,
    /// The daemon behind the routes.
    pub control: Arc<dyn Control>,
    /// The server API's tokens and limits.
    pub access: Arc<Access>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Serve one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        // Every route checks Host, the open ones too: a rebound page must not read
        // /metrics (room and namespace names) either. Scrapers and monitors address the
        // listener by IP or localhost, which always pass. The API checks it itself, to
        // count the refusal with its other answers.
        let route = match path {
            "/healthz" => Some("healthz"),
            "/readyz" => Some("readyz"),
            "/metrics" => Some("metrics"),
            path if path.starts_with("/api/v1/") => None,
            _ => Some("other"),
        };
        if let Some(route) = route {
            let host = req.headers().get(header::HOST).map(|v| v.as_bytes());
            if !self.access.admits_host(route, host) {
                return plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected request: the Host header names neither an IP address, localhost nor admin.allowed_hosts\n",
                );
            }
        }
        match req.uri().path() {
            "/healthz" | "/readyz" => {
                // Without Redis the node still serves its own clients (and the other
                // nodes are as cut off): ready, but said to be degraded.
                if self.health.is_serving()
                    && self.health.cluster_degraded()
                    && req.uri().path() == "/readyz"
                {
                    plain(
                        StatusCode::OK,
                        "ok; cluster degraded: not subscribed on Redis\n",
                    )
                } else if self.health.is_serving() {
                    plain(StatusCode::OK, "ok\n")
                } else {
                    plain(StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                }
            }
            "/metrics" => Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Full::new(Bytes::from(self.control.metrics().await)))
                .expect("static header is valid"),
            path if path.starts_with("/api/v1/") => {
                let serving = self.health.is_serving();
                api::serve(&*self.control, &self.access, serving, req).await
            }
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// The [`Control`] of a process that serves clients itself.
#[derive(Clone)]
pub struct Local {
    /// Its registry.
    pub metrics: Metrics,
    /// Its relay.
    pub relay: Relay,
    /// Its Socket.IO endpoint.
    pub engine: Arc<Engine>,
    /// Asks the control loop to reload.
    pub reload: Reloader,
    /// Static facts for the status document (version, environment, config files, …).
    pub about: Value,
    /// When it started.
    pub started: Instant,
}

/// How a status document shows each namespace's rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomDetail {
    /// How many rooms have members (the single process's document).
    Count,
    /// Every room with its member count (a worker's report: the master's rooms route
    /// answers from it).
    List,
}

/// The rooms of one namespace, in a status document.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Rooms {
    /// How many.
    Count(usize),
    /// Which, with their counts.
    List(Vec<RoomCount>),
}

/// One namespace, in a status document.
#[derive(Debug, serde::Serialize)]
pub struct NamespaceStatus {
    /// Its connections, over both transports.
    pub connections: i64,
    /// Its rooms.
    pub rooms: Rooms,
}

/// The status document of a process that serves clients: the single process's answer to
/// `/api/v1/status`, and each worker's part of the master's. Fields that only one of them
/// has are left out when unset.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Static facts (version, environment, config files, …): the single process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub about: Option<Value>,
    /// The worker's slot: a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// The process.
    pub pid: u32,
    /// Seconds since the start: the single process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Open Engine.IO sessions.
    pub sessions: usize,
    /// Sibling workers heard from: a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<usize>,
    /// Each namespace's connections and rooms.
    pub namespaces: serde_json::Map<String, Value>,
}

impl Status {
    /// The part every process has: its pid, sessions and namespaces.
    pub async fn of(relay: &Relay, engine: &Engine, rooms: RoomDetail) -> Status {
        let shared = relay.shared();
        let connections = &shared.meters.connections;
        let mut namespaces = serde_json::Map::new();
        for name in shared.namespace_names() {
            let count = |t: Transport| connections.with_label_values(&[&name, t.as_str()]).get();
            let rooms = match rooms {
                RoomDetail::Count => Rooms::Count(shared.bus.room_count(&name)),
                RoomDetail::List => Rooms::List(shared.bus.rooms(&name).await),
            };
            let entry = NamespaceStatus {
                connections: Transport::ALL.map(count).iter().sum(),
                rooms,
            };
            let entry = serde_json::to_value(entry).expect("a namespace status always serializes");
            namespaces.insert(name, entry);
        }
        Status {
            about: None,
            worker: None,
            pid: std::process::id(),
            uptime_seconds: None,
            sessions: engine.session_count(),
            peers: None,
            namespaces,
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a status document always serializes")
    }
}

impl Control for Local {
    fn reload(&self) -> BoxFuture<'_, Value> {
        (self.reload)()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        let text = self.metrics.render();
        Box::pin(async move { text })
    }

    fn status(&self) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let mut status = Status::of(&self.relay, &self.engine, RoomDetail::Count).await;
            status.about = Some(self.about.clone());
            status.uptime_seconds = Some(self.started.elapsed().as_secs());
            status.to_json()
        })
    }

    fn call(&self, call: Call) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let part = backend::answer(self.relay.shared(), &call, None).await;
            crate::api::merge(&call, vec![part])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_a_latch() {
        let h = Health::default();
        assert!(!h.is_serving());
        h.serving();
        assert!(h.is_serving());
        h.draining();
        assert!(!h.is_serving());
        h.serving();
        assert!(!h.is_serving(), "a draining daemon never serves again");
    }
}
