//! The daemon as one process (`server.workers = 1`): the relay on the in-process bus (a
//! bus without links: in a cluster it keeps the other nodes' members, see
//! `cluster::presence`), the cluster's presence for this host, the webhook sender, the public and admin listeners, signals as intents, reloads, the systemd watchdog, and the
//! ordered shutdown. The listeners were bound (and privileges dropped) before the runtime
//! started; see `bootstrap`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::listener::Serving;
use super::reload::{self, reloader};
use super::shutdown::{self, Stop};
use super::signals::{self, Intent};
use super::{Error, Stack, about, notify, sockets};
use crate::adapter::PeerAdapter;
use crate::cluster::presence::Presence;
use crate::config::{LoadOptions, Loaded};
use crate::http::admin::{Admin, Health, Local};
use crate::http::api::Access;
use crate::telemetry::LogHandle;
use crate::telemetry::metrics::Metrics;
use crate::webhooks::{Webhooks, events_of};

/// Run the daemon in this process until SIGTERM or SIGINT; SIGHUP reloads.
pub async fn run(
    bound: sockets::Bound,
    loaded: Loaded,
    options: LoadOptions,
    log: LogHandle,
) -> Result<(), Error> {
    let (intent_tx, mut intents) = mpsc::unbounded_channel();
    signals::forward(intent_tx.clone()).map_err(Error::Signals)?;
    let public_std = bound
        .public
        .into_iter()
        .next()
        .ok_or(Error::NoPublicListener)?;
    let public_listener = TcpListener::from_std(public_std).map_err(Error::Listener)?;
    let admin_listener = TcpListener::from_std(bound.admin).map_err(Error::Listener)?;
    let public_addr = public_listener.local_addr().map_err(Error::Listener)?;
    let admin_addr = admin_listener.local_addr().map_err(Error::Listener)?;
    let metrics = Metrics::new();
    let node = crate::cluster::NodeId::default();
    // A bus without links: this process is the host, and the cluster's other nodes are
    // kept in it as one more peer (presence).
    let bus = PeerAdapter::new(0);
    crate::cluster::publish_from(&*bus, &loaded.config, &node, &metrics.cluster)?;
    let stack = Stack::build(&loaded.config, bus.clone(), &metrics, None)?;
    crate::cluster::keep_sessions(
        stack.relay.shared(),
        &loaded.config,
        &node,
        &metrics.cluster,
    )?;
    let presence = match loaded.config.cluster.enabled() {
        true => Some(Presence::start(
            &loaded.config.cluster,
            node.0.clone(),
            metrics.cluster.clone(),
        )?),
        false => None,
    };
    let health = Arc::new(Health::default());
    let local = Local {
        metrics: metrics.clone(),
        relay: stack.relay.clone(),
        engine: stack.engine.clone(),
        reload: reloader(intent_tx.clone()),
        about: about::facts(&loaded, bound.activated),
        started: std::time::Instant::now(),
    };
    let access = Arc::new(Access::configured(
        &loaded.config,
        metrics.api_requests.clone(),
        metrics.admin_host_refused.clone(),
    )?);
    // This process is the whole host: it owns the webhook sender.
    let webhooks = Webhooks::new(&loaded.config.webhooks, metrics.webhooks.clone())?;
    webhooks.spawn();
    let sink = webhooks.clone();
    let host = presence.as_ref().map(|(p, _)| p.clone());
    stack
        .relay
        .shared()
        .set_membership_sink(Box::new(move |change| {
            if let Some(host) = &host
                && let Some(shared) = super::presence::shared_change(&change)
            {
                host.host(0, vec![shared]);
            }
            sink.push(events_of(&change));
        }));
    let (presence, tidings) = presence.unzip();
    if let Some(mut tidings) = tidings {
        let (relay, bus, hooks) = (stack.relay.shared().clone(), bus.clone(), webhooks.clone());
        tokio::spawn(async move {
            while let Some(news) = tidings.recv().await {
                super::presence::present(&relay, &bus, news.changes, true);
                hooks.push(super::presence::departed_events(news.departed));
            }
        });
    }
    let (control, gateway) = crate::cluster::front(
        &loaded.config,
        &node,
        Arc::new(local),
        &metrics.cluster,
        presence.clone(),
    )?;
    if let Some(gateway) = &gateway {
        let gateway = gateway.clone();
        stack
            .relay
            .shared()
            .set_ack_sink(Box::new(move |acked| gateway.acked(acked)));
    }
    if gateway.is_some() {
        health.watch_cluster(metrics.cluster.up.clone());
    }
    let admin = Arc::new(Admin {
        health: health.clone(),
        control,
        access: access.clone(),
    });
    // The admin listener outlives the public one, so that health checks see the drain.
    let mut public = Serving::start(public_listener, stack.public.clone());
    let mut admin = Serving::start(admin_listener, admin);
    health.serving();
    let namespaces: Vec<String> = loaded.config.effective_namespaces().into_keys().collect();
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
    let mut current = loaded.config;
    let graceful = loop {
        match intents.recv().await {
            Some(Intent::Reload(reply)) => {
                let report = reload::reload(&options, &mut current, &metrics, |next| {
                    let api = Access::load(next)?;
                    let hooks = crate::webhooks::Settings::resolve(&next.webhooks)?;
                    stack.reconfigure(next)?;
                    if let Some(gateway) = &gateway {
                        gateway.serve(&next.effective_namespaces().into_keys().collect::<Vec<_>>());
                    }
                    access.install(api);
                    webhooks.install(hooks);
                    if let Err(err) = log.set_level(&next.log.level) {
                        tracing::warn!(error = %err, "log.level not applied");
                    }
                    Ok(())
                });
                reload::settled(&report, None);
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
            Some(Intent::Drain) => break true,
            Some(Intent::Stop) | None => break false,
        }
    };
    health.draining();
    if let Some(presence) = &presence {
        presence.bye().await;
    }
    notify::stopping("draining connections");
    tracing::info!(graceful, "shutting down: no new connections");
    let stop = if graceful {
        Stop::Drain(current.server.shutdown_timeout)
    } else {
        Stop::Now
    };
    // SIGINT (or a second SIGTERM) during the drain stops waiting; a reload is refused.
    let hurry = async {
        loop {
            match intents.recv().await {
                Some(Intent::Reload(Some(reply))) => {
                    let _ = reply.send(reload::refused());
                }
                Some(Intent::Reload(None)) => {}
                Some(Intent::Drain | Intent::Stop) | None => return,
            }
        }
    };
    shutdown::serve_out(&mut public, &stack, stop, hurry).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    admin.stop_accepting().await;
    tracing::info!("stopped");
    Ok(())
}
