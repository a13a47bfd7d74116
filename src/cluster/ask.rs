//! This node's own requests to the others: a request published on a namespace's request
//! channel, and the answers collected from the response channels until every other node
//! answered (their number is the channel's subscribers, less this node, as the Node
//! adapter counts) or `requests_timeout` passed, whichever is first. A node that does
//! not answer in time costs the wait, not the answer: what came is used.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde_json::Value;
use tokio::sync::oneshot;

use super::format::{self, Channels};
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
        let Ok(json) = serde_json::to_value(&value) else {
            return;
        };
        let Some(id) = json.get("requestId").and_then(Value::as_str) else {
            return;
        };
        let mut waiting = self.waiting.lock();
        let Some(w) = waiting.get_mut(id) else {
            return;
        };
        w.answers.push(json.clone());
        if w.answers.len() >= w.expected {
            let w = waiting.remove(id).expect("present above");
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
    /// Ask the other nodes of namespace `channels`; returns their answers.
    pub async fn ask(&self, channels: &Channels, what: Ask<'_>) -> Vec<Value> {
        let mut conn = self.conn.clone();
        let others =
            match tokio::time::timeout(self.timeout, subscribers(&mut conn, &channels.request))
                .await
            {
                Ok(Ok(n)) => n.saturating_sub(1),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cluster: cannot count the other nodes");
                    return Vec::new();
                }
                Err(_) => return Vec::new(),
            };
        // One answer is enough when one node holds the socket.
        let expected = match what {
            Ask::Fetch(_) => others,
            Ask::Move { .. } | Ask::Kick(_) => others.min(1),
        };
        if expected == 0 {
            return Vec::new();
        }
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
        self.publisher
            .send(channels.request.clone(), request.to_string().into_bytes());
        match tokio::time::timeout(self.timeout, answers).await {
            Ok(Ok(answers)) => answers,
            _ => {
                let got = self.pending.give_up(&id);
                // A join, leave or kick of a socket no node holds is answered by none.
                if matches!(what, Ask::Fetch(_)) {
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
