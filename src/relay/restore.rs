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
use super::recovery::{self, Park};
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
    let claim = relay.recovery.key().open(nsp, pid).ok_or(Miss::Unknown)?;
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
    let held_elsewhere = relay.bus.held_elsewhere(nsp, sid);
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
                && !relay.bus.held_elsewhere(nsp, sid)
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
    match offset {
        Some(o) if o.len() <= MAX_OFFSET => {
            after.merge(&o.parse::<Position>().map_err(|_| Miss::BadOffset)?);
        }
        Some(_) => return Err(Miss::BadOffset),
        None => {}
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
    })
}

/// The pid of `socket`.
pub fn pid_of(relay: &Shared, socket: &Socket) -> String {
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
    // What was missed goes out in groups: a socket's queue counts items, and a replay of
    // a thousand events into a polling session that has not polled yet must not make its
    // client a slow consumer; each group stays small enough for the byte bounds.
    let mut running = claimed.after.clone();
    let replayed = missed.len();
    let mut group: Vec<Frame> = Vec::new();
    let mut bytes = 0;
    for entry in missed {
        running.advance(entry.id);
        let item = recovery::with_offset(&entry.item, &running.to_string());
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
    relay.bus.add_socket(&socket.nsp, socket.recipient.clone());
    let rooms: BTreeSet<Arc<str>> = claimed
        .park
        .rooms
        .iter()
        .filter(|r| crate::adapter::is_listed(r))
        .cloned()
        .collect();
    socket.rooms.lock().extend(rooms.iter().cloned());
    let joined = rooms
        .into_iter()
        .map(|room| {
            let count = relay.bus.join(&socket.nsp, &room, socket.id());
            (room, count)
        })
        .collect();
    drop(ledger);
    tracing::debug!(nsp = %socket.nsp, socket = %socket.id(), replayed, "socket restored");
    Ok(joined)
}
