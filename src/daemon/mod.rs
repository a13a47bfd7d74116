//! Process-level concerns, in execution phases (as pingora's server does): bind the
//! listeners or take them from systemd ([`sockets`]), drop root ([`privileges`]), then
//! serve — as one process ([`run`], `server.workers = 1`) or as a master ([`master`])
//! supervising worker processes ([`worker`], started by [`spawn`], talking over
//! [`control`]). Signals become intents ([`signals`]); systemd hears READY, RELOADING,
//! STOPPING, STATUS and WATCHDOG ([`notify`]); the accept loop and the drain live in
//! [`listener`]; [`memory`] gives freed memory back after a connection peak. The only
//! modules with `unsafe` are `privileges`, `sockets`, `spawn` and `memory`.

pub mod control;
pub mod listener;
pub mod master;
pub mod memory;
pub mod notify;
pub mod privileges;
pub mod signals;
pub mod sockets;
pub mod spawn;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::adapter::{Adapter, LocalAdapter};
use crate::config::{self, Config, LoadOptions, Loaded, Transport, diff};
use crate::engine::echo::EchoHandler;
use crate::engine::{CloseReason, Engine, Settings};
use crate::http::Public;
use crate::http::admin::{Admin, Health, Local, Reloader};
use crate::relay::Relay;
use crate::telemetry::LogHandle;
use crate::telemetry::metrics::Metrics;
use signals::{Intent, ReloadReport};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bound listener could not be registered with the runtime.
    #[error("cannot use the listening socket: {0}")]
    Runtime(std::io::Error),
    /// The relay could not be built from the config.
    #[error(transparent)]
    Relay(#[from] crate::relay::Error),
    /// A worker exited with a code that restarting cannot fix (78 config, 77 permission).
    #[error("a worker exited with status {0}")]
    WorkerFatal(i32),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Engine settings from the config.
pub fn engine_settings(config: &Config) -> Settings {
    let e = &config.engine;
    Settings {
        ping_interval: e.ping_interval,
        ping_timeout: e.ping_timeout,
        max_payload: usize::try_from(e.max_payload.0).unwrap_or(usize::MAX),
        upgrade_timeout: e.upgrade_timeout,
        polling: e.transports.contains(&Transport::Polling),
        websocket: e.transports.contains(&Transport::Websocket),
        write_queue: e.write_queue,
        // Room for several of the largest messages, never less than a few MB.
        write_budget: usize::try_from(e.max_payload.0)
            .unwrap_or(usize::MAX)
            .saturating_mul(4)
            .max(4 << 20),
        max_sessions: config.server.max_connections,
        node: None,
    }
}

/// What serves clients: the relay on its bus, the Engine.IO endpoint, the optional echo
/// endpoint, and the public site that routes to them.
pub struct Stack {
    /// The relay.
    pub relay: Relay,
    /// The Socket.IO endpoint.
    pub engine: Arc<Engine>,
    /// The bare Engine.IO echo endpoint, when configured.
    pub echo: Option<(String, Arc<Engine>)>,
    /// The public listener's site.
    pub public: Arc<Public>,
    /// This worker's id, in a multi-worker daemon.
    pub node: Option<u32>,
}

impl Stack {
    /// Build it for `config`, delivering through `bus`, counting into `metrics`; in a
    /// multi-worker daemon `forward` names this worker and reaches the others.
    pub fn build(
        config: &Config,
        bus: Arc<dyn Adapter>,
        metrics: &Metrics,
        forward: Option<(u32, crate::http::forward::Forwarder)>,
    ) -> Result<Stack, Error> {
        let relay = Relay::new(config, bus, metrics.relay.clone())?;
        let node = forward.as_ref().map(|(n, _)| *n);
        let mut settings = engine_settings(config);
        settings.node = node;
        let engine = Engine::new(
            settings.clone(),
            Arc::new(relay.clone()),
            metrics.engine.clone(),
        );
        memory::spawn_trimmer(&engine);
        let echo = config.engine.echo_path.clone().map(|path| {
            let echo = Engine::new(settings, Arc::new(EchoHandler), Default::default());
            (path, echo)
        });
        let public = Arc::new(Public {
            engine: engine.clone(),
            engine_path: config.engine.path.clone(),
            echo: echo.clone(),
            static_dir: config.server.static_dir.clone(),
            forward,
        });
        Ok(Stack {
            relay,
            engine,
            echo,
            public,
            node,
        })
    }

    /// Apply a reloaded config (already validated).
    pub fn reconfigure(&self, config: &Config) -> Result<(), Error> {
        self.relay.reconfigure(config)?;
        let mut settings = engine_settings(config);
        settings.node = self.node;
        self.engine.reconfigure(settings.clone());
        if let Some((_, echo)) = &self.echo {
            echo.reconfigure(settings);
        }
        Ok(())
    }
}

/// Static facts for the status document.
pub fn about(loaded: &Loaded, activated: bool) -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "environment": loaded.environment.name(),
        "config_files": loaded.sources,
        "socket_activated": activated,
    })
}

