//! The messages of `@socket.io/redis-streams-adapter` 0.3.x: socket.io-adapter's
//! `ClusterAdapter` messages (types 1 to 13, [`Type`]), as they cross Redis in two ways:
//! - a stream entry (broadcasts, joins, leaves, disconnects: what must not be missed)
//!   has the fields `uid`, `nsp`, `type` (a decimal string) and `data`: JSON text, or
//!   base64 of msgpack when the data holds a binary ([`Message::from_entry`],
//!   [`Entry`]);
//! - an ephemeral message (fetch sockets, server-side emits, a broadcast with acks, and
//!   every answer) is the whole message in msgpack, published on the namespace's channel
//!   `<key>#<nsp>#` and answered on the asker's `<key>#<nsp>#<uid>#`
//!   ([`Message::from_ephemeral`], [`ephemeral`], [`answer`]).
//!
//! What a message asks is read into the pub/sub dialect's forms ([`Inbound`]), so that
//! the gateway answers both dialects with one logic. Everything read here came from the
//! network: sizes are checked by the caller, the nesting by [`format::decode`], and a
//! message of another shape is an error, never a panic.

use base64::Engine as _;
use rmpv::Value;
use serde::Serialize;
use serde_json::json;

use super::answer::Response;
use super::format::{self, Bad, Broadcast, Kind, Request};

/// socket.io-adapter's `MessageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Type {
    /// A node started (the heartbeat variant of the adapter; ignored here).
    InitialHeartbeat = 1,
    /// A node is alive (ignored here).
    Heartbeat = 2,
    /// A broadcast (with a `requestId`: one whose clients' acks go back to the sender).
    Broadcast = 3,
    /// Put the selected sockets in rooms.
    SocketsJoin = 4,
    /// Take the selected sockets out of rooms.
    SocketsLeave = 5,
    /// Disconnect the selected sockets.
    DisconnectSockets = 6,
    /// The selected sockets, described.
    FetchSockets = 7,
    /// The answer to [`Type::FetchSockets`].
    FetchSocketsResponse = 8,
    /// An event for the servers themselves.
    ServerSideEmit = 9,
    /// A server's answer to a [`Type::ServerSideEmit`] with an ack.
    ServerSideEmitResponse = 10,
    /// How many clients a broadcast with acks reached on a node.
    BroadcastClientCount = 11,
    /// One client's ack of a broadcast with acks.
    BroadcastAck = 12,
    /// A node's adapter closed (ignored here).
    AdapterClose = 13,
}

impl Type {
    fn of(n: u64) -> Option<Type> {
        Some(match n {
            1 => Type::InitialHeartbeat,
            2 => Type::Heartbeat,
            3 => Type::Broadcast,
            4 => Type::SocketsJoin,
            5 => Type::SocketsLeave,
            6 => Type::DisconnectSockets,
            7 => Type::FetchSockets,
            8 => Type::FetchSocketsResponse,
            9 => Type::ServerSideEmit,
            10 => Type::ServerSideEmitResponse,
            11 => Type::BroadcastClientCount,
            12 => Type::BroadcastAck,
            13 => Type::AdapterClose,
            _ => return None,
        })
    }
}

/// A message of another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The sender's node id.
    pub uid: String,
    /// The namespace.
    pub nsp: String,
    /// What it is.
    pub kind: Type,
    /// Its data (nil when it has none).
    pub data: Value,
}

/// The longest `uid` or `nsp` read (a Node server's uid has 16 characters).
const MAX_NAME: usize = 4096;

fn name(v: Option<&[u8]>, what: &'static str) -> Result<String, Bad> {
    let v = v.ok_or(Bad::Shape(what))?;
    if v.len() > MAX_NAME {
        return Err(Bad::Shape(what));
    }
    String::from_utf8(v.to_vec()).map_err(|_| Bad::Shape(what))
}

