//! The messages of `@socket.io/redis-adapter` 8.x and `@socket.io/redis-emitter`, as
//! they cross Redis: the channel names, a broadcast (`[uid, packet, opts]` in msgpack),
//! the requests between nodes (JSON, or msgpack for a broadcast with acks) and their
//! answers, and the translation between a Node packet's `data` (msgpack, binary
//! anywhere) and the relay's form of an event (a JSON array with numbered
//! `_placeholder`s, and the attachments).
//!
//! Everything read here came from the network: sizes are checked by the caller, the
//! nesting is bounded here ([`MAX_DEPTH`]), and a message that does not have the shape
//! of one of these is an error, never a panic.

use std::collections::BTreeSet;

use bytes::Bytes;
use rmpv::Value;
use serde::Serialize;
use serde_json::value::RawValue;

/// The deepest nesting of a message or an event's arguments that is read.
pub const MAX_DEPTH: usize = 128;

/// Socket.IO's packet types that carry an event.
const EVENT: u64 = 2;
const BINARY_EVENT: u64 = 5;

/// The request types between nodes, as the Node adapter numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The ids of the sockets in some rooms (before `fetchSockets`).
    Sockets,
    /// Every room.
    AllRooms,
    /// Put sockets in rooms.
    RemoteJoin,
    /// Take sockets out of rooms.
    RemoteLeave,
    /// Disconnect sockets.
    RemoteDisconnect,
    /// The sockets in some rooms, with their handshake, rooms and data.
    RemoteFetch,
    /// An event for the servers themselves.
    ServerSideEmit,
    /// A broadcast whose clients' acknowledgements go back to the sender.
    Broadcast,
    /// How many clients a [`Kind::Broadcast`] reached on a node.
    BroadcastClientCount,
    /// One client's acknowledgement of a [`Kind::Broadcast`].
    BroadcastAck,
}

impl Kind {
    fn of(n: u64) -> Option<Kind> {
        Some(match n {
            0 => Kind::Sockets,
            1 => Kind::AllRooms,
            2 => Kind::RemoteJoin,
            3 => Kind::RemoteLeave,
            4 => Kind::RemoteDisconnect,
            5 => Kind::RemoteFetch,
            6 => Kind::ServerSideEmit,
            7 => Kind::Broadcast,
            8 => Kind::BroadcastClientCount,
            9 => Kind::BroadcastAck,
            _ => return None,
        })
    }

    /// The number on the wire.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The label of `iorelay_cluster_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sockets => "sockets",
            Kind::AllRooms => "all_rooms",
            Kind::RemoteJoin => "remote_join",
            Kind::RemoteLeave => "remote_leave",
            Kind::RemoteDisconnect => "remote_disconnect",
            Kind::RemoteFetch => "remote_fetch",
            Kind::ServerSideEmit => "server_side_emit",
            Kind::Broadcast => "broadcast",
            Kind::BroadcastClientCount => "broadcast_client_count",
            Kind::BroadcastAck => "broadcast_ack",
        }
    }
}

/// The channels of one namespace under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// Broadcasts to the whole namespace (`<key>#<nsp>#`); one to a single room goes to
    /// `<key>#<nsp>#<room>#`.
    pub broadcast: String,
    /// Requests (`<key>-request#<nsp>#`); its subscribers are the cluster's nodes.
    pub request: String,
    /// Answers to everyone (`<key>-response#<nsp>#`).
    pub response: String,
}

impl Channels {
    /// The channels of namespace `nsp`.
    pub fn of(key: &str, nsp: &str) -> Channels {
        Channels {
            broadcast: format!("{key}#{nsp}#"),
            request: format!("{key}-request#{nsp}#"),
            response: format!("{key}-response#{nsp}#"),
        }
    }

