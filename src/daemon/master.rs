//! The master process (when `server.workers` is more than one): owns the listeners, the
//! admin listener, signals and systemd notifications, and supervises one worker process
//! per slot. It is never on the message path.
//!
//! The loop follows nginx's: signals become intents, worker exits become events, and the
//! `Master` acts on each with one method — respawning a dead worker as the
//! [`restart::Policy`] says (never one that exited with a fatal code), killing one that
//! misses its [`heartbeat`], forwarding a validated config on reload,
//! and shutting the workers down in order. The admin routes ask the workers through
//! `MasterControl`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::control::ToWorker;
use super::heartbeat::{self, HEARTBEAT, Heartbeat};
use super::listener::Serving;
use super::reload::{self, reloader};
use super::restart::{self, Decision, RETRY_START};
use super::rundir::RunDir;
use super::signals::{self, Intent};
use super::spawn::{self, WorkerArgs, WorkerId};
use super::workers::{APPLY_TIMEOUT, Confirmation, Event, Generation, Workers};
use super::{Error, about, notify, sockets};
use crate::api::{self, Call, Reply};
use crate::cluster::presence::wire::Change;
use crate::cluster::presence::{Presence, Tidings};
use crate::config::{Config, LoadOptions, Loaded};
use crate::engine::BoxFuture;
use crate::http::admin::{Admin, Health};
use crate::http::api::Access;
use crate::http::control::{Control, Reloader};
use crate::telemetry::exposition;
use crate::telemetry::metrics::Metrics;
use crate::webhooks::Webhooks;

/// Extra time the workers get beyond their own drain timeout before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Whether the loop goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Stop the workers, draining (`true`) or not.
    Stop {
        graceful: bool,
    },
}

/// The master's state, with one method per event of its loop.
struct Master {
    /// How many worker slots.
    count: u32,
    /// The workers' private runtime directory (their Unix sockets), handed to each.
    dir: std::path::PathBuf,
    /// The public listeners (one per slot with `SO_REUSEPORT`, or one shared). The
    /// master only holds them for its workers: kept open across a worker's restart so
    /// that the connections the kernel queues on them wait instead of failing; closed
    /// when the workers stop, so that new clients are refused during the drain.
    public: Vec<std::net::TcpListener>,
    /// The public address, for the "listening" log line and systemd's STATUS.
    public_addr: SocketAddr,
    /// The admin address, for the "listening" log line.
    admin_addr: SocketAddr,
    /// Whether systemd handed over the listeners (socket activation), for the log.
    activated: bool,
    /// The config in force (workers get it on start and on reload).
    config: Config,
    /// How the config was loaded (file, environment): a reload loads it the same way.
    options: LoadOptions,
    /// The master's own metrics (reloads, worker restarts); the admin routes merge the
    /// workers' into them.
    metrics: Metrics,
    /// What `/readyz` and systemd's watchdog say: serving once every worker first got
    /// ready, draining once the shutdown starts.
    health: Arc<Health>,
    /// The server API's tokens, swapped on reload.
    access: Arc<Access>,
    /// The host's one webhook sender: workers report their joins and leaves here.
    webhooks: Webhooks,
    /// The host's door to the cluster, if there is one.
    gateway: Option<Arc<crate::cluster::Gateway>>,
    /// The cluster's presence, if there is a cluster: the workers' joins and leaves go
    /// to it, the other nodes' come from it.
    presence: Option<Arc<Presence>>,
    /// The live workers, shared with the admin routes that ask them for reports.
    workers: Arc<Workers>,
    /// Where workers' news (and the restart timers) go.
    events: mpsc::UnboundedSender<Event>,
    /// The last generation handed out.
    generation: Generation,
    /// Each slot's recent exits: whether and when a dead worker is restarted.
    restarts: restart::Policy,
    /// The heartbeat's ping numbers and the master's own pauses (a frozen master must
    /// not take its workers' silence for a hang).
    heartbeat: Heartbeat,
    /// Whether READY was said (once every worker first got ready).
    announced: bool,
    /// A worker's fatal exit code: the daemon exits with it.
    fatal: Option<u8>,
}

impl Master {
    /// Start worker `id` as a new generation.
    fn start(&mut self, id: WorkerId) -> Result<(), Error> {
        self.generation = self.generation.next();
        let args = WorkerArgs {
            id,
            workers: self.count,
            listener_fd: -1,
            control_fd: -1,
            dir: self.dir.clone(),
        };
        self.workers.start(
            &args,
            slot_listener(&self.public, id),
            &self.config,
            self.generation,
            &self.events,
        )
    }