impl Message {
    /// A stream entry, given its fields.
    pub fn from_entry<'a>(field: impl Fn(&str) -> Option<&'a [u8]>) -> Result<Message, Bad> {
        let uid = name(field("uid"), "an entry without a uid")?;
        let nsp = name(field("nsp"), "an entry without a namespace")?;
        let kind = std::str::from_utf8(field("type").ok_or(Bad::Shape("an entry without type"))?)
            .ok()
            .and_then(|t| t.parse().ok())
            .and_then(Type::of)
            .ok_or(Bad::Shape("an unknown message type"))?;
        let data = match field("data") {
            None | Some(b"") => Value::Nil,
            Some(text) if text.first() == Some(&b'{') => format::decode(text)?,
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| Bad::Undecodable(format!("base64: {e}")))?;
                if bytes.first() == Some(&b'{') {
                    return Err(Bad::Shape("msgpack data that reads as JSON"));
                }
                format::decode(&bytes)?
            }
        };
        Ok(Message {
            uid,
            nsp,
            kind,
            data,
        })
    }

    /// A message published on a channel: the whole message in msgpack.
    pub fn from_ephemeral(bytes: &[u8]) -> Result<Message, Bad> {
        if bytes.first() == Some(&b'{') {
            return Err(Bad::Shape("JSON where msgpack was expected"));
        }
        let v = format::decode(bytes)?;
        let text = |key, what| {
            format::field(&v, key)
                .and_then(Value::as_str)
                .filter(|s| s.len() <= MAX_NAME)
                .map(str::to_owned)
                .ok_or(Bad::Shape(what))
        };
        let kind = format::field(&v, "type")
            .and_then(Value::as_u64)
            .and_then(Type::of)
            .ok_or(Bad::Shape("an unknown message type"))?;
        Ok(Message {
            uid: text("uid", "a message without a uid")?,
            nsp: text("nsp", "a message without a namespace")?,
            kind,
            data: format::field(&v, "data").cloned().unwrap_or(Value::Nil),
        })
    }
}

/// What a message is to the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A broadcast to deliver.
    Broadcast(Broadcast),
    /// A request to act on (and maybe answer), in the pub/sub dialect's form.
    Request(Request),
    /// An answer to one of this node's requests: its `data` (`requestId` and the rest).
    Answer(serde_json::Value),
    /// Nothing to do (heartbeats, a node closing).
    Ignored,
}

