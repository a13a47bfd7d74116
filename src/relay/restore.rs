//! A CONNECT that claims a dropped socket (connection state recovery): `auth.pid` names
//! the socket, `auth.offset` what its client last received. [`claim`] finds the socket —
//! parked here, parked by another process, or still held somewhere because the server
//! has not noticed the drop yet (then it is taken over: closed where it is, which parks
//! it) — and checks that it may be restored: within its namespace's window, the same
//! user, every event it may have missed still kept. [`resume`] then answers the CONNECT
//! with the same id and pid, sends what was missed with offsets of its own, and puts the
//! socket back in its rooms, under the ledger, so that no live event comes before the
//! missed ones or twice.
//!
//! Anything that does not hold makes the CONNECT a new socket, as the protocol says
//! (the client sees `socket.recovered == false`); the reason is logged and counted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::value::RawValue;

use super::history::Position;
use super::recovery::remote::{self, Logged, Unavailable, Want};
use super::recovery::{self, Park};
use super::reply;
use super::shared::Shared;
use super::socket::Socket;
use crate::engine::{BoxFuture, CloseReason, Frame, Outgoing};
use crate::socketio::packet as sio;

/// Longest wait for a socket held elsewhere to be closed and parked.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// Longest wait for this process to deliver what the client says it has seen (events
/// still on their way here from their origin).
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// How long a new process (a restarted worker) waits for what its peers keep before a
/// pid it knows nothing of is taken for unknown.
const SETTLE: Duration = Duration::from_secs(10);

/// Most frames, and bytes, of missed events sent as one queue item.
const REPLAY_FRAMES: usize = 256;
const REPLAY_BYTES: usize = 256 * 1024;

/// Most claims from the cluster reading the stream at once, per process.
static CLUSTER_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Longest offset looked at (a position names at most a few hundred origins).
const MAX_OFFSET: usize = 4096;

/// Why a claim did not restore the socket (the `result` label of
/// `iorelay_recovery_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The pid is not one this host minted for the namespace.
    Unknown,
    /// The socket is not kept (never dropped here, or taken over by another claim).
    NotKept,
    /// Dropped longer ago than `max_disconnection`.
    Expired,
    /// The CONNECT is admitted as another user.
    OtherUser,
    /// The offset does not parse.
    BadOffset,
    /// An event it may have missed was dropped for `recovery_budget`.
    Gap,
}

impl Miss {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Miss::Unknown => "unknown_pid",
            Miss::NotKept => "not_kept",
            Miss::Expired => "expired",
            Miss::OtherUser => "other_user",
            Miss::BadOffset => "bad_offset",
            Miss::Gap => "gap",
        }
    }
}

/// A socket claimed for restoring.
#[derive(Debug)]
pub struct Claimed {
    /// Its id.
    pub id: Arc<str>,
    /// When it first connected (its pid says).
    pub since: SystemTime,
    /// What was kept of it.
    pub park: Park,
    /// What its client has seen.
    pub after: Position,
    /// Claimed from the cluster (another node's socket): the stream's broadcasts from a
    /// little before its offset, to pick its missed events from, and the node whose
    /// session it was.
    pub logged: Option<FromCluster>,
    /// Claimed from the cluster: the pid, which the socket keeps.
    pub pid: Option<Arc<str>>,
}

/// What a claim from the cluster read: the stream's broadcasts, the id of the last entry
/// read, and the node whose session it was.
#[derive(Debug)]
pub struct FromCluster {
    /// The broadcasts.
    pub logged: Vec<Logged>,
    /// The last entry read.
    pub last: remote::EntryId,
    /// The session's node.
    pub node: String,
}

/// What `auth` asks to restore: its `pid` and `offset`, when they are strings.
pub fn asked(auth: &RawValue) -> Option<(String, Option<String>)> {
    let map: HashMap<&str, &RawValue> = serde_json::from_str(auth.get()).ok()?;
    let pid: String = serde_json::from_str(map.get("pid")?.get()).ok()?;
    let offset = map
        .get("offset")
        .and_then(|o| serde_json::from_str::<String>(o.get()).ok());
    Some((pid, offset))
}

