//! The master's table of live workers and how one is started: the control socket pair,
//! the process, and the tasks that carry its control messages and watch it exit. Each
//! start of a slot is a new [`Generation`], so that news from a worker already replaced
//! (its exit, a late "ready") is recognised and ignored.
//!
//! The admin routes read the same table to ask the workers for reports and server API
//! calls ([`Workers::reports`], [`Workers::call`]), all under one deadline. A reload
//! hands every worker the new config and waits, under [`APPLY_TIMEOUT`], for each to say
//! it applied it ([`Workers::reconfigure`]): systemd hears READY=1 only then.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Error;
use super::control::{self, ToMaster, ToWorker};
use super::spawn::{self, WorkerArgs, WorkerId};
use crate::api::{Call, Part, Relayed, Scope};
use crate::config::Config;

/// How long a request to the workers (a report, a server API call) waits for them, all
/// together.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a reload waits for every worker to confirm the new config before READY=1
/// goes out anyway (systemd must not wait forever on a stuck worker; the heartbeat kills
/// that one within its own deadline). Shorter than the heartbeat deadline, so that a
/// frozen worker is reported here as silent before it is killed and replaced.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Which start of a slot: every start (first or restart) gets the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Generation(u64);

impl Generation {
    /// The one after this.
    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

/// What happened to a worker, for the master's loop.
#[derive(Debug)]
pub enum Event {
    /// It is listening and linked.
    Ready(WorkerId, Generation),
    /// It exited, with its code (`None`: killed by a signal).
    Exited(WorkerId, Generation, Option<i32>),
    /// Its backoff is over: start it again.
    Restart(WorkerId),
    /// It reports webhook events.
    Webhooks(Vec<crate::webhooks::Event>),
    /// One of its clients answered another node's broadcast with acks.
    Acked(crate::relay::asks::Acked),
    /// It reports joins and leaves of its sockets (cluster presence).
    Presence(
        WorkerId,
        Generation,
        Vec<crate::cluster::presence::wire::Change>,
    ),
}

/// Report requests waiting for their answer, by request number.
type Pending = Arc<Mutex<Waiting>>;

/// One worker's requests waiting for their answer.
#[derive(Default)]
struct Waiting {
    /// By request number.
    by_id: HashMap<u64, oneshot::Sender<ToMaster>>,
    /// Reloads sent and not yet confirmed, oldest first: the worker answers each config
    /// with one `Applied`, in the order they were sent (the channel is ordered).
    applies: VecDeque<oneshot::Sender<bool>>,
    /// The worker's control channel closed: nothing more is answered, so nothing more is
    /// waited for (its slot may linger until the master hears of the exit).
    closed: bool,
}

impl Waiting {
    /// Wait for request `id`'s answer, unless the worker is gone.
    fn wait(&mut self, id: u64) -> Option<oneshot::Receiver<ToMaster>> {
        if self.closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.by_id.insert(id, tx);
        Some(rx)
    }

    /// Wait for the worker's answer to the next config sent, unless it is gone.
    fn wait_applied(&mut self) -> Option<oneshot::Receiver<bool>> {
        if self.closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.applies.push_back(tx);
        Some(rx)
    }
}

/// How the workers took a reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Confirmation {
    /// Workers asked.
    pub asked: usize,
    /// Workers that said they applied it.
    pub applied: usize,
    /// Workers that refused it (each logged its reason).
    pub refused: Vec<WorkerId>,
    /// Workers that said nothing within [`APPLY_TIMEOUT`].
    pub silent: Vec<WorkerId>,
}

impl Confirmation {
    /// For systemd's STATUS line.
    pub fn describe(&self) -> String {
        let mut text = format!("applied by {} of {} workers", self.applied, self.asked);
        let list = |ids: &[WorkerId]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.refused.is_empty() {
            text.push_str(&format!("; refused by worker {}", list(&self.refused)));
        }
        if !self.silent.is_empty() {
            text.push_str(&format!("; not confirmed by worker {}", list(&self.silent)));
        }
        text
    }
}

