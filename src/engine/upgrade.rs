//! The upgrade of a polling session to WebSocket, on the WebSocket's side: the client
//! probes (`2probe`, answered `3probe`), the pending poll is released with a NOOP, the
//! client sends UPGRADE (`5`), and the WebSocket takes the session's queue over. Each
//! step has `upgrade_timeout`; a step that fails sends the session back to polling.
//!
//! The polling side of the same moment (a GET that arrives mid-upgrade) is in
//! `polling`; the table's decision to start an upgrade is in `server`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::packet::Packet;
use super::session::Session;
use super::transport::TransportKind;
use super::websocket::{self, Writers, Ws};
use super::wsio::WriteSide;

/// Start the upgrade of `session` when it is on polling; `false` when it is not (it is
/// on WebSocket already, or another upgrade is under way).
pub(super) fn begin(session: &Session) -> bool {
    if session.transport() != TransportKind::Polling {
        return false;
    }
    session.set_transport(TransportKind::Probing);
    true
}

/// Probe the WebSocket, then hand the session over to it and carry it to its end.
pub(super) async fn run(
    session: Arc<Session>,
    mut stream: Ws,
    sink: WriteSide,
    timeout: Duration,
    writers: &Writers,
) {
    let probe = tokio::time::timeout(timeout, stream.next()).await;
    let probed = matches!(&probe, Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "2probe");
    if !probed {
        tracing::debug!(sid = %session.sid, "upgrade aborted: no probe");
        abandon(&session);
        websocket::close(&sink, CloseCode::Normal, Vec::new()).await;
        return;
    }
    if websocket::write_frame(&sink, &Packet::Pong("probe".into()).encode())
        .await
        .is_err()
    {
        abandon(&session);
        return;
    }
    session.set_transport(TransportKind::Upgrading);
    // Frees a GET the client left pending so that it can pause polling. Never queued:
    // a NOOP must not reach the WebSocket later.
    session.release_poll.notify_waiters();
    let upgraded = loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "5" => break true,
            // A repeated probe is harmless.
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "2probe" => continue,
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            _ => break false,
        }
    };
    if !upgraded || session.is_closed() {
        tracing::debug!(sid = %session.sid, "upgrade aborted: no upgrade packet");
        abandon(&session);
        websocket::close(&sink, CloseCode::Normal, Vec::new()).await;
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
    writers.carry(session, stream, sink, carrier).await;
}

/// Back to polling after a failed upgrade; GETs that waited on it get their NOOP.
pub(super) fn abandon(session: &Session) {
    if !session.is_closed() {
        session.set_transport(TransportKind::Polling);
    }
    session.upgrade_settled.notify_waiters();
}