    /// The pattern every broadcast of the namespace matches.
    pub fn pattern(&self) -> String {
        // Redis globs treat `[`, `]`, `*`, `?` and `\` in a namespace name specially.
        let mut out = String::with_capacity(self.broadcast.len() + 1);
        for c in self.broadcast.chars() {
            if matches!(c, '[' | ']' | '*' | '?' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('*');
        out
    }

    /// Where a broadcast to `rooms` goes.
    pub fn broadcast_to(&self, rooms: &[impl AsRef<str>]) -> String {
        match rooms {
            [one] => format!("{}{}#", self.broadcast, one.as_ref()),
            _ => self.broadcast.clone(),
        }
    }

    /// The answers meant for node `uid` only.
    pub fn response_for(&self, uid: &str) -> String {
        format!("{}{uid}#", self.response)
    }
}

/// Why a message was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bad {
    /// Not msgpack (or JSON), or nested too deep.
    #[error("not a msgpack or JSON message: {0}")]
    Undecodable(String),
    /// Decodable, but not of the expected shape.
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
}

/// An event as the relay keeps it: its name, its arguments as a JSON array in which each
/// binary is a `{"_placeholder":true,"num":N}`, and the binaries in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name.
    pub name: String,
    /// The arguments, a JSON array.
    pub args: String,
    /// The binaries the placeholders number.
    pub attachments: Vec<Bytes>,
}

/// Who a broadcast or a request is for, as `opts` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Members of any of these rooms (a socket's id is a room holding it alone); empty:
    /// every socket.
    pub rooms: Vec<String>,
    /// Not the members of these rooms.
    pub except: Vec<String>,
}

impl Selection {
    /// Whether socket `id`, a member of `rooms`, is selected.
    pub fn selects(&self, id: &str, rooms: &BTreeSet<&str>) -> bool {
        let is = |r: &String| r == id || rooms.contains(r.as_str());
        !self.except.iter().any(is) && (self.rooms.is_empty() || self.rooms.iter().any(is))
    }
}

/// A broadcast from another node or an emitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The sender's node id (`emitter` for the npm emitter).
    pub uid: String,
    /// The namespace.
    pub nsp: String,
    /// The event.
    pub event: Event,
    /// Who it is for.
    pub to: Selection,
    /// `flags.local` (never sent by a well-behaved node).
    pub local: bool,
}

/// A request from another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What it asks.
    pub kind: Kind,
    /// The sender's node id, if it gave one.
    pub uid: Option<String>,
    /// Its id; none for the requests that are not answered.
    pub request_id: Option<String>,
    /// The sockets it is about (`opts`), if given.
    pub opts: Option<Selection>,
    /// The rooms to join or leave.
    pub rooms: Vec<String>,
    /// One socket (the older single-socket join, leave and disconnect).
    pub sid: Option<String>,
    /// One room (with `sid`).
    pub room: Option<String>,
    /// Whether a disconnect closes the whole connection.
    pub close: bool,
    /// A server-side emit's arguments (event name first), or a broadcast's event.
    pub event: Option<Event>,
}

/// Read a msgpack or JSON message (a JSON one starts with `{`, as the Node adapter
/// tells them apart).
pub fn decode(bytes: &[u8]) -> Result<Value, Bad> {
    if bytes.first() == Some(&b'{') {
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Bad::Undecodable(e.to_string()))?;
        return from_json(&json, 0);
    }
    let mut rd = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| Bad::Undecodable(e.to_string()))?;
    Ok(value)
}

fn from_json(json: &serde_json::Value, depth: usize) -> Result<Value, Bad> {
    if depth > MAX_DEPTH {
        return Err(Bad::Undecodable("nested too deep".to_owned()));
    }
    Ok(match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| from_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Ok((Value::from(k.as_str()), from_json(v, depth + 1)?)))
                .collect::<Result<_, Bad>>()?,
        ),
    })
}

/// The value under `key` of a msgpack map.
pub fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// A room name: Node's rooms are strings, though a number is accepted (and printed).
pub fn room_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.as_str().map(str::to_owned),
        Value::Integer(i) => Some(i.to_string()),
        Value::F64(f) => Some(f.to_string()),
        _ => None,
    }
}

/// A list of room names (none: empty).
pub fn rooms_of(v: Option<&Value>) -> Result<Vec<String>, Bad> {
    match v {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| room_name(r).ok_or(Bad::Shape("a room that is not a string")))
            .collect(),
        Some(_) => Err(Bad::Shape("rooms that are not a list")),
    }
}

/// Who `opts` (`{rooms, except}`) selects.
pub fn selection_of(opts: &Value) -> Result<Selection, Bad> {
    if opts.as_map().is_none() {
        // Read as "every socket", a wrong `opts` would disconnect them all.
        return Err(Bad::Shape("opts that are not a map"));
    }
    Ok(Selection {
        rooms: rooms_of(field(opts, "rooms"))?,
        except: rooms_of(field(opts, "except"))?,
    })
}

