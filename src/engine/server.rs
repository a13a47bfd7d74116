//! The Engine.IO endpoint: parses each request once, dispatches it with one match, and
//! runs the polling and WebSocket transports of the sessions it creates.
//!
//! Owns the session table and the transport tasks. Does not own routing (the `http`
//! module decides which requests reach it) nor anything above Engine.IO messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::error::RequestError;
use super::meters::Meters;
use super::outbox::{self, Flusher, Leftover};
use super::outgoing::Outgoing;
use super::session::{CloseReason, Handler, HandshakeInfo, Message, Session, heartbeat};
use super::sid::Sid;
use super::transport::{Transport, TransportKind};
use super::wsio::{self, ReadSide, WriteSide, WsSocket};
use super::{Frame, Packet, payload};

/// Most packets accepted in one polling POST body; far above what a client batches.
const MAX_PACKETS_PER_POST: usize = 10_000;
/// Most queued items one polling GET carries.
const MAX_BATCH_ITEMS: usize = 256;
/// Byte budget of one polling GET response; the rest waits for the next poll.
const MAX_POLL_BYTES: usize = 1 << 20;
/// Read buffer of each WebSocket; it grows only while a larger message is read.
const WS_READ_BUFFER: usize = 1024;
/// How long a session the client closed over polling stays listed for its last GET.
const LINGER: Duration = Duration::from_millis(200);
/// How long a closing WebSocket may take to accept our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Engine.IO settings, reloadable as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// Deadline for the pong, from when the ping is queued.
    pub ping_timeout: Duration,
    /// Largest POST body or WebSocket message accepted from a client.
    pub max_payload: usize,
    /// Deadline for each step of a polling → WebSocket upgrade.
    pub upgrade_timeout: Duration,
    /// Whether HTTP long-polling is enabled.
    pub polling: bool,
    /// Whether WebSocket is enabled.
    pub websocket: bool,
    /// Outbound queue length per session.
    pub write_queue: usize,
    /// Outbound bytes queued per session before it counts as a slow consumer.
    pub write_budget: usize,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// The worker this engine runs in (its id prefixes session ids), in a multi-worker
    /// daemon.
    pub node: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            polling: true,
            websocket: true,
            write_queue: 1024,
            write_budget: 4 << 20,
            max_sessions: 100_000,
            node: None,
        }
    }
}

/// An Engine.IO server: sessions plus the upper layer's handler.
pub struct Engine {
    /// Current settings; a reload swaps the `Arc`, sessions read it when they need it.
    settings: RwLock<Arc<Settings>>,
    /// Live sessions by id, for polling requests and upgrades to find theirs.
    sessions: RwLock<HashMap<Sid, Arc<Session>>>,
    /// The most sessions live at once since [`Engine::take_session_peak`] last asked.
    session_peak: AtomicUsize,
    /// Creates the upper layer's connection for each new session.
    handler: Arc<dyn Handler>,
    /// Instruments, shared with every session.
    meters: Arc<Meters>,
    /// WebSocket writer tasks still running (they write the close frame last).
    websockets: Arc<AtomicUsize>,
    /// Writes the WebSocket sessions' outboxes (started with the first WebSocket).
    flusher: Arc<Flusher>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.session_count())
            .finish()
    }
}