impl Message {
    /// What this message asks.
    pub fn inbound(&self) -> Result<Inbound, Bad> {
        let d = &self.data;
        let text = |key| format::field(d, key).and_then(format::room_name);
        let opts = || {
            format::field(d, "opts")
                .map(format::selection_of)
                .transpose()
        };
        let request = |kind| Request {
            kind,
            uid: Some(self.uid.clone()),
            request_id: text("requestId"),
            opts: None,
            rooms: Vec::new(),
            sid: None,
            room: None,
            close: false,
            event: None,
        };
        let packet_event = || {
            let packet = format::field(d, "packet").ok_or(Bad::Shape("no packet"))?;
            // A broadcast's packet is `{type, data, nsp}`; a server-side emit's the list.
            let data = format::field(packet, "data").unwrap_or(packet);
            format::event_of(data)
        };
        Ok(match self.kind {
            Type::Broadcast if text("requestId").is_none() => {
                let packet = format::field(d, "packet").ok_or(Bad::Shape("no packet"))?;
                let local = format::field(d, "opts")
                    .and_then(|o| format::field(o, "flags"))
                    .and_then(|f| format::field(f, "local"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let data = format::field(packet, "data").ok_or(Bad::Shape("no data"))?;
                Inbound::Broadcast(Broadcast {
                    uid: self.uid.clone(),
                    nsp: self.nsp.clone(),
                    event: format::event_of(data)?,
                    to: opts()?.unwrap_or_default(),
                    local,
                })
            }
            Type::Broadcast => Inbound::Request(Request {
                opts: Some(opts()?.unwrap_or_default()),
                event: Some(packet_event()?),
                ..request(Kind::Broadcast)
            }),
            Type::SocketsJoin | Type::SocketsLeave => Inbound::Request(Request {
                opts: Some(opts()?.ok_or(Bad::Shape("no opts"))?),
                rooms: format::rooms_of(format::field(d, "rooms"))?,
                ..request(if self.kind == Type::SocketsJoin {
                    Kind::RemoteJoin
                } else {
                    Kind::RemoteLeave
                })
            }),
            Type::DisconnectSockets => Inbound::Request(Request {
                opts: Some(opts()?.ok_or(Bad::Shape("no opts"))?),
                close: format::field(d, "close")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                ..request(Kind::RemoteDisconnect)
            }),
            Type::FetchSockets => Inbound::Request(Request {
                opts: Some(opts()?.unwrap_or_default()),
                ..request(Kind::RemoteFetch)
            }),
            Type::ServerSideEmit => Inbound::Request(Request {
                event: Some(packet_event()?),
                ..request(Kind::ServerSideEmit)
            }),
            Type::FetchSocketsResponse
            | Type::ServerSideEmitResponse
            | Type::BroadcastClientCount
            | Type::BroadcastAck => {
                let json = serde_json::to_value(d).map_err(|e| Bad::Undecodable(e.to_string()))?;
                if !json.is_object() {
                    return Err(Bad::Shape("an answer that is not a map"));
                }
                Inbound::Answer(json)
            }
            Type::InitialHeartbeat | Type::Heartbeat | Type::AdapterClose => Inbound::Ignored,
        })
    }
}

/// A stream entry to write: its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry(pub Vec<(&'static str, String)>);

impl Entry {
    /// An entry of `kind` from node `uid` in `nsp`, with `data` as JSON text.
    pub fn json(uid: &str, nsp: &str, kind: Type, data: &serde_json::Value) -> Entry {
        Entry::with(uid, nsp, kind, data.to_string())
    }

    fn with(uid: &str, nsp: &str, kind: Type, data: String) -> Entry {
        Entry(vec![
            ("uid", uid.to_owned()),
            ("nsp", nsp.to_owned()),
            ("type", (kind as u8).to_string()),
            ("data", data),
        ])
    }

    /// A broadcast of node `uid`: the event `data` (`[name, ...args]`, binaries in
    /// place) to `rooms` but `except`.
    pub fn broadcast(uid: &str, nsp: &str, data: &Value, rooms: &[&str], except: &[&str]) -> Entry {
        #[derive(Serialize)]
        struct Packet<'a> {
            #[serde(rename = "type")]
            kind: u8,
            data: &'a Value,
            nsp: &'a str,
        }
        #[derive(Serialize)]
        struct Opts<'a> {
            rooms: &'a [&'a str],
            except: &'a [&'a str],
            flags: serde_json::Map<String, serde_json::Value>,
        }
        #[derive(Serialize)]
        struct Data<'a> {
            packet: Packet<'a>,
            opts: Opts<'a>,
        }
        let body = Data {
            packet: Packet { kind: 2, data, nsp },
            opts: Opts {
                rooms,
                except,
                flags: serde_json::Map::new(),
            },
        };
        let text = if has_binary(data, 0) {
            None
        } else {
            serde_json::to_string(&body).ok()
        };
        let text = text.unwrap_or_else(|| {
            let packed = rmp_serde::to_vec_named(&body).expect("a broadcast always encodes");
            base64::engine::general_purpose::STANDARD.encode(packed)
        });
        Entry::with(uid, nsp, Type::Broadcast, text)
    }

    /// The entry's size in bytes, as counted against a bound.
    pub fn len(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Whether it has no fields (never, for the entries made here).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn has_binary(v: &Value, depth: usize) -> bool {
    match v {
        Value::Binary(_) => true,
        _ if depth > format::MAX_DEPTH => false,
        Value::Array(items) => items.iter().any(|i| has_binary(i, depth + 1)),
        Value::Map(entries) => entries.iter().any(|(_, v)| has_binary(v, depth + 1)),
        _ => false,
    }
}

/// An ephemeral message of node `uid`: the whole message in msgpack.
pub fn ephemeral(uid: &str, nsp: &str, kind: Type, data: &impl Serialize) -> Vec<u8> {
    #[derive(Serialize)]
    struct Whole<'a, T> {
        uid: &'a str,
        nsp: &'a str,
        #[serde(rename = "type")]
        kind: u8,
        data: &'a T,
    }
    let whole = Whole {
        uid,
        nsp,
        kind: kind as u8,
        data,
    };
    rmp_serde::to_vec_named(&whole).expect("a message always encodes")
}

/// The answer of node `uid` to a request, in this dialect; `None` for the answers it
/// has none for (joins, leaves and disconnects are not answered here).
pub fn answer(uid: &str, nsp: &str, r: &Response<'_>) -> Option<Vec<u8>> {
    let (kind, data) = if let Some(sockets) = &r.sockets {
        let data = json!({ "requestId": r.request_id, "sockets": sockets });
        (Type::FetchSocketsResponse, data)
    } else if let Some(count) = r.client_count {
        let data = json!({ "requestId": r.request_id, "clientCount": count });
        (Type::BroadcastClientCount, data)
    } else if let Some(packet) = &r.data {
        let data = json!({ "requestId": r.request_id, "packet": packet });
        (Type::ServerSideEmitResponse, data)
    } else {
        return None;
    };
    Some(ephemeral(uid, nsp, kind, &data))
}

