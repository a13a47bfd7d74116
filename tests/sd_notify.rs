//! systemd's notification protocol against the real binary: we play the service manager
//! (a datagram socket in `NOTIFY_SOCKET`, `WATCHDOG_USEC` in the environment) and check
//! what the shipped unit (`systemd/iorelay.service`: `Type=notify`, `WatchdogSec=`,
//! `ExecReload=` sending SIGHUP) relies on: `READY=1` with `MAINPID` and `STATUS` once
//! serving, `WATCHDOG=1` keep-alives, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` on
//! SIGHUP (also when the new config is rejected, with a `STATUS` saying so), `STOPPING=1` on
//! SIGTERM, and exit status 0.
//!
//! This test sends real signals (to the child, but still): it is the only test in this
//! file (STYLE). Nothing sleeps on hope: every step waits for a datagram, a log line or
//! the exit, each with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(10);

/// Watchdog timeout handed to the daemon: it should ping every 200ms.
const WATCHDOG_USEC: u64 = 400_000;

const CONFIG: &str = r#"
[server]
shutdown_timeout = "5s"

[namespaces."/"]
echo = false
"#;

/// The running daemon and its scratch directory; killed and removed when dropped, so a
/// failing assertion leaves no process behind.
struct Daemon {
    child: Child,
    dir: PathBuf,
    /// Everything the daemon wrote to stderr so far (a reader thread appends to it).
    stderr: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Send a signal with kill(1): the tests use std only, no libc.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Wait for the exit, at most `within`.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "iorelay did not exit within {within:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The notifications received, one datagram each, as `KEY=VALUE` pairs.
struct Notifications {
    socket: UnixDatagram,
    /// Every datagram so far, for failure messages.
    seen: Vec<String>,
}

type Message = Vec<(String, String)>;

fn value<'a>(message: &'a Message, key: &str) -> Option<&'a str> {
    message
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn is_watchdog(message: &Message) -> bool {
    message.len() == 1 && value(message, "WATCHDOG") == Some("1")
}

impl Notifications {
    /// The next datagram, or a failure at `deadline` naming what we waited for.
    fn next_until(&mut self, deadline: Instant, waiting_for: &str, daemon: &Daemon) -> Message {
        let mut buf = vec![0u8; 8192];
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.socket
            .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(text.clone());
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| match l.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (l.to_owned(), String::new()),
                    })
                    .collect()
            }
            Err(err) => panic!(
                "no {waiting_for} within {STEP:?} ({err}); received so far: {:?}\nlog:\n{}",
                self.seen,
                daemon.log()
            ),
        }
    }

    /// The next datagram within `STEP` that is not a bare watchdog keep-alive (those
    /// come every WATCHDOG_USEC/2, in between everything else).
    fn next_event(&mut self, waiting_for: &str, daemon: &Daemon) -> Message {
        let deadline = Instant::now() + STEP;
        loop {
            let message = self.next_until(deadline, waiting_for, daemon);
            if !is_watchdog(&message) {
                return message;
            }
        }
    }
}

/// Whether this test runs as root (CI containers do): then the daemon refuses to serve
/// without `server.user` and drops to it, so what it reads and writes after the drop
/// must be open to that user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn scratch_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("iorelay-sd-notify-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .expect("open the scratch dir to the daemon's user");
    dir
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the config");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .expect("make the config readable to the daemon's user");
}

