//! Delivering the queue: batches by size and linger, one POST per attempt over a fresh
//! HTTP/1.1 connection (hyper's client; `http://` only), retries on an exponential
//! schedule with a cap, then the batch is dropped and counted. One batch is in flight at
//! a time, so a receiver that is down holds at most one batch plus the bounded queue.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Event, Settings, Webhooks, sign};

/// The `outcome` label values of `iorelay_webhook_deliveries_total`.
pub const OUTCOMES: [&str; 4] = ["ok", "status", "timeout", "error"];

/// Where batches are POSTed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address (no brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query of the request.
    pub path: String,
    /// The `Host` header.
    pub authority: String,
}

impl Target {
    /// Parse an `http://` URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (host, port, path) = crate::config::webhooks::http_url(url)?;
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        Ok(Target {
            host,
            port,
            path,
            authority,
        })
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The receiver answered with a status other than 2xx.
    #[error("receiver answered {0}")]
    Status(u16),
    /// No answer within `timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a path that hyper refuses).
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
}

impl Failure {
    /// Its `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Status(_) => "status",
            Failure::Timeout(_) => "timeout",
            Failure::Connect(_) | Failure::Http(_) | Failure::Request(_) => "error",
        }
    }
}

/// The pause before retry number `retry` (0 for the first): `first` doubled per retry,
/// at most `max`.
pub fn backoff(retry: u32, first: Duration, max: Duration) -> Duration {
    first
        .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// The batch body, `{"events":[…]}`.
pub fn body_of(batch: &[Event]) -> Bytes {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        events: &'a [Event],
    }
    Bytes::from(serde_json::to_vec(&Body { events: batch }).expect("events always serialize"))
}

/// Deliver the queue of `hooks` for as long as the process runs.
pub async fn run(hooks: Webhooks) {
    loop {
        hooks.until_queued().await;
        let settings = hooks.settings();
        if hooks.len() < settings.batch && !settings.linger.is_zero() {
            tokio::time::sleep(settings.linger).await;
        }
        let settings = hooks.settings();
        let batch = hooks.take(settings.batch);
        if batch.is_empty() {
            continue;
        }
        let Some(target) = settings.target.clone() else {
            // Turned off while lingering: what was queued is not sent.
            continue;
        };
        let body = body_of(&batch);
        let meters = hooks.meters().clone();
        let delivered = retrying(&settings, |attempt| {
            let (target, body, settings, meters) =
                (target.clone(), body.clone(), settings.clone(), meters.clone());
            async move {
                let result = post(&target, &settings, body).await;
                let outcome = result.as_ref().map_or_else(Failure::outcome, |()| "ok");
                meters.deliveries.with_label_values(&[outcome]).inc();
                if let Err(err) = &result {
                    tracing::warn!(url = %format!("http://{}{}", target.authority, target.path), attempt, error = %err, "webhook delivery failed");
                }
                result
            }
        })
        .await;
        if delivered.is_err() {
            let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            meters
                .dropped
                .with_label_values(&["retries_exhausted"])
                .inc_by(n);
            tracing::error!(
                url = %format!("http://{}{}", target.authority, target.path),
                events = batch.len(),
                attempts = settings.retries + 1,
                "webhook batch dropped: the receiver did not accept it"
            );
        } else {
            tracing::debug!(events = batch.len(), "webhook batch delivered");
        }
    }
}

/// Make `attempt(n)` for n = 1, 2, …, pausing on the backoff schedule between failures,
/// until one succeeds or `settings.retries` retries have failed (the last error).
pub async fn retrying<F, Fut>(settings: &Settings, mut attempt: F) -> Result<(), Failure>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut retry = 0;
    loop {
        match attempt(retry + 1).await {
            Ok(()) => return Ok(()),
            Err(err) if retry >= settings.retries => return Err(err),
            Err(_) => {
                tokio::time::sleep(backoff(retry, settings.backoff, settings.backoff_max)).await;
                retry += 1;
            }
        }
    }
}

/// One POST of `body`, signed now, within `settings.timeout`.
async fn post(target: &Target, settings: &Settings, body: Bytes) -> Result<(), Failure> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let request = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("iorelay/", env!("CARGO_PKG_VERSION")))
        .header("x-iorelay-timestamp", timestamp.to_string())
        .header(
            "x-iorelay-signature",
            sign::signature(&settings.secret, timestamp, &body),
        )
        .body(Full::new(body))?;
    let exchange = async {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(Failure::Connect)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::pin!(conn);
        // The connection is driven here, not spawned, so that a timeout drops it.
        let response = tokio::select! {
            response = sender.send_request(request) => response?,
            ended = &mut conn => {
                ended?;
                return Err(Failure::Status(0));
            }
        };
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status.as_u16()))
        }
    };
    tokio::time::timeout(settings.timeout, exchange)
        .await
        .map_err(|_| Failure::Timeout(settings.timeout))?
}