impl Engine {
    /// A new engine handing sessions to `handler`.
    pub fn new(settings: Settings, handler: Arc<dyn Handler>, meters: Meters) -> Arc<Engine> {
        let flusher = Flusher::new(meters.websocket.clone());
        Arc::new(Engine {
            settings: RwLock::new(Arc::new(settings)),
            sessions: RwLock::new(HashMap::new()),
            session_peak: AtomicUsize::new(0),
            handler,
            meters: Arc::new(meters),
            websockets: Arc::new(AtomicUsize::new(0)),
            flusher,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .expect("settings lock is never poisoned")
            .clone()
    }

    /// Replace the settings; new sessions and new heartbeats use them.
    pub fn reconfigure(&self, settings: Settings) {
        *self
            .settings
            .write()
            .expect("settings lock is never poisoned") = Arc::new(settings);
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions
            .read()
            .expect("sessions lock is never poisoned")
            .len()
    }

    /// The most sessions live at once since the last call (or since the engine started),
    /// and the number live now, from which the next peak is counted.
    pub fn take_session_peak(&self) -> (usize, usize) {
        let table = self
            .sessions
            .read()
            .expect("sessions lock is never poisoned");
        let live = table.len();
        // Under the read lock: no session is added in between (adding takes the write
        // lock), so no peak is lost; and the mark is never below the sessions live (it
        // was raised at each insert), so it is the peak as it stands.
        let peak = self.session_peak.swap(live, Ordering::Relaxed);
        (peak, live)
    }

    /// WebSockets whose writer has not finished yet.
    pub fn open_websockets(&self) -> usize {
        self.websockets.load(Ordering::Acquire)
    }

    /// Close every session (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let all: Vec<Arc<Session>> = self
            .sessions
            .read()
            .expect("sessions lock is never poisoned")
            .values()
            .cloned()
            .collect();
        for s in all {
            s.close(reason);
        }
    }

    fn forget(&self, sid: &Sid) {
        self.sessions
            .write()
            .expect("sessions lock is never poisoned")
            .remove(sid);
    }

    fn session(&self, sid: &str) -> Option<Arc<Session>> {
        let session = self
            .sessions
            .read()
            .expect("sessions lock is never poisoned")
            .get(&Sid::from_client(sid))
            .cloned()?;
        if session.is_closed() {
            // Lingering after the client's own CLOSE; `dispatch` answers for it.
            return Some(session);
        }
        (!session.expire_if_overdue(tokio::time::Instant::now())).then_some(session)
    }

    /// Create and register a session, or refuse when at capacity.
    fn create_session(
        self: &Arc<Self>,
        kind: TransportKind,
        settings: &Settings,
    ) -> Result<Arc<Session>, RequestError> {
        let session = Session::new(
            Sid::random_for(settings.node),
            kind,
            settings.write_queue,
            self.meters.clone(),
        );
        session.set_byte_budget(settings.write_budget);
        {
            let mut table = self
                .sessions
                .write()
                .expect("sessions lock is never poisoned");
            if table.len() >= settings.max_sessions {
                tracing::warn!(
                    limit = settings.max_sessions,
                    "connection refused: session limit reached"
                );
                return Err(RequestError::Unavailable);
            }
            table.insert(session.sid.clone(), session.clone());
            self.session_peak.fetch_max(table.len(), Ordering::Relaxed);
        }
        let label = kind.counted_as().as_str();
        self.meters.opened.with_label_values(&[label]).inc();
        self.meters.sessions.with_label_values(&[label]).inc();
        let engine = Arc::downgrade(self);
        session.set_on_close(Box::new(move |session| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if session.linger.load(Ordering::Acquire) {
                let sid = session.sid.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LINGER).await;
                    engine.forget(&sid);
                });
            } else {
                engine.forget(&session.sid);
            }
        }));
        Ok(session)
    }

    /// Hand a new session to the upper layer and start its heartbeat.
    fn start_session(&self, session: &Arc<Session>, info: &HandshakeInfo, settings: &Settings) {
        let conn = self.handler.open(session, info);
        session.set_connection(conn);
        tokio::spawn(heartbeat(
            session.clone(),
            settings.ping_interval,
            settings.ping_timeout,
        ));
    }

    /// Serve one request under the Engine.IO path.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        match self.dispatch(req, remote).await {
            Ok(resp) => resp,
            Err(err) => {
                tracing::debug!(error = %err, "engine.io request refused");
                err.response()
            }
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Result<Response<Full<Bytes>>, RequestError> {
        let settings = self.settings();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let transport = match query.get("transport").map(String::as_str) {
            Some("polling") if settings.polling => Transport::Polling,
            Some("websocket") if settings.websocket => Transport::Websocket,
            _ => return Err(RequestError::UnknownTransport),
        };
        let upgrade = is_websocket_upgrade(&req);
        match query.get("sid") {
            Some(sid) => {
                let session = self.session(sid).ok_or(RequestError::UnknownSid)?;
                if session.is_closed() {
                    // Only a lingering session is still listed: one GET gets its NOOP.
                    self.forget(&session.sid);
                    if transport == Transport::Polling && req.method() == Method::GET {
                        let mut body = Vec::new();
                        payload::encode([&Packet::Noop.encode()], &mut body);
                        return Ok(text_response(body));
                    }
                    return Err(RequestError::UnknownSid);
                }
                match (transport, req.method()) {
                    (Transport::Websocket, _) if upgrade => {
                        let probing = session.transport() == TransportKind::Polling;
                        let mode = if probing {
                            session.set_transport(TransportKind::Probing);
                            Upgrade::Existing(session.clone())
                        } else {
                            // The reference server accepts the socket, then closes it.
                            Upgrade::Refuse
                        };
                        let answer = self.upgrade_websocket(req, mode, &settings, remote, query);
                        if probing && answer.is_err() {
                            // A malformed upgrade request: the session stays on polling.
                            abandon_upgrade(&session);
                        }
                        answer
                    }
                    (Transport::Polling, &Method::GET)
                        if session.transport() != TransportKind::Websocket =>
                    {
                        Ok(poll(session).await)
                    }
                    (Transport::Polling, &Method::POST)
                        if session.transport() != TransportKind::Websocket =>
                    {
                        post(session, req, &settings).await
                    }
                    _ => Err(RequestError::BadRequest),
                }
            }
            None => {
                if req.method() != Method::GET {
                    return Err(RequestError::BadHandshakeMethod);
                }
                if query.get("EIO").map(String::as_str) != Some("4") {
                    return Err(RequestError::UnsupportedProtocolVersion);
                }
                let info = HandshakeInfo {
                    remote,
                    headers: req.headers().clone(),
                    query,
                };
                match transport {
                    Transport::Websocket if upgrade => {
                        self.upgrade_websocket(req, Upgrade::Fresh, &settings, remote, info.query)
                    }
                    Transport::Websocket => Err(RequestError::BadRequest),
                    Transport::Polling => {
                        let session = self.create_session(TransportKind::Polling, &settings)?;
                        let open = open_packet(&session.sid, true, &settings);
                        let mut body = Vec::with_capacity(open.len());
                        payload::encode([&open], &mut body);
                        self.start_session(&session, &info, &settings);
                        tracing::debug!(sid = %session.sid, %remote, transport = "polling", "session opened");
                        Ok(text_response(body))
                    }
                }
            }
        }
    }

    /// Answer a WebSocket request with 101 and run the socket in a task: a new session,
    /// the upgrade of a polling one, or (for a session already on WebSocket) a close.
    fn upgrade_websocket(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        mode: Upgrade,
        settings: &Arc<Settings>,
        remote: SocketAddr,
        query: HashMap<String, String>,
    ) -> Result<Response<Full<Bytes>>, RequestError> {
        let key = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(RequestError::BadRequest)?;
        if req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(RequestError::BadRequest);
        }
        let accept = derive_accept_key(key.as_bytes());
        // A new session is created before answering 101 so that a full server refuses
        // with an HTTP error the client can see.
        let session = match mode {
            Upgrade::Fresh => {
                Upgrade::New(self.create_session(TransportKind::Websocket, settings)?)
            }
            other => other,
        };
        let info = HandshakeInfo {
            remote,
            headers: req.headers().clone(),
            query,
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let engine = self.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(err) => {
                    tracing::debug!(error = %err, "websocket upgrade failed");
                    session.give_up();
                    return;
                }
            };
            let Some((socket, early)) = unwrap_upgraded(upgraded) else {
                tracing::error!("websocket over a connection that is neither TCP nor Unix");
                session.give_up();
                return;
            };
            let (read, write) = socket.split();
            // Small read chunks keep idle connections cheap (tungstenite preallocates the
            // read buffer). tungstenite only reads: the writer frames its own output.
            let config = WebSocketConfig::default()
                .read_buffer_size(WS_READ_BUFFER)
                .max_message_size(Some(settings.max_payload))
                .max_frame_size(Some(settings.max_payload));
            // Boxed: moved through three nested futures, a stream held by value would take
            // its room in each of their states (about 1 KiB per idle connection).
            let ws = Box::new(
                WebSocketStream::from_partially_read(read, early, Role::Server, Some(config)).await,
            );
            match session {
                Upgrade::New(s) => {
                    engine
                        .run_new_websocket(s, ws, write, info, &settings)
                        .await
                }
                Upgrade::Existing(s) => run_upgrade(s, ws, write, &settings, &engine).await,
                Upgrade::Fresh | Upgrade::Refuse => {
                    close_websocket(&write, CloseCode::Normal, Vec::new()).await
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Full::new(Bytes::new()))
            .map_err(|_| RequestError::BadRequest)
    }

    async fn run_new_websocket(
        &self,
        session: Arc<Session>,
        stream: Ws,
        sink: WriteSide,
        info: HandshakeInfo,
        settings: &Settings,
    ) {
        let open = open_packet(&session.sid, false, settings);
        if write_frame(&sink, &open).await.is_err() {
            session.close(CloseReason::TransportError);
            return;
        }
        self.start_session(&session, &info, settings);
        tracing::debug!(sid = %session.sid, remote = %info.remote, transport = "websocket", "session opened");
        // Not kept for the connection's life: its header values are slices of hyper's
        // 8 KiB read buffer, which they would keep allocated.
        drop(info);
        let carrier = session.carrier.clone().lock_owned().await;
        tokio::spawn(counted(
            self.websockets.clone(),
            write_websocket(session.clone(), sink, carrier, self.flusher.clone()),
        ));
        read_websocket(session, stream).await;
    }
}

