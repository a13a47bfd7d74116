//! A node's door to the cluster: the one place on a host (the master, or the single
//! process) that reads Redis. Broadcasts of other nodes and emitters are delivered to the
//! host's sockets as a server API emit is ([`Call::Relay`]); requests of other nodes
//! (fetch sockets, all rooms, remote join, leave and disconnect, server-side emits,
//! broadcasts with acks) are answered for the host's sockets through the same
//! [`Control`] the admin listener uses; this node's own requests ([`Gateway::ask`]) get
//! their answers here too.
//!
//! The workers publish their clients' events themselves (see [`super::Outbound`]); every
//! message of this host carries the same node id, so that this gateway skips them (the
//! host's own bus already delivered them).
//!
//! Both Node adapters' formats are read and answered by the same logic; where they differ
//! on the wire is the [`Dialect`]'s. With the streams adapter, the stream's entries
//! (broadcasts, joins, leaves, disconnects) are handled one after the other in the
//! stream's order, so that a join is done before the broadcast written after it;
//! requests by pub/sub each get a task, as with the pub/sub adapter.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::answer::{FetchedSocket, Handshake, Response};
use super::ask::{Ask, Asker, Pending};
use super::dialect::Dialect;
use super::format::{self, Broadcast, Channels, Kind, Request, Selection};
use super::message::{Inbound, Message};
use super::meters::Meters;
use super::redis::{Incoming, Publisher, Subscriptions};
use super::streams::{self, Reading};
use crate::api::{Call, Relayed, SocketInfo};
use crate::http::control::Control;

/// The gateway's state.
pub struct Gateway {
    /// This node's id (every process of the host publishes with it).
    uid: String,
    /// The channel prefix.
    key: String,
    /// The host behind it.
    control: Arc<dyn Control>,
    /// Where requests and answers go.
    publisher: Publisher,
    /// The cluster's format, and where the host's API emits go.
    dialect: Dialect,
    /// The namespaces served, whose channels are subscribed.
    subscribed: watch::Sender<Subscriptions>,
    /// The same namespaces' channels, by namespace.
    channels: parking_lot::RwLock<HashMap<String, Channels>>,
    /// A connection for this node's own questions (PUBSUB NUMSUB).
    conn: redis::aio::ConnectionManager,
    /// This node's requests waiting for answers.
    pending: Pending,
    /// How long they wait.
    timeout: std::time::Duration,
    /// Other nodes' broadcasts with acks that the host's clients may answer.
    acks: super::acks::Waiting,
    meters: Meters,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("uid", &self.uid).finish()
    }
}

impl Gateway {
    /// Start reading Redis for `namespaces` on behalf of `control`.
    pub fn start(
        config: &crate::config::ClusterConfig,
        uid: String,
        namespaces: &[String],
        control: Arc<dyn Control>,
        meters: Meters,
    ) -> Result<Arc<Gateway>, super::redis::Error> {
        let client = super::redis::client(config)?;
        let publisher = Publisher::start(&client, meters.clone())?;
        let dialect = Dialect::start(config, &client, Some(&publisher), &meters)?;
        let conn = super::redis::lazy_connection(&client)?;
        let (subscribed, wanted) = watch::channel(Subscriptions::default());
        let gateway = Arc::new(Gateway {
            uid,
            key: config.key.clone(),
            control,
            publisher,
            dialect,
            subscribed,
            channels: parking_lot::RwLock::new(HashMap::new()),
            conn,
            pending: Pending::default(),
            timeout: config.requests_timeout,
            acks: super::acks::Waiting::default(),
            meters: meters.clone(),
        });
        gateway.serve(namespaces);
        let max = usize::try_from(config.max_message.as_u64()).unwrap_or(usize::MAX);
        if gateway.dialect.is_streams() {
            let reading = Reading {
                stream: config.stream_name.clone(),
                count: config.read_count,
                block: config.block_time,
                max,
            };
            let entries = streams::read(client.clone(), reading, meters.clone());
            tokio::spawn(gateway.clone().run_stream(entries));
        }
        let rx = super::redis::subscribe(client, wanted, max, meters);
        tokio::spawn(gateway.clone().run(rx));
        Ok(gateway)
    }

