//! What a peer's messages do here: the half of [`PeerAdapter`](super::PeerAdapter) that
//! reads the wire — memberships into the replica, broadcasts to the local sockets (or to
//! the relay's record hook first), and what connection state recovery hears (parked,
//! joined, evicted sockets; logged events) to the parking hook — plus the messages it
//! writes for recovery, and the memberships of the cluster's other nodes
//! ([`PeerAdapter::present`]), kept as those of one more peer, [`CLUSTER`].

use std::sync::Arc;

use super::super::bus::{
    Adapter, Audience, Logged, Member, ParkRecord, Parking, Recorded, Stamped, Target,
};
use super::super::wire::Message;
use super::PeerAdapter;
use crate::engine::Outgoing;

/// The peer under which the members of the cluster's other nodes are kept (no worker
/// has this number: they count from 0).
pub const CLUSTER: u32 = u32::MAX;

impl PeerAdapter {
    /// Member `id` (named `user`) of another node of the cluster joined (`join`) or
    /// left `room` of `nsp`; returns the room's member count here after it (host and
    /// cluster). Its node announces nothing here: the caller does.
    pub fn present(
        &self,
        nsp: &str,
        room: &str,
        id: &str,
        user: Option<&str>,
        join: bool,
    ) -> usize {
        if join {
            let (room, id) = (room.to_owned(), id.to_owned());
            let user = user.map(str::to_owned);
            if let Some(room) = self.replicas.join(CLUSTER, nsp, room, id, user) {
                self.occupancy.up(nsp, &room);
            }
        } else if let Some(room) = self.replicas.leave(CLUSTER, nsp, room, id) {
            self.occupancy.down(nsp, &room);
        }
        self.host_count(nsp, room)
    }

    pub(super) fn apply(&self, node: u32, msg: Message) {
        match msg {
            Message::Broadcast {
                nsp,
                rooms,
                except,
                frames,
                latest,
                stamp,
            } => {
                let target = Target {
                    rooms: rooms.into_iter().map(Arc::from).collect(),
                    except: except.map(Arc::from),
                };
                let item = Outgoing::from_frames(frames, latest);
                if let (Some(stamp), Some(record)) = (stamp, self.recorder.get()) {
                    let stamped = Stamped {
                        nsp: &nsp,
                        target: &target,
                        stamp,
                        item: &item,
                    };
                    if record(&stamped) {
                        return;
                    }
                }
                self.local.broadcast(&nsp, &target, &item);
            }
            Message::Join {
                nsp,
                room,
                id,
                user,
            } => {
                if let Some(hook) = self.parking.get() {
                    hook(Parking::Joined { nsp: &nsp, id: &id });
                }
                if let Some(room) = self.replicas.join(node, &nsp, room, id, user) {
                    self.occupancy.up(&nsp, &room);
                }
            }
            Message::Leave { nsp, room, id } => {
                if let Some(room) = self.replicas.leave(node, &nsp, &room, &id) {
                    self.occupancy.down(&nsp, &room);
                }
            }
            Message::Gone { nsp, id } => {
                for room in self.replicas.gone(node, &nsp, &id) {
                    self.occupancy.down(&nsp, &room);
                }
            }
            Message::Park {
                nsp,
                id,
                user,
                rooms,
                dropped_ms,
            } => {
                for room in self.replicas.gone(node, &nsp, &id) {
                    self.occupancy.down(&nsp, &room);
                }
                if let Some(hook) = self.parking.get() {
                    let park = ParkRecord {
                        nsp: Arc::from(nsp),
                        member: Member {
                            id: Arc::from(id),
                            user: user.map(Arc::from),
                        },
                        rooms: rooms.into_iter().map(Arc::from).collect(),
                        dropped_ms,
                    };
                    hook(Parking::Parked(&park));
                }
            }
            Message::Evict { nsp, id, user } => {
                if let Some(hook) = self.parking.get() {
                    hook(Parking::Evict {
                        nsp: &nsp,
                        id: &id,
                        user: user.as_deref(),
                    });
                }
            }
            Message::Recorded {
                nsp,
                room,
                stamp,
                name,
                args,
                attachments,
            } => {
                if let Some(hook) = self.parking.get() {
                    let recorded = Recorded {
                        nsp: Arc::from(nsp),
                        room: room.map(Arc::from),
                        stamp,
                        name: Arc::from(name),
                        args: Arc::from(args),
                        attachments,
                    };
                    hook(Parking::Recorded(&recorded));
                }
            }
            Message::Logged {
                nsp,
                rooms,
                ids,
                except_rooms,
                except_ids,
                frames,
                stamp,
            } => {
                if let Some(hook) = self.parking.get() {
                    let names = |list: Vec<String>| list.into_iter().map(Arc::from).collect();
                    let logged = Logged {
                        nsp: Arc::from(nsp),
                        audience: Audience {
                            rooms: names(rooms),
                            ids: names(ids),
                            except_rooms: names(except_rooms),
                            except_ids: names(except_ids),
                        },
                        stamp,
                        frames,
                    };
                    hook(Parking::Logged(&logged));
                }
            }
            // Handled by the reader (it announces departures).
            Message::Synced | Message::Hello { .. } => {}
        }
    }
}

/// The wire message for a parked socket.
pub(super) fn park_message(park: &ParkRecord) -> Message {
    Message::Park {
        nsp: park.nsp.to_string(),
        id: park.member.id.to_string(),
        user: park.member.user.as_deref().map(str::to_owned),
        rooms: park.rooms.iter().map(|r| r.to_string()).collect(),
        dropped_ms: park.dropped_ms,
    }
}

/// The wire message for a logged event.
pub(super) fn logged_message(event: Logged) -> Message {
    let names = |list: &[Arc<str>]| list.iter().map(|r| r.to_string()).collect();
    Message::Logged {
        nsp: event.nsp.to_string(),
        rooms: names(&event.audience.rooms),
        ids: names(&event.audience.ids),
        except_rooms: names(&event.audience.except_rooms),
        except_ids: names(&event.audience.except_ids),
        frames: event.frames,
        stamp: event.stamp,
    }
}

/// The wire message for a history event.
pub(super) fn recorded_message(event: Recorded) -> Message {
    Message::Recorded {
        nsp: event.nsp.to_string(),
        room: event.room.as_deref().map(str::to_owned),
        stamp: event.stamp,
        name: event.name.to_string(),
        args: event.args.to_string(),
        attachments: event.attachments,
    }
}
