//! Which pages may connect: the `Origin` a browser sends with a handshake, a WebSocket or
//! a polling request, checked against the server's policy ([`Origins`]); and the CORS
//! answers that let a page on an allowed origin use long-polling across origins (its
//! headers on every answer, the `OPTIONS` preflight).
//!
//! A request without `Origin` is not a browser's cross-origin request (the Node client,
//! curl, a same-origin GET in some browsers): the check protects browsers' users from
//! other sites' pages, so such a request is allowed. A page on the server's own origin
//! (the `Origin`'s host and port are the request's `Host`) is always allowed: the demo
//! pages and a `static_dir` site connect to where they came from.
//!
//! Owns the policy and the answers; the refusal (403, code 4, counted and logged) is
//! `server`'s.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// Which origins besides the server's own may connect. Read per request from the
/// settings in force, so a reload changes it for the next request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Any origin (`"*"`).
    any: bool,
    /// Any http(s) origin on `localhost`, `127.0.0.1` or `[::1]`, any port (`"loopback"`).
    loopback: bool,
    /// Exact origins, normalized (`https://app.example.com`, `http://127.0.0.1:8080`).
    exact: Vec<String>,
}

/// Why an entry of the allowed origins is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{entry:?} is not an origin: expected \"*\", \"loopback\" or scheme://host[:port] \
     with no path (such as \"https://app.example.com\")"
)]
pub struct OriginError {
    /// The entry as written.
    pub entry: String,
}

/// What the policy says of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin` header: not a browser's cross-origin request.
    NoOrigin,
    /// An allowed origin; its answers carry CORS headers naming it.
    Allowed(HeaderValue),
    /// Refused (not listed, malformed, or `null`).
    Refused,
}

impl Origins {
    /// The policy of config entries: `"*"`, `"loopback"`, or exact origins. None at all
    /// means the server's own origin only.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Origins, OriginError> {
        let mut origins = Origins::default();
        for entry in entries {
            let entry = entry.as_ref();
            match entry {
                "*" => origins.any = true,
                "loopback" => origins.loopback = true,
                _ => {
                    let parsed = Origin::parse(entry).ok_or_else(|| OriginError {
                        entry: entry.to_owned(),
                    })?;
                    origins.exact.push(parsed.serialize());
                }
            }
        }
        Ok(origins)
    }

    /// Whether the request with these headers may proceed.
    pub fn check(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Verdict::NoOrigin;
        };
        let Some(origin) = value.to_str().ok().and_then(Origin::parse) else {
            // `null` (a sandboxed frame, a file:// page) and anything malformed: only
            // "*" lets it through, as its answers cannot name anything else.
            return if self.any {
                Verdict::Allowed(value.clone())
            } else {
                Verdict::Refused
            };
        };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if self.any
            || (self.loopback && origin.is_loopback())
            || host.is_some_and(|host| origin.same_authority(host))
            || self.exact.contains(&origin.serialize())
        {
            Verdict::Allowed(value.clone())
        } else {
            Verdict::Refused
        }
    }
}

