//! Runs the Node integration suites in `tests/node/test/` (the official socket.io client,
//! a browser, HAProxy and raw protocol checks against the real binary) as part of
//! `cargo test`, one Rust test per suite file: `cargo test --test node_clients workers`
//! runs `workers.test.mjs` alone, `cargo test --test node_clients` runs them all.
//!
//! The suites' npm packages are not installed from here: `scripts/test` (the test command,
//! which CI runs) installs them from the committed lock file before it runs `cargo test`.
//! A test run without them fails at once and says so, instead of reaching for the network
//! in the middle of a test run.
//!
//! The harness runs these tests on parallel threads (`RUST_TEST_THREADS`, by default one per
//! core), one `node --test` process each, as `--test-concurrency` used to for the whole
//! directory. The suites can run side by side: every relay, HAProxy and wrapper they start
//! binds port 0 or a port just found free, and works in its own temp dir. A suite's output
//! (the `spec` report, with the daemon logs its failing tests attach) is captured and shown
//! when it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The npm packages the suites import; any one missing means `npm ci` has not run.
const PACKAGES: [&str; 3] = ["socket.io-client", "ws", "playwright-core"];

/// Most time one test of a suite may take (`node --test --test-timeout`), so that a hung
/// test fails with its name instead of hanging `cargo test`.
const TEST_TIMEOUT_MS: u32 = 60_000;

/// Suites that run an outside tool for minutes (schemathesis in `api`): node applies
/// `--test-timeout` to the whole file as well, so these get a longer one.
const LONG_SUITES: &[(&str, u32)] = &[("api", 900_000)];

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Runs `tests/node/test/<suite>.test.mjs` against the binary cargo built for this test.
fn run_suite(suite: &str) {
    let dir = node_dir();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|package| !dir.join("node_modules").join(package).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "the npm packages of tests/node are not installed (missing: {}); \
         run scripts/test, which installs them first (or `npm ci` in tests/node)",
        missing.join(", ")
    );
    let file = format!("test/{suite}.test.mjs");
    let timeout = LONG_SUITES
        .iter()
        .find(|(name, _)| *name == suite)
        .map_or(TEST_TIMEOUT_MS, |(_, ms)| *ms);
    let output = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            &format!("--test-timeout={timeout}"),
            &file,
        ])
        .current_dir(&dir)
        .env("TEST_IORELAY_BIN", env!("CARGO_BIN_EXE_iorelay"))
        .output()
        .expect("node is installed (scripts/test needs it too)");
    // Printed through the harness, which shows it for a failing test only (or always, with
    // --nocapture).
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "node suite tests/node/{file} failed ({}); its report is above",
        output.status
    );
}

/// One `#[test]` per suite file, and the list of them for [`every_suite_has_a_test`].
macro_rules! suites {
    ($($test:ident => $suite:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_suite($suite);
            }
        )*

        /// The suite files that have a test above, by name without `.test.mjs`.
        const SUITES: &[&str] = &[$($suite),*];
    };
}

suites! {
    api => "api",
    app_analytics => "app-analytics",
    app_right_now => "app-right-now",
    app_stream => "app-stream",
    attack => "attack",
    auth => "auth",
    browser_demo => "browser-demo",
    bundle => "bundle",
    chat_book => "chat-book",
    cluster_haproxy => "cluster-haproxy",
    cluster_presence => "cluster-presence",
    cluster_redis => "cluster-redis",
    cluster_streams => "cluster-streams",
    cluster_tls => "cluster-tls",
    engineio_conformance => "engineio-conformance",
    haproxy => "haproxy",
    history => "history",
    hostile => "hostile",
    memory => "memory",
    metrics => "metrics",
    origins => "origins",
    privileges => "privileges",
    recovery => "recovery",
    relay => "relay",
    signal_drain => "signal-drain",
    signal_reload => "signal-reload",
    socket_activation => "socket-activation",
    seed_features => "seed-features",
    socketio_conformance => "socketio-conformance",
    transports => "transports",
    webhooks => "webhooks",
    worker_heartbeat => "worker-heartbeat",
    workers => "workers",
}

/// A suite added to `tests/node/test/` without a line in `suites!` would silently never
/// run under `cargo test`; a line whose file is gone would fail with a confusing node
/// error. Both fail here, by name.
#[test]
fn every_suite_has_a_test() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(node_dir().join("test"))
        .expect("tests/node/test is readable")
        .map(|entry| entry.expect("directory entry is readable").file_name())
        .filter_map(|name| {
            name.to_str()
                .and_then(|n| n.strip_suffix(".test.mjs"))
                .map(str::to_owned)
        })
        .collect();
    let listed: BTreeSet<String> = SUITES.iter().map(|s| s.to_string()).collect();
    let without_test: Vec<_> = on_disk.difference(&listed).collect();
    let without_file: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        without_test.is_empty(),
        "suites in tests/node/test without a line in suites! (tests/node_clients.rs): {without_test:?}"
    );
    assert!(
        without_file.is_empty(),
        "suites! lists files that tests/node/test does not have: {without_file:?}"
    );
}
