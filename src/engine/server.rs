//! The Engine.IO endpoint: the session table, and each request parsed once (`Call`)
//! then dispatched with one match to the transport that serves it (`polling`,
//! `websocket`, `upgrade`).
//!
//! Owns the session table and the start of each session (the upper layer's connection,
//! the heartbeat, the client's address behind trusted proxies), and applies the origin
//! policy to every request before anything else (its rules and CORS answers are
//! `origin`'s, the address resolution `proxy`'s). Does not own routing (the `http` module decides which requests reach
//! it), the transports' work, nor anything above Engine.IO messages.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::admission::{Admission, Refused};
use super::budget::Budget;
use super::error::RequestError;
use super::meters::Meters;
use super::origin::{self, Verdict};
use super::session::{CloseReason, Handler, HandshakeInfo, Session, heartbeat};
use super::settings::Settings;
use super::sid::Sid;
use super::transport::{Transport, TransportKind};
use super::websocket::{self, Writers, Ws};
use super::wsio::WriteSide;
use super::{polling, upgrade};

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
    /// What the WebSocket sessions share: the flusher and the count of their writers.
    writers: Writers,
    /// Sessions and handshake rates per client address.
    admission: Admission,
    /// What all sessions have queued outbound, and the most they may
    /// (`Settings::outbound_budget`).
    outbound: Arc<Budget>,
    /// Woken when the last session is forgotten or the last WebSocket writer ends, so a
    /// drain waits for [`Engine::until_idle`] instead of polling the counts.
    idle: Arc<Notify>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.session_count())
            .finish()
    }
}

/// What an Engine.IO request asks for, read from its method, query and headers alone
/// (no session looked up yet). The refusals that need no session come out of
/// [`Call::parse`] as errors, in the reference server's order.
#[derive(Debug, PartialEq)]
enum Call {
    /// A handshake over polling.
    OpenPolling(HashMap<String, String>),
    /// A handshake over WebSocket, with its `Sec-WebSocket-Accept`.
    OpenWebsocket(HashMap<String, String>, String),
    /// A polling GET for session `sid`.
    Poll(String),
    /// A polling POST for session `sid`.
    Post(String),
    /// A WebSocket for session `sid`, with its `Sec-WebSocket-Accept`.
    Upgrade(String, String),
    /// Anything else naming session `sid`: a 400, unless the session is unknown.
    Invalid(String),
}

impl Call {
    fn parse<B>(req: &Request<B>, settings: &Settings) -> Result<Call, RequestError> {
        let mut query = parse_query(req.uri().query().unwrap_or(""));
        let transport = query
            .get("transport")
            .and_then(|t| Transport::from_name(t))
            .filter(|t| settings.allows(*t))
            .ok_or(RequestError::UnknownTransport)?;
        let accept = match transport {
            Transport::Websocket => websocket::accept_key(req),
            Transport::Polling => None,
        };
        if let Some(sid) = query.remove("sid") {
            return Ok(match (transport, req.method(), accept) {
                (Transport::Websocket, _, Some(accept)) => Call::Upgrade(sid, accept),
                (Transport::Polling, &Method::GET, _) => Call::Poll(sid),
                (Transport::Polling, &Method::POST, _) => Call::Post(sid),
                _ => Call::Invalid(sid),
            });
        }
        if req.method() != Method::GET {
            return Err(RequestError::BadHandshakeMethod);
        }
        if query.get("EIO").map(String::as_str) != Some("4") {
            return Err(RequestError::UnsupportedProtocolVersion);
        }
        match (transport, accept) {
            (Transport::Polling, _) => Ok(Call::OpenPolling(query)),
            (Transport::Websocket, Some(accept)) => Ok(Call::OpenWebsocket(query, accept)),
            (Transport::Websocket, None) => Err(RequestError::BadRequest),
        }
    }
}

/// What a WebSocket becomes once hyper hands it over.
enum Upgraded {
    /// The transport of a new session.
    New(Arc<Session>, HandshakeInfo),
    /// The upgrade of a polling session.
    Existing(Arc<Session>),
    /// A WebSocket for a session that has one or is getting one: accepted, then closed,
    /// as the reference server does.
    Refused,
}

