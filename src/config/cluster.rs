//! `[cluster]`: whether this node shares its rooms with other nodes through Redis, where
//! that Redis is, and the bounds of the requests between nodes.
//!
//! This module owns the shape of those keys and their checks ([`check`]); connecting,
//! the channels and the messages are the `cluster` module's.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How nodes share rooms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    /// This node alone (its workers share rooms with each other only).
    #[default]
    None,
    /// Redis pub/sub, in the format of `@socket.io/redis-adapter` 8.x.
    Redis,
    /// A Redis stream (broadcasts, joins, leaves, disconnects) and pub/sub (requests and
    /// their answers), in the format of `@socket.io/redis-streams-adapter` 0.3.x.
    RedisStreams,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `"none"`, `"redis"` or `"redis-streams"`. Default `"none"`.
    pub adapter: AdapterKind,
    /// The Redis server: `redis://[:password@]host[:port][/db]`, `rediss://…` for TLS
    /// (verified against `ca_file`, else the system's CA certificates), or
    /// `redis+unix:///path`.
    /// Default `"redis://127.0.0.1:6379"`.
    pub url: String,
    /// A file holding the Redis password (surrounding whitespace trimmed), read at
    /// start; wins over a password in `url`. Default: none.
    pub password_file: Option<PathBuf>,
    /// `rediss://`: a PEM file of the CA certificates that may sign the Redis server's
    /// certificate (a private CA), read at start, in place of the system's. Default:
    /// none (the system's CA certificates).
    pub ca_file: Option<PathBuf>,
    /// `rediss://` to a Redis with `tls-auth-clients yes`: this node's certificate (PEM,
    /// the chain after it if any), read at start; needs `client_key_file`. Default: none.
    pub client_cert_file: Option<PathBuf>,
    /// The private key of `client_cert_file` (PEM: PKCS#8, PKCS#1 or SEC1), read at
    /// start. Default: none.
    pub client_key_file: Option<PathBuf>,
    /// The prefix of every channel, as the Node adapter's `key` option (the streams
    /// adapter's `channelPrefix`): nodes and emitters share a cluster only with the same
    /// key. Default `"socket.io"`.
    pub key: String,
    /// `redis-streams`: the stream every node writes and reads, as the Node adapter's
    /// `streamName`. Default `"socket.io"`.
    pub stream_name: String,
    /// `redis-streams`: the stream is trimmed to about this many entries on each write
    /// (`XADD MAXLEN ~`), as the Node adapter's `maxLen`; a node that falls further
    /// behind (or is away longer) misses the oldest. Default `10000`.
    pub max_len: u64,
    /// `redis-streams`: most entries read at once (`XREAD COUNT`), as the Node
    /// adapter's `readCount`. Default `100`.
    pub read_count: u64,
    /// `redis-streams`: how long one read waits for new entries (`XREAD BLOCK`), as the
    /// Node adapter's `blockTimeInMs`. Default `"5s"`.
    #[serde(with = "humantime_serde")]
    pub block_time: Duration,
    /// How long a request to the other nodes (all rooms, fetch sockets) waits for their
    /// answers, as the Node adapter's `requestsTimeout`. Default `"5s"`.
    #[serde(with = "humantime_serde")]
    pub requests_timeout: Duration,
    /// The largest message read from Redis; larger ones are dropped, logged and
    /// counted. Default `"16MiB"`.
    pub max_message: bytesize::ByteSize,
    /// How often this node tells the other iorelay nodes it is alive (cluster-wide
    /// presence), as the Node adapters' `heartbeatInterval`. Default `"5s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long another iorelay node may stay silent before its members are dropped
    /// (their leaves announced), as the Node adapters' `heartbeatTimeout`; more than
    /// `heartbeat_interval`. Default `"10s"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            adapter: AdapterKind::None,
            url: "redis://127.0.0.1:6379".to_owned(),
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            key: "socket.io".to_owned(),
            stream_name: "socket.io".to_owned(),
            max_len: 10_000,
            read_count: 100,
            block_time: Duration::from_secs(5),
            requests_timeout: Duration::from_secs(5),
            max_message: bytesize::ByteSize::mib(16),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.adapter != AdapterKind::None
    }
}

/// The URL schemes the Redis client understands.
const SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];

