//! Runs the Node integration suites in `tests/node/` (the official socket.io client and
//! raw protocol checks against the real binary) as part of `cargo test`.
//!
//! `.ci/run` installs their npm dependencies from the committed lock file; when they are
//! missing here, this test installs them with `npm ci` first.

use std::path::Path;
use std::process::Command;

#[test]
fn node_integration_suites() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let installed = ["socket.io-client", "ws", "playwright-core"]
        .iter()
        .all(|package| dir.join("node_modules").join(package).exists());
    if !installed {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm ci failed in tests/node");
    }
    let status = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=2",
            "--test-timeout=60000",
            "test/",
        ])
        .current_dir(&dir)
        .env("TEST_IORELAY_BIN", env!("CARGO_BIN_EXE_iorelay"))
        .status()
        .expect("node is installed");
    assert!(
        status.success(),
        "node integration tests failed (see output above)"
    );
}
