//! The server API's vocabulary, shared by the three places that handle a backend's
//! request: the admin listener parses HTTP into a [`Call`] (`http::api`), every process
//! that serves clients answers it for its own sockets with a [`Part`]
//! (`relay::backend`), and the parts of all workers become one [`Reply`] ([`merge`]).
//! In a single process there is one part; a master asks every worker over its control
//! channel, which is why these types are serializable.
//!
//! - [`tokens`]: the bearer tokens from `[api]`, compared in constant time.
//! - [`OPENAPI`]: the committed OpenAPI 3.1 document (`src/api/openapi.json`), the
//!   contract that the routes and this vocabulary follow.
//!
//! This module imports nothing else from the crate but the reserved event names of the
//! Socket.IO layer.

pub mod tokens;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::socketio::packet::RESERVED_EVENTS;
pub use tokens::Tokens;

/// The OpenAPI document, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A binary argument from its base64 (standard alphabet, padded; bits after the last
/// byte are not checked, as most encoders and decoders do).
pub fn decode_binary(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    base64::Engine::decode(&LENIENT, text).ok()
}

/// `POST /api/v1/emit`: an event to the sockets of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emit {
    /// The namespace, `/` when not given.
    #[serde(default = "root")]
    pub namespace: String,
    /// The event name.
    pub event: String,
    /// Its JSON arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Members of any of these rooms; with neither `rooms` nor `sockets`, every socket of
    /// the namespace.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// These sockets (by id), besides the members of `rooms`.
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Leave out the members of these rooms and the sockets with these ids.
    #[serde(default)]
    pub except: Vec<String>,
    /// Binary arguments (base64), sent after `args` as attachments.
    #[serde(default)]
    pub binary: Vec<String>,
}

/// The longest room name or socket id a backend may name, in characters (the OpenAPI
/// document's `maxLength`).
pub const MAX_ROOM: usize = 256;

/// A room name a backend (or another node) may use: 1 to [`MAX_ROOM`] characters, no
/// control characters.
pub fn check_room_name(room: &str) -> Result<(), String> {
    if room.is_empty() || room.chars().count() > MAX_ROOM {
        return Err(format!("a room name has 1 to {MAX_ROOM} characters"));
    }
    if room.chars().any(char::is_control) {
        return Err("room names may not hold control characters".to_owned());
    }
    Ok(())
}

/// An event name a backend (or another node) may send: not empty, and none of those
/// socket.io clients reserve.
pub fn check_event_name(event: &str) -> Result<(), String> {
    if event.is_empty() {
        return Err("event must not be empty".to_owned());
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(format!("{event:?} is reserved by socket.io clients"));
    }
    Ok(())
}

fn root() -> String {
    "/".to_owned()
}

/// An event that another node of the cluster (or a Redis emitter) broadcast: the daemon
/// delivers it to its own sockets. Never built from an HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayed {
    /// The namespace.
    pub namespace: String,
    /// The event name.
    pub event: String,
    /// Its arguments, a JSON array in which binaries are numbered placeholders.
    pub args: String,
    /// The binaries the placeholders number (base64).
    pub binary: Vec<String>,
    /// Members of any of these rooms, or the sockets with these ids; none: every socket.
    pub rooms: Vec<String>,
    /// Not the members of these rooms, nor the sockets with these ids.
    pub except: Vec<String>,
    /// Its stream entry's id `(ms, seq)` (the streams adapter): its stamp on every
    /// process of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<(u64, u64)>,
    /// A broadcast with acks: the asking node's request id, which each client's answer
    /// goes back with (see [`crate::relay::asks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
}

