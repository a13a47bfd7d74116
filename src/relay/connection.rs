//! One Engine.IO session's Socket.IO side: decodes packets (reassembling binary ones),
//! connects and disconnects namespaces, and hands events to [`events`].
//!
//! A malformed packet closes the whole session with a logged reason: the protocol gives
//! no way to recover the stream after one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::task::AbortHandle;

use super::Shared;
use super::events;
use super::socket::{Socket, TokenBucket};
use crate::engine::sid::random_id;
use crate::engine::{
    BoxFuture, CloseReason, Connection, HandshakeInfo, Message, Outgoing, Session, Transport,
};
use crate::socketio::binary::Complete;
use crate::socketio::packet::{self as sio, PacketKind};
use crate::socketio::{Packet, Reassembler};

/// Longest display name kept from the auth payload, in characters.
const MAX_USER_CHARS: usize = 128;

/// The Socket.IO state of one Engine.IO session.
pub struct Conn {
    relay: Arc<Shared>,
    session: Arc<Session>,
    /// Parser state and connected namespaces; only the session's (serialised) inbound
    /// path and its close touch it, never across an await.
    state: Mutex<State>,
    /// Whether any namespace was ever joined (for `connect_timeout`).
    connected_once: AtomicBool,
    /// The `connect_timeout` task, cancelled once a namespace is joined or the session
    /// closes: neither a connected client nor a closed one keeps it (and its timer).
    deadline: Mutex<Option<AbortHandle>>,
}

