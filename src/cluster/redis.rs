//! The connections to Redis: a [`Publisher`] (one multiplexed connection that
//! reconnects by itself, fed through a bounded queue so that the relay never waits on
//! Redis) and a [`subscribe`] loop (a pub/sub connection that reconnects with backoff and
//! subscribes to every channel again each time: a subscription that a reconnect lost
//! would silently split the cluster).
//!
//! While Redis is away, publishing fails and is counted; local and host-wide delivery do
//! not depend on it.
//!
//! [`client`] makes the client of every connection, with the password of
//! `password_file` and, for `rediss://`, the certificates that [`tls`] reads.

pub mod tls;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};

use super::meters::Meters;
use crate::config::ClusterConfig;

/// Most messages waiting to be published; more are dropped and counted.
const PUBLISH_QUEUE: usize = 16_384;
/// Most messages sent in one pipeline.
const PUBLISH_BATCH: usize = 256;
/// Most messages read from Redis and waiting for the gateway; more are dropped and
/// counted.
const RECEIVE_QUEUE: usize = 16_384;
/// How long connecting (or one command) may take.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a subscription may go without traffic before it is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The first and the longest pause between reconnection attempts.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `password_file` could not be read.
    #[error("cluster.password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL was refused by the client.
    #[error("cluster.url: {0}")]
    Url(redis::RedisError),
    /// A TLS file (`ca_file`, `client_cert_file`, `client_key_file`) cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::FileError),
}

/// A Redis client for `config`, with the password of `password_file` if there is one,
/// and the TLS files' certificates if it names any.
pub fn client(config: &ClusterConfig) -> Result<redis::Client, Error> {
    // rustls needs a process-wide crypto provider for `rediss://`; a second install is
    // refused harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut info =
        redis::IntoConnectionInfo::into_connection_info(config.url.as_str()).map_err(Error::Url)?;
    if let Some(path) = &config.password_file {
        let password = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
            path: path.display().to_string(),
            source,
        })?;
        let settings = info.redis_settings().clone().set_password(password.trim());
        info = info.set_redis_settings(settings);
    }
    match tls::certificates(config)? {
        Some(certificates) => redis::Client::build_with_tls(info, certificates),
        None => redis::Client::open(info),
    }
    .map_err(Error::Url)
}

