//! One Engine.IO session's Socket.IO side: decodes packets (reassembling binary ones),
//! connects and disconnects namespaces, and hands events to [`events`].
//!
//! What one client can make it hold is bounded here: a binary packet's parts within its
//! namespace's `max_event_size` as they arrive and within `attachment_timeout` in all;
//! the CONNECT `auth` kept within `max_auth_size`; and the rate limits are the
//! connection's per namespace (events, and CONNECTs in a bucket of their own), kept
//! when a socket leaves, so reconnecting does not refill them.
//!
//! What goes wrong with a client's packet is an [`Error`], and [`Error::is_fatal`] decides
//! in one place what it costs: a malformed packet closes the whole session (the protocol
//! gives no way to recover the stream after one), a packet that is merely out of place
//! is logged and dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio::task::AbortHandle;

use super::auth::{Credentials, clean_name};
use super::depart::{depart, depart_closed};
use super::policy::Refusal;
use super::rates::Kept;
use super::shared::{Owner, Shared};
use super::socket::Socket;
use super::{events, reply, restore};
use crate::engine::{
    BoxFuture, CloseReason, Connection, HandshakeInfo, Message, Session, Transport,
};
use crate::socketio::binary::{Complete, ReassemblyError};
use crate::socketio::packet::{self as sio, PacketKind};
use crate::socketio::{Packet, PacketError, Reassembler};

mod connect;

/// Why a client's packet was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A packet that does not parse (its text, or an event's payload).
    #[error("malformed socket.io packet: {0}")]
    Packet(#[from] PacketError),
    /// Binary attachments out of step with the packet that announced them.
    #[error("binary attachments out of step: {0}")]
    Attachment(#[from] ReassemblyError),
    /// CONNECT_ERROR, which only a server sends.
    #[error("CONNECT_ERROR is a server-only packet")]
    ServerOnly,
    /// CONNECT to a namespace the config does not declare (answered with CONNECT_ERROR).
    #[error("connect to the undeclared namespace {0:?} refused")]
    UndeclaredNamespace(String),
    /// A second CONNECT to a namespace the session already joined.
    #[error("duplicate connect to {0:?} ignored")]
    DuplicateConnect(String),
    /// An event for a namespace the session did not join.
    #[error("event for the namespace {0:?}, which was not joined, ignored")]
    NotJoined(String),
    /// An attachment that would take the worker's incomplete binary packets over
    /// `engine.pending_budget`.
    #[error("incomplete binary packets over the worker's pending_budget")]
    OverBudget,
}

impl Error {
    /// Whether the session must end: after a packet that broke the protocol the stream
    /// cannot be trusted; one that is only out of place costs nothing but itself.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Packet(_) | Error::Attachment(_) | Error::ServerOnly | Error::OverBudget => true,
            Error::UndeclaredNamespace(_) | Error::DuplicateConnect(_) | Error::NotJoined(_) => {
                false
            }
        }
    }
}

/// The Socket.IO state of one Engine.IO session.
pub struct Conn {
    relay: Arc<Shared>,
    session: Arc<Session>,
    /// The handshake's cookies and authorization, for namespaces with `auth`.
    credentials: Credentials,
    /// Parser state and connected namespaces; only the session's (serialised) inbound
    /// path and its close touch it, never across an await.
    state: Mutex<State>,
    /// Whether any namespace was ever joined (for `connect_timeout`).
    connected_once: AtomicBool,
    /// The `connect_timeout` task, cancelled once a namespace is joined or the session
    /// closes: neither a connected client nor a closed one keeps it (and its timer).
    deadline: Mutex<Option<AbortHandle>>,
    /// The `attachment_timeout` task of the binary packet waiting for its attachments:
    /// one that never gets its last attachment closes the session instead of being kept.
    attachments_due: Mutex<Option<AbortHandle>>,
    /// The client's address, given to each of its sockets.
    address: IpAddr,
    /// The handshake's `Origin`, kept only when some namespace's `meta` asks for it.
    origin: Option<Arc<str>>,
    /// Itself, handed to the server API's socket registry as each socket's owner.
    me: Weak<Conn>,
}