#[derive(Default)]
struct State {
    reassembler: Reassembler,
    sockets: HashMap<String, Arc<Socket>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("sid", &self.session.sid)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Start serving Socket.IO on a new session.
    pub fn open(relay: Arc<Shared>, session: Arc<Session>, _info: &HandshakeInfo) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            relay,
            session,
            state: Mutex::new(State::default()),
            connected_once: AtomicBool::new(false),
            deadline: Mutex::new(None),
        });
        let weak = Arc::downgrade(&conn);
        let timeout = conn.relay.connect_timeout();
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(conn) = weak.upgrade()
                && !conn.connected_once.load(Ordering::Acquire)
                && !conn.session.is_closed()
            {
                tracing::debug!(sid = %conn.session.sid, "no namespace joined within connect_timeout");
                conn.session.close(CloseReason::ServerClose);
            }
        });
        *conn
            .deadline
            .lock()
            .expect("deadline lock is never poisoned") = Some(deadline.abort_handle());
        conn
    }

    /// Cancel the `connect_timeout` task, if it still runs.
    fn end_deadline(&self) {
        if let Some(task) = self
            .deadline
            .lock()
            .expect("deadline lock is never poisoned")
            .take()
        {
            task.abort();
        }
    }

    fn protocol_error(&self, error: &dyn std::fmt::Display) {
        tracing::info!(sid = %self.session.sid, %error, "malformed socket.io packet, closing connection");
        self.session.close(CloseReason::ProtocolError);
    }

    fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.state
            .lock()
            .expect("conn state lock is never poisoned")
            .sockets
            .get(nsp)
            .cloned()
    }

    async fn receive(&self, msg: Message) {
        let step = {
            let mut state = self
                .state
                .lock()
                .expect("conn state lock is never poisoned");
            match msg {
                Message::Text(text) => match sio::decode(&text, self.relay.max_attachments()) {
                    Ok(packet) => state.reassembler.text(packet).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Message::Binary(data) => state.reassembler.binary(data).map_err(|e| e.to_string()),
            }
        };
        match step {
            Ok(Some(complete)) => self.dispatch(complete).await,
            Ok(None) => {}
            Err(error) => self.protocol_error(&error),
        }
    }

    async fn dispatch(&self, complete: Complete) {
        let Complete {
            packet,
            attachments,
        } = complete;
        match packet.kind {
            PacketKind::Connect => self.connect(packet),
            PacketKind::Disconnect => {
                let socket = self
                    .state
                    .lock()
                    .expect("conn state lock is never poisoned")
                    .sockets
                    .remove(&packet.nsp);
                if let Some(socket) = socket {
                    tracing::debug!(sid = %self.session.sid, nsp = %packet.nsp, "client left namespace");
                    depart(&self.relay, &socket).await;
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent => match self.socket(&packet.nsp) {
                Some(socket) => self.event(&socket, packet, attachments).await,
                None => {
                    tracing::debug!(sid = %self.session.sid, nsp = %packet.nsp, "event for a namespace not joined, ignored")
                }
            },
            // The relay never asks clients for acks; a stray one is harmless.
            PacketKind::Ack | PacketKind::BinaryAck => {}
            PacketKind::ConnectError => {
                self.protocol_error(&"CONNECT_ERROR is a server-only packet");
            }
        }
    }

    async fn event(&self, socket: &Arc<Socket>, packet: Packet, attachments: Vec<Bytes>) {
        let Some(ns) = self.relay.namespace(&socket.nsp) else {
            // The namespace was removed by a reload: the server ends this socket.
            tracing::info!(sid = %self.session.sid, nsp = %socket.nsp, "namespace no longer served, disconnecting socket");
            let removed = self
                .state
                .lock()
                .expect("conn state lock is never poisoned")
                .sockets
                .remove(&*socket.nsp);
            socket.send_text(&sio::encode_disconnect(&socket.nsp));
            if let Some(socket) = removed {
                depart(&self.relay, &socket).await;
            }
            return;
        };
        let policy = ns.policy();
        if let Err(error) = events::handle(
            &self.relay,
            &policy,
            &ns.counters,
            socket,
            &packet,
            attachments,
            Instant::now(),
        )
        .await
        {
            self.protocol_error(&error);
        }
    }

    fn connect(&self, packet: Packet) {
        let nsp = packet.nsp;
        let Some(ns) = self.relay.namespace(&nsp) else {
            tracing::debug!(sid = %self.session.sid, %nsp, "connect to an undeclared namespace refused");
            self.session
                .send_frame(crate::engine::Frame::message(&sio::encode_connect_error(
                    &nsp,
                    "Invalid namespace",
                )));
            return;
        };
        if self.socket(&nsp).is_some() {
            tracing::debug!(sid = %self.session.sid, %nsp, "duplicate connect ignored");
            return;
        }
        let policy = ns.policy();
        let auth = packet.data.unwrap_or_else(empty_object);
        let user = display_name(&auth, &policy.config.user_field);
        let limits = &policy.config.limits;
        let id: Arc<str> = Arc::from(random_id());
        let socket = Arc::new(Socket::new(
            ns.name.clone(),
            id.clone(),
            user,
            auth,
            self.session.clone(),
            TokenBucket::new(limits.events_per_second, limits.burst, Instant::now()),
        ));
        self.state
            .lock()
            .expect("conn state lock is never poisoned")
            .sockets
            .insert(nsp.clone(), socket.clone());
        self.connected_once.store(true, Ordering::Release);
        self.end_deadline();
        socket.send_text(&sio::encode_connect(&nsp, &id));
        self.relay.bus.add_socket(&nsp, socket.recipient.clone());
        if self.session.is_closed() {
            // The session closed while this CONNECT was handled: its close has run
            // already, so leave the bus here.
            let removed = self
                .state
                .lock()
                .expect("conn state lock is never poisoned")
                .sockets
                .remove(&nsp);
            if let Some(socket) = removed {
                let relay = self.relay.clone();
                tokio::spawn(async move { depart(&relay, &socket).await });
            }
            return;
        }
        let transport = self.session.transport().counted_as().as_str();
        *socket
            .counted_as
            .lock()
            .expect("counted_as lock is never poisoned") = transport;
        self.relay
            .meters
            .connections
            .with_label_values(&[&nsp, transport])
            .inc();
        if let Some(greet) = &policy.config.greet {
            let text = sio::encode_event(&nsp, greet, &[&socket.auth], None, 0);
            self.session
                .send(Outgoing::Paced(crate::engine::Frame::message(&text)));
        }
        tracing::debug!(sid = %self.session.sid, %nsp, socket = %id, "socket connected");
    }
}

impl Connection for Conn {
    fn message(&self, msg: Message) -> BoxFuture<'_, ()> {
        Box::pin(self.receive(msg))
    }

    fn upgraded(&self) {
        let sockets: Vec<Arc<Socket>> = self
            .state
            .lock()
            .expect("conn state lock is never poisoned")
            .sockets
            .values()
            .cloned()
            .collect();
        let gauge = &self.relay.meters.connections;
        for socket in sockets {
            let mut counted = socket
                .counted_as
                .lock()
                .expect("counted_as lock is never poisoned");
            if *counted == Transport::Polling.as_str() {
                gauge.with_label_values(&[&socket.nsp, *counted]).dec();
                *counted = Transport::Websocket.as_str();
                gauge.with_label_values(&[&socket.nsp, *counted]).inc();
            }
        }
    }

    fn close(&self, reason: CloseReason) {
        self.end_deadline();
        let sockets: Vec<Arc<Socket>> = self
            .state
            .lock()
            .expect("conn state lock is never poisoned")
            .sockets
            .drain()
            .map(|(_, s)| s)
            .collect();
        if sockets.is_empty() {
            return;
        }
        tracing::debug!(sid = %self.session.sid, reason = reason.as_str(), "connection closed");
        // Close may be called from inside a fan-out (a full queue); leaving rooms takes
        // the bus's locks, so it runs as its own task.
        let relay = self.relay.clone();
        tokio::spawn(async move {
            for socket in sockets {
                depart(&relay, &socket).await;
            }
        });
    }
}

/// Take a socket out of the bus and announce its leaves where presence is on.
async fn depart(relay: &Shared, socket: &Arc<Socket>) {
    let left = relay.bus.remove_socket(&socket.nsp, socket.id()).await;
    let counted = std::mem::take(
        &mut *socket
            .counted_as
            .lock()
            .expect("counted_as lock is never poisoned"),
    );
    if !counted.is_empty() {
        relay
            .meters
            .connections
            .with_label_values(&[&socket.nsp, counted])
            .dec();
    }
    if !left.is_empty() {
        relay.count_rooms(&socket.nsp);
    }
    socket
        .rooms
        .lock()
        .expect("rooms lock is never poisoned")
        .clear();
    let presence = relay
        .namespace(&socket.nsp)
        .is_some_and(|ns| ns.policy().config.presence);
    if presence {
        for (room, count) in left {
            super::control::announce(relay, socket, &room, "leave", count);
        }
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is valid JSON")
}

/// The display name from the auth payload's `field`, when it is a string.
fn display_name(auth: &RawValue, field: &str) -> Option<Arc<str>> {
    let map: HashMap<String, &RawValue> = serde_json::from_str(auth.get()).ok()?;
    let value: String = serde_json::from_str(map.get(field)?.get()).ok()?;
    let trimmed: String = value.trim().chars().take(MAX_USER_CHARS).collect();
    (!trimmed.is_empty()).then(|| Arc::from(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::local::LocalAdapter;
    use crate::config::Config;
    use crate::engine::TransportKind;
    use crate::engine::sid::Sid;
    use crate::relay::Relay;

    /// Waits (bounded) until the runtime has `n` tasks alive, and says how many it has.
    async fn settle_tasks(n: usize) -> usize {
        let tasks = tokio::runtime::Handle::current().metrics();
        for _ in 0..100 {
            if tasks.num_alive_tasks() == n {
                break;
            }
            tokio::task::yield_now().await;
        }
        tasks.num_alive_tasks()
    }

    /// The `connect_timeout` task goes once it is moot: when the session closes, and
    /// when a namespace is joined (a reconnect storm would otherwise leave one task and
    /// timer per connection for the whole timeout).
    #[tokio::test]
    async fn the_connect_deadline_ends_when_moot() {
        let relay = Relay::new(
            &Config::default(),
            Arc::new(LocalAdapter::new()),
            super::super::meters::Meters::default(),
        )
        .expect("relay");
        let info = HandshakeInfo {
            remote: "127.0.0.1:1".parse().expect("address"),
            headers: Default::default(),
            query: Default::default(),
        };
        let open = |sid: &str| {
            let session = Session::new(
                Sid::from_client(sid),
                TransportKind::Websocket,
                8,
                Arc::new(crate::engine::Meters::default()),
            );
            let conn = Conn::open(relay.shared.clone(), session.clone(), &info);
            session.set_connection(conn.clone());
            (session, conn)
        };
        let before = settle_tasks(0).await;

        let (session, _conn) = open("a");
        assert_eq!(
            settle_tasks(before + 1).await,
            before + 1,
            "the deadline's task"
        );
        session.close(CloseReason::ClientClose);
        assert_eq!(settle_tasks(before).await, before, "outlived its session");

        let (session, conn) = open("b");
        assert_eq!(
            settle_tasks(before + 1).await,
            before + 1,
            "the deadline's task"
        );
        conn.message(Message::Text("0".into())).await;
        assert!(conn.connected_once.load(Ordering::Acquire), "joined \"/\"");
        assert_eq!(settle_tasks(before).await, before, "outlived the CONNECT");
        session.close(CloseReason::ClientClose);

        // Closed while the handshake was being answered, before the connection was
        // handed the session: it is closed all the same.
        let session = Session::new(
            Sid::from_client("c"),
            TransportKind::Websocket,
            8,
            Arc::new(crate::engine::Meters::default()),
        );
        let conn = Conn::open(relay.shared.clone(), session.clone(), &info);
        session.close(CloseReason::ServerClose);
        session.set_connection(conn);
        assert_eq!(
            settle_tasks(before).await,
            before,
            "outlived an early close"
        );
    }

    #[test]
    fn display_name_from_auth() {
        let auth = RawValue::from_string(r#"{"name":"  Ann ","x":1}"#.into()).expect("json");
        assert_eq!(display_name(&auth, "name").as_deref(), Some("Ann"));
        assert_eq!(display_name(&auth, "x"), None);
        assert_eq!(display_name(&auth, "missing"), None);
        let long = format!(r#"{{"name":"{}"}}"#, "é".repeat(500));
        let auth = RawValue::from_string(long).expect("json");
        assert_eq!(
            display_name(&auth, "name").map(|n| n.chars().count()),
            Some(MAX_USER_CHARS)
        );
    }
}