/// Claim the socket that `pid` names for a CONNECT to `nsp` admitted as `user`.
pub async fn claim(
    relay: &Shared,
    nsp: &str,
    window: Duration,
    pid: &str,
    offset: Option<&str>,
    user: Option<&Arc<str>>,
) -> Result<Claimed, Miss> {
    let Some(claim) = relay.recovery.key().open(nsp, pid) else {
        return claim_remote(relay, nsp, pid, offset, user).await;
    };
    // Minted here, but restored on another node since (the cluster keeps its session
    // there now): what is parked here is stale, and the cluster's session is restored.
    let foreign = Want {
        nsp,
        user: user.map(|u| &**u),
        foreign: true,
    };
    if let Some(remote) = relay.recovery.remote()
        && let Ok(Some(session)) = remote.take(pid, foreign).await
    {
        let after = parse_offset(offset)?.unwrap_or_default();
        relay.recovery.parked().take(nsp, &claim.sid);
        return restore_taken(relay, nsp, pid, after, user, session).await;
    }
    let sid = claim.sid.as_str();
    // Whoever holds or keeps the socket must know it as this user: checked before
    // anything is closed, so that a pid alone cannot end someone else's socket.
    let held_here = relay.held(sid).filter(|h| &*h.socket.nsp == nsp);
    if held_here.as_ref().is_some_and(|h| h.socket.user() != user) {
        return Err(Miss::OtherUser);
    }
    let kept_user = relay
        .recovery
        .parked()
        .peek(nsp, sid)
        .map(|p| p.user.clone());
    if kept_user.as_ref().is_some_and(|u| u.as_ref() != user) {
        return Err(Miss::OtherUser);
    }
    let held_elsewhere = relay.bus.held_on_host(nsp, sid);
    // Nowhere to be found: no reason to wait (unless this process is new, and its peers
    // have not told it what they keep yet).
    if held_here.is_none()
        && kept_user.is_none()
        && !held_elsewhere
        && !relay.recovery.is_new(SETTLE)
    {
        return Err(Miss::NotKept);
    }
    // Its client is back, so the socket it left is gone for good, wherever it is.
    if let Some(held) = held_here {
        held.socket.session().close(CloseReason::Replaced);
    } else if held_elsewhere {
        relay.bus.evict(nsp, sid, user.map(|u| &**u));
    }
    let deadline = Instant::now() + TAKEOVER_WAIT;
    relay
        .recovery
        .wait_until(deadline, || {
            relay.recovery.parked().contains(nsp, sid)
                && relay.held(sid).is_none()
                && !relay.bus.held_on_host(nsp, sid)
        })
        .await;
    {
        let parked = relay.recovery.parked();
        let park = parked.peek(nsp, sid).ok_or(Miss::NotKept)?;
        if park.at.elapsed() > window {
            return Err(Miss::Expired);
        }
        if park.user.as_ref() != user {
            return Err(Miss::OtherUser);
        }
    }
    let park = relay
        .recovery
        .parked()
        .take(nsp, sid)
        .ok_or(Miss::NotKept)?;
    // Whatever came before the socket connected it cannot have missed (a client holds
    // no offset until its first event, and an empty one for a `welcome` sent before any).
    let mut after = relay
        .recovery
        .ledger()
        .log
        .position_before(nsp, claim.since_ms);
    if let Some(seen) = parse_offset(offset)? {
        after.merge(&seen);
    }
    // What the client saw on its old worker may still be on its way here; an origin that
    // died will never send it (and the client has it).
    let deadline = Instant::now() + CATCH_UP_WAIT;
    relay
        .recovery
        .wait_until(deadline, || {
            let ledger = relay.recovery.ledger();
            ledger.position.covers(&after) || ledger.log.covers(&after)
        })
        .await;
    Ok(Claimed {
        id: Arc::from(sid),
        since: SystemTime::UNIX_EPOCH + Duration::from_millis(claim.since_ms),
        park,
        after,
        logged: None,
        pid: None,
    })
}

/// What an offset says the client saw (none without one).
fn parse_offset(offset: Option<&str>) -> Result<Option<Position>, Miss> {
    match offset {
        Some(o) if o.len() <= MAX_OFFSET => {
            Ok(Some(o.parse::<Position>().map_err(|_| Miss::BadOffset)?))
        }
        Some(_) => Err(Miss::BadOffset),
        None => Ok(None),
    }
}

/// Why the cluster could not give what a claim needs, as a miss.
fn unavailable(why: Unavailable) -> Miss {
    match why {
        Unavailable::Gap => Miss::Gap,
        Unavailable::Down(error) => {
            tracing::warn!(%error, "recovery: the cluster's sessions or stream cannot be read");
            Miss::NotKept
        }
    }
}