#[derive(Default)]
struct State {
    reassembler: Reassembler,
    sockets: HashMap<String, Arc<Socket>>,
    /// The rate limits of each namespace this connection left, for its next CONNECT.
    rates: Kept,
}

impl State {
    /// Take the socket of `nsp` out, keeping its rate limits for a later CONNECT.
    fn leave(&mut self, nsp: &str, limits: Option<&crate::config::Limits>) -> Option<Arc<Socket>> {
        let socket = self.sockets.remove(nsp)?;
        if let Some(limits) = limits {
            self.rates.keep(nsp, &socket, limits);
        }
        Some(socket)
    }
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
    pub fn open(relay: Arc<Shared>, session: Arc<Session>, info: &HandshakeInfo) -> Arc<Conn> {
        let credentials = if relay.reads_handshake() {
            Credentials::from_headers(&info.headers)
        } else {
            Credentials::default()
        };
        let origin = if relay.keeps_origin() {
            kept_origin(&info.headers)
        } else {
            None
        };
        let conn = Arc::new_cyclic(|me| Conn {
            relay,
            session,
            credentials,
            state: Mutex::new(State::default()),
            connected_once: AtomicBool::new(false),
            deadline: Mutex::new(None),
            attachments_due: Mutex::new(None),
            address: info.client,
            origin,
            me: me.clone(),
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
        *conn.deadline.lock() = Some(deadline.abort_handle());
        conn
    }

    /// A claim that did not restore its socket: counted and logged; the CONNECT goes on
    /// as a new socket.
    fn missed(&self, nsp: &str, miss: restore::Miss) {
        tracing::debug!(sid = %self.session.sid, nsp, reason = miss.label(), "socket not recovered");
        self.relay
            .meters
            .recoveries
            .with_label_values(&[nsp, miss.label()])
            .inc();
    }

    /// Cancel the `connect_timeout` task, if it still runs.
    fn end_deadline(&self) {
        if let Some(task) = self.deadline.lock().take() {
            task.abort();
        }
    }

    /// Act on a packet that went wrong: the one place that decides what it costs.
    fn failed(&self, error: &Error) {
        if error.is_fatal() {
            tracing::info!(sid = %self.session.sid, %error, "protocol violation, closing connection");
            self.session.close(CloseReason::ProtocolError);
        } else {
            tracing::debug!(sid = %self.session.sid, %error, "packet not acted on");
        }
    }

    fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        self.state.lock().sockets.get(nsp).cloned()
    }

    async fn receive(&self, msg: Message) {
        if let Err(error) = self.step(msg).await {
            self.failed(&error);
        }
    }

    /// Decode one message and, once a packet is complete, act on it.
    async fn step(&self, msg: Message) -> Result<(), Error> {
        let (complete, started) = match msg {
            Message::Text(text) => {
                let packet = sio::decode(&text, self.relay.max_attachments())?;
                // A binary packet may hold no more than its namespace lets an event be
                // (an undeclared namespace: nothing), checked as its parts arrive.
                let budget = self.relay.namespace(&packet.nsp).map_or(0, |ns| {
                    usize::try_from(ns.policy().config.limits.max_event_size.0)
                        .unwrap_or(usize::MAX)
                });
                let mut state = self.state.lock();
                let before = state.reassembler.held();
                let complete = state.reassembler.text_within(packet, budget);
                // A text packet while waiting drops the pending one.
                self.relay
                    .release_pending(before.saturating_sub(state.reassembler.held()));
                let complete = complete?;
                let started = complete.is_none().then(|| state.reassembler.started());
                (complete, started)
            }
            Message::Binary(data) => {
                let mut state = self.state.lock();
                let before = state.reassembler.held();
                let len = data.len();
                if state.reassembler.is_waiting() && !self.relay.hold_pending(len) {
                    if let Some(nsp) = state.reassembler.pending_nsp() {
                        self.relay
                            .meters
                            .refused
                            .with_label_values(&[nsp, "memory_budget"])
                            .inc();
                    }
                    return Err(Error::OverBudget);
                }
                let reserved = if state.reassembler.is_waiting() {
                    len
                } else {
                    0
                };
                let complete = state.reassembler.binary(data);
                // What was reserved and is not held (a completed or oversized packet).
                self.relay
                    .release_pending((before + reserved).saturating_sub(state.reassembler.held()));
                (complete?, None)
            }
        };
        if let Some(generation) = started {
            self.attachments_due(generation);
        }
        match complete {
            Some(complete) => {
                self.end_attachments_due();
                self.dispatch(complete).await
            }
            None => Ok(()),
        }
    }

    /// Close the session when the binary packet `generation` still waits for attachments
    /// after `attachment_timeout`.
    fn attachments_due(&self, generation: u64) {
        let weak = self.me.clone();
        let timeout = self.relay.attachment_timeout();
        let task = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(conn) = weak.upgrade() else {
                return;
            };
            let stalled = {
                let state = conn.state.lock();
                state.reassembler.is_waiting() && state.reassembler.started() == generation
            };
            if stalled && !conn.session.is_closed() {
                tracing::info!(sid = %conn.session.sid, "binary packet incomplete after attachment_timeout, closing connection");
                conn.session.close(CloseReason::ProtocolError);
            }
        });
        if let Some(old) = self.attachments_due.lock().replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Cancel the `attachment_timeout` task, if one runs.
    fn end_attachments_due(&self) {
        if let Some(task) = self.attachments_due.lock().take() {
            task.abort();
        }
    }