/// Take the socket back from hyper, with the bytes it read past the upgrade request;
/// `None` for a connection that is neither TCP nor Unix (the listeners make no other).
///
/// hyper's `Upgraded` keeps its whole HTTP read buffer (8 KiB) alive behind those bytes
/// for as long as the connection lives; recovering the socket frees it, which is about
/// half of an idle WebSocket's memory. Owning the socket also lets the writer write its
/// frames on its own half.
fn unwrap_upgraded(upgraded: hyper::upgrade::Upgraded) -> Option<(WsSocket, Vec<u8>)> {
    let upgraded = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => {
            return Some((
                WsSocket::Tcp(parts.io.into_inner()),
                parts.read_buf.to_vec(),
            ));
        }
        Err(upgraded) => upgraded,
    };
    let parts = upgraded
        .downcast::<TokioIo<tokio::net::UnixStream>>()
        .ok()?;
    Some((
        WsSocket::Unix(parts.io.into_inner()),
        parts.read_buf.to_vec(),
    ))
}

/// A WebSocket's reading side: tungstenite decodes the client's frames.
type Ws = Box<WebSocketStream<ReadSide>>;
/// The right to take from a session's queue (see `Session::carrier`).
type Carrier = tokio::sync::OwnedMutexGuard<()>;

