//! A WebSocket session's output, and the engine's flusher that writes it.
//!
//! Once a session's WebSocket writer has taken over, [`Session::send`] appends the item's
//! frames, already framed, to the session's [`Outbox`] and schedules the outbox with the
//! engine's [`Flusher`]: one task that, on its next turn, writes every outbox that has
//! something with one non-blocking write each. A fan-out to a thousand sockets therefore
//! wakes one task, not a thousand, and what a busy publisher queued for a socket in the
//! meantime leaves in the same write. Only an outbox whose socket is full (or that holds
//! a paced packet) is handed to the session's own writer task, which waits for room.
//!
//! Before the writer takes over (a polling session, an upgrade in progress) the outbox
//! is *detached* and items go through the session's queue as before; taking over drains
//! that queue into the outbox under the outbox's lock, so no item overtakes another.
//!
//! While the writer task owns the output (the socket is full), what waits is charged to
//! the engine's outbound [`Budget`]: an item that would take it over is refused
//! ([`Refused::OverBudget`]) and the session closes. The flusher's path charges nothing.
//!
//! [`Outgoing::Latest`] items (a `$presence` and its count) are the one exception to the
//! slow-consumer rule: once half the limit waits they are *held*, one per key, the newest
//! replacing the older (counted as superseded), and go out with the writer's next chunk.
//! A storm of them costs a lagging client at most one item per key, never its
//! connection; the common case (a client that keeps up) takes no extra step.
//!
//! [`Session::send`]: super::Session::send

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use super::TransportBytes;
use super::budget::Budget;
use super::outgoing::{Outgoing, PACE};
use super::wsio::{WriteSide, put_item, wire_len};

/// Capacity an outbox keeps between writes; a larger buffer is freed once written.
const KEEP_CAPACITY: usize = 16 * 1024;
/// Outboxes the flusher writes before it lets other tasks run.
const FLUSH_TURN: usize = 256;
/// Most [`Outgoing::Latest`] keys one outbox holds back; a further key's item is dropped
/// (as superseded). Keys are rooms and namespaces, bounded by the relay's `max_rooms`.
const MAX_HELD: usize = 256;

/// How [`Outbox::push`] took an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued (or held back, to go out with the next write).
    Queued,
    /// Dropped: a newer item of the same [`Outgoing::Latest`] key replaced it, or
    /// replaced an older one.
    Superseded,
}

/// Why [`Outbox::push`] did not take an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Over the session's item or byte limit: the client does not keep up.
    Full,
    /// The WebSocket has closed.
    Closed,
    /// Over the engine's outbound budget: this client holds its share of the worker's
    /// memory in a socket it does not read.
    OverBudget,
}

/// The output of one WebSocket session.
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the session's writer task when it is handed the outbox.
    wake: Notify,
    /// The engine's outbound budget, charged while the writer task owns the output.
    budget: Arc<Budget>,
}

struct State {
    mode: Mode,
    /// The socket's write half, once attached.
    socket: Option<Arc<WriteSide>>,
    /// The engine's flusher, once attached.
    flusher: Option<Arc<Flusher>>,
    /// Frames not yet written, on the wire format.
    buf: Vec<u8>,
    /// Offsets in `buf` where a paced packet starts: the writer pauses [`PACE`] there.
    pauses: Vec<usize>,
    /// Items and payload bytes in `buf`, for the limits and the byte counters.
    items: usize,
    payload: usize,
    /// The head of `buf` is the rest of a frame the flusher wrote in part.
    cut: bool,
    /// The socket refused a write and nothing has been written since: the only state in
    /// which the item limit applies. Waiting out a pause, or a writer that is merely
    /// slower than a burst, is not the client falling behind; the byte limit bounds those.
    stalled: bool,
    /// Bytes of `buf` charged to the budget: all of it while the writer owns the output
    /// (but an item refused by the budget), nothing otherwise.
    charged: usize,
    /// [`Outgoing::Latest`] items held back while the client is behind, one per key,
    /// the newest: appended to `buf` when the writer next takes it.
    held: Vec<Outgoing>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No writer yet: the session's queue carries its items.
    Detached,
    /// Attached, nothing to write.
    Idle,
    /// In the flusher's list.
    Scheduled,
    /// The session's writer task owns the output (socket full, or a pause due).
    Writer,
    /// The WebSocket is closing: nothing more is taken.
    Closed,
}