/// A broadcast, from `[uid, packet, opts]`.
pub fn broadcast(value: &Value) -> Result<Broadcast, Bad> {
    let [uid, packet, opts] = value
        .as_array()
        .map(Vec::as_slice)
        .ok_or(Bad::Shape("a broadcast that is not a list"))?
    else {
        return Err(Bad::Shape("a broadcast that is not [uid, packet, opts]"));
    };
    let uid = uid
        .as_str()
        .ok_or(Bad::Shape("a uid that is not a string"))?;
    let kind = field(packet, "type").and_then(Value::as_u64);
    if !matches!(kind, Some(EVENT | BINARY_EVENT)) {
        return Err(Bad::Shape("a packet that is not an event"));
    }
    let nsp = match field(packet, "nsp") {
        None | Some(Value::Nil) => "/",
        Some(v) => v
            .as_str()
            .ok_or(Bad::Shape("a namespace that is not a string"))?,
    };
    let data = field(packet, "data").ok_or(Bad::Shape("a packet without data"))?;
    let local = field(opts, "flags")
        .and_then(|f| field(f, "local"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Broadcast {
        uid: uid.to_owned(),
        nsp: nsp.to_owned(),
        event: event_of(data)?,
        to: selection_of(opts)?,
        local,
    })
}

/// A request.
pub fn request(value: &Value) -> Result<Request, Bad> {
    if value.as_map().is_none() {
        return Err(Bad::Shape("a request that is not a map"));
    }
    let kind = field(value, "type")
        .and_then(Value::as_u64)
        .and_then(Kind::of)
        .ok_or(Bad::Shape("an unknown request type"))?;
    let text = |key| field(value, key).and_then(room_name);
    let event = match kind {
        Kind::ServerSideEmit => field(value, "data").map(event_of).transpose()?,
        Kind::Broadcast => {
            let packet = field(value, "packet").ok_or(Bad::Shape("a broadcast without packet"))?;
            let data = field(packet, "data").ok_or(Bad::Shape("a packet without data"))?;
            Some(event_of(data)?)
        }
        _ => None,
    };
    Ok(Request {
        kind,
        uid: text("uid"),
        request_id: text("requestId"),
        // `opts: null` is no opts (the single-socket form), as on a Node server.
        opts: field(value, "opts")
            .filter(|v| !v.is_nil())
            .map(selection_of)
            .transpose()?,
        rooms: rooms_of(field(value, "rooms"))?,
        sid: text("sid"),
        room: text("room"),
        close: field(value, "close")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        event,
    })
}

/// An event from a packet's `data`: `[name, ...args]`.
pub fn event_of(data: &Value) -> Result<Event, Bad> {
    let items = data
        .as_array()
        .ok_or(Bad::Shape("data that is not a list"))?;
    let (name, args) = items
        .split_first()
        .ok_or(Bad::Shape("data without an event name"))?;
    let name = name
        .as_str()
        .ok_or(Bad::Shape("an event name that is not a string"))?;
    let mut attachments = Vec::new();
    let mut json = Vec::with_capacity(args.len());
    for arg in args {
        json.push(to_json(arg, &mut attachments, 0)?);
    }
    let args = serde_json::to_string(&json).map_err(|e| Bad::Undecodable(e.to_string()))?;
    Ok(Event {
        name: name.to_owned(),
        args,
        attachments,
    })
}

fn to_json(
    v: &Value,
    attachments: &mut Vec<Bytes>,
    depth: usize,
) -> Result<serde_json::Value, Bad> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(Bad::Undecodable("nested too deep".to_owned()));
    }
    Ok(match v {
        Value::Nil | Value::Ext(..) => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (None, Some(i)) => J::from(i),
            _ => J::Null,
        },
        // JSON has no NaN or infinity; JSON.stringify writes null for them too.
        Value::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => {
            let num = attachments.len();
            attachments.push(Bytes::copy_from_slice(b));
            serde_json::json!({ "_placeholder": true, "num": num })
        }
        Value::Array(items) => J::Array(
            items
                .iter()
                .map(|i| to_json(i, attachments, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let key_of = |k: &Value| match k {
                Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                other => other.to_string(),
            };
            // A repeated key keeps its last value, as in JavaScript; the values it
            // replaced are not read (their binaries would be attachments of nothing).
            let mut last = std::collections::HashMap::with_capacity(entries.len());
            for (i, (k, _)) in entries.iter().enumerate() {
                last.insert(key_of(k), i);
            }
            let mut map = serde_json::Map::with_capacity(last.len());
            for (i, (k, v)) in entries.iter().enumerate() {
                let key = key_of(k);
                if last.get(&key) == Some(&i) {
                    map.insert(key, to_json(v, attachments, depth + 1)?);
                }
            }
            J::Object(map)
        }
    })
}

