//! One client connection: TCP to the loopback target, the WebSocket handshake on
//! `GET <path>?EIO=4&transport=websocket`, the Engine.IO open packet, Socket.IO CONNECT
//! to "/", and `$join` with its ack. After setup a scenario drives `Conn::ws` directly in
//! its own read loop (answering pings `2` with `3` itself), so the hot path has no
//! wrapper in between.
//!
//! Owns: the setup steps and their failure kinds. Does not own: timeouts (the caller
//! wraps each step in `--timeout`) or counting (the scenarios count).

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::stats::FailKind;
use crate::wire::{self, AckStatus, Kind};

/// The WebSocket of one client.
pub type Ws = WebSocketStream<TcpStream>;

/// The Engine.IO pong, sent for every ping.
pub const PONG: Utf8Bytes = Utf8Bytes::from_static("3");

/// Where and how clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's loopback address.
    pub addr: SocketAddr,
    /// `ws://host:port/<path>?EIO=4&transport=websocket`.
    pub uri: String,
    /// Per-connection WebSocket buffers: small, since a run holds thousands.
    pub config: WebSocketConfig,
}

impl Target {
    /// A target on `addr` with the Socket.IO endpoint at `path` (e.g. `/socket.io/`).
    pub fn new(addr: SocketAddr, path: &str, read_buffer: usize) -> Target {
        Target {
            addr,
            uri: format!("ws://{addr}{path}?EIO=4&transport=websocket"),
            config: WebSocketConfig::default()
                .read_buffer_size(read_buffer)
                .write_buffer_size(16 * 1024)
                .max_message_size(Some(16 << 20))
                .max_frame_size(Some(16 << 20)),
        }
    }
}

impl Target {
    /// The same target on another port of the same host (another node of a cluster).
    pub fn on_port(&self, port: u16) -> Target {
        let mut addr = self.addr;
        addr.set_port(port);
        let uri = self
            .uri
            .replacen(&self.addr.to_string(), &addr.to_string(), 1);
        Target {
            addr,
            uri,
            config: self.config,
        }
    }
}

/// A client connected to namespace "/".
pub struct Conn {
    /// The WebSocket, for the scenario's read loop.
    pub ws: Ws,
    /// The engine sid from the open packet.
    pub sid: String,
    /// The next ack id to use.
    next_ack: u64,
}

impl Conn {
    /// Connect, open the Engine.IO session and join namespace "/".
    pub async fn open(target: &Target) -> Result<Conn, FailKind> {
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|_| FailKind::Tcp)?;
        // Every emit is one small frame that should leave now.
        let _ = tcp.set_nodelay(true);
        let (ws, _response) = tokio_tungstenite::client_async_with_config(
            target.uri.as_str(),
            tcp,
            Some(target.config),
        )
        .await
        .map_err(|_| FailKind::Handshake)?;
        let mut conn = Conn {
            ws,
            sid: String::new(),
            next_ack: 0,
        };
        let first = conn.recv_text().await.map_err(|k| match k {
            FailKind::Protocol => FailKind::Open,
            other => other,
        })?;
        conn.sid = wire::open_sid(&first).ok_or(FailKind::Open)?;
        conn.send(Utf8Bytes::from_static("40")).await?;
        loop {
            let text = conn.recv_text().await?;
            match wire::classify(&text) {
                Kind::Connected => return Ok(conn),
                Kind::ConnectError => return Err(FailKind::Namespace),
                Kind::Disconnect => return Err(FailKind::Closed),
                Kind::Ping => conn.send(PONG).await?,
                // Nothing else should come before the CONNECT reply; skip it.
                _ => {}
            }
        }
    }

    /// The next ack id.
    pub fn ack_id(&mut self) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        id
    }

    /// `$join` `room` and wait for its ack, which must say `"ok":true`.
    pub async fn join(&mut self, room: &str) -> Result<(), FailKind> {
        let id = self.ack_id();
        self.send(wire::join(id, room).into()).await?;
        loop {
            let text = self.recv_text().await?;
            match wire::classify(&text) {
                Kind::Ack(got, body) if got == id => {
                    return match wire::ack_status(body) {
                        AckStatus::Ok => Ok(()),
                        AckStatus::Refused | AckStatus::Plain => Err(FailKind::Join),
                    };
                }
                Kind::Ping => self.send(PONG).await?,
                Kind::Disconnect => return Err(FailKind::Closed),
                // Events (e.g. `$presence` of an earlier joiner) may come first.
                _ => {}
            }
        }
    }

    /// Send one text frame.
    pub async fn send(&mut self, text: Utf8Bytes) -> Result<(), FailKind> {
        self.ws
            .send(Message::Text(text))
            .await
            .map_err(|_| FailKind::Closed)
    }

    /// The next text frame (skipping WebSocket control frames); the end of the stream is
    /// [`FailKind::Closed`], binary data or a read error [`FailKind::Protocol`].
    pub async fn recv_text(&mut self) -> Result<Utf8Bytes, FailKind> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Close(_))) | None => return Err(FailKind::Closed),
                Some(Ok(Message::Binary(_))) => return Err(FailKind::Protocol),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(read_error(&e)),
            }
        }
    }

    /// Close politely: a WebSocket close frame, bounded in time, then drop.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// The failure kind of a WebSocket read error: a reset or EOF is the server closing,
/// anything else (bad frame, invalid UTF-8) is a protocol failure.
pub fn read_error(e: &tokio_tungstenite::tungstenite::Error) -> FailKind {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        E::ConnectionClosed
        | E::AlreadyClosed
        | E::Io(_)
        | E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => FailKind::Closed,
        _ => FailKind::Protocol,
    }
}
