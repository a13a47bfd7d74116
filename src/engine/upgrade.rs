//! The upgrade of a polling session to WebSocket, on the WebSocket's side: the client
//! probes (`2probe`, answered `3probe`), the pending poll is released with a NOOP, the
//! client sends UPGRADE (`5`), and the WebSocket takes the session's queue over. Each
//! step has `upgrade_timeout`, a deadline that repeated probes do not push back; a step
//! that fails sends the session back to polling. A session that closes meanwhile (a
//! polling `1`, its ping timeout) ends the upgrade at once: an upgrade never outlives its
//! session, so it stays inside `max_connections` and the drain.
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
    let probe = tokio::select! {
        probe = tokio::time::timeout(timeout, stream.next()) => Some(probe),
        () = session.closed() => None,
    };
    let probed = matches!(&probe, Some(Ok(Some(Ok(WsMessage::Text(t))))) if t.as_str() == "2probe");
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
    let deadline = tokio::time::Instant::now() + timeout;
    let upgraded = loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
            () = session.closed() => break false,
        };
        match next {
            Ok(Some(Ok(WsMessage::Text(t)))) if t.as_str() == "5" => break true,
            // A repeated probe is harmless, but does not buy time.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::meters::Meters;
    use crate::engine::sid::Sid;
    use crate::engine::wsio::WsSocket;
    use futures_util::SinkExt;
    use tokio::net::UnixStream;
    use tokio::time::Instant;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A polling session whose upgrade has begun, its upgrade running over a socket
    /// pair, and the client's end of the WebSocket.
    async fn upgrading() -> (Arc<Session>, WebSocketStream<UnixStream>) {
        let session = Session::new(
            Sid::random(),
            TransportKind::Polling,
            8,
            Arc::new(Meters::default()),
            crate::engine::budget::Budget::unlimited(),
        );
        assert!(begin(&session));
        let (server, client) = UnixStream::pair().expect("socket pair");
        let (read, sink) = WsSocket::Unix(server).split();
        let stream: Ws = Box::new(WebSocketStream::from_raw_socket(read, Role::Server, None).await);
        let upgrading = session.clone();
        tokio::spawn(async move {
            let writers = Writers::new(Meters::default().websocket, Arc::default());
            run(upgrading, stream, sink, TIMEOUT, &writers).await;
        });
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (session, client)
    }

    #[tokio::test(start_paused = true)]
    async fn no_probe_within_the_timeout_sends_the_session_back_to_polling() {
        let start = Instant::now();
        let (session, mut client) = upgrading().await;
        assert_eq!(session.transport(), TransportKind::Probing);
        let msg = client.next().await.expect("a frame").expect("readable");
        assert!(matches!(msg, WsMessage::Close(_)), "{msg:?}");
        assert!(start.elapsed() >= TIMEOUT);
        assert_eq!(session.transport(), TransportKind::Polling);
        assert!(!session.is_closed(), "the session lives on over polling");
    }

    #[tokio::test(start_paused = true)]
    async fn no_upgrade_packet_within_the_timeout_after_the_probe_abandons_too() {
        let (session, mut client) = upgrading().await;
        client.send(WsMessage::text("2probe")).await.expect("sent");
        let pong = client.next().await.expect("a frame").expect("readable");
        assert_eq!(pong, WsMessage::text("3probe"));
        let probed = Instant::now();
        assert_eq!(session.transport(), TransportKind::Upgrading);
        let msg = client.next().await.expect("a frame").expect("readable");
        assert!(matches!(msg, WsMessage::Close(_)), "{msg:?}");
        assert!(probed.elapsed() >= TIMEOUT);
        assert_eq!(session.transport(), TransportKind::Polling);
    }

    #[tokio::test(start_paused = true)]
    async fn the_upgrade_packet_in_time_hands_the_session_to_the_websocket() {
        let (session, mut client) = upgrading().await;
        client.send(WsMessage::text("2probe")).await.expect("sent");
        client.next().await.expect("a frame").expect("readable");
        tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
        client.send(WsMessage::text("5")).await.expect("sent");
        // The queue is now the WebSocket's: what is sent arrives there.
        session.send_frame(crate::engine::Frame::message("hi"));
        let msg = client.next().await.expect("a frame").expect("readable");
        assert_eq!(msg, WsMessage::text("4hi"));
        assert_eq!(session.transport(), TransportKind::Websocket);
    }

    /// Issue 13, item 4: a session closed mid-upgrade (a polling `1`) ends the upgrade
    /// at once, however many probes the client keeps sending.
    #[tokio::test(start_paused = true)]
    async fn a_session_closed_mid_upgrade_ends_the_upgrade() {
        let (session, mut client) = upgrading().await;
        client.send(WsMessage::text("2probe")).await.expect("sent");
        client.next().await.expect("a frame").expect("readable");
        session.close(crate::engine::CloseReason::ClientClose);
        client.send(WsMessage::text("2probe")).await.ok();
        let msg = client.next().await.expect("a frame").expect("readable");
        assert!(matches!(msg, WsMessage::Close(_)), "{msg:?}");

        let (session, mut client) = upgrading().await;
        session.close(crate::engine::CloseReason::ClientClose);
        let msg = client.next().await.expect("a frame").expect("readable");
        assert!(matches!(msg, WsMessage::Close(_)), "{msg:?}");
    }

    /// Repeated probes do not push the upgrade's deadline back.
    #[tokio::test(start_paused = true)]
    async fn repeated_probes_do_not_extend_the_deadline() {
        let (session, mut client) = upgrading().await;
        client.send(WsMessage::text("2probe")).await.expect("sent");
        client.next().await.expect("a frame").expect("readable");
        let probed = Instant::now();
        for _ in 0..3 {
            tokio::time::sleep(TIMEOUT / 2).await;
            client.send(WsMessage::text("2probe")).await.ok();
        }
        let msg = client.next().await.expect("a frame").expect("readable");
        assert!(matches!(msg, WsMessage::Close(_)), "{msg:?}");
        assert!(probed.elapsed() < TIMEOUT * 2, "{:?}", probed.elapsed());
        assert_eq!(session.transport(), TransportKind::Polling);
    }
}