/// A live worker.
pub struct Slot {
    /// Which start of the slot this is.
    pub generation: Generation,
    /// Its process id.
    pub pid: u32,
    /// Its control channel.
    pub tx: mpsc::UnboundedSender<ToWorker>,
    /// Report requests sent to it.
    pending: Pending,
    /// When it last answered a ping (set by its control reader).
    pub last_pong: Arc<Mutex<Instant>>,
    /// Whether it said it is ready.
    pub ready: bool,
}

#[cfg(test)]
impl Slot {
    /// A slot with no process behind it (pid 0, which is never signalled), for the
    /// master's tests; returns the receiving end of its control channel.
    pub(crate) fn detached(generation: Generation) -> (Slot, mpsc::UnboundedReceiver<ToWorker>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = Slot {
            generation,
            pid: 0,
            tx,
            pending: Pending::default(),
            last_pong: Arc::new(Mutex::new(Instant::now())),
            ready: false,
        };
        (slot, rx)
    }

    /// Answer the oldest reload sent to this slot as its worker would.
    pub(crate) fn confirm(&self, ok: bool) {
        let tx = self
            .pending
            .lock()
            .applies
            .pop_front()
            .expect("a reload was sent");
        let _ = tx.send(ok);
    }
}

/// The workers, shared by the master's loop and the admin routes.
#[derive(Default)]
pub struct Workers {
    /// The live workers by slot.
    pub slots: Mutex<HashMap<WorkerId, Slot>>,
    next_request: AtomicU64,
    /// Ids for the server API's emits, which every worker records in its history under
    /// the same id (origin 0, the master's).
    sequence: crate::relay::history::Sequence,
    /// The host's key for recovery pids, handed to every worker it starts.
    key: crate::relay::recovery::Key,
    /// The host's node id in a cluster, handed to every worker it starts.
    pub node: crate::cluster::NodeId,
    /// `[cluster]` as the master started with it (changing it needs a restart): every
    /// worker, one restarted after a reload too, publishes to the cluster the master's
    /// gateway reads.
    pub cluster: std::sync::OnceLock<crate::config::ClusterConfig>,
}

impl Workers {
    /// Send `msg` to every live worker.
    pub fn broadcast(&self, msg: &ToWorker) {
        for slot in self.slots.lock().values() {
            let _ = slot.tx.send(msg.clone());
        }
    }

    /// Send `config` to every live worker; the future resolves once each has said whether
    /// it applied it, or at [`APPLY_TIMEOUT`]. A worker that dies meanwhile is not waited
    /// for (its replacement starts with the config in force, this one) nor counted.
    pub fn reconfigure(&self, config: &Config) -> impl Future<Output = Confirmation> + use<> {
        let msg = ToWorker::Config(Box::new(config.clone()));
        let mut waits: Vec<(WorkerId, oneshot::Receiver<bool>)> = {
            let slots = self.slots.lock();
            slots
                .iter()
                .filter_map(|(id, slot)| {
                    let rx = slot.pending.lock().wait_applied()?;
                    if slot.tx.send(msg.clone()).is_err() {
                        slot.pending.lock().applies.pop_back();
                        return None;
                    }
                    Some((*id, rx))
                })
                .collect()
        };
        waits.sort_by_key(|(id, _)| *id);
        async move {
            let deadline = Instant::now() + APPLY_TIMEOUT;
            let mut outcome = Confirmation::default();
            for (id, wait) in waits {
                match tokio::time::timeout_at(deadline, wait).await {
                    Ok(Ok(true)) => {
                        outcome.asked += 1;
                        outcome.applied += 1;
                    }
                    Ok(Ok(false)) => {
                        outcome.asked += 1;
                        outcome.refused.push(id);
                    }
                    // Gone: its control channel closed before it answered.
                    Ok(Err(_)) => {}
                    Err(_) => {
                        outcome.asked += 1;
                        outcome.silent.push(id);
                    }
                }
            }
            outcome
        }
    }