    async fn dispatch(&self, complete: Complete) -> Result<(), Error> {
        let Complete {
            packet,
            attachments,
            oversized,
        } = complete;
        match packet.kind {
            PacketKind::Connect => self.connect(packet).await,
            PacketKind::Disconnect => {
                let policy = self.relay.namespace(&packet.nsp).map(|ns| ns.policy());
                let limits = policy.as_ref().map(|p| &p.config.limits);
                let socket = self.state.lock().leave(&packet.nsp, limits);
                if let Some(socket) = socket {
                    tracing::debug!(sid = %self.session.sid, nsp = %packet.nsp, "client left namespace");
                    depart(&self.relay, &socket).await;
                }
                Ok(())
            }
            PacketKind::Event | PacketKind::BinaryEvent => match self.socket(&packet.nsp) {
                Some(socket) if oversized => {
                    // Its attachments were dropped as they came; refused as any event
                    // over max_event_size is.
                    let event = packet.event()?;
                    if let Some(ns) = self.relay.namespace(&socket.nsp) {
                        ns.counters.received.inc();
                    }
                    reply::refuse(
                        &self.relay,
                        &socket,
                        &event.name,
                        packet.id,
                        Refusal::TooLarge,
                    );
                    Ok(())
                }
                Some(socket) => self.event(&socket, packet, attachments).await,
                None => Err(Error::NotJoined(packet.nsp)),
            },
            // Answers to broadcasts with acks; any other is harmless, and dropped.
            PacketKind::Ack | PacketKind::BinaryAck => {
                if let Some(socket) = self.socket(&packet.nsp) {
                    let args = packet.data.as_deref();
                    super::asks::answered(&self.relay, &socket, packet.id, args, &attachments);
                }
                Ok(())
            }
            PacketKind::ConnectError => Err(Error::ServerOnly),
        }
    }

    async fn event(
        &self,
        socket: &Arc<Socket>,
        packet: Packet,
        attachments: Vec<Bytes>,
    ) -> Result<(), Error> {
        let Some(ns) = self.relay.namespace(&socket.nsp) else {
            // The namespace was removed by a reload: the server ends this socket.
            tracing::info!(sid = %self.session.sid, nsp = %socket.nsp, "namespace no longer served, disconnecting socket");
            let removed = self.state.lock().sockets.remove(&*socket.nsp);
            socket.send_text(&sio::encode_disconnect(&socket.nsp));
            if let Some(socket) = removed {
                depart(&self.relay, &socket).await;
            }
            return Ok(());
        };
        let policy = ns.policy();
        events::handle(
            &self.relay,
            &policy,
            &ns.counters,
            socket,
            &packet,
            attachments,
            Instant::now(),
        )
        .await?;
        Ok(())
    }
}

