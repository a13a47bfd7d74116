//! A worker that fails with an I/O error is restarted, and the daemon stays up (issue 11:
//! every worker error used to exit 78, which the master takes as fatal, stopping the whole
//! service for good).
//!
//! The failure is a real one, induced from outside: a worker listens for its siblings'
//! bus links on a Unix socket in the workers' private runtime directory; the test (the
//! directory's owner, or root) kills worker 1 and puts a directory where that socket goes
//! before its replacement starts, so the replacement fails to listen there. It must exit
//! 70 (restartable), the master must start it again with backoff, and once the path is
//! free the slot serves again. Then SIGTERM stops the daemon with status 0.
//!
//! Real signals are sent (to the daemon's processes): this is the only test in this file
//! (STYLE). Every step waits for a log line or the exit, with a deadline.

mod common;

use common::{Daemon, field_is, kill, run_dir_of};

#[test]
fn a_worker_failing_with_an_io_error_is_restarted_and_the_daemon_stays_up() {
    let mut daemon = Daemon::start();
    daemon.wait_for(0, "listening", |l| l["message"] == "listening");
    let (_, pid) = daemon.worker_pid(0, "1");
    let path = run_dir_of(pid).join("bus-1");

    // Kill worker 1 and, once the master saw it exit, put a directory where its bus
    // socket goes before the master starts a replacement (the first restart waits
    // 200 ms). Should the replacement have started first, undo and try again.
    let mut pid = pid;
    let from = loop {
        let mark = daemon.lines().len();
        kill("KILL", pid);
        daemon.wait_for(mark, "worker 1 exiting", |l| {
            l["message"] == "worker exited" && field_is(l, "worker", "1")
        });
        let placed = std::fs::remove_file(&path).is_ok() && std::fs::create_dir(&path).is_ok();
        let early = daemon.lines()[mark..]
            .iter()
            .any(|l| l["message"] == "worker started" && field_is(l, "worker", "1"));
        if placed && !early {
            break mark;
        }
        if placed {
            std::fs::remove_dir(&path).expect("undo");
        }
        pid = daemon.worker_pid(mark, "1").1;
        daemon.wait_for(mark, "worker 1 serving", |l| {
            l["message"] == "worker serving" && field_is(l, "worker", "1")
        });
    };
    // The replacement cannot listen for its siblings: it says so and exits 70...
    daemon.wait_for(from, "the worker's error", |l| {
        l["message"] == "worker cannot serve"
            && l["error"].as_str().is_some_and(|e| e.contains("sibling"))
    });
    let (exited, _) = daemon.wait_for(from, "worker 1 exiting 70", |l| {
        l["message"] == "worker exited" && field_is(l, "worker", "1") && l["code"] == 70
    });
    // ...and the master restarts it instead of stopping the daemon.
    daemon.wait_for(exited, "the restart decision", |l| {
        l["message"] == "worker exited; restarting" && field_is(l, "worker", "1")
    });
    assert!(
        daemon.child.try_wait().expect("try_wait works").is_none(),
        "the daemon stopped; log:\n{}",
        daemon.dump()
    );
    assert!(
        !daemon
            .lines()
            .iter()
            .any(|l| l["code"] == 78 || l["code"] == 77),
        "a fatal exit was logged; log:\n{}",
        daemon.dump()
    );

    // Once the path is free again, the slot serves again.
    std::fs::remove_dir(&path).expect("free the socket's path");
    let now = daemon.lines().len();
    daemon.wait_for(now, "worker 1 serving again", |l| {
        l["message"] == "worker serving" && field_is(l, "worker", "1")
    });

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.dump());
}
