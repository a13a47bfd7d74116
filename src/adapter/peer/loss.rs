//! What a lost link costs: the peer's members stay for [`RELINK_GRACE`] (it may be
//! relinking or restarting), then leave — each departure reported to the departure hook,
//! so that every process announces the leaves to its own sockets.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::replica::Departed;
use super::{ANNOUNCE_BATCH, PeerAdapter, RELINK_GRACE};

impl PeerAdapter {
    /// A link ended: forget it and, if it was the peer's only one, its members once
    /// [`RELINK_GRACE`] passed without the peer coming back.
    pub(super) fn lost(self: &Arc<Self>, link: u64) {
        self.links.lock().remove(&link);
        let node = self.inbound.lock().remove(&link);
        let Some(node) = node else {
            return;
        };
        let still_linked = self.inbound.lock().values().any(|n| *n == node);
        tracing::info!(node = self.node, peer = node, "peer link down");
        if still_linked {
            return;
        }
        let wait = self.next_link.fetch_add(1, Ordering::Relaxed);
        self.orphans.lock().insert(node, wait);
        let bus = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(RELINK_GRACE).await;
            let Some(bus) = bus.upgrade() else {
                return;
            };
            let expired = {
                let mut orphans = bus.orphans.lock();
                let mine = orphans.get(&node) == Some(&wait);
                if mine {
                    orphans.remove(&node);
                }
                mine
            };
            if expired {
                bus.drop_replica(node).await;
            }
        });
    }

    /// Forget a peer's members (those of a resync it did not finish too) and report each
    /// departure.
    pub(super) async fn drop_replica(&self, node: u32) {
        let mut departed = self.remove_replica(node);
        departed.extend(self.resync.lock().remove(&node).unwrap_or_default());
        self.announce(departed).await;
    }

    /// Take `node`'s replica out, with its rooms out of the occupancy.
    pub(super) fn remove_replica(&self, node: u32) -> Vec<Departed> {
        let departed = self.replicas.remove(node);
        let rooms: HashSet<(&str, &Arc<str>)> =
            departed.iter().map(|d| (d.nsp.as_str(), &d.room)).collect();
        for (nsp, room) in rooms {
            self.occupancy.down(nsp, room);
        }
        departed
    }

    /// Report departures to the hook, each (namespace, member, room) once, yielding to
    /// the runtime every [`ANNOUNCE_BATCH`]: a dead peer's members × rooms must not hold
    /// this process's thread (and its heartbeat answers) in one burst.
    pub(super) async fn announce(&self, departed: Vec<Departed>) {
        let Some(hook) = self.hook.get() else {
            return;
        };
        let mut seen = HashSet::new();
        for (i, Departed { nsp, member, room }) in departed.into_iter().enumerate() {
            if i > 0 && i % ANNOUNCE_BATCH == 0 {
                tokio::task::yield_now().await;
            }
            if !seen.insert((nsp.clone(), member.id.clone(), room.clone())) {
                continue;
            }
            let count = self.host_count(&nsp, &room);
            hook(&nsp, &member, &room, count);
        }
    }
}
