//! The configuration tree: every key the daemon understands, its type and its default.
//!
//! This module owns the *shape* of the config (serde structs with `deny_unknown_fields`)
//! and the built-in defaults. Loading the layers (defaults → file → profile → `IORELAY_*`
//! variables) lives in [`mod@load`]; checks that need more than a type (patterns compile, a
//! route's room is a valid name, limits within `max_payload`, …) live in [`validate`];
//! the `auth` tables of namespaces, their checks and reading their key files, in
//! [`auth`]; `[webhooks]` and its checks in [`webhooks`]; `[cluster]` in [`cluster`].
//! Nothing here knows about sockets or rooms; the relay reads these values.

pub mod auth;
pub mod cluster;
pub mod diff;
pub mod load;
pub mod render;
pub mod units;
pub mod validate;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, JwtConfig, UserFrom};
pub use cluster::ClusterConfig;
pub use load::{ConfigError, Environment, LoadOptions, Loaded, load};
pub use units::Size;
pub use webhooks::WebhooksConfig;

/// The whole effective configuration of one daemon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listeners, workers, privileges and shutdown.
    pub server: ServerConfig,
    /// Log format and filter.
    pub log: LogConfig,
    /// Engine.IO transport settings, shared by every namespace.
    pub engine: EngineConfig,
    /// Declared namespaces, keyed by name (`"/"`, `"/chat"`). When the config declares
    /// none, [`Config::effective_namespaces`] serves `/` with [`NamespaceConfig::default`].
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Who the admin listener answers (every route).
    pub admin: AdminConfig,
    /// The server API on the admin listener.
    pub api: ApiConfig,
    /// Room and membership events POSTed to a receiver.
    pub webhooks: WebhooksConfig,
    /// Other nodes, through Redis.
    pub cluster: ClusterConfig,
}

/// `[admin]`: the admin listener (`server.admin_listen`) as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Host names (no port, no scheme) that requests may carry in `Host` besides IP
    /// literals and `localhost`; any other `Host` is refused with 421 on every route, so
    /// that a web page cannot reach the listener through DNS rebinding. Default `[]`.
    pub allowed_hosts: Vec<String>,
}

/// `[api]`: the server API under `/api/v1/` on the admin listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Accepted bearer tokens (secrets). Default: none.
    pub tokens: Vec<String>,
    /// A file of further tokens, one a line (`#` starts a comment line), read at start
    /// and on every reload. Default: none.
    pub token_file: Option<PathBuf>,
    /// Largest request body; a larger one is answered 413. Default `"1MB"`.
    pub max_body: Size,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            token_file: None,
            max_body: Size(1_000_000),
        }
    }
}

impl Workers {
    /// How many worker processes to run: `auto` is the CPUs this process may use
    /// (affinity and cgroup quota respected), at most [`MAX_WORKERS`].
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n.clamp(1, MAX_WORKERS),
            Workers::Auto => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_WORKERS),
        }
    }
}

impl Config {
    /// The namespaces the relay serves: the declared ones, or the default `/` when the
    /// config declares none (so that a bare `cargo run` is useful).
    pub fn effective_namespaces(&self) -> BTreeMap<String, NamespaceConfig> {
        if self.namespaces.is_empty() {
            let mut map = BTreeMap::new();
            let mut ns = NamespaceConfig::default();
            // The implicit namespace follows a smaller engine.max_payload.
            ns.limits.max_event_size =
                Size(ns.limits.max_event_size.0.min(self.engine.max_payload.0));
            map.insert("/".to_owned(), ns);
            map
        } else {
            self.namespaces.clone()
        }
    }
}