/// What [`Outbox::run_writer`] left when the session closed.
pub(crate) enum Leftover {
    /// Nothing: the stream is at a frame boundary.
    Clean,
    /// A frame was partly written: these bytes complete it (and the frames after it),
    /// and must precede the close frame.
    Rest(Vec<u8>),
}

impl Outbox {
    pub(crate) fn new(budget: Arc<Budget>) -> Arc<Outbox> {
        Arc::new(Outbox {
            budget,
            state: Mutex::new(State {
                mode: Mode::Detached,
                socket: None,
                flusher: None,
                buf: Vec::new(),
                pauses: Vec::new(),
                items: 0,
                payload: 0,
                cut: false,
                stalled: false,
                charged: 0,
                held: Vec::new(),
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Take `item` for the WebSocket, within `max_items` items and `max_bytes` bytes
    /// waiting. While detached, `queue` is called instead, under the same lock (so that
    /// an attach cannot slip in between) and its answer returned.
    ///
    /// An [`Outgoing::Latest`] item never counts against the limits: while the client is
    /// behind (half the bytes or half the items waiting) it is held back, replacing a
    /// held one of its key, and goes out when the writer next takes the buffer. A storm
    /// of them costs a lagging client one item per key, not a disconnect.
    pub(crate) fn push<Q>(
        self: &Arc<Self>,
        item: Outgoing,
        max_items: usize,
        max_bytes: usize,
        queue: Q,
    ) -> Result<Pushed, Refused>
    where
        Q: FnOnce(Outgoing) -> Result<Pushed, Refused>,
    {
        let mut state = self.lock();
        match state.mode {
            Mode::Detached => return queue(item),
            Mode::Closed => return Err(Refused::Closed),
            Mode::Idle | Mode::Scheduled | Mode::Writer => {}
        }
        if let Some(key) = item.latest_key() {
            if let Some(older) = state
                .held
                .iter_mut()
                .find(|held| held.latest_key() == Some(key))
            {
                *older = item;
                return Ok(Pushed::Superseded);
            }
            // Half the items whether the socket is stalled yet or not: these items must
            // never bring the buffer near the limit at which the next ordinary item (a
            // ping, an ack) would find the client a slow consumer.
            let behind = state.buf.len().saturating_add(wire_len(&item)) > max_bytes / 2
                || state.items >= max_items / 2;
            // Something is in the buffer, so a writer or the flusher comes for it (and
            // for what is held).
            if behind {
                if state.held.len() >= MAX_HELD {
                    return Ok(Pushed::Superseded);
                }
                state.held.push(item);
                return Ok(Pushed::Queued);
            }
        }
        let over_bytes =
            |state: &State| state.buf.len().saturating_add(wire_len(&item)) > max_bytes;
        let mut handed_over = false;
        if over_bytes(&state) || state.items >= max_items {
            // Before the flusher has been: offer the socket what waits, which tells
            // whether it takes no more.
            if matches!(state.mode, Mode::Idle | Mode::Scheduled)
                && let Some(flusher) = state.flusher.clone()
            {
                handed_over = state.write_now(&flusher.counters) == Written::Partly;
            }
            // Over the item limit counts only while the socket takes nothing: a client
            // that keeps reading is not dropped because a burst outran the flusher or
            // the writer, or came during its greeting's pause.
            if over_bytes(&state) || (state.items >= max_items && state.stalled) {
                drop(state);
                if handed_over {
                    self.wake.notify_one();
                }
                return Err(Refused::Full);
            }
        }
        if handed_over {
            self.charge_held(&mut state);
        }
        let before = state.buf.len();
        state.append(&item);
        if state.mode == Mode::Writer {
            // Waiting for a full socket: this is what the budget bounds.
            let grew = state.buf.len() - before;
            if !self.budget.try_charge(grew) {
                drop(state);
                if handed_over {
                    self.wake.notify_one();
                }
                return Err(Refused::OverBudget);
            }
            state.charged += grew;
        }
        if handed_over {
            drop(state);
            self.wake.notify_one();
        } else if state.mode == Mode::Idle {
            state.mode = Mode::Scheduled;
            let flusher = state.flusher.clone();
            drop(state);
            if let Some(flusher) = flusher {
                flusher.schedule(self.clone());
            }
        }
        Ok(Pushed::Queued)
    }

    /// Hand the output to the writer: `queued` drains what the session's queue still
    /// holds (it goes out first, and is drained under the outbox's lock so that no push
    /// slips in between), and from now on [`Outbox::push`] takes items itself.
    pub(crate) fn attach(
        &self,
        socket: Arc<WriteSide>,
        flusher: Arc<Flusher>,
        queued: impl IntoIterator<Item = Outgoing>,
    ) {
        let mut state = self.lock();
        if state.mode != Mode::Detached {
            return;
        }
        for item in queued {
            state.append(&item);
        }
        state.socket = Some(socket);
        state.flusher = Some(flusher);
        state.mode = if state.buf.is_empty() {
            Mode::Idle
        } else {
            Mode::Writer
        };
        self.charge_held(&mut state);
        drop(state);
        self.wake.notify_one();
    }

    /// The writer owns the output now: what waits in the buffer is charged to the budget
    /// (held already, so whatever the limit).
    fn charge_held(&self, state: &mut State) {
        if state.mode == Mode::Writer {
            let uncharged = state.buf.len().saturating_sub(state.charged);
            self.budget.charge(uncharged);
            state.charged += uncharged;
        }
    }

    /// The flusher's part: write what fits now; hand the rest to the writer task.
    fn flush(&self, counters: &TransportBytes) {
        let mut state = self.lock();
        if state.mode != Mode::Scheduled {
            return;
        }
        loop {
            match state.write_now(counters) {
                Written::All if state.held.is_empty() => {
                    state.mode = Mode::Idle;
                    return;
                }
                // Caught up: what was held back goes now.
                Written::All => state.release_held(),
                Written::Partly => {
                    self.charge_held(&mut state);
                    drop(state);
                    self.wake.notify_one();
                    return;
                }
            }
        }
    }

    /// The session's writer task: write whatever the outbox is handed over with, until
    /// `closed` resolves (then the outbox closes) or a write fails.
    pub(crate) async fn run_writer<C: Future<Output = ()>>(
        &self,
        socket: &WriteSide,
        counters: &TransportBytes,
        mut closed: Pin<&mut C>,
    ) -> io::Result<Leftover> {
        let mut chunk = Vec::new();
        let mut pauses = Vec::new();
        // This task's copy of `State::stalled`, so that the lock is taken only to change it.
        let mut stalled;
        // The budget charged for `chunk`, released once it is written (or on any return).
        let mut held = Held {
            budget: &self.budget,
            bytes: 0,
        };
        loop {
            tokio::select! {
                biased;
                _ = &mut closed => return Ok(self.close(Vec::new())),
                _ = self.wake.notified() => {}
            }
            loop {
                let payload = {
                    let mut state = self.lock();
                    if state.mode != Mode::Writer {
                        break;
                    }
                    if state.buf.is_empty() && state.held.is_empty() {
                        // Everything went: the socket takes what it is given.
                        state.mode = Mode::Idle;
                        state.stalled = false;
                        break;
                    }
                    // The previous chunk is written: the latest of what was held back
                    // goes with this one.
                    state.release_held();
                    std::mem::swap(&mut state.buf, &mut chunk);
                    std::mem::swap(&mut state.pauses, &mut pauses);
                    let payload = state.payload;
                    held.bytes += std::mem::take(&mut state.charged);
                    state.items = 0;
                    state.payload = 0;
                    state.cut = false;
                    stalled = state.stalled;
                    payload
                };
                // Segments between the paced packets; each after the first starts with
                // one, after the pause.
                let mut at = 0;
                for (i, end) in pauses.iter().copied().chain([chunk.len()]).enumerate() {
                    if i > 0 {
                        tokio::select! {
                            biased;
                            _ = &mut closed => return Ok(self.close(chunk.split_off(at))),
                            _ = tokio::time::sleep(PACE) => {}
                        }
                    }
                    while at < end {
                        match socket.try_write(&chunk[at..end]) {
                            Ok(n) => {
                                at += n;
                                // The socket takes data again (a lock only on that change).
                                if stalled && n > 0 {
                                    self.lock().stalled = false;
                                    stalled = false;
                                }
                            }
                            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                                if !stalled {
                                    self.lock().stalled = true;
                                    stalled = true;
                                }
                                tokio::select! {
                                    biased;
                                    _ = &mut closed => {
                                        return Ok(self.close(chunk.split_off(at)));
                                    }
                                    ready = socket.writable() => ready?,
                                }
                            }
                            Err(err) => return Err(err),
                        }
                    }
                }
                counters.sent.inc_by(payload as u64);
                held.release();
                chunk.clear();
                pauses.clear();
                if chunk.capacity() > KEEP_CAPACITY {
                    chunk = Vec::new();
                }
            }
        }
    }

    /// Stop taking items. `rest` is what the writer left of a chunk it was writing; a
    /// frame the flusher cut short is completed from the buffer.
    pub(crate) fn close(&self, rest: Vec<u8>) -> Leftover {
        let mut state = self.lock();
        state.mode = Mode::Closed;
        state.socket = None;
        self.budget.release(std::mem::take(&mut state.charged));
        state.held = Vec::new();
        let buf = std::mem::take(&mut state.buf);
        if !rest.is_empty() {
            // The writer's chunk ends on a frame boundary; what was queued after it is
            // not needed.
            return Leftover::Rest(rest);
        }
        if state.cut {
            return Leftover::Rest(buf);
        }
        Leftover::Clean
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // An outbox dropped without its close (its session went away mid-write).
        self.budget.release(self.state.get_mut().charged);
    }
}

/// Budget charged for bytes a writer task took out of its outbox to write.
struct Held<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Held<'_> {
    /// The bytes were written.
    fn release(&mut self) {
        self.budget.release(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// What [`State::write_now`] did.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Everything: the buffer is empty.
    All,
    /// Not all (the socket is full, a pause is due, or the write failed): the writer task
    /// owns the output now and must be woken.
    Partly,
}

impl State {
    /// Write what the socket takes now, up to the first pause.
    fn write_now(&mut self, counters: &TransportBytes) -> Written {
        let end = self.pauses.first().copied().unwrap_or(self.buf.len());
        let written = match self.socket.as_ref() {
            Some(socket) if end > 0 => socket.try_write(&self.buf[..end]),
            _ => Ok(0),
        };
        match written {
            Ok(n) if n == self.buf.len() => {
                counters.sent.inc_by(self.payload as u64);
                self.clear();
                Written::All
            }
            Ok(n) => {
                // Short of the pause (or of the end): the socket is full.
                self.stalled = n < end;
                self.consume(n);
                self.mode = Mode::Writer;
                Written::Partly
            }
            // Full, or failed: the writer waits for room, or meets the error itself.
            Err(_) => {
                self.stalled = true;
                self.mode = Mode::Writer;
                Written::Partly
            }
        }
    }

    /// Queue what was held back, each the latest of its key.
    fn release_held(&mut self) {
        for item in std::mem::take(&mut self.held) {
            self.append(&item);
        }
    }

    fn append(&mut self, item: &Outgoing) {
        if matches!(item, Outgoing::Paced(_)) {
            self.pauses.push(self.buf.len());
        }
        put_item(&mut self.buf, item);
        self.items += 1;
        self.payload += item.bytes();
    }

    /// `n` bytes of the buffer's head were written.
    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.pauses.retain_mut(|p| {
            *p = p.saturating_sub(n);
            true
        });
        self.cut = n > 0 && self.pauses.first().is_none_or(|&p| p != 0);
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.pauses.clear();
        self.items = 0;
        self.payload = 0;
        self.cut = false;
        self.stalled = false;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }
}

/// The engine's writer of scheduled outboxes (see the module documentation).
pub(crate) struct Flusher {
    due: Mutex<Vec<Arc<Outbox>>>,
    wake: Notify,
    started: AtomicBool,
    counters: TransportBytes,
}

impl Flusher {
    pub(crate) fn new(counters: TransportBytes) -> Arc<Flusher> {
        Arc::new(Flusher {
            due: Mutex::new(Vec::new()),
            wake: Notify::new(),
            started: AtomicBool::new(false),
            counters,
        })
    }

    /// Start the flusher's task on the current runtime, once.
    pub(crate) fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().run());
        }
    }

    fn schedule(&self, outbox: Arc<Outbox>) {
        let mut due = self.due.lock();
        due.push(outbox);
        if due.len() == 1 {
            drop(due);
            self.wake.notify_one();
        }
    }

    async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            std::mem::swap(&mut *self.due.lock(), &mut batch);
            for (i, outbox) in batch.drain(..).enumerate() {
                outbox.flush(&self.counters);
                if i % FLUSH_TURN == FLUSH_TURN - 1 {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::wsio::WsSocket;
    use crate::engine::{Frame, Meters};
    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    fn text(n: usize) -> Outgoing {
        Outgoing::Frame(Frame::message(&n.to_string()))
    }

    /// An attached outbox on one end of a socket pair, and a client reading the other.
    async fn pair() -> (
        Arc<Outbox>,
        Arc<WriteSide>,
        Arc<Flusher>,
        WebSocketStream<tokio::net::UnixStream>,
    ) {
        pair_with(Budget::unlimited()).await
    }

    /// [`pair`] charging `budget`.
    async fn pair_with(
        budget: Arc<Budget>,
    ) -> (
        Arc<Outbox>,
        Arc<WriteSide>,
        Arc<Flusher>,
        WebSocketStream<tokio::net::UnixStream>,
    ) {
        let (server, client) = tokio::net::UnixStream::pair().expect("socket pair");
        let (_read, write) = WsSocket::Unix(server).split();
        // The read half is dropped: only the write half is under test.
        let config = WebSocketConfig::default().max_message_size(None);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, Some(config)).await;
        (
            Outbox::new(budget),
            Arc::new(write),
            Flusher::new(Meters::default().websocket),
            client,
        )
    }

    /// The session's writer task for `outbox`, running until aborted.
    fn spawn_writer(
        outbox: &Arc<Outbox>,
        socket: Arc<WriteSide>,
    ) -> tokio::task::JoinHandle<io::Result<Leftover>> {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let counters = Meters::default().websocket;
            outbox
                .run_writer(&socket, &counters, std::pin::pin!(std::future::pending()))
                .await
        })
    }