/// What a backend asks of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "call")]
pub enum Call {
    /// Deliver an event.
    Emit(Emit),
    /// Deliver an event from another node.
    Relay(Relayed),
    /// The rooms with their member counts, of one namespace or all.
    Rooms {
        /// Only this namespace.
        namespace: Option<String>,
    },
    /// The members of a room.
    Members {
        /// The room's namespace.
        namespace: String,
        /// The room.
        room: String,
    },
    /// The connected sockets, of one namespace or all, optionally only one room's.
    Sockets {
        /// Only this namespace.
        namespace: Option<String>,
        /// Only the members of this room.
        room: Option<String>,
    },
    /// Put a socket in a room.
    Join {
        /// The socket id.
        socket: String,
        /// Its namespace.
        namespace: String,
        /// The room.
        room: String,
    },
    /// Take a socket out of a room.
    Leave {
        /// The socket id.
        socket: String,
        /// Its namespace.
        namespace: String,
        /// The room.
        room: String,
    },
    /// Disconnect one socket from its namespace.
    Kick {
        /// The socket id.
        socket: String,
        /// Its namespace.
        namespace: String,
    },
    /// Disconnect every socket of these rooms (of the whole namespace when empty).
    Disconnect {
        /// The namespace.
        namespace: String,
        /// The rooms.
        rooms: Vec<String>,
    },
    /// A room's recent events (its namespace's `history`).
    History {
        /// The room's namespace.
        namespace: String,
        /// The room.
        room: String,
        /// Only the events this position (or event offset) has not seen.
        since: Option<String>,
        /// At most the latest this many.
        limit: Option<usize>,
    },
}

/// Who answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any one process: every worker sees the host's rooms and members.
    AnyOne,
    /// Every process, each for its own sockets.
    Every,
}

impl Call {
    /// Whether one process can answer for the host.
    pub fn scope(&self) -> Scope {
        match self {
            Call::Rooms { .. } | Call::Members { .. } => Scope::AnyOne,
            _ => Scope::Every,
        }
    }
}

/// A room with its member count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room.
    pub room: String,
    /// Its members, host-wide.
    pub count: usize,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The socket id.
    pub id: String,
    /// Its display name.
    pub user: Option<String>,
}

/// A connected socket, as `GET /api/v1/sockets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// The socket id.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its display name.
    pub user: Option<String>,
    /// The rooms it is in.
    pub rooms: Vec<String>,
    /// `polling` or `websocket`.
    pub transport: String,
    /// The client's address.
    pub address: String,
    /// When it connected, RFC 3339.
    pub connected_at: String,
}

/// Why a process could not act on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The config declares no such namespace.
    #[error("no namespace {0:?}")]
    NoNamespace(String),
    /// The request is well-formed JSON but cannot be acted on.
    #[error("{0}")]
    Invalid(String),
    /// The event is larger than the namespace's `max_event_size`.
    #[error("the event is {size} bytes, over the namespace's max_event_size of {limit}")]
    TooLarge {
        /// The encoded event's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The socket is in as many rooms as its namespace allows.
    #[error("the socket is in {0} rooms, its namespace's max_rooms")]
    TooManyRooms(usize),
    /// The namespace keeps no history.
    #[error("namespace {0:?} keeps no history")]
    NoHistory(String),
}

impl Failure {
    /// The HTTP status that goes with it.
    pub fn status(&self) -> u16 {
        match self {
            Failure::NoNamespace(_) | Failure::NoHistory(_) => 404,
            Failure::Invalid(_) => 400,
            Failure::TooLarge { .. } => 413,
            Failure::TooManyRooms(_) => 409,
        }
    }
}

/// One process's answer to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Copies queued for this process's sockets (emit).
    Delivered(usize),
    /// Rooms by namespace (host-wide).
    Rooms(Vec<(String, Vec<RoomInfo>)>),
    /// A room's members (host-wide).
    Members(Vec<MemberInfo>),
    /// This process's sockets.
    Sockets(Vec<SocketInfo>),
    /// The socket is here; the room's member count afterwards (join, leave).
    Moved(usize),
    /// The socket is here and was disconnected.
    Kicked,
    /// Sockets disconnected here.
    Disconnected(usize),
    /// The socket is not here.
    NotHere,
    /// Recent events of a room, as this process keeps them (`offset`, `event`, `args`,
    /// `binary`, `time` each).
    History(Vec<Value>),
    /// This process refused the call.
    Failed(Failure),
}

/// The answer to a backend: HTTP status and the JSON document.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `{"ok":true,…}` or `{"ok":false,"error":…}`.
    pub body: Value,
}

impl Reply {
    /// A refusal: `{"ok":false,"error":…}`.
    pub fn error(status: u16, error: impl std::fmt::Display) -> Reply {
        Reply {
            status,
            body: json!({ "ok": false, "error": error.to_string() }),
        }
    }

