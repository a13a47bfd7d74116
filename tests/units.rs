//! The shipped service files, checked by the real tools: `systemd-analyze verify` prints
//! nothing for `systemd/iorelay.service` and `systemd/iorelay.socket`, the service's
//! `systemd-analyze security` exposure is 1.5 or lower, and `monit -t` accepts
//! `monit/iorelay`. (`scripts/test` installs monit; systemd-analyze comes with systemd.)
//!
//! The unit's `/usr/bin/iorelay` is pointed at the binary under test, since verify checks
//! that executables exist; likewise `MANPATH` points at `packaging/iorelay.8`, since verify
//! runs `man` for each `Documentation=man:` link.

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

/// A temp dir with the units, the binary path replaced.
fn units() -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("iorelay-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = std::fs::read_to_string(repo().join("systemd/iorelay.service"))
        .unwrap()
        .replace("/usr/bin/iorelay", env!("CARGO_BIN_EXE_iorelay"));
    std::fs::write(dir.join("iorelay.service"), service).unwrap();
    std::fs::copy(
        repo().join("systemd/iorelay.socket"),
        dir.join("iorelay.socket"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("man/man8")).unwrap();
    std::fs::copy(
        repo().join("packaging/iorelay.8"),
        dir.join("man/man8/iorelay.8"),
    )
    .unwrap();
    (
        dir.clone(),
        dir.join("iorelay.service"),
        dir.join("iorelay.socket"),
    )
}

#[test]
fn units_verify_cleanly_and_the_service_is_hardened() {
    let (dir, service, socket) = units();
    let analyze = tool("systemd-analyze");
    let out = Command::new(&analyze)
        .arg("verify")
        .env("MANPATH", dir.join("man"))
        .arg(&service)
        .arg(&socket)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&service)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for iorelay.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(exposure <= 1.5, "exposure {exposure} is over 1.5:\n{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn monit_accepts_the_control_file() {
    let monit = tool("monit");
    let dir = std::env::temp_dir().join(format!("iorelay-monit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rc = dir.join("monitrc");
    std::fs::write(
        &rc,
        format!(
            "set daemon 5\nset idfile {0}/id\nset statefile {0}/state\ninclude {1}\n",
            dir.display(),
            repo().join("monit/iorelay").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(monit)
        .arg("-t")
        .arg("-c")
        .arg(&rc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "monit -t: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
