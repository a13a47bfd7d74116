//! One Socket.IO socket: a client's membership of one namespace on one Engine.IO session.
//! Holds what the relay needs per socket — identity, the rooms it joined, its rate limit.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::value::RawValue;

use super::addresses::{self, Addresses};
use super::auth::Grants;
use super::bucket::TokenBucket;
use crate::adapter::Recipient;
use crate::engine::{Frame, Session};

/// Who a socket is, as its CONNECT was admitted.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The display name.
    pub user: Option<Arc<str>>,
    /// The CONNECT auth payload, verbatim.
    pub auth: Box<RawValue>,
    /// The rooms its token lets it join.
    pub grants: Grants,
    /// The client's address.
    pub address: IpAddr,
    /// The handshake's `Origin`, kept only when some `meta` asks for it.
    pub origin: Option<Arc<str>>,
}

/// A connected socket.
#[derive(Debug)]
pub struct Socket {
    /// Namespace name.
    pub nsp: Arc<str>,
    /// Identity and delivery, shared with the bus.
    pub recipient: Arc<Recipient>,
    /// The CONNECT auth payload, kept verbatim (for `greet`).
    pub auth: Box<RawValue>,
    /// The rooms its verified JWT lets it `$join` (`join = "claims"`); empty without one.
    pub grants: Grants,
    /// Rooms this socket joined (this process's view; the bus has the shared one).
    pub rooms: Mutex<BTreeSet<Arc<str>>>,
    /// Events allowed per second: the connection's bucket for this namespace, shared
    /// with the sockets it had there before and will have after (a reconnect of the
    /// namespace does not refill it).
    rate: Arc<Mutex<TokenBucket>>,
    /// Its client address's event budget, shared with the address's other sockets;
    /// looked up at the socket's first event.
    address_budget: OnceLock<addresses::Bucket>,
    /// The `transport` label this socket is counted under in the connections gauge.
    pub counted_as: Mutex<&'static str>,
    /// The client's address.
    pub address: IpAddr,
    /// The handshake's `Origin`, kept only when some namespace's `meta` asks for it
    /// (shared with the connection's other sockets).
    pub origin: Option<Arc<str>>,
    /// When it connected.
    pub since: SystemTime,
    /// Its pid when it was restored from the cluster (another host minted it; the client
    /// holds on to it), instead of one of this host's.
    pub pid: Option<Arc<str>>,
    /// The acks it owes (broadcasts with acks from other nodes).
    pub asked: Mutex<super::asked::Asked>,
}

impl Socket {
    /// A new socket on `session`, with the identity it was admitted with, which it keeps
    /// for its life.
    pub fn new(
        nsp: Arc<str>,
        id: Arc<str>,
        admitted: Admitted,
        session: Arc<Session>,
        rate: Arc<Mutex<TokenBucket>>,
    ) -> Socket {
        let Admitted {
            user,
            auth,
            grants,
            address,
            origin,
        } = admitted;
        Socket {
            nsp,
            recipient: Arc::new(Recipient { id, user, session }),
            auth,
            grants,
            rooms: Mutex::new(BTreeSet::new()),
            rate,
            address_budget: OnceLock::new(),
            counted_as: Mutex::new(""),
            address,
            origin,
            since: SystemTime::now(),
            pid: None,
            asked: Mutex::new(super::asked::Asked::default()),
        }
    }

    /// The socket id.
    pub fn id(&self) -> &Arc<str> {
        &self.recipient.id
    }

    /// The display name.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.recipient.user.as_ref()
    }

    /// The session carrying it.
    pub fn session(&self) -> &Arc<Session> {
        &self.recipient.session
    }

    /// Send one Socket.IO packet text to this socket alone.
    pub fn send_text(&self, text: &str) -> bool {
        self.session().send_frame(Frame::message(text))
    }

    /// The events bucket, for the connection to keep when the socket leaves.
    pub fn rate_bucket(&self) -> Arc<Mutex<TokenBucket>> {
        self.rate.clone()
    }

    /// Take one event's worth from the rate limit in force (`rate` per second, `burst`
    /// above it, so that a reload applies to connected sockets too); false when over it.
    pub fn take_token(&self, now: Instant, rate: u32, burst: u32) -> bool {
        let mut bucket = self.rate.lock();
        bucket.set_limits(rate, burst);
        bucket.take(now)
    }

    /// Take one event's worth from the client address's budget (`addresses`, the
    /// process's table); false when the address is over it.
    pub fn take_address_token(&self, addresses: &Addresses, now: Instant) -> bool {
        let bucket = self
            .address_budget
            .get_or_init(|| addresses.bucket(self.address, now));
        addresses.take(bucket, now)
    }

    /// The rooms joined, as a snapshot.
    pub fn joined(&self) -> Vec<Arc<str>> {
        self.rooms.lock().iter().cloned().collect()
    }

    /// Whether the socket is in `room`.
    pub fn is_in(&self, room: &str) -> bool {
        self.rooms.lock().contains(room)
    }
}