/// Claim the session that `pid` names from the cluster, if it keeps sessions (another
/// node's socket; see [`remote`]).
async fn claim_remote(
    relay: &Shared,
    nsp: &str,
    pid: &str,
    offset: Option<&str>,
    user: Option<&Arc<str>>,
) -> Result<Claimed, Miss> {
    let remote = relay.recovery.remote().ok_or(Miss::Unknown)?;
    if pid.len() > recovery::pid::MAX_PID {
        return Err(Miss::Unknown);
    }
    let after = parse_offset(offset)?.unwrap_or_default();
    let want = Want {
        nsp,
        user: user.map(|u| &**u),
        foreign: false,
    };
    let session = remote
        .take(pid, want)
        .await
        .map_err(unavailable)?
        .ok_or(Miss::Unknown)?;
    restore_taken(relay, nsp, pid, after, user, session).await
}

/// Claim the socket of `session`, taken from the cluster for `pid`, for a client that
/// saw `after`.
async fn restore_taken(
    relay: &Shared,
    nsp: &str,
    pid: &str,
    after: Position,
    user: Option<&Arc<str>>,
    session: remote::Session,
) -> Result<Claimed, Miss> {
    let remote = relay.recovery.remote().ok_or(Miss::Unknown)?;
    if session.nsp != nsp {
        return Err(Miss::Unknown);
    }
    // What Redis holds is checked as anything from the network: rooms a client could have
    // joined, no more than it could have (its own id, and the relay's own room, besides).
    let max_rooms = relay
        .namespace(nsp)
        .map_or(0, |ns| ns.policy().config.limits.max_rooms);
    let sane = session.rooms.len() <= max_rooms + 2
        && session
            .rooms
            .iter()
            .all(|r| crate::api::check_room_name(r).is_ok());
    if !sane {
        tracing::warn!(%nsp, rooms = session.rooms.len(), "recovery: a session in Redis with rooms no client could have; not restored");
        return Err(Miss::NotKept);
    }
    if session.user.as_deref() != user.map(|u| &**u) {
        return Err(Miss::OtherUser);
    }
    // Restored on this host before and still held here, its drop not noticed yet: its
    // client is back, so that socket is gone for good (its park here is dropped: the
    // cluster's session, proof of the pid, is what is restored).
    let sid = session.sid.as_str();
    if let Some(held) = relay.held(sid).filter(|h| &*h.socket.nsp == nsp) {
        held.socket.session().close(CloseReason::Replaced);
    } else if relay.bus.held_on_host(nsp, sid) {
        relay.bus.evict(nsp, sid, user.map(|u| &**u));
    }
    let deadline = Instant::now() + TAKEOVER_WAIT;
    relay
        .recovery
        .wait_until(deadline, || {
            relay.held(sid).is_none() && !relay.bus.held_on_host(nsp, sid)
        })
        .await;
    let here = relay.recovery.parked().take(nsp, sid);
    let from = remote::scan_from(&after, session.since_ms);
    // Each read may hold up to `MAX_SCAN_BYTES`: a few at a time per process.
    let permit = CLUSTER_READS.acquire().await;
    let (logged, last) = remote.since(nsp, from).await.map_err(unavailable)?;
    drop(permit);
    tracing::debug!(%nsp, socket = %session.sid, node = %session.node, scanned = logged.len(), "recovery: a session of another node claimed");
    Ok(Claimed {
        id: Arc::from(session.sid.as_str()),
        since: SystemTime::UNIX_EPOCH + Duration::from_millis(session.since_ms),
        park: here.unwrap_or_else(|| Park {
            rooms: remote::rooms_of(&session),
            user: user.cloned(),
            at: Instant::now(),
        }),
        after,
        logged: Some(FromCluster {
            logged,
            last,
            node: session.node,
        }),
        pid: Some(Arc::from(pid)),
    })
}

/// The pid of `socket`.
pub fn pid_of(relay: &Shared, socket: &Socket) -> String {
    if let Some(pid) = &socket.pid {
        return pid.to_string();
    }
    let since_ms = super::history::epoch_ms(socket.since);
    relay
        .recovery
        .key()
        .mint(&socket.nsp, socket.id(), since_ms)
}

/// Rejoin futures: a room and its member count once joined.
pub type Rejoined<'a> = Vec<(Arc<str>, BoxFuture<'a, usize>)>;

