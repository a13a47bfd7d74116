//! Room webhooks: `room.occupied`, `room.vacated`, `member.joined` and `member.left`,
//! POSTed to the `[webhooks] url` as signed JSON batches.
//!
//! **Once per host.** Every join and leave happens on exactly one process, which learns
//! the room's host-wide member count from the bus right after (1 after a join: the room
//! became occupied; 0 after a leave: vacated). The relay reports each change through its
//! membership sink ([`crate::relay::Membership`]); [`events_of`] turns it into events.
//! A worker forwards them to the master over its control channel; the master (or the
//! single process) owns the one [`Webhooks`] sender of the host. When a worker dies,
//! every survivor's bus reports its members' leaves; only the lowest-numbered survivor
//! forwards them (`PeerAdapter::lowest_linked`), so they too are sent once. In a cluster
//! the counts are cluster-wide, other nodes' joins and leaves are theirs to report, and
//! the leaves of a node that is gone are reported by one live node
//! ([`crate::cluster::presence`]).
//!
//! **Queue.** Events wait in one bounded queue (`queue`, live): when it is full a new
//! event is dropped and counted (`iorelay_webhook_dropped_total{reason="queue_full"}`),
//! so a receiver that is down never grows memory. Events of kinds not in `events` are
//! not queued.
//!
//! **Delivery** ([`delivery`]): one batch at a time, at most `batch` events, sent when it
//! is full or `linger` after its first event. Body `{"events":[…]}`, each event
//! `{"event","namespace","room","socket","user","count","time"}` (`time` in unix
//! milliseconds), headers `Content-Type: application/json`, `X-Iorelay-Timestamp` (unix
//! seconds) and `X-Iorelay-Signature` ([`sign`]). A 2xx answer is a delivery; any other
//! status, a connection error or a request longer than `timeout` is retried after
//! `backoff`, doubling up to `backoff_max`, `retries` times; then the batch is dropped
//! and counted (`reason="retries_exhausted"`) with an ERROR log line. Each attempt is
//! counted in `iorelay_webhook_deliveries_total{outcome}`. Events still queued when the
//! daemon stops are lost.
//!
//! **Reload**: url, secret (and `secret_file`), events and every bound change live; a
//! batch being retried keeps the settings it started with.

pub mod delivery;
pub mod sign;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use prometheus::{IntCounterVec, IntGauge};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::WebhooksConfig;
use crate::relay::Membership;

/// Largest `secret_file` read.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Errors taking on a `[webhooks]` config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secret file cannot be read.
    #[error("webhooks.secret_file: cannot read {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret file is empty or too large.
    #[error("webhooks.secret_file: {path} {reason}")]
    BadSecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The URL is not a usable `http://` URL (validation catches this first).
    #[error("webhooks.url: {0}")]
    Url(String),
}

/// One event as the receiver gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `room.occupied`, `room.vacated`, `member.joined` or `member.left`.
    pub event: String,
    /// The namespace, `/` or `/chat`.
    pub namespace: String,
    /// The room.
    pub room: String,
    /// The socket that joined or left (for room events, the one whose join or leave
    /// changed the room's state).
    pub socket: String,
    /// Its display name.
    pub user: Option<String>,
    /// The room's host-wide member count right after the change.
    pub count: usize,
    /// When it happened, unix milliseconds.
    pub time: u64,
}

/// The events one membership change makes: `member.joined` (and `room.occupied` first
/// when the room had nobody), or `member.left` (and `room.vacated` after it when nobody
/// is left).
pub fn events_of(m: &Membership) -> Vec<Event> {
    // The relay's own rooms (a namespace's connections) are no room of the webhooks.
    if !crate::adapter::is_listed(&m.room) {
        return Vec::new();
    }
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let event = |name: &str| Event {
        event: name.to_owned(),
        namespace: m.nsp.to_string(),
        room: m.room.to_string(),
        socket: m.socket.to_string(),
        user: m.user.as_deref().map(str::to_owned),
        count: m.count,
        time,
    };
    match (m.joined, m.count) {
        (true, 1) => vec![event("room.occupied"), event("member.joined")],
        (true, _) => vec![event("member.joined")],
        (false, 0) => vec![event("member.left"), event("room.vacated")],
        (false, _) => vec![event("member.left")],
    }
}

