//! A connection's rate limits per namespace, kept when its socket leaves: the budget is
//! the connection's, so leaving a namespace and joining it again refills nothing (a
//! connect, `$join`, disconnect loop is bounded by `events_per_second`), and CONNECTs
//! have a bucket of their own with the same rate and burst. Only connections that left a
//! namespace keep anything here: the first CONNECT is free, so an idle connection pays
//! no map.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::bucket::TokenBucket;
use super::socket::Socket;
use crate::config::Limits;

/// A connection's rate limits in one namespace.
#[derive(Debug)]
pub struct Rates {
    /// Events (shared with the namespace's socket of the moment).
    pub events: Arc<Mutex<TokenBucket>>,
    /// CONNECTs: a bucket of their own, so that connecting costs no event (a namespace
    /// with `burst = 1` can still emit at once), yet a connect/disconnect loop (announced
    /// connections, `join_claim` rooms) is bounded.
    pub connects: TokenBucket,
}

/// The rates of the namespaces a connection left, by name (at most one per declared
/// namespace).
#[derive(Debug, Default)]
pub struct Kept(HashMap<String, Rates>);

impl Kept {
    /// The rates kept for `nsp`, if the connection left it before.
    pub fn get_mut(&mut self, nsp: &str) -> Option<&mut Rates> {
        self.0.get_mut(nsp)
    }

    /// Keep the rates of `socket`, which leaves `nsp` (the first time: later leaves
    /// share the same buckets already).
    pub fn keep(&mut self, nsp: &str, socket: &Socket, limits: &Limits) {
        self.0.entry(nsp.to_owned()).or_insert_with(|| {
            let now = Instant::now();
            let mut connects = TokenBucket::new(limits.events_per_second, limits.burst, now);
            // The CONNECT that made this socket.
            connects.take(now);
            Rates {
                events: socket.rate_bucket(),
                connects,
            }
        });
    }
}
