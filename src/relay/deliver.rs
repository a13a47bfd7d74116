//! Delivery in namespaces with `recovery`: every event goes out under this process's
//! [`Ledger`](super::recovery::Ledger), with the position after it as its last argument,
//! and is kept in the recovery log with whom it reached — whether a client of this
//! process sent it ([`accepted`]), another process did ([`arrived`]), or the server API
//! ([`emitted`]). Why it must be under one lock is in [`recovery`](super::recovery).
//!
//! Namespaces without `recovery` never come here: their events are encoded once and
//! fanned out without a lock or an offset.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::history::{EventId, stamp_at};
use super::recovery::{self, Entry, Retention};
use super::reply::outgoing;
use super::shared::Shared;
use crate::adapter::{Audience, Logged, Pick, Stamped, Target};
use crate::engine::Session;
use crate::socketio::packet as sio;

/// An event as the relay delivers it, before its offset.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The namespace.
    pub nsp: &'a Arc<str>,
    /// The event name.
    pub name: &'a str,
    /// Its arguments as delivered (metadata included), placeholders numbered.
    pub args: &'a [&'a RawValue],
    /// Its binary attachments.
    pub attachments: &'a [Bytes],
    /// The attachments its placeholders number (those announced).
    pub announced: usize,
}

/// An event a client of this process sent: give it the next id, deliver it to `target`
/// (none: to nobody but the sender) and, with `echo`, to the sender; returns its id (none
/// when it went to the sender only) and the copies queued here.
pub fn accepted(
    relay: &Shared,
    packet: Packet<'_>,
    target: Option<&Target>,
    echo: Option<&Arc<Session>>,
    keep: Retention,
) -> (Option<(EventId, SystemTime)>, usize) {
    let mut ledger = relay.recovery.ledger();
    let accepted = target.map(|_| {
        let id = relay.sequence.next();
        ledger.position.advance(id);
        (id, SystemTime::now())
    });
    let offset = recovery::offset_arg(&ledger.position.to_string());
    let item = encode(packet, &offset);
    let mut delivered = 0;
    if let (Some(target), Some((id, at))) = (target, accepted) {
        let mut audience = Audience::of_target(target);
        if echo.is_some() {
            audience.except_ids.clear();
        }
        let stamp = stamp_at(id, at);
        let entry = Entry {
            id,
            at_ms: stamp.at_ms,
            audience,
            item: item.clone(),
        };
        ledger.log.push(packet.nsp, keep.0, entry, Instant::now());
        delivered += relay
            .bus
            .broadcast_stamped(packet.nsp, target, &item, stamp);
    }
    if let Some(session) = echo
        && session.send(item)
    {
        delivered += 1;
    }
    drop(ledger);
    relay.recovery.changed();
    (accepted, delivered)
}

/// An event another process accepted: deliver it here with this process's offset.
pub fn arrived(relay: &Shared, stamped: &Stamped<'_>, keep: Retention) {
    let id = EventId::of(stamped.stamp);
    let nsp: Arc<str> = Arc::from(stamped.nsp);
    let mut ledger = relay.recovery.ledger();
    ledger.position.advance(id);
    let item = recovery::with_offset(stamped.item, &ledger.position.to_string());
    let entry = Entry {
        id,
        at_ms: stamped.stamp.at_ms,
        audience: Audience::of_target(stamped.target),
        item: item.clone(),
    };
    ledger.log.push(&nsp, keep.0, entry, Instant::now());
    relay.bus.broadcast_local(&nsp, stamped.target, &item);
    drop(ledger);
    relay.recovery.changed();
}

/// A server API emit, under the id every process records it with: deliver it to this
/// process's sockets that `pick` selects.
pub fn emitted(
    relay: &Shared,
    packet: Packet<'_>,
    id: EventId,
    at_ms: u64,
    pick: &Pick,
    keep: Retention,
) -> usize {
    let mut ledger = relay.recovery.ledger();
    ledger.position.advance(id);
    let offset = recovery::offset_arg(&ledger.position.to_string());
    let item = encode(packet, &offset);
    let entry = Entry {
        id,
        at_ms,
        audience: Audience::of_pick(pick),
        item: item.clone(),
    };
    ledger.log.push(packet.nsp, keep.0, entry, Instant::now());
    let delivered = relay.bus.deliver_local(packet.nsp, pick, &item);
    drop(ledger);
    relay.recovery.changed();
    delivered
}

/// An event another process keeps, handed over on a new link (all of them, to a
/// restarted worker, which has none from before it started): kept here too unless it is
/// already, for the clients that come back here, but not delivered and not counted in
/// this process's position (it was not delivered here).
pub fn handed_over(relay: &Shared, logged: &Logged, keep: Retention) {
    let id = EventId::of(logged.stamp);
    let entry = Entry {
        id,
        at_ms: logged.stamp.at_ms,
        audience: logged.audience.clone(),
        item: crate::engine::Outgoing::from_frames(logged.frames.clone(), None),
    };
    relay
        .recovery
        .ledger()
        .log
        .push(&logged.nsp, keep.0, entry, Instant::now());
    relay.recovery.changed();
}

/// The offset argument for an event that is not in the log (a `welcome`): the position
/// now, so that a client keeping "the last string argument" keeps a true one.
pub fn current_offset(relay: &Shared) -> Box<RawValue> {
    recovery::offset_arg(&relay.recovery.ledger().position.to_string())
}

fn encode(packet: Packet<'_>, offset: &RawValue) -> crate::engine::Outgoing {
    let args: Vec<&RawValue> = packet.args.iter().copied().chain([offset]).collect();
    let text = sio::encode_event(packet.nsp, packet.name, &args, None, packet.announced);
    outgoing(&text, packet.attachments)
}
