//! Forwarding a request to the worker that owns its Engine.IO session: in a multi-worker
//! daemon a polling request (or a WebSocket upgrade) may land on any worker, and the
//! session id names the owner. The request goes to the owner's internal HTTP socket (a
//! Unix socket in the workers' private runtime directory) and the answer comes back; an upgrade is spliced through.
//!
//! An owner that cannot be reached has lost its sessions: whatever the [`Error`], the
//! client gets the protocol's "Session ID unknown" and reconnects; the log says which
//! step failed.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::engine::RequestError;

/// Largest answer relayed back (a poll answer is bounded well below this).
const MAX_ANSWER: usize = 64 << 20;

/// Why a request could not be forwarded to the worker that owns its session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nobody listens there, or not within `CONNECT_TIMEOUT`.
    #[error("cannot connect to the worker: {0}")]
    Connect(#[source] std::io::Error),
    /// The peer's credentials cannot be read.
    #[error("cannot read the credentials of the worker's socket: {0}")]
    PeerCred(#[source] std::io::Error),
    /// Someone other than the workers' user holds the worker's address.
    #[error("the worker's socket belongs to uid {found}, not {expected}")]
    ForeignOwner {
        /// The uid holding it.
        found: u32,
        /// The workers' uid.
        expected: u32,
    },
    /// The HTTP/1.1 handshake on the new connection failed.
    #[error("HTTP handshake with the worker failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// Sending the request or reading the answer's head failed.
    #[error("the worker did not answer: {0}")]
    Request(#[source] hyper::Error),
    /// Reading the answer's body failed.
    #[error("reading the worker's answer failed: {0}")]
    Answer(#[source] hyper::Error),
    /// The answer is over `MAX_ANSWER`.
    #[error("the worker's answer is over {MAX_ANSWER} bytes")]
    AnswerTooLarge,
}

/// Reaches the other workers' internal HTTP sockets.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// The workers' private runtime directory; worker `n` listens at `{dir}/http-{n}`.
    pub dir: std::path::PathBuf,
    /// The uid the workers run as: a socket under that name held by anyone else is not
    /// ours and gets nothing.
    pub uid: u32,
}

/// How long connecting to a sibling may take before it counts as unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Connect to a sibling's Unix socket within a timeout. The connect itself never blocks
/// the runtime (a sibling whose backlog is full refuses at once with `EAGAIN`), and no
/// thread is taken per request.
pub async fn connect(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

impl Forwarder {
    /// The socket path worker `node` serves forwarded requests on.
    pub fn address(&self, node: u32) -> std::path::PathBuf {
        self.dir.join(format!("http-{node}"))
    }

    /// Send `req` to worker `node` and relay its answer.
    pub async fn forward(&self, node: u32, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match self.try_forward(node, req).await {
            Ok(resp) => resp,
            Err(error) => {
                tracing::debug!(node, %error, "cannot forward to the session's owner");
                RequestError::UnknownSid.response()
            }
        }
    }

    async fn try_forward(
        &self,
        node: u32,
        mut req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Error> {
        let stream = connect(&self.address(node)).await.map_err(Error::Connect)?;
        let found = stream.peer_cred().map_err(Error::PeerCred)?.uid();
        if found != self.uid {
            return Err(Error::ForeignOwner {
                found,
                expected: self.uid,
            });
        }
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Handshake)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let upgrading = req.headers().contains_key(hyper::header::UPGRADE);
        let client_side = upgrading.then(|| hyper::upgrade::on(&mut req));
        let mut resp = sender.send_request(req).await.map_err(Error::Request)?;
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
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|error| match error.downcast::<hyper::Error>() {
                Ok(error) => Error::Answer(*error),
                Err(other) => {
                    // The only other error `Limited` yields is its own.
                    debug_assert!(other.is::<LengthLimitError>(), "{other}");
                    Error::AnswerTooLarge
                }
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}
