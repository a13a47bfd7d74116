//! `iorelay-load`: the end-to-end load generator for iorelay and the peer servers it is
//! compared with (benches/peers). It speaks Engine.IO v4 + Socket.IO v5 over WebSocket
//! itself (tokio + tokio-tungstenite as a plain WebSocket client), runs one scenario,
//! prints exactly one JSON line on stdout and human progress on stderr.
//!
//! # Running
//!
//! ```text
//! taskset -c 0 target/release/iorelay --config benches/iorelay-bench.toml &
//! taskset -c 1 target/release/iorelay-load fanout --clients 1000 --rate 1000 \
//!     --duration 10 --label iorelay --server-pid $!
//! ```
//!
//! Options shared by every scenario (before or after the scenario name): `--host`
//! (loopback only, default 127.0.0.1), `--port` (3990), `--path` (/socket.io/),
//! `--label`, `--server-pid` (one pid, or several comma-separated), `--threads` (1), `--concurrency` (100 clients in setup at
//! once), `--timeout` (10 s per setup step, ack or round trip), `--setup-timeout` (60 s
//! for a whole setup phase), `--read-buffer` (4 KiB per connection), `--room` (bench),
//! `--quiet`.
//!
//! # Scenarios
//!
//! - `connect --clients N [--settle S] [--join]`: open N connections, hold them, read
//!   the server's RSS after S s, close. Connections/s, KiB and CPU µs per connection.
//! - `fanout --clients N --rate R|--max --duration S [--messages M] [--payload B]
//!   [--in-flight K] [--drain S] [--drain-max S]`: N subscribers `$join` the room, one
//!   publisher joins it and emits `msg`; deliveries/s, undelivered, latency from the
//!   timestamp each message carries.
//! - `cross-worker`: the same as `fanout`, meant for iorelay with `server.workers = 2`,
//!   reported with the per-worker spread of subscribers for comparison with `fanout` on
//!   one worker.
//! - `cross-node --sub-ports A,B ...` (the `fanout` options): the same across the nodes
//!   of a cluster (iorelay with `[cluster] adapter = "redis"`, Node socket.io with
//!   `@socket.io/redis-adapter`): the publisher on `--port`, subscriber i on
//!   `--sub-ports[i mod n]`; with `--server-pid A,B` the CPU is that of both nodes.
//! - `echo --clients M --duration S`: each client emits `echo` with an ack in a closed
//!   loop; round trips/s and their latency.
//!
//! Every scenario is bounded in time and in count: setup steps by `--timeout` and each
//! setup phase by `--setup-timeout`, publishing by `--duration` and `--messages`
//! (default rate × duration; 10,000,000 in max mode and for echo), the drain by
//! `--drain` s without progress (and by `--drain-max` s in all, if given), the close by
//! 10 s.
//!
//! # The in-flight rule (fan-out max mode)
//!
//! A message is in flight from its send until every live subscriber has received it;
//! the publisher keeps fewer than K (`--in-flight`, 64) in flight, i.e.
//! `sent − received by the slowest subscriber < K`. Acks are not used for this: a
//! server acks once it queued the fan-out, so an ack window would let its output queues
//! grow until it drops subscribers as slow consumers. See `window.rs`.
//!
//! # What the generator costs
//!
//! One current-thread tokio runtime by default (`--threads` adds more, one per thread,
//! clients round-robin). A subscriber recognises a `msg` by its prefix and reads its
//! `t` and `s` by scanning the text (no JSON parser); counters are relaxed atomics in a
//! cache-aligned block per thread; latencies go to a per-thread HDR histogram. The JSON
//! line reports `loadgen_cpu_pct`: near 100 means the generator, not the server, was
//! the limit.
//!
//! Two things to keep in mind when reading figures. A fan-out latency includes the
//! generator's own serial reading of the burst: one message reaches N sockets that one
//! thread reads one after the other, so compare latencies across servers measured the
//! same way, not as absolute delivery times. And on loopback the sender's CPU time
//! includes the kernel's delivery into the receiving socket, so much of both
//! processes' CPU is TCP stack work (most of the generator's in `echo`).
//!
//! # Server CPU and memory
//!
//! With `--server-pid`, the server is that pid and all its descendants (an iorelay master
//! and its workers), or every given pid and their descendants summed, walked through
//! `/proc/*/stat` at each sample. CPU is `utime + stime + cutime + cstime` of
//! `/proc/<pid>/stat` (clock ticks, converted with `sysconf(_SC_CLK_TCK)`; 10 ms
//! resolution), read before and after the measured phase.
//! RSS is the sum of `VmRSS` from `/proc/<pid>/status`. Without `--server-pid` these
//! fields are null; so are they when one of several pids is gone by a sample.
//!
//! # The JSON line
//!
//! Every line: `scenario`, `label`, `tool` (name and version), `server_pid` (the first),
//! `server_pids` (all), `params` (every option in force), `wall_s` (the measured phase),
//! `failures` (total),
//! `failure_kinds` (by kind: tcp, handshake, open, namespace, join, timeout, closed,
//! refused, protocol; only non-zero kinds), `joins_acked`, `joins_failed`, `workers`
//! (clients per iorelay worker index from the engine sid, null for other servers),
//! `latency_us` (`count`, `mean`, `p50`, `p90`, `p99`, `p999`, `max`, or null),
//! `server_cpu_us`, `server_cpu_us_per_unit`, `server_cpu_pct` (of one core over the
//! phase), `server_processes`, `loadgen_cpu_us`, `loadgen_cpu_pct`.
//!
//! - `connect`: `connected`, `connections_per_s`, `closed_before_rss`,
//!   `server_rss_kib_before`/`_after` (before the first connection / after the settle),
//!   `kib_per_conn`; unit = connection; `latency_us` = setup time per connection.
//! - `fanout`/`cross-worker`: `setup_s`, `publish_s`, `drain_s`, `drained` (every
//!   expected delivery and ack arrived), `stalled` (max mode gave up on a full window),
//!   `subscribers`, `subscribers_joined`, `publisher_ok`, `sent`, `expected`
//!   (= sent × subscribers_joined), `delivered`, `undelivered` (= expected − delivered),
//!   `excess`, `out_of_order`, `other_events`, `publish_acked`, `publish_refused`,
//!   `sent_per_s`, `delivered_per_s` (first send to last delivery), `publisher_worker`,
//!   `cross_worker_subscribers` (subscribers on another worker than the publisher's),
//!   `server_rss_kib_before`/`_after` (around the phase); unit = delivery.
//! - `cross-node`: the `fanout` fields, and `nodes` (per sub port: `port`,
//!   `subscribers_joined`, `expected`, `delivered`, `undelivered`, `latency_us`),
//!   `publisher_port`, `cross_node_subscribers` (joined on another port than the
//!   publisher's).
//! - `echo`: `setup_s`, `clients_ready`, `round_trips`, `refused`, `round_trips_per_s`,
//!   `server_rss_kib_before`/`_after`; unit = round trip.
//!
//! The exit status is 0 whenever a line was printed (judge the line), 2 for a usage
//! error, 1 when the generator itself could not run.
//!
//! # Layout
//!
//! `cli` the options; `wire` the protocol text; `client` one connection's setup; `shard`
//! the threads and runtimes; `run` the shared phases and fields; `window` max mode's
//! flow control; `stats` counters, clock, histograms; `system` /proc, rusage, rlimit;
//! `connect`, `fanout`, `echo` the scenarios.

