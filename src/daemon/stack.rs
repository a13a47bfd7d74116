//! What serves clients in one process: the relay on its bus, the Engine.IO endpoint, the
//! optional echo endpoint and the public site that routes to them, built from the config
//! and reconfigured on reload. The single process and every worker build one; how the
//! process is supervised is not its concern.

use std::sync::Arc;

use super::{Error, memory};
use crate::adapter::Adapter;
use crate::config::{Config, Transport};
use crate::engine::echo::EchoHandler;
use crate::engine::{CloseReason, Engine, Origins, Settings, TrustedProxies};
use crate::http::Public;
use crate::relay::Relay;
use crate::telemetry::metrics::Metrics;

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
        // Validated with the same parsers (`config::validate`): a config that got here
        // parses; should it not, the safe reading is the narrowest.
        origins: Origins::parse(&config.server.allowed_origins).unwrap_or_default(),
        proxies: TrustedProxies::parse(&config.server.trusted_proxies).unwrap_or_default(),
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

    /// Tell every client of every endpoint that the server is going away.
    pub fn close_all(&self) {
        self.engine.close_all(CloseReason::Shutdown);
        if let Some((_, echo)) = &self.echo {
            echo.close_all(CloseReason::Shutdown);
        }
    }

    /// Sessions and WebSockets still open on the endpoints (none once the drain is done).
    pub fn open(&self) -> usize {
        self.engine.session_count() + self.engine.open_websockets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's test-only defaults restate the config's (the engine may not import the
    /// config): this keeps the two from drifting apart.
    #[test]
    fn the_engine_tests_run_with_the_config_defaults() {
        assert_eq!(engine_settings(&Config::default()), Settings::default());
    }
}
