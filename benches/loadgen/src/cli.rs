//! The command line: one subcommand per scenario, options shared by all of them
//! (target, label, server pid, threads, bounds) accepted before or after it.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

use crate::stats::MAX_NODES;

/// End-to-end load generator for iorelay and its peers: Engine.IO v4 / Socket.IO v5
/// over WebSocket, one JSON line per run on stdout, progress on stderr.
#[derive(Debug, Parser)]
#[command(name = "iorelay-load", version)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N connections (bounded concurrency), hold them, read the server's RSS:
    /// connections/s, KiB and CPU µs per connection.
    Connect(ConnectArgs),
    /// N subscribers in one room, one publisher at a fixed rate (or max): deliveries/s,
    /// undelivered, latency percentiles.
    Fanout(FanoutArgs),
    /// Fan-out that also reports how subscribers spread over iorelay's workers; run it
    /// against `server.workers = 2` and compare with `fanout` on one worker.
    CrossWorker(FanoutArgs),
    /// Fan-out across the nodes of a cluster: the publisher on `--port`, subscribers
    /// alternating over `--sub-ports`; reported per node as well.
    CrossNode(CrossNodeArgs),
    /// M clients each emitting `echo` with an ack in a closed loop: round trips/s and
    /// latency percentiles.
    Echo(EchoArgs),
}

/// Options for every scenario.
#[derive(Debug, Args)]
#[command(next_help_heading = "Shared options")]
pub struct Common {
    /// Server address; loopback only (127.0.0.0/8 or ::1).
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Server port.
    #[arg(long, global = true, default_value_t = 3990)]
    pub port: u16,
    /// Socket.IO endpoint path.
    #[arg(long, global = true, default_value = "/socket.io/")]
    pub path: String,
    /// Free text copied to the JSON line (e.g. the server's name).
    #[arg(long, global = true, default_value = "")]
    pub label: String,
    /// The server's pid: its CPU and RSS (with all its descendants) are measured.
    /// Several, comma-separated (the nodes of a cluster): summed over every tree.
    /// Without it those fields are null.
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Generator threads, each with a single-threaded runtime; clients are spread over
    /// them round-robin.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Most clients in setup (connect, join) at once.
    #[arg(long, global = true, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds each setup step, ack or round trip may take before it is a failure.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub timeout: f64,
    /// Seconds a whole setup phase (every client connected and joined) may take; clients
    /// not ready by then fail with a timeout.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// WebSocket read buffer per connection, bytes.
    #[arg(long, global = true, default_value_t = 4096)]
    pub read_buffer: usize,
    /// Room that fan-out subscribers and the publisher join.
    #[arg(long, global = true, default_value = "bench")]
    pub room: String,
    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// `connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// Seconds to wait after the last connection before reading the server's RSS.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Also `$join` the room with each connection (membership memory included).
    #[arg(long)]
    pub join: bool,
}

/// `fanout` and `cross-worker`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Subscribers (the publisher comes on top).
    #[arg(long, default_value_t = 1000)]
    pub clients: u64,
    /// Messages per second from the publisher; 0 is max mode.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Max mode: publish as fast as the in-flight window allows.
    #[arg(long)]
    pub max: bool,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Most messages to publish (default: rate × duration; 10,000,000 in max mode).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Size of each message's payload object, bytes (at least ~40 for the fields).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Max mode: most messages not yet received by every subscriber.
    #[arg(long, default_value_t = 64)]
    pub in_flight: u64,
    /// Seconds without a new delivery after which the drain (and a stalled max-mode
    /// publisher) gives up.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Longest drain in all, seconds, even while deliveries still come (a server far
    /// behind a fixed rate); what has not arrived by then is undelivered. Default: no
    /// bound but `--drain`.
    #[arg(long)]
    pub drain_max: Option<f64>,
}

/// `cross-node`.
#[derive(Debug, Args)]
pub struct CrossNodeArgs {
    /// The fan-out itself.
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Ports of the nodes the subscribers connect to, comma-separated: subscriber i
    /// goes to port i mod n. The publisher connects to `--port` (usually the first).
    #[arg(long, value_delimiter = ',', required = true)]
    pub sub_ports: Vec<u16>,
}

/// `echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Clients, each with one round trip outstanding.
    #[arg(long, default_value_t = 50)]
    pub clients: u64,
    /// Seconds of round trips.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Most round trips in all (default 10,000,000).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Size of each emit's payload object, bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
}

impl Cli {
    /// Check what clap cannot: every number of seconds and the rate must be finite and
    /// not negative (the timeout positive), so that no later conversion can fail.
    pub fn validate(&self) -> Result<(), String> {
        let mut checks: Vec<(&str, f64)> = vec![
            ("--timeout", self.common.timeout),
            ("--setup-timeout", self.common.setup_timeout),
        ];
        match &self.scenario {
            Scenario::Connect(a) => checks.push(("--settle", a.settle)),
            Scenario::Fanout(a)
            | Scenario::CrossWorker(a)
            | Scenario::CrossNode(CrossNodeArgs { fanout: a, .. }) => {
                checks.extend([
                    ("--rate", a.rate),
                    ("--duration", a.duration),
                    ("--drain", a.drain),
                    ("--drain-max", a.drain_max.unwrap_or(0.0)),
                ]);
            }
            Scenario::Echo(a) => checks.push(("--duration", a.duration)),
        }
        for (name, v) in checks {
            if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
                return Err(format!(
                    "{name} must be between 0 and {MAX_SECONDS}, not {v}"
                ));
            }
        }
        if self.common.timeout <= 0.0 {
            return Err("--timeout must be positive".into());
        }
        if let Scenario::CrossNode(a) = &self.scenario {
            if !(1..=MAX_NODES).contains(&a.sub_ports.len()) {
                return Err(format!("--sub-ports takes 1 to {MAX_NODES} ports"));
            }
        }
        let c = &self.common;
        for (name, v, lo, hi) in [
            ("--threads", c.threads, 1, 256),
            ("--concurrency", c.concurrency, 1, 1 << 20),
            ("--read-buffer", c.read_buffer, 256, 16 << 20),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{name} must be between {lo} and {hi}, not {v}"));
            }
        }
        Ok(())
    }
}

/// Largest number of seconds (or messages per second) accepted: a week.
const MAX_SECONDS: f64 = 604_800.0;