/// What a WebSocket request becomes once upgraded.
enum Upgrade {
    /// A handshake: a session is to be created.
    Fresh,
    /// A handshake whose session has been created.
    New(Arc<Session>),
    /// The upgrade of a polling session.
    Existing(Arc<Session>),
    /// A second WebSocket for a session that has one: accepted, then closed.
    Refuse,
}

impl Upgrade {
    /// The WebSocket never came to be: a new session ends, an upgrading one goes back
    /// to polling.
    fn give_up(&self) {
        match self {
            Upgrade::New(s) => s.close(CloseReason::TransportError),
            Upgrade::Existing(s) => abandon_upgrade(s),
            Upgrade::Fresh | Upgrade::Refuse => {}
        }
    }
}

/// The polling → WebSocket upgrade of a live session: `2probe`/`3probe`, a NOOP to free
/// the pending poll, then `5`, after which the WebSocket takes over the queue.
async fn run_upgrade(
    session: Arc<Session>,
    mut stream: Ws,
    sink: WriteSide,
    settings: &Settings,
    engine: &Engine,
) {
    let deadline = settings.upgrade_timeout;
    let probe = tokio::time::timeout(deadline, stream.next()).await;
    let probed = matches!(&probe, Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "2probe");
    if !probed {
        tracing::debug!(sid = %session.sid, "upgrade aborted: no probe");
        abandon_upgrade(&session);
        close_websocket(&sink, CloseCode::Normal, Vec::new()).await;
        return;
    }
    if write_frame(&sink, &Packet::Pong("probe".into()).encode())
        .await
        .is_err()
    {
        abandon_upgrade(&session);
        return;
    }
    session.set_transport(TransportKind::Upgrading);
    // Frees a GET the client left pending so that it can pause polling. Never queued:
    // a NOOP must not reach the WebSocket later.
    session.release_poll.notify_waiters();
    let upgraded = loop {
        match tokio::time::timeout(deadline, stream.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "5" => break true,
            // A repeated probe is harmless.
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "2probe" => continue,
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            _ => break false,
        }
    };
    if !upgraded || session.is_closed() {
        tracing::debug!(sid = %session.sid, "upgrade aborted: no upgrade packet");
        abandon_upgrade(&session);
        close_websocket(&sink, CloseCode::Normal, Vec::new()).await;
        return;
    }
    // Waits for a poll still carrying the queue to hand it over.
    let carrier = tokio::select! {
        c = session.carrier.clone().lock_owned() => c,
        _ = session.closed() => return,
    };
    session.set_transport(TransportKind::Websocket);
    session.upgrade_settled.notify_waiters();
    if let Some(conn) = session.connection() {
        conn.upgraded();
    }
    tracing::debug!(sid = %session.sid, "upgraded to websocket");
    tokio::spawn(counted(
        engine.websockets.clone(),
        write_websocket(session.clone(), sink, carrier, engine.flusher.clone()),
    ));
    read_websocket(session, stream).await;
}