/// Answer `socket`'s CONNECT as the restored one, send what it missed and put it back on
/// the bus in its rooms; returns the rooms with their counts to come (the caller
/// announces them), or [`Miss::Gap`] (before anything was sent) when an event it may
/// have missed is no longer kept.
pub fn resume<'a>(
    relay: &'a Shared,
    socket: &Arc<Socket>,
    claimed: &Claimed,
) -> Result<Rejoined<'a>, Miss> {
    let ledger = relay.recovery.ledger();
    if let Some(from) = &claimed.logged {
        replay_remote(relay, socket, claimed, from, &ledger);
        let joined = rejoin(relay, socket, &claimed.park);
        drop(ledger);
        return Ok(joined);
    }
    let missed = ledger
        .log
        .missed(
            &socket.nsp,
            socket.id(),
            &claimed.park.rooms,
            &claimed.after,
        )
        .ok_or(Miss::Gap)?;
    let pid = pid_of(relay, socket);
    socket.send_text(&sio::encode_connect_with_pid(
        &socket.nsp,
        socket.id(),
        &pid,
    ));
    let mut running = claimed.after.clone();
    let replayed = missed.len();
    send_grouped(
        socket,
        missed.into_iter().map(|entry| {
            running.advance(entry.id);
            recovery::with_offset(&entry.item, &running.to_string())
        }),
    );
    let joined = rejoin(relay, socket, &claimed.park);
    drop(ledger);
    tracing::debug!(nsp = %socket.nsp, socket = %socket.id(), replayed, "socket restored");
    Ok(joined)
}

/// Put `socket` back on the bus in the rooms it was in (under the ledger).
fn rejoin<'a>(relay: &'a Shared, socket: &Arc<Socket>, park: &Park) -> Rejoined<'a> {
    relay.bus.add_socket(&socket.nsp, socket.recipient.clone());
    let rooms: BTreeSet<Arc<str>> = park
        .rooms
        .iter()
        .filter(|r| crate::adapter::is_listed(r) && *r != socket.id())
        .cloned()
        .collect();
    socket.rooms.lock().extend(rooms.iter().cloned());
    rooms
        .into_iter()
        .map(|room| {
            let count = relay.bus.join(&socket.nsp, &room, socket.id());
            (room, count)
        })
        .collect()
}

/// Answer the CONNECT of a socket claimed from the cluster and send what it missed
/// (under the ledger): the stream's broadcasts `from` read, then those this process
/// delivered after the last entry read (while the stream was read), each with this
/// process's position as its offset, since what comes next is this process's to deliver.
fn replay_remote(
    relay: &Shared,
    socket: &Arc<Socket>,
    claimed: &Claimed,
    from: &FromCluster,
    ledger: &recovery::Ledger,
) {
    let Some(remote) = relay.recovery.remote() else {
        return;
    };
    let here = &ledger.position;
    let session = remote::Session {
        nsp: socket.nsp.to_string(),
        sid: socket.id().to_string(),
        pid: String::new(),
        rooms: claimed.park.rooms.iter().map(|r| r.to_string()).collect(),
        user: None,
        since_ms: 0,
        node: from.node.clone(),
    };
    let missed = remote::replay(&from.logged, &session, &claimed.after, here, remote.node());
    let mut read_up_to = here.clone();
    read_up_to.set(remote::STREAM_ORIGIN, remote::entry_seq(from.last));
    let later = ledger
        .log
        .missed(&socket.nsp, socket.id(), &claimed.park.rooms, &read_up_to)
        .unwrap_or_default();
    socket.send_text(&sio::encode_connect_with_pid(
        &socket.nsp,
        socket.id(),
        &pid_of(relay, socket),
    ));
    let position = here.to_string();
    let offset = recovery::offset_arg(&position);
    let items = missed
        .iter()
        .filter_map(|entry| {
            let mut args = serde_json::from_str::<Vec<&RawValue>>(&entry.args).ok()?;
            args.push(&offset);
            let announced = entry.attachments.len();
            let text = sio::encode_event(&socket.nsp, &entry.name, &args, None, announced);
            Some(reply::outgoing(&text, &entry.attachments))
        })
        .chain(
            later
                .iter()
                .map(|entry| recovery::with_offset(&entry.item, &position)),
        );
    send_grouped(socket, items);
    tracing::debug!(nsp = %socket.nsp, socket = %socket.id(), replayed = missed.len(), later = later.len(), "socket restored from the cluster");
}

/// Send what was missed in groups: a socket's queue counts items, and a replay of a
/// thousand events into a polling session that has not polled yet must not make its
/// client a slow consumer; each group stays small enough for the byte bounds.
fn send_grouped(socket: &Socket, items: impl Iterator<Item = Outgoing>) {
    let mut group: Vec<Frame> = Vec::new();
    let mut bytes = 0;
    for item in items {
        bytes += item.bytes();
        group.extend_from_slice(item.frames());
        if group.len() >= REPLAY_FRAMES || bytes >= REPLAY_BYTES {
            socket
                .session()
                .send(Outgoing::Group(Arc::from(std::mem::take(&mut group))));
            bytes = 0;
        }
    }
    if !group.is_empty() {
        socket.session().send(Outgoing::Group(Arc::from(group)));
    }
}
