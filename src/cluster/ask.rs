//! This node's own requests to the others: a request published on a namespace's request
//! channel, and the answers collected from the response channels until every other node
//! answered (their number is the channel's subscribers, less this node, as the Node
//! adapter counts) or `requests_timeout` passed, whichever is first. A node that does
//! not answer in time costs the wait, not the answer: what came is used.
//!
//! The streams dialect has no answered join, leave or disconnect of one socket: the
//! socket is fetched first, and the move or the disconnect written to the stream only
//! when some node holds it (that node's answer to the fetch is the answer).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde_json::Value;
use tokio::sync::oneshot;

use super::dialect::Dialect;
use super::format::{self, Channels};
use super::message::{self, Type};
use super::redis::{Publisher, subscribers};

/// Requests waiting for answers, by request id.
#[derive(Debug, Default)]
pub struct Pending {
    waiting: Mutex<HashMap<String, Waiting>>,
}

#[derive(Debug)]
struct Waiting {
    expected: usize,
    answers: Vec<Value>,
    done: Option<oneshot::Sender<Vec<Value>>>,
}

impl Pending {
    /// An answer arrived (on a response channel): keep it if a request waits for it.
    pub fn answer(&self, payload: &[u8]) {
        // Every node's answers to every node pass here: read none while none is awaited.
        if self.waiting.lock().is_empty() {
            return;
        }
        let Ok(value) = format::decode(payload) else {
            return;
        };
        if let Ok(json) = serde_json::to_value(&value) {
            self.answer_json(json);
        }
    }

    /// An answer, as JSON with its `requestId`: keep it if a request waits for it.
    pub fn answer_json(&self, json: Value) {
        let Some(id) = json.get("requestId").and_then(Value::as_str) else {
            return;
        };
        let id = id.to_owned();
        let mut waiting = self.waiting.lock();
        let Some(w) = waiting.get_mut(&id) else {
            return;
        };
        w.answers.push(json);
        if w.answers.len() >= w.expected {
            let w = waiting.remove(&id).expect("present above");
            if let Some(done) = w.done {
                let _ = done.send(w.answers);
            }
        }
    }

    /// Stop waiting for `id`: the answers so far.
    fn give_up(&self, id: &str) -> Vec<Value> {
        self.waiting
            .lock()
            .remove(id)
            .map(|w| w.answers)
            .unwrap_or_default()
    }
}

/// What asking needs.
#[derive(Debug, Clone)]
pub struct Asker<'a> {
    /// This node's id.
    pub uid: &'a str,
    /// Where requests go.
    pub publisher: &'a Publisher,
    /// The cluster's format.
    pub dialect: &'a Dialect,
    /// A connection for PUBSUB NUMSUB.
    pub conn: &'a ConnectionManager,
    /// The waiting requests.
    pub pending: &'a Pending,
    /// How long to wait.
    pub timeout: Duration,
}

