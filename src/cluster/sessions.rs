//! The streams adapter's keeping of connection-state-recovery sessions in Redis
//! ([`Remote`] for the relay): where the Node adapter keeps them, `sio:session:<pid>`
//! holding a msgpack map in base64 (`sid`, `pid`, `rooms`, `data`, and iorelay's own
//! `iorelay` map: namespace, user, connect time, node), with an expiry; and the stream
//! read back for a session's missed broadcasts.
//!
//! Writes wait in a bounded queue and go out in pipelines; one that fails is dropped
//! and counted (`iorelay_cluster_dropped_total{reason="session"}`): live sessions are
//! written again before they expire. Reads are bounded: a session of at most
//! `max_message` bytes, at most [`MAX_SCAN`] entries of the stream.
//!
//! A session that is not iorelay's (a Node server's client) is left where it is: its
//! offsets are not positions iorelay can read.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::message::{Inbound, Message};
use super::meters::Meters;
use super::redis::{Error, lazy_connection};
use crate::engine::BoxFuture;
use crate::relay::history::EventId;
use crate::relay::recovery::remote::{
    EntryId, Logged, MAX_SCAN_BYTES, Remote, Session, Unavailable, Want,
};

/// Where the Node adapter keeps a session (before its pid).
pub const SESSION_PREFIX: &str = "sio:session:";

/// The stream entry field with an iorelay node's stamp of the event (`<origin>:<seq>`).
pub const STAMP_FIELD: &str = "iorelay";

/// Most writes waiting; more are dropped and counted.
const QUEUE: usize = 8192;
/// Most writes in one pipeline.
const BATCH: usize = 256;
/// Most stream entries read for one session, and per read.
const MAX_SCAN: usize = 100_000;
const PAGE: usize = 1000;

/// The store of one process.
#[derive(Debug)]
pub struct Sessions {
    uid: String,
    stream: String,
    max: usize,
    conn: ConnectionManager,
    queue: mpsc::Sender<Write>,
    meters: Meters,
}

#[derive(Debug)]
enum Write {
    Keep { key: String, value: String, ms: u64 },
    Forget { key: String },
}

/// A session as it is kept.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    sid: String,
    pid: String,
    rooms: Vec<String>,
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iorelay: Option<Ours>,
}

/// What iorelay keeps beside the Node adapter's fields.
#[derive(Debug, Serialize, Deserialize)]
struct Ours {
    nsp: String,
    user: Option<String>,
    since: u64,
    node: String,
}

impl Sessions {
    /// Keep sessions as node `uid` in the Redis of `config`.
    pub fn start(
        config: &crate::config::ClusterConfig,
        uid: String,
        meters: Meters,
    ) -> Result<Sessions, Error> {
        let client = super::redis::client(config)?;
        let conn = lazy_connection(&client)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(conn.clone(), rx, meters.clone()));
        Ok(Sessions {
            uid,
            stream: config.stream_name.clone(),
            max: usize::try_from(config.max_message.as_u64()).unwrap_or(usize::MAX),
            conn,
            queue,
            meters,
        })
    }

    fn queue(&self, write: Write) -> bool {
        let queued = self.queue.try_send(write).is_ok();
        if !queued {
            self.meters.dropped.with_label_values(&["session"]).inc();
        }
        queued
    }

    async fn get(&self, key: &str, delete: bool) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut conn = self.conn.clone();
        let cmd = if delete { "GETDEL" } else { "GET" };
        redis::cmd(cmd)
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Unavailable::Down(e.to_string()))
    }

    /// The session in `raw`, if it is iorelay's and in bounds.
    fn decode(&self, raw: &[u8]) -> Option<Session> {
        if raw.len() > self.max {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        let kept: Kept = rmp_serde::from_slice(&bytes).ok()?;
        let ours = kept.iorelay?;
        Some(Session {
            nsp: ours.nsp,
            sid: kept.sid,
            pid: kept.pid,
            rooms: kept.rooms.into_iter().collect::<BTreeSet<_>>(),
            user: ours.user,
            since_ms: ours.since,
            node: ours.node,
        })
    }

    /// Whether entries after `from` were trimmed from the stream.
    async fn trimmed_after(&self, from: EntryId) -> Result<bool, Unavailable> {
        let mut conn = self.conn.clone();
        let info: redis::RedisResult<std::collections::HashMap<String, redis::Value>> =
            redis::cmd("XINFO")
                .arg("STREAM")
                .arg(&self.stream)
                .query_async(&mut conn)
                .await;
        let info = match info {
            Ok(info) => info,
            // No stream: nothing was written, so nothing was trimmed.
            Err(e)
                if matches!(
                    e.kind(),
                    redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(Unavailable::Down(e.to_string())),
        };
        let deleted = match info.get("max-deleted-entry-id") {
            Some(redis::Value::BulkString(id)) => std::str::from_utf8(id)
                .ok()
                .and_then(super::streams::Id::parse),
            Some(redis::Value::SimpleString(id)) => super::streams::Id::parse(id),
            _ => None,
        };
        Ok(deleted.is_some_and(|d| (d.0, d.1) >= from))
    }
}

impl Remote for Sessions {
    fn node(&self) -> &str {
        &self.uid
    }

    fn keep(&self, session: &Session, ttl: Duration) -> bool {
        let kept = Kept {
            sid: session.sid.clone(),
            pid: session.pid.clone(),
            rooms: session.rooms.iter().cloned().collect(),
            data: serde_json::Map::new(),
            iorelay: Some(Ours {
                nsp: session.nsp.clone(),
                user: session.user.clone(),
                since: session.since_ms,
                node: session.node.clone(),
            }),
        };
        let Ok(packed) = rmp_serde::to_vec_named(&kept) else {
            return false;
        };
        self.queue(Write::Keep {
            key: format!("{SESSION_PREFIX}{}", session.pid),
            value: base64::engine::general_purpose::STANDARD.encode(packed),
            ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
        })
    }

    fn forget(&self, pid: &str) {
        self.queue(Write::Forget {
            key: format!("{SESSION_PREFIX}{pid}"),
        });
    }

    fn take<'a>(
        &'a self,
        pid: &'a str,
        want: Want<'a>,
    ) -> BoxFuture<'a, Result<Option<Session>, Unavailable>> {
        Box::pin(async move {
            let key = format!("{SESSION_PREFIX}{pid}");
            // Looked at before it is taken: a Node server's session stays for it, and
            // another user's for its own client.
            let wanted = |raw: &[u8]| self.decode(raw).filter(|s| want.takes(s, pid, &self.uid));
            let Some(raw) = self.get(&key, false).await? else {
                return Ok(None);
            };
            if wanted(&raw).is_none() {
                return Ok(None);
            }
            let taken = self.get(&key, true).await?;
            Ok(taken.and_then(|raw| wanted(&raw)))
        })
    }

    fn since<'a>(
        &'a self,
        nsp: &'a str,
        from: EntryId,
    ) -> BoxFuture<'a, Result<(Vec<Logged>, EntryId), Unavailable>> {
        Box::pin(async move {
            if self.trimmed_after(from).await? {
                return Err(Unavailable::Gap);
            }
            let mut out = Vec::new();
            let mut next = from;
            let mut last = from;
            let mut scanned = 0;
            let mut bytes = 0;
            loop {
                let mut conn = self.conn.clone();
                let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg(format!("{}-{}", next.0, next.1))
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Unavailable::Down(e.to_string()))?;
                let done = page.ids.len() < PAGE;
                for entry in page.ids {
                    let id = super::streams::Id::parse(&entry.id)
                        .ok_or_else(|| Unavailable::Down(format!("an entry id {:?}", entry.id)))?;
                    next = (id.0, id.1.saturating_add(1));
                    last = (id.0, id.1);
                    scanned += 1;
                    if let Some(logged) = self.logged((id.0, id.1), nsp, &entry.map) {
                        bytes += logged.args.len()
                            + logged.attachments.iter().map(|a| a.len()).sum::<usize>();
                        out.push(logged);
                    }
                }
                if bytes > MAX_SCAN_BYTES {
                    return Err(Unavailable::Gap);
                }
                if done {
                    return Ok((out, last));
                }
                if scanned >= MAX_SCAN {
                    return Err(Unavailable::Gap);
                }
            }
        })
    }
}

