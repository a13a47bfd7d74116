//! The hyper surface: the public listener routes each request to the Engine.IO endpoint,
//! the echo endpoint, health, the embedded client bundle, or static files ([`Public`]);
//! the admin listener serves health, readiness and metrics ([`admin::Admin`]).
//!
//! Owns routing and the client bundle only; the protocols live in `engine` and above.
//! [`files`] serves static files, [`forward`] hands a request to the worker that owns
//! its session, [`response`] builds the responses they share. None of them imports this
//! file.

pub mod admin;
pub mod api;
pub mod control;
pub mod files;
pub mod forward;
pub mod host;
pub mod response;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};

use response::plain;

use crate::engine::Engine;

/// The socket.io client bundle, from the npm package (see `static/vendor/README.md`).
const CLIENT_BUNDLE: &[u8] = include_bytes!("../../static/vendor/socket.io.min.js");

/// The bundle's entity tag: a hash of its bytes, so that it changes with the file.
static BUNDLE_ETAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // FNV-1a: enough to tell versions of one file apart.
    let hash = CLIENT_BUNDLE
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("\"{hash:016x}\"")
});

/// A listener's request handler.
pub trait Site: Send + Sync + 'static {
    /// Serve one request from `remote`.
    fn serve(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> crate::engine::BoxFuture<'_, Response<Full<Bytes>>>;
}

impl Site for Public {
    fn serve(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> crate::engine::BoxFuture<'_, Response<Full<Bytes>>> {
        Box::pin(self.handle(req, remote))
    }
}

impl Site for admin::Admin {
    fn serve(
        &self,
        req: Request<Incoming>,
        _remote: SocketAddr,
    ) -> crate::engine::BoxFuture<'_, Response<Full<Bytes>>> {
        Box::pin(self.handle(req))
    }
}

/// What the public listener serves.
#[derive(Debug, Clone)]
pub struct Public {
    /// The Socket.IO endpoint.
    pub engine: Arc<Engine>,
    /// Its path, with a trailing slash (`/socket.io/`).
    pub engine_path: String,
    /// A bare Engine.IO echo server and its path, when configured.
    pub echo: Option<(String, Arc<Engine>)>,
    /// Where static files come from; `None` serves the built-in demo page.
    pub static_dir: Option<PathBuf>,
    /// In a multi-worker daemon: this worker's id, and how to reach the owners of
    /// sessions that are not ours.
    pub forward: Option<(u32, forward::Forwarder)>,
}

impl Public {
    /// Serve one request.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix(self.engine_path.as_str()) {
            if rest == "socket.io.js" || rest == "socket.io.min.js" {
                return bundle(&req);
            }
            if let Some((me, forwarder)) = &self.forward
                && let Some(owner) = session_owner(&req)
                && owner != *me
            {
                return forwarder.forward(owner, req).await;
            }
            return self.engine.handle(req, remote).await;
        }
        if let Some((echo_path, echo)) = &self.echo
            && path.starts_with(echo_path.as_str())
        {
            return echo.handle(req, remote).await;
        }
        if path == "/healthz" {
            return plain(StatusCode::OK, "ok\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        files::serve(self.static_dir.as_deref(), path).await
    }
}

/// The worker that owns the session a request names, if it names one. The query is read
/// as the engine reads it (decoded, the last `sid` wins), so that the two agree on which
/// session that is.
fn session_owner<B>(req: &Request<B>) -> Option<u32> {
    let query = req.uri().query()?;
    let (_, sid) = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "sid")
        .last()?;
    crate::engine::Sid::owner(&sid)
}

/// The client bundle, cacheable; `If-None-Match` answered with 304.
fn bundle<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let etag = BUNDLE_ETAG.as_str();
    // If-None-Match holds a list of tags, weak ones prefixed `W/`, or `*` (RFC 9110).
    let matches = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag);
    if matches {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .header(header::CACHE_CONTROL, "public, max-age=3600")
            .body(Full::new(Bytes::new()))
            .expect("static response is valid");
    }
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        )
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .header(header::ETAG, etag)
        .body(Full::new(Bytes::from_static(CLIENT_BUNDLE)))
        .expect("static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_of(query: &str) -> Option<u32> {
        let req = Request::get(format!("/socket.io/?{query}"))
            .body(())
            .expect("valid request");
        session_owner(&req)
    }

    #[test]
    fn the_session_owner_is_read_from_the_sid() {
        let sid = crate::engine::Sid::random_for(Some(3));
        let sid = sid.as_str();
        assert_eq!(
            owner_of(&format!("EIO=4&transport=polling&sid={sid}")),
            Some(3)
        );
        assert_eq!(owner_of("EIO=4&transport=polling"), None, "a handshake");
        assert_eq!(owner_of("sid=short"), None, "not a worker's id");
        let other = crate::engine::Sid::random_for(Some(5));
        assert_eq!(
            owner_of(&format!("sid={sid}&sid={}", other.as_str())),
            Some(5),
            "the last sid wins, as in the engine"
        );
        let encoded = format!("%{:02X}{}", sid.as_bytes()[0], &sid[1..]);
        assert_eq!(owner_of(&format!("sid={encoded}")), Some(3), "decoded");
    }
}