/// Most bytes of messages waiting in one queue (to be published, or read and waiting for
/// the gateway); past it, messages are dropped and counted, so that a flood from Redis or
/// an outage cannot grow memory without bound.
const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// The bytes waiting in one queue.
#[derive(Debug, Clone, Default)]
pub struct Budget(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Budget {
    /// Hold `n` more bytes, unless that would pass [`QUEUE_BYTES`].
    pub fn hold(&self, n: usize) -> Option<Held> {
        use std::sync::atomic::Ordering;
        let before = self.0.fetch_add(n, Ordering::AcqRel);
        if before + n > QUEUE_BYTES {
            self.0.fetch_sub(n, Ordering::AcqRel);
            return None;
        }
        Some(Held(self.0.clone(), n))
    }
}

/// Bytes held in a queue, given back when dropped.
#[derive(Debug)]
pub struct Held(std::sync::Arc<std::sync::atomic::AtomicUsize>, usize);

impl Drop for Held {
    fn drop(&mut self) {
        self.0
            .fetch_sub(self.1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A message for one channel.
#[derive(Debug)]
pub struct Outgoing {
    /// The channel.
    pub channel: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Its bytes in the queue.
    _held: Held,
}

/// A connection for commands that is made on first use and again after a failure.
pub fn lazy_connection(client: &redis::Client) -> Result<ConnectionManager, Error> {
    client
        .get_connection_manager_lazy(manager_config())
        .map_err(Error::Url)
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_min_delay(BACKOFF_MIN)
        .set_max_delay(BACKOFF_MAX)
        .set_number_of_retries(2)
}

/// Publishes messages in the order given, without making the caller wait.
#[derive(Debug, Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Outgoing>,
    budget: Budget,
    meters: Meters,
}

impl Publisher {
    /// Start publishing through `client` (the connection is made on first use, and made
    /// again after a failure).
    pub fn start(client: &redis::Client, meters: Meters) -> Result<Publisher, Error> {
        let conn = lazy_connection(client)?;
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publish_loop(conn, rx, meters.clone()));
        Ok(Publisher {
            queue,
            budget: Budget::default(),
            meters,
        })
    }

    /// Queue `payload` for `channel`; dropped (and counted) when the queue is full.
    pub fn send(&self, channel: String, payload: Vec<u8>) {
        let queued = self
            .budget
            .hold(channel.len() + payload.len())
            .map(|held| Outgoing {
                channel,
                payload,
                _held: held,
            });
        if queued.is_none_or(|msg| self.queue.try_send(msg).is_err()) {
            self.meters
                .dropped
                .with_label_values(&["publish_queue"])
                .inc();
        }
    }
}

async fn publish_loop(
    mut conn: ConnectionManager,
    mut rx: mpsc::Receiver<Outgoing>,
    meters: Meters,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut failing = false;
    while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for msg in &batch {
            pipe.publish(&msg.channel, &msg.payload).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                meters.published.inc_by(batch.len() as u64);
                if failing {
                    tracing::info!("cluster: publishing to Redis again");
                    failing = false;
                }
            }
            Err(err) => {
                meters.publish_failures.inc_by(batch.len() as u64);
                if !failing {
                    tracing::warn!(error = %err, "cluster: publishing to Redis failed; messages to other nodes are dropped until it is back");
                    failing = true;
                }
            }
        }
        batch.clear();
    }
}

/// What to subscribe to: exact channels and patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    /// Channels (SUBSCRIBE).
    pub channels: BTreeSet<String>,
    /// Patterns (PSUBSCRIBE).
    pub patterns: BTreeSet<String>,
}

/// A message read from Redis.
#[derive(Debug)]
pub struct Incoming {
    /// The channel it came on.
    pub channel: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its bytes in the queue.
    _held: Held,
}

/// Subscribe to what `wanted` says (following its changes) and hand every message of at
/// most `max` bytes to the returned receiver, reconnecting until the receiver is
/// dropped.
pub fn subscribe(
    client: redis::Client,
    wanted: watch::Receiver<Subscriptions>,
    max: usize,
    meters: Meters,
) -> mpsc::Receiver<Incoming> {
    let (tx, rx) = mpsc::channel(RECEIVE_QUEUE);
    tokio::spawn(subscribe_loop(client, wanted, max, tx, meters));
    rx
}

async fn subscribe_loop(
    client: redis::Client,
    mut wanted: watch::Receiver<Subscriptions>,
    max: usize,
    tx: mpsc::Sender<Incoming>,
    meters: Meters,
) {
    let mut backoff = BACKOFF_MIN;
    let mut attempt = 0u64;
    let budget = Budget::default();
    loop {
        if tx.is_closed() {
            return;
        }
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        attempt += 1;
        let why = match session(&client, &mut wanted, max, &tx, &meters, &budget).await {
            Ok(()) => return,
            Err(why) => why,
        };
        let was_up = meters.up.get() == 1;
        meters.up.set(0);
        if was_up {
            backoff = BACKOFF_MIN;
            meters.reconnects.inc();
            tracing::warn!(error = %why, "cluster: the Redis subscription was lost; reconnecting");
        } else if attempt == 1 || attempt.is_power_of_two() {
            tracing::warn!(error = %why, attempt, "cluster: cannot subscribe on Redis; retrying");
        }
    }
}

