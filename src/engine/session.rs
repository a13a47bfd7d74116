//! One Engine.IO session: its outbound queue and WebSocket outbox, its transport state,
//! its heartbeat, what it does with each packet the client sends (whichever transport
//! carried it), and its close. The transport carrying the session (a polling GET, then
//! the WebSocket writer) holds its carrier lock and takes from the queue; once a
//! WebSocket writer has attached the outbox, [`Session::send`] appends there instead (see
//! `outbox`). The upper layer sees a session only through [`Session::send`],
//! [`Session::close`] and its [`Connection`] callbacks.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::HeaderMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::budget::Budget;
use super::meters::Meters;
use super::outbox::{Outbox, Pushed, Refused};
use super::outgoing::Outgoing;
use super::packet::{Frame, Packet};
use super::queue::Queue;
use super::sid::Sid;
use super::transport::TransportKind;

/// A boxed future, for the object-safe upper-layer callbacks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A whole message from the client, as the upper layer receives it.
#[derive(Debug, Clone)]
pub enum Message {
    /// A text MESSAGE packet's payload.
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// Why a session ended; decides the WebSocket close code and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client sent a CLOSE packet or closed its transport.
    ClientClose = 1,
    /// No pong within `ping_timeout` of a ping.
    PingTimeout = 2,
    /// The transport failed (socket error, aborted request).
    TransportError = 3,
    /// The client broke the protocol (malformed packet, concurrent GETs).
    ProtocolError = 4,
    /// A WebSocket message larger than `max_payload`.
    MessageTooBig = 5,
    /// The outbound queue was full: the client does not read fast enough.
    SlowConsumer = 6,
    /// The server closed it (upper layer decision, shutdown).
    ServerClose = 7,
    /// The daemon is shutting down.
    Shutdown = 8,
    /// A WebSocket text message that is not UTF-8.
    InvalidData = 9,
    /// Its outbound queue would take the worker over `engine.outbound_budget`.
    MemoryBudget = 10,
    /// Its client came back on a new session, which takes over what this one carried.
    Replaced = 11,
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<CloseReason> {
        Some(match v {
            1 => CloseReason::ClientClose,
            2 => CloseReason::PingTimeout,
            3 => CloseReason::TransportError,
            4 => CloseReason::ProtocolError,
            5 => CloseReason::MessageTooBig,
            6 => CloseReason::SlowConsumer,
            7 => CloseReason::ServerClose,
            8 => CloseReason::Shutdown,
            9 => CloseReason::InvalidData,
            10 => CloseReason::MemoryBudget,
            11 => CloseReason::Replaced,
            _ => return None,
        })
    }

    /// A short stable name for logs and the `reason` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClose => "client_close",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::TransportError => "transport_error",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ServerClose => "server_close",
            CloseReason::Shutdown => "shutdown",
            CloseReason::InvalidData => "invalid_data",
            CloseReason::MemoryBudget => "memory_budget",
            CloseReason::Replaced => "replaced",
        }
    }

    /// Whether the client may well come back for what the session carried (its
    /// transport went away, the server went down, or its queue filled while it was gone
    /// — a polling client cut off unnoticed), rather than having given it up or broken
    /// the rules: what connection state recovery keeps. (A queue that filled is freed
    /// with the session; what the client missed comes back from the recovery log, which
    /// has a bound of its own.)
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            CloseReason::ClientClose
                | CloseReason::PingTimeout
                | CloseReason::TransportError
                | CloseReason::SlowConsumer
                | CloseReason::MemoryBudget
                | CloseReason::Shutdown
                | CloseReason::Replaced
        )
    }
}

/// What the handshake request told us about the client, for policies and logs.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// Peer address of the handshake request.
    pub remote: SocketAddr,
    /// The client's address: the peer's, or the one a trusted proxy's
    /// `X-Forwarded-For` names. What logs, per-IP limits and the server API use.
    pub client: IpAddr,
    /// Headers of the handshake request (origin, cookie, user agent, …).
    pub headers: HeaderMap,
    /// Query parameters of the handshake request.
    pub query: HashMap<String, String>,
}

/// The upper layer's side of one session (implemented by the Socket.IO layer).
pub trait Connection: Send + Sync {
    /// A message arrived. Messages of one session are delivered one at a time, in order.
    fn message(&self, msg: Message) -> BoxFuture<'_, ()>;
    /// The session ended; called exactly once.
    fn close(&self, reason: CloseReason);

    /// The session moved from polling to WebSocket.
    fn upgraded(&self) {}
}