    /// The node id.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Follow the namespaces of a new config.
    pub fn serve(&self, namespaces: &[String]) {
        let mut subs = Subscriptions::default();
        let mut by_nsp = HashMap::new();
        for nsp in namespaces {
            let c = Channels::of(&self.key, nsp);
            self.dialect.listen(&mut subs, &c, &self.uid);
            by_nsp.insert(nsp.clone(), c);
        }
        *self.channels.write() = by_nsp;
        self.subscribed.send_replace(subs);
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Incoming>) {
        while let Some(msg) = rx.recv().await {
            if self.dialect.is_streams() {
                match Message::from_ephemeral(&msg.payload) {
                    Ok(m) => self.message(m, None).await,
                    Err(err) => self.malformed("message", &err),
                }
                continue;
            }
            let found = {
                let channels = self.channels.read();
                channels.iter().find_map(|(nsp, c)| {
                    if msg.channel.starts_with(&c.response) {
                        self.pending.answer(&msg.payload);
                        None
                    } else if msg.channel == c.request {
                        Some((nsp.clone(), c.clone(), true))
                    } else if msg.channel.starts_with(&c.broadcast) {
                        Some((nsp.clone(), c.clone(), false))
                    } else {
                        None
                    }
                })
            };
            let Some((nsp, channels, is_request)) = found else {
                continue;
            };
            // One at a time, in the order they came, as a Node server applies them: a
            // join followed by a broadcast to the room reaches the joined socket.
            if is_request {
                self.request(&nsp, &channels, &msg.payload).await;
            } else {
                self.broadcast(&nsp, &msg.payload).await;
            }
        }
    }

    /// The stream's entries, one after the other.
    async fn run_stream(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(streams::Id, Result<Message, format::Bad>)>,
    ) {
        while let Some((id, entry)) = rx.recv().await {
            match entry {
                Ok(m) => self.message(m, Some(id)).await,
                Err(err) => self.malformed("stream entry", &err),
            }
        }
    }

    /// A message of the streams dialect, done before the next one of its source (the
    /// stream, or the pub/sub channels) is read: in order, and never more at once than
    /// the two sources.
    async fn message(&self, m: Message, entry: Option<streams::Id>) {
        if m.uid == self.uid {
            return;
        }
        let Some(channels) = self.channels(&m.nsp) else {
            return;
        };
        match m.inbound() {
            Err(err) => self.malformed("message", &err),
            Ok(Inbound::Answer(json)) => self.pending.answer_json(json),
            Ok(Inbound::Ignored) => {}
            Ok(Inbound::Broadcast(b)) => self.deliver(&m.nsp, b, entry).await,
            Ok(Inbound::Request(req)) => self.act(&m.nsp, &channels, req).await,
        }
    }

    fn malformed(&self, what: &str, err: &format::Bad) {
        self.meters.dropped.with_label_values(&["malformed"]).inc();
        tracing::warn!(error = %err, "cluster: a malformed {what} from Redis dropped");
    }

    async fn broadcast(&self, nsp: &str, payload: &[u8]) {
        match format::decode(payload).and_then(|v| format::broadcast(&v)) {
            Ok(b) => self.deliver(nsp, b, None).await,
            Err(err) => self.malformed("broadcast", &err),
        }
    }

    /// Deliver `b` to the host's sockets; `entry`, its stream entry's id, is its stamp
    /// there (see [`remote`](crate::relay::recovery::remote)).
    async fn deliver(&self, nsp: &str, b: Broadcast, entry: Option<streams::Id>) {
        if b.uid == self.uid || b.local {
            return;
        }
        if let Err(why) = crate::api::check_event_name(&b.event.name) {
            return self.malformed("broadcast", &format::Bad::Undecodable(why));
        }
        if b.nsp != nsp {
            return self.malformed(
                "broadcast",
                &format::Bad::Shape("a namespace not its channel's"),
            );
        }
        let mut relayed = relayed(nsp, b.event, b.to);
        relayed.entry = entry.map(|id| (id.0, id.1));
        let reply = self.control.call(Call::Relay(relayed)).await;
        if reply.status != 200 {
            tracing::warn!(namespace = nsp, error = %reply.body["error"], "cluster: a broadcast from another node was refused");
        }
    }

