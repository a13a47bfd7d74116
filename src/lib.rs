//! iorelay: a hardened real-time relay daemon for unmodified socket.io clients.
//!
//! # Layout
//!
//! Modules follow the protocol layers; dependencies point one way (down this list).
//!
//! - [`engine`]: Engine.IO v4 — packets, polling payloads, sessions, the polling and
//!   WebSocket transports and the upgrade between them. Knows nothing of Socket.IO.
//! - [`socketio`]: Socket.IO v5 packets and their parser, binary attachment reassembly.
//!   Pure functions over bytes; knows nothing of rooms.
//! - [`relay`]: namespaces, sockets, rooms, policies, control events (`$join` …), acks and
//!   presence, built on the two layers above.
//! - [`adapter`]: the bus through which the relay reaches sockets: in this process
//!   (local) or across the host's worker processes (peer links, versioned wire format);
//!   the [`cluster`] adds the other nodes.
//! - [`cluster`]: other nodes through Redis, in the formats of the Node adapters
//!   (broadcasts, requests between nodes); a host's gateway answers for its sockets.
//! - [`http`]: the hyper surface: public routing (Engine.IO, forwarding to the owning
//!   worker, static files, the client bundle) and the admin listener (health, metrics,
//!   ops API).
//! - [`webhooks`]: room and membership events POSTed to a receiver in signed batches
//!   (queue, batching, retries); the master or the single process owns the sender.
//! - [`daemon`]: process-level concerns — listeners and socket activation, privilege
//!   drop, master and workers, signals, sd_notify, reload, shutdown.
//! - [`config`]: the config tree, layered loading and validation.
//! - [`telemetry`]: tracing setup and the metrics.
//! - [`ops`]: the client side of the ops subcommands (`status`, `reload`, `rooms`).

pub mod adapter;
pub mod api;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod ops;
pub mod relay;
pub mod socketio;
pub mod telemetry;
pub mod webhooks;

#[cfg(test)]
mod testutil;
