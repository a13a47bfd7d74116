//! The Redis stream of the streams adapter (`[cluster] adapter = "redis-streams"`):
//! writing entries ([`Writer`]) and reading them ([`read`]), so that what one node
//! broadcasts reaches every other even across a Redis outage.
//!
//! - The writer keeps what it is given in a bounded queue and writes it in order
//!   (`XADD <stream> MAXLEN ~ <max_len> *`, a batch in one MULTI/EXEC, so a batch is
//!   written whole or not at all). While Redis is away, the batch in hand is tried again
//!   with backoff and the queue fills behind it (`iorelay_cluster_held`); once it is full,
//!   more is dropped and counted (`iorelay_cluster_dropped_total{reason="publish_queue"}`).
//!   Nothing is lost to a short outage, and the relay never waits on Redis.
//! - The reader (the gateway's, on a connection of its own, since `XREAD BLOCK` holds
//!   it) remembers the id of the last entry it read and reads on from there after a
//!   reconnect, so that an outage costs a delay, not entries. When the stream came back
//!   missing or with its last entry below the one remembered (Redis restarted without its
//!   data), it reads the new stream from its start. The first start reads from the
//!   stream's end (what was broadcast before this node joined is not its to deliver). The
//!   reader waits for the gateway (the stream keeps what is not read yet) instead of
//!   dropping.
//!
//! Limits: a node behind by more than `max_len` entries misses the oldest (the trim);
//! a batch whose MULTI/EXEC reply is lost after Redis ran it is written twice.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;

use super::format::Bad;
use super::message::{Entry, Message};
use super::meters::Meters;
use super::redis::{BACKOFF_MIN, Budget, COMMAND_TIMEOUT, Error, Held, lazy_connection};

/// Most entries waiting to be written; more are dropped and counted.
const WRITE_QUEUE: usize = 16_384;
/// Most entries written in one MULTI/EXEC.
const WRITE_BATCH: usize = 256;
/// Most entries read and waiting for the gateway (the reader then waits).
const READ_QUEUE: usize = 1024;
/// The longest pause between attempts (the first is the subscription's): short, so that
/// held entries go out soon after Redis is back.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A stream entry's id: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id(pub u64, pub u64);

impl Id {
    /// Before every entry.
    pub const ZERO: Id = Id(0, 0);

