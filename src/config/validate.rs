//! Checks that a well-typed [`Config`] makes sense (its rendering for
//! `iorelay check-config` is [`render`](super::render), re-exported here).
//!
//! Types already rule out most mistakes (serde refuses unknown keys, bad sizes, bad
//! durations); what is left here are rules on values and between keys: a zero timeout, a
//! pattern that does not compile, a route to a room name no client could join, an event
//! limit above the transport's. [`validate`] reports every broken rule at once, so that an
//! operator fixes a file in one pass. Nothing here reads files or the environment.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

pub use super::render::{REDACTED, SECRET_KEYS, render};
use super::{Config, EventRule, JoinPolicy, Limits, Listing, NamespaceConfig, Route, Size};

/// One broken rule: the dotted key it is about and why, in words an operator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, as in the file: `engine.ping_interval`, `namespaces./chat.route.room`.
    pub key: String,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl Problem {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// The smallest `engine.max_payload`: below it ordinary client messages (a CONNECT with
/// a token, a short chat line in a polling batch) would be refused.
const MIN_MAX_PAYLOAD: Size = Size(1_000);
/// The longest `server.shutdown_timeout`: a drain longer than this is a hung stop.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest `limits.max_room_name` (bytes).
const MAX_ROOM_NAME: usize = 1024;
/// The largest `limits.max_depth`.
const MAX_DEPTH: usize = 128;
/// The largest `limits.max_attachments`.
const MAX_ATTACHMENTS: usize = 1000;

/// Checks every rule and returns every broken one, in the order of the keys in the file.
/// The namespaces checked are [`Config::effective_namespaces`], so that the implicit `/`
/// served by a config without namespaces is held to the same limits.
pub fn validate(c: &Config) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    check_integers(c, &mut problems);
    check_server(c, &mut problems);
    check_origins_and_proxies(c, &mut problems);
    check_engine(c, &mut problems);
    check_admin(c, &mut problems);
    check_api(c, &mut problems);
    for (key, reason) in super::webhooks::check(&c.webhooks) {
        problems.push(Problem::new(key, reason));
    }
    for (key, reason) in super::cluster::check(&c.cluster) {
        problems.push(Problem::new(key, reason));
    }
    if c.cluster.enabled() {
        // Channels are `<key>#<namespace>#…`: a `#` in a name would make one
        // namespace's channels another's.
        for name in c.effective_namespaces().keys().filter(|n| n.contains('#')) {
            problems.push(Problem::new(
                format!("namespaces.{name}"),
                "a namespace name may not hold '#' with a [cluster] adapter".to_owned(),
            ));
        }
    }
    for (name, ns) in &c.effective_namespaces() {
        check_namespace(c, name, ns, &mut problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every integer must fit the config file's own type (TOML integers are `i64`): an
/// `IORELAY_*` variable can carry a larger one (`18446744073709551615` into a `usize`),
/// which no file could hold and which [`render`] could not print (`check-config` would
/// panic). Walks the whole tree, so that a key added later is covered too.
fn check_integers(c: &Config, out: &mut Vec<Problem>) {
    fn walk(key: &mut String, value: &serde_json::Value, out: &mut Vec<Problem>) {
        let len = key.len();
        match value {
            serde_json::Value::Number(n) if n.is_u64() && n.as_i64().is_none() => {
                out.push(Problem::new(
                    key.clone(),
                    format!(
                        "is {n}, over the largest integer a config file can hold ({})",
                        i64::MAX
                    ),
                ));
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    key.push_str(&format!("[{i}]"));
                    walk(key, item, out);
                    key.truncate(len);
                }
            }
            serde_json::Value::Object(fields) => {
                for (name, field) in fields {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(name);
                    walk(key, field, out);
                    key.truncate(len);
                }
            }
            _ => {}
        }
    }
    // Serializing the tree cannot fail (string keys only); if it ever did, `render`
    // would say so, and there is nothing to walk.
    if let Ok(tree) = serde_json::to_value(c) {
        walk(&mut String::new(), &tree, out);
    }
}

fn check_server(c: &Config, out: &mut Vec<Problem>) {
    let s = &c.server;
    if s.user.as_deref() == Some("") {
        out.push(Problem::new(
            "server.user",
            "must not be empty; leave it out to run as the starting user",
        ));
    }
    match s.group.as_deref() {
        Some("") => out.push(Problem::new(
            "server.group",
            "must not be empty; leave it out to use the user's group",
        )),
        Some(_) if s.user.is_none() => out.push(Problem::new(
            "server.group",
            "is set without server.user; the group is taken on when dropping privileges to a user",
        )),
        _ => {}
    }
    if s.shutdown_timeout > MAX_SHUTDOWN_TIMEOUT {
        out.push(Problem::new(
            "server.shutdown_timeout",
            format!(
                "must be at most 1h, found {}",
                humantime::format_duration(s.shutdown_timeout)
            ),
        ));
    }
    if let crate::config::Workers::Count(n) = s.workers
        && n > crate::config::MAX_WORKERS
    {
        out.push(Problem::new(
            "server.workers",
            format!(
                "at most {} (session ids name their worker in one character)",
                crate::config::MAX_WORKERS
            ),
        ));
    }
    if s.max_connections == 0 {
        out.push(Problem::new("server.max_connections", "must be at least 1"));
    }
    let per_ip = [
        (
            "server.max_connections_per_ip",
            s.max_connections_per_ip as u64,
        ),
        (
            "server.handshakes_per_ip_per_second",
            s.handshakes_per_ip_per_second.into(),
        ),
        (
            "server.handshake_burst_per_ip",
            s.handshake_burst_per_ip.into(),
        ),
        (
            "server.events_per_ip_per_second",
            s.events_per_ip_per_second.into(),
        ),
        ("server.event_burst_per_ip", s.event_burst_per_ip.into()),
    ];
    for (key, value) in per_ip {
        if value == 0 {
            out.push(Problem::new(key, "must be at least 1"));
        }
    }
}

/// Largest `api.max_body`.
const MAX_API_BODY: u64 = 64 << 20;

fn check_admin(c: &Config, out: &mut Vec<Problem>) {
    for (i, entry) in c.admin.allowed_hosts.iter().enumerate() {
        if let Err(e) = crate::http::host::Hosts::parse(std::slice::from_ref(entry)) {
            out.push(Problem::new(
                format!("admin.allowed_hosts[{i}]"),
                e.to_string(),
            ));
        }
    }
}

fn check_api(c: &Config, out: &mut Vec<Problem>) {
    // The token file is read where it is used (at start and on reload), not here: the
    // check must not depend on who runs it.
    if let Err(crate::api::tokens::Error::Bad { place, reason }) =
        crate::api::Tokens::load(&c.api.tokens, None)
    {
        out.push(Problem::new(place, reason));
    }
    let body = c.api.max_body.bytes();
    if !(1024..=MAX_API_BODY).contains(&body) {
        out.push(Problem::new(
            "api.max_body",
            format!("must be between 1KB and 64MiB, found {}", c.api.max_body),
        ));
    }
}

/// `server.allowed_origins` and `server.trusted_proxies`, read by the engine's own
/// parsers so that what passes here is what the engine runs with.
fn check_origins_and_proxies(c: &Config, out: &mut Vec<Problem>) {
    for (i, entry) in c.server.allowed_origins.iter().enumerate() {
        if let Err(e) = crate::engine::Origins::parse(std::slice::from_ref(entry)) {
            out.push(Problem::new(
                format!("server.allowed_origins[{i}]"),
                e.to_string(),
            ));
        }
    }
    for (i, entry) in c.server.trusted_proxies.iter().enumerate() {
        if let Err(e) = crate::engine::TrustedProxies::parse(std::slice::from_ref(entry)) {
            out.push(Problem::new(
                format!("server.trusted_proxies[{i}]"),
                e.to_string(),
            ));
        }
    }
}

fn check_engine(c: &Config, out: &mut Vec<Problem>) {
    let e = &c.engine;
    check_path("engine.path", &e.path, out);
    positive("engine.ping_interval", e.ping_interval, out);
    positive("engine.ping_timeout", e.ping_timeout, out);
    if e.max_payload < MIN_MAX_PAYLOAD {
        out.push(Problem::new(
            "engine.max_payload",
            format!(
                "must be at least {MIN_MAX_PAYLOAD}, found {}",
                e.max_payload
            ),
        ));
    }
    positive("engine.connect_timeout", e.connect_timeout, out);
    positive("engine.attachment_timeout", e.attachment_timeout, out);
    if e.pending_budget < e.max_payload {
        out.push(Problem::new(
            "engine.pending_budget",
            format!(
                "is {}, under engine.max_payload ({}); one honest binary event could not arrive",
                e.pending_budget, e.max_payload
            ),
        ));
    }
    if e.outbound_budget < e.max_payload {
        out.push(Problem::new(
            "engine.outbound_budget",
            format!(
                "is {}, under engine.max_payload ({}); one honest message could not be queued",
                e.outbound_budget, e.max_payload
            ),
        ));
    }
    positive("engine.body_timeout", e.body_timeout, out);
    positive("engine.upgrade_timeout", e.upgrade_timeout, out);
    if e.transports.is_empty() {
        out.push(Problem::new(
            "engine.transports",
            "must list at least one of \"polling\", \"websocket\"",
        ));
    }
    let mut seen = HashSet::new();
    for t in &e.transports {
        if !seen.insert(t) {
            let name = format!("{t:?}").to_ascii_lowercase();
            out.push(Problem::new(
                "engine.transports",
                format!("lists \"{name}\" more than once"),
            ));
        }
    }
    if e.write_queue == 0 {
        out.push(Problem::new("engine.write_queue", "must be at least 1"));
    }
    if let Some(echo) = &e.echo_path {
        check_path("engine.echo_path", echo, out);
        if *echo == e.path {
            out.push(Problem::new(
                "engine.echo_path",
                format!("must differ from engine.path ({:?})", e.path),
            ));
        }
    }
}

fn check_path(key: &str, path: &str, out: &mut Vec<Problem>) {
    if !path.starts_with('/') || !path.ends_with('/') {
        out.push(Problem::new(
            key,
            format!("must start and end with '/', found {path:?}"),
        ));
    }
}

fn positive(key: &str, d: Duration, out: &mut Vec<Problem>) {
    if d.is_zero() {
        out.push(Problem::new(key, "must be greater than 0"));
    }
}

fn check_namespace(c: &Config, name: &str, ns: &NamespaceConfig, out: &mut Vec<Problem>) {
    let key = format!("namespaces.{name}");
    if !name.starts_with('/') {
        out.push(Problem::new(&key, "a namespace name must start with '/'"));
    }
    if name.contains(',') {
        // The Socket.IO packet encoding ends a namespace at the first ','.
        out.push(Problem::new(&key, "a namespace name must not contain ','"));
    }
    if ns.user_field.is_empty() {
        out.push(Problem::new(
            format!("{key}.user_field"),
            "must not be empty",
        ));
    }
    if let JoinPolicy::Pattern(pattern) = &ns.join {
        if let Err(reason) = check_pattern(pattern) {
            out.push(Problem::new(format!("{key}.join.pattern"), reason));
        }
    }
    check_route(&format!("{key}.route"), &ns.route, &ns.limits, out);
    if let Some(greet) = &ns.greet {
        check_event_name(&format!("{key}.greet"), greet, out);
    }
    if let Some(welcome) = &ns.welcome {
        check_welcome(&format!("{key}.welcome"), welcome, out);
    }
    if ns.members == Listing::All && ns.join == JoinPolicy::None {
        // "all" reaches the rooms a client may enter by itself; with no such room it
        // would silently mean "joined".
        out.push(Problem::new(
            format!("{key}.members"),
            "\"all\" lists the rooms a client may $join, and join = \"none\" allows none; use \"joined\" (or a join policy)",
        ));
    }
    check_limits(c, &key, &ns.limits, out);
    if let Some(history) = &ns.history {
        if !(1..=10_000).contains(&history.size) {
            out.push(Problem::new(
                format!("{key}.history.size"),
                "must be 1 to 10000",
            ));
        }
        if history.ttl.is_zero() || history.ttl > Duration::from_secs(7 * 24 * 3600) {
            out.push(Problem::new(
                format!("{key}.history.ttl"),
                "must be more than 0s and at most 7d",
            ));
        }
    }
    if let Some(recovery) = &ns.recovery
        && !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&recovery.max_disconnection)
    {
        out.push(Problem::new(
            format!("{key}.recovery.max_disconnection"),
            "must be 1s to 1h",
        ));
    }
    let claims_join = ns.join == JoinPolicy::Claims;
    let mut auth = Vec::new();
    super::auth::check(&format!("{key}.auth"), &ns.auth, claims_join, &mut auth);
    out.extend(auth.into_iter().map(|p| Problem::new(p.key, p.reason)));
    for (event, rule) in &ns.events {
        check_rule(&key, event, rule, &ns.limits, out);
    }
}

/// Compiles `pattern` the way the relay matches it: against the whole room name.
fn check_pattern(pattern: &str) -> Result<(), String> {
    // The bare pattern first, so that a syntax error quotes the operator's own text.
    let anchored = format!("^(?:{pattern})$");
    match regex::Regex::new(pattern).and_then(|_| regex::Regex::new(&anchored)) {
        Ok(_) => Ok(()),
        Err(regex::Error::Syntax(text)) => {
            // regex draws the pattern over several lines and ends with "error: <why>".
            let why = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or("syntax error");
            Err(format!("is not a valid regular expression: {why}"))
        }
        Err(regex::Error::CompiledTooBig(limit)) => Err(format!(
            "is too large once compiled (over {limit} bytes); use a simpler pattern"
        )),
        Err(other) => Err(format!("is not a valid regular expression: {other}")),
    }
}

fn check_route(key: &str, route: &Route, limits: &Limits, out: &mut Vec<Problem>) {
    let Route::Room(room) = route else { return };
    let key = format!("{key}.room");
    if room.is_empty() {
        out.push(Problem::new(key, "must not be empty"));
    } else if room.starts_with('$') {
        out.push(Problem::new(
            key,
            "must not start with '$' (reserved for the relay's own names)",
        ));
    } else if room.len() > limits.max_room_name {
        out.push(Problem::new(
            key,
            format!(
                "is {} bytes long, over this namespace's limits.max_room_name ({})",
                room.len(),
                limits.max_room_name
            ),
        ));
    }
}

/// An event name the relay sends or accepts from clients: `$` names are its control
/// events, which an application event must never shadow.
fn check_event_name(key: &str, name: &str, out: &mut Vec<Problem>) {
    if name.is_empty() {
        out.push(Problem::new(key, "must not be empty"));
    } else if name.starts_with('$') {
        out.push(Problem::new(
            key,
            "must not start with '$' (reserved for the relay's control events)",
        ));
    }
}

/// The most a `welcome`'s arguments may take once encoded.
pub const MAX_WELCOME_ARGS: usize = 16 * 1024;

fn check_welcome(key: &str, welcome: &super::Welcome, out: &mut Vec<Problem>) {
    let event_key = format!("{key}.event");
    if crate::socketio::packet::RESERVED_EVENTS.contains(&welcome.event.as_str()) {
        out.push(Problem::new(
            event_key,
            format!("{:?} is reserved by the socket.io client", welcome.event),
        ));
    } else {
        check_event_name(&event_key, &welcome.event, out);
    }
    let size = serde_json::to_string(&welcome.args).map_or(usize::MAX, |s| s.len());
    if size > MAX_WELCOME_ARGS {
        out.push(Problem::new(
            format!("{key}.args"),
            format!("take {size} bytes encoded, over {MAX_WELCOME_ARGS}"),
        ));
    }
}

fn check_rule(
    ns_key: &str,
    event: &str,
    rule: &EventRule,
    limits: &Limits,
    out: &mut Vec<Problem>,
) {
    let key = if event.is_empty() {
        format!("{ns_key}.events.\"\"")
    } else {
        format!("{ns_key}.events.{event}")
    };
    if event.is_empty() {
        out.push(Problem::new(&key, "an event name must not be empty"));
    } else if event.starts_with('$') {
        out.push(Problem::new(
            &key,
            "an event name must not start with '$' (reserved for the relay's control events)",
        ));
    }
    if let Some(route) = &rule.route {
        check_route(&format!("{key}.route"), route, limits, out);
    }
    if let Some(rename) = &rule.rename {
        check_event_name(&format!("{key}.rename"), rename, out);
    }
}

fn check_limits(c: &Config, ns_key: &str, l: &Limits, out: &mut Vec<Problem>) {
    let key = |field: &str| format!("{ns_key}.limits.{field}");
    if l.max_event_size.bytes() == 0 {
        out.push(Problem::new(
            key("max_event_size"),
            "must be at least 1 byte",
        ));
    } else if l.max_event_size > c.engine.max_payload {
        out.push(Problem::new(
            key("max_event_size"),
            format!(
                "is {}, over engine.max_payload ({}); no such event could arrive",
                l.max_event_size, c.engine.max_payload
            ),
        ));
    }
    if l.events_per_second == 0 {
        out.push(Problem::new(key("events_per_second"), "must be at least 1"));
    }
    if l.burst == 0 {
        out.push(Problem::new(key("burst"), "must be at least 1"));
    }
    if !(1..=MAX_ROOM_NAME).contains(&l.max_room_name) {
        out.push(Problem::new(
            key("max_room_name"),
            format!(
                "must be between 1 and {MAX_ROOM_NAME}, found {}",
                l.max_room_name
            ),
        ));
    }
    if l.max_attachments > MAX_ATTACHMENTS {
        out.push(Problem::new(
            key("max_attachments"),
            format!(
                "must be at most {MAX_ATTACHMENTS}, found {}",
                l.max_attachments
            ),
        ));
    }
    if !(2..=MAX_DEPTH).contains(&l.max_depth) {
        out.push(Problem::new(
            key("max_depth"),
            format!("must be between 2 and {MAX_DEPTH}, found {}", l.max_depth),
        ));
    }
    if l.max_auth_size.0 < 2 {
        out.push(Problem::new(
            key("max_auth_size"),
            "must be at least 2 bytes (an empty `{}`)",
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::config::{AckReply, Transport};

    /// Seen with the `config_load` fuzz target: `IORELAY_SERVER__MAX_CONNECTIONS=18446744073709551615`
    /// loaded, then `check-config` panicked in [`render`] ("u64 value was too large").
    #[test]
    fn an_integer_no_config_file_could_hold_is_refused_with_its_key() {
        let mut c = Config::default();
        c.server.max_connections = usize::MAX;
        c.namespaces.insert(
            "/".to_owned(),
            NamespaceConfig {
                welcome: Some(crate::config::Welcome {
                    event: "hello".to_owned(),
                    args: vec![serde_json::json!({"n": [1, u64::MAX]})],
                }),
                ..NamespaceConfig::default()
            },
        );
        let problems = validate(&c).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.max_connections",
                "namespaces./.welcome.args[0].n[1]"
            ],
            "{problems:?}"
        );
        assert!(problems[0].reason.contains("9223372036854775807"));
        // What still validates renders.
        c.server.max_connections = i64::MAX as usize;
        c.namespaces.clear();
        assert!(validate(&c).is_ok());
        assert!(render(&c).contains("max_connections = 9223372036854775807"));
    }

    fn keys(c: &Config) -> Vec<String> {
        match validate(c) {
            Ok(()) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&Config::default()), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = Config::default();
        c.engine.ping_interval = Duration::ZERO;
        c.engine.ping_timeout = Duration::ZERO;
        c.engine.max_payload = Size(999);
        c.engine.write_queue = 0;
        c.engine.transports = vec![Transport::Polling, Transport::Polling];
        c.engine.path = "socket.io".to_owned();
        c.engine.echo_path = Some("socket.io".to_owned());
        c.engine.connect_timeout = Duration::ZERO;
        c.engine.upgrade_timeout = Duration::ZERO;
        c.server.shutdown_timeout = Duration::from_secs(3601);
        c.server.max_connections = 0;
        c.server.max_connections_per_ip = 0;
        c.server.handshakes_per_ip_per_second = 0;
        c.server.events_per_ip_per_second = 0;
        c.server.event_burst_per_ip = 0;
        c.server.handshake_burst_per_ip = 0;
        c.engine.attachment_timeout = Duration::ZERO;
        c.engine.pending_budget = Size(998);
        c.engine.outbound_budget = Size(998);
        c.engine.body_timeout = Duration::ZERO;
        c.server.group = Some("iorelay".to_owned());
        c.admin.allowed_hosts = vec!["relay.internal".to_owned(), "http://x:1".to_owned()];
        assert_eq!(
            keys(&c),
            [
                "server.group",
                "server.shutdown_timeout",
                "server.max_connections",
                "server.max_connections_per_ip",
                "server.handshakes_per_ip_per_second",
                "server.handshake_burst_per_ip",
                "server.events_per_ip_per_second",
                "server.event_burst_per_ip",
                "engine.path",
                "engine.ping_interval",
                "engine.ping_timeout",
                "engine.max_payload",
                "engine.connect_timeout",
                "engine.attachment_timeout",
                "engine.pending_budget",
                "engine.outbound_budget",
                "engine.body_timeout",
                "engine.upgrade_timeout",
                "engine.transports",
                "engine.write_queue",
                "engine.echo_path",
                "engine.echo_path",
                "admin.allowed_hosts[1]",
                // The implicit `/` follows a small max_payload instead of failing.
            ]
        );
    }

    #[test]
    fn empty_transports_and_a_good_echo_path() {
        let mut c = Config::default();
        c.engine.transports.clear();
        c.engine.echo_path = Some("/engine.io/".to_owned());
        assert_eq!(keys(&c), ["engine.transports"]);
        c.engine.transports = vec![Transport::Websocket];
        c.engine.echo_path = Some("/socket.io/".to_owned());
        assert_eq!(keys(&c), ["engine.echo_path"]);
    }

    #[test]
    fn members_all_needs_a_join_policy() {
        let mut c = Config::default();
        let ns = |join, members| NamespaceConfig {
            join,
            members,
            ..NamespaceConfig::default()
        };
        c.namespaces
            .insert("/a".to_owned(), ns(JoinPolicy::None, Listing::All));
        c.namespaces
            .insert("/b".to_owned(), ns(JoinPolicy::None, Listing::Joined));
        c.namespaces
            .insert("/c".to_owned(), ns(JoinPolicy::Any, Listing::All));
        assert_eq!(keys(&c), ["namespaces./a.members"]);
    }

    #[test]
    fn namespace_rules() {
        let mut bad = NamespaceConfig {
            user_field: String::new(),
            join: JoinPolicy::Pattern("[a-z".to_owned()),
            route: Route::Room("$all".to_owned()),
            greet: Some("$hello".to_owned()),
            ..NamespaceConfig::default()
        };
        bad.limits = Limits {
            max_event_size: Size(0),
            events_per_second: 0,
            burst: 0,
            max_room_name: 2000,
            max_attachments: 1001,
            max_depth: 1,
            max_auth_size: Size(1),
            ..Limits::default()
        };
        bad.events.insert(String::new(), EventRule::default());
        bad.events.insert(
            "$join".to_owned(),
            EventRule {
                rename: Some(String::new()),
                ..EventRule::default()
            },
        );
        bad.events.insert(
            "ok".to_owned(),
            EventRule {
                route: Some(Route::Room(String::new())),
                rename: Some("$x".to_owned()),
                ack: AckReply::Echo,
                ..EventRule::default()
            },
        );
        let mut c = Config::default();
        c.namespaces.insert("chat,x".to_owned(), bad);
        assert_eq!(
            keys(&c),
            [
                "namespaces.chat,x",
                "namespaces.chat,x",
                "namespaces.chat,x.user_field",
                "namespaces.chat,x.join.pattern",
                "namespaces.chat,x.route.room",
                "namespaces.chat,x.greet",
                "namespaces.chat,x.limits.max_event_size",
                "namespaces.chat,x.limits.events_per_second",
                "namespaces.chat,x.limits.burst",
                "namespaces.chat,x.limits.max_room_name",
                "namespaces.chat,x.limits.max_attachments",
                "namespaces.chat,x.limits.max_depth",
                "namespaces.chat,x.limits.max_auth_size",
                "namespaces.chat,x.events.\"\"",
                "namespaces.chat,x.events.$join",
                "namespaces.chat,x.events.$join.rename",
                "namespaces.chat,x.events.ok.route.room",
                "namespaces.chat,x.events.ok.rename",
            ]
        );
    }

    #[test]
    fn a_welcome_is_no_reserved_event_and_bounded() {
        let welcome = |event: &str, args: Vec<serde_json::Value>| NamespaceConfig {
            welcome: Some(crate::config::Welcome {
                event: event.to_owned(),
                args,
            }),
            ..NamespaceConfig::default()
        };
        let big = serde_json::Value::String("x".repeat(MAX_WELCOME_ARGS));
        let mut c = Config::default();
        c.namespaces
            .insert("/a".to_owned(), welcome("connect", vec![]));
        c.namespaces
            .insert("/b".to_owned(), welcome("$presence", vec![]));
        c.namespaces.insert("/c".to_owned(), welcome("", vec![]));
        c.namespaces
            .insert("/d".to_owned(), welcome("hi", vec![big]));
        c.namespaces.insert(
            "/e".to_owned(),
            welcome("message", vec![1.into(), "x".into()]),
        );
        assert_eq!(
            keys(&c),
            [
                "namespaces./a.welcome.event",
                "namespaces./b.welcome.event",
                "namespaces./c.welcome.event",
                "namespaces./d.welcome.args",
            ]
        );
    }

    #[test]
    fn route_room_must_fit_max_room_name() {
        let mut ns = NamespaceConfig {
            route: Route::Room("dashboard".to_owned()),
            ..NamespaceConfig::default()
        };
        ns.limits.max_room_name = 4;
        let mut c = Config::default();
        c.namespaces.insert("/".to_owned(), ns);
        let problems = validate(&c).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "namespaces./.route.room: is 9 bytes long, over this namespace's \
             limits.max_room_name (4)"
        );
    }

    #[test]
    fn patterns_compile_anchored_and_errors_fit_one_line() {
        assert_eq!(check_pattern("^[a-z]+$"), Ok(()));
        assert_eq!(check_pattern("room-[0-9]+|lobby"), Ok(()));
        let err = check_pattern("(unclosed").unwrap_err();
        assert_eq!(err, "is not a valid regular expression: unclosed group");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn origins_and_proxies_name_the_entry_that_is_wrong() {
        let mut c = Config::default();
        c.server.allowed_origins = vec![
            "https://app.example.com".to_owned(),
            "loopback".to_owned(),
            "app.example.com".to_owned(),
        ];
        c.server.trusted_proxies = vec![
            "10.0.0.0/8".to_owned(),
            "::1".to_owned(),
            "10.0.0.0/40".to_owned(),
        ];
        let problems = validate(&c).unwrap_err();
        assert_eq!(
            keys(&c),
            ["server.allowed_origins[2]", "server.trusted_proxies[2]"]
        );
        assert!(
            problems[0]
                .reason
                .contains("\"app.example.com\" is not an origin")
        );
        assert!(
            problems[1]
                .reason
                .contains("\"10.0.0.0/40\" is not an address")
        );
    }

    #[test]
    fn group_needs_user() {
        let mut c = Config::default();
        c.server.group = Some("iorelay".to_owned());
        assert_eq!(keys(&c), ["server.group"]);
        c.server.user = Some("iorelay".to_owned());
        assert_eq!(keys(&c), Vec::<String>::new());
    }

    fn every_variant() -> Config {
        let mut c = Config::default();
        c.server.workers = crate::config::Workers::Auto;
        c.server.user = Some("iorelay".to_owned());
        c.server.group = Some("iorelay".to_owned());
        c.server.static_dir = Some("/srv/iorelay".into());
        c.server.shutdown_timeout = Duration::from_millis(1500);
        c.log.format = crate::config::LogFormat::Json;
        c.engine.ping_interval = Duration::from_millis(300);
        c.engine.max_payload = Size(1 << 20);
        c.engine.echo_path = Some("/engine.io/".to_owned());
        let routes = [
            Route::Rooms,
            Route::Namespace,
            Route::Room("dashboard".to_owned()),
            Route::Sender,
            Route::None,
            Route::Discard,
        ];
        let joins = [
            JoinPolicy::None,
            JoinPolicy::Any,
            JoinPolicy::Pattern("^[a-z]+$".to_owned()),
        ];
        for (i, route) in routes.into_iter().enumerate() {
            let mut ns = NamespaceConfig {
                join: joins[i % joins.len()].clone(),
                route: route.clone(),
                greet: Some("hello".to_owned()),
                announce: true,
                members: [Listing::Joined, Listing::All, Listing::None][i % 3],
                rooms: [Listing::None, Listing::Joined, Listing::All][i % 3],
                welcome: Some(crate::config::Welcome {
                    event: "hi".to_owned(),
                    args: vec![serde_json::json!({"a": [1, "b"]})],
                }),
                meta: vec![
                    crate::config::MetaField::Id,
                    crate::config::MetaField::User,
                    crate::config::MetaField::Time,
                    crate::config::MetaField::Origin,
                ],
                ..NamespaceConfig::default()
            };
            ns.events.insert(
                "message".to_owned(),
                EventRule {
                    route: Some(route),
                    rename: Some("message-back".to_owned()),
                    echo: Some(true),
                    ack: AckReply::Echo,
                    meta: Some(vec![crate::config::MetaField::Ip]),
                },
            );
            ns.events.insert("bare".to_owned(), EventRule::default());
            c.namespaces.insert(format!("/ns{i}"), ns);
        }
        let jwt = crate::config::JwtConfig {
            algorithms: vec![
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::PS256,
            ],
            public_key_file: Some(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/jwt/rsa-public.pem"),
            ),
            leeway: Duration::from_secs(5),
            issuer: Some("https://idp.example".to_owned()),
            audience: Some("iorelay".to_owned()),
            token_cookie: Some("io_token".to_owned()),
            user_claim: Some("nick".to_owned()),
            ..crate::config::JwtConfig::default()
        };
        let auth = NamespaceConfig {
            join: JoinPolicy::Claims,
            auth: crate::config::AuthConfig {
                required: true,
                user_from: Some(crate::config::UserFrom {
                    cookie: "nickname".to_owned(),
                }),
                jwt: Some(jwt),
            },
            ..NamespaceConfig::default()
        };
        c.namespaces.insert("/auth".to_owned(), auth);
        c
    }

    #[test]
    fn render_reads_back_to_the_same_config() {
        for c in [Config::default(), every_variant()] {
            assert_eq!(validate(&c), Ok(()));
            let text = render(&c);
            let back: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, c, "{text}");
        }
    }

    #[test]
    fn render_keeps_the_tree_order() {
        let text = render(&Config::default());
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        assert!(at("[server]") < at("[log]"));
        assert!(at("[log]") < at("[engine]"));
        assert!(at("listen = ") < at("admin_listen = "));
        assert!(text.contains("max_payload = \"1MB\""), "{text}");
        assert!(text.contains("ping_interval = \"25s\""), "{text}");
    }

    #[test]
    fn redaction_walks_nested_and_wildcard_keys() {
        let mut table: toml::Table = toml::from_str(
            r#"
            [server]
            listen = "127.0.0.1:3000"
            [namespaces."/a".auth]
            secret = "s1"
            [namespaces."/b".auth]
            secret = "s2"
            other = "kept"
            "#,
        )
        .unwrap();
        assert!(super::super::render::redact(
            &mut table,
            &["namespaces", "*", "auth", "secret"]
        ));
        assert!(!super::super::render::redact(
            &mut table,
            &["server", "password"]
        ));
        let text = toml::to_string(&table).unwrap();
        assert!(!text.contains("s1") && !text.contains("s2"), "{text}");
        assert_eq!(text.matches(REDACTED).count(), 2, "{text}");
        assert!(
            text.contains("kept") && text.contains("127.0.0.1:3000"),
            "{text}"
        );
    }
}
