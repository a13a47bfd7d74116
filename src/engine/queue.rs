//! A session's outbound queue while no WebSocket writer has taken its output over (a
//! polling session, an upgrade in progress): bounded, taken from by one transport at a
//! time, and allocating nothing while empty. (tokio's mpsc channel allocates a block of
//! 32 slots up front, about 1.3 KiB for every session, though a WebSocket session never
//! queues anything here.)

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::outgoing::Outgoing;

/// Slots an emptied queue may keep; a longer one is freed.
const KEEP_SLOTS: usize = 16;

/// The queue. Whoever takes from it holds the session's carrier lock.
pub(crate) struct Queue {
    items: Mutex<VecDeque<Outgoing>>,
    /// Wakes the transport waiting in [`Queue::recv`].
    ready: Notify,
    capacity: usize,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Most items it holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Add an item; gives it back when the queue is full.
    pub(crate) fn push(&self, item: Outgoing) -> Result<(), Outgoing> {
        let mut items = self.items.lock();
        if items.len() >= self.capacity {
            return Err(item);
        }
        items.push_back(item);
        drop(items);
        self.ready.notify_one();
        Ok(())
    }

    /// Whether nothing is queued.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.lock().is_empty()
    }

    /// The next item, if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Outgoing> {
        let mut items = self.items.lock();
        let item = items.pop_front();
        if items.is_empty() && items.capacity() > KEEP_SLOTS {
            *items = VecDeque::new();
        }
        item
    }

    /// Wait for the next item.
    pub(crate) async fn recv(&self) -> Outgoing {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(item) = self.try_recv() {
                return item;
            }
            ready.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Frame;

    fn item(n: usize) -> Outgoing {
        Outgoing::Frame(Frame::message(&n.to_string()))
    }

    fn text(item: &Outgoing) -> String {
        match item.frames() {
            [Frame::Text(t)] => t.to_string(),
            other => panic!("one text frame expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bounded_in_order_and_a_waiting_taker_is_woken() {
        let queue = std::sync::Arc::new(Queue::new(3));
        for n in 0..3 {
            queue.push(item(n)).expect("room");
        }
        assert!(queue.push(item(3)).is_err(), "full at its capacity");
        for n in 0..3 {
            assert_eq!(text(&queue.recv().await), format!("4{n}"));
        }
        assert!(queue.try_recv().is_none());
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { text(&queue.recv().await) })
        };
        tokio::task::yield_now().await;
        queue.push(item(9)).expect("room");
        assert_eq!(waiter.await.expect("joined"), "49");
    }
}
