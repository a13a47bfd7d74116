//! The WebSocket transport: taking the socket over from hyper once the 101 is sent,
//! then one reader that decodes the client's frames and a writer task that hands the
//! session's output to its outbox (see `outbox`) and sends the close frame last.
//!
//! Owns neither the session table nor the decision of what a WebSocket request becomes
//! (`server`), nor the probe of a polling session's upgrade (`upgrade`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::TransportBytes;
use super::outbox::{Flusher, Leftover};
use super::outgoing::Outgoing;
use super::packet::{Frame, Packet};
use super::session::{CloseReason, Session};
use super::wsio::{self, ReadSide, WriteSide, WsSocket};

/// Read buffer of each WebSocket; it grows only while a larger message is read.
const WS_READ_BUFFER: usize = 1024;
/// How long a closing WebSocket may take to accept our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A WebSocket's reading side: tungstenite decodes the client's frames.
pub(super) type Ws = Box<WebSocketStream<ReadSide>>;
/// The right to take from a session's queue (see `Session::carrier`).
pub(super) type Carrier = tokio::sync::OwnedMutexGuard<()>;

/// The `Sec-WebSocket-Accept` answer to a request that asks for a WebSocket (the
/// `Upgrade: websocket` header, a key, version 13); `None` for any other request.
pub(super) fn accept_key<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    (upgrade && version_13).then(|| derive_accept_key(key.as_bytes()))
}

/// The 101 answer; the socket is taken over with [`take_over`] once it is sent.
pub(super) fn switching_protocols(accept: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .expect("static status and headers, and an accept key that is base64")
}

/// Wait for hyper to hand over the upgraded connection, and make it a WebSocket whose
/// messages are at most `max_payload`; `None` when the upgrade did not happen.
pub(super) async fn take_over(
    on_upgrade: hyper::upgrade::OnUpgrade,
    max_payload: usize,
) -> Option<(Ws, WriteSide)> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(err) => {
            tracing::debug!(error = %err, "websocket upgrade failed");
            return None;
        }
    };
    let Some((socket, early)) = unwrap_upgraded(upgraded) else {
        tracing::error!("websocket over a connection that is neither TCP nor Unix");
        return None;
    };
    let (read, write) = socket.split();
    // Small read chunks keep idle connections cheap (tungstenite preallocates the read
    // buffer). tungstenite only reads: the writer frames its own output.
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(max_payload))
        .max_frame_size(Some(max_payload));
    // Boxed: moved through three nested futures, a stream held by value would take its
    // room in each of their states (about 1 KiB per idle connection).
    let ws = Box::new(
        WebSocketStream::from_partially_read(read, early, Role::Server, Some(config)).await,
    );
    Some((ws, write))
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

/// What the engine's WebSocket sessions share: the flusher that writes their outboxes,
/// and the count of writer tasks still running (kept by a drop guard each task owns, so
/// that a task that panics is uncounted too).
pub(super) struct Writers {
    /// Writes the WebSocket sessions' outboxes (started with the first WebSocket).
    flusher: Arc<Flusher>,
    /// Writer tasks still running (they write the close frame last).
    running: Arc<AtomicUsize>,
    /// The engine's idle signal: woken when the last writer ends.
    idle: Arc<Notify>,
}

impl Writers {
    pub(super) fn new(counters: TransportBytes, idle: Arc<Notify>) -> Writers {
        Writers {
            flusher: Flusher::new(counters),
            running: Arc::new(AtomicUsize::new(0)),
            idle,
        }
    }

    /// Writer tasks that have not finished yet.
    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Carry `session` over this WebSocket from now on: start its writer (which holds
    /// the `carrier` to the end), then read until the socket or the session ends.
    pub(super) async fn carry(
        &self,
        session: Arc<Session>,
        stream: Ws,
        sink: WriteSide,
        carrier: Carrier,
    ) {
        let writer = write_websocket(session.clone(), sink, carrier, self.flusher.clone());
        self.spawn_writer(writer);
        read_websocket(session, stream).await;
    }

    /// Run `writer` as a task counted in [`running`](Writers::running) until it ends —
    /// returns, panics, or is dropped with the runtime: the count is held by a guard the
    /// task owns, so no way out of it leaves the drain waiting.
    fn spawn_writer(&self, writer: impl Future<Output = ()> + Send + 'static) {
        let running = Running::enter(self.running.clone(), self.idle.clone());
        tokio::spawn(async move {
            writer.await;
            drop(running);
        });
    }
}

/// One writer task in the count: counted when made, uncounted when dropped (the last one
/// wakes the engine's idle waiters).
struct Running {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Running {
    fn enter(count: Arc<AtomicUsize>, idle: Arc<Notify>) -> Running {
        count.fetch_add(1, Ordering::AcqRel);
        Running { count, idle }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
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
        session.receive(packet).await;
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
    close(&sink, code, rest).await;
}

/// Write one packet at once (before the writer runs: OPEN, the probe's answer).
pub(super) async fn write_frame(sink: &WriteSide, frame: &Frame) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(frame.len() + 10);
    super::wsio::put_packet(&mut buf, frame);
    sink.write_all(&buf).await
}

/// Send our close frame after `rest` (the end of a frame cut short, see `Leftover`),
/// giving the client [`CLOSE_GRACE`] to take them.
pub(super) async fn close(sink: &WriteSide, code: CloseCode, mut buf: Vec<u8>) {
    wsio::put_close(&mut buf, code.into());
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.write_all(&buf)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::meters::Meters;
    use crate::engine::sid::Sid;
    use crate::engine::transport::TransportKind;

    /// A writer task that panics still ends its count and wakes the idle waiter (the
    /// drain), as a writer that returns does.
    #[tokio::test(start_paused = true)]
    async fn a_writer_that_panics_still_wakes_the_idle_waiter() {
        let idle = Arc::new(Notify::new());
        let writers = Writers::new(Meters::default().websocket, idle.clone());
        let woken = idle.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        writers.spawn_writer(async move {
            let _ = wait.await;
            panic!("a writer that panics (expected in this test)");
        });
        assert_eq!(writers.running(), 1);
        let _ = go.send(());
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("woken by the writer's unwinding, not by a timer");
        assert_eq!(writers.running(), 0);
    }

    /// The reader's and the writer's futures are kept for every connection's whole life,
    /// so whatever they hold across an await counts per idle connection (a 4 KiB array
    /// once did: 7.5 → 11.5 KiB per idle connection in `iorelay-load connect`).
    #[tokio::test]
    async fn the_websocket_tasks_keep_no_buffer_in_their_futures() {
        let (server, _client) = tokio::net::UnixStream::pair().expect("socket pair");
        let (read, write) = WsSocket::Unix(server).split();
        let stream: Ws = Box::new(WebSocketStream::from_raw_socket(read, Role::Server, None).await);
        let session = Session::new(
            Sid::from_client("abc"),
            TransportKind::Websocket,
            8,
            Arc::new(Meters::default()),
            crate::engine::budget::Budget::unlimited(),
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
}