/// A reloader that asks the control loop through `intents` and waits for its report.
fn reloader(intents: tokio::sync::mpsc::UnboundedSender<Intent>) -> Reloader {
    Arc::new(move || {
        let intents = intents.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if intents.send(Intent::Reload(Some(tx))).is_err() {
                return serde_json::json!({ "ok": false, "errors": ["shutting down"] });
            }
            match rx.await {
                Ok(report) => serde_json::to_value(report).unwrap_or_default(),
                Err(_) => serde_json::json!({ "ok": false, "errors": ["shutting down"] }),
            }
        })
    })
}

/// SIGHUP or API reload, shared by the single process and the master: load and validate
/// the config again; when valid, `apply` puts it in force and `current` becomes it;
/// either way the log, the metrics and systemd hear the outcome.
pub(crate) fn reload(
    options: &LoadOptions,
    current: &mut Config,
    metrics: &Metrics,
    apply: impl FnOnce(&Config) -> Result<(), String>,
) -> ReloadReport {
    notify::reloading();
    let applied = config::load(options)
        .map_err(|err| err.lines())
        .and_then(|loaded| {
            apply(&loaded.config).map_err(|e| vec![e])?;
            Ok(loaded.config)
        });
    let next = match applied {
        Ok(next) => next,
        Err(errors) => {
            metrics.reload_failures.inc();
            let file = options.describe();
            for line in &errors {
                tracing::error!(file = %file, problem = %line, "reload rejected, the previous configuration stays in force");
            }
            notify::ready(
                "serving; last reload rejected (invalid configuration), previous configuration in force",
            );
            return ReloadReport {
                ok: false,
                errors,
                ..ReloadReport::default()
            };
        }
    };
    let (restart_required, changed): (Vec<String>, Vec<String>) =
        diff::changed_keys(current, &next)
            .into_iter()
            .partition(|k| diff::needs_restart(k));
    for key in &restart_required {
        tracing::warn!(key = %key, "changed, but takes effect only after a restart");
    }
    tracing::info!(changed = ?changed, "configuration reloaded");
    metrics.reloads.inc();
    *current = next;
    notify::ready("serving; configuration reloaded");
    ReloadReport {
        ok: true,
        changed,
        restart_required,
        errors: Vec::new(),
    }
}

