//! The workers' Unix sockets cannot be squatted by another local user (issue 13, item 5).
//! They used to bind abstract names, listed in `/proc/net/unix` and free for anyone to bind
//! first: a local user taking a restarting worker's name kept that slot from serving. Now
//! they live in a fresh 0700 directory of the workers' user, which is removed when the
//! daemon stops.
//!
//! As root (the daemon then runs as `nobody`), a process of a third user tries to put a
//! file where worker 1's bus socket goes and is refused. A worker killed with SIGKILL
//! leaves its socket file behind: its replacement takes the path over and serves.
//!
//! Real signals are sent (to the daemon's processes): this is the only test in this file
//! (STYLE). Every step waits for a log line or the exit, with a deadline.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{Daemon, field_is, kill, root, run_dir_of};

#[test]
fn worker_sockets_live_in_a_private_directory_nobody_else_can_enter() {
    let mut daemon = Daemon::start();
    daemon.wait_for(0, "listening", |l| l["message"] == "listening");
    let (_, w1) = daemon.worker_pid(0, "1");
    for id in ["0", "1"] {
        daemon.wait_for(0, "both workers serving", |l| {
            l["message"] == "worker serving" && field_is(l, "worker", id)
        });
    }
    let dir = run_dir_of(w1);
    let owner = std::fs::metadata(format!("/proc/{w1}"))
        .expect("the worker's /proc entry")
        .uid();
    let meta = std::fs::symlink_metadata(&dir).expect("the runtime directory exists");
    assert!(meta.is_dir(), "{dir:?} is not a directory");
    assert_eq!(meta.mode() & 0o777, 0o700, "{dir:?} is not private");
    assert_eq!(meta.uid(), owner, "{dir:?} is not the workers' user's");
    for name in ["bus-0", "bus-1"] {
        let file = std::fs::symlink_metadata(dir.join(name)).expect("a worker's bus socket");
        assert!(file.file_type().is_socket(), "{name} is not a socket");
    }
    // No abstract names (`@…`) of ours in the host-wide list.
    let unix = std::fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    assert!(
        !unix.lines().any(|l| l.contains(" @iorelay")),
        "abstract iorelay sockets are listed:\n{unix}"
    );

    if root() {
        // A third user (neither root nor the daemon's `nobody`) cannot take the path of
        // a restarting worker's socket, nor even look into the directory.
        let squat = Command::new("sh")
            .arg("-c")
            .arg("rm -f \"$1\" ; : > \"$1\"")
            .arg("squatter")
            .arg(dir.join("bus-1"))
            .uid(65533)
            .gid(65533)
            .output()
            .expect("run the squatter");
        assert!(!squat.status.success(), "the squatter wrote in {dir:?}");
        let file = std::fs::symlink_metadata(dir.join("bus-1")).expect("still there");
        assert!(file.file_type().is_socket(), "the squatter replaced bus-1");
    }

    // A worker killed without cleaning up: its replacement takes the stale path over.
    let mark = daemon.lines().len();
    kill("KILL", w1);
    let (_, replacement) = daemon.worker_pid(mark, "1");
    assert_ne!(replacement, w1);
    daemon.wait_for(mark, "worker 1 serving again", |l| {
        l["message"] == "worker serving" && field_is(l, "worker", "1")
    });
    assert!(
        !daemon.lines()[mark..]
            .iter()
            .any(|l| l["message"] == "worker cannot serve"),
        "the replacement could not listen; log:\n{}",
        daemon.dump()
    );

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.dump());
    assert!(!dir.exists(), "{dir:?} outlived the daemon");
}
