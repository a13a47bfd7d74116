//! The master process (when `server.workers` is more than one): owns the listeners, the
//! admin listener, signals and systemd notifications, and supervises one worker process
//! per slot. It is never on the message path.
//!
//! The loop follows nginx's: signals become intents, worker exits become events, and
//! the loop acts — respawning a dead worker with backoff (not a worker that exited with
//! a fatal code), killing one that misses its heartbeats, forwarding a validated config
//! on reload, and shutting the workers down in order.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::control::{self, ToMaster, ToWorker};
use super::signals::{self, Intent};
use super::spawn::{self, WorkerArgs};
use super::{Error, about, listener, notify, reloader, sockets};
use crate::config::{Config, LoadOptions, Loaded};
use crate::engine::BoxFuture;
use crate::http::admin::{Admin, Control, Health, Reloader};
use crate::telemetry::metrics::Metrics;

/// How often the master pings each worker.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A worker silent this long is killed and replaced.
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(5);
/// A worker not ready this long after its start is killed and replaced.
const STARTUP_DEADLINE: Duration = Duration::from_secs(15);
/// How long a report request waits for the workers.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Restarts within this window count towards a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// More restarts than this within the window is a crash loop.
const CRASH_LOOP: usize = 5;
/// Exit codes that mean "do not try again": bad config (78), no permission (77).
const FATAL_EXITS: [i32; 2] = [78, 77];

/// A live worker, as the admin routes and the loop see it.
struct Slot {
    pid: u32,
    tx: mpsc::UnboundedSender<ToWorker>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<ToMaster>>>>,
    last_pong: Arc<Mutex<Instant>>,
    ready: bool,
}

/// What happened to a worker, for the loop.
enum Event {
    Ready(u32, u64),
    Exited(u32, u64, Option<i32>),
    Restart(u32),
}

/// The workers, shared by the loop and the admin routes.
#[derive(Default)]
struct Workers {
    slots: Mutex<HashMap<u32, (u64, Slot)>>,
    next_request: AtomicU64,
}

impl Workers {
    /// Ask every live worker for a report; answers that do not come in time are missed.
    async fn reports(&self) -> Vec<(String, Value)> {
        let waits: Vec<oneshot::Receiver<ToMaster>> = {
            let slots = self.slots.lock().expect("slots lock is never poisoned");
            slots
                .values()
                .map(|(_, slot)| {
                    let id = self.next_request.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = oneshot::channel();
                    slot.pending
                        .lock()
                        .expect("pending lock is never poisoned")
                        .insert(id, tx);
                    let _ = slot.tx.send(ToWorker::Report(id));
                    rx
                })
                .collect()
        };
        let mut out = Vec::new();
        for wait in waits {
            if let Ok(Ok(ToMaster::Report {
                metrics, status, ..
            })) = tokio::time::timeout(REPORT_TIMEOUT, wait).await
            {
                out.push((metrics, status));
            }
        }
        out
    }
}

/// The master's answers to the admin routes.
struct MasterControl {
    workers: Arc<Workers>,
    metrics: Metrics,
    reload: Reloader,
    about: Value,
    started: Instant,
}

impl Control for MasterControl {
    fn reload(&self) -> BoxFuture<'_, Value> {
        (self.reload)()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let mut texts = vec![self.metrics.render()];
            texts.extend(self.workers.reports().await.into_iter().map(|(m, _)| m));
            merge_expositions(&texts)
        })
    }

    fn status(&self) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let workers: Vec<Value> = self
                .workers
                .reports()
                .await
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            let sessions: u64 = workers.iter().filter_map(|w| w["sessions"].as_u64()).sum();
            json!({
                "about": self.about,
                "pid": std::process::id(),
                "uptime_seconds": self.started.elapsed().as_secs(),
                "sessions": sessions,
                "workers": workers,
            })
        })
    }

    fn rooms(&self, namespace: Option<String>) -> BoxFuture<'_, (StatusCode, Value)> {
        Box::pin(async move {
            // Every worker has the host-wide picture; the first answer is enough.
            let Some((_, status)) = self.workers.reports().await.into_iter().next() else {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "ok": false, "error": "no worker answered" }),
                );
            };
            let all = status["namespaces"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let mut out = serde_json::Map::new();
            for (name, ns) in all {
                if namespace.as_ref().is_none_or(|n| *n == name) {
                    out.insert(name, ns["rooms"].clone());
                }
            }
            if let Some(n) = namespace
                && out.is_empty()
            {
                return (
                    StatusCode::NOT_FOUND,
                    json!({ "ok": false, "error": format!("no namespace {n:?}") }),
                );
            }
            (StatusCode::OK, json!({ "ok": true, "namespaces": out }))
        })
    }
}