    /// `"<ms>-<seq>"`.
    pub fn parse(text: &str) -> Option<Id> {
        let (ms, seq) = text.split_once('-')?;
        Some(Id(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Where a reader starts: on from `last` (the last entry read, if any), unless the
/// stream's newest entry `top` is below it or the stream is gone (Redis lost it: read the
/// new stream whole); the first time, at `top`.
pub fn start_at(last: Option<Id>, top: Option<Id>) -> Id {
    match (last, top) {
        (None, top) => top.unwrap_or(Id::ZERO),
        (Some(last), Some(top)) if top >= last => last,
        (Some(_), _) => Id::ZERO,
    }
}

/// Writes entries to the stream in the order given, without making the caller wait.
#[derive(Debug, Clone)]
pub struct Writer {
    queue: mpsc::Sender<(Entry, Held)>,
    budget: Budget,
    meters: Meters,
}

impl Writer {
    /// Start writing to `stream` through `client`, trimmed to about `max_len` entries.
    pub fn start(
        client: &redis::Client,
        stream: String,
        max_len: u64,
        meters: Meters,
    ) -> Result<Writer, Error> {
        let conn = lazy_connection(client)?;
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        let writing = Writing {
            stream,
            max_len,
            meters: meters.clone(),
            queue: queue.downgrade(),
        };
        tokio::spawn(writing.run(conn, rx));
        Ok(Writer {
            queue,
            budget: Budget::default(),
            meters,
        })
    }

    /// Queue `entry`; dropped (and counted) when the queue is full (in entries or bytes).
    pub fn send(&self, entry: Entry) {
        let bytes = entry.0.iter().map(|(k, v)| k.len() + v.len()).sum();
        let queued = self.budget.hold(bytes).map(|held| (entry, held));
        if queued.is_none_or(|item| self.queue.try_send(item).is_err()) {
            self.meters
                .dropped
                .with_label_values(&["publish_queue"])
                .inc();
        }
    }
}

struct Writing {
    stream: String,
    max_len: u64,
    meters: Meters,
    /// The queue's sender, to tell how much waits behind a failing batch.
    queue: mpsc::WeakSender<(Entry, Held)>,
}

impl Writing {
    async fn run(self, mut conn: ConnectionManager, mut rx: mpsc::Receiver<(Entry, Held)>) {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (entry, _) in &batch {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.max_len)
                    .arg("*");
                for (field, value) in &entry.0 {
                    pipe.arg(*field).arg(value);
                }
                pipe.ignore();
            }
            let mut backoff = BACKOFF_MIN;
            let mut failed = false;
            loop {
                match pipe.query_async::<()>(&mut conn).await {
                    Ok(()) => break,
                    Err(err) => {
                        if !failed {
                            tracing::warn!(error = %err, "cluster: writing to the Redis stream failed; holding what is published until it is back");
                            self.meters.publish_failures.inc_by(batch.len() as u64);
                            failed = true;
                        }
                        let queued = self
                            .queue
                            .upgrade()
                            .map_or(0, |q| q.max_capacity() - q.capacity());
                        self.meters.held.set((batch.len() + queued) as i64);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if failed {
                tracing::info!(
                    held = self.meters.held.get(),
                    "cluster: writing to the Redis stream again"
                );
                self.meters.held.set(0);
            }
            self.meters.published.inc_by(batch.len() as u64);
            batch.clear();
        }
    }
}

/// What [`read`] needs.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The stream.
    pub stream: String,
    /// Most entries per read.
    pub count: u64,
    /// How long one read blocks.
    pub block: Duration,
    /// The largest entry read (bytes of its fields); larger ones are dropped and counted.
    pub max: usize,
}

/// Read the stream through `client` until the receiver is dropped, reconnecting with
/// backoff: the messages of its entries in order, with their ids (or why one was not
/// understood).
pub fn read(
    client: redis::Client,
    reading: Reading,
    meters: Meters,
) -> mpsc::Receiver<(Id, Result<Message, Bad>)> {
    let (tx, rx) = mpsc::channel(READ_QUEUE);
    tokio::spawn(read_loop(client, reading, tx, meters));
    rx
}

async fn read_loop(
    client: redis::Client,
    reading: Reading,
    tx: mpsc::Sender<(Id, Result<Message, Bad>)>,
    meters: Meters,
) {
    let mut last = None;
    let mut backoff = BACKOFF_MIN;
    let mut attempt = 0u64;
    loop {
        if tx.is_closed() {
            return;
        }
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        attempt += 1;
        let mut reads = 0;
        match session(&client, &reading, &mut last, &mut reads, &tx, &meters).await {
            Ok(()) => return,
            Err(why) if reads > 0 => {
                backoff = BACKOFF_MIN;
                attempt = 1;
                tracing::warn!(error = %why, "cluster: reading the Redis stream failed; reconnecting");
            }
            Err(why) if attempt == 1 || attempt.is_power_of_two() => {
                tracing::warn!(error = %why, attempt, "cluster: cannot read the Redis stream; retrying");
            }
            Err(_) => {}
        }
    }
}

/// One connection's life. `Ok` only when the receiver is gone.
async fn session(
    client: &redis::Client,
    reading: &Reading,
    last: &mut Option<Id>,
    reads: &mut u64,
    tx: &mpsc::Sender<(Id, Result<Message, Bad>)>,
    meters: &Meters,
) -> Result<(), String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(reading.block + COMMAND_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let newest: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg(&reading.stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let top = newest.first().and_then(|(id, _)| Id::parse(id));
    let mut from = start_at(*last, top);
    if last.is_some_and(|l| l > Id::ZERO && from == Id::ZERO) {
        tracing::warn!(last = %last.unwrap_or(Id::ZERO), "cluster: the Redis stream lost the entries already read (Redis restarted without its data?); reading the new stream from its start");
    }
    *last = Some(from);
    tracing::info!(stream = %reading.stream, from = %from, "cluster: reading the Redis stream");
    let block = u64::try_from(reading.block.as_millis()).unwrap_or(u64::MAX);
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(reading.count)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&reading.stream)
            .arg(from.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        *reads += 1;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            let Some(id) = Id::parse(&entry.id) else {
                return Err(format!("an entry id that is not <ms>-<seq>: {}", entry.id));
            };
            let bytes = |k: &str| match entry.map.get(k) {
                Some(redis::Value::BulkString(b)) => Some(b.as_slice()),
                Some(redis::Value::SimpleString(s)) => Some(s.as_bytes()),
                _ => None,
            };
            let size: usize = entry
                .map
                .keys()
                .map(|k| k.len() + bytes(k).map_or(0, <[u8]>::len))
                .sum();
            from = id;
            *last = Some(id);
            if size > reading.max {
                meters.dropped.with_label_values(&["too_large"]).inc();
                tracing::warn!(id = %id, bytes = size, max = reading.max, "cluster: a stream entry over cluster.max_message dropped");
                continue;
            }
            meters.received.inc();
            if tx.send((id, Message::from_entry(bytes))).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_order() {
        assert_eq!(Id::parse("1700000000000-3"), Some(Id(1_700_000_000_000, 3)));
        assert_eq!(Id(5, 0).to_string(), "5-0");
        for bad in [
            "",
            "5",
            "5-",
            "-1",
            "a-b",
            "1-2-3",
            "99999999999999999999-0",
        ] {
            assert_eq!(Id::parse(bad), None, "{bad}");
        }
        assert!(Id(5, 1) > Id(4, 9));
        assert!(Id(5, 1) < Id(5, 2));
    }

    #[test]
    fn a_reader_starts_at_the_end_then_goes_on_and_rereads_a_lost_stream() {
        // First start: the end of the stream, or before everything if there is none.
        assert_eq!(start_at(None, Some(Id(9, 0))), Id(9, 0));
        assert_eq!(start_at(None, None), Id::ZERO);
        // After a reconnect: on from the last entry read.
        assert_eq!(start_at(Some(Id(5, 0)), Some(Id(9, 0))), Id(5, 0));
        assert_eq!(start_at(Some(Id(5, 0)), Some(Id(5, 0))), Id(5, 0));
        // Redis came back without them: the new stream from its start.
        assert_eq!(start_at(Some(Id(5, 0)), Some(Id(4, 0))), Id::ZERO);
        assert_eq!(start_at(Some(Id(5, 0)), None), Id::ZERO);
    }
}
