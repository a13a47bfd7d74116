//! The production walkthrough (`examples/production/README.md`) checked by the real tools:
//! the config it installs on a node (`examples/production/iorelay.toml` with the chat's
//! namespaces appended, the shipped production profile beside it, the environment of
//! `examples/production/iorelay.default`) passes `iorelay check-config` with the settings
//! the walkthrough promises, and `promtool` accepts its Prometheus scrape config and alert
//! rules, whose metric names are ones the daemon exports.
//!
//! The walkthrough's other files are the shipped ones, checked where they live:
//! `packaging/examples/haproxy.cfg` by `haproxy -c` (and in front of two nodes) in
//! `tests/node/test/haproxy.test.mjs`, `monit/iorelay` by `monit -t` and the systemd units
//! by `systemd-analyze` in `tests/units.rs`, the deb by `packaging/test`.
//! (`scripts/test` installs promtool with Debian's prometheus package.)

#![allow(clippy::unwrap_used, reason = "a failed file operation fails the test")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (scripts/test installs what the tests need)");
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// The `KEY=VALUE` lines of an environment file such as /etc/default/iorelay.
fn environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_walkthrough_config_checks_with_the_promised_settings() {
    // /etc/iorelay as the walkthrough leaves it: its iorelay.toml (the site's settings and
    // the app's namespaces) and the deb's production.toml beside it.
    let dir = std::env::temp_dir().join(format!("iorelay-walkthrough-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("iorelay.toml");
    let site = read("examples/production/iorelay.toml");
    std::fs::write(&config, site + "\n" + &read("examples/chat/iorelay.toml")).unwrap();
    std::fs::copy(
        repo().join("config/production.toml"),
        dir.join("production.toml"),
    )
    .unwrap();

    // The service's environment: /etc/default/iorelay only (no IORELAY_* of this shell).
    let defaults = environment_file(&read("examples/production/iorelay.default"));
    assert!(defaults.contains(&("IORELAY_ENV".into(), "production".into())));
    let out = Command::new(env!("CARGO_BIN_EXE_iorelay"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(defaults)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-config: {:?}\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stderr.contains("environment production") && stderr.contains("production.toml"),
        "the production profile was not merged: {stderr}"
    );
    for line in [
        // The profile: a worker per CPU, not root, JSON logs, tokens from a file.
        "listen = \"0.0.0.0:3000\"",
        "workers = \"auto\"",
        "user = \"iorelay\"",
        "format = \"json\"",
        "token_file = \"/etc/iorelay/api-token\"",
        // The site's file: behind HAProxy, its pages' origin, a longer drain.
        "trusted_proxies = [\"10.0.0.5/32\"]",
        "allowed_origins = [\"https://chat.example.org\"]",
        "shutdown_timeout = \"30s\"",
        // The site's file: the nodes share rooms through Redis.
        "adapter = \"redis\"",
        "url = \"redis://10.0.0.5:6379/0\"",
        "password_file = \"/etc/iorelay/redis.password\"",
        // /etc/default/iorelay: the admin listener on the private address, for Prometheus.
        "admin_listen = \"10.0.0.11:9090\"",
        // The app's namespaces.
        "[namespaces.\"/chat_infra\"]",
        "[namespaces.\"/chat_com\"]",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == line),
            "check-config does not print {line:?}:\n{stdout}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn prometheus_accepts_the_scrape_config_and_the_alerts() {
    let promtool = tool("promtool");
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(repo().join("examples/production/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config (with its rule file): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerts_name_metrics_the_daemon_exports() {
    let alerts = read("examples/production/alerts.yml");
    // The daemon's metric names, and the cluster's, registered beside them.
    let names = read("src/telemetry/metrics.rs") + &read("src/cluster/meters.rs");
    let used: Vec<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("iorelay_"))
        .collect();
    assert!(used.len() >= 5, "alerts.yml names few metrics: {used:?}");
    for name in used {
        assert!(
            names.contains(&format!("\"{name}\"")),
            "alerts.yml uses {name}, which neither src/telemetry/metrics.rs nor src/cluster/meters.rs defines"
        );
    }
}