    /// An operator asked for something.
    fn on_intent(&mut self, intent: Option<Intent>) -> Flow {
        match intent {
            Some(Intent::Reload(reply)) => {
                // Validated here; every worker gets the new config over its control
                // channel, and systemd hears READY=1 (the API its report) once each
                // confirmed it or the confirmation deadline passed.
                let (workers, access, webhooks) = (&self.workers, &self.access, &self.webhooks);
                let gateway = &self.gateway;
                let mut confirming = None;
                let report =
                    reload::reload(&self.options, &mut self.config, &self.metrics, |next| {
                        let api = Access::load(next)?;
                        webhooks.reconfigure(&next.webhooks)?;
                        confirming = Some(workers.reconfigure(next));
                        access.install(api);
                        if let Some(gateway) = gateway {
                            let namespaces: Vec<String> =
                                next.effective_namespaces().into_keys().collect();
                            gateway.serve(&namespaces);
                        }
                        Ok(())
                    });
                let unconfirmed = self.metrics.reload_unconfirmed.clone();
                tokio::spawn(async move {
                    let how = match confirming {
                        Some(wait) => {
                            let outcome = wait.await;
                            report_confirmation(&outcome, &unconfirmed);
                            Some(outcome.describe())
                        }
                        None => None,
                    };
                    reload::settled(&report, how.as_deref());
                    if let Some(reply) = reply {
                        let _ = reply.send(report);
                    }
                });
                Flow::Continue
            }
            Some(Intent::Drain) => Flow::Stop { graceful: true },
            Some(Intent::Stop) | None => Flow::Stop { graceful: false },
        }
    }

    /// A worker said it is ready: once all are, the daemon is.
    fn on_ready(&mut self, id: WorkerId, generation: Generation) {
        let all_ready = {
            let mut slots = self.workers.slots.lock();
            if let Some(slot) = slots.get_mut(&id)
                && slot.generation == generation
            {
                slot.ready = true;
            }
            if let (Some(presence), Some(slot)) = (&self.presence, slots.get(&id)) {
                // What the other nodes hold, before any news of it.
                let changes = presence.all();
                if !changes.is_empty() {
                    let _ = slot.tx.send(ToWorker::Cluster {
                        changes,
                        announce: false,
                    });
                }
            }
            slots.len() == self.count as usize && slots.values().all(|s| s.ready)
        };
        if all_ready && !self.announced {
            self.announced = true;
            self.health.serving();
            tracing::info!(public = %self.public_addr, admin = %self.admin_addr, workers = self.count, activated = self.activated, "listening");
            notify::ready(&format!(
                "serving on {} with {} workers",
                self.public_addr, self.count
            ));
        }
    }

    /// A worker exited: restart it after its backoff, or stop the daemon when its code
    /// says restarting cannot help.
    fn on_exited(&mut self, id: WorkerId, generation: Generation, code: Option<i32>) -> Flow {
        {
            let mut slots = self.workers.slots.lock();
            if slots.get(&id).is_none_or(|s| s.generation != generation) {
                // A worker already replaced.
                return Flow::Continue;
            }
            slots.remove(&id);
        }
        if let Some(presence) = &self.presence {
            presence.worker_gone(id.0);
        }
        match self.restarts.on_exit(id, code, tokio::time::Instant::now()) {
            Decision::GiveUp(code) => {
                tracing::error!(worker = %id, code, "worker exited with a fatal code; not restarting it, stopping the daemon");
                notify::status(&format!(
                    "worker {id} failed fatally (exit {code}); stopping"
                ));
                self.fatal = Some(code);
                Flow::Stop { graceful: false }
            }
            decision @ Decision::Restart { after, recent } => {
                if decision.is_crash_loop() {
                    tracing::error!(worker = %id, restarts = recent, "worker crash loop; restarting with backoff");
                    notify::status(&format!("worker {id} is crash-looping"));
                } else {
                    tracing::warn!(worker = %id, code, backoff_ms = after.as_millis() as u64, "worker exited; restarting");
                }
                self.restart_after(id, after);
                Flow::Continue
            }
        }
    }

