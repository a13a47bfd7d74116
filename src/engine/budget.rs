//! The worker-wide budget for what clients have queued outbound (`engine.outbound_budget`).
//!
//! Each session is bounded on its own (`engine.write_queue` items and a byte budget), but
//! a thousand clients that stop reading, each just under its own bound, add up to more
//! than the worker can hold. This counter is their sum: bytes waiting in polling queues,
//! and in WebSocket outboxes whose socket is full (only those: an outbox the flusher
//! empties on its next turn holds nothing for long, and charging it would cost every
//! healthy delivery an atomic add on a counter all threads share). The session whose
//! item would take the sum over the budget is closed as a slow consumer, counted as
//! `memory_budget`; a client that keeps reading is never charged for long and never
//! closed by it.
//!
//! What it does not own: the per-session bounds (`session`, `outbox`, `queue`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes queued outbound in one engine, and the most there may be.
#[derive(Debug)]
pub(crate) struct Budget {
    held: AtomicUsize,
    limit: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            held: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        }
    }

    /// An unlimited budget (tests, sessions made outside an engine).
    #[cfg(test)]
    pub(crate) fn unlimited() -> std::sync::Arc<Budget> {
        std::sync::Arc::new(Budget::new(usize::MAX))
    }

    /// Set the limit (a reload applies to what is queued next).
    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Charge `bytes` unless that takes the sum over the limit; false (and nothing
    /// charged) then. One atomic add (and a subtraction when refused).
    pub(crate) fn try_charge(&self, bytes: usize) -> bool {
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.limit.load(Ordering::Relaxed) {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Charge `bytes` that are held already, whatever the limit (an outbox whose socket
    /// just filled up keeps what it has; its next item is what gets refused).
    pub(crate) fn charge(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    /// `bytes` charged earlier are no longer held.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Bytes charged now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_would_pass_the_limit_and_charges_nothing_then() {
        let budget = Budget::new(100);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(41));
        assert_eq!(budget.held(), 60);
        assert!(budget.try_charge(40));
        budget.charge(10);
        assert_eq!(
            budget.held(),
            110,
            "held bytes are charged whatever the limit"
        );
        assert!(!budget.try_charge(1));
        budget.release(110);
        assert_eq!(budget.held(), 0);
        budget.set_limit(5);
        assert!(!budget.try_charge(6));
    }
}
