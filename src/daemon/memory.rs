//! Giving memory back after a connection peak.
//!
//! glibc's allocator keeps the pages of freed allocations for later reuse and returns
//! only the top of its heap to the kernel. After 10,000 WebSocket connections come and
//! go, a worker therefore stays at its peak RSS (about 84 MB, with 0.5 MB still in use),
//! which looks like a leak on every memory graph and to Monit. Once a second the trimmer
//! asks the engine for the most sessions live at once since it last asked (the engine
//! keeps that high-water mark as sessions open, so a peak that comes and goes between two
//! looks counts too). When the live sessions are [`TRIM_AFTER`] or more below the peak
//! since the last trim and have stopped falling, `malloc_trim(0)` hands the free pages
//! back (84 → 11 MB in that case, in 10–20 ms on a blocking thread, during which this
//! worker's allocations wait for the allocator's lock: hence once after a wave of
//! disconnects, not during it).
//!
//! Only on Linux with glibc; elsewhere the trimmer is not started. `malloc_trim` is a
//! glibc extension that neither std nor `nix` wraps, so its one call stays an `unsafe`
//! libc call.

#![allow(unsafe_code)]

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::engine::Engine;

/// How far the live sessions must fall below their peak before memory is trimmed.
pub const TRIM_AFTER: usize = 1000;
/// How often the session count is read.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Start the trimmer for `engine` on the current runtime (Linux with glibc only); it
/// ends with the engine.
pub fn spawn_trimmer(engine: &Arc<Engine>) {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let engine: Weak<Engine> = Arc::downgrade(engine);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut peak, mut last) = (0, 0);
            loop {
                tick.tick().await;
                let Some((high, live)) = engine.upgrade().map(|e| e.take_session_peak()) else {
                    return;
                };
                peak = peak.max(high);
                let falling = live < last;
                last = live;
                if peak - live >= TRIM_AFTER && !falling {
                    let started = Instant::now();
                    let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                    tracing::debug!(
                        peak,
                        live,
                        released,
                        took_ms = started.elapsed().as_secs_f64() * 1e3,
                        "memory trimmed after a connection peak"
                    );
                    peak = live;
                }
            }
        });
    }
}

/// Return the allocator's free pages to the kernel; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory; it
    // takes the allocator's locks like malloc does and is safe to call from any thread.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