/// The upper layer's factory: called once per new session, after the OPEN packet.
pub trait Handler: Send + Sync + 'static {
    /// A session opened; return the connection that receives its messages.
    fn open(&self, session: &Arc<Session>, info: &HandshakeInfo) -> Arc<dyn Connection>;
}

/// What the engine runs when a session closes (forgetting it in its table).
pub(crate) type OnClose = Box<dyn FnOnce(&Session) + Send>;

/// One Engine.IO session.
pub struct Session {
    /// The session id the client carries in `sid=`.
    pub sid: Sid,
    /// The bounded outbound queue, until a WebSocket writer attaches the outbox: a full
    /// queue means this client is behind.
    pub(crate) queue: Queue,
    /// Held by whichever transport is carrying the session (a polling GET, then the
    /// WebSocket writer): only its holder takes from the queue. `try_lock` failing on a
    /// GET means two concurrent GETs, which the protocol forbids.
    pub(crate) carrier: Arc<tokio::sync::Mutex<()>>,
    /// Current transport, as a `TransportKind` discriminant.
    transport: AtomicU8,
    /// Set once; everything else checks it.
    closed: AtomicBool,
    /// Why it closed (a `CloseReason` discriminant), written before `closed`.
    reason: AtomicU8,
    /// Wakes the transport tasks and the heartbeat when the session closes.
    close_notify: Notify,
    /// Wakes the heartbeat when a pong arrives.
    pong: Notify,
    /// When the pong for the outstanding ping is due; `None` when no ping is
    /// outstanding. Requests check it too, so that a late timer never keeps a timed-out
    /// session alive for a request that arrives after the deadline.
    pong_deadline: Mutex<Option<Instant>>,
    /// Ends a waiting polling GET with a NOOP (the upgrade needs the poll released).
    pub(crate) release_poll: Notify,
    /// Wakes GETs that arrived mid-upgrade once it completed or was abandoned.
    pub(crate) upgrade_settled: Notify,
    /// Set when the client closed over polling with no GET waiting: the engine keeps the
    /// closed session listed for a moment so that a GET the client sent alongside its
    /// CLOSE gets the NOOP the reference server gives it, not a 400.
    pub(crate) linger: AtomicBool,
    /// When the session was created: the heartbeat's schedule starts here, before the
    /// handshake response is written.
    created: Instant,
    /// Serialises inbound processing (POST bodies and WebSocket reads during an upgrade).
    pub(crate) inbound: tokio::sync::Mutex<()>,
    /// Set while a polling POST body is being read: a second one at the same time is a
    /// protocol error (as for the reference server), so one session never holds more
    /// than one `max_payload` of unread body.
    pub(crate) posting: AtomicBool,
    /// The upper layer's connection; taken on close to break the reference cycle.
    conn: Mutex<Option<Arc<dyn Connection>>>,
    /// The engine's instruments.
    meters: Arc<Meters>,
    /// Bytes queued and not yet taken by a transport.
    queued_bytes: AtomicUsize,
    /// The engine's outbound budget: `queued_bytes` are charged to it, and the outbox's
    /// bytes waiting for a full socket.
    budget: Arc<Budget>,
    /// Most bytes queued before the client counts as a slow consumer (besides the item
    /// count the queue itself bounds): replies built for one client are not shared.
    byte_budget: AtomicUsize,
    /// Called on close to forget the session in the engine's table.
    on_close: Mutex<Option<OnClose>>,
    /// The WebSocket output, once a WebSocket writer has taken over from the queue.
    outbox: Arc<Outbox>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // What a closed session's queue still held is freed with it.
        self.budget.release(*self.queued_bytes.get_mut());
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .field("transport", &self.transport())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(
        sid: Sid,
        kind: TransportKind,
        queue: usize,
        meters: Arc<Meters>,
        budget: Arc<Budget>,
    ) -> Arc<Session> {
        Arc::new(Session {
            sid,
            queue: Queue::new(queue),
            carrier: Arc::new(tokio::sync::Mutex::new(())),
            transport: AtomicU8::new(kind as u8),
            closed: AtomicBool::new(false),
            reason: AtomicU8::new(0),
            close_notify: Notify::new(),
            pong: Notify::new(),
            pong_deadline: Mutex::new(None),
            release_poll: Notify::new(),
            upgrade_settled: Notify::new(),
            created: Instant::now(),
            linger: AtomicBool::new(false),
            inbound: tokio::sync::Mutex::new(()),
            posting: AtomicBool::new(false),
            conn: Mutex::new(None),
            meters,
            queued_bytes: AtomicUsize::new(0),
            byte_budget: AtomicUsize::new(usize::MAX),
            on_close: Mutex::new(None),
            outbox: Outbox::new(budget.clone()),
            budget,
        })
    }