/// The request kinds this node asks.
#[derive(Debug, Clone)]
pub enum Ask<'a> {
    /// The sockets of these rooms (all with none), with their rooms and data.
    Fetch(&'a [String]),
    /// Put socket `sid` in `room` (`leave`: take it out), wherever it is.
    Move {
        /// The socket.
        sid: &'a str,
        /// The room.
        room: &'a str,
        /// Leave rather than join.
        leave: bool,
    },
    /// Disconnect socket `sid`, wherever it is.
    Kick(&'a str),
}

impl Asker<'_> {
    /// Ask the other nodes of namespace `nsp` (whose channels are `channels`); returns
    /// their answers.
    pub async fn ask(&self, nsp: &str, channels: &Channels, what: Ask<'_>) -> Vec<Value> {
        if self.dialect.is_streams() {
            return self.ask_streams(nsp, channels, what).await;
        }
        // One answer is enough when one node holds the socket.
        let most = match what {
            Ask::Fetch(_) => usize::MAX,
            Ask::Move { .. } | Ask::Kick(_) => 1,
        };
        let Some(expected) = self.others(channels).await.map(|n| n.min(most)) else {
            return Vec::new();
        };
        let id = super::NodeId::default().0;
        let request = match what {
            Ask::Fetch(rooms) => serde_json::json!({
                "uid": self.uid, "requestId": id, "type": format::Kind::RemoteFetch.number(),
                "opts": { "rooms": rooms, "except": [] },
            }),
            Ask::Move { sid, room, leave } => {
                let kind = if leave {
                    format::Kind::RemoteLeave
                } else {
                    format::Kind::RemoteJoin
                };
                serde_json::json!({
                    "uid": self.uid, "requestId": id, "type": kind.number(),
                    "sid": sid, "room": room,
                })
            }
            Ask::Kick(sid) => serde_json::json!({
                "uid": self.uid, "requestId": id, "type": format::Kind::RemoteDisconnect.number(),
                "sid": sid, "close": false,
            }),
        };
        let payload = request.to_string().into_bytes();
        let quiet = !matches!(what, Ask::Fetch(_));
        self.wait(id, expected, channels.request.clone(), payload, quiet)
            .await
    }

    /// The streams dialect's [`Asker::ask`].
    async fn ask_streams(&self, nsp: &str, channels: &Channels, what: Ask<'_>) -> Vec<Value> {
        let Some(expected) = self.others(channels).await else {
            return Vec::new();
        };
        let (sid, rooms) = match what {
            Ask::Fetch(rooms) => (None, rooms.to_vec()),
            Ask::Move { sid, .. } | Ask::Kick(sid) => (Some(sid), vec![sid.to_owned()]),
        };
        let id = super::NodeId::default().0;
        let data = serde_json::json!({ "opts": message::opts(&rooms), "requestId": id });
        let payload = message::ephemeral(self.uid, nsp, Type::FetchSockets, &data);
        let answers = self
            .wait(id, expected, channels.broadcast.clone(), payload, false)
            .await;
        let Some(sid) = sid else {
            return answers;
        };
        let holders: Vec<Value> = answers
            .into_iter()
            .filter(|a| remotes(std::slice::from_ref(a)).iter().any(|s| s.id == sid))
            .collect();
        if holders.is_empty() {
            return holders;
        }
        match what {
            Ask::Move { room, leave, .. } => {
                self.dialect
                    .move_sockets(self.uid, nsp, &[sid], room, leave);
            }
            Ask::Kick(_) => {
                self.dialect
                    .disconnect(self.publisher, self.uid, nsp, channels, &[sid.to_owned()]);
            }
            Ask::Fetch(_) => {}
        }
        holders
    }

    /// How many other nodes there are (`None`: none, or they cannot be counted).
    async fn others(&self, channels: &Channels) -> Option<usize> {
        let mut conn = self.conn.clone();
        let counted = self.dialect.counted(channels);
        match tokio::time::timeout(self.timeout, subscribers(&mut conn, counted)).await {
            Ok(Ok(n)) => Some(n.saturating_sub(1)).filter(|n| *n > 0),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cluster: cannot count the other nodes");
                None
            }
            Err(_) => None,
        }
    }

    /// Publish request `id` on `channel` and wait for `expected` answers or the
    /// timeout; `quiet`: a shortfall is not worth a log line.
    async fn wait(
        &self,
        id: String,
        expected: usize,
        channel: String,
        payload: Vec<u8>,
        quiet: bool,
    ) -> Vec<Value> {
        let (done, answers) = oneshot::channel();
        // Forgotten however this ends, the caller's future dropped included.
        let _forget = Forget {
            pending: self.pending,
            id: &id,
        };
        self.pending.waiting.lock().insert(
            id.clone(),
            Waiting {
                expected,
                answers: Vec::new(),
                done: Some(done),
            },
        );
        self.publisher.send(channel, payload);
        match tokio::time::timeout(self.timeout, answers).await {
            Ok(Ok(answers)) => answers,
            _ => {
                let got = self.pending.give_up(&id);
                // A join, leave or kick of a socket no node holds is answered by none.
                if !quiet {
                    tracing::warn!(
                        answered = got.len(),
                        expected,
                        "cluster: not every node answered in time"
                    );
                }
                got
            }
        }
    }
}

/// Removes a request from [`Pending`] when dropped.
struct Forget<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.waiting.lock().remove(self.id);
    }
}

/// A socket another node described in its answer to a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its id.
    pub id: String,
    /// Its rooms, without the room of its own id.
    pub rooms: Vec<String>,
    /// `data.user`, when a string.
    pub user: Option<String>,
    /// `handshake.address`.
    pub address: String,
    /// `handshake.issued`, ms since the Unix epoch.
    pub issued: u64,
    /// `handshake.transport` (iorelay's answers carry it; a Node server's do not).
    pub transport: Option<String>,
}

/// The sockets of fetch answers, each once.
pub fn remotes(answers: &[Value]) -> Vec<Remote> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for answer in answers {
        for s in answer["sockets"].as_array().into_iter().flatten() {
            let Some(id) = s["id"].as_str() else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            let rooms = s["rooms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|r| *r != id)
                .map(str::to_owned)
                .collect();
            out.push(Remote {
                id: id.to_owned(),
                rooms,
                user: s["data"]["user"].as_str().map(str::to_owned),
                address: s["handshake"]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                issued: s["handshake"]["issued"].as_u64().unwrap_or(0),
                transport: s["handshake"]["transport"].as_str().map(str::to_owned),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_complete_a_request_once_all_came() {
        let pending = Pending::default();
        let (done, mut rx) = oneshot::channel();
        pending.waiting.lock().insert(
            "q1".to_owned(),
            Waiting {
                expected: 2,
                answers: Vec::new(),
                done: Some(done),
            },
        );
        pending.answer(br#"{"requestId":"q1","sockets":[]}"#);
        assert!(rx.try_recv().is_err());
        pending.answer(br#"{"requestId":"other"}"#);
        pending.answer(b"\x93garbage");
        pending.answer(br#"{"requestId":"q1","sockets":[{"id":"s1","rooms":["s1","r"],"data":{"user":"ann"},"handshake":{"address":"::1","issued":5}}]}"#);
        let answers = rx.try_recv().unwrap();
        assert_eq!(
            remotes(&answers),
            [Remote {
                id: "s1".into(),
                rooms: vec!["r".into()],
                user: Some("ann".into()),
                address: "::1".into(),
                issued: 5,
                transport: None,
            }]
        );
        assert!(pending.waiting.lock().is_empty());
    }
}
