//! Signals sent to the workers themselves (issue 13, item 6): `killall -HUP iorelay`,
//! `systemctl kill -s HUP iorelay` or a logrotate script reach every process of the
//! service, not only the master. A worker ignores SIGHUP (the master reloads and hands it
//! the new config) and keeps its clients; SIGTERM makes it drain and exit 0, as the master
//! would, and the master starts a new one in its slot.
//!
//! Real signals are sent (to the daemon's processes): this is the only test in this file
//! (STYLE). Every step waits for a log line or the exit, with a deadline.

mod common;

use common::{Daemon, alive, field_is, kill};

#[test]
fn workers_ignore_hup_and_drain_on_term() {
    let mut daemon = Daemon::start();
    daemon.wait_for(0, "listening", |l| l["message"] == "listening");
    let (_, w0) = daemon.worker_pid(0, "0");
    let (_, w1) = daemon.worker_pid(0, "1");
    for id in ["0", "1"] {
        daemon.wait_for(0, "both workers serving", |l| {
            l["message"] == "worker serving" && field_is(l, "worker", id)
        });
    }

    // HUP to every process of the service, as `killall -HUP iorelay` does.
    let mark = daemon.lines().len();
    for pid in [w0, w1, daemon.child.id()] {
        kill("HUP", pid);
    }
    daemon.wait_for(mark, "the master's reload", |l| {
        l["message"] == "configuration reloaded"
    });
    for id in ["0", "1"] {
        daemon.wait_for(mark, "the worker ignoring SIGHUP", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("SIGHUP to a worker ignored"))
                && field_is(l, "worker", id)
        });
    }
    assert!(
        alive(w0) && alive(w1),
        "a worker died of SIGHUP; log:\n{}",
        daemon.dump()
    );
    assert!(
        !daemon.lines()[mark..]
            .iter()
            .any(|l| l["message"] == "worker exited"),
        "a worker exited after SIGHUP; log:\n{}",
        daemon.dump()
    );

    // TERM to one worker: it drains and exits 0; the master replaces it, the other
    // worker is untouched.
    let mark = daemon.lines().len();
    kill("TERM", w1);
    daemon.wait_for(mark, "worker 1 draining", |l| {
        l["message"] == "SIGTERM: worker draining" && field_is(l, "worker", "1")
    });
    daemon.wait_for(mark, "worker 1 stopped", |l| {
        l["message"] == "worker stopped" && field_is(l, "worker", "1")
    });
    daemon.wait_for(mark, "worker 1 exiting 0", |l| {
        l["message"] == "worker exited" && field_is(l, "worker", "1") && l["code"] == 0
    });
    let (_, replacement) = daemon.worker_pid(mark, "1");
    assert_ne!(replacement, w1);
    daemon.wait_for(mark, "worker 1 serving again", |l| {
        l["message"] == "worker serving" && field_is(l, "worker", "1")
    });
    assert!(alive(w0), "worker 0 died; log:\n{}", daemon.dump());

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.dump());
}
