//! A worker that fails with an I/O error is restarted, and the daemon stays up (issue 11:
//! every worker error used to exit 78, which the master takes as fatal, stopping the whole
//! service for good).
//!
//! The failure is a real one, induced from outside: a worker listens for its siblings'
//! bus links on an abstract Unix address derived from the host's bus name; the test kills
//! worker 1 and takes that address before its replacement starts, so the replacement
//! fails to bind it (`EADDRINUSE`). It must exit 70 (restartable), the master must start
//! it again with backoff, and once the address is free the slot serves again. Then
//! SIGTERM stops the daemon with status 0.
//!
//! Real signals are sent (to the daemon's processes): this is the only test in this file
//! (STYLE). Every step waits for a log line or the exit, with a deadline.

use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(15);

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
workers = 2
shutdown_timeout = "2s"

[log]
format = "json"
level = "info"
"#;

/// The running daemon; killed and its scratch directory removed when dropped.
struct Daemon {
    child: Child,
    dir: PathBuf,
    /// Every JSON log line so far (a reader thread appends to it).
    log: Arc<Mutex<Vec<Value>>>,
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

/// Whether `line` has field `key` equal to `want` (numbers and strings alike: the master
/// logs worker ids as strings, workers as numbers).
fn field_is(line: &Value, key: &str, want: &str) -> bool {
    match &line[key] {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

impl Daemon {
    fn start() -> Daemon {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "iorelay-worker-restart-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("open the scratch dir to the daemon's user");
        let config = dir.join("iorelay.toml");
        std::fs::write(&config, CONFIG).expect("write the config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))
            .expect("make the config readable to the daemon's user");
        let mut command = Command::new(env!("CARGO_BIN_EXE_iorelay"));
        command
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            command.env("IORELAY_SERVER__USER", "nobody");
        }
        let mut child = command.spawn().expect("start iorelay");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let parsed = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().expect("log lock").push(parsed);
            }
        });
        Daemon { child, dir, log }
    }

    fn lines(&self) -> Vec<Value> {
        self.log.lock().expect("log lock").clone()
    }

    fn dump(&self) -> String {
        self.lines()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Wait for a log line after the first `from` lines that `matches`; returns it and
    /// its index.
    fn wait_for(
        &self,
        from: usize,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some((i, line)) = self
                .lines()
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| matches(l))
            {
                return (i, line);
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {STEP:?}; log:\n{}",
                self.dump()
            );
            assert!(
                !self.exited(),
                "the daemon exited while waiting for {what}; log:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the daemon exited (looked at without reaping it: `/proc/PID/stat` says
    /// `Z` for an exited child not yet waited for).
    fn exited(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
            })
            .is_none_or(|state| state == 'Z')
    }

    /// The pid of the newest start of worker `id` logged after line `from`.
    fn worker_pid(&self, from: usize, id: &str) -> (usize, u32) {
        let (i, line) = self.wait_for(from, "worker started", |l| {
            l["message"] == "worker started" && field_is(l, "worker", id)
        });
        let pid = line["pid"].as_u64().expect("the start line has the pid");
        (i, u32::try_from(pid).expect("a pid fits in u32"))
    }
}

fn kill(signal: &str, pid: u32) {
    // kill(1) may fail when the process is already gone: that is fine here.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// The bus name the master handed its worker `pid`, from the worker's environment.
fn bus_of(pid: u32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read a worker's environ");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"IORELAYD_BUS="))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .expect("a worker has its bus name")
}

#[test]
fn a_worker_failing_with_an_io_error_is_restarted_and_the_daemon_stays_up() {
    let mut daemon = Daemon::start();
    let (ready, _) = daemon.wait_for(0, "listening", |l| l["message"] == "listening");
    let (_, pid) = daemon.worker_pid(0, "1");
    let address = SocketAddr::from_abstract_name(format!("iorelay-{}-1", bus_of(pid)).as_bytes())
        .expect("an abstract address");

    // Kill worker 1 and take its bus address before the master's replacement binds it
    // (the first restart waits 200 ms). Should the replacement win the race, try again.
    let mut from = ready;
    let mut pid = pid;
    let held = loop {
        kill("KILL", pid);
        let deadline = Instant::now() + STEP;
        let held = loop {
            if let Ok(listener) = UnixListener::bind_addr(&address) {
                break Some(listener);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let (i, next) = daemon.worker_pid(from + 1, "1");
        match held {
            Some(listener) => break listener,
            None => (from, pid) = (i, next),
        }
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

    // Once the address is free again, the slot serves again.
    drop(held);
    let now = daemon.lines().len();
    daemon.wait_for(now, "worker 1 serving again", |l| {
        l["message"] == "worker serving" && field_is(l, "worker", "1")
    });

    kill("TERM", daemon.child.id());
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = daemon.child.try_wait().expect("try_wait works") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit; log:\n{}",
            daemon.dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.dump());
}