/// A plain HTTP/1.1 GET; returns the status line.
fn http_status(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the listener");
    stream
        .set_read_timeout(Some(STEP))
        .expect("set a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn sd_notify_ready_watchdog_reload_stopping() {
    let dir = scratch_dir();
    let config = dir.join("iorelay.toml");
    write_config(&config, CONFIG);
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    // systemd's own notify socket is open to every user of the host.
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666))
        .expect("open the notify socket to the daemon's user");
    let mut notes = Notifications {
        socket,
        seen: Vec::new(),
    };

    let mut command = Command::new(env!("CARGO_BIN_EXE_iorelay"));
    command
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env("IORELAY_ENV", "test")
        .env("IORELAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("IORELAY_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("IORELAY_LOG__LEVEL", "info")
        .env("IORELAY_LOG__FORMAT", "text")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if running_as_root() {
        command.env("IORELAY_SERVER__USER", "nobody");
    }
    let mut child = command.spawn().expect("start iorelay");

    // Keep reading stderr (so the daemon never blocks on a full pipe), keep all of it
    // for failure messages, and hand each line over.
    let stderr = Arc::new(Mutex::new(String::new()));
    let (lines_tx, lines) = mpsc::channel::<String>();
    let pipe = child.stderr.take().expect("stderr is piped");
    {
        let stderr = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut all) = stderr.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = lines_tx.send(line);
            }
        });
    }
    let mut daemon = Daemon { child, dir, stderr };
    let pid = daemon.pid().to_string();

    // Serving: READY=1 with our MAINPID and a STATUS, before anything else.
    let ready = notes.next_event("READY=1", &daemon);
    assert_eq!(
        value(&ready, "READY"),
        Some("1"),
        "first notification: {ready:?}"
    );
    assert_eq!(
        value(&ready, "MAINPID"),
        Some(pid.as_str()),
        "MAINPID in {ready:?}"
    );
    let status = value(&ready, "STATUS").unwrap_or_default();
    assert!(!status.is_empty(), "no STATUS with READY=1: {ready:?}");

    // And it really serves: the public /healthz answers 200 (the address comes from the
    // "listening" log line, logged before READY=1).
    let deadline = Instant::now() + STEP;
    let public = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no \"listening\" log line; log:\n{}", daemon.log()));
        if line.contains("listening") {
            let addr = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("public="))
                .unwrap_or_else(|| panic!("no public=ADDR in {line:?}"));
            break addr.to_owned();
        }
    };
    let healthz = http_status(&public, "/healthz");
    assert!(
        healthz.starts_with("HTTP/1.1 200"),
        "GET /healthz: {healthz}"
    );

    // The watchdog: WATCHDOG=1 keeps coming (every WATCHDOG_USEC/2).
    let mut pings = 0;
    let deadline = Instant::now() + STEP;
    while pings < 2 {
        let message = notes.next_until(deadline, "two WATCHDOG=1", &daemon);
        if is_watchdog(&message) {
            pings += 1;
        }
    }

    // SIGHUP with a valid change: one datagram with RELOADING=1 and MONOTONIC_USEC, then
    // READY=1 once the new config is in force.
    write_config(&config, &CONFIG.replace("echo = false", "echo = true"));
    let sent_first = Instant::now();
    daemon.signal("HUP");
    let reloading = notes.next_event("RELOADING=1", &daemon);
    let got_first = Instant::now();
    assert_eq!(
        value(&reloading, "RELOADING"),
        Some("1"),
        "after SIGHUP: {reloading:?}"
    );
    let first_usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC=<digits> with RELOADING=1: {reloading:?}"))
        .parse()
        .expect("digits parse");
    assert!(first_usec > 0);
    let ready = notes.next_event("READY=1 after the reload", &daemon);
    assert_eq!(
        value(&ready, "READY"),
        Some("1"),
        "after RELOADING=1: {ready:?}"
    );
    let status = value(&ready, "STATUS").unwrap_or_default();
    assert!(
        !status.to_lowercase().contains("reject"),
        "a valid reload reported as rejected: {ready:?}"
    );

    // SIGHUP with a broken config: still RELOADING=1 then READY=1 (the daemon serves on
    // with the previous config), with a STATUS that says the reload was rejected.
    write_config(&config, "[server\nthis is not toml\n");
    let sent_second = Instant::now();
    daemon.signal("HUP");
    let reloading = notes.next_event("RELOADING=1 (broken config)", &daemon);
    let got_second = Instant::now();
    assert_eq!(
        value(&reloading, "RELOADING"),
        Some("1"),
        "after SIGHUP: {reloading:?}"
    );
    let second_usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC=<digits> with RELOADING=1: {reloading:?}"));
    // MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds, the clock behind our Instant:
    // the two stamps are as far apart as the two reloads, measured from here.
    let apart = second_usec.saturating_sub(first_usec);
    let at_least = sent_second.duration_since(got_first).as_micros() as u64;
    let at_most = got_second.duration_since(sent_first).as_micros() as u64;
    assert!(
        second_usec > first_usec && apart + 2 >= at_least && apart <= at_most + 2,
        "MONOTONIC_USEC {first_usec} then {second_usec}: {apart}µs apart, but the reloads were between {at_least}µs and {at_most}µs apart"
    );
    let ready = notes.next_event("READY=1 after the rejected reload", &daemon);
    assert_eq!(
        value(&ready, "READY"),
        Some("1"),
        "after a rejected reload: {ready:?}"
    );
    let status = value(&ready, "STATUS").unwrap_or_default();
    assert!(
        status.to_lowercase().contains("reject"),
        "STATUS after a rejected reload does not say so: {ready:?}"
    );
    let healthz = http_status(&public, "/healthz");
    assert!(
        healthz.starts_with("HTTP/1.1 200"),
        "GET /healthz after a rejected reload: {healthz}"
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    daemon.signal("TERM");
    let stopping = notes.next_event("STOPPING=1", &daemon);
    assert_eq!(
        value(&stopping, "STOPPING"),
        Some("1"),
        "after SIGTERM: {stopping:?}"
    );
    let status = daemon.wait_exit(STEP);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}; log:\n{}",
        daemon.log()
    );
}
