//! READY=1 after a reload means the workers run the new config (issue 13, item 12): the
//! master validates the config, hands it to every worker, and tells systemd READY=1 only
//! once each worker confirmed it applied it — or, for a worker that says nothing, once
//! the confirmation deadline passed, with the worker named in the log, the STATUS and
//! `iorelay_config_reload_unconfirmed_total`.
//!
//! A worker is frozen with SIGSTOP while the master reloads, so that "before the workers
//! applied it" is not a race the test might lose: READY=1 must wait for the SIGCONT.
//! Real signals are sent: this is the only test in this file (STYLE). Every step waits
//! for a datagram or a log line, with a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::{Daemon, STEP, field_is, kill};

/// The next notification datagram, as `KEY=VALUE` lines.
fn next_notification(socket: &UnixDatagram, waiting_for: &str, daemon: &Daemon) -> String {
    let mut buf = vec![0u8; 8192];
    socket
        .set_read_timeout(Some(STEP))
        .expect("set a read timeout");
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(err) => panic!("no {waiting_for} ({err}); log:\n{}", daemon.dump()),
    }
}

fn status_of(message: &str) -> &str {
    message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_default()
}

/// `GET /metrics` on the admin listener.
fn metrics(admin: &str) -> String {
    let mut stream = TcpStream::connect(admin).expect("connect to the admin listener");
    stream.set_read_timeout(Some(STEP)).expect("set a timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    text
}

#[test]
fn ready_after_a_reload_waits_for_every_worker() {
    let dir = std::env::temp_dir().join(format!("iorelay-reload-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("open the scratch dir to the daemon's user");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .expect("open the notify socket to the daemon's user");
    let mut daemon = Daemon::start_with_env(common::CONFIG, &[("NOTIFY_SOCKET", path.as_os_str())]);

    let ready = next_notification(&socket, "READY=1", &daemon);
    assert!(ready.contains("READY=1"), "first notification: {ready:?}");
    let (_, listening) = daemon.wait_for(0, "listening", |l| l["message"] == "listening");
    let admin = listening["admin"]
        .as_str()
        .expect("the listening line names the admin address")
        .to_owned();
    let (_, w1) = daemon.worker_pid(0, "1");

    // Worker 1 is frozen while the master reloads: the master validates and sends the
    // config, but READY=1 must wait until the worker has applied it.
    kill("STOP", w1);
    let mark = daemon.lines().len();
    kill("HUP", daemon.child.id());
    let reloading = next_notification(&socket, "RELOADING=1", &daemon);
    assert!(
        reloading.contains("RELOADING=1"),
        "after SIGHUP: {reloading:?}"
    );
    daemon.wait_for(mark, "the master's reload", |l| {
        l["message"] == "configuration reloaded"
    });
    kill("CONT", w1);
    let ready = next_notification(&socket, "READY=1 after the reload", &daemon);
    assert!(ready.contains("READY=1"), "after RELOADING=1: {ready:?}");
    assert_eq!(
        status_of(&ready),
        "serving; configuration reloaded, applied by 2 of 2 workers",
        "READY=1 before every worker applied the config: {ready:?}"
    );

    // Frozen past the deadline: READY=1 still goes out, naming the worker, counted.
    kill("STOP", w1);
    let mark = daemon.lines().len();
    let sent = Instant::now();
    kill("HUP", daemon.child.id());
    let reloading = next_notification(&socket, "RELOADING=1", &daemon);
    assert!(
        reloading.contains("RELOADING=1"),
        "after SIGHUP: {reloading:?}"
    );
    let ready = next_notification(&socket, "READY=1 after the deadline", &daemon);
    kill("CONT", w1);
    assert!(ready.contains("READY=1"), "after RELOADING=1: {ready:?}");
    assert_eq!(
        status_of(&ready),
        "serving; configuration reloaded, applied by 1 of 2 workers; not confirmed by worker 1",
        "{ready:?}"
    );
    assert!(sent.elapsed() < STEP, "systemd waited too long");
    daemon.wait_for(mark, "the unconfirmed worker in the log", |l| {
        l["message"] == "worker did not confirm the reloaded configuration in time"
            && field_is(l, "worker", "1")
    });
    let text = metrics(&admin);
    assert!(
        text.contains("iorelay_config_reload_unconfirmed_total{reason=\"timeout\"} 1"),
        "{text}"
    );

    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.dump());
    let _ = std::fs::remove_dir_all(&dir);
}
