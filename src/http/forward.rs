//! Forwarding a request to the worker that owns its Engine.IO session: in a multi-worker
//! daemon a polling request (or a WebSocket upgrade) may land on any worker, and the
//! session id names the owner. The request goes to the owner's internal HTTP socket (an
//! abstract Unix address) and the answer comes back; an upgrade is spliced through.
//!
//! An owner that cannot be reached has lost its sessions: the client gets the protocol's
//! "Session ID unknown" and reconnects.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::engine::RequestError;

/// Largest answer relayed back (a poll answer is bounded well below this).
const MAX_ANSWER: usize = 64 << 20;

/// Reaches the other workers' internal HTTP sockets.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// Abstract socket name prefix; worker `n` listens at `{prefix}{n}`.
    pub prefix: String,
}

impl Forwarder {
    /// The abstract address worker `node` serves forwarded requests on.
    pub fn address(&self, node: u32) -> std::io::Result<std::os::unix::net::SocketAddr> {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(format!("{}{node}", self.prefix))
    }

    /// Send `req` to worker `node` and relay its answer.
    pub async fn forward(&self, node: u32, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.try_forward(node, req).await {
            Ok(resp) => resp,
            Err(err) => {
                tracing::debug!(node, error = %err, "session owner unreachable");
                RequestError::UnknownSid.response()
            }
        }
    }

    async fn try_forward(
        &self,
        node: u32,
        mut req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
        let stream = std::os::unix::net::UnixStream::connect_addr(&self.address(node)?)?;
        stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let upgrading = req.headers().contains_key(hyper::header::UPGRADE);
        let client_side = upgrading.then(|| hyper::upgrade::on(&mut req));
        let mut resp = sender.send_request(req).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_side
        {
            let owner_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(client), Ok(owner)) = tokio::join!(client_side, owner_side) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(owner),
                )
                .await;
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, Full::new(Bytes::new())));
        }
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}