impl Connection for Conn {
    fn message(&self, msg: Message) -> BoxFuture<'_, ()> {
        Box::pin(self.receive(msg))
    }

    fn upgraded(&self) {
        let sockets: Vec<Arc<Socket>> = self.state.lock().sockets.values().cloned().collect();
        let gauge = &self.relay.meters.connections;
        for socket in sockets {
            let mut counted = socket.counted_as.lock();
            if *counted == Transport::Polling.as_str() {
                gauge.with_label_values(&[&socket.nsp, *counted]).dec();
                *counted = Transport::Websocket.as_str();
                gauge.with_label_values(&[&socket.nsp, *counted]).inc();
            }
        }
    }

    fn close(&self, reason: CloseReason) {
        self.end_deadline();
        self.end_attachments_due();
        let sockets: Vec<Arc<Socket>> = {
            let mut state = self.state.lock();
            let pending = std::mem::take(&mut state.reassembler);
            self.relay.release_pending(pending.held());
            state.sockets.drain().map(|(_, s)| s).collect()
        };
        if sockets.is_empty() {
            return;
        }
        tracing::debug!(sid = %self.session.sid, reason = reason.as_str(), "connection closed");
        // Close may be called from inside a fan-out (a full queue); leaving rooms takes
        // the bus's locks, so it runs as its own task.
        let relay = self.relay.clone();
        tokio::spawn(async move {
            for socket in sockets {
                depart_closed(&relay, &socket, reason).await;
            }
        });
    }
}

impl Owner for Conn {
    fn disconnect(&self, nsp: &str) -> BoxFuture<'_, bool> {
        let policy = self.relay.namespace(nsp).map(|ns| ns.policy());
        let limits = policy.as_ref().map(|p| &p.config.limits);
        let removed = self.state.lock().leave(nsp, limits);
        Box::pin(async move {
            let Some(socket) = removed else {
                return false;
            };
            tracing::debug!(sid = %self.session.sid, nsp = %socket.nsp, socket = %socket.id(), "socket disconnected by the server API");
            socket.send_text(&sio::encode_disconnect(&socket.nsp));
            depart(&self.relay, &socket).await;
            true
        })
    }
}

/// The longest `Origin` kept (scheme, host and port fit easily).
const MAX_ORIGIN: usize = 256;

/// The handshake's `Origin`, when it is short printable text.
fn kept_origin(headers: &hyper::HeaderMap) -> Option<Arc<str>> {
    let value = headers.get(hyper::header::ORIGIN)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= MAX_ORIGIN).then(|| Arc::from(value))
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is valid JSON")
}

