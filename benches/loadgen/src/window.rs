//! The in-flight window of fan-out's max mode (`--rate 0` / `--max`).
//!
//! The rule: a message is *in flight* from the moment the publisher sends it until
//! every live subscriber has received it; the publisher sends only while fewer than
//! `--in-flight` (K) messages are in flight. In other words
//! `sent − (messages received by the slowest subscriber) < K`.
//!
//! Why this and not "K unacked emits": the server acks a `msg` once it has queued the
//! fan-out, not once the subscribers have read it, so an ack window bounds only the
//! server's input. The output queues would then grow by as much as the generator reads
//! slower than the server writes, until the server drops subscribers as slow consumers
//! (iorelay: `engine.write_queue`, 1024 packets), and the run would measure the
//! generator's reading speed and the server's drop policy rather than delivery. With
//! the delivery window each subscriber has at most K messages outstanding (K ≤ 1024 keeps
//! iorelay's queue from overflowing), and the rate found is the rate at which the server
//! and the generator together deliver to every subscriber.
//!
//! How it is counted in O(1) per delivery: a ring of K slots, slot `seq % K` packing
//! `(seq + 1, receipts)` into one atomic. A subscriber's receipt bumps the slot if it
//! still holds that seq; when the receipts reach the number of live subscribers the
//! message is complete and `completed` (every seq below it is complete) advances.
//! Each subscriber receives the publisher's messages in order, so completions come in
//! order; a subscriber that dies lowers the threshold, and the advance loop then also
//! completes messages that it had already received (flow control only: the counts and
//! `undelivered` come from the subscribers' own counters, not from here).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Bits of a slot that count receipts (up to 16 M subscribers).
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The window shared by the publisher and every subscriber.
#[derive(Debug)]
pub struct Window {
    /// `(seq + 1) << COUNT_BITS | receipts` of the message in flight in each slot.
    slots: Box<[AtomicU64]>,
    /// K.
    size: u64,
    /// Receipts that complete a message: the live, joined subscribers.
    threshold: AtomicU64,
    /// Every seq below this is complete.
    completed: AtomicU64,
    /// Serialises advancing `completed` (once per message, not per receipt).
    advance: Mutex<()>,
    /// Wakes the publisher when `completed` advances.
    notify: Notify,
}

impl Window {
    /// A window of `size` messages (at least 1) and no subscriber yet.
    pub fn new(size: u64) -> Window {
        let size = size.max(1);
        Window {
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            size,
            threshold: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            advance: Mutex::new(()),
            notify: Notify::new(),
        }
    }

    /// K.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Every seq below this has reached every live subscriber.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// A subscriber joined and will receive what is sent from now on.
    pub fn add_subscriber(&self) {
        self.threshold.fetch_add(1, Ordering::AcqRel);
    }

    /// A subscriber is gone: messages no longer wait for it.
    pub fn lost_subscriber(&self) {
        self.threshold.fetch_sub(1, Ordering::AcqRel);
        self.advance();
    }

    /// The publisher is about to send `seq`; its slot's previous message is complete
    /// (the caller waited for room).
    pub fn sending(&self, seq: u64) {
        self.slots[(seq % self.size) as usize].store((seq + 1) << COUNT_BITS, Ordering::Release);
    }

    /// A subscriber received `seq`.
    pub fn received(&self, seq: u64) {
        let slot = &self.slots[(seq % self.size) as usize];
        let mut v = slot.load(Ordering::Acquire);
        loop {
            if v >> COUNT_BITS != seq + 1 {
                // Not (or no longer) the message in this slot: nothing to count.
                return;
            }
            match slot.compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if (v + 1) & COUNT_MASK >= self.threshold.load(Ordering::Acquire) {
                        self.advance();
                    }
                    return;
                }
                Err(now) => v = now,
            }
        }
    }

    /// Move `completed` past every complete message and wake the publisher.
    fn advance(&self) {
        let _guard = self.advance.lock().unwrap_or_else(|p| p.into_inner());
        let start = self.completed.load(Ordering::Acquire);
        let threshold = self.threshold.load(Ordering::Acquire);
        let mut c = start;
        loop {
            let v = self.slots[(c % self.size) as usize].load(Ordering::Acquire);
            if v >> COUNT_BITS == c + 1 && v & COUNT_MASK >= threshold {
                c += 1;
            } else {
                break;
            }
        }
        if c != start {
            self.completed.store(c, Ordering::Release);
            self.notify.notify_one();
        }
    }

    /// Wait until fewer than K of the `sent` messages are in flight.
    pub async fn room(&self, sent: u64) {
        loop {
            if sent.saturating_sub(self.completed()) < self.size {
                return;
            }
            // A completion between the check and here leaves a permit: no lost wake-up.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_in_order_when_all_received() {
        let w = Window::new(2);
        w.add_subscriber();
        w.add_subscriber();
        w.sending(0);
        w.sending(1);
        w.received(0);
        w.received(1);
        assert_eq!(w.completed(), 0);
        w.received(0);
        assert_eq!(w.completed(), 1);
        w.received(1);
        assert_eq!(w.completed(), 2);
        // Slot 0 now takes seq 2; a stale receipt for seq 0 is ignored.
        w.sending(2);
        w.received(0);
        w.received(2);
        assert_eq!(w.completed(), 2);
        w.lost_subscriber();
        assert_eq!(
            w.completed(),
            3,
            "one receipt is enough once one subscriber left"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn room_waits_for_completion() {
        let w = std::sync::Arc::new(Window::new(1));
        w.add_subscriber();
        w.sending(0);
        let w2 = w.clone();
        let waiter = tokio::spawn(async move { w2.room(1).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        w.received(0);
        waiter.await.expect("waiter ran");
    }
}