/// One connection's life: subscribe to everything wanted, then read until it fails.
/// `Ok` only when the receiver is gone.
async fn session(
    client: &redis::Client,
    wanted: &mut watch::Receiver<Subscriptions>,
    max: usize,
    tx: &mpsc::Sender<Incoming>,
    meters: &Meters,
    budget: &Budget,
) -> Result<(), String> {
    let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = pubsub.split();
    let mut have = Subscriptions::default();
    let mut now = wanted.borrow_and_update().clone();
    sync(&mut sink, &mut have, &now).await?;
    meters.up.set(1);
    tracing::info!(
        channels = have.channels.len(),
        patterns = have.patterns.len(),
        "cluster: subscribed on Redis"
    );
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Err("connection closed".to_owned());
                };
                let payload = msg.get_payload_bytes();
                if payload.len() > max {
                    meters.dropped.with_label_values(&["too_large"]).inc();
                    tracing::warn!(channel = msg.get_channel_name(), bytes = payload.len(), max, "cluster: a message over cluster.max_message dropped");
                    continue;
                }
                meters.received.inc();
                // Traffic shows the connection alive: the next ping waits a full period.
                ping.reset();
                let Some(held) = budget.hold(payload.len()) else {
                    meters.dropped.with_label_values(&["receive_queue"]).inc();
                    continue;
                };
                let incoming = Incoming {
                    channel: msg.get_channel_name().to_owned(),
                    payload: payload.to_vec(),
                    _held: held,
                };
                match tx.try_send(incoming) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        meters.dropped.with_label_values(&["receive_queue"]).inc();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                }
            }
            changed = wanted.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                now = wanted.borrow_and_update().clone();
                sync(&mut sink, &mut have, &now).await?;
            }
            _ = ping.tick() => {
                // A subscribed RESP2 connection answers ["pong", ""]: any answer will do.
                match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => tracing::debug!("cluster: Redis answered a ping"),
                    Ok(Err(e)) => return Err(format!("ping: {e}")),
                    Err(_) => return Err("ping timed out".to_owned()),
                }
            }
        }
    }
}

/// Subscribe to what `want` has and `have` lacks, and unsubscribe from the rest.
async fn sync(
    sink: &mut redis::aio::PubSubSink,
    have: &mut Subscriptions,
    want: &Subscriptions,
) -> Result<(), String> {
    let timed = |what: &'static str| move |_| format!("{what} timed out");
    let new: Vec<&String> = want.channels.difference(&have.channels).collect();
    if !new.is_empty() {
        tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&new))
            .await
            .map_err(timed("SUBSCRIBE"))?
            .map_err(|e| e.to_string())?;
    }
    let new: Vec<&String> = want.patterns.difference(&have.patterns).collect();
    if !new.is_empty() {
        tokio::time::timeout(COMMAND_TIMEOUT, sink.psubscribe(&new))
            .await
            .map_err(timed("PSUBSCRIBE"))?
            .map_err(|e| e.to_string())?;
    }
    for gone in have.channels.difference(&want.channels) {
        tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(gone))
            .await
            .map_err(timed("UNSUBSCRIBE"))?
            .map_err(|e| e.to_string())?;
    }
    for gone in have.patterns.difference(&want.patterns) {
        tokio::time::timeout(COMMAND_TIMEOUT, sink.punsubscribe(gone))
            .await
            .map_err(timed("PUNSUBSCRIBE"))?
            .map_err(|e| e.to_string())?;
    }
    *have = want.clone();
    Ok(())
}

/// How many nodes subscribe to `channel` (a namespace's request channel): the cluster's
/// server count, as the Node adapter counts it.
pub async fn subscribers(conn: &mut ConnectionManager, channel: &str) -> redis::RedisResult<usize> {
    let (_, n): (String, usize) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_holds_at_most_its_bytes_and_gets_them_back() {
        let budget = Budget::default();
        let a = budget.hold(QUEUE_BYTES - 10).unwrap();
        assert!(budget.hold(11).is_none());
        let b = budget.hold(10).unwrap();
        assert!(budget.hold(1).is_none());
        drop(a);
        drop(b);
        assert!(budget.hold(QUEUE_BYTES).is_some());
    }
}