impl Sessions {
    /// Entry `id` as a broadcast of `nsp`, if it is one (anything else, or anything not
    /// understood, is skipped: the gateway has counted it already).
    fn logged(
        &self,
        id: EntryId,
        nsp: &str,
        fields: &std::collections::HashMap<String, redis::Value>,
    ) -> Option<Logged> {
        let field = |name: &str| match fields.get(name) {
            Some(redis::Value::BulkString(b)) => Some(b.as_slice()),
            Some(redis::Value::SimpleString(s)) => Some(s.as_bytes()),
            _ => None,
        };
        let size: usize = fields
            .keys()
            .map(|k| k.len() + field(k).map_or(0, <[u8]>::len))
            .sum();
        if size > self.max {
            return None;
        }
        if field("nsp") != Some(nsp.as_bytes()) || field("type") != Some(b"3") {
            return None;
        }
        let message = Message::from_entry(field).ok()?;
        let Ok(Inbound::Broadcast(b)) = message.inbound() else {
            return None;
        };
        if b.local || crate::api::check_event_name(&b.event.name).is_err() {
            return None;
        }
        let stamp = field(STAMP_FIELD)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(parse_stamp);
        Some(Logged {
            id,
            node: b.uid,
            stamp,
            name: b.event.name,
            args: b.event.args,
            attachments: b.event.attachments,
            rooms: b.to.rooms,
            except: b.to.except,
        })
    }
}

/// A stamp as [`STAMP_FIELD`] holds it.
pub fn stamp_text(id: EventId) -> String {
    format!("{}:{}", id.origin, id.seq)
}

fn parse_stamp(text: &str) -> Option<EventId> {
    let (origin, seq) = text.split_once(':')?;
    Some(EventId {
        origin: origin.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

async fn write_loop(mut conn: ConnectionManager, mut rx: mpsc::Receiver<Write>, meters: Meters) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut failing = false;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for write in &batch {
            match write {
                Write::Keep { key, value, ms } => {
                    pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(*ms);
                }
                Write::Forget { key } => {
                    pipe.cmd("DEL").arg(key);
                }
            }
            pipe.ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => failing = false,
            Err(err) => {
                meters
                    .dropped
                    .with_label_values(&["session"])
                    .inc_by(batch.len() as u64);
                if !failing {
                    tracing::warn!(error = %err, "cluster: keeping sessions in Redis failed; they are written again once it is back");
                }
                failing = true;
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_junk_is_none() {
        let id = EventId {
            origin: 3,
            seq: 1_733_000_000_000_001,
        };
        assert_eq!(parse_stamp(&stamp_text(id)), Some(id));
        for bad in ["", "3", "3:", ":1", "a:1", "3:x", "3:1:2"] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_node_session_is_not_ours() {
        let node = Kept {
            sid: "s".into(),
            pid: "p".into(),
            rooms: vec!["s".into()],
            data: serde_json::Map::new(),
            iorelay: None,
        };
        let bytes = rmp_serde::to_vec_named(&node).unwrap();
        let decoded: Kept = rmp_serde::from_slice(&bytes).unwrap();
        assert!(decoded.iorelay.is_none());
    }
}