/// The `opts` of a request to the sockets of `rooms` (all with none).
pub fn opts(rooms: &[impl AsRef<str>]) -> serde_json::Value {
    let rooms: Vec<&str> = rooms.iter().map(AsRef::as_ref).collect();
    json!({ "rooms": rooms, "except": [], "flags": {} })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn fields<'e>(e: &'e Entry) -> impl Fn(&str) -> Option<&'e [u8]> + 'e {
        move |k| {
            e.0.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn data(args: &str, bins: &[&'static [u8]]) -> Value {
        let raw: Vec<Box<RawValue>> = serde_json::from_str(args).unwrap();
        let raw: Vec<&RawValue> = raw.iter().map(AsRef::as_ref).collect();
        let bins: Vec<bytes::Bytes> = bins.iter().map(|b| bytes::Bytes::from_static(b)).collect();
        format::data_of("ev", &raw, &bins).unwrap()
    }

    #[test]
    fn a_broadcast_entry_is_json_without_binaries_and_msgpack_with() {
        let plain = Entry::broadcast("u1", "/chat", &data(r#"[1,{"a":"b"}]"#, &[]), &["r"], &[]);
        let text = &plain.0[3].1;
        assert_eq!(
            text,
            r#"{"packet":{"type":2,"data":["ev",1,{"a":"b"}],"nsp":"/chat"},"opts":{"rooms":["r"],"except":[],"flags":{}}}"#
        );
        assert_eq!(plain.0[2], ("type", "3".to_owned()));
        let Inbound::Broadcast(b) = Message::from_entry(fields(&plain))
            .unwrap()
            .inbound()
            .unwrap()
        else {
            panic!("not a broadcast")
        };
        assert_eq!((b.uid.as_str(), b.nsp.as_str()), ("u1", "/chat"));
        assert_eq!(b.event.args, r#"[1,{"a":"b"}]"#);
        assert_eq!(b.to.rooms, ["r"]);

        let binary = data(r#"[{"_placeholder":true,"num":0}]"#, &[b"\x01\x02"]);
        let packed = Entry::broadcast("u1", "/", &binary, &[], &["x"]);
        assert!(!packed.0[3].1.starts_with('{'));
        let Inbound::Broadcast(b) = Message::from_entry(fields(&packed))
            .unwrap()
            .inbound()
            .unwrap()
        else {
            panic!("not a broadcast")
        };
        assert_eq!(b.event.args, r#"[{"_placeholder":true,"num":0}]"#);
        assert_eq!(
            b.event.attachments,
            [bytes::Bytes::from_static(b"\x01\x02")]
        );
        assert_eq!(b.to.except, ["x"]);
    }

    #[test]
    fn node_requests_read_as_the_pubsub_forms() {
        let join = Entry::json(
            "n",
            "/",
            Type::SocketsJoin,
            &json!({ "opts": opts(&["s1"]), "rooms": ["r2"] }),
        );
        let Inbound::Request(r) = Message::from_entry(fields(&join))
            .unwrap()
            .inbound()
            .unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!(r.kind, Kind::RemoteJoin);
        assert_eq!(r.opts.unwrap().rooms, ["s1"]);
        assert_eq!(r.rooms, ["r2"]);
        assert_eq!(r.request_id, None);

        let fetch = ephemeral(
            "n",
            "/",
            Type::FetchSockets,
            &json!({ "opts": opts(&["r"]), "requestId": "q1" }),
        );
        let Inbound::Request(r) = Message::from_ephemeral(&fetch).unwrap().inbound().unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!(
            (r.kind, r.request_id.as_deref()),
            (Kind::RemoteFetch, Some("q1"))
        );

        let emit = ephemeral(
            "n",
            "/",
            Type::ServerSideEmit,
            &json!({ "packet": ["who", 1], "requestId": "q2" }),
        );
        let Inbound::Request(r) = Message::from_ephemeral(&emit).unwrap().inbound().unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.event.unwrap().name, "who");

        let with_ack = ephemeral(
            "n",
            "/",
            Type::Broadcast,
            &json!({ "packet": { "type": 2, "data": ["e"], "nsp": "/" }, "requestId": "q3", "opts": opts(&[] as &[&str]) }),
        );
        let Inbound::Request(r) = Message::from_ephemeral(&with_ack)
            .unwrap()
            .inbound()
            .unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!(r.kind, Kind::Broadcast);

        for ignored in [Type::Heartbeat, Type::InitialHeartbeat, Type::AdapterClose] {
            let m = Entry::json("n", "/", ignored, &json!({}));
            assert_eq!(
                Message::from_entry(fields(&m)).unwrap().inbound().unwrap(),
                Inbound::Ignored
            );
        }
    }

    #[test]
    fn answers_carry_the_type_node_expects() {
        let fetched = Response {
            sockets: Some(json!([])),
            ..Response::to("q")
        };
        let m = Message::from_ephemeral(&answer("me", "/", &fetched).unwrap()).unwrap();
        assert_eq!((m.kind, m.uid.as_str()), (Type::FetchSocketsResponse, "me"));
        assert_eq!(
            m.inbound().unwrap(),
            Inbound::Answer(json!({ "requestId": "q", "sockets": [] }))
        );
        let counted = Response {
            client_count: Some(0),
            ..Response::to("q")
        };
        let m = Message::from_ephemeral(&answer("me", "/", &counted).unwrap()).unwrap();
        assert_eq!(m.kind, Type::BroadcastClientCount);
        let emitted = Response {
            data: Some(json!({ "server": "iorelay" })),
            ..Response::to("q")
        };
        let m = Message::from_ephemeral(&answer("me", "/", &emitted).unwrap()).unwrap();
        assert_eq!(m.kind, Type::ServerSideEmitResponse);
        assert_eq!(answer("me", "/", &Response::to("q")), None);
    }

    #[test]
    fn hostile_entries_and_messages_are_errors() {
        let entry = |pairs: &[(&'static str, &str)]| {
            Entry(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
        };
        let long = "u".repeat(MAX_NAME + 1);
        for bad in [
            entry(&[("nsp", "/"), ("type", "3")]),
            entry(&[("uid", "u"), ("type", "3")]),
            entry(&[("uid", "u"), ("nsp", "/")]),
            entry(&[("uid", "u"), ("nsp", "/"), ("type", "99")]),
            entry(&[("uid", "u"), ("nsp", "/"), ("type", "-1")]),
            entry(&[("uid", "u"), ("nsp", "/"), ("type", "3x")]),
            entry(&[("uid", &long), ("nsp", "/"), ("type", "3")]),
            entry(&[("uid", "u"), ("nsp", "/"), ("type", "3"), ("data", "{nope")]),
            entry(&[("uid", "u"), ("nsp", "/"), ("type", "3"), ("data", "!!!")]),
            // base64 of `{}`: JSON hidden as msgpack.
            entry(&[("uid", "u"), ("nsp", "/"), ("type", "3"), ("data", "e30=")]),
            // base64 of a list claiming four billion items.
            entry(&[
                ("uid", "u"),
                ("nsp", "/"),
                ("type", "3"),
                ("data", "3f////8="),
            ]),
        ] {
            assert!(Message::from_entry(fields(&bad)).is_err(), "{bad:?}");
        }
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let deep = entry(&[
            ("uid", "u"),
            ("nsp", "/"),
            ("type", "3"),
            ("data", &format!(r#"{{"a":{deep}}}"#)),
        ]);
        assert!(Message::from_entry(fields(&deep)).is_err());
        // Well formed, but not the shape its type needs.
        for (kind, data) in [
            ("3", r#"{"packet":1}"#),
            ("3", r#"{"packet":{"type":2,"data":"x"}}"#),
            ("3", r#"{"packet":{"type":2,"data":[]}}"#),
            ("4", r#"{"rooms":["r"]}"#),
            ("4", r#"{"opts":{"rooms":"s"},"rooms":["r"]}"#),
            ("6", r#"{"opts":7}"#),
            ("9", r#"{"packet":[1]}"#),
            ("8", "{}"),
        ] {
            let e = entry(&[("uid", "u"), ("nsp", "/"), ("type", kind), ("data", data)]);
            let read = Message::from_entry(fields(&e)).and_then(|m| m.inbound());
            if kind == "8" {
                // An answer is only looked up by its request id.
                assert!(read.is_ok());
            } else {
                assert!(read.is_err(), "{kind} {data}");
            }
        }
        assert!(Message::from_ephemeral(b"").is_err());
        assert!(Message::from_ephemeral(br#"{"uid":"u"}"#).is_err());
        assert!(Message::from_ephemeral(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            Message::from_ephemeral(
                &rmp_serde::to_vec_named(&json!({"uid": 1, "nsp": "/", "type": 7})).unwrap()
            )
            .is_err()
        );
        assert!(
            Message::from_ephemeral(
                &rmp_serde::to_vec_named(&json!({"uid": "u", "nsp": "/", "type": 14})).unwrap()
            )
            .is_err()
        );
        let answer = ephemeral("u", "/", Type::FetchSocketsResponse, &json!([1]));
        assert!(Message::from_ephemeral(&answer).unwrap().inbound().is_err());
    }
}