/// Run `task` while counting it in `counter`.
async fn counted(counter: Arc<AtomicUsize>, task: impl std::future::Future<Output = ()>) {
    counter.fetch_add(1, Ordering::AcqRel);
    task.await;
    counter.fetch_sub(1, Ordering::AcqRel);
}

/// Back to polling after a failed upgrade; GETs that waited on it get their NOOP.
fn abandon_upgrade(session: &Session) {
    if !session.is_closed() {
        session.set_transport(TransportKind::Polling);
    }
    session.upgrade_settled.notify_waiters();
}

/// Read a session's WebSocket until it ends, delivering packets in order.
async fn read_websocket(session: Arc<Session>, mut stream: Ws) {
    let closed = session.closed();
    tokio::pin!(closed);
    // Whether the stream is still at a frame boundary, so that its frames can be read on.
    let mut framed = true;
    loop {
        let next = tokio::select! {
            m = stream.next() => m,
            _ = &mut closed => break,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            None => {
                session.close(CloseReason::ClientClose);
                return;
            }
            Some(Err(tungstenite::Error::Capacity(err))) => {
                tracing::info!(sid = %session.sid, error = %err, "websocket message over max_payload");
                session.close(CloseReason::MessageTooBig);
                // The rest of the oversized message is still unread.
                framed = false;
                break;
            }
            Some(Err(tungstenite::Error::Utf8(err))) => {
                tracing::info!(sid = %session.sid, error = %err, "websocket text message is not UTF-8");
                session.close(CloseReason::InvalidData);
                break;
            }
            Some(Err(err)) => {
                tracing::debug!(sid = %session.sid, error = %err, "websocket read failed");
                session.close(CloseReason::TransportError);
                return;
            }
        };
        session.meters().websocket.received.inc_by(msg.len() as u64);
        let packet = match msg {
            WsMessage::Text(text) => match Packet::decode_text(text.as_str()) {
                Ok(p) => p,
                Err(err) => {
                    tracing::info!(sid = %session.sid, error = %err, "malformed engine.io packet");
                    session.close(CloseReason::ProtocolError);
                    break;
                }
            },
            WsMessage::Binary(data) => Packet::Binary(data),
            WsMessage::Close(_) => {
                session.close(CloseReason::ClientClose);
                return;
            }
            // tungstenite's own pong goes nowhere (see `wsio`): the writer sends ours.
            WsMessage::Ping(data) => {
                session.send(Outgoing::Pong(data));
                continue;
            }
            WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
        };
        let _serial = session.inbound.lock().await;
        handle_packet(&session, packet).await;
    }
    // We closed it: the writer sends our Close frame. Read (and discard) until the
    // client's Close arrives, or, when the frames cannot be followed any more (the rest
    // of an oversized message), the raw bytes until the client closes: closing with
    // unread bytes would reset the connection, and the reset can beat our close code to
    // the client.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if framed {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, WsMessage::Close(_)) {
                    return;
                }
            }
        }
        // On the heap: this future lives as long as the connection, and an array held
        // across the await below would be part of it, 4 KiB on every idle connection.
        let mut scratch = vec![0u8; 4096];
        while let Ok(n) = stream.get_mut().read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A WebSocket session's writer: it takes the session's queue over into the outbox (see
/// `outbox`), writes what the flusher hands it, and sends the close frame last.
async fn write_websocket(
    session: Arc<Session>,
    sink: WriteSide,
    carrier: Carrier,
    flusher: Arc<Flusher>,
) {
    let sink = Arc::new(sink);
    flusher.start();
    let outbox = session.outbox();
    outbox.attach(
        sink.clone(),
        flusher,
        std::iter::from_fn(|| {
            let item = session.queue.try_recv()?;
            session.dequeued(item.bytes());
            Some(item)
        }),
    );
    // One wait for the close for the task's life; a client that stops reading must not
    // hold this task (and its socket buffers) once the session is closed.
    let closed = session.closed();
    tokio::pin!(closed);
    let written = outbox
        .run_writer(&sink, &session.meters().websocket, closed.as_mut())
        .await;
    let rest = match written {
        Ok(Leftover::Clean) => Vec::new(),
        Ok(Leftover::Rest(rest)) => rest,
        Err(err) => {
            tracing::debug!(sid = %session.sid, error = %err, "websocket write failed");
            session.close(CloseReason::TransportError);
            outbox.close(Vec::new());
            return;
        }
    };
    // Held to the end: a polling GET for a WebSocket session finds the queue taken.
    drop(carrier);
    let code = match session.close_reason() {
        Some(CloseReason::MessageTooBig) => CloseCode::Size,
        Some(CloseReason::Shutdown) => CloseCode::Away,
        Some(CloseReason::ProtocolError) => CloseCode::Protocol,
        Some(CloseReason::InvalidData) => CloseCode::Invalid,
        _ => CloseCode::Normal,
    };
    close_websocket(&sink, code, rest).await;
}

/// Write one packet at once (before the writer runs: OPEN, the probe's answer).
async fn write_frame(sink: &WriteSide, frame: &Frame) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(frame.len() + 10);
    outbox::put_packet(&mut buf, frame);
    sink.write_all(&buf).await
}

