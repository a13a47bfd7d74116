//! Where a client is: the TCP peer, unless that peer is a trusted proxy, in which case
//! the `X-Forwarded-For` header it added says who it serves.
//!
//! Only the trusted proxies' word counts. The header is read from the right (each proxy
//! appends the address it received from): every address that is itself a trusted proxy
//! is skipped, and the first one that is not is the client. Anything to the left of it
//! was written by the client or by proxies nobody vouches for, and is ignored, so a
//! client cannot name itself someone else by sending the header. A malformed entry ends
//! the walk: the last address believed so far (a trusted proxy) stands.
//!
//! Owns the proxy list and the address resolution; what uses the address (logs, limits,
//! the server API) is the callers'.

use std::net::IpAddr;

use hyper::header::HeaderMap;
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries walked, from the right: far more proxies than any real
/// chain, and a bound on the work a hostile header can ask for.
const MAX_HOPS: usize = 32;

/// The peers whose `X-Forwarded-For` is believed. Empty (the default): nobody's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// Why an entry of the trusted proxies is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{entry:?} is not an address or a network: expected an IPv4 or IPv6 address, \
     optionally with a prefix length (\"10.0.0.0/8\", \"::1/128\", \"192.0.2.7\")"
)]
pub struct ProxyError {
    /// The entry as written.
    pub entry: String,
}

impl TrustedProxies {
    /// The list of config entries: networks in CIDR notation, or single addresses.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, ProxyError> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| ProxyError {
                        entry: entry.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 peer counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, for a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if self.0.is_empty() || !self.contains(client) {
            return client;
        }
        // Several header lines make one list, in order (RFC 9110 §5.3).
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
            .take(MAX_HOPS);
        for hop in hops {
            match parse_hop(hop) {
                Some(ip) => client = ip,
                None => break,
            }
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an IPv4 or IPv6 address, optionally with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), spaces around it allowed.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        if !port.is_empty() {
            port.strip_prefix(':')?.parse::<u16>().ok()?;
        }
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (ip, port) = hop.split_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(lines: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", HeaderValue::from_bytes(line).unwrap());
        }
        h
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse(&["127.0.0.1/32", "10.0.0.0/8", "2001:db8:1::/48"]).unwrap()
    }

    #[test]
    fn networks_and_single_addresses_are_parsed_and_matched() {
        let p = TrustedProxies::parse(&["10.1.2.3/8", "192.0.2.7", "::1"]).unwrap();
        assert!(
            p.contains(ip("10.200.0.1")),
            "the network of a host address"
        );
        assert!(p.contains(ip("192.0.2.7")));
        assert!(!p.contains(ip("192.0.2.8")));
        assert!(p.contains(ip("::1")));
        assert!(p.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        assert!(!p.contains(ip("11.0.0.1")));
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "localhost",
            "",
            "::1/129",
            "10.0.0.0/8 ",
        ] {
            assert_eq!(
                TrustedProxies::parse(&[bad]).unwrap_err().entry,
                bad,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = xff(&[b"203.0.113.9"]);
        assert_eq!(proxies().client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &h),
            ip("127.0.0.1"),
            "nobody is trusted by default"
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let p = proxies();
        let peer = ip("127.0.0.1");
        assert_eq!(p.client(peer, &xff(&[b"203.0.113.9"])), ip("203.0.113.9"));
        // The client's own claim (leftmost) is ignored past the first untrusted hop.
        let h = xff(&[b"1.1.1.1, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(p.client(peer, &h), ip("203.0.113.9"));
        // Several header lines are one list.
        let h = xff(&[b"1.1.1.1", b"203.0.113.9 , 10.0.0.2"]);
        assert_eq!(p.client(peer, &h), ip("203.0.113.9"));
        // All trusted: the leftmost is as far as anyone vouches.
        let h = xff(&[b"10.0.0.3, 10.0.0.2"]);
        assert_eq!(p.client(peer, &h), ip("10.0.0.3"));
        // No header: the proxy itself.
        assert_eq!(p.client(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn ports_ipv6_and_mapped_addresses_are_read() {
        let p = proxies();
        let peer = ip("::ffff:127.0.0.1");
        assert_eq!(
            p.client(peer, &xff(&[b"203.0.113.9:4711"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client(peer, &xff(&[b"[2001:db8::7]:4711"])),
            ip("2001:db8::7")
        );
        assert_eq!(p.client(peer, &xff(&[b"2001:db8::7"])), ip("2001:db8::7"));
        assert_eq!(p.client(peer, &xff(&[b"[2001:db8::7]"])), ip("2001:db8::7"));
        assert_eq!(
            p.client(ip("2001:db8:1::5"), &xff(&[b"::ffff:203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client(peer, &HeaderMap::new()),
            ip("127.0.0.1"),
            "canonical"
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_address() {
        let p = proxies();
        let peer = ip("127.0.0.1");
        for garbage in [
            &b"unknown"[..],
            b"",
            b"203.0.113.9:99999",
            b"[2001:db8::7",
            b"[2001:db8::7]x",
            b"2001:db8::7:80:1:2:3:4",
            b"\xff\xfe",
            b"203.0.113.9:80:80",
        ] {
            let mut line = b"198.51.100.1, ".to_vec();
            line.extend_from_slice(garbage);
            line.extend_from_slice(b", 10.0.0.2");
            let h = xff(&[&line]);
            assert_eq!(p.client(peer, &h), ip("10.0.0.2"), "{garbage:?}");
        }
    }

    #[test]
    fn a_long_chain_is_walked_only_so_far() {
        let p = proxies();
        let mut line = String::from("203.0.113.9");
        for _ in 0..1000 {
            line.push_str(", 10.0.0.1");
        }
        let h = xff(&[line.as_bytes()]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("10.0.0.1"));
    }
}