/// Run the master until SIGTERM or SIGINT.
pub async fn run(
    bound: sockets::Bound,
    loaded: Loaded,
    options: LoadOptions,
    count: u32,
) -> Result<(), Error> {
    let mut config = loaded.config.clone();
    let (intent_tx, mut intents) = mpsc::unbounded_channel();
    signals::forward(intent_tx.clone()).map_err(Error::Signals)?;
    let public = bound.public;
    let public_addr = public
        .first()
        .ok_or_else(|| Error::Runtime(std::io::Error::other("no public listener")))?
        .local_addr()
        .map_err(Error::Runtime)?;
    let admin_listener = TcpListener::from_std(bound.admin).map_err(Error::Runtime)?;
    let admin_addr = admin_listener.local_addr().map_err(Error::Runtime)?;
    let metrics = Metrics::new();
    let workers = Arc::new(Workers::default());
    let health = Arc::new(Health::default());
    let admin = Arc::new(Admin {
        health: health.clone(),
        control: Arc::new(MasterControl {
            workers: workers.clone(),
            metrics: metrics.clone(),
            reload: reloader(intent_tx.clone()),
            about: about(&loaded, bound.activated),
            started: Instant::now(),
        }),
    });
    let stop_admin = listener::Stop::new();
    let admin_task = tokio::spawn(listener::serve(
        admin_listener,
        admin,
        stop_admin.clone(),
        listener::Connections::default(),
    ));
    let bus = crate::engine::sid::random_id();
    let (event_tx, mut events) = mpsc::unbounded_channel();
    let mut generation: u64 = 0;
    let mut restarts: HashMap<u32, VecDeque<Instant>> = HashMap::new();
    for id in 0..count {
        generation += 1;
        let args = worker_args(id, count, &bus);
        start(
            &workers,
            &args,
            slot_listener(&public, id),
            &config,
            generation,
            &event_tx,
        )?;
    }
    let mut announced = false;
    let mut fatal: Option<i32> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = tokio::time::Instant::now();
    // systemd's watchdog hears from us only while every worker answers its heartbeat.
    let watchdog_every = notify::watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut ping: u64 = 0;
    let graceful = loop {
        tokio::select! {
            intent = intents.recv() => match intent {
                Some(Intent::Reload(reply)) => {
                    // Validated here; every worker gets the new config over its control
                    // channel (a worker refusing it says so in the log).
                    let report = super::reload(&options, &mut config, &metrics, |next| {
                        for (_, slot) in workers.slots.lock().expect("slots lock is never poisoned").values() {
                            let _ = slot.tx.send(ToWorker::Config(Box::new(next.clone())));
                        }
                        Ok(())
                    });
                    if let Some(reply) = reply {
                        let _ = reply.send(report);
                    }
                }
                Some(Intent::Drain) => break true,
                Some(Intent::Stop) | None => break false,
            },
            Some(event) = events.recv() => match event {
                Event::Ready(id, generation) => {
                    let all_ready = {
                        let mut slots = workers.slots.lock().expect("slots lock is never poisoned");
                        if let Some((g, slot)) = slots.get_mut(&id) && *g == generation {
                            slot.ready = true;
                        }
                        slots.len() == count as usize && slots.values().all(|(_, s)| s.ready)
                    };
                    if all_ready && !announced {
                        announced = true;
                        health.serving();
                        tracing::info!(public = %public_addr, admin = %admin_addr, workers = count, activated = bound.activated, "listening");
                        notify::ready(&format!("serving on {public_addr} with {count} workers"));
                    }
                }
                Event::Exited(id, gen_exited, code) => {
                    let current = workers.slots.lock().expect("slots lock is never poisoned")
                        .get(&id).is_some_and(|(g, _)| *g == gen_exited);
                    if !current {
                        continue;
                    }
                    workers.slots.lock().expect("slots lock is never poisoned").remove(&id);
                    if let Some(code) = code.filter(|c| FATAL_EXITS.contains(c)) {
                        // Restarting cannot help (bad config, no permission); a slot left
                        // empty would strand the connections the kernel hashes to its
                        // socket. Stop the daemon and let the supervisor (systemd) act.
                        tracing::error!(worker = id, code, "worker exited with a fatal code; not restarting it, stopping the daemon");
                        notify::status(&format!("worker {id} failed fatally (exit {code}); stopping"));
                        fatal = Some(code);
                        break false;
                    }
                    let recent = restarts.entry(id).or_default();
                    recent.push_back(Instant::now());
                    while recent.front().is_some_and(|t| t.elapsed() > CRASH_WINDOW) {
                        recent.pop_front();
                    }
                    let backoff = Duration::from_millis(100 * (1 << recent.len().min(7)));
                    if recent.len() > CRASH_LOOP {
                        tracing::error!(worker = id, restarts = recent.len(), "worker crash loop; restarting with backoff");
                        notify::status(&format!("worker {id} is crash-looping"));
                    } else {
                        tracing::warn!(worker = id, code, backoff_ms = backoff.as_millis() as u64, "worker exited; restarting");
                    }
                    let tx = event_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(backoff).await;
                        let _ = tx.send(Event::Restart(id));
                    });
                }
                Event::Restart(id) => {
                    generation += 1;
                    metrics.worker_restarts.inc();
                    let args = worker_args(id, count, &bus);
                    if let Err(err) = start(&workers, &args, slot_listener(&public, id), &config, generation, &event_tx) {
                        tracing::error!(worker = id, error = %err, "cannot restart worker; trying again");
                        let tx = event_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = tx.send(Event::Restart(id));
                        });
                    }
                }
            },
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                let healthy = health.is_serving() && {
                    let slots = workers.slots.lock().expect("slots lock is never poisoned");
                    slots.len() == count as usize
                        && slots.values().all(|(_, s)| {
                            s.ready
                                && s.last_pong.lock().expect("pong lock is never poisoned").elapsed()
                                    < HEARTBEAT_DEADLINE
                        })
                };
                if healthy {
                    notify::watchdog();
                }
            }
            _ = heartbeat.tick() => {
                ping += 1;
                // (The tick's own instant is when it was due, not when it ran.)
                let now = tokio::time::Instant::now();
                // The master itself did not run for a while (the whole service was
                // stopped, the machine paused): its workers' silence says nothing, and
                // they get a fresh deadline instead of a SIGKILL.
                let gap = now.saturating_duration_since(last_tick);
                last_tick = now;
                let paused = gap > HEARTBEAT * 3;
                if paused {
                    tracing::warn!(paused_ms = gap.as_millis() as u64, "the master was paused; workers get a fresh heartbeat deadline");
                }
                let slots = workers.slots.lock().expect("slots lock is never poisoned");
                for (id, (_, slot)) in slots.iter() {
                    if paused {
                        *slot.last_pong.lock().expect("pong lock is never poisoned") = std::time::Instant::now();
                    }
                    let _ = slot.tx.send(ToWorker::Ping(ping));
                    let silent = slot.last_pong.lock().expect("pong lock is never poisoned").elapsed();
                    // A worker that never got ready within the startup deadline is as
                    // stuck as one that stopped answering.
                    let deadline = if slot.ready { HEARTBEAT_DEADLINE } else { STARTUP_DEADLINE };
                    if silent > deadline {
                        tracing::error!(worker = id, pid = slot.pid, silent_ms = silent.as_millis() as u64, "worker missed its heartbeats; killing it");
                        spawn::kill(slot.pid, libc::SIGKILL);
                    }
                }
            }
        }
    };
    health.draining();
    notify::stopping("shutting down workers");
    tracing::info!(graceful, "shutting down: stopping workers");
    for (_, slot) in workers
        .slots
        .lock()
        .expect("slots lock is never poisoned")
        .values()
    {
        // A worker stopped along with the service (`systemctl kill -s STOP`) cannot stop
        // by itself: systemd resumes only the main process when it stops the service.
        spawn::kill(slot.pid, libc::SIGCONT);
        let _ = slot.tx.send(ToWorker::Shutdown(graceful));
    }
    let deadline = Instant::now() + config.server.shutdown_timeout + Duration::from_secs(2);
    while !workers
        .slots
        .lock()
        .expect("slots lock is never poisoned")
        .is_empty()
    {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), events.recv()).await else {
            tracing::warn!("workers did not stop in time; killing them");
            // Only those still running: a pid of one that exited may be reused already.
            for (_, slot) in workers
                .slots
                .lock()
                .expect("slots lock is never poisoned")
                .values()
            {
                spawn::kill(slot.pid, libc::SIGKILL);
            }
            break;
        };
        if let Event::Exited(id, _, _) = event {
            workers
                .slots
                .lock()
                .expect("slots lock is never poisoned")
                .remove(&id);
        }
    }
    stop_admin.trigger();
    let _ = admin_task.await;
    tracing::info!("stopped");
    match fatal {
        Some(code) => Err(Error::WorkerFatal(code)),
        None => Ok(()),
    }
}

