//! The accept loop: one task per TCP connection serving HTTP/1.1 (with upgrades), backoff
//! on accept errors (such as running out of file descriptors), and a stop latch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::Site;

/// Most time an idle client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A latch that stops the accept loop.
#[derive(Debug, Clone)]
pub struct Stop {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    /// A latch not yet triggered.
    pub fn new() -> Stop {
        Stop {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Trigger it.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Accept connections until `stop` triggers; connections already open finish their
/// request in flight and close.
pub async fn serve<S: Site>(
    listener: TcpListener,
    site: Arc<S>,
    stop: Stop,
    connections: Connections,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait() => return,
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
        let open = OpenConnection::new(&connections);
        tokio::spawn(async move {
            let _open = open;
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
                _ = stop.wait() => {
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

/// Counts a listener's open HTTP connections (upgraded ones leave the count when hyper
/// hands them over), so that shutdown can wait for them.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    /// Open connections now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One open connection; leaves the count when dropped.
struct OpenConnection(Connections);

impl OpenConnection {
    fn new(connections: &Connections) -> OpenConnection {
        connections.0.fetch_add(1, Ordering::AcqRel);
        OpenConnection(connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}