/// A parsed `scheme://host[:port]`, lowercased, the scheme's default port left out.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, authority) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let (host, port) = split_authority(authority)?;
        let port = port.filter(|p| Some(*p) != default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    fn serialize(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{}", self.scheme, self.host, port),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    fn is_loopback(&self) -> bool {
        matches!(self.scheme.as_str(), "http" | "https")
            && matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }

    /// Whether this origin's host and port are those of a `Host` header (whose port, when
    /// left out, is this origin's scheme's default).
    fn same_authority(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_authority(host_header) else {
            return false;
        };
        let port = port.filter(|p| Some(*p) != default_port(&self.scheme));
        host == self.host && port == self.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` (an IPv6 host in brackets), lowercased; `None` for a path, user info,
/// an empty host or a port that is not a number below 65536.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if !host_ok || (!host.starts_with('[') && host.contains(['[', ']', ':'])) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Most of a refused `Origin` written to the log: enough for any real origin, and a
/// bound on what a hostile header puts in every line.
const LOGGED_ORIGIN: usize = 200;

/// The request's `Origin` for a log line: lossy UTF-8, cut at [`LOGGED_ORIGIN`] bytes.
pub(super) fn for_log(headers: &HeaderMap) -> String {
    let bytes = headers
        .get(header::ORIGIN)
        .map_or(&[][..], |v| v.as_bytes());
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(LOGGED_ORIGIN)]).into_owned();
    if bytes.len() > LOGGED_ORIGIN {
        text.push('…');
    }
    text
}

/// Add the CORS headers for an allowed `origin` to an answer: the origin itself (never
/// `*`, which credentials forbid), credentials, and `Vary: Origin` for caches.
pub(super) fn add_cors(resp: &mut Response<Full<Bytes>>, origin: HeaderValue) {
    let headers = resp.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to an `OPTIONS` preflight from an allowed origin: 204, the methods polling
/// uses, and the request headers the page asked for (the client's `extraHeaders`).
pub(super) fn preflight(headers: &HeaderMap, origin: HeaderValue) -> Response<Full<Bytes>> {
    let mut resp = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS")
        .body(Full::new(Bytes::new()))
        .expect("static status and header are valid");
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        resp.headers_mut().append(
            header::VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
    }
    add_cors(&mut resp, origin);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        if let Some(host) = host {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        h
    }

    fn allowed(policy: &Origins, origin: &str, host: &str) -> bool {
        matches!(
            policy.check(&headers(Some(origin), Some(host))),
            Verdict::Allowed(_)
        )
    }

    #[test]
    fn a_request_without_origin_is_allowed_whatever_the_policy() {
        let none = Origins::parse::<&str>(&[]).unwrap();
        assert_eq!(
            none.check(&headers(None, Some("relay:3000"))),
            Verdict::NoOrigin
        );
        assert_eq!(none.check(&headers(None, None)), Verdict::NoOrigin);
    }

    #[test]
    fn the_servers_own_origin_is_always_allowed() {
        let none = Origins::parse::<&str>(&[]).unwrap();
        assert!(allowed(
            &none,
            "http://relay.example:3000",
            "relay.example:3000"
        ));
        assert!(allowed(&none, "https://Relay.Example", "relay.example"));
        assert!(allowed(&none, "https://relay.example", "relay.example:443"));
        assert!(allowed(&none, "http://[::1]:3000", "[::1]:3000"));
        assert!(!allowed(
            &none,
            "http://relay.example:3001",
            "relay.example:3000"
        ));
        assert!(!allowed(&none, "http://relay.example", "relay.example:443"));
        assert!(!allowed(&none, "http://evil.example", "relay.example"));
        assert!(!allowed(&none, "http://localhost:3000", "127.0.0.1:3000"));
        // No Host header: nothing to be the same as.
        assert_eq!(
            none.check(&headers(Some("http://relay.example"), None)),
            Verdict::Refused
        );
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let list = Origins::parse(&["https://app.example.com", "HTTP://Other.Example:8080/"])
            .expect_err("a trailing slash is a path");
        assert_eq!(list.entry, "HTTP://Other.Example:8080/");
        let list =
            Origins::parse(&["https://app.example.com:443", "HTTP://Other.Example:8080"]).unwrap();
        let host = "relay.example";
        assert!(allowed(&list, "https://app.example.com", host));
        assert!(allowed(&list, "http://other.example:8080", host));
        assert!(!allowed(&list, "http://app.example.com", host), "scheme");
        assert!(
            !allowed(&list, "https://app.example.com:8443", host),
            "port"
        );
        assert!(
            !allowed(&list, "https://evil.app.example.com", host),
            "host"
        );
        assert!(!allowed(&list, "https://app.example.com.evil", host));
        assert!(!allowed(&list, "http://other.example", host));
    }

    #[test]
    fn loopback_allows_any_port_on_the_loopback_names_only() {
        let dev = Origins::parse(&["loopback"]).unwrap();
        for origin in [
            "http://localhost:5173",
            "https://localhost",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
        ] {
            assert!(allowed(&dev, origin, "127.0.0.1:3000"), "{origin}");
        }
        for origin in [
            "http://localhost.evil.example",
            "http://127.0.0.2",
            "ftp://localhost",
            "http://example.com",
            "null",
        ] {
            assert!(!allowed(&dev, origin, "127.0.0.1:3000"), "{origin}");
        }
    }

    #[test]
    fn any_allows_everything_and_null() {
        let any = Origins::parse(&["*"]).unwrap();
        assert!(allowed(&any, "https://anything.example", "relay"));
        assert!(allowed(&any, "null", "relay"));
    }

    #[test]
    fn malformed_origins_are_refused_and_malformed_entries_rejected() {
        let list = Origins::parse(&["https://app.example.com"]).unwrap();
        for origin in [
            "null",
            "app.example.com",
            "https://",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://app.example.com:99999",
            "https://app.example.com:",
            "https://app.example.com:12a",
            "https://[::1",
            "https://a:b:c",
        ] {
            assert!(!allowed(&list, origin, "relay"), "{origin}");
        }
        let mut h = headers(None, Some("relay"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_bytes(b"https://caf\xe9.example").unwrap(),
        );
        assert_eq!(list.check(&h), Verdict::Refused, "not ASCII");
        for entry in [
            "app.example.com",
            "https://a.example/x",
            "",
            "https://",
            "**",
        ] {
            assert!(Origins::parse(&[entry]).is_err(), "{entry:?}");
        }
    }

    #[test]
    fn the_logged_origin_is_bounded() {
        let long = format!("https://{}.example", "a".repeat(1000));
        let logged = for_log(&headers(Some(&long), None));
        assert!(logged.starts_with("https://aaa"));
        assert_eq!(logged.len(), LOGGED_ORIGIN + '…'.len_utf8());
        assert_eq!(for_log(&headers(Some("null"), None)), "null");
        assert_eq!(for_log(&headers(None, None)), "");
    }

    #[test]
    fn cors_headers_name_the_origin_with_credentials() {
        let mut resp = Response::new(Full::new(Bytes::new()));
        add_cors(
            &mut resp,
            HeaderValue::from_static("https://app.example.com"),
        );
        let h = resp.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::VARY], "Origin");
        let mut asked = HeaderMap::new();
        asked.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-token"),
        );
        let resp = preflight(&asked, HeaderValue::from_static("https://app.example.com"));
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "x-token"
        );
        assert!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
}
