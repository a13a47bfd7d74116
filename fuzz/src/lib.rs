//! The decoders under fuzzing, compiled from the daemon's own source files.
//!
//! The targets could depend on the `iorelay` crate instead, but building it (and its
//! ~200 dependencies: tokio, hyper's server, prometheus, redis, tracing …) with coverage
//! instrumentation takes several minutes on a 2-core CI machine, for code the fuzzer never
//! reaches. The code under test is pure by design (STYLE.md: `socketio` and the Engine.IO
//! packet layer import nothing else from the crate; the worker bus codec only the engine's
//! `Frame`; the config tree only the parsers it validates with), so the modules are mounted
//! here at the same paths as in the daemon (`crate::socketio`, `crate::engine::{packet,
//! payload, origin, proxy}`, `crate::adapter::wire`, `crate::cluster::{answer, format, message}`, `crate::config`, `crate::api::tokens`, `crate::http::host`),
//! and only their few dependencies are built. If one of these files moves, or starts to
//! import more of the crate, this is the one place to follow it.

#[path = "../../src/socketio/mod.rs"]
pub mod socketio;

#[path = "../../src/config/mod.rs"]
pub mod config;

pub mod adapter;
pub mod api;
pub mod cluster;
pub mod engine;
pub mod http;