/// The webhooks' instruments.
#[derive(Debug, Clone)]
pub struct Meters {
    /// Events queued, by event.
    pub events: IntCounterVec,
    /// POST attempts, by outcome (`ok`, `status`, `timeout`, `error`).
    pub deliveries: IntCounterVec,
    /// Events dropped, by reason (`queue_full`, `retries_exhausted`).
    pub dropped: IntCounterVec,
    /// Events waiting in the queue.
    pub queued: IntGauge,
}

impl Meters {
    /// Make every label value appear (at 0) in the exposition.
    pub fn touch(&self) {
        for e in crate::config::webhooks::EVENT_NAMES {
            self.events.with_label_values(&[e]);
        }
        for o in delivery::OUTCOMES {
            self.deliveries.with_label_values(&[o]);
        }
        for r in ["queue_full", "retries_exhausted"] {
            self.dropped.with_label_values(&[r]);
        }
    }
}

/// The settings in force, resolved from `[webhooks]` (the secret read).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to POST; none: webhooks are off.
    pub target: Option<delivery::Target>,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// The event names sent.
    pub events: Vec<String>,
    /// Most events queued.
    pub queue: usize,
    /// Most events per POST.
    pub batch: usize,
    /// Wait for more events before sending a partial batch.
    pub linger: Duration,
    /// One POST's time limit.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First retry pause.
    pub backoff: Duration,
    /// Longest retry pause.
    pub backoff_max: Duration,
}

impl Settings {
    /// Resolve `config`: parse the URL and read the secret file.
    pub fn resolve(config: &WebhooksConfig) -> Result<Settings, Error> {
        let target = if config.enabled() {
            Some(delivery::Target::parse(&config.url).map_err(Error::Url)?)
        } else {
            None
        };
        let secret = match &config.secret_file {
            Some(path) => read_secret(path)?,
            None => config.secret.as_bytes().to_vec(),
        };
        Ok(Settings {
            target,
            secret,
            events: config.events.clone(),
            queue: config.queue,
            batch: config.batch.max(1),
            linger: config.linger,
            timeout: config.timeout,
            retries: config.retries,
            backoff: config.backoff,
            backoff_max: config.backoff_max,
        })
    }
}

fn read_secret(path: &PathBuf) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| Error::SecretFile {
        path: path.clone(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|source| Error::SecretFile {
            path: path.clone(),
            source,
        })?;
    let bad = |reason| Error::BadSecretFile {
        path: path.clone(),
        reason,
    };
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(bad("is larger than 64 KiB"));
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(bad("is empty"));
    }
    Ok(secret.as_bytes().to_vec())
}

/// The host's one webhook sender: the queue and the task that delivers it. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: RwLock<Arc<Settings>>,
    queue: Mutex<VecDeque<Event>>,
    /// Woken when the queue gets an event (a stored permit covers a push between the
    /// sender's check and its wait).
    ready: Notify,
    meters: Meters,
}

impl Webhooks {
    /// A sender with `config` in force; call [`Webhooks::spawn`] on a runtime to deliver.
    pub fn new(config: &WebhooksConfig, meters: Meters) -> Result<Webhooks, Error> {
        meters.touch();
        Ok(Webhooks {
            inner: Arc::new(Inner {
                settings: RwLock::new(Arc::new(Settings::resolve(config)?)),
                queue: Mutex::new(VecDeque::new()),
                ready: Notify::new(),
                meters,
            }),
        })
    }