/// Send our close frame after `rest` (the end of a frame cut short, see `Leftover`),
/// giving the client [`CLOSE_GRACE`] to take them.
async fn close_websocket(sink: &WriteSide, code: CloseCode, mut buf: Vec<u8>) {
    wsio::put_close(&mut buf, code.into());
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.write_all(&buf)).await;
}

/// Most time a GET that arrives during an upgrade waits for it to finish.
const UPGRADE_POLL_WAIT: Duration = Duration::from_millis(100);

/// A polling GET: wait for the first queued item, then take what else is queued.
async fn poll(session: Arc<Session>) -> Response<Full<Bytes>> {
    if !matches!(session.transport(), TransportKind::Polling) {
        return poll_during_upgrade(&session).await;
    }
    let Ok(carrier) = session.carrier.clone().try_lock_owned() else {
        tracing::info!(sid = %session.sid, "concurrent polling GETs, closing session");
        session.close(CloseReason::ProtocolError);
        return RequestError::BadRequest.response();
    };
    let mut body = Vec::new();
    let release = session.release_poll.notified();
    tokio::pin!(release);
    release.as_mut().enable();
    if session.transport() != TransportKind::Polling {
        drop(carrier);
        return poll_during_upgrade(&session).await;
    }
    // A GET the client abandons while it waits ends the session, as in the reference
    // server: the client has given up on this transport.
    let mut abandoned = AbandonedPoll(Some(session.clone()));
    let first = tokio::select! {
        item = session.queue.recv() => Polled::Item(item),
        _ = session.closed() => Polled::Closed,
        _ = &mut release => Polled::Released,
    };
    abandoned.0 = None;
    let first = match first {
        Polled::Item(item) => item,
        Polled::Released => {
            payload::encode([&Packet::Noop.encode()], &mut body);
            return text_response(body);
        }
        Polled::Closed => {
            // The client's own CLOSE ends its pending poll with a NOOP; any other close
            // tells it with a CLOSE packet.
            let last = if session.close_reason() == Some(CloseReason::ClientClose) {
                Packet::Noop
            } else {
                Packet::Close
            };
            payload::encode([&last.encode()], &mut body);
            return text_response(body);
        }
    };
    let mut items = vec![first];
    let mut size: usize = items[0].frames().iter().map(Frame::len).sum();
    while items.len() < MAX_BATCH_ITEMS && size < MAX_POLL_BYTES {
        match session.queue.try_recv() {
            Some(item) => {
                size += item.frames().iter().map(Frame::len).sum::<usize>();
                items.push(item);
            }
            None => break,
        }
    }
    drop(carrier);
    session.dequeued(items.iter().map(Outgoing::bytes).sum());
    payload::encode(items.iter().flat_map(|i| i.frames()), &mut body);
    session
        .meters()
        .sent_bytes
        .with_label_values(&[Transport::Polling.as_str()])
        .inc_by(body.len() as u64);
    text_response(body)
}