/// The public socket of slot `id`: its own in a `SO_REUSEPORT` group (kept open while
/// the slot's worker restarts, so connections the kernel hashed to it wait instead of
/// failing), or the one shared socket.
fn slot_listener(public: &[std::net::TcpListener], id: u32) -> &std::net::TcpListener {
    public
        .get(id as usize)
        .or_else(|| public.first())
        .expect("bind returns at least one public listener")
}

fn worker_args(id: u32, workers: u32, bus: &str) -> WorkerArgs {
    WorkerArgs {
        id,
        workers,
        listener_fd: -1,
        control_fd: -1,
        bus: bus.to_owned(),
    }
}

/// Merge the expositions of the master and its workers into one: the same series are
/// added up (counters and most gauges are per process), except `iorelay_rooms`, which
/// every worker already reports host-wide (the largest is kept); the workers' own
/// `process_*` and build info are left out (the master's stand for the daemon).
pub fn merge_expositions(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut meta: HashMap<String, Vec<String>> = HashMap::new();
    let mut series: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for (i, text) in texts.iter().enumerate() {
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            let family = family_of(line);
            if i > 0 && (family.starts_with("process_") || family == "iorelay_build_info") {
                continue;
            }
            if !meta.contains_key(&family) {
                order.push(family.clone());
                meta.insert(family.clone(), Vec::new());
            }
            if line.starts_with('#') {
                let lines = meta.get_mut(&family).expect("inserted above");
                if !lines.contains(&line.to_owned()) {
                    lines.push(line.to_owned());
                }
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let samples = series.entry(family.clone()).or_default();
            match samples.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) if family == "iorelay_rooms" => *v = v.max(value),
                Some((_, v)) => *v += value,
                None => samples.push((key.to_owned(), value)),
            }
        }
    }
    let mut out = String::new();
    for family in order {
        for line in &meta[&family] {
            out.push_str(line);
            out.push('\n');
        }
        for (key, value) in series.get(&family).into_iter().flatten() {
            out.push_str(&format!("{key} {value}\n"));
        }
    }
    out
}

