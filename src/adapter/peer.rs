//! The cross-process bus: this process's [`LocalAdapter`] plus links to the other relay
//! processes of the host (workers), speaking [`wire`](super::wire).
//!
//! Each process keeps its own sockets and, per peer, a [`replica`](super::replica) of the
//! peer's room memberships. So counts, room lists and member lists are answered locally
//! for the whole host, and a broadcast is encoded once, delivered to local members, and
//! sent once to every peer, which delivers it to its own. When a link breaks (the peer
//! died), its replica is dropped and each departed member is reported to the departure
//! hook, so that every process announces the leaves to its own sockets.
//!
//! This file owns the links (their I/O, their lifecycle, and why one ends:
//! [`LinkError`]) and the [`Adapter`] that composes the local side with the replicas.
//! Links are plain byte streams, one per direction between two processes (Unix sockets
//! between workers; in-memory pipes in tests).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::bus::{
    Adapter, DepartureHook, Departures, Member, ParkRecord, ParkingHook, Pick, Publish, Published,
    Recipient, RecordHook, RecoverySource, RoomCount, Stamp, Target, is_listed,
};
pub use super::link::LinkError;

mod apply;
mod loss;
use super::local::LocalAdapter;
use super::occupancy::Occupancy;
use super::replica::{Departed, Replicas};
use super::wire::{Message, VERSION};
use crate::engine::{BoxFuture, Outgoing};
pub use apply::CLUSTER;
use apply::{logged_message, park_message, recorded_message};

/// Bytes queued per link past which broadcasts to that peer are dropped (and counted):
/// a peer that does not keep up loses fan-out, not memberships.
const LINK_BYTES: usize = 32 << 20;

/// Twice [`LINK_BYTES`] queued on a link, even membership messages cannot wait: the
/// peer is stuck and the link is cut (the supervisor replaces a stuck worker; a live one
/// relinks with a fresh snapshot, and [`RELINK_GRACE`] keeps its members from leaving
/// falsely).
const HARD_FACTOR: usize = 2;

/// How long a peer whose link ended keeps its members before they count as gone: a peer
/// that relinks within it (a cut link, a restarted worker) is reconciled with its fresh
/// snapshot instead, and only the members missing from it leave.
const RELINK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Departures announced between two yields to the runtime.
const ANNOUNCE_BATCH: usize = 256;

/// Largest batch of queued frames written to a link at once.
const MAX_BATCH: usize = 1 << 20;

/// A live link to a peer.
#[derive(Debug)]
struct Link {
    /// Encoded frames for the link's writer.
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
}

/// The bus of a multi-process host.
pub struct PeerAdapter {
    /// This process's node id, sent in `Hello`.
    node: u32,
    /// This process's sockets and rooms.
    local: LocalAdapter,
    /// Links we send on, by link number.
    links: Mutex<HashMap<u64, Link>>,
    /// Links we receive on, by link number → the peer's node id once it said hello.
    inbound: Mutex<HashMap<u64, u32>>,
    /// Peers' memberships.
    replicas: Replicas,
    /// What to do for members of a lost peer.
    hook: OnceLock<DepartureHook>,
    /// Hears the stamped broadcasts of peers (the relay records them in its history).
    recorder: OnceLock<RecordHook>,
    /// Hears the peers' parked, joined and evicted sockets (connection state recovery).
    parking: OnceLock<ParkingHook>,
    /// What recovery keeps here (parked sockets, logged events), for a new link's
    /// snapshot.
    kept: OnceLock<RecoverySource>,
    /// Link numbering.
    next_link: AtomicU64,
    /// Peers whose links all ended, waiting out [`RELINK_GRACE`]: node → the number of
    /// the wait (a later loss starts a new one).
    orphans: Mutex<HashMap<u32, u64>>,
    /// Relinked peers whose snapshot is arriving: node → the memberships it had before.
    resync: Mutex<HashMap<u32, Vec<Departed>>>,
    /// Broadcasts not sent to a peer whose link was over [`LINK_BYTES`].
    dropped: OnceLock<prometheus::IntCounter>,
    /// [`LINK_BYTES`] (smaller in tests).
    link_bytes: usize,
    /// Rooms with members anywhere on the host, per namespace.
    occupancy: Occupancy,
}

