//! Each client address's event budget: the events of all its connections, in every
//! namespace, come out of one token bucket (`server.events_per_ip_per_second`, with
//! `server.event_burst_per_ip` above it, shared out among the workers as the handshake
//! limits are), on top of each socket's own `events_per_second`. Without it an address's
//! allowance would be its session cap times the socket rate (1000 × 50 = 50,000 events a
//! second by default), and opening more connections would buy more budget.
//!
//! The address is the client's as the engine read it (`X-Forwarded-For` from trusted
//! proxies only), and an IPv6 address counts by its /64, as admission counts it.
//!
//! A socket looks its address's bucket up once, at its first event, and keeps the `Arc`;
//! the table holds only `Weak`s, swept of dead ones whenever it has doubled since the last
//! sweep, so an address leaves the table with its last socket and the table is never
//! larger than about twice the live addresses. Sockets that never send an event cost the
//! table nothing.
//!
//! Every event of every connection from one address takes from the same bucket (behind a
//! proxy or a NAT, that is most of the traffic; in the benchmarks, all of it). So the
//! bucket is a [`SharedBucket`](super::bucket::SharedBucket): one atomic word and a
//! compare-and-swap per admitted event instead of a lock and a float refill (a worker
//! runs one thread, so the lock was never contended, but it was the dearer of the two:
//! about 15 ns more per event), and it stays correct if the table is ever shared by
//! threads; the limits in force are one more word, read with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::bucket::SharedBucket;
use crate::engine::admission;

/// One address's shared bucket.
pub type Bucket = Arc<SharedBucket>;

/// The per-address event budgets of this process.
#[derive(Debug)]
pub struct Addresses {
    table: Mutex<Table>,
    /// Events per second per address (high half) and the burst above it (low half),
    /// this process's shares: one word, so that a take never sees half a reload.
    limits: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<IpAddr, Weak<SharedBucket>>,
    /// The table's size after the last sweep: the next sweep comes at twice that.
    swept_at: usize,
}

/// The smallest table worth sweeping.
const SWEEP_FLOOR: usize = 1024;

impl Addresses {
    /// Budgets of `rate` events per second per address, `burst` above it.
    pub fn new(rate: u32, burst: u32) -> Addresses {
        Addresses {
            table: Mutex::new(Table::default()),
            limits: AtomicU64::new(pack(rate, burst)),
        }
    }

    /// New limits (a reload): every address's bucket follows at its next event.
    pub fn set_limits(&self, rate: u32, burst: u32) {
        self.limits.store(pack(rate, burst), Ordering::Relaxed);
    }

    /// The bucket `ip` shares with the other connections from its address.
    pub fn bucket(&self, ip: IpAddr, now: Instant) -> Bucket {
        let key = admission::key(ip);
        let mut table = self.table.lock();
        if let Some(bucket) = table.buckets.get(&key).and_then(Weak::upgrade) {
            return bucket;
        }
        let bucket = Arc::new(SharedBucket::new(now));
        table.buckets.insert(key, Arc::downgrade(&bucket));
        if table.buckets.len() >= (table.swept_at * 2).max(SWEEP_FLOOR) {
            table.buckets.retain(|_, b| b.strong_count() > 0);
            table.swept_at = table.buckets.len();
        }
        bucket
    }

    /// Take one event from `bucket` under the limits in force; false when the address is
    /// over its budget.
    pub fn take(&self, bucket: &Bucket, now: Instant) -> bool {
        let limits = self.limits.load(Ordering::Relaxed);
        // The two halves `pack` put there: the casts take them apart, nothing is lost.
        let (rate, burst) = ((limits >> 32) as u32, limits as u32);
        bucket.take(now, rate, burst)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().buckets.len()
    }
}

/// `rate` and `burst` in one word: rate in the high half.
fn pack(rate: u32, burst: u32) -> u64 {
    (u64::from(rate) << 32) | u64::from(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_from_one_address_share_its_budget() {
        let now = Instant::now();
        let addresses = Addresses::new(1, 3);
        let a = addresses.bucket(ip("192.0.2.1"), now);
        let b = addresses.bucket(ip("192.0.2.1"), now);
        let other = addresses.bucket(ip("192.0.2.2"), now);
        assert!(addresses.take(&a, now));
        assert!(addresses.take(&b, now));
        assert!(addresses.take(&a, now));
        assert!(
            !addresses.take(&b, now),
            "the burst is the address's, not the connection's"
        );
        assert!(addresses.take(&other, now), "another address has its own");
        assert!(addresses.take(&a, now + std::time::Duration::from_secs(1)));
    }

    #[test]
    fn ipv6_shares_by_its_64() {
        let now = Instant::now();
        let addresses = Addresses::new(1, 1);
        let a = addresses.bucket(ip("2001:db8:1:2::1"), now);
        let b = addresses.bucket(ip("2001:db8:1:2:ffff::9"), now);
        assert!(addresses.take(&a, now));
        assert!(!addresses.take(&b, now));
    }

    #[test]
    fn a_reload_applies_to_buckets_in_use() {
        let now = Instant::now();
        let addresses = Addresses::new(1, 1);
        let a = addresses.bucket(ip("192.0.2.1"), now);
        assert!(addresses.take(&a, now));
        assert!(!addresses.take(&a, now));
        addresses.set_limits(1000, 1000);
        assert!(addresses.take(&a, now + std::time::Duration::from_millis(10)));
    }

    #[test]
    fn connections_on_several_threads_share_one_burst() {
        let now = Instant::now();
        let addresses = Arc::new(Addresses::new(1, 1000));
        // A connection that stays open throughout, so that no thread's lookup comes after
        // the others have left and finds a fresh bucket.
        let _kept = addresses.bucket(ip("192.0.2.7"), now);
        let admitted: usize = std::thread::scope(|s| {
            let takers: Vec<_> = (0..4)
                .map(|_| {
                    let addresses = addresses.clone();
                    s.spawn(move || {
                        // Each thread a connection of its own from the same address.
                        let bucket = addresses.bucket(ip("192.0.2.7"), now);
                        (0..1000).filter(|_| addresses.take(&bucket, now)).count()
                    })
                })
                .collect();
            takers.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(admitted, 1000);
    }

    #[test]
    fn addresses_leave_with_their_last_connection() {
        let now = Instant::now();
        let addresses = Addresses::new(10, 10);
        let kept = addresses.bucket(ip("10.0.0.1"), now);
        for i in 0..10_000u32 {
            let octets = (i + 1).to_be_bytes();
            drop(addresses.bucket(IpAddr::from([11, octets[1], octets[2], octets[3]]), now));
        }
        assert!(
            addresses.tracked() < 2 * SWEEP_FLOOR,
            "dead entries are swept: {}",
            addresses.tracked()
        );
        let again = addresses.bucket(ip("10.0.0.1"), now);
        assert!(
            Arc::ptr_eq(&kept, &again),
            "a live address keeps its bucket"
        );
    }
}
