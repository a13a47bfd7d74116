//! A CONNECT to a namespace: rate limit, auth payload bound and policy, then a new
//! socket — or, with `recovery`, the dropped socket its pid claims, restored with what it
//! missed ([`restore`]) — on the bus, announced and greeted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::super::auth::Identity;
use super::super::bucket::TokenBucket;
use super::super::depart::depart_closed;
use super::super::policy::Refusal;
use super::super::shared::Owner;
use super::super::socket::{Admitted, Socket};
use super::super::{announce, control, restore};
use super::{Conn, Error, display_name, empty_object};
use crate::engine::sid::random_id;
use crate::engine::{CloseReason, Outgoing};
use crate::socketio::Packet;
use crate::socketio::packet as sio;

impl Conn {
    pub(super) async fn connect(&self, packet: Packet) -> Result<(), Error> {
        let nsp = packet.nsp;
        let Some(ns) = self.relay.namespace(&nsp) else {
            self.session
                .send_frame(crate::engine::Frame::message(&sio::encode_connect_error(
                    &nsp,
                    "Invalid namespace",
                )));
            return Err(Error::UndeclaredNamespace(nsp));
        };
        if self.socket(&nsp).is_some() {
            return Err(Error::DuplicateConnect(nsp));
        }
        let policy = ns.policy();
        let limits = &policy.config.limits;
        // The connection's buckets for the namespace outlive the socket: connect, `$join`,
        // disconnect in a loop is bounded by `events_per_second`.
        let now = Instant::now();
        let (rate, allowed) = {
            let mut state = self.state.lock();
            match state.rates.get_mut(&nsp) {
                // Connected here before: the buckets it left with.
                Some(rates) => {
                    rates
                        .connects
                        .set_limits(limits.events_per_second, limits.burst);
                    (rates.events.clone(), rates.connects.take(now))
                }
                // The first connect is free, and its buckets are kept only once it
                // leaves (`State::leave`): most connections never do, and a map
                // per connection would cost every idle one a few hundred bytes.
                None => {
                    let events = TokenBucket::new(limits.events_per_second, limits.burst, now);
                    (Arc::new(Mutex::new(events)), true)
                }
            }
        };
        if !allowed {
            tracing::debug!(sid = %self.session.sid, %nsp, "connect refused: rate limit");
            self.relay
                .meters
                .refused
                .with_label_values(&[&nsp, Refusal::RateLimited.label()])
                .inc();
            self.session
                .send_frame(crate::engine::Frame::message(&sio::encode_connect_error(
                    &nsp,
                    Refusal::RateLimited.message(),
                )));
            return Ok(());
        }
        let auth = packet.data.unwrap_or_else(empty_object);
        if auth.get().len() as u64 > limits.max_auth_size.0 {
            tracing::info!(sid = %self.session.sid, %nsp, size = auth.get().len(), "connect refused: auth payload over max_auth_size");
            self.relay
                .meters
                .refused
                .with_label_values(&[&nsp, Refusal::TooLarge.label()])
                .inc();
            self.session
                .send_frame(crate::engine::Frame::message(&sio::encode_connect_error(
                    &nsp,
                    "auth payload too large",
                )));
            return Ok(());
        }
        let identity = match policy.gate.admit(&auth, &self.credentials) {
            Ok(identity) => identity,
            Err(reason) => {
                tracing::info!(sid = %self.session.sid, %nsp, reason = %reason.label(), "connection refused by auth");
                self.relay
                    .meters
                    .auth_refused
                    .with_label_values(&[&nsp, reason.label()])
                    .inc();
                self.session
                    .send_frame(crate::engine::Frame::message(&sio::encode_connect_error(
                        &nsp,
                        reason.message(),
                    )));
                return Ok(());
            }
        };
        let Identity {
            user,
            verified,
            grants,
            join,
        } = identity;
        let user = user.or_else(|| display_name(&auth, &policy.config.user_field));
        let claimed = match (policy.config.recovery, restore::asked(&auth)) {
            (Some(recovery), Some((pid, offset))) => {
                // Claiming may wait for the socket to be parked elsewhere; the session's
                // packets are handled one at a time, so no other CONNECT comes meanwhile.
                let claimed = restore::claim(
                    &self.relay,
                    &nsp,
                    recovery.max_disconnection,
                    &pid,
                    offset.as_deref(),
                    user.as_ref(),
                )
                .await;
                claimed.map_err(|miss| self.missed(&nsp, miss)).ok()
            }
            _ => None,
        };
        let admitted = Admitted {
            user,
            auth,
            grants,
            address: self.address,
            origin: self.origin.clone(),
        };
        let new_socket = |id: Arc<str>, admitted: Admitted| {
            Socket::new(
                ns.name.clone(),
                id,
                admitted,
                self.session.clone(),
                rate.clone(),
            )
        };
        let mut rejoined = None;
        let socket = match &claimed {
            Some(claimed) => {
                let mut socket = new_socket(claimed.id.clone(), admitted.clone());
                socket.since = claimed.since;
                socket.pid = claimed.pid.clone();
                let socket = Arc::new(socket);
                match restore::resume(&self.relay, &socket, claimed) {
                    Ok(rooms) => {
                        rejoined = Some(rooms);
                        socket
                    }
                    Err(miss) => {
                        self.missed(&nsp, miss);
                        Arc::new(new_socket(Arc::from(random_id()), admitted))
                    }
                }
            }
            None => Arc::new(new_socket(Arc::from(random_id()), admitted)),
        };
        let id = socket.id().clone();
        self.state
            .lock()
            .sockets
            .insert(nsp.clone(), socket.clone());
        self.connected_once.store(true, Ordering::Release);
        self.end_deadline();
        if rejoined.is_none() {
            match policy.config.recovery {
                Some(_) => socket.send_text(&sio::encode_connect_with_pid(
                    &nsp,
                    &id,
                    &restore::pid_of(&self.relay, &socket),
                )),
                None => socket.send_text(&sio::encode_connect(&nsp, &id)),
            };
            announce::welcome(&self.relay, &policy, &socket);
            self.relay.bus.add_socket(&nsp, socket.recipient.clone());
        }
        let me: Weak<dyn Owner> = self.me.clone();
        self.relay.hold(&socket, me);
        if self.session.is_closed() {
            // The session closed while this CONNECT was handled: its close has run
            // already, so leave the bus here (parked, with `recovery`: the client may
            // well come back).
            let removed = self.state.lock().sockets.remove(&nsp);
            if let Some(socket) = removed {
                let relay = self.relay.clone();
                tokio::spawn(async move {
                    depart_closed(&relay, &socket, CloseReason::TransportError).await;
                });
            }
            return Ok(());
        }
        let transport = self.session.transport().counted_as().as_str();
        *socket.counted_as.lock() = transport;
        self.relay
            .meters
            .connections
            .with_label_values(&[&nsp, transport])
            .inc();
        if let Some(greet) = &policy.config.greet {
            let text = sio::encode_event(&nsp, greet, &[&socket.auth], None, 0);
            self.session
                .send(Outgoing::Paced(crate::engine::Frame::message(&text)));
        }
        announce::arrive(&self.relay, &policy, &socket).await;
        match rejoined {
            Some(rooms) => {
                self.relay
                    .meters
                    .recoveries
                    .with_label_values(&[&nsp, "recovered"])
                    .inc();
                control::rejoined(&self.relay, &policy, &socket, rooms).await;
            }
            None if !join.is_empty() => {
                control::join_at_connect(&self.relay, &policy, &socket, &join).await;
            }
            None => {}
        }
        tracing::debug!(sid = %self.session.sid, %nsp, socket = %id, user = ?socket.user(), verified, "socket connected");
        Ok(())
    }
}