/// `[server]`: the daemon's own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: `/socket.io/`, `/healthz`, static files. Default `127.0.0.1:3000`.
    pub listen: SocketAddr,
    /// Admin listener: health, readiness, metrics, server API. Default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// Worker processes: `"auto"` (one per usable CPU) or a number. Default `1`.
    pub workers: Workers,
    /// User to run as after binding when started as root. Default: none.
    pub user: Option<String>,
    /// Group to run as after binding when started as root. Default: the user's group.
    pub group: Option<String>,
    /// Directory of static files served on the public listener; none serves the built-in
    /// demo chat page. Default: none.
    pub static_dir: Option<PathBuf>,
    /// How long SIGTERM waits for clients to drain. Default `"10s"`.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most concurrent Engine.IO sessions on the host (shared out among the workers);
    /// further handshakes get 503. Default `100000`.
    pub max_connections: usize,
    /// Most concurrent sessions from one client address (IPv6: one /64), as read behind
    /// `trusted_proxies`; further handshakes get 503. Default `1000`.
    pub max_connections_per_ip: usize,
    /// Sustained handshakes per second from one client address. Default `50`.
    pub handshakes_per_ip_per_second: u32,
    /// Handshakes one client address may make in a burst above that rate. Default `200`.
    pub handshake_burst_per_ip: u32,
    /// Sustained events per second from one client address, all its connections and
    /// namespaces together (on top of each socket's `events_per_second`); events over it
    /// are refused as rate limited. Default `1000`.
    pub events_per_ip_per_second: u32,
    /// Events one client address may send in a burst above that rate. Default `2000`.
    pub event_burst_per_ip: u32,
    /// Most bytes of room history (`history` of the namespaces) one process keeps; past
    /// it the oldest events of the host go first. Default `"64MB"`.
    pub history_budget: Size,
    /// Most bytes of events one process keeps for connection state recovery (namespaces
    /// with `recovery`), and most dropped sockets it keeps (one per 2 KiB of it); past it
    /// the oldest go first, and a client that missed an event no longer kept is not
    /// recovered. Default `"64MB"`.
    pub recovery_budget: Size,
    /// Pages besides the server's own that may connect (the `Origin` of handshakes,
    /// WebSockets and polling; CORS for polling): exact origins
    /// (`"https://app.example.com"`), `"loopback"` (http(s) on localhost, 127.0.0.1 or
    /// [::1], any port) or `"*"`. Requests without `Origin` (non-browser clients) are
    /// always allowed. Default `[]`: same-origin only (the development profile sets
    /// `["loopback"]`).
    pub allowed_origins: Vec<String>,
    /// Peers (addresses or CIDR networks) whose `X-Forwarded-For` names the client, such
    /// as `["127.0.0.1/32", "10.0.0.0/8"]`. Default `[]`: nobody's; the TCP peer is the
    /// client.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers: Workers::Count(1),
            user: None,
            group: None,
            static_dir: None,
            shutdown_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            handshakes_per_ip_per_second: 50,
            handshake_burst_per_ip: 200,
            events_per_ip_per_second: 1000,
            event_burst_per_ip: 2000,
            history_budget: Size(64_000_000),
            recovery_budget: Size(64_000_000),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Most worker processes (session ids name their worker in one base64url character).
pub const MAX_WORKERS: usize = 64;

