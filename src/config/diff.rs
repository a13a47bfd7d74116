//! What a reload changes: the dotted keys whose values differ between two configs, and
//! which of them only take effect after a restart; and the outcome of a reload as the
//! `iorelay reload` command shows it.

use serde_json::Value;

use super::Config;

/// Keys (or key prefixes) that a running daemon cannot change: sockets already bound,
/// processes already forked, privileges already dropped, the log format already set up.
const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.admin_listen",
    "server.workers",
    "server.user",
    "server.group",
    "server.static_dir",
    "log.format",
    "engine.path",
    "engine.echo_path",
    "cluster",
];

/// The dotted keys whose values differ, sorted (`engine.ping_interval`,
/// `namespaces./chat.route`, …). A namespace added or removed is reported as
/// `namespaces./name`.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let mut keys = Vec::new();
    walk("", &old, &new, &mut keys);
    keys.sort();
    keys
}

/// Whether a changed key needs a restart to take effect.
pub fn needs_restart(key: &str) -> bool {
    RESTART_ONLY
        .iter()
        .any(|k| key == *k || key.strip_prefix(k).is_some_and(|r| r.starts_with('.')))
}

/// A reload's outcome (the `/api/v1/reload` answer), as `iorelay reload` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In force: the changed keys, and those that need a restart (for stdout).
    Applied(String),
    /// Rejected: why, one problem a line (for stderr).
    Rejected(String),
}

/// Render the daemon's reload report.
pub fn render_report(report: &Value) -> Outcome {
    if report["ok"] != Value::Bool(true) {
        let mut text =
            String::from("reload rejected; the previous configuration stays in force:\n");
        for e in report["errors"].as_array().into_iter().flatten() {
            text.push_str(&format!("  {}\n", e.as_str().unwrap_or_default()));
        }
        return Outcome::Rejected(text);
    }
    let mut text = format!("reloaded; changed: {}\n", report["changed"]);
    if report["restart_required"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        text.push_str(&format!(
            "needs a restart to take effect: {}\n",
            report["restart_required"]
        ));
    }
    Outcome::Applied(text)
}

fn walk(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NamespaceConfig, Route};

    #[test]
    fn lists_changed_leaves_and_namespaces() {
        let old = Config::default();
        let mut new = Config::default();
        new.engine.ping_interval = std::time::Duration::from_secs(5);
        new.server.listen = "127.0.0.1:4000".parse().unwrap();
        let ns = NamespaceConfig {
            route: Route::Namespace,
            ..NamespaceConfig::default()
        };
        new.namespaces.insert("/chat".into(), ns);
        assert_eq!(
            changed_keys(&old, &new),
            vec!["engine.ping_interval", "namespaces./chat", "server.listen"]
        );
        let mut newer = new.clone();
        newer.namespaces.get_mut("/chat").unwrap().echo = true;
        assert_eq!(changed_keys(&new, &newer), vec!["namespaces./chat.echo"]);
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn renders_reports() {
        let applied = serde_json::json!({
            "ok": true, "changed": ["engine.ping_interval"], "restart_required": ["server.listen"], "errors": []
        });
        assert_eq!(
            render_report(&applied),
            Outcome::Applied(
                "reloaded; changed: [\"engine.ping_interval\"]\n\
                 needs a restart to take effect: [\"server.listen\"]\n"
                    .into()
            )
        );
        let quiet = serde_json::json!({ "ok": true, "changed": [], "restart_required": [] });
        assert_eq!(
            render_report(&quiet),
            Outcome::Applied("reloaded; changed: []\n".into())
        );
        let rejected = serde_json::json!({ "ok": false, "errors": ["a: bad", "b: worse"] });
        assert_eq!(
            render_report(&rejected),
            Outcome::Rejected(
                "reload rejected; the previous configuration stays in force:\n  a: bad\n  b: worse\n"
                    .into()
            )
        );
    }

    #[test]
    fn restart_keys() {
        assert!(needs_restart("server.listen"));
        assert!(needs_restart("server.user"));
        assert!(!needs_restart("server.shutdown_timeout"));
        assert!(!needs_restart("engine.ping_interval"));
        assert!(!needs_restart("namespaces./chat.route"));
        assert!(!needs_restart("server.listenx"));
    }
}