    pub fn ok(fields: Value) -> Reply {
        let mut body = serde_json::Map::new();
        body.insert("ok".to_owned(), Value::Bool(true));
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        Reply {
            status: 200,
            body: Value::Object(body),
        }
    }
}

/// One reply from the parts every asked process gave: the first failure wins (every
/// process has the same config, so they fail alike), counts add up, lists are joined.
pub fn merge(call: &Call, parts: Vec<Part>) -> Reply {
    if parts.is_empty() {
        return Reply::error(503, "no worker answered");
    }
    if let Some(failure) = parts.iter().find_map(|p| match p {
        Part::Failed(f) => Some(f),
        _ => None,
    }) {
        return Reply::error(failure.status(), failure);
    }
    let no_socket = |socket: &str| Reply::error(404, format!("no socket {socket:?}"));
    match call {
        Call::Emit(_) | Call::Relay(_) => {
            let recipients: usize = parts.iter().map(count).sum();
            Reply::ok(json!({ "recipients": recipients }))
        }
        Call::Rooms { .. } => {
            let mut namespaces = serde_json::Map::new();
            for part in parts {
                if let Part::Rooms(list) = part {
                    for (name, rooms) in list {
                        namespaces.insert(name, json!(rooms));
                    }
                    break;
                }
            }
            Reply::ok(json!({ "namespaces": namespaces }))
        }
        Call::Members { namespace, room } => {
            let members = parts.into_iter().find_map(|p| match p {
                Part::Members(m) => Some(m),
                _ => None,
            });
            Reply::ok(json!({
                "namespace": namespace,
                "room": room,
                "members": members.unwrap_or_default(),
            }))
        }
        Call::Sockets { .. } => {
            let mut sockets: Vec<SocketInfo> = parts
                .into_iter()
                .flat_map(|p| match p {
                    Part::Sockets(list) => list,
                    _ => Vec::new(),
                })
                .collect();
            sockets.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
            Reply::ok(json!({ "sockets": sockets }))
        }
        Call::Join { socket, room, .. } | Call::Leave { socket, room, .. } => {
            match parts.iter().find_map(|p| match p {
                Part::Moved(n) => Some(*n),
                _ => None,
            }) {
                Some(count) => Reply::ok(json!({ "room": room, "count": count })),
                None => no_socket(socket),
            }
        }
        Call::Kick { socket, .. } => {
            if parts.contains(&Part::Kicked) {
                Reply::ok(json!({}))
            } else {
                no_socket(socket)
            }
        }
        Call::Disconnect { .. } => {
            let disconnected: usize = parts.iter().map(count).sum();
            Reply::ok(json!({ "disconnected": disconnected }))
        }
        Call::History {
            namespace,
            room,
            limit,
            ..
        } => {
            let events = merge_history(parts, *limit);
            Reply::ok(json!({ "namespace": namespace, "room": room, "events": events }))
        }
    }
}

/// The events of every part once each (the same event kept by several processes has one
/// offset), in the order they were accepted, the latest `limit`.
fn merge_history(parts: Vec<Part>, limit: Option<usize>) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for part in parts {
        if let Part::History(list) = part {
            for event in list {
                let offset = event["offset"].as_str().unwrap_or_default().to_owned();
                if seen.insert(offset) {
                    events.push(event);
                }
            }
        }
    }
    // Stable: the events of one process keep their order when times tie.
    events.sort_by_key(|e| e["time"].as_u64().unwrap_or(0));
    let skip = events.len().saturating_sub(limit.unwrap_or(usize::MAX));
    events.split_off(skip)
}

