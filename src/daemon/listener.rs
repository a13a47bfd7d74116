//! The accept loop: one task per TCP connection serving HTTP/1.1 (with upgrades), backoff
//! on accept errors (such as running out of file descriptors). It stops when its
//! [`CancellationToken`] is cancelled; its connection tasks live in a [`TaskTracker`], so
//! that shutdown can wait for the last one (an upgraded connection leaves the tracker
//! when hyper hands it over to the WebSocket transport).
//!
//! Every connection has the same bounds on what a client can make it hold before a
//! request is parsed: [`HEADER_TIMEOUT`], [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] (a head
//! over them is answered 431 and the connection closed).

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

/// Most bytes hyper buffers for one connection while it reads a request head (a body is
/// streamed through the same buffer, so this bounds that too, not the body's size): a
/// larger head is answered 431 and the connection closed. Browsers send a few KiB; big
/// cookies stay under 16 KiB in practice (Node's default limit; nginx allows 4 × 8 KiB).
/// hyper's own default, about 400 KiB, would let each connection pin that much before a
/// byte of it is parsed.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header lines in a request head (hyper's default, said here so that it stays
/// bounded whatever hyper's becomes); browsers send about 20. More are answered 431.
const MAX_HEADERS: usize = 100;

/// An HTTP/1.1 connection builder with this listener's bounds.
fn http() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
}

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
            let conn = http()
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers every request with the length of its body, and `len` bytes of its own when
    /// asked with `?len=N`.
    struct Echo;

    impl Site for Echo {
        fn serve(
            &self,
            req: Request<Incoming>,
            _remote: SocketAddr,
        ) -> crate::engine::BoxFuture<'_, Response<Full<Bytes>>> {
            Box::pin(async move {
                let len: usize = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("len="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let text = format!("{}:{}", body.len(), "x".repeat(len));
                Response::new(Full::new(Bytes::from(text)))
            })
        }
    }

    async fn serving() -> (Serving, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Serving::start(listener, Arc::new(Echo)), addr)
    }

    /// Send `head` (and `body`) on a new connection and read until the server closes it:
    /// what came back, or the error that ended the read (a reset). Never hangs: the server
    /// closes after one answer (`Connection: close`) or on refusing the head.
    async fn exchange(addr: SocketAddr, head: String, body: &[u8]) -> Result<String, String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.split();
        let sending = async {
            // The server may close before taking it all: that is its answer.
            let _ = write.write_all(head.as_bytes()).await;
            let _ = write.write_all(body).await;
        };
        let mut answer = Vec::new();
        let reading = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer));
        let ((), read) = tokio::join!(sending, reading);
        match read.expect("the server answers or closes, never hangs") {
            Ok(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            Err(err) if answer.is_empty() => Err(err.to_string()),
            Err(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
        }
    }

    fn request(extra: &str, path: &str, body_len: usize) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {body_len}\r\n\r\n"
        )
    }

    fn refused(answer: &Result<String, String>) -> bool {
        match answer {
            Ok(text) => text.is_empty() || text.starts_with("HTTP/1.1 431"),
            Err(_) => true,
        }
    }

    #[tokio::test]
    async fn a_head_over_the_bound_is_refused_and_ordinary_ones_served() {
        let (mut serving, addr) = serving().await;
        // 200 KiB of cookie: under hyper's default buffer, over ours.
        let big = format!("Cookie: c={}\r\n", "a".repeat(200 * 1024));
        let answer = exchange(addr, request(&big, "/", 0), b"").await;
        assert!(refused(&answer), "a 200 KiB head: {answer:?}");
        let huge = format!("X-Pad: {}\r\n", "a".repeat(1024 * 1024));
        let answer = exchange(addr, request(&huge, "/", 0), b"").await;
        assert!(refused(&answer), "a 1 MiB head: {answer:?}");
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        let answer = exchange(addr, request(&many, "/", 0), b"").await;
        assert!(
            refused(&answer),
            "{} header lines: {answer:?}",
            MAX_HEADERS + 1
        );

        // A 12 KiB cookie is fine; bodies and answers are not bounded by the head's buffer.
        let cookie = format!("Cookie: c={}\r\n", "a".repeat(12 * 1024));
        let answer = exchange(addr, request(&cookie, "/", 5), b"hello").await;
        assert!(
            answer.as_ref().unwrap().starts_with("HTTP/1.1 200"),
            "{answer:?}"
        );
        assert!(answer.unwrap().ends_with("5:"));
        let mib = 1024 * 1024;
        let body = vec![b'b'; mib];
        let answer = exchange(addr, request("", &format!("/?len={mib}"), mib), &body)
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..40]);
        assert!(
            answer.contains(&format!("{mib}:")),
            "the 1 MiB body arrived whole"
        );
        assert!(
            answer.ends_with(&"x".repeat(mib)),
            "the 1 MiB answer left whole"
        );
        serving.stop_accepting().await;
    }
}
