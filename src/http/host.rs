//! The admin listener's `Host` check, against DNS rebinding: a web page on
//! `evil.example` whose name is re-pointed at 127.0.0.1 makes the browser send
//! `Host: evil.example` to the admin listener, with the page's own (same-origin) right
//! to read the answer. Such a request names a host that is not this listener's, so it is
//! refused.
//!
//! [`Hosts::admits`] accepts a `Host` that is an IP literal (`127.0.0.1`, `[::1]`, any
//! address: a page cannot rebind an address), `localhost`, or a name of
//! `admin.allowed_hosts`, each with or without a port; nothing else. Owns the parsing of
//! the header and of the config entries only; the admin routes decide what a refusal
//! looks like and count it.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The names besides IP literals and `localhost` that the admin listener answers to,
/// lowercased, without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    names: Vec<String>,
}

/// Why an `admin.allowed_hosts` entry is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name (letters, digits, '-' and '.', without a port or scheme)")]
pub struct BadName(pub String);

impl Hosts {
    /// The allowed names of the config: DNS names, without port or scheme.
    pub fn parse(entries: &[String]) -> Result<Hosts, BadName> {
        let names = entries
            .iter()
            .map(|entry| {
                let name = normalize(entry);
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if valid {
                    Ok(name)
                } else {
                    Err(BadName(entry.clone()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Hosts { names })
    }

    /// Whether a request whose `Host` is `host` may be answered. A request without a
    /// `Host` is admitted: browsers always send one, so it cannot be a rebound page.
    pub fn admits(&self, host: Option<&[u8]>) -> bool {
        let Some(host) = host else { return true };
        let Ok(host) = std::str::from_utf8(host) else {
            return false;
        };
        let Some(name) = strip_port(host.trim()) else {
            return false;
        };
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        if name.parse::<Ipv4Addr>().is_ok() {
            return true;
        }
        let name = normalize(name);
        name == "localhost" || self.names.contains(&name)
    }
}

/// Lowercased, without the trailing dot of a fully qualified name.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// `host[:port]` without its port (a bracketed IPv6 literal keeps its brackets); `None`
/// when the port is not a number or the value is not of that shape (a bare IPv6 address
/// with colons, a path, a user part).
fn strip_port(host: &str) -> Option<&str> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (&host[..end + 2], port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    if name.is_empty() || name.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Hosts {
        Hosts::parse(&names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn ip_literals_and_localhost_pass_with_or_without_a_port() {
        let h = Hosts::default();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9090",
            "10.1.2.3:80",
            "0.0.0.0:9090",
            "[::1]",
            "[::1]:9090",
            "[fe80::1]:1",
            "localhost",
            "LOCALHOST:9090",
            "localhost.:9090",
        ] {
            assert!(h.admits(Some(ok.as_bytes())), "{ok}");
        }
        assert!(h.admits(None), "no Host: not a browser");
    }

    #[test]
    fn other_names_and_malformed_values_are_refused() {
        let h = Hosts::default();
        for bad in [
            "evil.example",
            "evil.example:9090",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "::1",
            "[::1",
            "[nope]:1",
            "127.0.0.1:",
            "127.0.0.1:port",
            "127.0.0.1:9090:1",
            "user@127.0.0.1",
            "127.0.0.1/x",
            "",
            "127.1",
        ] {
            assert!(!h.admits(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!h.admits(Some(b"\xff\xfe")));
    }

    #[test]
    fn configured_names_pass_case_insensitively() {
        let h = hosts(&["Relay.Internal", "metrics.example."]);
        assert!(h.admits(Some(b"relay.internal:9090")));
        assert!(h.admits(Some(b"METRICS.example")));
        assert!(!h.admits(Some(b"relay.internal.evil.example")));
        for bad in ["", "relay:9090", "http://relay", "*", "a..b", "white space"] {
            assert_eq!(
                Hosts::parse(&[bad.to_owned()]),
                Err(BadName(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn what_the_ops_commands_send_passes() {
        // src/ops.rs sends the listener's address as Host.
        let h = Hosts::default();
        for addr in ["127.0.0.1:9090", "[::1]:9090", "0.0.0.0:9090"] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            assert!(h.admits(Some(addr.to_string().as_bytes())), "{addr}");
        }
    }
}