fn count(part: &Part) -> usize {
    match part {
        Part::Delivered(n) | Part::Disconnected(n) => *n,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit() -> Call {
        Call::Emit(serde_json::from_str(r#"{"event":"e"}"#).unwrap())
    }

    #[test]
    fn emit_defaults_to_the_root_namespace_and_refuses_unknown_fields() {
        let e: Emit = serde_json::from_str(r#"{"event":"tick","args":[1]}"#).unwrap();
        assert_eq!(e.namespace, "/");
        assert!(e.rooms.is_empty() && e.sockets.is_empty() && e.binary.is_empty());
        let err = serde_json::from_str::<Emit>(r#"{"event":"e","room":"r"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `room`"), "{err}");
        assert!(serde_json::from_str::<Emit>(r#"{"args":[]}"#).is_err());
    }

    #[test]
    fn binary_arguments_are_padded_base64() {
        assert_eq!(decode_binary("AAEC/w==").unwrap(), [0, 1, 2, 255]);
        assert_eq!(decode_binary("EJEezH+HeFJ=").unwrap().len(), 8);
        assert_eq!(decode_binary("").unwrap(), Vec::<u8>::new());
        for bad in ["AAE", "not base64!", "AA-_", "AAE=="] {
            assert!(decode_binary(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn calls_cross_the_control_channel_unchanged() {
        let calls = [
            emit(),
            Call::Sockets {
                namespace: None,
                room: Some("r".into()),
            },
            Call::Kick {
                socket: "abc".into(),
                namespace: "/".into(),
            },
        ];
        for call in calls {
            let text = serde_json::to_string(&call).unwrap();
            assert_eq!(serde_json::from_str::<Call>(&text).unwrap(), call);
        }
        let part = Part::Failed(Failure::TooLarge { size: 9, limit: 8 });
        let text = serde_json::to_string(&part).unwrap();
        assert_eq!(serde_json::from_str::<Part>(&text).unwrap(), part);
    }

    #[test]
    fn histories_of_workers_merge_once_each_in_time_order() {
        let event = |offset: &str, time: u64| json!({ "offset": offset, "time": time });
        let call = Call::History {
            namespace: "/".into(),
            room: "r".into(),
            since: None,
            limit: Some(3),
        };
        let parts = vec![
            Part::History(vec![event("1-a", 10), event("1-b", 30), event("2-a", 20)]),
            Part::History(vec![event("2-a", 20), event("2-b", 40), event("1-a", 10)]),
        ];
        let reply = merge(&call, parts);
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body["events"],
            json!([event("2-a", 20), event("1-b", 30), event("2-b", 40)])
        );
    }

    #[test]
    fn counts_add_up_over_workers() {
        let reply = merge(&emit(), vec![Part::Delivered(2), Part::Delivered(3)]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, json!({ "ok": true, "recipients": 5 }));
        let call = Call::Disconnect {
            namespace: "/".into(),
            rooms: vec![],
        };
        let reply = merge(&call, vec![Part::Disconnected(1), Part::Disconnected(0)]);
        assert_eq!(reply.body["disconnected"], 1);
    }

    #[test]
    fn a_socket_is_found_on_one_worker_or_is_unknown() {
        let call = Call::Join {
            socket: "s1".into(),
            namespace: "/".into(),
            room: "r".into(),
        };
        let reply = merge(&call, vec![Part::NotHere, Part::Moved(4)]);
        assert_eq!(reply.body, json!({ "ok": true, "room": "r", "count": 4 }));
        let reply = merge(&call, vec![Part::NotHere, Part::NotHere]);
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body["ok"], false);
        assert!(reply.body["error"].as_str().unwrap().contains("s1"));
    }

    #[test]
    fn the_first_failure_decides_and_no_answer_is_unavailable() {
        let failed = Part::Failed(Failure::NoNamespace("/x".into()));
        let reply = merge(&emit(), vec![Part::Delivered(1), failed]);
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body["error"], "no namespace \"/x\"");
        assert_eq!(merge(&emit(), vec![]).status, 503);
    }

    #[test]
    fn sockets_of_every_worker_are_listed_in_order() {
        let socket = |id: &str| SocketInfo {
            id: id.into(),
            namespace: "/".into(),
            user: None,
            rooms: vec![],
            transport: "websocket".into(),
            address: "127.0.0.1".into(),
            connected_at: "2026-12-03T00:00:00.000Z".into(),
        };
        let call = Call::Sockets {
            namespace: None,
            room: None,
        };
        let reply = merge(
            &call,
            vec![
                Part::Sockets(vec![socket("b")]),
                Part::Sockets(vec![socket("a"), socket("c")]),
            ],
        );
        let ids: Vec<&str> = reply.body["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