#[cfg(test)]
mod tests {
    use super::super::tests::{event, meters, on};
    use super::*;
    use std::sync::Arc;
    use tokio::time::Instant;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (first, max) = (Duration::from_millis(500), Duration::from_secs(3));
        let schedule: Vec<u64> = (0..6)
            .map(|r| backoff(r, first, max).as_millis() as u64)
            .collect();
        assert_eq!(schedule, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(backoff(200, first, max), max, "no overflow");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_follow_the_schedule_then_give_up() {
        let mut config = on("http://127.0.0.1:9/");
        config.retries = 3;
        config.backoff = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(250);
        let settings = Settings::resolve(&config).unwrap();
        let start = Instant::now();
        let mut at = Vec::new();
        let result = retrying(&settings, |n| {
            at.push((n, start.elapsed().as_millis()));
            async { Err(Failure::Status(500)) }
        })
        .await;
        assert!(matches!(result, Err(Failure::Status(500))));
        assert_eq!(at, [(1, 0), (2, 100), (3, 300), (4, 550)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_stops_the_retries() {
        let settings = Settings::resolve(&on("http://127.0.0.1:9/")).unwrap();
        let mut calls = 0;
        let result = retrying(&settings, |n| {
            calls += 1;
            async move {
                if n < 3 {
                    Err(Failure::Timeout(Duration::ZERO))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls, 3);
    }

    /// A receiver on a real socket: answers each request with the next status of
    /// `statuses`, and hands each request's head and body to the test.
    async fn receiver(
        statuses: Vec<u16>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<(hyper::http::request::Parts, Bytes)>,
    ) {
        use http_body_util::BodyExt;
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let statuses = Arc::new(parking_lot::Mutex::new(statuses.into_iter()));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (tx, statuses) = (tx.clone(), statuses.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (tx, statuses) = (tx.clone(), statuses.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let _ = tx.send((parts, body));
                            let status = statuses.lock().next().unwrap_or(200);
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn a_batch_is_signed_retried_and_delivered() {
        let (addr, mut requests) = receiver(vec![500]).await;
        let mut config = on(&format!("http://{addr}/hook"));
        config.backoff = Duration::from_millis(1);
        config.linger = Duration::from_millis(1);
        let hooks = Webhooks::new(&config, meters()).unwrap();
        let task = hooks.spawn();
        hooks.push([event("room.occupied", "a"), event("member.joined", "a")]);
        for _ in 0..2 {
            let (parts, body) = requests.recv().await.unwrap();
            assert_eq!(parts.method, Method::POST);
            assert_eq!(parts.uri.path(), "/hook");
            assert_eq!(parts.headers[CONTENT_TYPE], "application/json");
            let ts: u64 = parts.headers["x-iorelay-timestamp"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                parts.headers["x-iorelay-signature"].to_str().unwrap(),
                sign::signature(b"s3cret", ts, &body)
            );
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["events"][0]["event"], "room.occupied");
            assert_eq!(json["events"][1]["event"], "member.joined");
        }
        // The second answer (200) is counted once the client has read it.
        let m = hooks.meters().clone();
        for _ in 0..1000 {
            if m.deliveries.with_label_values(&["ok"]).get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(m.deliveries.with_label_values(&["ok"]).get(), 1);
        assert_eq!(m.deliveries.with_label_values(&["status"]).get(), 1);
        task.abort();
    }

    #[tokio::test]
    async fn batches_are_cut_at_the_batch_size() {
        let (addr, mut requests) = receiver(vec![]).await;
        let mut config = on(&format!("http://{addr}/"));
        config.batch = 2;
        config.linger = Duration::from_millis(1);
        let hooks = Webhooks::new(&config, meters()).unwrap();
        hooks.push((0..5).map(|i| event("member.joined", &format!("r{i}"))));
        let task = hooks.spawn();
        let mut sizes = Vec::new();
        let mut rooms = Vec::new();
        while rooms.len() < 5 {
            let (_, body) = requests.recv().await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let events = json["events"].as_array().unwrap();
            sizes.push(events.len());
            rooms.extend(
                events
                    .iter()
                    .map(|e| e["room"].as_str().unwrap().to_owned()),
            );
        }
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(rooms, ["r0", "r1", "r2", "r3", "r4"]);
        task.abort();
    }
}