    /// Ask every live worker for a report; answers that do not come in time are missed.
    /// Returns each worker's metrics exposition and status document.
    pub async fn reports(&self) -> Vec<(String, Value)> {
        self.ask(usize::MAX, false, |id, _| ToWorker::Report(id))
            .await
            .into_iter()
            .filter_map(|answer| match answer {
                ToMaster::Report {
                    metrics, status, ..
                } => Some((metrics, status)),
                _ => None,
            })
            .collect()
    }

    /// Ask every live worker for its metrics exposition only (what a `/metrics` scrape
    /// needs, without each worker building its status document); answers that do not
    /// come in time are missed.
    pub async fn metrics(&self) -> Vec<String> {
        self.ask(usize::MAX, false, |id, _| ToWorker::Metrics(id))
            .await
            .into_iter()
            .filter_map(|answer| match answer {
                ToMaster::Report { metrics, .. } => Some(metrics),
                _ => None,
            })
            .collect()
    }

    /// Ask a server API call of every live worker (`Scope::Every`) or of one; returns the
    /// parts that came in time.
    pub async fn call(&self, call: &Call) -> Vec<Part> {
        let how_many = match call.scope() {
            Scope::AnyOne => 1,
            Scope::Every => usize::MAX,
        };
        let stamped = matches!(call, Call::Emit(_) | Call::Relay(_));
        // A stream entry is stamped with its id, the same on every node.
        let entry = match call {
            Call::Relay(relayed) => relayed.entry,
            _ => None,
        };
        let make = |id, stamp| ToWorker::Api {
            id,
            call: call.clone(),
            stamp: entry
                .map(crate::relay::recovery::remote::entry_stamp)
                .or(stamp),
        };
        if let Call::Relay(Relayed { ack: None, .. }) = call {
            // Another node's broadcast: sent to every worker in order, and not waited for,
            // so that a slow worker does not hold up the cluster's delivery to the others
            // (each worker logs what it refuses). Its recipients are not counted.
            let sent = self.send_all(stamped && entry.is_none(), make);
            return vec![Part::Delivered(0); sent.min(1)];
        }
        self.ask(how_many, stamped && entry.is_none(), make)
            .await
            .into_iter()
            .filter_map(|answer| match answer {
                ToMaster::Api { part, .. } => Some(part),
                _ => None,
            })
            .collect()
    }

    /// Send a request (made by `make` from its number) to every worker, answers unread;
    /// returns to how many it went.
    fn send_all(
        &self,
        stamped: bool,
        make: impl Fn(u64, Option<crate::adapter::Stamp>) -> ToWorker,
    ) -> usize {
        let slots = self.slots.lock();
        // Under the lock that orders the sends, as in `ask`.
        let stamp = stamped.then(|| crate::relay::history::Event::stamp_now(self.sequence.next()));
        slots
            .values()
            .filter(|slot| {
                let id = self.next_request.fetch_add(1, Ordering::Relaxed);
                slot.tx.send(make(id, stamp)).is_ok()
            })
            .count()
    }

    /// Send a request (made by `make` from its number) to up to `how_many` ready workers
    /// (all when there are fewer) and wait for their answers together, at most
    /// [`ASK_TIMEOUT`]; requests that were not answered by then are forgotten.
    async fn ask(
        &self,
        how_many: usize,
        stamped: bool,
        make: impl Fn(u64, Option<crate::adapter::Stamp>) -> ToWorker,
    ) -> Vec<ToMaster> {
        let asked: Vec<(u64, Pending, oneshot::Receiver<ToMaster>)> = {
            let slots = self.slots.lock();
            // Taken under the lock that orders the sends, so that every worker gets the
            // emits in the order of their ids (what a recovery position relies on).
            let stamp =
                stamped.then(|| crate::relay::history::Event::stamp_now(self.sequence.next()));
            let mut ready: Vec<(&WorkerId, &Slot)> = slots.iter().collect();
            ready.sort_by_key(|(id, slot)| (!slot.ready, **id));
            ready
                .into_iter()
                .filter_map(|(_, slot)| {
                    let id = self.next_request.fetch_add(1, Ordering::Relaxed);
                    let rx = slot.pending.lock().wait(id)?;
                    if slot.tx.send(make(id, stamp)).is_err() {
                        // Its control writer is gone (the worker died): no answer comes.
                        slot.pending.lock().by_id.remove(&id);
                        return None;
                    }
                    Some((id, slot.pending.clone(), rx))
                })
                .take(how_many)
                .collect()
        };
        let deadline = Instant::now() + ASK_TIMEOUT;
        let mut out = Vec::with_capacity(asked.len());
        for (id, pending, wait) in asked {
            match tokio::time::timeout_at(deadline, wait).await {
                Ok(Ok(answer)) => out.push(answer),
                _ => {
                    pending.lock().by_id.remove(&id);
                }
            }
        }
        out
    }

