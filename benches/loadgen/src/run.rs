//! What every scenario shares: the run-wide state client tasks see on any shard (target,
//! setup permits, the go and stop signals), the bounded setup of one client, waiting on
//! the shards' counters, server and self measurement around the measured phase, and
//! the fields common to every JSON line.
//!
//! Owns: the phases that are not specific to a scenario. Does not own: a scenario's
//! hot loop or its own fields.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};

use crate::client::{Conn, Target};
use crate::shard::Shards;
use crate::stats::{self, Counters, FailKind, r3};
use crate::system::{self, Server};
use crate::wire;

/// Run-wide state, shared by every client task on every shard.
#[derive(Debug)]
pub struct Run {
    /// Where to connect.
    pub target: Target,
    /// Bound of each setup step (connect, join) and of each awaited reply.
    pub timeout: Duration,
    /// Bound of a whole setup phase (all clients, queued for permits included).
    setup_timeout: Duration,
    /// End of the current setup phase, ns on the [`stats::now_ns`] clock.
    setup_deadline_ns: AtomicU64,
    /// At most `--concurrency` clients in setup at once.
    pub permits: Semaphore,
    /// Set once: the measured phase starts (clients that wait for it begin).
    pub go: watch::Sender<bool>,
    /// Set once: clients stop and close.
    pub stop: watch::Sender<bool>,
}

impl Run {
    /// Run-wide state for a target.
    pub fn new(
        target: Target,
        timeout: Duration,
        setup_timeout: Duration,
        concurrency: usize,
    ) -> Arc<Run> {
        Arc::new(Run {
            target,
            timeout,
            setup_timeout,
            setup_deadline_ns: AtomicU64::new(u64::MAX),
            permits: Semaphore::new(concurrency.max(1)),
            go: watch::channel(false).0,
            stop: watch::channel(false).0,
        })
    }
}

impl Run {
    /// A setup phase starts now: every client set up in it must be ready within
    /// `--setup-timeout`, or it fails with a timeout.
    pub fn begin_setup(&self) {
        let limit = u64::try_from(self.setup_timeout.as_nanos()).unwrap_or(u64::MAX);
        self.setup_deadline_ns
            .store(stats::now_ns().saturating_add(limit), Ordering::Relaxed);
    }

    /// The deadline of one setup step starting now: `--timeout` from now, or the end of
    /// the phase if sooner.
    fn step_deadline(&self) -> tokio::time::Instant {
        let phase = self.setup_deadline_ns.load(Ordering::Relaxed);
        let step = Instant::now() + self.timeout;
        let end = stats::epoch()
            .checked_add(Duration::from_nanos(phase))
            .map_or(step, |p| p.min(step));
        tokio::time::Instant::from_std(end)
    }
}

