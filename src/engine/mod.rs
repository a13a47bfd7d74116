//! Engine.IO v4: the transport layer under Socket.IO. Knows nothing of Socket.IO: it
//! hands whole text and binary messages to a [`Connection`] and takes encoded [`Frame`]s
//! back.
//!
//! - The wire: packets ([`packet`]), polling payloads ([`payload`]), session ids
//!   ([`sid`]), the transports' names ([`Transport`]), the official error answers
//!   ([`error`]).
//! - The endpoint ([`server`]): the session table, each request parsed once and
//!   dispatched with one match to a transport; the settings it runs with ([`settings`]).
//! - Who may connect and from where: the origin policy and CORS answers ([`origin`]),
//!   the client's address behind trusted proxies ([`proxy`]), the per-address session
//!   and handshake-rate limits ([`admission`]).
//! - The transports: long-polling (`polling`), WebSocket (`websocket`, over a split
//!   socket and the server's own frame writing in `wsio`), and the upgrade from one to
//!   the other (`upgrade`).
//! - A session ([`session`]): its state, heartbeat and close; what it sends
//!   ([`Outgoing`]), the bounded queue that holds it while polling carries the session
//!   (`queue`), and a WebSocket session's output with the flusher that writes it
//!   (`outbox`), and the worker-wide budget for all that output (`budget`).
//! - Its instruments ([`meters`]) and a bare echo handler for conformance suites
//!   ([`echo`]).
//!
//! Dependencies inside point one way: `server` → the transports → `session` →
//! `outbox`/`queue` → `outgoing`, `wsio` and the wire types.

pub mod admission;
pub(crate) mod budget;
pub mod echo;
pub mod error;
pub mod meters;
pub mod origin;
mod outbox;
mod outgoing;
pub mod packet;
pub mod payload;
mod polling;
pub mod proxy;
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
pub use origin::Origins;
pub use outgoing::{Outgoing, PACE};
pub use packet::{Frame, Packet, PacketError};
pub use proxy::TrustedProxies;
pub use server::Engine;
pub use session::{BoxFuture, CloseReason, Connection, Handler, HandshakeInfo, Message, Session};
pub use settings::Settings;
pub use sid::Sid;
pub use transport::{Transport, TransportKind};
