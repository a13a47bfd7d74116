//! The admin listener's routes: `/healthz`, `/readyz` and `/metrics`. (The server API
//! under `/api/v1/` joins them later.) Never exposed publicly by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};

use super::plain;
use crate::telemetry::metrics::Metrics;

/// The daemon's serving state, as health checks report it: a latch that goes
/// starting → serving → draining.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
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
}

/// What the admin listener serves.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The serving state.
    pub health: Arc<Health>,
    /// The registry behind `/metrics`.
    pub metrics: Metrics,
}

impl Admin {
    /// Serve one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/healthz" | "/readyz" => {
                if self.health.is_serving() {
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
                .body(Full::new(Bytes::from(self.metrics.render())))
                .expect("static header is valid"),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
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