/// Wait until a `watch<bool>` is true (or its sender is gone, which also means "stop").
pub async fn flag(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Set up one client within the run's bounds: connect to "/", then `$join` `room` if
/// given. Counts the outcome (setup_done, ready, joins, failures, worker, setup time in
/// the histogram when `time_setup`) and returns the connection when it is ready.
pub async fn setup(
    run: &Run,
    counters: &Counters,
    hist: Option<&std::cell::RefCell<hdrhistogram::Histogram<u64>>>,
    room: Option<&str>,
) -> Option<Conn> {
    setup_to(run, &run.target, counters, hist, room).await
}

/// [`setup`] against `target` instead of the run's (another node of a cluster).
pub async fn setup_to(
    run: &Run,
    target: &Target,
    counters: &Counters,
    hist: Option<&std::cell::RefCell<hdrhistogram::Histogram<u64>>>,
    room: Option<&str>,
) -> Option<Conn> {
    let outcome = async {
        // Waiting for a permit counts against the phase only.
        let _permit = tokio::time::timeout_at(
            tokio::time::Instant::from_std(
                stats::epoch()
                    .checked_add(Duration::from_nanos(
                        run.setup_deadline_ns.load(Ordering::Relaxed),
                    ))
                    .unwrap_or_else(|| Instant::now() + run.setup_timeout),
            ),
            run.permits.acquire(),
        )
        .await
        .map_err(|_| FailKind::Timeout)?
        // The semaphore is never closed.
        .map_err(|_| FailKind::Timeout)?;
        let started = Instant::now();
        let mut conn = bounded(run.step_deadline(), Conn::open(target)).await?;
        if let Some(room) = room {
            match bounded(run.step_deadline(), conn.join(room)).await {
                Ok(()) => {
                    counters.joins_acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(kind) => {
                    counters.joins_failed.fetch_add(1, Ordering::Relaxed);
                    return Err(kind);
                }
            }
        }
        if let Some(hist) = hist {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            hist.borrow_mut().saturating_record(us.max(1));
        }
        Ok(conn)
    }
    .await;
    counters.setup_done.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Ok(conn) => {
            if let Some(w) = wire::sid_worker(&conn.sid) {
                counters.workers[w].fetch_add(1, Ordering::Relaxed);
            }
            counters.ready.fetch_add(1, Ordering::Relaxed);
            Some(conn)
        }
        Err(kind) => {
            counters.fail(kind);
            None
        }
    }
}

/// A step bounded by `deadline`; running out is [`FailKind::Timeout`].
async fn bounded<T>(
    deadline: tokio::time::Instant,
    step: impl Future<Output = Result<T, FailKind>>,
) -> Result<T, FailKind> {
    tokio::time::timeout_at(deadline, step)
        .await
        .unwrap_or(Err(FailKind::Timeout))
}

/// Progress on stderr (the JSON line alone goes to stdout).
pub struct Progress {
    quiet: bool,
    last: Instant,
}

impl Progress {
    /// A progress printer; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            last: Instant::now(),
        }
    }

    /// Print `line()` at most once a second.
    pub fn tick(&mut self, line: impl FnOnce() -> String) {
        if !self.quiet && self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            eprintln!("{}", line());
        }
    }

    /// Print now.
    pub fn say(&self, line: impl FnOnce() -> String) {
        if !self.quiet {
            eprintln!("{}", line());
        }
    }
}

/// How often the orchestrator looks at the counters.
pub const POLL: Duration = Duration::from_millis(10);

/// Wait until every one of `n` clients has finished its setup. Each setup is bounded,
/// so this ends; `progress` says how far it got.
pub async fn wait_setup(shards: &Shards, n: u64, what: &str, progress: &mut Progress) {
    loop {
        let done = stats::sum(shards.counters(), |c| &c.setup_done);
        if done >= n {
            return;
        }
        progress.tick(|| {
            let ready = stats::sum(shards.counters(), |c| &c.ready);
            format!("{what}: {done}/{n} set up, {ready} ready")
        });
        tokio::time::sleep(POLL).await;
    }
}