/// A packet's `data` for an event of the relay: `[name, ...args]` with each placeholder
/// replaced by its binary. A placeholder that numbers no attachment stays as it is.
pub fn data_of(name: &str, args: &[&RawValue], attachments: &[Bytes]) -> Result<Value, Bad> {
    let mut data = Vec::with_capacity(args.len() + 1);
    data.push(Value::from(name));
    for arg in args {
        let json: serde_json::Value =
            serde_json::from_str(arg.get()).map_err(|e| Bad::Undecodable(e.to_string()))?;
        data.push(with_binaries(&json, attachments, 0)?);
    }
    Ok(Value::Array(data))
}

fn with_binaries(
    json: &serde_json::Value,
    attachments: &[Bytes],
    depth: usize,
) -> Result<Value, Bad> {
    if let Some(map) = json.as_object() {
        if map.len() == 2 && map.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
            let bytes = map
                .get("num")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| attachments.get(usize::try_from(n).ok()?));
            if let Some(bytes) = bytes {
                return Ok(Value::Binary(bytes.to_vec()));
            }
        }
        if depth > MAX_DEPTH {
            return Err(Bad::Undecodable("nested too deep".to_owned()));
        }
        return Ok(Value::Map(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        Value::from(k.as_str()),
                        with_binaries(v, attachments, depth + 1)?,
                    ))
                })
                .collect::<Result<_, Bad>>()?,
        ));
    }
    if let Some(items) = json.as_array() {
        if depth > MAX_DEPTH {
            return Err(Bad::Undecodable("nested too deep".to_owned()));
        }
        return Ok(Value::Array(
            items
                .iter()
                .map(|v| with_binaries(v, attachments, depth + 1))
                .collect::<Result<_, _>>()?,
        ));
    }
    from_json(json, depth)
}

/// `opts` of a broadcast, as the Node adapter writes it.
#[derive(Debug, Serialize)]
struct Opts<'a> {
    rooms: &'a [&'a str],
    except: &'a [&'a str],
    flags: Flags,
}

#[derive(Debug, Serialize)]
struct Flags {}

/// A Socket.IO packet as the Node adapter writes it.
#[derive(Debug, Serialize)]
struct Packet<'a> {
    #[serde(rename = "type")]
    kind: u64,
    data: &'a Value,
    nsp: &'a str,
}

