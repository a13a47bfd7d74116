//! The decoders under fuzzing, compiled from the daemon's own source files.
//!
//! The targets could depend on the `iorelay` crate instead, but building it (and its
//! ~200 dependencies: tokio, hyper, figment, prometheus …) with coverage instrumentation
//! takes several minutes on a 2-core CI machine, for code the fuzzer never reaches. The
//! decoders are pure by design (STYLE.md: `socketio` and the Engine.IO packet layer import
//! nothing else from the crate), so the modules are mounted here at the same paths as in
//! the daemon (`crate::socketio`, `crate::engine::{packet, payload}`), and only their few
//! dependencies are built. If one of these files moves, this is the one place to follow it.

#[path = "../../src/socketio/mod.rs"]
pub mod socketio;

pub mod engine;
