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
use crate::relay::Relay;

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

/// Run the daemon in this process until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.server.listen,
        source,
    })?;
    let relay = Relay::new(&config, Arc::new(LocalAdapter::new()))?;
    let settings = engine_settings(&config);
    let engine = Engine::new(settings.clone(), Arc::new(relay));
    let echo = config
        .engine
        .echo_path
        .clone()
        .map(|path| (path, Engine::new(settings, Arc::new(EchoHandler))));
    let public = Arc::new(Public {
        engine: engine.clone(),
        engine_path: config.engine.path.clone(),
        echo: echo.clone(),
        static_dir: config.server.static_dir.clone(),
    });
    let namespaces: Vec<String> = config.effective_namespaces().into_keys().collect();
    tracing::info!(
        public = %local,
        namespaces = ?namespaces,
        "listening"
    );
    let stop = listener::Stop::new();
    let accept = tokio::spawn(listener::serve(listener, public, stop.clone()));
    let graceful = shutdown_signal().await;
    tracing::info!(graceful, "shutting down: closing client transports");
    stop.trigger();
    let _ = accept.await;
    engine.close_all(CloseReason::Shutdown);
    if let Some((_, e)) = &echo {
        e.close_all(CloseReason::Shutdown);
    }
    if graceful {
        drain(&engine, config.server.shutdown_timeout).await;
    }
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