/// Every broken rule of `[cluster]`, as (key, reason).
pub fn check(c: &ClusterConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !SCHEMES.iter().any(|s| c.url.starts_with(s)) {
        out.push((
            "cluster.url".to_owned(),
            format!("must start with one of {}", SCHEMES.join(", ")),
        ));
    } else if let Err(e) = redis::IntoConnectionInfo::into_connection_info(c.url.as_str()) {
        out.push(("cluster.url".to_owned(), format!("not a Redis URL: {e}")));
    }
    check_tls(c, &mut out);
    if c.key.is_empty() || c.key.len() > 256 || c.key.contains('#') {
        out.push((
            "cluster.key".to_owned(),
            "must be 1 to 256 bytes without '#'".to_owned(),
        ));
    }
    if c.stream_name.is_empty() || c.stream_name.len() > 256 {
        out.push((
            "cluster.stream_name".to_owned(),
            "must be 1 to 256 bytes".to_owned(),
        ));
    }
    if !(1..=100_000_000).contains(&c.max_len) {
        out.push((
            "cluster.max_len".to_owned(),
            "must be between 1 and 100000000".to_owned(),
        ));
    }
    if !(1..=10_000).contains(&c.read_count) {
        out.push((
            "cluster.read_count".to_owned(),
            "must be between 1 and 10000".to_owned(),
        ));
    }
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&c.block_time) {
        out.push((
            "cluster.block_time".to_owned(),
            "must be between 10ms and 60s".to_owned(),
        ));
    }
    let timeout = c.requests_timeout;
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
        out.push((
            "cluster.requests_timeout".to_owned(),
            "must be between 100ms and 60s".to_owned(),
        ));
    }
    if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&c.heartbeat_interval) {
        out.push((
            "cluster.heartbeat_interval".to_owned(),
            "must be between 50ms and 60s".to_owned(),
        ));
    }
    if c.heartbeat_timeout <= c.heartbeat_interval || c.heartbeat_timeout > Duration::from_secs(600)
    {
        out.push((
            "cluster.heartbeat_timeout".to_owned(),
            "must be more than cluster.heartbeat_interval and at most 10min".to_owned(),
        ));
    }
    let max = c.max_message.as_u64();
    if !(1024..=512 * 1024 * 1024).contains(&max) {
        out.push((
            "cluster.max_message".to_owned(),
            "must be between 1KiB and 512MiB".to_owned(),
        ));
    }
    out
}

/// The TLS keys need a `rediss://` URL, and a client certificate its key (and the other
/// way round). Whether the files hold what they should is checked when they are read
/// (`cluster::redis::tls`), at start and by `check-config`.
fn check_tls(c: &ClusterConfig, out: &mut Vec<(String, String)>) {
    let files = [
        ("cluster.ca_file", &c.ca_file),
        ("cluster.client_cert_file", &c.client_cert_file),
        ("cluster.client_key_file", &c.client_key_file),
    ];
    for (key, file) in files {
        if file.is_some() && !c.url.starts_with("rediss://") {
            out.push((
                key.to_owned(),
                "is for TLS: it needs a rediss:// cluster.url".to_owned(),
            ));
        }
    }
    match (&c.client_cert_file, &c.client_key_file) {
        (Some(_), None) => out.push((
            "cluster.client_key_file".to_owned(),
            "must be set with cluster.client_cert_file (the certificate's private key)".to_owned(),
        )),
        (None, Some(_)) => out.push((
            "cluster.client_cert_file".to_owned(),
            "must be set with cluster.client_key_file (the key's certificate)".to_owned(),
        )),
        _ => {}
    }
}