/// A broadcast from node `uid`: `[uid, packet, opts]` in msgpack.
pub fn encode_broadcast(
    uid: &str,
    nsp: &str,
    data: &Value,
    rooms: &[&str],
    except: &[&str],
) -> Vec<u8> {
    let packet = Packet {
        kind: EVENT,
        data,
        nsp,
    };
    let opts = Opts {
        rooms,
        except,
        flags: Flags {},
    };
    rmp_serde::to_vec_named(&(uid, packet, opts)).expect("a broadcast always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn channels_are_named_as_the_node_adapter_names_them() {
        let c = Channels::of("socket.io", "/chat");
        assert_eq!(c.broadcast, "socket.io#/chat#");
        assert_eq!(c.request, "socket.io-request#/chat#");
        assert_eq!(c.response, "socket.io-response#/chat#");
        assert_eq!(c.response_for("abc123"), "socket.io-response#/chat#abc123#");
        assert_eq!(c.broadcast_to(&["room1"]), "socket.io#/chat#room1#");
        assert_eq!(c.broadcast_to(&["a", "b"]), "socket.io#/chat#");
        assert_eq!(c.broadcast_to(&[] as &[&str]), "socket.io#/chat#");
        assert_eq!(Channels::of("k", "/a*[b]").pattern(), "k#/a\\*\\[b\\]#*");
    }

    #[test]
    fn a_broadcast_round_trips_with_binaries_in_place() {
        let args = [
            raw(r#"{"a":[1,{"_placeholder":true,"num":0}]}"#),
            raw("2.5"),
        ];
        let args: Vec<&RawValue> = args.iter().map(AsRef::as_ref).collect();
        let bin = [Bytes::from_static(b"\x00\x01")];
        let data = data_of("ev", &args, &bin).unwrap();
        let bytes = encode_broadcast("uid1", "/", &data, &["r"], &["x"]);
        let back = broadcast(&decode(&bytes).unwrap()).unwrap();
        assert_eq!(back.uid, "uid1");
        assert_eq!(back.nsp, "/");
        assert_eq!(back.to.rooms, ["r"]);
        assert_eq!(back.to.except, ["x"]);
        assert_eq!(back.event.name, "ev");
        assert_eq!(
            back.event.args,
            r#"[{"a":[1,{"_placeholder":true,"num":0}]},2.5]"#
        );
        assert_eq!(back.event.attachments, bin);
    }

    #[test]
    fn hostile_messages_are_errors() {
        assert!(decode(b"").is_err());
        assert!(decode(b"{not json").is_err());
        // 200 nested arrays.
        let mut deep = vec![0x91u8; 200];
        deep.push(0xc0);
        assert!(decode(&deep).is_err());
        // A list that claims four billion items.
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        for bad in [
            Value::from(1),
            Value::Array(vec![Value::from("u"), Value::from(1), Value::Nil]),
            Value::Array(vec![
                Value::from("u"),
                Value::Map(vec![]),
                Value::Map(vec![]),
            ]),
        ] {
            assert!(broadcast(&bad).is_err(), "{bad}");
        }
        assert!(request(&decode(br#"{"type":99}"#).unwrap()).is_err());
        assert!(request(&decode(br#"{"type":2,"rooms":"x"}"#).unwrap()).is_err());
    }

    #[test]
    fn requests_read_their_fields() {
        let r = request(
            &decode(
                br#"{"uid":"n1","requestId":"q","type":5,"opts":{"rooms":["a"],"except":["b"]}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(r.kind, Kind::RemoteFetch);
        assert_eq!(r.uid.as_deref(), Some("n1"));
        assert_eq!(r.request_id.as_deref(), Some("q"));
        assert_eq!(
            r.opts,
            Some(Selection {
                rooms: vec!["a".into()],
                except: vec!["b".into()]
            })
        );
        let r = request(&decode(br#"{"type":4,"sid":"x","opts":null}"#).unwrap()).unwrap();
        assert_eq!((r.opts, r.sid.as_deref()), (None, Some("x")));
        let r = request(&decode(br#"{"uid":"n1","type":6,"data":["hello",1]}"#).unwrap()).unwrap();
        assert_eq!(r.event.unwrap().args, "[1]");
    }

    #[test]
    fn selection_treats_ids_as_rooms() {
        let rooms: BTreeSet<&str> = ["r1"].into();
        let all = Selection::default();
        assert!(all.selects("s1", &rooms));
        let to_id = Selection {
            rooms: vec!["s1".into()],
            except: vec![],
        };
        assert!(to_id.selects("s1", &rooms));
        assert!(!to_id.selects("s2", &rooms));
        let except_room = Selection {
            rooms: vec![],
            except: vec!["r1".into()],
        };
        assert!(!except_room.selects("s1", &rooms));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_only_its_binaries() {
        // Found by the cluster_message fuzz target: the first value, a binary, was
        // replaced in the map but stayed an attachment.
        let data = Value::Array(vec![
            Value::from("e"),
            Value::Map(vec![
                (Value::from("k"), Value::Binary(b"i".to_vec())),
                (Value::from("k"), Value::from(1)),
            ]),
        ]);
        let event = event_of(&data).unwrap();
        assert_eq!(event.args, r#"[{"k":1}]"#);
        assert!(event.attachments.is_empty());
    }

    #[test]
    fn nan_and_extensions_become_null() {
        let data = Value::Array(vec![
            Value::from("e"),
            Value::F64(f64::NAN),
            Value::Ext(-1, vec![0; 8]),
            Value::Map(vec![(Value::from(1), Value::from("one"))]),
        ]);
        assert_eq!(event_of(&data).unwrap().args, r#"[null,null,{"1":"one"}]"#);
    }
}
