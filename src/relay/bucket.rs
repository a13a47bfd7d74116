//! Token buckets: the rate limits' one mechanism. [`TokenBucket`] is the plain one, for a
//! bucket that one socket or connection owns (a socket's events, a connection's
//! CONNECTs) behind its own uncontended lock. [`SharedBucket`] enforces the same limits
//! for a bucket that many threads take from at once (a client address's events, shared
//! by all its connections), without a lock.
//!
//! A `SharedBucket` is the token bucket written as GCRA (the generic cell rate
//! algorithm): instead of a token count and the time of the last refill, it keeps one
//! number, the time at which the bucket will be full again (`full_at`, in nanoseconds
//! since the bucket was made). Taking a token moves it one emission interval
//! (`1 / rate`) later; the take is refused when that would put it more than
//! `burst × interval` ahead of now, which is exactly "fewer than one token left". One
//! `AtomicU64` and a compare-and-swap loop replace the lock: an admitted event is one
//! successful CAS, a refused one only reads, so a flood that is being refused does not
//! even bounce the cache line between cores. The interval is rounded up to a whole
//! nanosecond, so a rate is never exceeded; above 10⁹ events a second it is 10⁹.
//!
//! On new limits (a reload) both kinds follow at the next take. What an address has
//! used up is kept by `TokenBucket` as tokens and by `SharedBucket` as the time until it
//! is full again; both cap what is left at the new burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Follow new limits (a reload); tokens above the new burst are dropped.
    pub fn set_limits(&mut self, rate: u32, burst: u32) {
        self.rate = f64::from(rate.max(1));
        self.burst = f64::from(burst.max(1));
        self.tokens = self.tokens.min(self.burst);
    }

    /// Take a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket many threads take from at once, lock-free (see the module doc): the
/// limits come with each take, so that a reload applies to buckets in use.
#[derive(Debug)]
pub struct SharedBucket {
    /// Nanoseconds after `epoch` at which the bucket is full again; at or before now
    /// means full.
    full_at: AtomicU64,
    /// The bucket's own clock origin: `full_at` is relative to it, so that 64 bits of
    /// nanoseconds last for centuries.
    epoch: Instant,
}

impl SharedBucket {
    /// A full bucket.
    pub fn new(now: Instant) -> SharedBucket {
        SharedBucket {
            full_at: AtomicU64::new(0),
            epoch: now,
        }
    }

    /// Take a token if there is one, under `rate` per second and `burst` (each at least
    /// 1, as `TokenBucket` reads them).
    pub fn take(&self, now: Instant, rate: u32, burst: u32) -> bool {
        // Rounded up: a token never comes back sooner than the rate allows.
        let interval = NANOS_PER_SEC.div_ceil(u64::from(rate.max(1)));
        // At most 2^32 × 10^9 < 2^63: no overflow.
        let window = interval * u64::from(burst.max(1));
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: the bucket's state is this one word, and every compare-and-swap on it
        // is ordered with every other; no other memory is published through it.
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            let next = full_at.max(now).saturating_add(interval);
            if next - now > window {
                return false;
            }
            match self.full_at.compare_exchange_weak(
                full_at,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => full_at = seen,
            }
        }
    }
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 3, t0);
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(500)));
        assert!(!b.take(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn shared_bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let b = SharedBucket::new(t0);
        for _ in 0..3 {
            assert!(b.take(t0, 2, 3));
        }
        assert!(!b.take(t0, 2, 3), "the burst is spent");
        assert!(
            !b.take(t0 + Duration::from_millis(499), 2, 3),
            "half a token is not a token"
        );
        assert!(b.take(t0 + Duration::from_millis(500), 2, 3));
        assert!(!b.take(t0 + Duration::from_millis(500), 2, 3));
    }

    #[test]
    fn shared_bucket_refills_to_burst_and_no_further() {
        let t0 = Instant::now();
        let b = SharedBucket::new(t0);
        assert!(b.take(t0, 10, 5));
        // An hour idle refills 5 tokens, not 36,000.
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..100).filter(|_| b.take(later, 10, 5)).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn shared_bucket_matches_the_plain_one() {
        // The same events at the same times, under limits that change midway (a reload
        // to a higher rate and burst): both buckets admit the same ones. Times are in
        // 1/64 s and rates powers of two, so that the plain bucket's f64 is exact.
        let t0 = Instant::now();
        let shared = SharedBucket::new(t0);
        let mut plain = TokenBucket::new(8, 4, t0);
        let (mut at, mut admitted) = (0u64, 0);
        for i in 0..4000u64 {
            // Irregular steps of 0–6 64ths: about 21 events a second.
            at += i * 37 % 7;
            let now = t0 + Duration::from_nanos(at * 15_625_000);
            let (rate, burst) = if i < 2000 { (8, 4) } else { (32, 30) };
            plain.set_limits(rate, burst);
            let p = plain.take(now);
            let s = shared.take(now, rate, burst);
            admitted += usize::from(s);
            if !(2000..2200).contains(&i) {
                // Right after the reload the two may differ by what was used up: kept
                // as tokens by one, as time by the other; they meet again once full.
                assert_eq!(p, s, "event {i}");
            }
        }
        assert!(admitted > 1000 && admitted < 4000, "{admitted}");
    }

    #[test]
    fn shared_bucket_never_over_admits_under_contention() {
        let t0 = Instant::now();
        let bucket = Arc::new(SharedBucket::new(t0));
        let admitted = Arc::new(AtomicUsize::new(0));
        // 4 threads, 20,000 takes each over 1 simulated second, at 1000 per second with
        // a burst of 500: at most 500 + 1000 × 1 s may pass.
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (bucket, admitted) = (bucket.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let now = t0 + Duration::from_micros(i * 50 + t);
                        if bucket.take(now, 1000, 500) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let admitted = admitted.load(Ordering::Relaxed);
        assert!(admitted <= 1500, "over-admitted: {admitted}");
        assert!(admitted >= 1000, "the rate was not given: {admitted}");

        // All at one instant: exactly the burst, however the threads interleave.
        let bucket = Arc::new(SharedBucket::new(t0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (bucket, admitted) = (bucket.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if bucket.take(t0, 1, 2500) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 2500);
    }

    #[test]
    fn shared_bucket_takes_the_extreme_limits() {
        let t0 = Instant::now();
        let b = SharedBucket::new(t0);
        // The process-wide default before a config applies: no practical limit.
        for _ in 0..10_000 {
            assert!(b.take(t0, u32::MAX, u32::MAX));
        }
        // Zero reads as one, as TokenBucket reads it.
        let b = SharedBucket::new(t0);
        assert!(b.take(t0, 0, 0));
        assert!(!b.take(t0, 0, 0));
        assert!(b.take(t0 + Duration::from_secs(1), 0, 0));
        // A clock reading from before the bucket was made counts as its start.
        let later = SharedBucket::new(t0 + Duration::from_secs(5));
        assert!(later.take(t0, 1, 1));
        assert!(!later.take(t0, 1, 1));
    }
}