    /// Send [`Event::Restart`] for `id` once `after` has passed.
    fn restart_after(&self, id: WorkerId, after: Duration) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = events.send(Event::Restart(id));
        });
    }

    /// A worker's backoff is over.
    fn on_restart(&mut self, id: WorkerId) {
        self.metrics.worker_restarts.inc();
        if let Err(err) = self.start(id) {
            tracing::error!(worker = %id, error = %err, "cannot restart worker; trying again");
            self.restart_after(id, RETRY_START);
        }
    }

    /// Ping every worker; kill those that stopped answering.
    fn on_heartbeat(&mut self) {
        // (The tick's own instant is when it was due, not when it ran.)
        let now = tokio::time::Instant::now();
        let tick = self.heartbeat.tick(now);
        if let Some(gap) = tick.paused {
            tracing::warn!(
                paused_ms = gap.as_millis() as u64,
                "the master was paused; workers get a fresh heartbeat deadline"
            );
        }
        for (id, slot) in self.workers.slots.lock().iter() {
            if tick.paused.is_some() {
                *slot.last_pong.lock() = now;
            }
            let _ = slot.tx.send(ToWorker::Ping(tick.ping));
            if let Some(silent) = heartbeat::overdue(slot.ready, *slot.last_pong.lock(), now) {
                tracing::error!(worker = %id, pid = slot.pid, silent_ms = silent.as_millis() as u64, "worker missed its heartbeats; killing it");
                spawn::kill(slot.pid, libc::SIGKILL);
            }
        }
    }

    /// A worker's joins and leaves, for the cluster: those of a worker already gone
    /// (read after its exit) are dropped, or its members would stay in the host's table.
    fn on_presence(&self, id: WorkerId, generation: Generation, changes: Vec<Change>) {
        let current = self
            .workers
            .slots
            .lock()
            .get(&id)
            .is_some_and(|s| s.generation == generation);
        if let (Some(presence), true) = (&self.presence, current) {
            presence.host(id.0, changes);
        }
    }

    /// News of the other nodes' members: to every worker, and a gone node's leaves to
    /// the webhooks (when this node reports them).
    fn on_tidings(&mut self, news: Tidings) {
        if !news.changes.is_empty() {
            self.workers.broadcast(&ToWorker::Cluster {
                changes: news.changes,
                announce: true,
            });
        }
        if !news.departed.is_empty() {
            self.webhooks
                .push(super::presence::departed_events(news.departed));
        }
    }

    /// systemd's watchdog hears from us only while every worker answers its heartbeat.
    fn on_watchdog(&self) {
        let now = tokio::time::Instant::now();
        let healthy = self.health.is_serving() && {
            let slots = self.workers.slots.lock();
            slots.len() == self.count as usize
                && slots
                    .values()
                    .all(|s| heartbeat::answering(s.ready, *s.last_pong.lock(), now))
        };
        if healthy {
            notify::watchdog();
        }
    }

    /// Stop every worker (draining or not) and wait for them, killing those still there
    /// past the deadline.
    async fn stop_workers(&mut self, graceful: bool, events: &mut mpsc::UnboundedReceiver<Event>) {
        self.health.draining();
        if let Some(presence) = &self.presence {
            presence.bye().await;
        }
        notify::stopping("shutting down workers");
        tracing::info!(graceful, "shutting down: stopping workers");
        for slot in self.workers.slots.lock().values() {
            // A worker stopped along with the service (`systemctl kill -s STOP`) cannot
            // stop by itself: systemd resumes only the main process when it stops the
            // service.
            spawn::kill(slot.pid, libc::SIGCONT);
            let _ = slot.tx.send(ToWorker::Shutdown(graceful));
        }
        // New clients are refused from here on, not left hanging: each worker closes its
        // copy of the public socket as it stops accepting, and these are the last ones,
        // so the port closes and a connect is reset at once (a client or balancer tries
        // elsewhere) while the sessions already open drain. With socket activation the
        // listening socket is systemd's and stays open: it queues connections for the
        // next start, which is what socket activation is for (see systemd/iorelay.socket).
        self.public.clear();
        let deadline =
            tokio::time::Instant::now() + self.config.server.shutdown_timeout + STOP_GRACE;
        while !self.workers.slots.lock().is_empty() {
            let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await else {
                tracing::warn!("workers did not stop in time; killing them");
                // Only those still running: a pid of one that exited may be reused already.
                for slot in self.workers.slots.lock().values() {
                    spawn::kill(slot.pid, libc::SIGKILL);
                }
                return;
            };
            if let Event::Exited(id, _, _) = event {
                self.workers.slots.lock().remove(&id);
            }
        }
    }
}