impl Engine {
    /// A new engine handing sessions to `handler`.
    pub fn new(settings: Settings, handler: Arc<dyn Handler>, meters: Meters) -> Arc<Engine> {
        let idle = Arc::new(Notify::new());
        let writers = Writers::new(meters.websocket.clone(), idle.clone());
        let outbound = Arc::new(Budget::new(settings.outbound_budget));
        Arc::new(Engine {
            outbound,
            settings: RwLock::new(Arc::new(settings)),
            sessions: RwLock::new(HashMap::new()),
            session_peak: AtomicUsize::new(0),
            handler,
            meters: Arc::new(meters),
            writers,
            idle,
            admission: Admission::default(),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Replace the settings; new sessions and new heartbeats use them.
    pub fn reconfigure(&self, settings: Settings) {
        self.outbound.set_limit(settings.outbound_budget);
        *self.settings.write() = Arc::new(settings);
    }

    /// Bytes all sessions have queued outbound now (what `engine.outbound_budget` bounds).
    pub fn outbound_bytes(&self) -> usize {
        self.outbound.held()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    /// The most sessions live at once since the last call (or since the engine started),
    /// and the number live now, from which the next peak is counted.
    pub fn take_session_peak(&self) -> (usize, usize) {
        let table = self.sessions.read();
        let live = table.len();
        // Under the read lock: no session is added in between (adding takes the write
        // lock), so no peak is lost; and the mark is never below the sessions live (it
        // was raised at each insert), so it is the peak as it stands.
        let peak = self.session_peak.swap(live, Ordering::Relaxed);
        (peak, live)
    }

    /// WebSockets whose writer has not finished yet.
    pub fn open_websockets(&self) -> usize {
        self.writers.running()
    }

    /// Resolves once no session is live and no WebSocket writer is still running (its
    /// close frame written): what a graceful shutdown waits for.
    pub async fn until_idle(&self) {
        loop {
            let woken = self.idle.notified();
            tokio::pin!(woken);
            // Registered before the counts are read: a wake-up in between is not lost.
            woken.as_mut().enable();
            if self.session_count() == 0 && self.open_websockets() == 0 {
                return;
            }
            woken.await;
        }
    }

    /// Close every session (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let all: Vec<Arc<Session>> = self.sessions.read().values().cloned().collect();
        for s in all {
            s.close(reason);
        }
    }

    fn forget(&self, sid: &Sid) {
        let mut table = self.sessions.write();
        if table.remove(sid).is_some() && table.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// The live session `sid` names: `Ok(None)` for one that only lingers after the
    /// client's CLOSE (it is forgotten now: one request gets its answer), an error for
    /// an unknown one or one whose pong is overdue.
    fn live(&self, sid: &str) -> Result<Option<Arc<Session>>, RequestError> {
        let session = self
            .sessions
            .read()
            .get(&Sid::from_client(sid))
            .cloned()
            .ok_or(RequestError::UnknownSid)?;
        if session.is_closed() {
            self.forget(&session.sid);
            return Ok(None);
        }
        if session.expire_if_overdue(tokio::time::Instant::now()) {
            return Err(RequestError::UnknownSid);
        }
        Ok(Some(session))
    }

    /// [`Engine::live`], for requests that a lingering session does not answer.
    fn live_only(&self, sid: &str) -> Result<Arc<Session>, RequestError> {
        self.live(sid)?.ok_or(RequestError::UnknownSid)
    }

    /// Create and register a session, or refuse when at capacity.
    fn create_session(
        self: &Arc<Self>,
        kind: TransportKind,
        settings: &Settings,
        client: IpAddr,
    ) -> Result<Arc<Session>, RequestError> {
        let now = std::time::Instant::now();
        let refuse = |why: Refused| {
            self.meters.refused.with_label_values(&[why.label()]).inc();
            self.admission.log_refusal(why, client, now);
            RequestError::Unavailable
        };
        if self.sessions.read().len() >= settings.max_sessions {
            return Err(refuse(Refused::SessionLimit));
        }
        self.admission
            .admit(client, settings.per_ip, now)
            .map_err(refuse)?;
        let session = Session::new(
            Sid::random_for(settings.node),
            kind,
            settings.write_queue,
            self.meters.clone(),
            self.outbound.clone(),
        );
        session.set_byte_budget(settings.write_budget);
        {
            let mut table = self.sessions.write();
            if table.len() >= settings.max_sessions {
                self.admission.release(client);
                return Err(refuse(Refused::SessionLimit));
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
            engine.admission.release(client);
            if session.linger.load(Ordering::Acquire) {
                let sid = session.sid.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(polling::LINGER).await;
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

    /// Serve one request under the Engine.IO path: its origin checked first (a refused
    /// one gets 403 whatever it asks), a preflight answered, the rest dispatched; an
    /// allowed origin's answers carry the CORS headers.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let settings = self.settings();
        let origin = match settings.origins.check(req.headers()) {
            Verdict::NoOrigin => None,
            Verdict::Allowed(origin) => Some(origin),
            Verdict::Refused => {
                self.meters.origin_refused.inc();
                let client = settings.proxies.client(remote.ip(), req.headers());
                tracing::info!(
                    origin = %origin::for_log(req.headers()),
                    %client,
                    %remote,
                    "engine.io request refused: origin not allowed"
                );
                return RequestError::Forbidden.response();
            }
        };
        if let Some(origin) = &origin
            && req.method() == Method::OPTIONS
        {
            return origin::preflight(req.headers(), origin.clone());
        }
        let mut resp = match self.dispatch(req, remote, settings).await {
            Ok(resp) => resp,
            Err(err) => {
                tracing::debug!(error = %err, "engine.io request refused");
                err.response()
            }
        };
        if let Some(origin) = origin {
            origin::add_cors(&mut resp, origin);
        }
        resp
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        settings: Arc<Settings>,
    ) -> Result<Response<Full<Bytes>>, RequestError> {
        match Call::parse(&req, &settings)? {
            Call::OpenPolling(query) => {
                let client = settings.proxies.client(remote.ip(), req.headers());
                let session = self.create_session(TransportKind::Polling, &settings, client)?;
                let open = settings.open_packet(&session.sid, Transport::Polling);
                let info = HandshakeInfo {
                    remote,
                    client,
                    headers: req.headers().clone(),
                    query,
                };
                self.start_session(&session, &info, &settings);
                tracing::debug!(sid = %session.sid, client = %info.client, %remote, transport = %Transport::Polling, "session opened");
                Ok(polling::payload_response([&open]))
            }
            Call::OpenWebsocket(query, accept) => {
                // Created before the 101 so that a full server refuses with an HTTP
                // error the client can see.
                let client = settings.proxies.client(remote.ip(), req.headers());
                let session = self.create_session(TransportKind::Websocket, &settings, client)?;
                let info = HandshakeInfo {
                    remote,
                    client,
                    headers: req.headers().clone(),
                    query,
                };
                Ok(self.accept_websocket(req, accept, Upgraded::New(session, info), settings))
            }
            Call::Poll(sid) => match self.live(&sid)? {
                Some(session) if session.transport() != TransportKind::Websocket => {
                    Ok(polling::poll(session).await)
                }
                Some(_) => Err(RequestError::BadRequest),
                None => Ok(polling::noop()),
            },
            Call::Post(sid) => {
                let session = self.live_only(&sid)?;
                if session.transport() == TransportKind::Websocket {
                    return Err(RequestError::BadRequest);
                }
                polling::post(session, req, settings.max_payload, settings.body_timeout).await
            }
            Call::Upgrade(sid, accept) => {
                let session = self.live_only(&sid)?;
                let upgraded = if upgrade::begin(&session) {
                    Upgraded::Existing(session)
                } else {
                    Upgraded::Refused
                };
                Ok(self.accept_websocket(req, accept, upgraded, settings))
            }
            Call::Invalid(sid) => {
                self.live_only(&sid)?;
                Err(RequestError::BadRequest)
            }
        }
    }

    /// Answer a WebSocket request with 101 and run the socket in a task.
    fn accept_websocket(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        accept: String,
        upgraded: Upgraded,
        settings: Arc<Settings>,
    ) -> Response<Full<Bytes>> {
        let on_upgrade = hyper::upgrade::on(&mut req);
        // The request's header values are slices of hyper's 8 KiB read buffer: it must
        // not be kept for the connection's life.
        drop(req);
        let engine = self.clone();
        tokio::spawn(async move {
            let Some((stream, sink)) = websocket::take_over(on_upgrade, settings.max_payload).await
            else {
                // The WebSocket never came to be: a new session ends, an upgrading one
                // goes back to polling.
                match upgraded {
                    Upgraded::New(session, _) => session.close(CloseReason::TransportError),
                    Upgraded::Existing(session) => upgrade::abandon(&session),
                    Upgraded::Refused => {}
                }
                return;
            };
            match upgraded {
                Upgraded::New(session, info) => {
                    engine
                        .run_new_websocket(session, stream, sink, info, &settings)
                        .await
                }
                Upgraded::Existing(session) => {
                    let timeout = settings.upgrade_timeout;
                    upgrade::run(session, stream, sink, timeout, &engine.writers).await
                }
                Upgraded::Refused => websocket::close(&sink, CloseCode::Normal, Vec::new()).await,
            }
        });
        websocket::switching_protocols(accept)
    }

    /// A session opened over WebSocket: OPEN, then the upper layer, then the transport.
    async fn run_new_websocket(
        &self,
        session: Arc<Session>,
        stream: Ws,
        sink: WriteSide,
        info: HandshakeInfo,
        settings: &Settings,
    ) {
        let open = settings.open_packet(&session.sid, Transport::Websocket);
        if websocket::write_frame(&sink, &open).await.is_err() {
            session.close(CloseReason::TransportError);
            return;
        }
        self.start_session(&session, &info, settings);
        tracing::debug!(sid = %session.sid, client = %info.client, remote = %info.remote, transport = %Transport::Websocket, "session opened");
        // Not kept for the connection's life: its header values are slices of hyper's
        // 8 KiB read buffer, which they would keep allocated.
        drop(info);
        let carrier = session.carrier.clone().lock_owned().await;
        self.writers.carry(session, stream, sink, carrier).await;
    }
}

/// Parse a query string (`a=1&b=%20`, `+` for a space) as `form_urlencoded` does. Later
/// duplicates win; malformed escapes are kept literally, bytes that are not UTF-8 become
/// U+FFFD.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Packet;

    #[test]
    fn query_is_decoded() {
        let q = parse_query("EIO=4&transport=polling&t=abc&name=a%20b+c&bad=%zz&flag&&x=1&x=2");
        assert_eq!(q["EIO"], "4");
        assert_eq!(q["name"], "a b c");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["flag"], "");
        assert_eq!(q["x"], "2", "later duplicates win");
        assert_eq!(q.len(), 7);
    }

    fn request(method: Method, query: &str, websocket: bool) -> Request<()> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/engine.io/?{query}"));
        if websocket {
            req = req
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        req.body(()).expect("valid request")
    }

    fn parse(method: Method, query: &str, websocket: bool) -> Result<Call, RequestError> {
        Call::parse(&request(method, query, websocket), &Settings::default())
    }

    #[test]
    fn a_request_is_parsed_into_one_call_and_refused_in_the_reference_order() {
        use RequestError::*;
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned();
        assert!(matches!(
            parse(Method::GET, "EIO=4&transport=polling", false),
            Ok(Call::OpenPolling(q)) if q["EIO"] == "4"
        ));
        assert!(matches!(
            parse(Method::GET, "EIO=4&transport=websocket", true),
            Ok(Call::OpenWebsocket(_, a)) if a == accept
        ));
        let sid = || "abc".to_owned();
        assert_eq!(
            parse(Method::GET, "transport=polling&sid=abc", false),
            Ok(Call::Poll(sid()))
        );
        assert_eq!(
            parse(Method::POST, "transport=polling&sid=abc", false),
            Ok(Call::Post(sid()))
        );
        assert_eq!(
            parse(Method::GET, "transport=websocket&sid=abc", true),
            Ok(Call::Upgrade(sid(), accept))
        );
        // Refused only once the session is known to exist.
        assert_eq!(
            parse(Method::PUT, "transport=polling&sid=abc", false),
            Ok(Call::Invalid(sid()))
        );
        assert_eq!(
            parse(Method::GET, "transport=websocket&sid=abc", false),
            Ok(Call::Invalid(sid()))
        );
        // Refused from the request alone: the transport first, then the method, then EIO.
        assert_eq!(
            parse(Method::POST, "EIO=3&transport=flash", false),
            Err(UnknownTransport)
        );
        assert_eq!(
            parse(Method::POST, "EIO=3&transport=polling", false),
            Err(BadHandshakeMethod)
        );
        assert_eq!(
            parse(Method::GET, "EIO=3&transport=polling", false),
            Err(UnsupportedProtocolVersion)
        );
        assert_eq!(
            parse(Method::GET, "EIO=4&transport=websocket", false),
            Err(BadRequest)
        );
        let polling_only = Settings {
            websocket: false,
            ..Settings::default()
        };
        let req = request(Method::GET, "EIO=4&transport=websocket", true);
        assert_eq!(Call::parse(&req, &polling_only), Err(UnknownTransport));
    }

    fn engine() -> Arc<Engine> {
        let handler = Arc::new(crate::engine::echo::EchoHandler);
        Engine::new(Settings::default(), handler, Meters::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_the_client_closed_over_polling_lingers_for_its_last_get() {
        let engine = engine();
        let session = engine
            .create_session(
                TransportKind::Polling,
                &Settings::default(),
                IpAddr::from([127, 0, 0, 1]),
            )
            .expect("room");
        // The client's CLOSE with no GET waiting.
        session.receive(Packet::Close).await;
        assert_eq!(session.close_reason(), Some(CloseReason::ClientClose));
        tokio::time::sleep(polling::LINGER - std::time::Duration::from_millis(5)).await;
        assert_eq!(engine.session_count(), 1, "still listed within the linger");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(engine.session_count(), 0, "forgotten after it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_session_answers_one_request_then_is_unknown() {
        let engine = engine();
        let session = engine
            .create_session(
                TransportKind::Polling,
                &Settings::default(),
                IpAddr::from([127, 0, 0, 1]),
            )
            .expect("room");
        session.receive(Packet::Close).await;
        let sid = session.sid.to_string();
        assert!(matches!(engine.live(&sid), Ok(None)), "its NOOP");
        assert_eq!(engine.live(&sid).err(), Some(RequestError::UnknownSid));
    }

    #[tokio::test(start_paused = true)]
    async fn until_idle_resolves_when_the_last_session_is_forgotten() {
        let engine = engine();
        engine.until_idle().await;
        let a = engine
            .create_session(
                TransportKind::Polling,
                &Settings::default(),
                IpAddr::from([127, 0, 0, 1]),
            )
            .expect("room");
        let b = engine
            .create_session(
                TransportKind::Polling,
                &Settings::default(),
                IpAddr::from([127, 0, 0, 1]),
            )
            .expect("room");
        let waiter = tokio::spawn({
            let engine = engine.clone();
            async move { engine.until_idle().await }
        });
        tokio::task::yield_now().await;
        a.close(CloseReason::PingTimeout);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one session is still live");
        b.close(CloseReason::PingTimeout);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken by the last session leaving, not by a timer")
            .expect("the waiter does not panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_closed_otherwise_is_forgotten_at_once() {
        let engine = engine();
        let session = engine
            .create_session(
                TransportKind::Polling,
                &Settings::default(),
                IpAddr::from([127, 0, 0, 1]),
            )
            .expect("room");
        // A GET is waiting (it holds the carrier): no linger needed.
        let carrier = session.carrier.clone().try_lock_owned().expect("free");
        session.receive(Packet::Close).await;
        drop(carrier);
        assert_eq!(engine.session_count(), 0);
        let session = engine
            .create_session(
                TransportKind::Polling,
                &Settings::default(),
                IpAddr::from([127, 0, 0, 1]),
            )
            .expect("room");
        session.close(CloseReason::PingTimeout);
        assert_eq!(engine.session_count(), 0);
    }
}
