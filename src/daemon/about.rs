//! The daemon's own facts for the status document (`GET /api/v1/status`, `iorelay
//! status`): its version, environment, config files and whether systemd handed it its
//! sockets. They are fixed when the daemon starts, so they are built once, here, by the
//! single process or the master; the document around them is `http::admin`'s.

use serde_json::{Value, json};

use crate::config::Loaded;

/// The facts of a daemon started with `loaded`, its listeners taken from systemd
/// (`activated`) or bound by itself.
pub fn facts(loaded: &Loaded, activated: bool) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "environment": loaded.environment.name(),
        "config_files": loaded.sources,
        "socket_activated": activated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Environment};

    #[test]
    fn says_what_was_started_and_how() {
        let loaded = Loaded {
            config: Config::default(),
            environment: Environment::Production,
            sources: vec!["/etc/iorelay/iorelay.toml".into()],
        };
        let facts = facts(&loaded, true);
        assert_eq!(facts["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(facts["environment"], "production");
        assert_eq!(facts["config_files"], json!(["/etc/iorelay/iorelay.toml"]));
        assert_eq!(facts["socket_activated"], true);
    }
}