    async fn next_text(client: &mut WebSocketStream<tokio::net::UnixStream>) -> String {
        match client.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn queued_items_go_first_and_pushes_keep_their_order() {
        let (outbox, socket, flusher, mut client) = pair().await;
        flusher.start();
        let mut queued = Vec::new();
        outbox
            .push(text(1), 100, 1 << 20, |item| {
                queued.push(item);
                Ok(Pushed::Queued)
            })
            .expect("detached: queued");
        outbox.attach(socket.clone(), flusher, queued);
        let writer = spawn_writer(&outbox, socket);
        for n in 2..=50 {
            outbox
                .push(text(n), 100, 1 << 20, |_| panic!("attached: not queued"))
                .expect("attached: taken");
            if n % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for n in 1..=50 {
            assert_eq!(next_text(&mut client).await, format!("4{n}"));
        }
        writer.abort();
    }

    #[tokio::test]
    async fn paced_packets_keep_their_place() {
        let (outbox, socket, flusher, mut client) = pair().await;
        flusher.start();
        outbox.attach(socket.clone(), flusher, []);
        let writer = spawn_writer(&outbox, socket);
        let paced = |n: usize| Outgoing::Paced(Frame::message(&n.to_string()));
        for item in [paced(0), text(1), paced(2), paced(3), text(4)] {
            outbox
                .push(item, 100, 1 << 20, |_| unreachable!())
                .expect("taken");
        }
        for n in 0..5 {
            assert_eq!(next_text(&mut client).await, format!("4{n}"));
        }
        writer.abort();
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_refused_at_the_byte_limit() {
        let (outbox, socket, flusher, _client) = pair().await;
        flusher.start();
        outbox.attach(socket, flusher, []);
        let big = Outgoing::Frame(Frame::message(&"x".repeat(64 * 1024)));
        let mut refused = None;
        for n in 0..1000 {
            if let Err(e) = outbox.push(big.clone(), 10_000, 1 << 20, |_| unreachable!()) {
                refused = Some((n, e));
                break;
            }
            tokio::task::yield_now().await;
        }
        let (n, e) = refused.expect("refused before 1000 × 64 KiB");
        assert_eq!(e, Refused::Full);
        assert!(
            n >= 16,
            "1 MiB of buffer takes at least 16 items, refused at {n}"
        );
    }

    /// The worker-wide budget: a client that does not read is charged what waits for it
    /// and refused at the budget, long before its own byte limit; a client that reads,
    /// sharing the same budget, keeps receiving; the close gives the bytes back.
    #[tokio::test]
    async fn the_outbound_budget_stops_a_client_that_does_not_read_not_one_that_does() {
        let budget = Arc::new(Budget::new(512 * 1024));
        let (stuck, socket, flusher, _unread) = pair_with(budget.clone()).await;
        flusher.start();
        stuck.attach(socket, flusher, []);
        let big = Outgoing::Frame(Frame::message(&"x".repeat(64 * 1024)));
        let mut refused = None;
        for n in 0..1000 {
            if let Err(e) = stuck.push(big.clone(), 10_000, 64 << 20, |_| unreachable!()) {
                refused = Some((n, e));
                break;
            }
            assert!(budget.held() <= 512 * 1024, "held {}", budget.held());
            tokio::task::yield_now().await;
        }
        let (n, e) = refused.expect("refused before 1000 × 64 KiB");
        assert_eq!(e, Refused::OverBudget);
        assert!(
            n < 64,
            "refused by the budget, not by its own 64 MiB limit: {n}"
        );
        assert!(budget.held() > 256 * 1024, "held {}", budget.held());

        let (reader, socket, flusher, mut client) = pair_with(budget.clone()).await;
        flusher.start();
        reader.attach(socket.clone(), flusher, []);
        let writer = spawn_writer(&reader, socket);
        for n in 0..200 {
            reader
                .push(text(n), 100, 1 << 20, |_| unreachable!())
                .expect("a client that reads is not refused");
            assert_eq!(next_text(&mut client).await, format!("4{n}"));
        }
        writer.abort();

        stuck.close(Vec::new());
        let _ = writer.await;
        drop(reader);
        assert_eq!(budget.held(), 0, "everything given back");
    }

    #[tokio::test]
    async fn a_burst_over_the_item_limit_is_written_while_the_socket_takes_it() {
        let (outbox, socket, flusher, mut client) = pair().await;
        // No flusher task: only the writes a full outbox makes itself go out.
        outbox.attach(socket, flusher.clone(), []);
        for n in 0..100 {
            outbox
                .push(text(n), 8, 1 << 20, |_| unreachable!())
                .expect("the socket takes it: not a slow consumer");
        }
        outbox.flush(&flusher.counters);
        for n in 0..100 {
            assert_eq!(next_text(&mut client).await, format!("4{n}"));
        }
    }

    #[tokio::test]
    async fn a_burst_behind_a_paced_packet_waits_out_the_pause() {
        let (outbox, socket, flusher, mut client) = pair().await;
        flusher.start();
        outbox.attach(socket.clone(), flusher, []);
        let writer = spawn_writer(&outbox, socket);
        // The greeting is paced; what follows it within the pause is not the client
        // falling behind, whatever the item limit: only the byte limit applies.
        outbox
            .push(
                Outgoing::Paced(Frame::message("0")),
                8,
                1 << 20,
                |_| unreachable!(),
            )
            .expect("taken");
        for n in 1..100 {
            outbox
                .push(text(n), 8, 1 << 20, |_| unreachable!())
                .expect("a pause due is not a slow consumer");
        }
        for n in 0..100 {
            assert_eq!(next_text(&mut client).await, format!("4{n}"));
        }
        writer.abort();
    }

    #[tokio::test]
    async fn latest_items_of_a_lagging_client_are_held_one_per_key_never_full() {
        let (outbox, socket, flusher, mut client) = pair().await;
        // No flusher task and a client that does not read yet: the socket stalls.
        outbox.attach(socket.clone(), flusher.clone(), []);
        let big = Outgoing::Frame(Frame::message(&"x".repeat(64 * 1024)));
        for _ in 0..4 {
            outbox
                .push(big.clone(), 8, 64 << 20, |_| unreachable!())
                .expect("under the limits");
        }
        outbox.flush(&flusher.counters);
        assert!(outbox.lock().stalled, "256 KiB do not fit a socket pair");
        let key: Arc<str> = Arc::from("/\u{0}room");
        let latest = |n: usize| Outgoing::Latest(key.clone(), Frame::message(&n.to_string()));
        let other = Outgoing::Latest(Arc::from("/\u{0}other"), Frame::message("o"));
        // Far more than the item limit: none is refused, the held ones are replaced.
        let mut superseded = 0;
        for n in 0..1000 {
            match outbox.push(latest(n), 8, 64 << 20, |_| unreachable!()) {
                Ok(Pushed::Superseded) => superseded += 1,
                Ok(Pushed::Queued) => {}
                Err(e) => panic!("latest item {n} refused: {e:?}"),
            }
        }
        assert_eq!(
            outbox.push(other, 8, 64 << 20, |_| unreachable!()),
            Ok(Pushed::Queued)
        );
        assert_eq!(superseded, 999, "all but the first replaced a held one");
        assert!(outbox.lock().items < 8, "held items do not count");
        assert_eq!(outbox.lock().held.len(), 2, "one per key");
        // An ordinary item after the storm is still taken.
        outbox
            .push(text(7), 8, 64 << 20, |_| unreachable!())
            .expect("not a slow consumer");
        // Reading again, the client gets what was queued, then the latest of each key.
        let writer = spawn_writer(&outbox, socket);
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("4o") {
            let text = next_text(&mut client).await;
            if text.len() < 100 {
                seen.push(text);
            }
        }
        assert_eq!(seen, ["47", "4999", "4o"]);
        writer.abort();
    }

    #[tokio::test]
    async fn the_item_limit_counts_once_the_socket_takes_no_more() {
        let (outbox, socket, flusher, _client) = pair().await;
        // No flusher task and a client that does not read: 8 × 64 KiB is more than a
        // socket pair's buffer.
        outbox.attach(socket, flusher, []);
        let big = Outgoing::Frame(Frame::message(&"x".repeat(64 * 1024)));
        for _ in 0..8 {
            outbox
                .push(big.clone(), 8, 64 << 20, |_| unreachable!())
                .expect("under the item limit");
        }
        assert!(!outbox.lock().stalled, "nothing was written yet");
        assert_eq!(
            outbox.push(big.clone(), 8, 64 << 20, |_| unreachable!()),
            Err(Refused::Full),
            "over the item limit, and the socket took only part of the output"
        );
        assert!(outbox.lock().stalled);
    }

    #[tokio::test]
    async fn a_socket_that_takes_data_again_is_no_longer_stalled() {
        let (outbox, socket, flusher, mut client) = pair().await;
        outbox.attach(socket.clone(), flusher.clone(), []);
        let big = Outgoing::Frame(Frame::message(&"x".repeat(64 * 1024)));
        for _ in 0..4 {
            outbox
                .push(big.clone(), 100, 64 << 20, |_| unreachable!())
                .expect("taken");
        }
        outbox.flush(&flusher.counters);
        assert!(
            outbox.lock().stalled,
            "256 KiB do not fit a socket pair's buffer"
        );
        // The client reads what the socket held; the rest then fits at once.
        for _ in 0..3 {
            assert_eq!(next_text(&mut client).await.len(), 64 * 1024 + 1);
        }
        let writer = spawn_writer(&outbox, socket);
        assert_eq!(next_text(&mut client).await.len(), 64 * 1024 + 1);
        for _ in 0..100 {
            if outbox.lock().mode == Mode::Idle {
                break;
            }
            tokio::task::yield_now().await;
        }
        let state = outbox.lock();
        assert_eq!(state.mode, Mode::Idle, "all written");
        assert!(
            !state.stalled,
            "the socket took the rest: not stalled any more"
        );
        drop(state);
        writer.abort();
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_completed_before_the_close_frame() {
        let (outbox, socket, flusher, mut client) = pair().await;
        // The flusher's task is not started: the test runs its step itself.
        outbox.attach(socket.clone(), flusher.clone(), []);
        let big = Outgoing::Frame(Frame::Binary(vec![5u8; 4 << 20].into()));
        outbox
            .push(big, 10, 8 << 20, |_| unreachable!())
            .expect("taken");
        outbox.flush(&flusher.counters);
        assert!(outbox.lock().cut, "4 MiB do not fit a socket buffer");
        // The session closes before its writer ran.
        let counters = Meters::default().websocket;
        let left = outbox
            .run_writer(&socket, &counters, std::pin::pin!(async {}))
            .await
            .expect("no write error");
        let Leftover::Rest(mut rest) = left else {
            panic!("the cut frame must be completed");
        };
        crate::engine::wsio::put_close(&mut rest, 1000);
        let finish = tokio::spawn(async move { socket.write_all(&rest).await });
        match client.next().await {
            Some(Ok(Message::Binary(b))) => {
                assert!(b.len() == 4 << 20 && b.iter().all(|&x| x == 5))
            }
            other => panic!("expected the whole binary message, got {other:?}"),
        }
        assert!(matches!(client.next().await, Some(Ok(Message::Close(_)))));
        finish.await.expect("joined").expect("written");
        assert_eq!(
            outbox.push(text(1), 10, 1 << 20, |_| unreachable!()),
            Err(Refused::Closed)
        );
    }
}
