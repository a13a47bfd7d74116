//! Engine.IO v4: the transport layer under Socket.IO.
//!
//! Owns packets ([`packet`]), polling payloads ([`payload`]), sessions ([`session`]), the
//! long-polling and WebSocket transports and the upgrade between them ([`server`]), a
//! WebSocket's split socket and the server's own frame writing (`wsio`), a WebSocket
//! session's output and the flusher that writes it (`outbox`), the queue before it (`queue`), and the official error
//! answers ([`error`]). Knows nothing of Socket.IO: it hands whole text
//! and binary messages to a [`Connection`] and takes encoded [`Frame`]s back.

pub mod echo;
pub mod error;
pub mod meters;
mod outbox;
mod outgoing;
pub mod packet;
pub mod payload;
mod polling;
mod queue;
pub mod server;
pub mod session;
pub mod settings;
pub mod sid;
mod transport;
mod upgrade;
mod websocket;
mod wsio;

pub use error::RequestError;
pub use meters::{Meters, TransportBytes};
pub use outgoing::Outgoing;
pub use packet::{Frame, Packet, PacketError};
pub use server::Engine;
pub use session::{BoxFuture, CloseReason, Connection, Handler, HandshakeInfo, Message, Session};
pub use settings::Settings;
pub use sid::Sid;
pub use transport::{Transport, TransportKind};
