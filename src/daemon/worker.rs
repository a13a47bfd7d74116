//! A worker process: serves the inherited public listener with the relay on the
//! cross-worker bus, links to its sibling workers, and answers its master over the
//! control channel (config, heartbeat, reports, webhook events, shutdown). The master
//! decides, the worker follows (and dies with it); a signal sent to the worker itself
//! (`killall`, `systemctl kill`) does what it does to the master, except SIGHUP, which
//! the worker ignores: reloading is the master's job and it hands the workers the new
//! config. How the process gets here —
//! the inherited descriptors, the first config — is in `bootstrap`.
//!
//! A failure to start serving is an [`Error`] whose exit code tells the master whether a
//! restart can help (see [`Error::exit_code`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::control::{self, ToMaster, ToWorker};
use super::listener::Serving;
use super::presence;
use super::rundir;
use super::shutdown::{self, Stop};
use super::signals::{self, Intent};
use super::spawn::{self, WorkerArgs, WorkerId};
use super::{Error, Stack};
use crate::adapter::PeerAdapter;
use crate::cluster::presence::wire::Change;
use crate::config::Config;
use crate::http::admin::{RoomDetail, Status};
use crate::telemetry::LogHandle;
use crate::telemetry::metrics::Metrics;
use crate::webhooks::{Event, events_of};

/// Longest pause between attempts to link to a sibling.
const MAX_LINK_BACKOFF: Duration = Duration::from_secs(1);

/// What the master sends first: the config, the host's key for recovery pids and its
/// node id in a cluster.
#[derive(Debug)]
pub struct First {
    /// The config.
    pub config: Config,
    /// The pid key.
    pub key: crate::relay::recovery::Key,
    /// The node id.
    pub node: crate::cluster::NodeId,
}