/// A GET while a WebSocket upgrade is under way: the reference server answers it with a
/// NOOP within its 100 ms upgrade check unless the upgrade completes first, in which case
/// polling is over (400). It must not hold the queue, which the upgrade is about to take.
async fn poll_during_upgrade(session: &Session) -> Response<Full<Bytes>> {
    let released = session.upgrade_settled.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    if matches!(
        session.transport(),
        TransportKind::Probing | TransportKind::Upgrading
    ) {
        tokio::select! {
            _ = &mut released => {}
            _ = tokio::time::sleep(UPGRADE_POLL_WAIT) => {}
            _ = session.closed() => {}
        }
    }
    if session.transport() == TransportKind::Websocket || session.is_closed() {
        return RequestError::BadRequest.response();
    }
    let mut body = Vec::new();
    payload::encode([&Packet::Noop.encode()], &mut body);
    text_response(body)
}

/// How a waiting poll ended.
enum Polled {
    Item(Outgoing),
    Closed,
    Released,
}

/// Closes the session when dropped while armed (the GET future was cancelled).
struct AbandonedPoll(Option<Arc<Session>>);

impl Drop for AbandonedPoll {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            tracing::debug!(sid = %session.sid, "polling GET abandoned, closing session");
            session.close(CloseReason::TransportError);
        }
    }
}

/// A polling POST: read the body within `max_payload`, then handle its packets in order.
async fn post(
    session: Arc<Session>,
    req: Request<Incoming>,
    settings: &Settings,
) -> Result<Response<Full<Bytes>>, RequestError> {
    let limit = settings.max_payload;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        tracing::info!(sid = %session.sid, limit, "polling body over max_payload refused");
        discard(req.into_body(), DISCARD_BYTES).await;
        return Err(RequestError::PayloadTooLarge);
    }
    let body = match read_body(req.into_body(), limit).await {
        Ok(b) => b,
        Err(Some(())) => {
            tracing::info!(sid = %session.sid, limit, "polling body over max_payload refused");
            return Err(RequestError::PayloadTooLarge);
        }
        Err(None) => {
            tracing::debug!(sid = %session.sid, "polling body read failed");
            session.close(CloseReason::TransportError);
            return Err(RequestError::BadRequest);
        }
    };
    session
        .meters()
        .received_bytes
        .with_label_values(&[Transport::Polling.as_str()])
        .inc_by(body.len() as u64);
    let packets = match payload::decode(&body, MAX_PACKETS_PER_POST) {
        Ok(p) => p,
        Err(err) => {
            tracing::info!(sid = %session.sid, error = %err, "malformed polling payload, closing session");
            session.close(CloseReason::ProtocolError);
            return Err(RequestError::BadRequest);
        }
    };
    let _serial = session.inbound.lock().await;
    for packet in packets {
        if session.is_closed() {
            break;
        }
        handle_packet(&session, packet).await;
    }
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/html")
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("static response is valid"))
}