mod cli;
mod client;
mod connect;
mod echo;
mod fanout;
mod run;
mod shard;
mod stats;
mod system;
mod window;
mod wire;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use serde_json::{Map, Value, json};

use cli::{Cli, Scenario};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let c = &cli.common;
    if !c.host.is_loopback() {
        eprintln!(
            "iorelay-load: --host must be a loopback address, not {}",
            c.host
        );
        return ExitCode::from(2);
    }
    if let Err(e) = cli.validate() {
        eprintln!("iorelay-load: {e}");
        return ExitCode::from(2);
    }
    // Fix the clock's epoch before any message is stamped.
    let _ = stats::now_ns();
    let nofile = system::raise_nofile_limit();
    let server = if c.server_pid.is_empty() {
        None
    } else {
        match system::Server::new(&c.server_pid) {
            Ok(s) => Some(s),
            Err(pid) => {
                eprintln!("iorelay-load: no process {pid} (--server-pid)");
                return ExitCode::from(2);
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iorelay-load: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let line = local.block_on(&rt, async {
        let shards = shard::Shards::start(c.threads)?;
        let target = client::Target::new(SocketAddr::new(c.host, c.port), &c.path, c.read_buffer);
        let env = run::Env {
            run: run::Run::new(
                target,
                Duration::from_secs_f64(c.timeout),
                Duration::from_secs_f64(c.setup_timeout),
                c.concurrency,
            ),
            shards,
            server,
            quiet: c.quiet,
            room: c.room.clone(),
            head: head(&cli, nofile),
        };
        let line = match &cli.scenario {
            Scenario::Connect(a) => connect::connect(&env, a).await,
            Scenario::Fanout(a) => fanout::fanout(&env, a, false).await,
            Scenario::CrossWorker(a) => fanout::fanout(&env, a, true).await,
            Scenario::CrossNode(a) => fanout::cross_node(&env, a).await,
            Scenario::Echo(a) => echo::echo(&env, a).await,
        };
        env.shards.stop();
        Ok::<Value, std::io::Error>(line)
    });
    match line {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iorelay-load: {e}");
            ExitCode::from(1)
        }
    }
}

/// The head of the JSON line: what ran, against what, with which shared options.
fn head(cli: &Cli, nofile: u64) -> Map<String, Value> {
    let c = &cli.common;
    let scenario = match cli.scenario {
        Scenario::Connect(_) => "connect",
        Scenario::Fanout(_) => "fanout",
        Scenario::CrossWorker(_) => "cross-worker",
        Scenario::CrossNode(_) => "cross-node",
        Scenario::Echo(_) => "echo",
    };
    let value = json!({
        "scenario": scenario,
        "label": c.label,
        "tool": concat!("iorelay-load ", env!("CARGO_PKG_VERSION")),
        // The first pid, as before there could be several; every one in `server_pids`.
        "server_pid": c.server_pid.first(),
        "server_pids": c.server_pid,
        "params": {
            "host": c.host.to_string(),
            "port": c.port,
            "path": c.path,
            "room": c.room,
            "threads": c.threads.max(1),
            "concurrency": c.concurrency,
            "timeout_s": c.timeout,
            "setup_timeout_s": c.setup_timeout,
            "read_buffer": c.read_buffer,
            "nofile_limit": nofile,
        },
    });
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