/// `url` with its password (if any) replaced by `mask`, for `check-config`.
pub fn masked_url(url: &str, mask: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.split_once(':') {
        Some((user, pass)) if !pass.is_empty() => user,
        _ => return url.to_owned(),
    };
    format!("{scheme}://{user}:{mask}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_off_and_valid() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert!(check(&c).is_empty());
        let streams: ClusterConfig =
            toml::from_str("adapter = \"redis-streams\"\nblock_time = \"2s\"").unwrap();
        assert_eq!(streams.adapter, AdapterKind::RedisStreams);
        assert_eq!(streams.block_time, Duration::from_secs(2));
        assert!(check(&streams).is_empty());
    }

    #[test]
    fn bad_urls_keys_and_bounds_are_named() {
        let c = ClusterConfig {
            adapter: AdapterKind::Redis,
            url: "http://x".to_owned(),
            key: "a#b".to_owned(),
            stream_name: String::new(),
            max_len: 0,
            read_count: 0,
            block_time: Duration::ZERO,
            requests_timeout: Duration::from_millis(1),
            max_message: bytesize::ByteSize(10),
            ..ClusterConfig::default()
        };
        let keys: Vec<String> = check(&c).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "cluster.url",
                "cluster.key",
                "cluster.stream_name",
                "cluster.max_len",
                "cluster.read_count",
                "cluster.block_time",
                "cluster.requests_timeout",
                "cluster.max_message"
            ]
        );
    }

    #[test]
    fn tls_files_need_rediss_and_come_in_pairs() {
        let tls = |url: &str, ca: bool, cert: bool, key: bool| ClusterConfig {
            adapter: AdapterKind::Redis,
            url: url.to_owned(),
            ca_file: ca.then(|| PathBuf::from("/etc/iorelay/redis-ca.pem")),
            client_cert_file: cert.then(|| PathBuf::from("/etc/iorelay/redis-client.pem")),
            client_key_file: key.then(|| PathBuf::from("/etc/iorelay/redis-client.key")),
            ..ClusterConfig::default()
        };
        let keys =
            |c: &ClusterConfig| -> Vec<String> { check(c).into_iter().map(|(k, _)| k).collect() };
        assert!(check(&tls("rediss://10.0.0.5:6380", true, true, true)).is_empty());
        assert!(check(&tls("rediss://10.0.0.5:6380", true, false, false)).is_empty());
        assert_eq!(
            keys(&tls("redis://10.0.0.5:6379", true, true, true)),
            [
                "cluster.ca_file",
                "cluster.client_cert_file",
                "cluster.client_key_file"
            ]
        );
        let problems = check(&tls("redis+unix:///run/redis.sock", true, false, false));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("rediss://"), "{problems:?}");
        assert_eq!(
            keys(&tls("rediss://h", false, true, false)),
            ["cluster.client_key_file"]
        );
        assert_eq!(
            keys(&tls("rediss://h", false, false, true)),
            ["cluster.client_cert_file"]
        );
        let from_toml: ClusterConfig = toml::from_str(
            "url = \"rediss://h:6380\"\nca_file = \"/etc/ca.pem\"\nclient_cert_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"",
        )
        .unwrap();
        assert_eq!(from_toml.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(check(&from_toml).is_empty());
    }

    #[test]
    fn the_heartbeat_deadline_must_exceed_its_interval() {
        let toml = "heartbeat_interval = \"2s\"\nheartbeat_timeout = \"2s\"";
        let c: ClusterConfig = toml::from_str(toml).unwrap();
        let keys: Vec<String> = check(&c).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["cluster.heartbeat_timeout"]);
        let c = ClusterConfig {
            heartbeat_interval: Duration::from_millis(1),
            heartbeat_timeout: Duration::from_secs(3600),
            ..ClusterConfig::default()
        };
        let keys: Vec<String> = check(&c).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["cluster.heartbeat_interval", "cluster.heartbeat_timeout"]
        );
        assert_eq!(
            ClusterConfig::default().heartbeat_timeout,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_password_in_the_url_is_masked() {
        assert_eq!(
            masked_url("redis://:s3cret@h:6379/0", "<redacted>"),
            "redis://:<redacted>@h:6379/0"
        );
        assert_eq!(masked_url("rediss://app:pw@h", "*"), "rediss://app:*@h");
        assert_eq!(masked_url("redis://h:6379", "*"), "redis://h:6379");
        assert_eq!(masked_url("redis://user@h", "*"), "redis://user@h");
    }

    #[test]
    fn check_config_prints_the_url_without_its_password() {
        let mut config = crate::config::Config::default();
        config.cluster.url = "redis://:hunter2@10.0.0.5:6379/1".to_owned();
        let text = crate::config::render::render(&config);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("redis://:<redacted>@10.0.0.5:6379/1"),
            "{text}"
        );
    }
}
