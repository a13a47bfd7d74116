//! `[webhooks]`: where room and membership events are POSTed, how they are signed, and
//! the bounds of their queue, batches and retries.
//!
//! This module owns the shape of those keys and their checks ([`check`]). Reading the
//! `secret_file`, queueing, signing and delivering are the `webhooks` module's; nothing
//! here opens a connection.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The event names a receiver can subscribe to.
pub const EVENT_NAMES: &[&str] = &[
    "room.occupied",
    "room.vacated",
    "member.joined",
    "member.left",
];

/// `[webhooks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The receiver, an `http://` URL (`https://` is refused: the daemon carries no TLS
    /// client; put a local proxy in front of an https receiver). Empty: no webhooks.
    /// Default `""`.
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Iorelay-Signature` header. Default `""` (with a
    /// `url`, a secret from here or `secret_file` is required).
    pub secret: String,
    /// A file holding the secret (surrounding whitespace trimmed), read at start and on
    /// every reload; wins over `secret`. Default: none.
    pub secret_file: Option<PathBuf>,
    /// The events sent: any of `room.occupied`, `room.vacated`, `member.joined`,
    /// `member.left`. Default: all four.
    pub events: Vec<String>,
    /// Most events waiting for delivery; further events are dropped and counted.
    /// Default `10000`.
    pub queue: usize,
    /// Most events in one POST. Default `100`.
    pub batch: usize,
    /// How long the first event of a batch waits for more before the batch is sent.
    /// Default `"200ms"`.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long one POST may take, connecting included. Default `"5s"`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed POST before the batch is dropped. Default `5`.
    pub retries: u32,
    /// The pause before the first retry; it doubles for each further one. Default
    /// `"500ms"`.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest pause between retries. Default `"30s"`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: String::new(),
            secret: String::new(),
            secret_file: None,
            events: EVENT_NAMES.iter().map(|e| (*e).to_owned()).collect(),
            queue: 10_000,
            batch: 100,
            linger: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            retries: 5,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl WebhooksConfig {
    /// Whether webhooks are on (a `url` is set).
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}

/// Every problem of `[webhooks]`, as (dotted key, reason).
pub fn check(w: &WebhooksConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |key: &str, reason: String| out.push((format!("webhooks.{key}"), reason));
    if w.enabled() {
        if let Err(reason) = http_url(&w.url) {
            bad("url", reason);
        }
        if w.secret.is_empty() && w.secret_file.is_none() {
            bad(
                "secret",
                "is required with a url (or set secret_file)".to_owned(),
            );
        }
    }
    for (i, e) in w.events.iter().enumerate() {
        if !EVENT_NAMES.contains(&e.as_str()) {
            bad(
                &format!("events[{i}]"),
                format!("unknown event {e:?}; expected one of {EVENT_NAMES:?}"),
            );
        }
    }
    if !(1..=1_000_000).contains(&w.queue) {
        bad(
            "queue",
            format!("must be between 1 and 1000000, found {}", w.queue),
        );
    }
    if !(1..=10_000).contains(&w.batch) {
        bad(
            "batch",
            format!("must be between 1 and 10000, found {}", w.batch),
        );
    }
    if w.linger > Duration::from_secs(60) {
        bad("linger", "must be at most 60s".to_owned());
    }
    if w.timeout.is_zero() || w.timeout > Duration::from_secs(300) {
        bad("timeout", "must be between 1ms and 300s".to_owned());
    }
    if w.retries > 100 {
        bad(
            "retries",
            format!("must be at most 100, found {}", w.retries),
        );
    }
    if w.backoff.is_zero() || w.backoff > w.backoff_max {
        bad(
            "backoff",
            "must be more than 0 and at most backoff_max".to_owned(),
        );
    }
    if w.backoff_max > Duration::from_secs(3600) {
        bad("backoff_max", "must be at most 1h".to_owned());
    }
    out
}

/// The host, port and path of an `http://` URL, or why it is not one.
pub fn http_url(url: &str) -> Result<(String, u16, String), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("is not a URL ({e}): {url:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https:// is not supported (no TLS client in the daemon); use http:// to a local TLS proxy"
                    .to_owned(),
            );
        }
        _ => return Err(format!("must start with http://, found {url:?}")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("has no host: {url:?}"))?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials (user@); sign with the secret".to_owned());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("has no host: {url:?}"));
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok((host.to_owned(), authority.port_u16().unwrap_or(80), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let w = WebhooksConfig::default();
        assert!(!w.enabled());
        assert!(check(&w).is_empty());
    }

    #[test]
    fn a_url_needs_http_and_a_secret() {
        let w = WebhooksConfig {
            url: "https://example.com/hook".into(),
            ..WebhooksConfig::default()
        };
        let keys: Vec<String> = check(&w).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["webhooks.url", "webhooks.secret"]);
        let ok = WebhooksConfig {
            url: "http://127.0.0.1:8080/hook?x=1".into(),
            secret: "s".into(),
            ..WebhooksConfig::default()
        };
        assert!(check(&ok).is_empty());
        assert_eq!(
            http_url(&ok.url),
            Ok(("127.0.0.1".into(), 8080, "/hook?x=1".into()))
        );
        assert_eq!(http_url("http://[::1]"), Ok(("::1".into(), 80, "/".into())));
        assert!(http_url("http://u:p@h/").is_err());
        assert!(http_url("ftp://h/").is_err());
    }

    #[test]
    fn check_config_redacts_the_secret() {
        let config = crate::config::Config {
            webhooks: WebhooksConfig {
                url: "http://127.0.0.1:8080/".into(),
                secret: "hunter2-webhook".into(),
                ..WebhooksConfig::default()
            },
            ..crate::config::Config::default()
        };
        let text = crate::config::validate::render(&config);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("secret = \"<redacted>\""), "{text}");
    }

    #[test]
    fn unknown_events_and_zero_bounds_are_refused() {
        let w = WebhooksConfig {
            events: vec!["room.occupied".into(), "room.exploded".into()],
            queue: 0,
            batch: 0,
            ..WebhooksConfig::default()
        };
        let keys: Vec<String> = check(&w).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["webhooks.events[1]", "webhooks.queue", "webhooks.batch"]
        );
    }
}