    /// Hand the session to its upper-layer connection. A session that closed before this
    /// (a shutdown, or a write that failed while the handshake was answered) closes the
    /// connection at once, so that it never misses its one `close`.
    pub(crate) fn set_connection(&self, conn: Arc<dyn Connection>) {
        let mut slot = self.conn.lock();
        // `close` sets the flag before it empties the slot, so checking under the lock
        // sees either the flag or, later, the connection: `close` is called once.
        if !self.is_closed() {
            *slot = Some(conn);
            return;
        }
        drop(slot);
        conn.close(self.close_reason().unwrap_or(CloseReason::ServerClose));
    }

    pub(crate) fn set_on_close(&self, f: OnClose) {
        *self.on_close.lock() = Some(f);
    }

    pub(crate) fn connection(&self) -> Option<Arc<dyn Connection>> {
        self.conn.lock().clone()
    }

    /// The transport carrying the session now.
    pub fn transport(&self) -> TransportKind {
        kind_from_u8(self.transport.load(Ordering::Acquire))
    }

    pub(crate) fn set_transport(&self, kind: TransportKind) {
        let before = kind_from_u8(self.transport.swap(kind as u8, Ordering::AcqRel)).counted_as();
        let after = kind.counted_as();
        if before != after && !self.is_closed() {
            self.meters
                .sessions
                .with_label_values(&[before.as_str()])
                .dec();
            self.meters
                .sessions
                .with_label_values(&[after.as_str()])
                .inc();
        }
    }

    /// The instruments of the engine that owns the session.
    pub(crate) fn meters(&self) -> &Meters {
        &self.meters
    }

