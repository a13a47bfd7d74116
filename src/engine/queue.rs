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

    /// Put an [`Outgoing::Latest`] item in the place of the newest queued one of its key,
    /// when the queue is half full or `behind`; the replaced item's bytes. Gives the item
    /// back when it takes no place (the queue has room enough, or holds none of its key).
    pub(crate) fn supersede(&self, item: Outgoing, behind: bool) -> Result<usize, Outgoing> {
        let Some(key) = item.latest_key() else {
            return Err(item);
        };
        let mut items = self.items.lock();
        if !behind && items.len() < self.capacity / 2 {
            return Err(item);
        }
        match items.iter_mut().rev().find(|q| q.latest_key() == Some(key)) {
            Some(older) => Ok(std::mem::replace(older, item).bytes()),
            None => Err(item),
        }
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

    #[test]
    fn a_latest_item_replaces_the_newest_of_its_key_once_half_full() {
        let queue = Queue::new(4);
        let key: std::sync::Arc<str> = std::sync::Arc::from("k");
        let latest = |n: usize| Outgoing::Latest(key.clone(), Frame::message(&n.to_string()));
        // Room enough: it takes no place, the caller queues it.
        assert!(queue.supersede(latest(0), false).is_err());
        queue.push(latest(0)).expect("room");
        queue.push(item(1)).expect("room");
        // Half full: it replaces the queued one of its key, in its place.
        assert_eq!(
            queue.supersede(latest(2), false).map_err(|_| ()),
            Ok(latest(0).bytes())
        );
        assert_eq!(text(&queue.try_recv().expect("queued")), "42");
        assert_eq!(text(&queue.try_recv().expect("queued")), "41");
        // Behind in bytes with nothing of its key queued: the caller queues it.
        assert!(queue.supersede(latest(3), true).is_err());
        assert!(queue.supersede(item(4), true).is_err(), "not a latest item");
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
