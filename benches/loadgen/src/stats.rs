//! Counting: the failure kinds, the per-shard counters that client tasks bump on the hot
//! path and the orchestrator sums, the process-wide monotonic clock that timestamps
//! messages, and the latency histogram's summary.
//!
//! Counters are atomics in one cache-aligned block per shard (thread), so that with
//! several shards no two threads write the same cache line; with the default single
//! shard they are uncontended. Latencies go to a per-shard `hdrhistogram` (1 µs to 60 s,
//! 3 significant digits) that only its own thread touches, merged at the end.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Why a connection or an operation failed. Every failure is counted under one kind and
/// never panics the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// TCP connect refused or failed.
    Tcp,
    /// The WebSocket handshake failed (HTTP error, bad upgrade).
    Handshake,
    /// The first frame was not an Engine.IO open packet.
    Open,
    /// Socket.IO CONNECT to "/" refused (`44`) or answered with something else.
    Namespace,
    /// A `$join` was refused (`"ok":false`) or answered with something unexpected.
    Join,
    /// A step (connect, join, ack, round trip) did not complete within `--timeout`.
    Timeout,
    /// The server closed the connection or the session (`41`, `1`, close frame, EOF)
    /// before the generator did.
    Closed,
    /// The server refused an emit (`"ok":false` ack, or a `$error` event).
    Refused,
    /// A frame the scenario cannot use (a `msg` without its timestamp, an ack for an id
    /// never sent, binary data, a WebSocket error while reading).
    Protocol,
}

impl FailKind {
    /// Every kind, in report order.
    pub const ALL: [FailKind; 9] = [
        FailKind::Tcp,
        FailKind::Handshake,
        FailKind::Open,
        FailKind::Namespace,
        FailKind::Join,
        FailKind::Timeout,
        FailKind::Closed,
        FailKind::Refused,
        FailKind::Protocol,
    ];

    /// The kind's key in `failure_kinds`.
    pub fn name(self) -> &'static str {
        match self {
            FailKind::Tcp => "tcp",
            FailKind::Handshake => "handshake",
            FailKind::Open => "open",
            FailKind::Namespace => "namespace",
            FailKind::Join => "join",
            FailKind::Timeout => "timeout",
            FailKind::Closed => "closed",
            FailKind::Refused => "refused",
            FailKind::Protocol => "protocol",
        }
    }
}

/// Hot-path counters of one shard. Relaxed ordering throughout: the orchestrator reads
/// sums for progress and termination, where a value a moment old is fine.
#[repr(align(128))]
#[derive(Debug)]
pub struct Counters {
    /// Clients whose setup ended (connected, joined when asked, or failed).
    pub setup_done: AtomicU64,
    /// Clients whose setup succeeded.
    pub ready: AtomicU64,
    /// Clients that finished their measured work (echo: their closed loop).
    pub done: AtomicU64,
    /// Client tasks that have ended.
    pub finished: AtomicU64,
    /// `$join` acks with `"ok":true`.
    pub joins_acked: AtomicU64,
    /// `$join`s refused, unanswered or answered with something else.
    pub joins_failed: AtomicU64,
    /// Timestamped `msg` events received (fan-out deliveries).
    pub delivered: AtomicU64,
    /// Deliveries whose sequence number was not above the previous one of that
    /// subscriber (reordered or duplicated).
    pub out_of_order: AtomicU64,
    /// Events other than `msg` received by subscribers (e.g. `$presence`), ignored.
    pub other_events: AtomicU64,
    /// Completed round trips (echo) or acks with `ok` for published messages.
    pub acked: AtomicU64,
    /// Monotonic ns (see [`now_ns`]) of the last delivery on this shard.
    pub last_delivery_ns: AtomicU64,
    /// Failures by [`FailKind`] (same index as `FailKind::ALL`).
    pub failures: [AtomicU64; 9],
    /// Clients per iorelay worker, from the engine sid (see `wire::sid_worker`).
    pub workers: [AtomicU64; 64],
    /// `cross-node`: subscribers ready, per node (index into `--sub-ports`).
    pub node_ready: [AtomicU64; MAX_NODES],
    /// `cross-node`: deliveries, per node.
    pub node_delivered: [AtomicU64; MAX_NODES],
}

/// Most nodes `cross-node` spreads subscribers over (`--sub-ports`).
pub const MAX_NODES: usize = 8;

impl Default for Counters {
    fn default() -> Self {
        Counters {
            setup_done: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            done: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            joins_acked: AtomicU64::new(0),
            joins_failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
            workers: std::array::from_fn(|_| AtomicU64::new(0)),
            node_ready: std::array::from_fn(|_| AtomicU64::new(0)),
            node_delivered: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Count one failure.
    pub fn fail(&self, kind: FailKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Add one counter over every shard.
pub fn sum(shards: &[std::sync::Arc<Counters>], f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    shards.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
}

/// The largest value of one counter over every shard.
pub fn sum_max(shards: &[std::sync::Arc<Counters>], f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    shards
        .iter()
        .map(|c| f(c).load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

/// The process epoch of [`now_ns`]: fixed on first use, shared by every thread.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Monotonic nanoseconds since the process epoch (CLOCK_MONOTONIC through `Instant`, the
/// same clock on every thread): what a `msg` carries as `t` and what latency is
/// measured against.
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant [`now_ns`] counts from.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// A fresh latency histogram: 1 µs to 60 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// `{"count","mean","p50","p90","p99","p999","max"}` in µs, or null with no samples.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "count": h.len(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// Round for the report: 3 decimals.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