/// Serve until the master says stop (or goes away).
pub async fn run(
    args: WorkerArgs,
    listener: std::net::TcpListener,
    control: std::os::unix::net::UnixStream,
    first: First,
    log: LogHandle,
) -> Result<(), Error> {
    let First { config, key, node } = first;
    // A HUP meant for the master (`systemctl kill`, `killall -HUP`, logrotate) must not
    // kill the worker; TERM and INT stop it as they stop the master.
    let (intent_tx, mut intents) = tokio::sync::mpsc::unbounded_channel();
    signals::forward(intent_tx).map_err(Error::Signals)?;
    let bus = PeerAdapter::new(args.id.0);
    let metrics = Metrics::new();
    bus.count_drops_in(metrics.bus_dropped.clone());
    crate::cluster::publish_from(&*bus, &config, &node, &metrics.cluster)?;
    let forwarder = crate::http::forward::Forwarder {
        dir: args.dir.clone(),
        uid: spawn::own_uid(),
    };
    let stack = Stack::build(
        &config,
        bus.clone(),
        &metrics,
        Some((args.id, forwarder.clone())),
    )?;
    stack.relay.shared().recovery.set_key(key);
    crate::cluster::keep_sessions(stack.relay.shared(), &config, &node, &metrics.cluster)?;
    let public_site = stack.public.clone();
    tokio::spawn(accept_forwarded(forwarder.clone(), args.id, public_site));
    let listener = TcpListener::from_std(listener).map_err(Error::Listener)?;
    link_siblings(&bus, &args).map_err(Error::Link)?;
    let mut public = Serving::start(listener, stack.public.clone());
    let control = control
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(control))
        .map_err(Error::Control)?;
    let (read, mut write) = control.into_split();
    let mut lines = BufReader::new(read).lines();
    let send = |msg: ToMaster| control::encode(&msg);
    let (hooks_on, mut hooks, mut shared) = forward_webhooks(&stack, &bus, &config, &metrics);
    let mut acks = forward_acks(&stack);
    let _ = write.write_all(send(ToMaster::Ready).as_bytes()).await;
    tracing::info!(
        worker = args.id.0,
        pid = std::process::id(),
        "worker serving"
    );
    let mut config = config;
    let drain = loop {
        // `next_line` is cancel-safe: a webhook report or a signal in between loses no
        // input.
        let next = tokio::select! {
            next = lines.next_line() => next,
            Some(batch) = hooks.recv() => {
                if write.write_all(send(ToMaster::Webhooks(batch)).as_bytes()).await.is_err() {
                    break false;
                }
                continue;
            }
            Some(acked) = acks.recv() => {
                if write.write_all(send(ToMaster::Acked(acked)).as_bytes()).await.is_err() {
                    break false;
                }
                continue;
            }
            Some(first) = shared.recv() => {
                let mut batch = vec![first];
                while batch.len() < PRESENCE_BATCH && let Ok(more) = shared.try_recv() {
                    batch.push(more);
                }
                if write.write_all(send(ToMaster::Presence(batch)).as_bytes()).await.is_err() {
                    break false;
                }
                continue;
            }
            Some(intent) = intents.recv() => match intent {
                Intent::Reload(_) => {
                    tracing::info!(worker = args.id.0, "SIGHUP to a worker ignored: the master reloads the config");
                    continue;
                }
                Intent::Drain => {
                    tracing::info!(worker = args.id.0, "SIGTERM: worker draining");
                    break true;
                }
                Intent::Stop => {
                    tracing::info!(worker = args.id.0, "SIGINT: worker stopping");
                    break false;
                }
            },
        };
        let line = match next {
            Ok(Some(line)) => line,
            // The master is gone: stop at once.
            Ok(None) | Err(_) => break false,
        };
        let reply = match serde_json::from_str::<ToWorker>(&line) {
            Ok(ToWorker::Ping(n)) => ToMaster::Pong(n),
            Ok(ToWorker::Start { .. }) => {
                tracing::warn!("a second start message ignored");
                continue;
            }
            Ok(ToWorker::Config(next)) => match stack.reconfigure(&next) {
                Ok(()) => {
                    if let Err(err) = log.set_level(&next.log.level) {
                        tracing::warn!(error = %err, "log.level not applied");
                    }
                    hooks_on.store(next.webhooks.enabled(), Ordering::Relaxed);
                    config = *next;
                    ToMaster::Applied {
                        ok: true,
                        error: None,
                    }
                }
                Err(err) => ToMaster::Applied {
                    ok: false,
                    error: Some(err.to_string()),
                },
            },
            Ok(ToWorker::Report(id)) => {
                let mut status = Status::of(&stack.relay, &stack.engine, RoomDetail::List).await;
                status.worker = Some(args.id.0);
                status.peers = Some(bus.peers());
                ToMaster::Report {
                    id,
                    metrics: metrics.render(),
                    status: status.to_json(),
                }
            }
            Ok(ToWorker::Metrics(id)) => ToMaster::Report {
                id,
                metrics: metrics.render(),
                status: serde_json::Value::Null,
            },
            Ok(ToWorker::Api { id, call, stamp }) => {
                let part = crate::relay::backend::answer(stack.relay.shared(), &call, stamp).await;
                if let (crate::api::Call::Relay(relayed), crate::api::Part::Failed(failure)) =
                    (&call, &part)
                {
                    // Its answer is not read (see `Workers::call`): said here.
                    tracing::warn!(namespace = %relayed.namespace, error = %failure, "cluster: a broadcast from another node was refused");
                }
                ToMaster::Api { id, part }
            }
            Ok(ToWorker::Shutdown(drain)) => break drain,
            Ok(ToWorker::Cluster { changes, announce }) => {
                presence::present(stack.relay.shared(), &bus, changes, announce);
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "unreadable control message ignored");
                continue;
            }
        };
        if write.write_all(send(reply).as_bytes()).await.is_err() {
            break false;
        }
    };
    let stop = if drain {
        Stop::Drain(config.server.shutdown_timeout)
    } else {
        Stop::Now
    };
    // The master decides when to give up waiting (it kills what is left).
    shutdown::serve_out(&mut public, &stack, stop, std::future::pending()).await;
    tracing::info!(worker = args.id.0, "worker stopped");
    Ok(())
}

/// Reports of this worker's joins and leaves waiting for the control channel.
const WEBHOOK_BACKLOG: usize = 1024;

/// Clients' acks waiting to go to the master.
const ACK_BACKLOG: usize = 4096;

/// This worker's joins and leaves waiting for the control channel, for the cluster's
/// presence; more are dropped and counted (the cluster's count of the rooms is then
/// wrong until the members leave).
const PRESENCE_BACKLOG: usize = 65_536;

/// Most joins and leaves in one presence report.
const PRESENCE_BATCH: usize = 1024;

