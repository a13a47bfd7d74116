//! What serves clients in one process: the relay on its bus, the Engine.IO endpoint, the
//! optional echo endpoint and the public site that routes to them, built from the config
//! and reconfigured on reload. The single process and every worker build one; how the
//! process is supervised is not its concern.

use std::sync::Arc;

use super::spawn::WorkerId;
use super::{Error, memory};
use crate::adapter::Adapter;
use crate::config::{Config, Transport};
use crate::engine::echo::EchoHandler;
use crate::engine::settings::PerIp;
use crate::engine::{CloseReason, Engine, Origins, Settings, TrustedProxies};
use crate::http::Public;
use crate::relay::Relay;
use crate::telemetry::metrics::Metrics;

/// Engine settings from the config.
pub fn engine_settings(config: &Config) -> Settings {
    let e = &config.engine;
    let workers = config.server.workers.resolve().max(1);
    Settings {
        ping_interval: e.ping_interval,
        ping_timeout: e.ping_timeout,
        max_payload: usize::try_from(e.max_payload.0).unwrap_or(usize::MAX),
        upgrade_timeout: e.upgrade_timeout,
        body_timeout: e.body_timeout,
        polling: e.transports.contains(&Transport::Polling),
        websocket: e.transports.contains(&Transport::Websocket),
        write_queue: e.write_queue,
        // Room for several of the largest messages, never less than a few MB.
        write_budget: usize::try_from(e.max_payload.0)
            .unwrap_or(usize::MAX)
            .saturating_mul(4)
            .max(4 << 20),
        // Per worker, as documented: each worker's memory is its own.
        outbound_budget: usize::try_from(e.outbound_budget.0).unwrap_or(usize::MAX),
        // Host-wide limits, shared out among the workers (each has its own table).
        max_sessions: config.server.max_connections.div_ceil(workers).max(1),
        per_ip: PerIp {
            sessions: config
                .server
                .max_connections_per_ip
                .div_ceil(workers)
                .max(1),
            rate: config
                .server
                .handshakes_per_ip_per_second
                .div_ceil(workers as u32)
                .max(1),
            burst: config
                .server
                .handshake_burst_per_ip
                .div_ceil(workers as u32)
                .max(1),
        },
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
    pub node: Option<WorkerId>,
}

impl Stack {
    /// Build it for `config`, delivering through `bus`, counting into `metrics`; in a
    /// multi-worker daemon `forward` names this worker and reaches the others.
    pub fn build(
        config: &Config,
        bus: Arc<dyn Adapter>,
        metrics: &Metrics,
        forward: Option<(WorkerId, crate::http::forward::Forwarder)>,
    ) -> Result<Stack, Error> {
        let relay = Relay::new(config, bus, metrics.relay.clone())?;
        let node = forward.as_ref().map(|(n, _)| *n);
        if let Some(node) = node {
            // Origin 0 is a single process's (and the master's); workers count from 1.
            relay.shared().sequence.set_origin(node.0 + 1);
        }
        let mut settings = engine_settings(config);
        settings.node = node.map(|n| n.0);
        let engine = Engine::new(
            settings.clone(),
            Arc::new(relay.clone()),
            metrics.engine.clone(),
        );
        memory::spawn_trimmer(&engine);
        relay.spawn_history_sweep();
        let echo = config.engine.echo_path.clone().map(|path| {
            let echo = Engine::new(settings, Arc::new(EchoHandler), Default::default());
            (path, echo)
        });
        let public = Arc::new(Public {
            engine: engine.clone(),
            engine_path: config.engine.path.clone(),
            echo: echo.clone(),
            static_dir: config.server.static_dir.clone(),
            forward: forward.map(|(node, forwarder)| (node.0, forwarder)),
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
    pub fn reconfigure(&self, config: &Config) -> Result<(), crate::relay::Error> {
        self.relay.reconfigure(config)?;
        let mut settings = engine_settings(config);
        settings.node = self.node.map(|n| n.0);
        self.engine.reconfigure(settings.clone());
        if let Some((_, echo)) = &self.echo {
            echo.reconfigure(settings);
        }
        Ok(())
    }

    /// Tell every client of every endpoint that the server is going away.
    pub fn close_all(&self) {
        for engine in self.engines() {
            engine.close_all(CloseReason::Shutdown);
        }
    }

    /// The endpoints: the Socket.IO one, then the echo one when configured.
    fn engines(&self) -> impl Iterator<Item = &Arc<Engine>> {
        std::iter::once(&self.engine).chain(self.echo.as_ref().map(|(_, echo)| echo))
    }

    /// Sessions and WebSockets still open on the endpoints (none once the drain is done).
    pub fn open(&self) -> usize {
        self.engines()
            .map(|e| e.session_count() + e.open_websockets())
            .sum()
    }

    /// Resolves once no endpoint has a session or a WebSocket writer left: what a
    /// graceful shutdown waits for.
    pub async fn until_idle(&self) {
        futures_util::future::join_all(self.engines().map(|e| e.until_idle())).await;
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

    /// Open a polling session on `path` of the site listening at `addr`.
    async fn handshake(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// A client of the echo endpoint counts as open, and the drain waits for it, as for a
    /// client of the Socket.IO endpoint.
    #[tokio::test]
    async fn the_echo_endpoint_is_counted_and_drained() {
        use crate::daemon::listener::Serving;
        let mut config = Config::default();
        config.engine.echo_path = Some("/engine.io/".into());
        let stack = Stack::build(
            &config,
            Arc::new(crate::adapter::LocalAdapter::new()),
            &Metrics::new(),
            None,
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut serving = Serving::start(listener, stack.public.clone());
        let answer = handshake(addr, "/engine.io/").await;
        assert!(answer.contains("\"sid\""), "{answer}");
        assert_eq!(stack.engine.session_count(), 0);
        assert_eq!(stack.open(), 1, "the echo client is open");

        let stack = Arc::new(stack);
        let idle = tokio::spawn({
            let stack = stack.clone();
            async move { stack.until_idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!idle.is_finished(), "the echo client is still there");
        stack.close_all();
        // Bounded so that a regression fails instead of hanging; the session goes once
        // its polling linger has passed.
        tokio::time::timeout(std::time::Duration::from_secs(10), idle)
            .await
            .expect("idle once the echo client is gone")
            .unwrap();
        assert_eq!(stack.open(), 0);
        serving.stop_accepting().await;
    }
}