/// Signal stop and wait (bounded) until `n` client tasks have ended.
pub async fn stop_and_wait(run: &Run, shards: &Shards, n: u64) {
    run.stop.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats::sum(shards.counters(), |c| &c.finished) < n && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Measurement of the server and of the generator around the measured phase.
pub struct Meter {
    server: Option<Server>,
    before: Option<system::Sample>,
    after: Option<system::Sample>,
    self_before: u64,
    self_after: u64,
    started: Instant,
    wall: Duration,
}

impl Meter {
    /// A meter for `--server-pid` (none: the server fields are null).
    pub fn new(server: Option<Server>) -> Meter {
        Meter {
            server,
            before: None,
            after: None,
            self_before: 0,
            self_after: 0,
            started: Instant::now(),
            wall: Duration::ZERO,
        }
    }

    /// A server sample now (for RSS outside the measured phase).
    pub fn sample(&self) -> Option<system::Sample> {
        self.server.as_ref().and_then(Server::sample)
    }

    /// The measured phase starts.
    pub fn start(&mut self) {
        self.before = self.sample();
        self.self_before = system::self_cpu_us();
        self.started = Instant::now();
    }

    /// The measured phase ends.
    pub fn end(&mut self) {
        self.wall = self.started.elapsed();
        self.self_after = system::self_cpu_us();
        self.after = self.sample();
    }

    /// Length of the measured phase.
    pub fn wall(&self) -> Duration {
        self.wall
    }

    /// Server CPU µs over the measured phase.
    pub fn server_cpu_us(&self) -> Option<u64> {
        Some(self.after?.cpu_us.saturating_sub(self.before?.cpu_us))
    }

    /// `server_rss_kib_before` and `server_rss_kib_after` (the phase's two samples)
    /// into `out`.
    pub fn fill_rss(&self, out: &mut Map<String, Value>) {
        out.insert(
            "server_rss_kib_before".into(),
            json!(self.before.map(|s| s.rss_kib)),
        );
        out.insert(
            "server_rss_kib_after".into(),
            json!(self.after.map(|s| s.rss_kib)),
        );
    }

    /// `server_cpu_us`, `server_cpu_us_per_unit` (per `units`), `server_processes`,
    /// `loadgen_cpu_us`, `loadgen_cpu_pct` into `out`.
    pub fn fill(&self, out: &mut Map<String, Value>, units: u64) {
        let cpu = self.server_cpu_us();
        out.insert("server_cpu_us".into(), json!(cpu));
        out.insert(
            "server_cpu_us_per_unit".into(),
            json!(
                cpu.filter(|_| units > 0)
                    .map(|c| r3(c as f64 / units as f64))
            ),
        );
        out.insert(
            "server_cpu_pct".into(),
            json!(cpu.map(|c| r3(100.0 * c as f64 / self.wall.as_micros().max(1) as f64))),
        );
        out.insert(
            "server_processes".into(),
            json!(self.after.or(self.before).map(|s| s.processes)),
        );
        let me = self.self_after.saturating_sub(self.self_before);
        out.insert("loadgen_cpu_us".into(), json!(me));
        out.insert(
            "loadgen_cpu_pct".into(),
            json!(r3(100.0 * me as f64 / self.wall.as_micros().max(1) as f64)),
        );
    }
}

/// The fields every line has: failures (total and by kind) and joins over the counters
/// `all`, the worker spread over `spread` (the scenario's clients, publisher aside).
pub fn common(all: &[Arc<Counters>], spread: &[Arc<Counters>], out: &mut Map<String, Value>) {
    let c = all;
    let mut kinds = Map::new();
    let mut total = 0;
    for (i, kind) in FailKind::ALL.iter().enumerate() {
        let n = stats::sum(c, |x| &x.failures[i]);
        total += n;
        if n > 0 {
            kinds.insert(kind.name().into(), json!(n));
        }
    }
    out.insert("failures".into(), json!(total));
    out.insert("failure_kinds".into(), Value::Object(kinds));
    out.insert(
        "joins_acked".into(),
        json!(stats::sum(c, |x| &x.joins_acked)),
    );
    out.insert(
        "joins_failed".into(),
        json!(stats::sum(c, |x| &x.joins_failed)),
    );
    let mut workers = Map::new();
    for w in 0..64 {
        let n = stats::sum(spread, |x| &x.workers[w]);
        if n > 0 {
            workers.insert(w.to_string(), json!(n));
        }
    }
    out.insert(
        "workers".into(),
        if workers.is_empty() {
            Value::Null
        } else {
            Value::Object(workers)
        },
    );
}

/// Seconds with millisecond precision.
pub fn secs(d: Duration) -> f64 {
    r3(d.as_secs_f64())
}

/// `n / seconds`, rounded, or null over an empty interval.
pub fn rate(n: u64, seconds: f64) -> Value {
    if seconds > 0.0 {
        json!(r3(n as f64 / seconds))
    } else {
        Value::Null
    }
}

/// What a scenario runs with.
pub struct Env {
    /// Where client tasks run.
    pub shards: Shards,
    /// Run-wide state for client tasks.
    pub run: Arc<Run>,
    /// The server tree to measure, when `--server-pid` was given.
    pub server: Option<Server>,
    /// No progress on stderr.
    pub quiet: bool,
    /// The room fan-out clients join (`--room`).
    pub room: String,
    /// The line's head: `scenario`, `label`, `tool`, `server_pid`, and `params` with the
    /// shared options; the scenario adds its own parameters and fields.
    pub head: Map<String, Value>,
}

impl Env {
    /// The line's head with `extra` parameters added to `params`.
    pub fn head(&self, extra: Value) -> Map<String, Value> {
        let mut head = self.head.clone();
        if let (Some(Value::Object(params)), Value::Object(extra)) = (head.get_mut("params"), extra)
        {
            params.extend(extra);
        }
        head
    }
}