    async fn request(&self, nsp: &str, channels: &Channels, payload: &[u8]) {
        match format::decode(payload).and_then(|v| format::request(&v)) {
            Ok(req) => self.act(nsp, channels, req).await,
            Err(err) => self.malformed("request", &err),
        }
    }

    /// Do what another node asks for the host's sockets, and answer it.
    async fn act(&self, nsp: &str, channels: &Channels, req: Request) {
        if req.uid.as_deref() == Some(self.uid.as_str()) {
            return;
        }
        self.meters
            .requests
            .with_label_values(&[req.kind.label()])
            .inc();
        let asker = req.uid.as_deref();
        let answer = |response: Response<'_>| {
            let d = &self.dialect;
            d.answer(&self.publisher, &self.uid, nsp, channels, asker, &response);
        };
        let id = req.request_id.as_deref();
        match req.kind {
            Kind::Sockets | Kind::RemoteFetch => {
                let Some(id) = id else { return };
                let to = req.opts.clone().unwrap_or_else(|| Selection {
                    rooms: req.rooms.clone(),
                    except: Vec::new(),
                });
                let sockets = self.sockets(nsp).await;
                let chosen = sockets.iter().filter(|s| selects(&to, s));
                let list = if req.kind == Kind::Sockets {
                    json!(chosen.map(|s| s.id.clone()).collect::<Vec<_>>())
                } else {
                    json!(chosen.map(fetched).collect::<Vec<_>>())
                };
                answer(Response {
                    sockets: Some(list),
                    ..Response::to(id)
                });
            }
            Kind::AllRooms => {
                let Some(id) = id else { return };
                let mut rooms: BTreeSet<String> = self.rooms(nsp).await.into_iter().collect();
                // A Node server lists each socket's own room too.
                rooms.extend(self.sockets(nsp).await.into_iter().map(|s| s.id));
                answer(Response {
                    rooms: Some(rooms.into_iter().collect()),
                    ..Response::to(id)
                });
            }
            Kind::RemoteJoin | Kind::RemoteLeave => {
                let join = req.kind == Kind::RemoteJoin;
                let (targets, rooms) = self.targets(nsp, &req).await;
                let rooms: Vec<String> = rooms.into_iter().filter(|r| valid_room(r)).collect();
                let mut refused = false;
                for socket in &targets {
                    for room in &rooms {
                        let call = if join {
                            Call::Join {
                                socket: socket.clone(),
                                namespace: nsp.to_owned(),
                                room: room.clone(),
                            }
                        } else {
                            Call::Leave {
                                socket: socket.clone(),
                                namespace: nsp.to_owned(),
                                room: room.clone(),
                            }
                        };
                        let reply = self.control.call(call).await;
                        if reply.status != 200 {
                            refused = true;
                            tracing::info!(namespace = nsp, socket, room, error = %reply.body["error"], "cluster: a remote join or leave was refused");
                        }
                    }
                }
                // The asker hears of a move only when it was done.
                let done = !refused && !rooms.is_empty();
                if let (Some(id), true) = (id, req.sid.is_some() && !targets.is_empty() && done) {
                    answer(Response::to(id));
                }
            }
            Kind::RemoteDisconnect => {
                let (targets, _) = self.targets(nsp, &req).await;
                for socket in &targets {
                    let call = Call::Kick {
                        socket: socket.clone(),
                        namespace: nsp.to_owned(),
                    };
                    self.control.call(call).await;
                }
                if let (Some(id), true) = (id, req.sid.is_some() && !targets.is_empty()) {
                    answer(Response::to(id));
                }
            }
            Kind::ServerSideEmit => {
                // The relay runs no server code: it answers an acknowledged one with who
                // it is, so that the sender's count of answers is complete.
                if let Some(id) = id {
                    let name = req.event.as_ref().map(|e| e.name.clone());
                    answer(Response {
                        kind: Some(Kind::ServerSideEmit.number()),
                        data: Some(json!({
                            "server": "iorelay",
                            "version": env!("CARGO_PKG_VERSION"),
                            "uid": self.uid,
                            "event": name,
                        })),
                        ..Response::to(id)
                    });
                }
            }
            Kind::Broadcast => {
                // Each chosen client is asked for an ack; their answers come back through
                // `acked`, after the count of those asked.
                let mut asked = 0;
                if let Some(event) = req.event.clone() {
                    let to = req.opts.clone().unwrap_or_default();
                    let mut relayed = relayed(nsp, event, to);
                    if let Some(id) = id {
                        let uid = asker.map(str::to_owned);
                        let nsp = nsp.to_owned();
                        self.acks.wait(id, super::acks::Asker { nsp, uid });
                        relayed.ack = Some(id.to_owned());
                    }
                    let reply = self.control.call(Call::Relay(relayed)).await;
                    asked = reply.body["recipients"].as_u64().unwrap_or(0);
                }
                if let Some(id) = id {
                    answer(Response {
                        kind: Some(Kind::BroadcastClientCount.number()),
                        client_count: Some(usize::try_from(asked).unwrap_or(0)),
                        ..Response::to(id)
                    });
                }
            }
            Kind::BroadcastClientCount | Kind::BroadcastAck => {}
        }
    }

    /// A client of the host answered another node's broadcast with acks: the answer goes
    /// to that node (dropped when the request is no longer waited on).
    pub fn acked(&self, acked: crate::relay::asks::Acked) {
        let Some(asker) = self.acks.asker(&acked.request) else {
            return;
        };
        let Some(channels) = self.channels(&asker.nsp) else {
            return;
        };
        match super::acks::packet_of(&acked) {
            Ok(packet) => self.dialect.ack(
                &self.publisher,
                (&self.uid, &asker.nsp, &channels),
                asker.uid.as_deref(),
                &acked.request,
                &packet,
            ),
            Err(err) => tracing::debug!(error = %err, "cluster: a client's ack not passed on"),
        }
    }

    /// The sockets a join, leave or disconnect is about, and the rooms of a join or leave.
    async fn targets(&self, nsp: &str, req: &Request) -> (Vec<String>, Vec<String>) {
        let sockets = self.sockets(nsp).await;
        let chosen: Vec<String> = match (&req.opts, &req.sid) {
            (Some(to), _) => sockets
                .iter()
                .filter(|s| selects(to, s))
                .map(|s| s.id.clone())
                .collect(),
            (None, Some(sid)) => sockets
                .iter()
                .filter(|s| &s.id == sid)
                .map(|s| s.id.clone())
                .collect(),
            (None, None) => Vec::new(),
        };
        let rooms = match &req.room {
            Some(room) => vec![room.clone()],
            None => req.rooms.clone(),
        };
        (chosen, rooms)
    }

    /// The host's sockets of `nsp`.
    async fn sockets(&self, nsp: &str) -> Vec<SocketInfo> {
        let reply = self
            .control
            .call(Call::Sockets {
                namespace: Some(nsp.to_owned()),
                room: None,
            })
            .await;
        serde_json::from_value(reply.body["sockets"].clone()).unwrap_or_default()
    }

    /// The host's room names in `nsp`.
    async fn rooms(&self, nsp: &str) -> Vec<String> {
        let reply = self
            .control
            .call(Call::Rooms {
                namespace: Some(nsp.to_owned()),
            })
            .await;
        reply.body["namespaces"][nsp]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["room"].as_str().map(str::to_owned))
            .collect()
    }

    /// The channels of namespace `nsp`, when it is served.
    pub fn channels(&self, nsp: &str) -> Option<Channels> {
        self.channels.read().get(nsp).cloned()
    }

    /// The namespaces served.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.channels.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Ask the other nodes about namespace `nsp`; their answers.
    pub async fn ask(&self, nsp: &str, what: Ask<'_>) -> Vec<Value> {
        let Some(channels) = self.channels(nsp) else {
            return Vec::new();
        };
        let asker = Asker {
            uid: &self.uid,
            publisher: &self.publisher,
            dialect: &self.dialect,
            conn: &self.conn,
            pending: &self.pending,
            timeout: self.timeout,
        };
        asker.ask(nsp, &channels, what).await
    }

    /// Ask the other nodes to disconnect the sockets of `rooms` (all with none) in `nsp`;
    /// no answer is awaited.
    pub fn disconnect_elsewhere(&self, nsp: &str, rooms: &[String]) {
        let Some(c) = self.channels(nsp) else {
            return;
        };
        self.dialect
            .disconnect(&self.publisher, &self.uid, nsp, &c, rooms);
    }

    /// Send a server API emit of this host to the other nodes.
    pub fn publish_emit(&self, emit: &crate::api::Emit) {
        let Some(c) = self.channels.read().get(&emit.namespace).cloned() else {
            return;
        };
        let mut args: Vec<Box<serde_json::value::RawValue>> = Vec::new();
        for arg in &emit.args {
            if let Ok(raw) = serde_json::value::to_raw_value(arg) {
                args.push(raw);
            }
        }
        let mut attachments = Vec::new();
        for (num, b) in emit.binary.iter().enumerate() {
            if let Some(bytes) = crate::api::decode_binary(b) {
                attachments.push(bytes::Bytes::from(bytes));
                let placeholder = format!(r#"{{"_placeholder":true,"num":{num}}}"#);
                if let Ok(raw) = serde_json::value::RawValue::from_string(placeholder) {
                    args.push(raw);
                }
            }
        }
        let args: Vec<&serde_json::value::RawValue> = args.iter().map(AsRef::as_ref).collect();
        let Ok(data) = format::data_of(&emit.event, &args, &attachments) else {
            return;
        };
        let mut rooms: Vec<&str> = emit.rooms.iter().map(String::as_str).collect();
        rooms.extend(emit.sockets.iter().map(String::as_str));
        let except: Vec<&str> = emit.except.iter().map(String::as_str).collect();
        let nsp = &emit.namespace;
        self.dialect
            .broadcast(&self.uid, nsp, &c, &data, (&rooms, &except), None);
    }
}