    /// Start the worker `args` describes as `generation`, serving `public`, with `config`
    /// as its first control message; its news goes to `events`.
    pub fn start(
        &self,
        args: &WorkerArgs,
        public: &std::net::TcpListener,
        config: &Config,
        generation: Generation,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Result<(), Error> {
        let id = args.id;
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(Error::ControlChannel)?;
        let theirs: OwnedFd = theirs.into();
        let mut child = spawn::worker(args, public, &theirs).map_err(Error::Spawn)?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        tracing::info!(worker = %id, pid, "worker started");
        // From here on the process exists: its exit is reported whatever happens next.
        {
            let events = events.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                let code = status.as_ref().ok().and_then(|s| s.code());
                let signal = status
                    .as_ref()
                    .ok()
                    .and_then(std::os::unix::process::ExitStatusExt::signal);
                tracing::info!(worker = %id, pid, code, signal, "worker exited");
                let _ = events.send(Event::Exited(id, generation, code));
            });
        }
        let (tx, rx) = mpsc::unbounded_channel::<ToWorker>();
        let mut config = config.clone();
        if let Some(cluster) = self.cluster.get() {
            config.cluster = cluster.clone();
        }
        let _ = tx.send(ToWorker::Start {
            config: Box::new(config),
            key: self.key.to_text(),
            node: self.node.0.clone(),
        });
        let pending = Pending::default();
        let last_pong = Arc::new(Mutex::new(Instant::now()));
        let slot = Slot {
            generation,
            pid,
            tx,
            pending: pending.clone(),
            last_pong: last_pong.clone(),
            ready: false,
        };
        self.slots.lock().insert(id, slot);
        // A control socket the runtime cannot take leaves the worker without its config:
        // it exits, and is restarted like any worker that died.
        let stream = match ours
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ours))
        {
            Ok(stream) => stream,
            Err(err) => {
                let err = Error::ControlChannel(err);
                tracing::error!(worker = %id, error = %err, "worker left without its config; it exits and is restarted");
                return Ok(());
            }
        };
        let (read, write) = stream.into_split();
        tokio::spawn(write_control(write, rx));
        tokio::spawn(read_control(
            read,
            id,
            generation,
            pending,
            last_pong,
            events.clone(),
        ));
        Ok(())
    }
}