/// `workers = "auto"` or `workers = 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One worker per CPU this process may use.
    Auto,
    /// Exactly this many workers (at least one).
    Count(usize),
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `"text"` (human-readable) or `"json"` (one object per line). Default `"text"`.
    pub format: LogFormat,
    /// A tracing filter directive such as `"info"` or `"iorelay=debug"`; `RUST_LOG`
    /// overrides it. Default `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// `[engine]`: Engine.IO v4 settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Request path of the Socket.IO endpoint. Default `"/socket.io/"`.
    pub path: String,
    /// How often the server pings. Default `"25s"`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long after a ping is queued the pong must arrive. Default `"20s"`.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Largest polling request body or WebSocket message a client may send. Default `"1MB"`.
    pub max_payload: Size,
    /// How long a new connection may take to join its first namespace. Default `"45s"`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a binary packet may wait for its announced attachments before the
    /// connection is closed. Default `"30s"`.
    #[serde(with = "humantime_serde")]
    pub attachment_timeout: Duration,
    /// Most bytes of incomplete binary packets (attachments waiting for the rest of
    /// their packet) one worker holds for all its clients together; a client whose
    /// attachment would go over it is disconnected. Default `"256MB"`.
    pub pending_budget: Size,
    /// Most bytes one worker holds queued outbound for all its clients together (polling
    /// queues, and WebSocket output waiting for a socket the client does not read); the
    /// client whose message would go over it is disconnected as a slow consumer. Each
    /// client is bounded by `write_queue` too, but many slow clients add up. Default
    /// `"512MB"`.
    pub outbound_budget: Size,
    /// How long a polling POST body may take to arrive; only one POST per session is
    /// read at a time. Default `"30s"`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a polling → WebSocket upgrade may take once probed. Default `"10s"`.
    #[serde(with = "humantime_serde")]
    pub upgrade_timeout: Duration,
    /// Allowed transports. Default `["polling", "websocket"]`.
    pub transports: Vec<Transport>,
    /// Outgoing packets buffered per connection before it counts as a slow consumer and is
    /// disconnected. Default `1024`.
    pub write_queue: usize,
    /// Serve a bare Engine.IO echo server (every message sent back) at this path, for
    /// protocol conformance suites. Default: none.
    pub echo_path: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: Size(1_000_000),
            connect_timeout: Duration::from_secs(45),
            attachment_timeout: Duration::from_secs(30),
            pending_budget: Size(256_000_000),
            outbound_budget: Size(512_000_000),
            body_timeout: Duration::from_secs(30),
            upgrade_timeout: Duration::from_secs(10),
            transports: vec![Transport::Polling, Transport::Websocket],
            write_queue: 1024,
            echo_path: None,
        }
    }
}

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// `[namespaces."/name"]`: the relay policy of one namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    /// Field of the CONNECT `auth` payload used as the member's display name (`user`).
    /// Default `"name"`.
    pub user_field: String,
    /// Which rooms a client may join by itself. Default `"any"`.
    pub join: JoinPolicy,
    /// Where a client's application event goes. Default `"rooms"`.
    pub route: Route,
    /// Whether the sender also receives its own event. Default `false`.
    pub echo: bool,
    /// Whether room members receive `$presence` on joins and leaves. Default `true`.
    pub presence: bool,
    /// When set, every socket receives this event right after it connects, carrying its
    /// own CONNECT `auth` payload (`{}` when none). Default: none.
    pub greet: Option<String>,
    /// Whether the other sockets of the namespace receive `$presence` with `"room": null`
    /// when a socket connects or leaves, with the namespace's host-wide connection count.
    /// Default `false`.
    pub announce: bool,
    /// An event sent to each socket right after its CONNECT is answered, before anything
    /// relayed (unlike `greet`, fixed arguments from the config). Default: none.
    pub welcome: Option<Welcome>,
    /// What the relay appends, as one object argument, to each relayed application event
    /// (`"id"`, `"user"`, `"ip"`, `"time"`, `"origin"`). Default `[]` (nothing).
    pub meta: Vec<MetaField>,
    /// Which rooms `$members` lists the members (ids, names) of: `"joined"` (only rooms
    /// the asking socket is in), `"all"` (also any room it may `$join` by itself, so not
    /// with `join = "none"`) or `"none"`. Default `"joined"`.
    pub members: Listing,
    /// What `$rooms` lists, with member counts: `"all"` (every room of the namespace, as
    /// a rooms page needs), `"joined"` (only the asking socket's own rooms) or `"none"`.
    /// Default `"all"`.
    pub rooms: Listing,
    /// Size, rate and membership limits.
    pub limits: Limits,
    /// Per-event rules that override the namespace defaults, keyed by event name.
    pub events: BTreeMap<String, EventRule>,
    /// Who may connect and where the identity comes from. Default: anyone, the user
    /// from the CONNECT `auth` payload.
    pub auth: AuthConfig,
    /// Keep the last events relayed to each room (and to the whole namespace) for
    /// `$join` with `history`, `$history` and the server API. Default: none kept.
    pub history: Option<HistoryConfig>,
    /// Connection state recovery (the Socket.IO 4.6+ extension): the CONNECT answer
    /// carries a `pid`, relayed events carry an offset as their last argument, and a
    /// client that comes back within `max_disconnection` gets its id, rooms and every
    /// event it missed. Default: off.
    pub recovery: Option<RecoveryConfig>,
}

/// `recovery = { max_disconnection = "2m" }`: how long a dropped socket is kept for its
/// client to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Longest a client may stay away and still recover, 1s to 1h. Default `"2m"`.
    #[serde(with = "humantime_serde")]
    pub max_disconnection: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection: Duration::from_secs(120),
        }
    }
}

/// `history = { size = 100, ttl = "10m" }`: what a namespace keeps of its rooms' events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Most events kept per room, 1 to 10000. Default `100`.
    pub size: usize,
    /// Longest an event is kept, at most `"7d"`. Default `"10m"`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            size: 100,
            ttl: Duration::from_secs(600),
        }
    }
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            user_field: "name".to_owned(),
            join: JoinPolicy::Any,
            route: Route::Rooms,
            echo: false,
            presence: true,
            greet: None,
            announce: false,
            welcome: None,
            meta: Vec::new(),
            members: Listing::Joined,
            rooms: Listing::All,
            limits: Limits::default(),
            events: BTreeMap::new(),
            auth: AuthConfig::default(),
            history: None,
            recovery: None,
        }
    }
}