    /// Start the delivery task.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(delivery::run(self.clone()))
    }

    /// Take on a new config (a reload); an error leaves the old settings in force.
    pub fn reconfigure(&self, config: &WebhooksConfig) -> Result<(), Error> {
        self.install(Settings::resolve(config)?);
        Ok(())
    }

    /// Put settings resolved earlier in force (a reload that resolves first and installs
    /// once nothing else can fail).
    pub fn install(&self, settings: Settings) {
        *self.inner.settings.write() = Arc::new(settings);
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings.read().clone()
    }

    /// The instruments.
    pub fn meters(&self) -> &Meters {
        &self.inner.meters
    }

    /// Queue `events` (those of kinds not sent are skipped; with webhooks off, all).
    pub fn push(&self, events: impl IntoIterator<Item = Event>) {
        let settings = self.settings();
        if settings.target.is_none() {
            return;
        }
        let meters = &self.inner.meters;
        let mut queue = self.inner.queue.lock();
        let mut added = false;
        for e in events {
            if !settings.events.contains(&e.event) {
                continue;
            }
            if queue.len() >= settings.queue {
                meters.dropped.with_label_values(&["queue_full"]).inc();
                tracing::debug!(event = %e.event, "webhook queue full, event dropped");
                continue;
            }
            meters.events.with_label_values(&[&e.event]).inc();
            queue.push_back(e);
            added = true;
        }
        meters
            .queued
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        drop(queue);
        if added {
            self.inner.ready.notify_one();
        }
    }

    /// Wait until an event is queued.
    async fn until_queued(&self) {
        while self.inner.queue.lock().is_empty() {
            self.inner.ready.notified().await;
        }
    }

    /// How many events wait.
    fn len(&self) -> usize {
        self.inner.queue.lock().len()
    }

    /// Take up to `n` events from the front of the queue.
    fn take(&self, n: usize) -> Vec<Event> {
        let mut queue = self.inner.queue.lock();
        let n = n.min(queue.len());
        let batch: Vec<Event> = queue.drain(..n).collect();
        self.inner
            .meters
            .queued
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        batch
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn meters() -> Meters {
        let m = crate::telemetry::metrics::Metrics::new();
        m.webhooks
    }

    pub(crate) fn on(url: &str) -> WebhooksConfig {
        WebhooksConfig {
            url: url.to_owned(),
            secret: "s3cret".into(),
            ..WebhooksConfig::default()
        }
    }

    pub(crate) fn event(name: &str, room: &str) -> Event {
        Event {
            event: name.to_owned(),
            namespace: "/".into(),
            room: room.into(),
            socket: "abc".into(),
            user: None,
            count: 1,
            time: 0,
        }
    }

    fn change(joined: bool, count: usize) -> Membership {
        Membership {
            nsp: Arc::from("/"),
            room: Arc::from("r"),
            socket: Arc::from("s1"),
            user: Some(Arc::from("ann")),
            joined,
            count,
            departed: false,
        }
    }

    fn names(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.event.as_str()).collect()
    }

    #[test]
    fn first_join_occupies_and_last_leave_vacates() {
        assert_eq!(
            names(&events_of(&change(true, 1))),
            ["room.occupied", "member.joined"]
        );
        assert_eq!(names(&events_of(&change(true, 2))), ["member.joined"]);
        assert_eq!(names(&events_of(&change(false, 1))), ["member.left"]);
        assert_eq!(
            names(&events_of(&change(false, 0))),
            ["member.left", "room.vacated"]
        );
        let e = &events_of(&change(true, 2))[0];
        let json = serde_json::to_value(e).unwrap();
        assert_eq!(json["user"], "ann");
        assert_eq!(json["socket"], "s1");
        assert_eq!(json["count"], 2);
        assert!(json["time"].as_u64().unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn the_queue_is_bounded_and_drops_are_counted() {
        let hooks = Webhooks::new(
            &WebhooksConfig {
                queue: 3,
                ..on("http://127.0.0.1:9/")
            },
            meters(),
        )
        .unwrap();
        hooks.push((0..5).map(|i| event("member.joined", &format!("r{i}"))));
        assert_eq!(hooks.len(), 3);
        let m = hooks.meters();
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 2);
        assert_eq!(m.events.with_label_values(&["member.joined"]).get(), 3);
        assert_eq!(m.queued.get(), 3);
        let taken = hooks.take(2);
        assert_eq!(taken[0].room, "r0");
        assert_eq!(m.queued.get(), 1);
    }

    #[test]
    fn only_configured_kinds_are_queued_and_off_queues_nothing() {
        let hooks = Webhooks::new(
            &WebhooksConfig {
                events: vec!["room.occupied".into()],
                ..on("http://127.0.0.1:9/")
            },
            meters(),
        )
        .unwrap();
        hooks.push([event("member.joined", "r"), event("room.occupied", "r")]);
        assert_eq!(hooks.len(), 1);
        hooks.reconfigure(&WebhooksConfig::default()).unwrap();
        hooks.push([event("room.occupied", "r")]);
        assert_eq!(hooks.len(), 1, "webhooks off: nothing more queued");
    }

    #[test]
    fn the_secret_file_wins_and_a_bad_one_keeps_the_old_settings() {
        let dir = std::env::temp_dir().join(format!("iorelay-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "  from-file\n").unwrap();
        let mut config = on("http://127.0.0.1:9/");
        config.secret_file = Some(file.clone());
        let hooks = Webhooks::new(&config, meters()).unwrap();
        assert_eq!(hooks.settings().secret, b"from-file");
        std::fs::write(&file, "\n").unwrap();
        let err = hooks.reconfigure(&config).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        assert_eq!(hooks.settings().secret, b"from-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