/// Carry the master's messages to one worker, in order.
async fn write_control(
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<ToWorker>,
) {
    while let Some(msg) = rx.recv().await {
        if write
            .write_all(control::encode(&msg).as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Read one worker's messages: readiness to the loop, pongs to its slot, reports to
/// whoever asked.
async fn read_control(
    read: tokio::net::unix::OwnedReadHalf,
    id: WorkerId,
    generation: Generation,
    pending: Pending,
    last_pong: Arc<Mutex<Instant>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<ToMaster>(&line) {
            Ok(ToMaster::Ready) => {
                let _ = events.send(Event::Ready(id, generation));
            }
            Ok(ToMaster::Pong(_)) => *last_pong.lock() = Instant::now(),
            Ok(answer @ (ToMaster::Report { .. } | ToMaster::Api { .. })) => {
                let (ToMaster::Report { id: req, .. } | ToMaster::Api { id: req, .. }) = &answer
                else {
                    continue;
                };
                if let Some(tx) = pending.lock().by_id.remove(req) {
                    let _ = tx.send(answer);
                }
            }
            Ok(ToMaster::Applied { ok, error }) => {
                if !ok {
                    tracing::error!(worker = %id, error = ?error, "worker refused the new config");
                }
                // Whoever waits for this reload (READY=1) hears; a wait that timed out
                // left its sender here and the send simply fails.
                if let Some(tx) = pending.lock().applies.pop_front() {
                    let _ = tx.send(ok);
                }
            }
            Ok(ToMaster::Acked(acked)) => {
                let _ = events.send(Event::Acked(acked));
            }
            Ok(ToMaster::Webhooks(batch)) => {
                let _ = events.send(Event::Webhooks(batch));
            }
            Ok(ToMaster::Presence(changes)) => {
                let _ = events.send(Event::Presence(id, generation, changes));
            }
            Err(err) => tracing::warn!(worker = %id, error = %err, "unreadable control message"),
        }
    }
    // The worker is gone: whoever waits for its answers stops waiting now, and nobody
    // waits for it from here on.
    let mut waiting = pending.lock();
    waiting.closed = true;
    waiting.by_id.clear();
    waiting.applies.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker whose control channel closed (it died; the master has not yet heard of
    /// the exit) is not waited for: a status request answers at once with the others.
    #[tokio::test(start_paused = true)]
    async fn a_worker_that_is_gone_is_not_waited_for() {
        let workers = Workers::default();
        let (gone, mut gone_rx) = Slot::detached(Generation::default());
        gone.pending.lock().closed = true;
        workers.slots.lock().insert(WorkerId(0), gone);
        let (alive, mut alive_rx) = Slot::detached(Generation::default().next());
        let answers = alive.pending.clone();
        workers.slots.lock().insert(WorkerId(1), alive);
        let start = Instant::now();
        let answering = async {
            let Some(ToWorker::Report(id)) = alive_rx.recv().await else {
                panic!("the live worker is asked")
            };
            let tx = answers.lock().by_id.remove(&id).expect("waited for");
            let report = ToMaster::Report {
                id,
                metrics: String::new(),
                status: serde_json::json!({"worker": 1}),
            };
            tx.send(report).expect("still waited for");
        };
        let (reports, ()) = tokio::join!(workers.reports(), answering);
        assert_eq!(reports.len(), 1);
        assert_eq!(Instant::now(), start, "nobody waited for the dead worker");
        assert!(gone_rx.try_recv().is_err(), "nothing was sent to it");
    }

    /// A scrape asks for metrics only: the workers are not made to build their status.
    #[tokio::test(start_paused = true)]
    async fn a_scrape_asks_for_metrics_only() {
        let workers = Workers::default();
        let (slot, mut rx) = Slot::detached(Generation::default());
        let answers = slot.pending.clone();
        workers.slots.lock().insert(WorkerId(0), slot);
        let answering = async {
            let Some(ToWorker::Metrics(id)) = rx.recv().await else {
                panic!("a metrics request, not a full report")
            };
            let tx = answers.lock().by_id.remove(&id).expect("waited for");
            let report = ToMaster::Report {
                id,
                metrics: "iorelay_x 1\n".into(),
                status: Value::Null,
            };
            tx.send(report).expect("still waited for");
        };
        let (texts, ()) = tokio::join!(workers.metrics(), answering);
        assert_eq!(texts, vec!["iorelay_x 1\n".to_owned()]);
    }

    /// A worker that does not answer costs one deadline for the whole request, and its
    /// request is forgotten.
    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_costs_one_deadline_and_is_forgotten() {
        let workers = Workers::default();
        let (silent, _rx) = Slot::detached(Generation::default());
        let waiting = silent.pending.clone();
        workers.slots.lock().insert(WorkerId(0), silent);
        let start = Instant::now();
        assert!(workers.reports().await.is_empty());
        assert_eq!(Instant::now() - start, ASK_TIMEOUT);
        assert!(waiting.lock().by_id.is_empty(), "no leaked request");
    }
}
