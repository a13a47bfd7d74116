//! Who may open a session: per-client-address limits on open sessions and on the
//! handshake rate, on top of the engine's total (`max_sessions`), and a refusal log that
//! cannot itself be flooded.
//!
//! The address is the client's as [`super::proxy`] reads it (`X-Forwarded-For` only from
//! trusted proxies). IPv6 addresses count by their /64, the block one subscriber gets, so
//! that walking the addresses of one's own prefix does not multiply the allowance.
//!
//! Both tables are bounded: a session count leaves the table at zero, and rate buckets
//! that have refilled are dropped whenever the table reaches [`MAX_TRACKED`]; should it be
//! full of busy addresses still, the new address goes unlimited by rate rather than
//! growing the table (its sessions are still counted and capped).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most addresses whose handshake rate is tracked at once.
const MAX_TRACKED: usize = 65_536;
/// At most one refusal log line per this long; the others are counted in it.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The engine's `max_sessions`.
    SessionLimit,
    /// The address's `max_sessions_per_ip`.
    AddressSessions,
    /// The address's `handshakes_per_second`.
    AddressRate,
}

impl Refused {
    /// The metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            Refused::SessionLimit => "session_limit",
            Refused::AddressSessions => "ip_sessions",
            Refused::AddressRate => "ip_rate",
        }
    }
}

/// The per-address limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open sessions per address.
    pub sessions: usize,
    /// Sustained handshakes per second per address.
    pub rate: u32,
    /// Handshakes per address in a burst above the rate.
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
struct Tables {
    sessions: HashMap<IpAddr, usize>,
    buckets: HashMap<IpAddr, Bucket>,
}

/// Refusal log state: when the last line was written and how many went unlogged since.
#[derive(Debug)]
struct LogGate {
    last: Option<Instant>,
    suppressed: u64,
}

/// The per-address tables of one engine.
#[derive(Debug)]
pub struct Admission {
    tables: Mutex<Tables>,
    log: Mutex<LogGate>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            tables: Mutex::new(Tables::default()),
            log: Mutex::new(LogGate {
                last: None,
                suppressed: 0,
            }),
        }
    }
}

/// The key an address counts under: itself for IPv4, its /64 for IPv6 (the relay's
/// per-address event budget counts the same way).
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Admission {
    /// Admit one handshake from `ip` (and count its session) or say why not.
    pub fn admit(&self, ip: IpAddr, limits: Limits, now: Instant) -> Result<(), Refused> {
        let ip = key(ip);
        let mut tables = self.tables.lock();
        if tables.sessions.get(&ip).copied().unwrap_or(0) >= limits.sessions {
            return Err(Refused::AddressSessions);
        }
        let rate = f64::from(limits.rate.max(1));
        let burst = f64::from(limits.burst.max(1));
        if !tables.buckets.contains_key(&ip) && tables.buckets.len() >= MAX_TRACKED {
            // Forget the addresses whose bucket has refilled: they are as good as new.
            tables.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        if tables.buckets.contains_key(&ip) || tables.buckets.len() < MAX_TRACKED {
            let bucket = tables.buckets.entry(ip).or_insert(Bucket {
                tokens: burst,
                last: now,
            });
            let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
            bucket.last = now;
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            if bucket.tokens < 1.0 {
                return Err(Refused::AddressRate);
            }
            bucket.tokens -= 1.0;
        }
        *tables.sessions.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    /// A session admitted for `ip` has ended.
    pub fn release(&self, ip: IpAddr) {
        let ip = key(ip);
        let mut tables = self.tables.lock();
        if let Some(n) = tables.sessions.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tables.sessions.remove(&ip);
            }
        }
    }

    /// Log a refusal, at most one line per second: the line says how many refusals
    /// went unlogged before it.
    pub fn log_refusal(&self, why: Refused, client: IpAddr, now: Instant) {
        let suppressed = {
            let mut gate = self.log.lock();
            if gate
                .last
                .is_some_and(|last| now.saturating_duration_since(last) < LOG_EVERY)
            {
                gate.suppressed += 1;
                return;
            }
            gate.last = Some(now);
            std::mem::take(&mut gate.suppressed)
        };
        tracing::warn!(reason = why.label(), %client, suppressed, "connection refused");
    }

    /// Addresses with open sessions (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tables.lock().sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        sessions: 3,
        rate: 2,
        burst: 4,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn sessions_per_address_are_capped_and_released() {
        let a = Admission::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(a.admit(ip("10.0.0.1"), LIMITS, t0), Ok(()));
        }
        assert_eq!(
            a.admit(ip("10.0.0.1"), LIMITS, t0),
            Err(Refused::AddressSessions)
        );
        assert_eq!(a.admit(ip("10.0.0.2"), LIMITS, t0), Ok(()));
        a.release(ip("10.0.0.1"));
        assert_eq!(a.admit(ip("10.0.0.1"), LIMITS, t0), Ok(()));
        for _ in 0..3 {
            a.release(ip("10.0.0.1"));
        }
        a.release(ip("10.0.0.2"));
        assert_eq!(
            a.tracked(),
            0,
            "no entry left for addresses without sessions"
        );
    }

    #[test]
    fn handshakes_per_address_are_rate_limited() {
        let a = Admission::default();
        let many = Limits {
            sessions: 1000,
            ..LIMITS
        };
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(a.admit(ip("10.0.0.1"), many, t0), Ok(()));
        }
        assert_eq!(a.admit(ip("10.0.0.1"), many, t0), Err(Refused::AddressRate));
        assert_eq!(
            a.admit(ip("10.0.0.9"), many, t0),
            Ok(()),
            "others unaffected"
        );
        let later = t0 + Duration::from_millis(500);
        assert_eq!(a.admit(ip("10.0.0.1"), many, later), Ok(()));
        assert_eq!(
            a.admit(ip("10.0.0.1"), many, later),
            Err(Refused::AddressRate)
        );
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a = Admission::default();
        let t0 = Instant::now();
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"] {
            assert_eq!(a.admit(ip(host), LIMITS, t0), Ok(()));
        }
        assert_eq!(
            a.admit(ip("2001:db8::abcd"), LIMITS, t0),
            Err(Refused::AddressSessions)
        );
        assert_eq!(a.admit(ip("2001:db8:0:1::1"), LIMITS, t0), Ok(()));
        assert_eq!(key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_rate_table_stays_bounded() {
        let a = Admission::default();
        let many = Limits {
            sessions: 1000,
            ..LIMITS
        };
        let t0 = Instant::now();
        for n in 0..(MAX_TRACKED as u32 + 10) {
            let addr = IpAddr::V4(n.into());
            assert_eq!(a.admit(addr, many, t0), Ok(()));
            a.release(addr);
        }
        assert!(a.tables.lock().buckets.len() <= MAX_TRACKED);
        // Once refilled, old entries make room.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(a.admit(ip("192.0.2.1"), many, later), Ok(()));
        assert!(a.tables.lock().buckets.len() < 100);
    }
}
