//! The accept loop: one task per TCP connection serving HTTP/1.1 (with upgrades), backoff
//! on accept errors (such as running out of file descriptors). It stops when its
//! [`CancellationToken`] is cancelled; its connection tasks live in a [`TaskTracker`], so
//! that shutdown can wait for the last one (an upgraded connection leaves the tracker
//! when hyper hands it over to the WebSocket transport).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::Site;

/// Most time an idle client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept connections until `stop` is cancelled; connections already open finish their
/// request in flight and close. Each connection runs as a task of `connections`.
pub async fn serve<S: Site>(
    listener: TcpListener,
    site: Arc<S>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(err) => {
                tracing::warn!(error = %err, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let site = site.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, std::convert::Infallible>(site.serve(req, remote).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    // Finish the request in flight (a poll answered with CLOSE), then
                    // close instead of keeping the connection alive.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::trace!(error = %err, "http connection ended with an error");
            }
        });
    }
}

/// A listener being served: its accept task, the token that stops it and the tracker of
/// its connections.
pub struct Serving {
    stop: CancellationToken,
    connections: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Start serving `listener` with `site`.
    pub fn start<S: Site>(listener: TcpListener, site: Arc<S>) -> Serving {
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(serve(listener, site, stop.clone(), connections.clone()));
        Serving {
            stop,
            connections,
            accept,
        }
    }

    /// Stop accepting (open connections finish their request in flight) and wait for the
    /// accept loop to end. The connections are left to [`Serving::drained`].
    pub async fn stop_accepting(&mut self) {
        self.stop.cancel();
        self.connections.close();
        let _ = (&mut self.accept).await;
    }

    /// Resolves once every connection accepted before the stop has closed.
    pub async fn drained(&self) {
        self.connections.wait().await;
    }

    /// Whether connections are still open.
    pub fn busy(&self) -> bool {
        !self.connections.is_empty()
    }
}