    /// Queue an item for the client without waiting. A full queue closes the session as a
    /// slow consumer (the caller is usually a fan-out that must not stall on one reader);
    /// returns whether the item was queued. An [`Outgoing::Latest`] item never does: to a
    /// client that is behind it goes in place of an older one of its key (counted in
    /// `superseded`).
    pub fn send(&self, item: Outgoing) -> bool {
        if self.is_closed() {
            return false;
        }
        let budget = self.byte_budget.load(Ordering::Relaxed);
        let pushed = self
            .outbox
            .push(item, self.queue.capacity(), budget, |item| {
                self.enqueue(item, budget)
            });
        match pushed {
            Ok(Pushed::Queued) => true,
            Ok(Pushed::Superseded) => {
                self.meters.superseded.inc();
                true
            }
            Err(Refused::Full) => {
                self.meters.dropped_slow.inc();
                tracing::info!(sid = %self.sid, "outbound queue full, closing slow consumer");
                self.close(CloseReason::SlowConsumer);
                false
            }
            Err(Refused::OverBudget) => {
                self.meters.dropped_budget.inc();
                tracing::info!(sid = %self.sid, "worker's outbound budget reached, closing the slow consumer that would pass it");
                self.close(CloseReason::MemoryBudget);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Put an item on the queue that a transport takes from (before a WebSocket writer
    /// has attached the outbox). An [`Outgoing::Latest`] item, while the queue is half
    /// full (items or bytes), takes the place of a queued one of its key instead.
    fn enqueue(&self, item: Outgoing, budget: usize) -> Result<Pushed, Refused> {
        let bytes = item.bytes();
        let item = if item.latest_key().is_some() {
            let behind = self.queued_bytes.load(Ordering::Acquire) > budget / 2;
            match self.queue.supersede(item, behind) {
                Ok(older) => {
                    // The newer item takes the older one's place in both counts (added
                    // first, so that neither dips below what is really queued).
                    self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
                    self.queued_bytes.fetch_sub(older, Ordering::AcqRel);
                    self.budget.charge(bytes);
                    self.budget.release(older);
                    return Ok(Pushed::Superseded);
                }
                Err(item) => item,
            }
        } else {
            item
        };
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > budget {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        if !self.budget.try_charge(bytes) {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Refused::OverBudget);
        }
        self.queue.push(item).map(|()| Pushed::Queued).map_err(|_| {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.budget.release(bytes);
            Refused::Full
        })
    }

    /// The WebSocket output.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Queue one frame (see [`Session::send`]).
    pub fn send_frame(&self, frame: Frame) -> bool {
        self.send(Outgoing::Frame(frame))
    }

    /// Set the byte budget of the outbound queue.
    pub(crate) fn set_byte_budget(&self, bytes: usize) {
        self.byte_budget.store(bytes, Ordering::Relaxed);
    }

    /// A transport took `bytes` off the queue.
    pub(crate) fn dequeued(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.budget.release(bytes);
    }

    /// A pong arrived: the outstanding ping is answered.
    pub(crate) fn pong_received(&self) {
        *self.pong_deadline.lock() = None;
        self.pong.notify_waiters();
    }

    /// Close the session if its pong is overdue; returns whether it is (now) closed.
    pub(crate) fn expire_if_overdue(&self, now: Instant) -> bool {
        let overdue = self.pong_deadline.lock().is_some_and(|d| now >= d);
        if overdue {
            tracing::debug!(sid = %self.sid, "no pong in time");
            self.close(CloseReason::PingTimeout);
        }
        self.is_closed()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// End the session: wake its transports (they close the WebSocket or answer the
    /// pending poll with a CLOSE packet), forget it, and tell the upper layer. Idempotent.
    pub fn close(&self, reason: CloseReason) {
        self.reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .ok();
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(sid = %self.sid, reason = reason.as_str(), "session closed");
        self.meters
            .closed
            .with_label_values(&[reason.as_str()])
            .inc();
        self.meters
            .sessions
            .with_label_values(&[self.transport().counted_as().as_str()])
            .dec();
        self.close_notify.notify_waiters();
        let on_close = self.on_close.lock().take();
        if let Some(f) = on_close {
            f(self);
        }
        let conn = self.conn.lock().take();
        if let Some(conn) = conn {
            conn.close(reason);
        }
    }

    /// One packet from the client, whatever transport carried it. The caller holds
    /// `inbound`, so that packets are handled one at a time, in order.
    pub(crate) async fn receive(&self, packet: Packet) {
        match packet {
            Packet::Pong(_) => self.pong_received(),
            Packet::Ping(data) => {
                self.send_frame(Packet::Pong(data).encode());
            }
            Packet::Message(text) => {
                if let Some(conn) = self.connection() {
                    conn.message(Message::Text(text)).await;
                }
            }
            Packet::Binary(data) => {
                if let Some(conn) = self.connection() {
                    conn.message(Message::Binary(data)).await;
                }
            }
            Packet::Close => {
                // Over polling with no GET waiting: the GET the client may have sent
                // alongside gets its NOOP from the lingering session.
                if self.transport() != TransportKind::Websocket && self.carrier.try_lock().is_ok() {
                    self.linger.store(true, Ordering::Release);
                }
                self.close(CloseReason::ClientClose);
            }
            Packet::Noop | Packet::Upgrade => {}
            Packet::Open(_) => {
                tracing::info!(sid = %self.sid, "client sent an OPEN packet, closing session");
                self.close(CloseReason::ProtocolError);
            }
        }
    }

    /// Resolves once the session has closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.close_notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

/// The `TransportKind` whose discriminant `Session::transport` holds.
fn kind_from_u8(kind: u8) -> TransportKind {
    match kind {
        0 => TransportKind::Polling,
        1 => TransportKind::Upgrading,
        3 => TransportKind::Probing,
        _ => TransportKind::Websocket,
    }
}

/// Drive the server side of the heartbeat: `interval` after the session was created (and
/// after each pong) queue a PING and expect a PONG within `timeout` of queuing it —
/// whether or not a poll is waiting to carry it. Deadlines are absolute, so timer
/// lateness does not accumulate.
pub(crate) async fn heartbeat(session: Arc<Session>, interval: Duration, timeout: Duration) {
    let ping = Packet::Ping(String::new()).encode();
    let mut next_ping = session.created + interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_ping) => {}
            _ = session.closed() => return,
        }
        // A pong that arrived without a ping must not count for the next one.
        let pong = session.pong.notified();
        tokio::pin!(pong);
        pong.as_mut().enable();
        let deadline = next_ping + timeout;
        *session.pong_deadline.lock() = Some(deadline);
        if !session.send_frame(ping.clone()) {
            return;
        }
        tokio::select! {
            _ = &mut pong => next_ping = Instant::now() + interval,
            _ = tokio::time::sleep_until(deadline) => {
                session.expire_if_overdue(Instant::now().max(deadline));
                return;
            }
            _ = session.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_queue_over_its_byte_budget_closes_as_a_slow_consumer() {
        let session = Session::new(
            Sid::random(),
            TransportKind::Websocket,
            100,
            Default::default(),
            Budget::unlimited(),
        );
        session.set_byte_budget(100);
        let item = Outgoing::Frame(Frame::message(&"x".repeat(39))); // 40 bytes
        assert!(session.send(item.clone()));
        assert!(session.send(item.clone()));
        // Taking one off makes room again.
        session.dequeued(item.bytes());
        assert!(session.send(item.clone()));
        assert!(!session.send(item), "120 bytes would be over the budget");
        assert_eq!(session.close_reason(), Some(CloseReason::SlowConsumer));
    }

    #[tokio::test]
    async fn superseded_items_keep_the_worker_budget_exact() {
        let budget = Arc::new(Budget::new(usize::MAX));
        let session = Session::new(
            Sid::random(),
            TransportKind::Polling,
            4,
            Default::default(),
            budget.clone(),
        );
        let key: Arc<str> = Arc::from("/\0room");
        // Counts of growing width: each newer item is larger than the one it replaces.
        for n in [9u64, 10, 100, 1000, 10000] {
            let item = Outgoing::Latest(key.clone(), Frame::message(&n.to_string()));
            session.send(item);
            session.send(Outgoing::Frame(Frame::message("x")));
        }
        let mut queued = 0;
        while let Some(item) = session.queue.try_recv() {
            queued += item.bytes();
            session.dequeued(item.bytes());
        }
        assert!(queued > 0);
        assert_eq!(
            budget.held(),
            0,
            "everything charged was released, nothing more"
        );
    }

    /// Time since `start` is `expected`, give or take the timer wheel's millisecond.
    fn assert_at(start: Instant, expected: Duration) {
        let elapsed = start.elapsed();
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(2),
            "at {elapsed:?}, expected {expected:?}"
        );
    }

    /// The next item queued for the client, taken as a polling GET would.
    async fn next_sent(session: &Session) -> Outgoing {
        let item = session.queue.recv().await;
        session.dequeued(item.bytes());
        item
    }

    fn polling_session() -> Arc<Session> {
        Session::new(
            Sid::random(),
            TransportKind::Polling,
            8,
            Default::default(),
            Budget::unlimited(),
        )
    }

    const INTERVAL: Duration = Duration::from_secs(25);
    const TIMEOUT: Duration = Duration::from_secs(20);

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_pings_an_interval_after_each_pong() {
        let start = Instant::now();
        let session = polling_session();
        tokio::spawn(heartbeat(session.clone(), INTERVAL, TIMEOUT));
        let ping = next_sent(&session).await;
        assert!(matches!(ping.frames(), [Frame::Text(t)] if t.as_str() == "2"));
        assert_at(start, INTERVAL);
        // Answered 5 s later: the next ping is due an interval after the pong.
        tokio::time::sleep(Duration::from_secs(5)).await;
        session.pong_received();
        next_sent(&session).await;
        assert_at(start, INTERVAL + Duration::from_secs(5) + INTERVAL);
        session.pong_received();
        assert!(!session.is_closed());
        session.close(CloseReason::ServerClose);
    }

    #[tokio::test(start_paused = true)]
    async fn no_pong_within_the_timeout_closes_the_session() {
        let start = Instant::now();
        let session = polling_session();
        tokio::spawn(heartbeat(session.clone(), INTERVAL, TIMEOUT));
        next_sent(&session).await;
        tokio::time::sleep(TIMEOUT - Duration::from_millis(10)).await;
        assert!(!session.is_closed(), "still within the timeout");
        session.closed().await;
        assert_at(start, INTERVAL + TIMEOUT);
        assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_without_a_ping_does_not_answer_the_next_one() {
        let start = Instant::now();
        let session = polling_session();
        tokio::spawn(heartbeat(session.clone(), INTERVAL, TIMEOUT));
        tokio::time::sleep(Duration::from_secs(1)).await;
        session.pong_received();
        next_sent(&session).await;
        session.closed().await;
        assert_at(start, INTERVAL + TIMEOUT);
        assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_after_the_pong_deadline_finds_the_session_expired() {
        let session = polling_session();
        *session.pong_deadline.lock() = Some(Instant::now() + TIMEOUT);
        assert!(!session.expire_if_overdue(Instant::now()));
        // Even with no heartbeat task running to notice, the deadline holds.
        tokio::time::advance(TIMEOUT).await;
        assert!(session.expire_if_overdue(Instant::now()));
        assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
    }
}
