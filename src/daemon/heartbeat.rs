//! The master's heartbeat over each worker's control channel: every [`HEARTBEAT`] the
//! master pings every worker; a worker silent longer than its deadline
//! ([`HEARTBEAT_DEADLINE`] once ready, [`STARTUP_DEADLINE`] before) is stuck and gets
//! killed (then restarted like any dead worker). A master that did not run for a while
//! (the whole service stopped, the machine suspended) learns nothing from its workers'
//! silence: their deadlines start again instead.
//!
//! Decisions only; the master sends the pings and the signals. Times are tokio
//! [`Instant`]s, so that the tests run on a paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// How often the master pings each worker.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A ready worker silent this long is killed and replaced.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(5);
/// A worker not ready this long after its start is killed and replaced.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(15);
/// A gap between ticks longer than this means the master itself was paused.
const PAUSE: Duration = Duration::from_secs(3);

/// The heartbeat's own state: the ping number and when it last ran.
#[derive(Debug)]
pub struct Heartbeat {
    ping: u64,
    last_tick: Instant,
}

/// What one tick decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The ping number to send to every worker.
    pub ping: u64,
    /// How long the master was paused, if it was: every worker's silence restarts now.
    pub paused: Option<Duration>,
}

impl Heartbeat {
    /// A heartbeat starting at `now`.
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            ping: 0,
            last_tick: now,
        }
    }

    /// The heartbeat ran at `now` (not when its tick was due).
    pub fn tick(&mut self, now: Instant) -> Tick {
        self.ping += 1;
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        Tick {
            ping: self.ping,
            paused: (gap > PAUSE).then_some(gap),
        }
    }
}

/// How long a worker last heard from at `last_pong` has been silent at `now`, when that
/// is past its deadline (a worker never ready within the startup deadline is as stuck as
/// one that stopped answering).
pub fn overdue(ready: bool, last_pong: Instant, now: Instant) -> Option<Duration> {
    let silent = now.saturating_duration_since(last_pong);
    let deadline = if ready {
        HEARTBEAT_DEADLINE
    } else {
        STARTUP_DEADLINE
    };
    (silent > deadline).then_some(silent)
}

/// Whether a worker counts as answering, for systemd's watchdog: ready and not silent.
pub fn answering(ready: bool, last_pong: Instant, now: Instant) -> bool {
    ready && now.saturating_duration_since(last_pong) < HEARTBEAT_DEADLINE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the master's heartbeat loop on the paused clock for `ticks` ticks, the worker
    /// answering while `answers(tick)`; returns the tick at which it was found overdue.
    async fn killed_at(ready: bool, answers: impl Fn(u64) -> bool) -> Option<u64> {
        let mut interval = tokio::time::interval(HEARTBEAT);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = Heartbeat::new(Instant::now());
        let mut last_pong = Instant::now();
        for _ in 0..30 {
            interval.tick().await;
            let now = Instant::now();
            let tick = beat.tick(now);
            if answers(tick.ping) {
                last_pong = now;
            }
            if overdue(ready, last_pong, now).is_some() {
                return Some(tick.ping);
            }
        }
        None
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_is_overdue_after_its_deadline() {
        assert_eq!(killed_at(true, |_| true).await, None);
        // Last answer at ping 3 (t = 2 s): more than 5 s of silence at t = 8 s, ping 9.
        assert_eq!(killed_at(true, |p| p <= 3).await, Some(9));
        // Never ready, never answering: the startup deadline (15 s) applies.
        assert_eq!(killed_at(false, |_| false).await, Some(17));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_master_gives_fresh_deadlines() {
        let start = Instant::now();
        let mut beat = Heartbeat::new(start);
        tokio::time::advance(HEARTBEAT).await;
        assert_eq!(beat.tick(Instant::now()).paused, None);
        let last_pong = Instant::now();
        // The master was stopped for ten seconds: its worker looks silent...
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert!(overdue(true, last_pong, now).is_some());
        assert!(!answering(true, last_pong, now));
        // ...but the tick sees the gap, and the master resets the worker's deadline.
        let tick = beat.tick(now);
        assert_eq!(tick.ping, 2);
        assert_eq!(tick.paused, Some(Duration::from_secs(10)));
        assert!(overdue(true, now, now).is_none());
        assert!(answering(true, now, now));
        assert!(!answering(false, now, now), "not ready is not answering");
    }
}
