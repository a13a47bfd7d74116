//! The master's restart policy, as a pure type: given a worker's exit (its code and the
//! time), decide whether to restart it and after how long. A fatal code (bad config, no
//! permission: see [`exit::is_fatal`]) is never answered with a restart — the same
//! process would fail the same way, and a slot left empty would strand the connections
//! the kernel hashes to its socket, so the daemon stops and lets its supervisor act.
//! Anything else is restarted with an exponential backoff that grows with the number of
//! exits within a window; more than a few within it is reported as a crash loop (and
//! still restarted, ever more slowly).
//!
//! Time is passed in, never read, so that the tests say exactly when each exit happens;
//! it is tokio's clock, the one the master's timers run on, so the tests can run on a
//! paused clock and move it forward.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::exit;
use super::spawn::WorkerId;

/// Exits within this window count towards a crash loop.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// More exits than this within the window is a crash loop.
pub const CRASH_LOOP: usize = 5;
/// The backoff's unit: the first restart waits twice this.
const BACKOFF_UNIT: Duration = Duration::from_millis(100);
/// The backoff stops doubling after this many recent exits (12.8 s).
const BACKOFF_DOUBLINGS: u32 = 7;
/// Wait before trying again when starting a worker failed.
pub const RETRY_START: Duration = Duration::from_secs(1);

/// What to do about a worker that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart it after `after`.
    Restart {
        /// The backoff.
        after: Duration,
        /// Its exits within the window, this one included: more than [`CRASH_LOOP`]
        /// is a crash loop.
        recent: usize,
    },
    /// Do not restart it: stop the daemon with this code.
    GiveUp(u8),
}

impl Decision {
    /// Whether this restart is part of a crash loop.
    pub fn is_crash_loop(&self) -> bool {
        matches!(self, Decision::Restart { recent, .. } if *recent > CRASH_LOOP)
    }
}

/// The recent exits of each worker slot.
#[derive(Debug, Default)]
pub struct Policy {
    exits: HashMap<WorkerId, VecDeque<Instant>>,
}

impl Policy {
    /// Worker `id` exited at `now` with `code` (`None`: killed by a signal).
    pub fn on_exit(&mut self, id: WorkerId, code: Option<i32>, now: Instant) -> Decision {
        if let Some(code) = code.filter(|c| exit::is_fatal(*c)) {
            return Decision::GiveUp(u8::try_from(code).expect("fatal codes fit in a byte"));
        }
        let recent = self.exits.entry(id).or_default();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > CRASH_WINDOW)
        {
            recent.pop_front();
        }
        let doublings = u32::try_from(recent.len())
            .unwrap_or(u32::MAX)
            .min(BACKOFF_DOUBLINGS);
        Decision::Restart {
            after: BACKOFF_UNIT * (1 << doublings),
            recent: recent.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: WorkerId = WorkerId(0);
    const B: WorkerId = WorkerId(1);

    fn after(d: Decision) -> Duration {
        match d {
            Decision::Restart { after, .. } => after,
            Decision::GiveUp(code) => panic!("gave up with {code}"),
        }
    }

    /// Worker `id` exits with `code` now, on the test's paused clock.
    fn exit_now(p: &mut Policy, id: WorkerId, code: Option<i32>) -> Decision {
        p.on_exit(id, code, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn restartable_exits_back_off_exponentially_up_to_a_cap() {
        let mut p = Policy::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            waits.push(after(exit_now(&mut p, A, Some(70))).as_millis());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            waits,
            [200, 400, 800, 1600, 3200, 6400, 12800, 12800, 12800]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn signals_and_software_errors_are_restarted_fatal_codes_are_not() {
        let mut p = Policy::default();
        for code in [
            None,
            Some(0),
            Some(1),
            Some(70),
            Some(75),
            Some(101),
            Some(137),
        ] {
            assert!(matches!(
                exit_now(&mut p, B, code),
                Decision::Restart { .. }
            ));
        }
        assert_eq!(exit_now(&mut p, A, Some(78)), Decision::GiveUp(78));
        assert_eq!(exit_now(&mut p, A, Some(77)), Decision::GiveUp(77));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_old_exits_and_slots_are_independent() {
        let mut p = Policy::default();
        for _ in 0..6 {
            exit_now(&mut p, A, Some(70));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let looping = exit_now(&mut p, A, Some(70));
        assert!(looping.is_crash_loop(), "{looping:?}");
        // Another slot starts from scratch.
        let other = exit_now(&mut p, B, Some(70));
        assert_eq!(after(other), Duration::from_millis(200));
        assert!(!other.is_crash_loop());
        // Once the window has passed, the slot's history is forgotten.
        tokio::time::advance(CRASH_WINDOW + Duration::from_secs(1)).await;
        let later = exit_now(&mut p, A, Some(70));
        assert_eq!(after(later), Duration::from_millis(200));
        assert!(!later.is_crash_loop());
    }
}
