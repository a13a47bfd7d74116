//! New clients are refused during a multi-worker drain (issue 13, item 12). SIGTERM makes
//! the master tell its workers to drain; a session already open holds the drain, and
//! meanwhile a new TCP connection to the public port must fail at once (refused, reset
//! or closed) — not be accepted by the kernel into a backlog nobody serves, where the
//! client hangs until the drain ends.
//!
//! Real signals are sent: this is the only test in this file (STYLE). Every step waits
//! for a log line or an answer, with a deadline.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, STEP, kill};

/// Two workers, a drain long enough to outlast the test's checks.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
workers = 2
shutdown_timeout = "10s"

[log]
format = "json"
level = "info"
"#;

/// Longer than a refused or reset connect takes, far shorter than the drain.
const NO_HANG: Duration = Duration::from_secs(3);

/// Read one HTTP head from `stream` (byte by byte: nothing after it is consumed).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read an answer");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Hold the drain open with a request in flight: open an Engine.IO polling session, then
/// on the same connection (the same worker) a POST with `Expect: 100-continue` whose body
/// is never sent. "100 Continue" means the daemon's handler is reading the body: it
/// finishes requests in flight before closing a connection, and waits for its
/// connections, up to `shutdown_timeout`.
fn hold_drain(public: &str) -> TcpStream {
    let mut stream = TcpStream::connect(public).expect("connect to the public listener");
    stream.set_read_timeout(Some(STEP)).expect("set a timeout");
    write!(
        stream,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {public}\r\n\r\n"
    )
    .expect("send the handshake");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "handshake: {head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .expect("the handshake has a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read the handshake");
    let body = String::from_utf8_lossy(&body).into_owned();
    let sid = body
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no sid in {body}"))
        .to_owned();
    write!(
        stream,
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {public}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1\r\n\
         Expect: 100-continue\r\n\r\n"
    )
    .expect("send the POST head");
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 100"), "no 100 Continue: {head}");
    stream
}

#[test]
fn a_new_client_is_refused_during_a_multi_worker_drain() {
    let mut daemon = Daemon::start_with(CONFIG);
    let (_, listening) = daemon.wait_for(0, "listening", |l| l["message"] == "listening");
    let public = listening["public"]
        .as_str()
        .expect("the listening line names the public address")
        .to_owned();
    let mut held = hold_drain(&public);

    let mark = daemon.lines().len();
    kill("TERM", daemon.child.id());
    // Both workers stopped accepting and closed their transports; the request above
    // holds the drain open.
    for n in 1..=2 {
        daemon.wait_for(mark, "both workers draining", |_| {
            daemon.lines()[mark..]
                .iter()
                .filter(|l| l["message"] == "shutting down: closing client transports")
                .count()
                >= n
        });
    }
    assert!(
        !daemon.exited(),
        "the drain ended early; log:\n{}",
        daemon.dump()
    );

    match TcpStream::connect(&public) {
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}"),
        Ok(mut stream) => {
            // Accepted after all: it must be closed at once, not left hanging.
            stream
                .set_read_timeout(Some(NO_HANG))
                .expect("set a timeout");
            let _ = write!(
                stream,
                "GET /healthz HTTP/1.1\r\nHost: {public}\r\nConnection: close\r\n\r\n"
            );
            let mut answer = Vec::new();
            match stream.read_to_end(&mut answer) {
                Ok(_) => {
                    let text = String::from_utf8_lossy(&answer);
                    assert!(
                        text.is_empty() || text.starts_with("HTTP/1.1 503"),
                        "a new client was served during the drain: {text}"
                    );
                }
                Err(err) => assert!(
                    !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                    "a new client hangs during the drain ({err}); log:\n{}",
                    daemon.dump()
                ),
            }
        }
    }
    assert!(
        !daemon.exited(),
        "the drain ended before the check; log:\n{}",
        daemon.dump()
    );

    // Let the drain end: the held POST gets its body (an Engine.IO NOOP).
    held.write_all(b"6").expect("send the held body");
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.dump());
}