/// The metric family a line belongs to (`# HELP name …`, `name{…} v`, `name v`).
fn family_of(line: &str) -> String {
    let name = if let Some(rest) = line.strip_prefix("# ") {
        rest.split_whitespace().nth(1).unwrap_or("")
    } else {
        line.split(['{', ' ']).next().unwrap_or("")
    };
    name.to_owned()
}

/// Start worker `args.id`: a control pair, the process, and the tasks that watch it.
fn start(
    workers: &Arc<Workers>,
    args: &WorkerArgs,
    public: &std::net::TcpListener,
    config: &Config,
    generation: u64,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), Error> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Error::Runtime)?;
    let theirs: OwnedFd = theirs.into();
    let mut child = spawn::worker(args, public, &theirs).map_err(Error::Runtime)?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    let id = args.id;
    tracing::info!(worker = id, pid, "worker started");
    ours.set_nonblocking(true).map_err(Error::Runtime)?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(Error::Runtime)?;
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToWorker>();
    let _ = tx.send(ToWorker::Config(Box::new(config.clone())));
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write
                .write_all(control::encode(&msg).as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<ToMaster>>>> = Arc::default();
    let last_pong = Arc::new(Mutex::new(Instant::now()));
    {
        let pending = pending.clone();
        let last_pong = last_pong.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ToMaster>(&line) {
                    Ok(ToMaster::Ready) => {
                        let _ = events.send(Event::Ready(id, generation));
                    }
                    Ok(ToMaster::Pong(_)) => {
                        *last_pong.lock().expect("pong lock is never poisoned") = Instant::now();
                    }
                    Ok(report @ ToMaster::Report { .. }) => {
                        let ToMaster::Report { id: req, .. } = &report else {
                            continue;
                        };
                        if let Some(tx) = pending
                            .lock()
                            .expect("pending lock is never poisoned")
                            .remove(req)
                        {
                            let _ = tx.send(report);
                        }
                    }
                    Ok(ToMaster::Applied { ok: false, error }) => {
                        tracing::error!(worker = id, error = ?error, "worker refused the new config");
                    }
                    Ok(ToMaster::Applied { .. }) => {}
                    Err(err) => {
                        tracing::warn!(worker = id, error = %err, "unreadable control message")
                    }
                }
            }
        });
    }
    {
        let events = events.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let code = status.as_ref().ok().and_then(|s| s.code());
            let signal = status
                .as_ref()
                .ok()
                .and_then(std::os::unix::process::ExitStatusExt::signal);
            tracing::info!(worker = id, pid, code, signal, "worker exited");
            let _ = events.send(Event::Exited(id, generation, code));
        });
    }
    let slot = Slot {
        pid,
        tx,
        pending,
        last_pong,
        ready: false,
    };
    workers
        .slots
        .lock()
        .expect("slots lock is never poisoned")
        .insert(id, (generation, slot));
    Ok(())
}
