//! The HTTP long-polling transport: a GET waits for what is queued for the session and
//! carries it as one payload, a POST brings the client's packets. Also the answers a
//! GET gets when polling is being replaced (an upgrade under way) or is over (a session
//! lingering after the client's CLOSE).
//!
//! Owns neither the session table nor the request parsing (`server`), nor the upgrade's
//! WebSocket side (`upgrade`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, header};

use super::error::RequestError;
use super::outgoing::Outgoing;
use super::packet::{Frame, Packet};
use super::payload;
use super::session::{CloseReason, Session};
use super::transport::{Transport, TransportKind};

/// Most packets accepted in one polling POST body; far above what a client batches.
const MAX_PACKETS_PER_POST: usize = 10_000;
/// Most queued items one polling GET carries.
const MAX_BATCH_ITEMS: usize = 256;
/// Byte budget of one polling GET response; the rest waits for the next poll.
const MAX_POLL_BYTES: usize = 1 << 20;
/// How long a session the client closed over polling stays listed for its last GET.
pub(super) const LINGER: Duration = Duration::from_millis(200);
/// Most time a GET that arrives during an upgrade waits for it to finish.
const UPGRADE_POLL_WAIT: Duration = Duration::from_millis(100);
/// Most of a refused body read and dropped, so that a client still sending it gets to
/// read our 413 instead of a broken pipe; past this (or [`DISCARD_TIME`]) the
/// connection is closed under it.
const DISCARD_BYTES: usize = 16 << 20;
/// Most time spent dropping a refused body.
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// A polling response carrying `frames` as one payload.
pub(super) fn payload_response<'a>(
    frames: impl IntoIterator<Item = &'a Frame>,
) -> Response<Full<Bytes>> {
    text_response(payload_body(frames))
}

fn payload_body<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<u8> {
    let mut body = Vec::new();
    payload::encode(frames, &mut body);
    body
}

/// A GET answered with a single NOOP: the poll is released (an upgrade needs it), or
/// the session it polled is over (the client's own CLOSE).
pub(super) fn noop() -> Response<Full<Bytes>> {
    payload_response([&Packet::Noop.encode()])
}

fn text_response(body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static header is valid")
}

/// A polling GET: wait for the first queued item, then take what else is queued.
pub(super) async fn poll(session: Arc<Session>) -> Response<Full<Bytes>> {
    if !matches!(session.transport(), TransportKind::Polling) {
        return poll_during_upgrade(&session).await;
    }
    let Ok(carrier) = session.carrier.clone().try_lock_owned() else {
        tracing::info!(sid = %session.sid, "concurrent polling GETs, closing session");
        session.close(CloseReason::ProtocolError);
        return RequestError::BadRequest.response();
    };
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
        Polled::Released => return noop(),
        // The client's own CLOSE ends its pending poll with a NOOP; any other close
        // tells it with a CLOSE packet.
        Polled::Closed if session.close_reason() == Some(CloseReason::ClientClose) => {
            return noop();
        }
        Polled::Closed => return payload_response([&Packet::Close.encode()]),
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
    let body = payload_body(items.iter().flat_map(Outgoing::frames));
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
    noop()
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

/// A polling POST: read the body within `limit` (`max_payload`) and `timeout`, then
/// handle its packets in order. A POST while another one's body is still being read is
/// refused with 400 and ends the session, as the reference server does ("data request
/// overlap"); a body that does not arrive within `timeout` ends it too.
pub(super) async fn post(
    session: Arc<Session>,
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Response<Full<Bytes>>, RequestError> {
    if session.posting.swap(true, Ordering::AcqRel) {
        tracing::info!(sid = %session.sid, "overlapping polling POST, closing session");
        session.close(CloseReason::ProtocolError);
        return Err(RequestError::BadRequest);
    }
    let reading = Posting(&session);
    let body = tokio::time::timeout(timeout, read_post(&session, req, limit)).await;
    drop(reading);
    let body = match body {
        Ok(body) => body?,
        Err(_) => {
            tracing::info!(sid = %session.sid, ?timeout, "polling POST body not read within body_timeout, closing session");
            session.close(CloseReason::TransportError);
            return Err(RequestError::BadRequest);
        }
    };
    handle_post(&session, body).await
}

/// Clears [`Session::posting`] however the read ends.
struct Posting<'a>(&'a Session);

impl Drop for Posting<'_> {
    fn drop(&mut self) {
        self.0.posting.store(false, Ordering::Release);
    }
}

/// Read a POST's body within `limit`.
async fn read_post(
    session: &Session,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, RequestError> {
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
        Err(BodyError::TooLarge) => {
            tracing::info!(sid = %session.sid, limit, "polling body over max_payload refused");
            return Err(RequestError::PayloadTooLarge);
        }
        Err(BodyError::Read) => {
            tracing::debug!(sid = %session.sid, "polling body read failed");
            session.close(CloseReason::TransportError);
            return Err(RequestError::BadRequest);
        }
    };
    Ok(body)
}

/// Handle the packets of a POST body, in order.
async fn handle_post(
    session: &Session,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, RequestError> {
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
        session.receive(packet).await;
    }
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/html")
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("static response is valid"))
}

/// Why a POST body was not read.
enum BodyError {
    /// Over the limit; the rest has been drained within bounds.
    TooLarge,
    /// The body could not be read.
    Read,
}

/// Read a POST body of at most `limit` bytes.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                discard(body, DISCARD_BYTES.saturating_sub(out.len())).await;
                return Err(BodyError::TooLarge);
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
