//! This process's part in keeping sessions in the cluster ([`remote`](super::remote)):
//! every live socket of a namespace with `recovery` is written when it connects or its
//! rooms change (checked each [`TICK`]) and again before its key would expire, so that a
//! node killed outright leaves its clients' sessions behind; a dropped socket is written
//! with its window, one that leaves for good is forgotten ([`parked`], [`gone`]).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::remote::Session;
use crate::relay::shared::Shared;
use crate::relay::socket::Socket;

/// How often live sockets are looked at.
pub const TICK: Duration = Duration::from_secs(1);

/// What the cluster keeps of `socket` in its namespace, as node `node`.
pub fn session_of(relay: &Shared, socket: &Socket, node: &str) -> Session {
    let mut rooms: BTreeSet<String> = socket.rooms.lock().iter().map(|r| r.to_string()).collect();
    rooms.insert(socket.id().to_string());
    Session {
        nsp: socket.nsp.to_string(),
        sid: socket.id().to_string(),
        pid: crate::relay::restore::pid_of(relay, socket),
        rooms,
        user: socket.user().map(|u| u.to_string()),
        since_ms: crate::relay::history::epoch_ms(socket.since),
        node: node.to_owned(),
    }
}

/// `socket` dropped: keep its session for its namespace's window.
pub fn parked(relay: &Shared, socket: &Socket) {
    if let (Some(remote), Some(window)) = (relay.recovery.remote(), window_of(relay, socket)) {
        let session = session_of(relay, socket, remote.node());
        remote.keep(&session, window);
    }
}

/// `socket` left for good: its session is no longer anyone's to claim.
pub fn gone(relay: &Shared, socket: &Socket) {
    if let (Some(remote), Some(_)) = (relay.recovery.remote(), window_of(relay, socket)) {
        remote.forget(&crate::relay::restore::pid_of(relay, socket));
    }
}

fn window_of(relay: &Shared, socket: &Socket) -> Option<Duration> {
    relay
        .namespace(&socket.nsp)
        .and_then(|ns| ns.policy().config.recovery)
        .map(|r| r.max_disconnection)
}

/// Keep the live sessions of `relay` written, while it lives (a task per process, started
/// when a cluster keeps sessions).
pub async fn keep_live(relay: std::sync::Weak<Shared>) {
    let mut written: HashMap<Arc<str>, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(relay) = relay.upgrade() else {
            return;
        };
        let Some(remote) = relay.recovery.remote().cloned() else {
            continue;
        };
        let now = Instant::now();
        let mut live = HashMap::with_capacity(written.len());
        for held in relay.held_in(None) {
            let socket = &held.socket;
            let Some(window) = window_of(&relay, socket) else {
                continue;
            };
            let print = fingerprint(socket);
            let due = written
                .get(socket.id())
                .is_none_or(|&(p, at)| p != print || now.duration_since(at) >= window / 2);
            // Gone meanwhile (and forgotten): not written again.
            if due && relay.held(socket.id()).is_none() {
                continue;
            }
            let at = if due {
                let session = session_of(&relay, socket, remote.node());
                // Rewritten after half a window, so it outlives a killed node by one to
                // one and a half windows.
                if !remote.keep(&session, window + window / 2) {
                    // Not queued: tried again at the next tick.
                    continue;
                }
                // Gone while it was queued: written again after it as what it is now,
                // dropped (kept for its window) or gone for good (forgotten).
                if relay.held(socket.id()).is_none() {
                    if relay.recovery.parked().contains(&socket.nsp, socket.id()) {
                        remote.keep(&session, window);
                    } else {
                        remote.forget(&session.pid);
                    }
                    continue;
                }
                now
            } else {
                written[socket.id()].1
            };
            live.insert(socket.id().clone(), (print, at));
        }
        written = live;
    }
}

/// What a change of a socket's session shows in: its rooms and its user.
fn fingerprint(socket: &Socket) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for room in socket.rooms.lock().iter() {
        room.hash(&mut hasher);
    }
    socket.user().hash(&mut hasher);
    hasher.finish()
}
