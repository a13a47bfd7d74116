//! Process-level concerns: binding the listeners, the accept loop, signals and the
//! graceful shutdown. (Worker processes, privilege drop and sd_notify come with the
//! daemon work; this is the single-process core.)

pub mod listener;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::adapter::LocalAdapter;
use crate::config::{Config, Transport};
use crate::engine::echo::EchoHandler;
use crate::engine::{CloseReason, Engine, Settings};
use crate::http::Public;
use crate::http::admin::{Admin, Health};
use crate::relay::Relay;
use crate::telemetry::metrics::Metrics;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The relay could not be built from the config.
    #[error(transparent)]
    Relay(#[from] crate::relay::Error),
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
        max_sessions: config.server.max_connections,
    }
}

/// Bind a listener, naming the address on failure.
async fn bind(addr: std::net::SocketAddr) -> Result<(TcpListener, std::net::SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    Ok((listener, local))
}

/// Run the daemon in this process until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    let (public_listener, public_addr) = bind(config.server.listen).await?;
    let (admin_listener, admin_addr) = bind(config.server.admin_listen).await?;
    let metrics = Metrics::new();
    let relay = Relay::new(
        &config,
        Arc::new(LocalAdapter::new()),
        metrics.relay.clone(),
    )?;
    let settings = engine_settings(&config);
    let engine = Engine::new(settings.clone(), Arc::new(relay), metrics.engine.clone());
    let echo = config.engine.echo_path.clone().map(|path| {
        let echo = Engine::new(settings, Arc::new(EchoHandler), Default::default());
        (path, echo)
    });
    let public = Arc::new(Public {
        engine: engine.clone(),
        engine_path: config.engine.path.clone(),
        echo: echo.clone(),
        static_dir: config.server.static_dir.clone(),
    });
    let health = Arc::new(Health::default());
    let admin = Arc::new(Admin {
        health: health.clone(),
        metrics,
    });
    // The admin listener outlives the public one, so that health checks see the drain.
    let (stop_public, stop_admin) = (listener::Stop::new(), listener::Stop::new());
    let public_task = tokio::spawn(listener::serve(
        public_listener,
        public,
        stop_public.clone(),
    ));
    let admin_task = tokio::spawn(listener::serve(admin_listener, admin, stop_admin.clone()));
    health.serving();
    let namespaces: Vec<String> = config.effective_namespaces().into_keys().collect();
    tracing::info!(
        public = %public_addr,
        admin = %admin_addr,
        namespaces = ?namespaces,
        "listening"
    );
    let graceful = shutdown_signal().await;
    health.draining();
    tracing::info!(graceful, "shutting down: closing client transports");
    stop_public.trigger();
    let _ = public_task.await;
    engine.close_all(CloseReason::Shutdown);
    if let Some((_, e)) = &echo {
        e.close_all(CloseReason::Shutdown);
    }
    if graceful {
        drain(&engine, config.server.shutdown_timeout).await;
    }
    stop_admin.trigger();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Wait until the sessions are gone or the timeout passes.
async fn drain(engine: &Engine, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while engine.session_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves on SIGTERM (true: drain) or SIGINT (false: do not wait).
async fn shutdown_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler can be installed");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler can be installed");
    tokio::select! {
        _ = term.recv() => true,
        _ = int.recv() => false,
    }
}