impl std::fmt::Debug for PeerAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAdapter")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PeerAdapter {
    /// A bus for node `node` with no links yet.
    pub fn new(node: u32) -> Arc<PeerAdapter> {
        PeerAdapter::bounded(node, LINK_BYTES)
    }

    /// A bus whose links drop broadcasts past `link_bytes` queued.
    fn bounded(node: u32, link_bytes: usize) -> Arc<PeerAdapter> {
        Arc::new(PeerAdapter {
            node,
            local: LocalAdapter::new(),
            links: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            replicas: Replicas::default(),
            hook: OnceLock::new(),
            recorder: OnceLock::new(),
            parking: OnceLock::new(),
            kept: OnceLock::new(),
            next_link: AtomicU64::new(1),
            orphans: Mutex::new(HashMap::new()),
            resync: Mutex::new(HashMap::new()),
            dropped: OnceLock::new(),
            link_bytes,
            occupancy: Occupancy::default(),
        })
    }

    /// Count the broadcasts dropped for a slow peer in `counter`.
    pub fn count_drops_in(&self, counter: prometheus::IntCounter) {
        let _ = self.dropped.set(counter);
    }

    /// This process's node id.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// How many peers we hear from.
    pub fn peers(&self) -> usize {
        let nodes: HashSet<u32> = self.inbound.lock().values().copied().collect();
        nodes.len()
    }

    /// Whether every peer we hear from has a higher node id than ours: then this process
    /// is the one survivor that speaks for the host about a lost peer's members (its
    /// webhooks), where every survivor announces them to its own sockets.
    pub fn lowest_linked(&self) -> bool {
        self.inbound.lock().values().all(|n| *n > self.node)
    }

    /// Send-only link to a peer (between workers each direction has its own
    /// connection): `Hello`, this process's memberships, then live updates. Resolves
    /// when the link ends (the peer closed it or went away).
    pub async fn run_outbound<S>(self: &Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.links.lock().insert(
            link,
            Link {
                tx,
                queued: queued.clone(),
            },
        );
        let (mut reader, writer) = tokio::io::split(stream);
        // The peer never writes on this connection: a read returns only when it closes.
        let mut scratch = [0u8; 64];
        tokio::select! {
            written = self.write_link(writer, rx, &queued) => {
                if let Err(error) = written {
                    // The peer going away is the usual cause; the daemon relinks.
                    tracing::debug!(node = self.node, %error, "outbound peer link ended");
                }
            }
            _ = reader.read(&mut scratch) => {}
        }
        self.links.lock().remove(&link);
    }

    /// Receive-only link from a peer: apply what it says until it ends, then forget its
    /// members (reporting each departure).
    pub async fn run_inbound<S>(self: &Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (reader, _writer) = tokio::io::split(stream);
        if let Err(error) = self.read_link(link, reader).await {
            tracing::warn!(node = self.node, %error, "inbound peer link failed, cutting it");
        }
        self.lost(link);
    }

    /// Write `Hello`, the snapshot, then whatever is queued, until the queue closes.
    async fn write_link<W: AsyncWrite + Unpin>(
        &self,
        mut writer: W,
        mut rx: mpsc::UnboundedReceiver<Bytes>,
        queued: &AtomicUsize,
    ) -> Result<(), LinkError> {
        let mut buf = BytesMut::new();
        Message::Hello {
            version: VERSION,
            node: self.node,
        }
        .encode(&mut buf);
        for (nsp, id, user, rooms) in self.local.snapshot() {
            for room in rooms {
                Message::Join {
                    nsp: nsp.clone(),
                    room: room.to_string(),
                    id: id.to_string(),
                    user: user.as_deref().map(str::to_owned),
                }
                .encode(&mut buf);
            }
        }
        Message::Synced.encode(&mut buf);
        // What recovery keeps here: a new process has nothing from before it started.
        let kept = self.kept.get().map(|source| source()).unwrap_or_default();
        for park in &kept.parks {
            park_message(park).encode(&mut buf);
        }
        let logged = kept.logged.into_iter().map(logged_message);
        let recorded = kept.recorded.into_iter().map(recorded_message);
        for message in logged.chain(recorded) {
            message.encode(&mut buf);
            // The logs may be large: written as they are encoded, not held whole.
            if buf.len() > MAX_BATCH {
                writer.write_all(&buf).await.map_err(LinkError::Write)?;
                buf.clear();
            }
        }
        writer.write_all(&buf).await.map_err(LinkError::Write)?;
        while let Some(first) = rx.recv().await {
            let mut batch = BytesMut::from(&first[..]);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
                if batch.len() > MAX_BATCH {
                    break;
                }
            }
            writer.write_all(&batch).await.map_err(LinkError::Write)?;
            queued.fetch_sub(batch.len(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Apply what the peer says until it closes the link (`Ok`) or breaks it.
    async fn read_link<R: AsyncRead + Unpin>(
        &self,
        link: u64,
        mut reader: R,
    ) -> Result<(), LinkError> {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut node = None;
        loop {
            while let Some(msg) = Message::decode(&mut buf)? {
                match (node, msg) {
                    (None, Message::Hello { version, node: n }) => {
                        if version != VERSION {
                            return Err(LinkError::Version(version));
                        }
                        node = Some(n);
                        self.hello(link, n);
                    }
                    (None, _) => return Err(LinkError::NoHello),
                    (Some(n), Message::Synced) => self.synced(n).await,
                    (Some(n), msg) => self.apply(n, msg),
                }
            }
            if reader.read_buf(&mut buf).await.map_err(LinkError::Read)? == 0 {
                return Ok(());
            }
        }
    }

    fn hello(&self, link: u64, node: u32) {
        tracing::debug!(node = self.node, peer = node, "peer link up");
        // A peer that comes back under the same id (a relink, or a restarted worker
        // while its predecessor's link was still open or in its grace): what it had is
        // set aside, and once its fresh snapshot is in (`Synced`) only the members
        // missing from it leave.
        let stale = self
            .inbound
            .lock()
            .iter()
            .any(|(l, n)| *l != link && *n == node);
        let orphan = self.orphans.lock().remove(&node).is_some();
        if stale || orphan {
            let before = self.remove_replica(node);
            self.resync.lock().entry(node).or_default().extend(before);
        }
        self.inbound.lock().insert(link, node);
        self.replicas.add_peer(node);
    }

    /// `node`'s snapshot is complete: whoever it had before and no longer has leaves.
    async fn synced(&self, node: u32) {
        let before = self.resync.lock().remove(&node).unwrap_or_default();
        let gone: Vec<Departed> = before
            .into_iter()
            .filter(|d| !self.replicas.contains(node, &d.nsp, &d.room, &d.member.id))
            .collect();
        self.announce(gone).await;
    }

    /// Deliver to this process's sockets and send to every peer.
    fn send_out(&self, nsp: &str, target: &Target, item: &Outgoing, stamp: Option<Stamp>) -> usize {
        let delivered = self.local.broadcast(nsp, target, item);
        self.publish(&Message::Broadcast {
            nsp: nsp.to_owned(),
            rooms: target.rooms.iter().map(|r| r.to_string()).collect(),
            except: target.except.as_deref().map(str::to_owned),
            frames: item.frames().to_vec(),
            latest: item.latest_key().map(|k| k.to_string()),
            stamp,
        });
        delivered
    }

    /// Queue a message for every peer. Past [`LINK_BYTES`] queued on a link, a
    /// broadcast is dropped for that peer (and counted); a membership message is never
    /// dropped (a lost one would leave the peer's replica wrong for good) unless the
    /// link is over [`HARD_FACTOR`] times that: then the link is cut, the peer relinks and gets
    /// a fresh snapshot.
    fn publish(&self, msg: &Message) {
        let mut links = self.links.lock();
        if links.is_empty() {
            return;
        }
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        let frame = buf.freeze();
        let droppable = matches!(msg, Message::Broadcast { .. });
        let limit = match droppable {
            true => self.link_bytes,
            false => self.link_bytes * HARD_FACTOR,
        };
        let mut dropped = 0;
        links.retain(|_, link| {
            let queued = link.queued.load(Ordering::Relaxed);
            if queued + frame.len() > limit {
                if droppable {
                    dropped += 1;
                    return true;
                }
                tracing::warn!(
                    node = self.node,
                    queued,
                    "peer link backlog over its bound, cutting the link"
                );
                return false;
            }
            link.queued.fetch_add(frame.len(), Ordering::Relaxed);
            link.tx.send(frame.clone()).is_ok()
        });
        if dropped > 0 {
            if let Some(counter) = self.dropped.get() {
                counter.inc_by(dropped);
            }
            tracing::debug!(
                node = self.node,
                dropped,
                "broadcast not sent to slow peers"
            );
        }
    }

    /// Take a local socket out and tell the peers it is gone (or parked).
    fn remove(
        &self,
        nsp: &str,
        id: &str,
        parked: Option<&ParkRecord>,
    ) -> BoxFuture<'_, Departures> {
        let left = self.local.remove_now(nsp, id);
        for (room, _) in left.iter().filter(|(_, n)| *n == 0) {
            self.occupancy.down(nsp, room);
        }
        self.publish(&match parked {
            Some(park) => park_message(park),
            None => Message::Gone {
                nsp: nsp.to_owned(),
                id: id.to_owned(),
            },
        });
        let left = left
            .into_iter()
            .map(|(room, n)| {
                let total = n + self.replica_count(nsp, &room);
                (room, total)
            })
            .collect();
        Box::pin(async move { left })
    }

    fn replica_count(&self, nsp: &str, room: &str) -> usize {
        self.replicas.count(nsp, room)
    }

    fn host_count(&self, nsp: &str, room: &str) -> usize {
        self.local.count_now(nsp, room) + self.replica_count(nsp, room)
    }
}

impl Adapter for PeerAdapter {
    fn set_publisher(&self, publisher: Arc<dyn Publish>) {
        self.local.set_publisher(publisher);
    }

    fn publish(&self, nsp: &str, event: &Published<'_>) {
        self.local.publish(nsp, event);
    }

    fn add_socket(&self, nsp: &str, socket: Arc<Recipient>) {
        self.local.add_socket(nsp, socket);
    }

    fn remove_socket(&self, nsp: &str, id: &str) -> BoxFuture<'_, Departures> {
        self.remove(nsp, id, None)
    }

    fn remove_parked_socket(&self, park: &ParkRecord) -> BoxFuture<'_, Departures> {
        self.remove(&park.nsp, &park.member.id, Some(park))
    }

    fn share_park(&self, park: &ParkRecord) {
        self.publish(&park_message(park));
    }

    fn set_recovery_source(&self, source: RecoverySource) {
        let _ = self.kept.set(source);
    }

    fn evict(&self, nsp: &str, id: &str, user: Option<&str>) {
        self.publish(&Message::Evict {
            nsp: nsp.to_owned(),
            id: id.to_owned(),
            user: user.map(str::to_owned),
        });
    }

    fn held_elsewhere(&self, nsp: &str, id: &str) -> bool {
        self.replicas.has_member(nsp, id)
    }

    fn held_on_host(&self, nsp: &str, id: &str) -> bool {
        self.replicas.has_member_on(|node| node != CLUSTER, nsp, id)
    }

    fn set_parking_hook(&self, hook: ParkingHook) {
        let _ = self.parking.set(hook);
    }

    fn join(&self, nsp: &str, room: &str, id: &str) -> BoxFuture<'_, usize> {
        let (n, created) = self.local.join_now(nsp, room, id);
        if created {
            self.occupancy.up(nsp, &Arc::from(room));
        }
        self.publish(&Message::Join {
            nsp: nsp.to_owned(),
            room: room.to_owned(),
            id: id.to_owned(),
            user: self.local.user_of(nsp, id).map(|u| u.to_string()),
        });
        let total = n + self.replica_count(nsp, room);
        Box::pin(async move { total })
    }

    fn leave(&self, nsp: &str, room: &str, id: &str) -> BoxFuture<'_, usize> {
        let (n, emptied) = self.local.leave_now(nsp, room, id);
        if emptied {
            self.occupancy.down(nsp, &Arc::from(room));
        }
        self.publish(&Message::Leave {
            nsp: nsp.to_owned(),
            room: room.to_owned(),
            id: id.to_owned(),
        });
        let total = n + self.replica_count(nsp, room);
        Box::pin(async move { total })
    }

    fn broadcast(&self, nsp: &str, target: &Target, item: &Outgoing) -> usize {
        self.send_out(nsp, target, item, None)
    }

    fn broadcast_stamped(
        &self,
        nsp: &str,
        target: &Target,
        item: &Outgoing,
        stamp: Stamp,
    ) -> usize {
        self.send_out(nsp, target, item, Some(stamp))
    }

    fn set_record_hook(&self, hook: RecordHook) {
        let _ = self.recorder.set(hook);
    }

    fn broadcast_local(&self, nsp: &str, target: &Target, item: &Outgoing) -> usize {
        self.local.broadcast(nsp, target, item)
    }

    fn deliver_local(&self, nsp: &str, pick: &Pick, item: &Outgoing) -> usize {
        self.local.deliver_local(nsp, pick, item)
    }

    fn room_count(&self, nsp: &str) -> usize {
        self.occupancy.count(nsp)
    }

    fn set_departure_hook(&self, hook: DepartureHook) {
        let _ = self.hook.set(hook);
    }

    fn rooms(&self, nsp: &str) -> BoxFuture<'_, Vec<RoomCount>> {
        let mut all: BTreeMap<Arc<str>, usize> = self.local.rooms_now(nsp).into_iter().collect();
        self.replicas.add_room_counts(nsp, &mut all);
        let list: Vec<RoomCount> = all
            .into_iter()
            .filter(|(room, _)| is_listed(room))
            .map(|(room, count)| RoomCount { room, count })
            .collect();
        Box::pin(async move { list })
    }

    fn members(&self, nsp: &str, room: &str) -> BoxFuture<'_, Vec<Member>> {
        let mut list = self.local.members_now(nsp, room);
        let mut seen: BTreeSet<Arc<str>> = list.iter().map(|m| m.id.clone()).collect();
        self.replicas.add_members(nsp, room, &mut list, &mut seen);
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Box::pin(async move { list })
    }

    fn count(&self, nsp: &str, room: &str) -> BoxFuture<'_, usize> {
        let n = self.host_count(nsp, room);
        Box::pin(async move { n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{drain, item, recipient};

    /// Link `from` to `to` in one direction, as a worker's connector and its sibling's
    /// listener do.
    fn link(from: &Arc<PeerAdapter>, to: &Arc<PeerAdapter>) {
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (from, to) = (from.clone(), to.clone());
        tokio::spawn(async move { from.run_outbound(x).await });
        tokio::spawn(async move { to.run_inbound(y).await });
    }

    /// Two linked buses, like two workers.
    fn pair() -> (Arc<PeerAdapter>, Arc<PeerAdapter>) {
        let (a, b) = (PeerAdapter::new(0), PeerAdapter::new(1));
        link(&a, &b);
        link(&b, &a);
        (a, b)
    }

    /// A peer we speak for over a raw stream (so that we can make it die): `b` reads it.
    fn raw_peer(b: &Arc<PeerAdapter>) -> tokio::io::DuplexStream {
        let (peer, y) = tokio::io::duplex(1024);
        let b = b.clone();
        tokio::spawn(async move { b.run_inbound(y).await });
        peer
    }

    /// Wait until `cond` holds, yielding to the link tasks (bounded).
    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn recovery_state_is_handed_to_a_new_peer_and_parks_travel_whole() {
        use super::super::bus::{Audience, Kept, Logged, Parking};
        use crate::engine::Frame;
        let (a, b) = (PeerAdapter::new(0), PeerAdapter::new(1));
        let park = ParkRecord {
            nsp: Arc::from("/r"),
            member: Member {
                id: Arc::from("s1"),
                user: Some(Arc::from("ann")),
            },
            rooms: vec![Arc::from("$namespace"), Arc::from("room")],
            dropped_ms: 1_733_210_000_000,
        };
        let logged = Logged {
            nsp: Arc::from("/r"),
            audience: Audience {
                rooms: vec![Arc::from("room")],
                ..Audience::default()
            },
            stamp: Stamp {
                origin: 1,
                seq: 7,
                at_ms: 1_733_210_000_001,
            },
            frames: vec![Frame::message("2/r,[\"m\",\"1-7\"]")],
        };
        let kept = Kept {
            parks: vec![park.clone()],
            logged: vec![logged.clone()],
            recorded: Vec::new(),
        };
        a.set_recovery_source(Box::new(move || kept.clone()));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        b.set_parking_hook(Box::new(move |p| {
            sink.lock().push(match p {
                Parking::Parked(record) => format!("park {} {:?}", record.member.id, record),
                Parking::Logged(event) => format!("logged {:?}", event),
                Parking::Recorded(event) => format!("recorded {:?}", event),
                Parking::Joined { id, .. } => format!("joined {id}"),
                Parking::Evict { id, user, .. } => format!("evict {id} {user:?}"),
            });
        }));
        // A new link: the snapshot carries what recovery keeps.
        link(&a, &b);
        until(|| heard.lock().len() == 2).await;
        assert_eq!(heard.lock()[0], format!("park s1 {park:?}"));
        assert_eq!(heard.lock()[1], format!("logged {logged:?}"));
        // A socket parked as it leaves goes out whole; an evict goes to every peer.
        let r = recipient("s2", 4);
        a.add_socket("/r", r.clone());
        a.join("/r", "room", "s2").await;
        let mut gone = park.clone();
        gone.member.id = Arc::from("s2");
        a.remove_parked_socket(&gone).await;
        a.evict("/r", "s3", Some("ann"));
        until(|| heard.lock().len() == 5).await;
        let heard = heard.lock().clone();
        assert_eq!(heard[2], "joined s2");
        assert_eq!(heard[3], format!("park s2 {gone:?}"));
        assert_eq!(heard[4], "evict s3 Some(\"ann\")");
        until(|| !b.held_elsewhere("/r", "s2")).await;
    }

    #[tokio::test]
    async fn other_nodes_members_count_as_one_more_peer() {
        let a = PeerAdapter::new(0);
        let r = recipient("ra", 16);
        a.add_socket("/", r.clone());
        a.join("/", "room", "ra").await;
        assert_eq!(a.present("/", "room", "far", Some("ann"), true), 2);
        assert_eq!(
            a.present("/", "room", "far", Some("ann"), true),
            2,
            "a repeat"
        );
        assert_eq!(a.present("/", "other", "far", Some("ann"), true), 1);
        assert_eq!(a.count("/", "room").await, 2);
        let ids: Vec<_> = a
            .members("/", "room")
            .await
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        assert_eq!(ids, vec!["far", "ra"]);
        assert_eq!(a.room_count("/"), 2);
        assert!(a.lowest_linked(), "the cluster is not a worker");
        assert_eq!(a.present("/", "other", "far", None, false), 0);
        assert_eq!(a.room_count("/"), 1);
        assert_eq!(
            a.present("/", "room", "nobody", None, false),
            2,
            "an unknown leave"
        );
    }

    #[tokio::test]
    async fn rooms_span_both_processes() {
        let (a, b) = pair();
        let (ra, rb) = (recipient("ra", 16), recipient("rb", 16));
        a.add_socket("/", ra.clone());
        b.add_socket("/", rb.clone());
        assert_eq!(a.join("/", "room", "ra").await, 1);
        until(|| b.replica_count("/", "room") == 1).await;
        assert_eq!(b.join("/", "room", "rb").await, 2, "host-wide count");
        until(|| a.replica_count("/", "room") == 1).await;
        assert_eq!(a.count("/", "room").await, 2);
        let members = a.members("/", "room").await;
        let names: Vec<_> = members.iter().map(|m| m.user.as_deref()).collect();
        assert_eq!(names, vec![Some("user-ra"), Some("user-rb")]);
        assert_eq!(
            a.rooms("/").await,
            vec![RoomCount {
                room: Arc::from("room"),
                count: 2
            }]
        );
        assert_eq!(a.room_count("/"), 1);

        // A broadcast from a reaches b's member once, and not the excepted sender.
        let target = Target {
            rooms: vec![Arc::from("room")],
            except: Some(Arc::from("ra")),
        };
        assert_eq!(a.broadcast("/", &target, &item("2[\"hi\"]")), 0);
        until(|| !rb.session.queue.is_empty()).await;
        assert_eq!(drain(&rb), vec!["42[\"hi\"]"]);
        assert!(drain(&ra).is_empty());

        b.leave("/", "room", "rb").await;
        until(|| a.replica_count("/", "room") == 0).await;
        assert_eq!(a.count("/", "room").await, 1);
    }

    #[tokio::test]
    async fn a_late_peer_gets_the_snapshot() {
        let a = PeerAdapter::new(0);
        let ra = recipient("ra", 16);
        a.add_socket("/", ra.clone());
        a.join("/", "r1", "ra").await;
        a.join("/", "r2", "ra").await;
        let b = PeerAdapter::new(1);
        link(&a, &b);
        until(|| b.replica_count("/", "r1") == 1 && b.replica_count("/", "r2") == 1).await;
        assert_eq!(b.peers(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_peer_departs() {
        use tokio::io::AsyncWriteExt;
        let b = PeerAdapter::new(1);
        let departed = Arc::new(Mutex::new(Vec::new()));
        let seen = departed.clone();
        b.set_departure_hook(Box::new(move |nsp, m, room, count| {
            seen.lock()
                .push((nsp.to_owned(), m.id.to_string(), room.to_owned(), count));
        }));
        let mut peer = raw_peer(&b);
        let mut buf = BytesMut::new();
        Message::Hello {
            version: VERSION,
            node: 7,
        }
        .encode(&mut buf);
        for room in ["r1", "r2"] {
            Message::Join {
                nsp: "/".into(),
                room: room.into(),
                id: "ra".into(),
                user: Some("ann".into()),
            }
            .encode(&mut buf);
        }
        peer.write_all(&buf).await.unwrap();
        until(|| b.replica_count("/", "r2") == 1).await;
        drop(peer);
        // Not at once: the peer may relink within the grace.
        until(|| b.peers() == 0).await;
        assert!(departed.lock().is_empty());
        assert_eq!(b.count("/", "r1").await, 1);
        tokio::time::sleep(RELINK_GRACE * 2).await;
        until(|| departed.lock().len() == 2).await;
        let mut got = departed.lock().clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("/".into(), "ra".into(), "r1".into(), 0),
                ("/".into(), "ra".into(), "r2".into(), 0)
            ]
        );
        assert_eq!(b.count("/", "r1").await, 0);
        assert_eq!(b.peers(), 0);
    }

    /// Frames a peer sends on connecting: `Hello`, its memberships, maybe `Synced`.
    fn introduce(node: u32, joins: &[(&str, &str)], synced: bool) -> BytesMut {
        let mut buf = BytesMut::new();
        Message::Hello {
            version: VERSION,
            node,
        }
        .encode(&mut buf);
        for (room, id) in joins {
            Message::Join {
                nsp: "/".into(),
                room: (*room).into(),
                id: (*id).into(),
                user: None,
            }
            .encode(&mut buf);
        }
        if synced {
            Message::Synced.encode(&mut buf);
        }
        buf
    }

    type Seen = Arc<Mutex<Vec<(String, String, usize)>>>;

    fn record_departures(b: &Arc<PeerAdapter>) -> Seen {
        let departed: Seen = Arc::new(Mutex::new(Vec::new()));
        let seen = departed.clone();
        b.set_departure_hook(Box::new(move |_, m, room, count| {
            seen.lock().push((m.id.to_string(), room.to_owned(), count));
        }));
        departed
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_relinks_loses_only_the_members_missing_from_its_snapshot() {
        use tokio::io::AsyncWriteExt;
        let b = PeerAdapter::new(1);
        let departed = record_departures(&b);
        let mut peer = raw_peer(&b);
        let joins = [("r", "ra"), ("r", "rb"), ("s", "ra")];
        peer.write_all(&introduce(7, &joins, true)).await.unwrap();
        until(|| b.replica_count("/", "s") == 1).await;
        // The link is cut (say its backlog was over the bound) and the peer relinks:
        // ra is still there, rb left meanwhile.
        drop(peer);
        until(|| b.peers() == 0).await;
        let mut again = raw_peer(&b);
        again
            .write_all(&introduce(7, &[("r", "ra"), ("s", "ra")], false))
            .await
            .unwrap();
        until(|| b.peers() == 1).await;
        // Until the snapshot is complete nobody leaves.
        tokio::task::yield_now().await;
        assert!(departed.lock().is_empty());
        let mut buf = BytesMut::new();
        Message::Synced.encode(&mut buf);
        again.write_all(&buf).await.unwrap();
        until(|| !departed.lock().is_empty()).await;
        // Well past the grace: still only rb's leave, announced once.
        tokio::time::sleep(RELINK_GRACE * 3).await;
        assert_eq!(departed.lock().clone(), vec![("rb".into(), "r".into(), 1)]);
        assert_eq!(b.count("/", "r").await, 1);
        assert_eq!(b.count("/", "s").await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_peer_with_an_empty_snapshot_loses_everyone_once() {
        use tokio::io::AsyncWriteExt;
        let b = PeerAdapter::new(1);
        let departed = record_departures(&b);
        let mut peer = raw_peer(&b);
        peer.write_all(&introduce(7, &[("r", "ra"), ("r", "rb")], true))
            .await
            .unwrap();
        until(|| b.replica_count("/", "r") == 2).await;
        // The restarted worker says hello while its predecessor's link is still open.
        let mut next = raw_peer(&b);
        next.write_all(&introduce(7, &[], true)).await.unwrap();
        until(|| departed.lock().len() == 2).await;
        drop(peer);
        tokio::time::sleep(RELINK_GRACE * 3).await;
        let mut got = departed.lock().clone();
        got.sort();
        assert_eq!(
            got,
            vec![("ra".into(), "r".into(), 0), ("rb".into(), "r".into(), 0)]
        );
        assert_eq!(b.count("/", "r").await, 0);
    }

    #[tokio::test]
    async fn a_slow_link_drops_broadcasts_counted_and_keeps_memberships() {
        let a = PeerAdapter::bounded(0, 4096);
        let counter = prometheus::IntCounter::new("dropped", "test").unwrap();
        a.count_drops_in(counter.clone());
        // A peer that never reads: the link's pipe fills, then its queue.
        let (x, stuck) = tokio::io::duplex(1024);
        let linked = a.clone();
        tokio::spawn(async move { linked.run_outbound(x).await });
        until(|| a.links.lock().len() == 1).await;
        let big = format!("2[\"e\",\"{}\"]", "x".repeat(1000));
        for _ in 0..20 {
            a.broadcast("/", &Target::default(), &item(&big));
            tokio::task::yield_now().await;
        }
        let queued = a
            .links
            .lock()
            .values()
            .map(|l| l.queued.load(Ordering::Relaxed))
            .sum::<usize>();
        assert!(queued <= 4096, "queued {queued} bytes");
        assert!(counter.get() >= 10, "dropped {}", counter.get());
        // The link was not cut, and a membership change still goes out.
        let ra = recipient("ra", 16);
        a.add_socket("/", ra);
        a.join("/", "room", "ra").await;
        assert_eq!(a.links.lock().len(), 1);
        let after = a
            .links
            .lock()
            .values()
            .map(|l| l.queued.load(Ordering::Relaxed))
            .sum::<usize>();
        assert!(after > queued, "the join was queued");
        drop(stuck);
    }

    #[tokio::test(start_paused = true)]
    async fn room_counts_follow_every_source_without_listing_rooms() {
        use tokio::io::AsyncWriteExt;
        let b = PeerAdapter::new(1);
        b.add_socket("/", recipient("rb", 16));
        b.join("/", "shared", "rb").await;
        b.join("/", "mine", "rb").await;
        b.join("/", "mine", "rb").await;
        assert_eq!(b.room_count("/"), 2);
        let mut peer = raw_peer(&b);
        let joins = [("shared", "p1"), ("shared", "p2"), ("theirs", "p1")];
        peer.write_all(&introduce(7, &joins, true)).await.unwrap();
        until(|| b.replica_count("/", "theirs") == 1).await;
        assert_eq!(b.room_count("/"), 3);
        assert_eq!(b.room_count("/other"), 0);
        b.leave("/", "shared", "rb").await;
        assert_eq!(b.room_count("/"), 3, "the peer still has members in shared");
        let mut buf = BytesMut::new();
        Message::Gone {
            nsp: "/".into(),
            id: "p1".into(),
        }
        .encode(&mut buf);
        peer.write_all(&buf).await.unwrap();
        until(|| b.replica_count("/", "theirs") == 0).await;
        assert_eq!(b.room_count("/"), 2);
        drop(peer);
        tokio::time::sleep(RELINK_GRACE * 2).await;
        until(|| b.room_count("/") == 1).await;
        b.remove_socket("/", "rb").await;
        assert_eq!(b.room_count("/"), 0);
    }

    /// A dead peer's many departures are announced in batches: the runtime runs other
    /// tasks (the control channel, the heartbeat answer) in between. On the real clock:
    /// the busy neighbour task would keep a paused clock from ever advancing.
    #[tokio::test]
    async fn a_dead_peers_departures_do_not_hold_the_thread() {
        use tokio::io::AsyncWriteExt;
        let b = PeerAdapter::new(1);
        let ticks = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (t, s) = (ticks.clone(), seen.clone());
        b.set_departure_hook(Box::new(move |_, _, _, _| {
            s.lock().push(t.load(Ordering::Relaxed));
        }));
        let ids: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
        let joins: Vec<(&str, &str)> = ids.iter().map(|id| ("r", id.as_str())).collect();
        let mut peer = raw_peer(&b);
        peer.write_all(&introduce(7, &joins, true)).await.unwrap();
        until(|| b.replica_count("/", "r") == 1000).await;
        let ticker = ticks.clone();
        let other = tokio::spawn(async move {
            loop {
                ticker.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        drop(peer);
        for _ in 0..500 {
            if seen.lock().len() == 1000 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        other.abort();
        assert_eq!(seen.lock().len(), 1000);
        let seen = seen.lock().clone();
        assert!(
            seen.first() < seen.last(),
            "other tasks ran during the departures"
        );
    }

    /// Each way a peer can break the link is told apart (the log says which).
    #[tokio::test]
    async fn link_errors_say_what_the_peer_did() {
        let b = PeerAdapter::new(1);
        let read = |msgs: Vec<Message>, tail: &'static [u8]| {
            let mut buf = BytesMut::new();
            for m in &msgs {
                m.encode(&mut buf);
            }
            buf.extend_from_slice(tail);
            let b = b.clone();
            async move { b.read_link(99, &buf[..]).await }
        };
        let hello = |version| Message::Hello { version, node: 7 };
        let gone = Message::Gone {
            nsp: "/".into(),
            id: "x".into(),
        };
        assert!(matches!(
            read(vec![hello(VERSION + 1)], b"").await,
            Err(LinkError::Version(v)) if v == VERSION + 1
        ));
        assert!(matches!(
            read(vec![gone.clone()], b"").await,
            Err(LinkError::NoHello)
        ));
        assert!(matches!(
            read(vec![hello(VERSION)], &[0, 0, 0, 1, 99]).await,
            Err(LinkError::Wire(super::super::wire::WireError::UnknownKind(
                99
            )))
        ));
        assert!(
            read(vec![hello(VERSION), gone], b"").await.is_ok(),
            "the peer closing the link is no error"
        );
    }

    #[tokio::test]
    async fn a_peer_that_breaks_the_protocol_is_cut_off() {
        use tokio::io::AsyncWriteExt;
        let b = PeerAdapter::new(1);
        let mut peer = raw_peer(&b);
        let mut buf = BytesMut::new();
        Message::Gone {
            nsp: "/".into(),
            id: "x".into(),
        }
        .encode(&mut buf);
        peer.write_all(&buf).await.unwrap();
        // b closes the link: reading from the peer side ends.
        let mut sink = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut sink),
        )
        .await
        .expect("the link is closed")
        .unwrap();
    }
}