/// Most of a refused body read and dropped, so that a client still sending it gets to
/// read our 413 instead of a broken pipe; past this (or [`DISCARD_TIME`]) the
/// connection is closed under it.
const DISCARD_BYTES: usize = 16 << 20;
/// Most time spent dropping a refused body.
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Read a POST body of at most `limit` bytes. `Err(Some(()))`: over the limit (the rest
/// has been drained within bounds); `Err(None)`: the body could not be read.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, Option<()>> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| None)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                discard(body, DISCARD_BYTES.saturating_sub(out.len())).await;
                return Err(Some(()));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// Read and drop what is left of a refused body, within bounds.
async fn discard(mut body: Incoming, bound: usize) {
    let drained = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > bound {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drained).await;
}

/// One packet from the client, whatever transport carried it.
async fn handle_packet(session: &Arc<Session>, packet: Packet) {
    match packet {
        Packet::Pong(_) => session.pong_received(),
        Packet::Ping(data) => {
            session.send_frame(Packet::Pong(data).encode());
        }
        Packet::Message(text) => {
            if let Some(conn) = session.connection() {
                conn.message(Message::Text(text)).await;
            }
        }
        Packet::Binary(data) => {
            if let Some(conn) = session.connection() {
                conn.message(Message::Binary(data)).await;
            }
        }
        Packet::Close => {
            if session.transport() != TransportKind::Websocket && session.carrier.try_lock().is_ok()
            {
                session.linger.store(true, Ordering::Release);
            }
            session.close(CloseReason::ClientClose);
        }
        Packet::Noop | Packet::Upgrade => {}
        Packet::Open(_) => {
            tracing::info!(sid = %session.sid, "client sent an OPEN packet, closing session");
            session.close(CloseReason::ProtocolError);
        }
    }
}

/// The OPEN packet: exactly `sid, upgrades, pingInterval, pingTimeout, maxPayload`.
fn open_packet(sid: &Sid, polling: bool, settings: &Settings) -> Frame {
    let upgrades = if polling && settings.websocket {
        r#"["websocket"]"#
    } else {
        "[]"
    };
    let json = format!(
        r#"{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        sid,
        upgrades,
        settings.ping_interval.as_millis(),
        settings.ping_timeout.as_millis(),
        settings.max_payload
    );
    Packet::Open(json).encode()
}

fn text_response(body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static header is valid")
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Parse a query string (`a=1&b=%20`), percent-decoding keys and values. Later duplicates
/// win; malformed escapes are kept literally.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader's and the writer's futures are kept for every connection's whole life,
    /// so whatever they hold across an await counts per idle connection (a 4 KiB array
    /// once did: 7.5 → 11.5 KiB per idle connection in `iorelay-load connect`).
    #[tokio::test]
    async fn the_websocket_tasks_keep_no_buffer_in_their_futures() {
        let (server, _client) = tokio::net::UnixStream::pair().expect("socket pair");
        let (read, write) = WsSocket::Unix(server).split();
        let stream: Ws = Box::new(
            WebSocketStream::from_raw_socket(
                read,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await,
        );
        let session = Session::new(
            Sid::from_client("abc"),
            TransportKind::Websocket,
            8,
            Arc::new(Meters::default()),
        );
        let carrier = session.carrier.clone().lock_owned().await;
        let flusher = Flusher::new(Meters::default().websocket);
        let writer = write_websocket(session.clone(), write, carrier, flusher);
        let size = std::mem::size_of_val(&writer);
        assert!(size <= 1024, "write_websocket's future takes {size} bytes");
        let reader = read_websocket(session, stream);
        let size = std::mem::size_of_val(&reader);
        assert!(size <= 1024, "read_websocket's future takes {size} bytes");
    }

    #[test]
    fn query_is_decoded() {
        let q = parse_query("EIO=4&transport=polling&t=abc&name=a%20b+c&bad=%zz&flag");
        assert_eq!(q["EIO"], "4");
        assert_eq!(q["name"], "a b c");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["flag"], "");
    }

    #[test]
    fn open_packet_has_exactly_the_handshake_fields() {
        let sid = Sid::from_client("abc");
        let Frame::Text(t) = open_packet(&sid, true, &Settings::default()) else {
            panic!("open is text")
        };
        assert_eq!(
            t.as_str(),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn errors_have_official_bodies() {
        let r = RequestError::UnknownSid.response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(RequestError::UnknownTransport.code(), 0);
        assert_eq!(RequestError::PayloadTooLarge.status().as_u16(), 413);
    }
}