/// The display name from the auth payload's `field`, when it is a string.
fn display_name(auth: &RawValue, field: &str) -> Option<Arc<str>> {
    let map: HashMap<String, &RawValue> = serde_json::from_str(auth.get()).ok()?;
    let value: String = serde_json::from_str(map.get(field)?.get()).ok()?;
    clean_name(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::local::LocalAdapter;
    use crate::config::Config;
    use crate::engine::TransportKind;
    use crate::engine::sid::Sid;
    use crate::relay::Relay;

    /// A relay on the local bus, and sessions opened on it as the engine opens them.
    struct Harness {
        relay: Relay,
        info: HandshakeInfo,
    }

    impl Harness {
        fn new(config: &Config) -> Harness {
            let relay = Relay::new(
                config,
                Arc::new(LocalAdapter::new()),
                super::super::meters::Meters::default(),
            )
            .expect("relay");
            let info = HandshakeInfo {
                remote: "127.0.0.1:1".parse().expect("address"),
                client: "127.0.0.1".parse().expect("address"),
                headers: Default::default(),
                query: Default::default(),
            };
            Harness { relay, info }
        }

        fn shared(&self) -> Arc<Shared> {
            self.relay.shared().clone()
        }

        /// A WebSocket session with room for 16 queued items.
        fn session(&self, sid: &str) -> Arc<Session> {
            Session::new(
                Sid::from_client(sid),
                TransportKind::Websocket,
                16,
                Arc::new(crate::engine::Meters::default()),
                crate::engine::budget::Budget::unlimited(),
            )
        }

        /// A session with its connection, handed over as the engine does.
        fn open(&self, sid: &str) -> (Arc<Session>, Arc<Conn>) {
            let session = self.session(sid);
            let conn = Conn::open(self.shared(), session.clone(), &self.info);
            session.set_connection(conn.clone());
            (session, conn)
        }
    }

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
        let relay = Harness::new(&Config::default());
        let before = settle_tasks(0).await;

        let (session, _conn) = relay.open("a");
        assert_eq!(
            settle_tasks(before + 1).await,
            before + 1,
            "the deadline's task"
        );
        session.close(CloseReason::ClientClose);
        assert_eq!(settle_tasks(before).await, before, "outlived its session");

        let (session, conn) = relay.open("b");
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
        let session = relay.session("c");
        let conn = Conn::open(relay.shared(), session.clone(), &relay.info);
        session.close(CloseReason::ServerClose);
        session.set_connection(conn);
        assert_eq!(
            settle_tasks(before).await,
            before,
            "outlived an early close"
        );
    }

    /// Only a packet that breaks the protocol ends the session; one that is merely out
    /// of place (an undeclared or unjoined namespace, a second CONNECT) is dropped.
    #[tokio::test]
    async fn only_protocol_violations_close_the_session() {
        let relay = Harness::new(&Config::default());
        let (session, conn) = relay.open("a");
        for harmless in ["0/undeclared,", "2/undeclared,[\"x\"]", "0", "0", "30[]"] {
            conn.message(Message::Text(harmless.into())).await;
            assert!(!session.is_closed(), "{harmless} closed the session");
        }
        for (sid, violation) in [("b", "4{}"), ("c", "9"), ("d", "2")] {
            let (session, conn) = relay.open(sid);
            conn.message(Message::Text(violation.into())).await;
            assert_eq!(
                session.close_reason(),
                Some(CloseReason::ProtocolError),
                "{violation} left the session open"
            );
        }
        session.close(CloseReason::ClientClose);
    }

    /// `connect_timeout`, on a paused clock: a session that joins no namespace is closed
    /// once it has passed, not before; one that joined is left alone.
    #[tokio::test(start_paused = true)]
    async fn a_session_that_joins_nothing_is_closed_at_connect_timeout() {
        let mut config = Config::default();
        config.engine.connect_timeout = std::time::Duration::from_secs(10);
        let relay = Harness::new(&config);
        let (idle, _idle_conn) = relay.open("idle");
        let (joined, joined_conn) = relay.open("joined");
        joined_conn.message(Message::Text("0".into())).await;

        tokio::time::sleep(std::time::Duration::from_millis(9_999)).await;
        assert!(!idle.is_closed(), "closed before connect_timeout");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        assert_eq!(idle.close_reason(), Some(CloseReason::ServerClose));
        assert!(
            !joined.is_closed(),
            "a session that joined a namespace stays"
        );
        joined.close(CloseReason::ClientClose);
    }

    /// A CONNECT that its namespace's auth refuses costs only itself: no socket, the
    /// refusal counted by reason, the session and its other namespaces untouched.
    #[tokio::test]
    async fn an_auth_refusal_leaves_the_session_alone() {
        let config: Config = toml::from_str(
            r#"
            [namespaces."/"]
            [namespaces."/private".auth.jwt]
            secret = "a-secret-of-at-least-32-bytes-long"
            [namespaces."/private".auth]
            required = true
            "#,
        )
        .expect("config");
        let relay = Harness::new(&config);
        assert!(relay.shared().reads_handshake());
        let (session, conn) = relay.open("a");
        conn.message(Message::Text("0".into())).await;
        conn.message(Message::Text(r#"0/private,{"token":"x.y.z"}"#.into()))
            .await;
        conn.message(Message::Text("0/private,".into())).await;
        assert!(!session.is_closed());
        assert!(conn.socket("/").is_some());
        assert!(conn.socket("/private").is_none());
        let refused = &relay.shared().meters.auth_refused;
        assert_eq!(
            refused.with_label_values(&["/private", "malformed"]).get(),
            1
        );
        assert_eq!(refused.with_label_values(&["/private", "missing"]).get(), 1);
        session.close(CloseReason::ClientClose);

        // Without auth that reads them, a connection keeps no handshake headers.
        let open = Harness::new(&Config::default());
        assert!(!open.shared().reads_handshake());
    }

    /// Issue 13, item 1: leaving a namespace and connecting again does not refill its
    /// rate limit, and CONNECTs are limited by a bucket of their own.
    #[tokio::test]
    async fn reconnecting_a_namespace_keeps_its_rate_limit() {
        let config: Config = toml::from_str(
            r#"
            [namespaces."/"]
            route = "discard"
            [namespaces."/".limits]
            events_per_second = 1
            burst = 2
            "#,
        )
        .expect("config");
        let relay = Harness::new(&config);
        let (session, conn) = relay.open("a");
        let refused = || {
            relay
                .shared()
                .meters
                .refused
                .with_label_values(&["/", "rate_limited"])
                .get()
        };
        for round in 0..2 {
            conn.message(Message::Text("0".into())).await;
            assert!(conn.socket("/").is_some(), "connect {round}");
            conn.message(Message::Text(r#"2["x"]"#.into())).await;
            conn.message(Message::Text("1".into())).await;
        }
        assert_eq!(refused(), 0, "two of each within the burst");
        conn.message(Message::Text("0".into())).await;
        assert!(
            conn.socket("/").is_none(),
            "a third CONNECT at once is over the burst"
        );
        assert_eq!(refused(), 1);
        session.close(CloseReason::ClientClose);

        // The events bucket is the connection's: a new socket finds it spent.
        let (session, conn) = relay.open("b");
        conn.message(Message::Text("0".into())).await;
        for _ in 0..2 {
            conn.message(Message::Text(r#"2["x"]"#.into())).await;
        }
        conn.message(Message::Text("1".into())).await;
        conn.message(Message::Text("0".into())).await;
        assert!(conn.socket("/").is_some());
        conn.message(Message::Text(r#"2["x"]"#.into())).await;
        assert_eq!(
            refused(),
            2,
            "the reconnected socket's event was over the limit"
        );
        session.close(CloseReason::ClientClose);
    }

    /// Issue 13, item 3: the worker's incomplete binary packets stay within
    /// `engine.pending_budget`; the client that would go over it is disconnected, and
    /// what a packet held is given back when it completes or its connection closes.
    #[tokio::test]
    async fn incomplete_binary_packets_share_the_pending_budget() {
        let mut config = Config::default();
        config.engine.pending_budget = crate::config::Size(100);
        let relay = Harness::new(&config);
        let shared = relay.shared();
        let announce = r#"452-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let (a, a_conn) = relay.open("a");
        let (b, b_conn) = relay.open("b");
        for conn in [&a_conn, &b_conn] {
            conn.message(Message::Text("0".into())).await;
            conn.message(Message::Text(announce[1..].to_owned())).await;
        }
        a_conn
            .message(Message::Binary(Bytes::from(vec![0u8; 60])))
            .await;
        assert_eq!(shared.pending(), 60);
        b_conn
            .message(Message::Binary(Bytes::from(vec![0u8; 60])))
            .await;
        assert_eq!(b.close_reason(), Some(CloseReason::ProtocolError));
        assert_eq!(
            shared.pending(),
            60,
            "the refused attachment is not counted"
        );
        a_conn
            .message(Message::Binary(Bytes::from(vec![0u8; 10])))
            .await;
        assert!(!a.is_closed());
        assert_eq!(
            shared.pending(),
            0,
            "a complete packet holds nothing pending"
        );

        // A connection closed mid-packet gives back what it held.
        a_conn
            .message(Message::Text(announce[1..].to_owned()))
            .await;
        a_conn
            .message(Message::Binary(Bytes::from(vec![0u8; 40])))
            .await;
        assert_eq!(shared.pending(), 40);
        a.close(CloseReason::ClientClose);
        assert_eq!(shared.pending(), 0);
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
            Some(super::super::auth::MAX_USER_CHARS)
        );
    }
}