fn relayed(nsp: &str, event: format::Event, to: Selection) -> Relayed {
    Relayed {
        namespace: nsp.to_owned(),
        event: event.name,
        args: event.args,
        binary: event
            .attachments
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .collect(),
        rooms: to.rooms,
        except: to.except,
        entry: None,
        ack: None,
    }
}

/// Whether a room named by another node may exist here (the server API's rule).
fn valid_room(room: &str) -> bool {
    crate::api::check_room_name(room).is_ok()
}

fn selects(to: &Selection, socket: &SocketInfo) -> bool {
    let rooms: BTreeSet<&str> = socket.rooms.iter().map(String::as_str).collect();
    to.selects(&socket.id, &rooms)
}

/// A socket as a Node server's `fetchSockets()` describes one.
fn fetched(s: &SocketInfo) -> FetchedSocket {
    let issued = humantime::parse_rfc3339(&s.connected_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut rooms = vec![s.id.clone()];
    rooms.extend(s.rooms.iter().cloned());
    FetchedSocket {
        id: s.id.clone(),
        handshake: Handshake {
            headers: serde_json::Map::new(),
            time: s.connected_at.clone(),
            address: s.address.clone(),
            xdomain: false,
            secure: false,
            issued,
            url: "/socket.io/".to_owned(),
            query: serde_json::Map::new(),
            auth: serde_json::Map::new(),
            transport: s.transport.clone(),
        },
        rooms,
        data: match &s.user {
            Some(user) => json!({ "user": user }),
            None => json!({}),
        },
    }
}