/// Run the daemon in this process until SIGTERM or SIGINT; SIGHUP reloads. The
/// listeners were bound (and privileges dropped) before the runtime started.
pub async fn run(
    bound: sockets::Bound,
    loaded: Loaded,
    options: LoadOptions,
    log: LogHandle,
) -> Result<(), Error> {
    let config = loaded.config.clone();
    let (intent_tx, mut intents) = tokio::sync::mpsc::unbounded_channel();
    signals::forward(intent_tx.clone()).map_err(Error::Signals)?;
    let public_std = bound
        .public
        .into_iter()
        .next()
        .ok_or_else(|| Error::Runtime(std::io::Error::other("no public listener")))?;
    let public_listener = TcpListener::from_std(public_std).map_err(Error::Runtime)?;
    let admin_listener = TcpListener::from_std(bound.admin).map_err(Error::Runtime)?;
    let public_addr = public_listener.local_addr().map_err(Error::Runtime)?;
    let admin_addr = admin_listener.local_addr().map_err(Error::Runtime)?;
    let metrics = Metrics::new();
    let stack = Stack::build(&config, Arc::new(LocalAdapter::new()), &metrics, None)?;
    let (relay, engine, echo, public) = (
        stack.relay.clone(),
        stack.engine.clone(),
        stack.echo.clone(),
        stack.public.clone(),
    );
    let health = Arc::new(Health::default());
    let local = Local {
        metrics: metrics.clone(),
        relay: relay.clone(),
        engine: engine.clone(),
        reload: reloader(intent_tx.clone()),
        about: about(&loaded, bound.activated),
        started: std::time::Instant::now(),
    };
    let admin = Arc::new(Admin {
        health: health.clone(),
        control: Arc::new(local),
    });
    // The admin listener outlives the public one, so that health checks see the drain.
    let (stop_public, stop_admin) = (listener::Stop::new(), listener::Stop::new());
    let public_connections = listener::Connections::default();
    let public_task = tokio::spawn(listener::serve(
        public_listener,
        public,
        stop_public.clone(),
        public_connections.clone(),
    ));
    let admin_task = tokio::spawn(listener::serve(
        admin_listener,
        admin,
        stop_admin.clone(),
        listener::Connections::default(),
    ));
    health.serving();
    let namespaces: Vec<String> = config.effective_namespaces().into_keys().collect();
    tracing::info!(
        public = %public_addr,
        admin = %admin_addr,
        activated = bound.activated,
        namespaces = ?namespaces,
        "listening"
    );
    notify::ready(&format!("serving on {public_addr}"));
    let watchdog = notify::watchdog_interval().map(|every| {
        let health = health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if health.is_serving() {
                    notify::watchdog();
                }
            }
        })
    });
    let mut current = config;
    let graceful = loop {
        match intents.recv().await {
            Some(Intent::Reload(reply)) => {
                let report = reload(&options, &mut current, &metrics, |next| {
                    stack.reconfigure(next).map_err(|e| e.to_string())?;
                    if let Err(err) = log.set_level(&next.log.level) {
                        tracing::warn!(error = %err, "log.level not applied");
                    }
                    Ok(())
                });
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
            Some(Intent::Drain) => break true,
            Some(Intent::Stop) | None => break false,
        }
    };
    health.draining();
    notify::stopping("draining connections");
    tracing::info!(graceful, "shutting down: no new connections");
    stop_public.trigger();
    let _ = public_task.await;
    tracing::info!(
        sessions = engine.session_count(),
        "shutting down: closing client transports"
    );
    engine.close_all(CloseReason::Shutdown);
    if let Some((_, e)) = &echo {
        e.close_all(CloseReason::Shutdown);
    }
    if graceful {
        let timeout = current.server.shutdown_timeout;
        // SIGINT (or a second SIGTERM) during the drain stops waiting.
        let hurry = async {
            loop {
                match intents.recv().await {
                    Some(Intent::Reload(Some(reply))) => {
                        let _ = reply.send(ReloadReport {
                            errors: vec!["shutting down".into()],
                            ..ReloadReport::default()
                        });
                    }
                    Some(Intent::Reload(None)) => {}
                    Some(Intent::Drain | Intent::Stop) | None => return,
                }
            }
        };
        tokio::select! {
            drained = drain(&engine, &public_connections, timeout) => {
                tracing::info!(drained, timeout = ?timeout, "shutting down: drain finished");
            }
            () = hurry => tracing::info!("shutting down: drain cut short"),
        }
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    stop_admin.trigger();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Wait until every session, WebSocket and HTTP connection is gone (clients told and
/// their close written) or the timeout passes; returns whether everything went.
pub(crate) async fn drain(
    engine: &Engine,
    connections: &listener::Connections,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let busy = || engine.session_count() + engine.open_websockets() + connections.count() > 0;
    while busy() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !busy()
}
