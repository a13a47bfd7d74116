//! The accept loop: one task per TCP connection serving HTTP/1.1 (with upgrades), backoff
//! on accept errors (such as running out of file descriptors), and a stop latch.

use std::sync::Arc;
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

/// Accept connections until `stop` triggers.
pub async fn serve<S: Site>(listener: TcpListener, site: Arc<S>, stop: Stop) {
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
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, std::convert::Infallible>(site.serve(req, remote).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = conn.await {
                tracing::trace!(error = %err, "http connection ended with an error");
            }
        });
    }
}