/// Make the relay's joins and leaves into webhook events for the master while webhooks
/// are on (the flag, switched on reload); a full backlog drops them, counted here. The
/// leaves of a dead sibling's members reach every survivor: only the lowest-numbered
/// one reports them, so that the host sends them once. In a cluster, the joins and
/// leaves of this worker's own sockets go to the master's presence too (the third
/// receiver).
fn forward_webhooks(
    stack: &Stack,
    bus: &Arc<PeerAdapter>,
    config: &Config,
    metrics: &Metrics,
) -> (
    Arc<AtomicBool>,
    mpsc::Receiver<Vec<Event>>,
    mpsc::Receiver<Change>,
) {
    let on = Arc::new(AtomicBool::new(config.webhooks.enabled()));
    let (tx, rx) = mpsc::channel(WEBHOOK_BACKLOG);
    let clustered = config.cluster.enabled();
    let (shared_tx, shared_rx) = mpsc::channel(PRESENCE_BACKLOG);
    let unshared = metrics
        .cluster
        .dropped
        .with_label_values(&["presence_queue"]);
    let (flag, bus, dropped) = (
        on.clone(),
        bus.clone(),
        metrics.webhooks.dropped.with_label_values(&["queue_full"]),
    );
    stack
        .relay
        .shared()
        .set_membership_sink(Box::new(move |change| {
            if clustered
                && let Some(shared) = presence::shared_change(&change)
                && shared_tx.try_send(shared).is_err()
            {
                unshared.inc();
                tracing::warn!(
                    "cluster: a join or leave not shared with the other nodes (backlog full)"
                );
            }
            if !flag.load(Ordering::Relaxed) || (change.departed && !bus.lowest_linked()) {
                return;
            }
            let events = events_of(&change);
            let n = events.len() as u64;
            if n > 0 && tx.try_send(events).is_err() {
                dropped.inc_by(n);
            }
        }));
    (on, rx, shared_rx)
}

/// The clients' answers to other nodes' broadcasts with acks, for the master's gateway
/// (past [`ACK_BACKLOG`] waiting, dropped: the asking node times out on them).
fn forward_acks(stack: &Stack) -> mpsc::Receiver<crate::relay::asks::Acked> {
    let (tx, rx) = mpsc::channel(ACK_BACKLOG);
    stack.relay.shared().set_ack_sink(Box::new(move |acked| {
        if tx.try_send(acked).is_err() {
            tracing::debug!("a client's ack dropped: the master is behind");
        }
    }));
    rx
}

/// Serve requests other workers forward to this one (sessions it owns).
async fn accept_forwarded(
    forwarder: crate::http::forward::Forwarder,
    id: WorkerId,
    site: Arc<crate::http::Public>,
) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let me = spawn::own_uid();
    let bound = rundir::listen_at(&forwarder.address(id.0)).and_then(UnixListener::from_std);
    let incoming = match bound {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(worker = id.0, error = %err, "cannot listen for forwarded requests");
            return;
        }
    };
    let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    loop {
        let Ok((stream, _)) = incoming.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if spawn::peer_uid(&stream) != Some(me) {
            continue;
        }
        let site = site.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let site = site.clone();
                async move { Ok::<_, std::convert::Infallible>(site.handle(req, unknown).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Listen for siblings' links and keep one link to each sibling (each direction of a
/// pair has its own connection, so nothing is delivered twice).
fn link_siblings(bus: &Arc<PeerAdapter>, args: &WorkerArgs) -> std::io::Result<()> {
    let me = spawn::own_uid();
    let incoming = UnixListener::from_std(rundir::listen_at(&rundir::socket_path(
        &args.dir, "bus", args.id.0,
    ))?)?;
    let accepting = bus.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = incoming.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if spawn::peer_uid(&stream) != Some(me) {
                tracing::warn!("bus link from another user refused");
                continue;
            }
            let bus = accepting.clone();
            tokio::spawn(async move { bus.run_inbound(stream).await });
        }
    });
    for peer in WorkerId::all(args.workers).filter(|p| *p != args.id) {
        let bus = bus.clone();
        let addr = rundir::socket_path(&args.dir, "bus", peer.0);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(10);
            loop {
                let linked = crate::http::forward::connect(&addr).await;
                match linked {
                    Ok(stream) if spawn::peer_uid(&stream) == Some(me) => {
                        backoff = Duration::from_millis(10);
                        bus.run_outbound(stream).await;
                        tracing::debug!(peer = peer.0, "bus link to sibling ended, relinking");
                    }
                    _ => {}
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_LINK_BACKOFF);
            }
        });
    }
    Ok(())
}