/// Run the master until SIGTERM or SIGINT, or until a worker fails fatally.
pub async fn run(
    bound: sockets::Bound,
    loaded: Loaded,
    options: LoadOptions,
    count: u32,
) -> Result<(), Error> {
    let (intent_tx, mut intents) = mpsc::unbounded_channel();
    signals::forward(intent_tx.clone()).map_err(Error::Signals)?;
    let public_addr = bound
        .public
        .first()
        .ok_or(Error::NoPublicListener)?
        .local_addr()
        .map_err(Error::Listener)?;
    let admin_listener = TcpListener::from_std(bound.admin).map_err(Error::Listener)?;
    let admin_addr = admin_listener.local_addr().map_err(Error::Listener)?;
    let metrics = Metrics::new();
    let workers = Arc::new(Workers::default());
    let _ = workers.cluster.set(loaded.config.cluster.clone());
    let health = Arc::new(Health::default());
    let access = Arc::new(Access::configured(
        &loaded.config,
        metrics.api_requests.clone(),
        metrics.admin_host_refused.clone(),
    )?);
    let webhooks = Webhooks::new(&loaded.config.webhooks, metrics.webhooks.clone())?;
    webhooks.spawn();
    let host = Arc::new(MasterControl {
        workers: workers.clone(),
        metrics: metrics.clone(),
        reload: reloader(intent_tx.clone()),
        about: about::facts(&loaded, bound.activated),
        started: std::time::Instant::now(),
    });
    let (presence, mut tidings) = match loaded.config.cluster.enabled() {
        true => {
            let node = workers.node.0.clone();
            let (p, rx) = Presence::start(&loaded.config.cluster, node, metrics.cluster.clone())?;
            (Some(p), rx)
        }
        false => (None, mpsc::channel(1).1),
    };
    let (control, gateway) = crate::cluster::front(
        &loaded.config,
        &workers.node,
        host,
        &metrics.cluster,
        presence.clone(),
    )?;
    if gateway.is_some() {
        health.watch_cluster(metrics.cluster.up.clone());
    }
    let admin = Arc::new(Admin {
        health: health.clone(),
        access: access.clone(),
        control,
    });
    let mut admin = Serving::start(admin_listener, admin);
    let (event_tx, mut events) = mpsc::unbounded_channel();
    // Removed when the master returns, after its workers stopped.
    let run_dir = RunDir::create().map_err(Error::RunDir)?;
    let mut master = Master {
        count,
        dir: run_dir.path().to_owned(),
        public: bound.public,
        public_addr,
        admin_addr,
        activated: bound.activated,
        config: loaded.config,
        options,
        metrics,
        health,
        access,
        webhooks,
        gateway,
        presence,
        workers,
        events: event_tx,
        generation: Generation::default(),
        restarts: restart::Policy::default(),
        heartbeat: Heartbeat::new(tokio::time::Instant::now()),
        announced: false,
        fatal: None,
    };
    for id in WorkerId::all(count) {
        master.start(id)?;
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog_every = notify::watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let graceful = loop {
        let flow = tokio::select! {
            intent = intents.recv() => master.on_intent(intent),
            Some(event) = events.recv() => match event {
                Event::Ready(id, generation) => {
                    master.on_ready(id, generation);
                    Flow::Continue
                }
                Event::Exited(id, generation, code) => master.on_exited(id, generation, code),
                Event::Restart(id) => {
                    master.on_restart(id);
                    Flow::Continue
                }
                Event::Webhooks(batch) => {
                    master.webhooks.push(batch);
                    Flow::Continue
                }
                Event::Acked(acked) => {
                    if let Some(gateway) = &master.gateway {
                        gateway.acked(acked);
                    }
                    Flow::Continue
                }
                Event::Presence(id, generation, changes) => {
                    master.on_presence(id, generation, changes);
                    Flow::Continue
                }
            },
            Some(news) = tidings.recv() => {
                master.on_tidings(news);
                Flow::Continue
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                master.on_watchdog();
                Flow::Continue
            }
            _ = heartbeat.tick() => {
                master.on_heartbeat();
                Flow::Continue
            }
        };
        if let Flow::Stop { graceful } = flow {
            break graceful;
        }
    };
    master.stop_workers(graceful, &mut events).await;
    admin.stop_accepting().await;
    tracing::info!("stopped");
    match master.fatal {
        Some(code) => Err(Error::WorkerFatal(code)),
        None => Ok(()),
    }
}

/// Log and count the workers that did not confirm a reload (READY=1 goes out anyway:
/// systemd must not hang on one stuck worker, which the heartbeat replaces).
fn report_confirmation(outcome: &Confirmation, unconfirmed: &prometheus::IntCounterVec) {
    for id in &outcome.refused {
        unconfirmed.with_label_values(&["refused"]).inc();
        tracing::error!(worker = %id, "worker did not apply the reloaded configuration");
    }
    for id in &outcome.silent {
        unconfirmed.with_label_values(&["timeout"]).inc();
        tracing::error!(worker = %id, timeout_ms = APPLY_TIMEOUT.as_millis() as u64, "worker did not confirm the reloaded configuration in time");
    }
    tracing::info!(
        applied = outcome.applied,
        workers = outcome.asked,
        "reload confirmed by the workers"
    );
}

/// The public socket of slot `id`: its own in a `SO_REUSEPORT` group (kept open while
/// the slot's worker restarts, so connections the kernel hashed to it wait instead of
/// failing), or the one shared socket.
fn slot_listener(public: &[std::net::TcpListener], id: WorkerId) -> &std::net::TcpListener {
    public
        .get(id.0 as usize)
        .or_else(|| public.first())
        .expect("bind returns at least one public listener")
}

/// The master's answers to the admin routes: each asks every worker for a report.
struct MasterControl {
    workers: Arc<Workers>,
    metrics: Metrics,
    reload: Reloader,
    about: Value,
    started: std::time::Instant,
}

impl Control for MasterControl {
    fn reload(&self) -> BoxFuture<'_, Value> {
        (self.reload)()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let mut texts = vec![self.metrics.render()];
            texts.extend(self.workers.metrics().await);
            exposition::merge(&texts)
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

    fn call(&self, call: Call) -> BoxFuture<'_, Reply> {
        Box::pin(async move {
            let parts = self.workers.call(&call).await;
            api::merge(&call, parts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::workers::Slot;

    fn master(count: u32) -> (Master, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let master = Master {
            count,
            dir: "/nonexistent".into(),
            public: Vec::new(),
            public_addr: addr,
            admin_addr: addr,
            activated: false,
            config: Config::default(),
            // The built-in defaults only: no file, no environment.
            options: LoadOptions {
                file: None,
                env_name: None,
                vars: Vec::new(),
                search: Vec::new(),
            },
            metrics: Metrics::new(),
            health: Arc::new(Health::default()),
            access: Arc::new(Access::default()),
            gateway: None,
            presence: None,
            webhooks: Webhooks::new(&Default::default(), Metrics::new().webhooks)
                .expect("webhooks are off by default"),
            workers: Arc::new(Workers::default()),
            events,
            generation: Generation::default(),
            restarts: restart::Policy::default(),
            heartbeat: Heartbeat::new(tokio::time::Instant::now()),
            announced: false,
            fatal: None,
        };
        (master, rx)
    }

    /// Put a worker in slot `id` as if it had been started; returns its generation and
    /// what the master sends it.
    fn place(m: &mut Master, id: WorkerId) -> (Generation, mpsc::UnboundedReceiver<ToWorker>) {
        m.generation = m.generation.next();
        let (slot, rx) = Slot::detached(m.generation);
        m.workers.slots.lock().insert(id, slot);
        (m.generation, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_fails_is_restarted_after_its_backoff_and_the_daemon_stays_up() {
        let (mut m, mut events) = master(2);
        let (g0, _c0) = place(&mut m, WorkerId(0));
        let (g1, _c1) = place(&mut m, WorkerId(1));
        m.on_ready(WorkerId(0), g0);
        assert!(!m.health.is_serving(), "ready only once every worker is");
        m.on_ready(WorkerId(1), g1);
        assert!(m.health.is_serving());

        assert_eq!(m.on_exited(WorkerId(0), g0, Some(70)), Flow::Continue);
        assert!(!m.workers.slots.lock().contains_key(&WorkerId(0)));
        tokio::time::sleep(Duration::from_millis(199)).await;
        assert!(events.try_recv().is_err(), "not before the backoff");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(matches!(events.try_recv(), Ok(Event::Restart(WorkerId(0)))));
        assert_eq!(m.fatal, None);
        assert!(m.health.is_serving());
    }

    #[tokio::test(start_paused = true)]
    async fn news_from_a_replaced_worker_is_ignored() {
        let (mut m, mut events) = master(1);
        let (old, _c) = place(&mut m, WorkerId(0));
        let (new, _c) = place(&mut m, WorkerId(0));
        assert_ne!(old, new);
        assert_eq!(m.on_exited(WorkerId(0), old, Some(78)), Flow::Continue);
        assert!(m.workers.slots.lock().contains_key(&WorkerId(0)));
        m.on_ready(WorkerId(0), old);
        assert!(!m.workers.slots.lock()[&WorkerId(0)].ready);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_exit_stops_the_daemon_with_its_code() {
        let (mut m, mut events) = master(2);
        let (g0, _c0) = place(&mut m, WorkerId(0));
        place(&mut m, WorkerId(1));
        assert_eq!(
            m.on_exited(WorkerId(0), g0, Some(78)),
            Flow::Stop { graceful: false }
        );
        assert_eq!(m.fatal, Some(78));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(events.try_recv().is_err(), "no restart");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_ping_every_worker_and_a_paused_master_forgives_silence() {
        let (mut m, _events) = master(1);
        let (_, mut control) = place(&mut m, WorkerId(0));
        m.on_heartbeat();
        assert!(matches!(control.try_recv(), Ok(ToWorker::Ping(1))));
        tokio::time::advance(Duration::from_secs(10)).await;
        m.on_heartbeat();
        assert!(matches!(control.try_recv(), Ok(ToWorker::Ping(2))));
        let slots = m.workers.slots.lock();
        let pong = *slots[&WorkerId(0)].last_pong.lock();
        assert_eq!(pong, tokio::time::Instant::now(), "a fresh deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn intents_reload_every_worker_or_stop() {
        let (mut m, _events) = master(2);
        let (_, mut c0) = place(&mut m, WorkerId(0));
        let (_, mut c1) = place(&mut m, WorkerId(1));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        assert_eq!(m.on_intent(Some(Intent::Reload(Some(tx)))), Flow::Continue);
        assert!(matches!(c0.try_recv(), Ok(ToWorker::Config(_))));
        assert!(matches!(c1.try_recv(), Ok(ToWorker::Config(_))));
        tokio::task::yield_now().await;
        assert!(
            rx.try_recv().is_err(),
            "no report before the workers confirm"
        );
        m.workers.slots.lock()[&WorkerId(0)].confirm(true);
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "one worker has not confirmed yet");
        let start = tokio::time::Instant::now();
        m.workers.slots.lock()[&WorkerId(1)].confirm(true);
        assert!(rx.await.unwrap().ok);
        assert_eq!(tokio::time::Instant::now(), start, "no deadline waited");
        assert_eq!(
            m.on_intent(Some(Intent::Drain)),
            Flow::Stop { graceful: true }
        );
        assert_eq!(
            m.on_intent(Some(Intent::Stop)),
            Flow::Stop { graceful: false }
        );
        assert_eq!(m.on_intent(None), Flow::Stop { graceful: false });
    }

    /// A worker that never confirms a reload holds it for one deadline, then is counted;
    /// one that refuses is counted at once.
    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_holds_a_reload_for_one_deadline_and_is_counted() {
        let (mut m, _events) = master(2);
        let (_, _c0) = place(&mut m, WorkerId(0));
        let (_, _c1) = place(&mut m, WorkerId(1));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = tokio::time::Instant::now();
        m.on_intent(Some(Intent::Reload(Some(tx))));
        m.workers.slots.lock()[&WorkerId(0)].confirm(false);
        assert!(rx.await.unwrap().ok, "the master's config is in force");
        assert_eq!(tokio::time::Instant::now() - start, APPLY_TIMEOUT);
        let counted = |reason: &str| {
            m.metrics
                .reload_unconfirmed
                .with_label_values(&[reason])
                .get()
        };
        assert_eq!((counted("refused"), counted("timeout")), (1, 1));
    }

    #[test]
    fn a_confirmation_names_the_workers_that_did_not_apply() {
        let outcome = Confirmation {
            asked: 3,
            applied: 1,
            refused: vec![WorkerId(0)],
            silent: vec![WorkerId(2)],
        };
        assert_eq!(
            outcome.describe(),
            "applied by 1 of 3 workers; refused by worker 0; not confirmed by worker 2"
        );
    }
}