/// `welcome = { event = "…", args = [ … ] }`: the event each socket gets on connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The event name (not `$…`, not one the client reserves such as `connect`).
    /// Required.
    pub event: String,
    /// Its arguments, as JSON values (at most 16 KB once encoded). Default `[]`.
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
}

/// One field of the metadata object the relay appends to relayed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaField {
    /// The sender's socket id.
    Id,
    /// The sender's display name (`null` without one).
    User,
    /// The sender's address as the relay resolved it (`trusted_proxies` applied).
    Ip,
    /// When the relay received the event, in milliseconds since the Unix epoch.
    Time,
    /// The `Origin` header of the sender's handshake (`null` without one).
    Origin,
}

/// What a client may list with `$members` or `$rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listing {
    /// Any room of the namespace (for `$members`: any the client may `$join`).
    All,
    /// Only the rooms the asking socket is in.
    Joined,
    /// Nothing: the listing is refused.
    None,
}

/// Which rooms a client may join with `$join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinPolicy {
    /// No room: only backends place sockets in rooms.
    None,
    /// Any room name.
    Any,
    /// Names matching this regular expression (anchored: the whole name must match).
    Pattern(String),
    /// The rooms the socket's verified JWT allows (`auth.jwt.rooms_claim`); none
    /// without a token.
    Claims,
}

/// Where an application event goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// The other members of every room the sender joined.
    Rooms,
    /// Every other socket of the namespace.
    Namespace,
    /// The members of one fixed room (fan-in, e.g. pages → dashboard).
    Room(String),
    /// Back to the sender only.
    Sender,
    /// Nowhere, and refused: clients may not emit; only backends publish.
    None,
    /// Accepted (and acked) but delivered to no one: for events that exist only for their
    /// ack reply.
    Discard,
}

/// What the ack of an accepted application event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckReply {
    /// `{"ok":true}`.
    Status,
    /// The event's own arguments, verbatim (binary attachments included).
    Echo,
}

/// `[namespaces."/name".events."event"]`: overrides for one event name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventRule {
    /// Target instead of the namespace's `route`. Default: the namespace's.
    pub route: Option<Route>,
    /// Deliver under this event name instead. Default: the same name.
    pub rename: Option<String>,
    /// Echo to the sender instead of the namespace's `echo`. Default: the namespace's.
    pub echo: Option<bool>,
    /// What the ack carries. Default `"status"`.
    pub ack: AckReply,
    /// Metadata appended instead of the namespace's `meta` (`[]` for none). Default:
    /// the namespace's.
    pub meta: Option<Vec<MetaField>>,
}

impl Default for EventRule {
    fn default() -> Self {
        EventRule {
            route: None,
            rename: None,
            echo: None,
            ack: AckReply::Status,
            meta: None,
        }
    }
}

/// `[namespaces."/name".limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest application event (JSON text plus binary attachments). Default `"64KB"`.
    pub max_event_size: Size,
    /// Most rooms one socket may be in. Default `32`.
    pub max_rooms: usize,
    /// Sustained events per second per socket (control events included). Default `50`.
    pub events_per_second: u32,
    /// Events a socket may send in a burst above the sustained rate. Default `100`.
    pub burst: u32,
    /// Most binary attachments in one packet. Default `10`.
    pub max_attachments: usize,
    /// Longest room name, in bytes. Default `128`.
    pub max_room_name: usize,
    /// Deepest nesting of arrays and objects in an event's arguments (the arguments
    /// array itself is level 1): deeper events are refused, never relayed to clients
    /// whose JSON parsers have recursion limits. Default `32`.
    pub max_depth: usize,
    /// Largest CONNECT `auth` payload, which a socket keeps for its life (a token, a
    /// name): a larger one is refused with CONNECT_ERROR. Default `"8KB"`.
    pub max_auth_size: Size,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_size: Size(64_000),
            max_rooms: 32,
            events_per_second: 50,
            burst: 100,
            max_attachments: 10,
            max_room_name: 128,
            max_depth: 32,
            max_auth_size: Size(8_000),
        }
    }
}
