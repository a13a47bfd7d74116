//! The harness the daemon's process-level tests share: start the real binary with a
//! config (as `nobody` when the tests run as root), read its JSON log lines, wait for a
//! line with a deadline, find worker pids, send signals. Dropping the [`Daemon`] kills
//! it and removes its scratch directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any one step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(15);

/// Two workers, JSON logs.
pub const CONFIG: &str = r#"
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
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    /// Every JSON log line so far (a reader thread appends to it).
    pub log: Arc<Mutex<Vec<Value>>>,
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
pub fn field_is(line: &Value, key: &str, want: &str) -> bool {
    match &line[key] {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

impl Daemon {
    /// Start the daemon with [`CONFIG`].
    pub fn start() -> Daemon {
        Daemon::start_with(CONFIG)
    }

    /// Start the daemon with `config`.
    pub fn start_with(config_text: &str) -> Daemon {
        Daemon::start_with_env(config_text, &[])
    }

    /// Start the daemon with `config` and extra environment variables.
    pub fn start_with_env(config_text: &str, vars: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "iorelay-daemon-test-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("open the scratch dir to the daemon's user");
        let config = dir.join("iorelay.toml");
        std::fs::write(&config, config_text).expect("write the config");
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
        for (key, value) in vars {
            command.env(key, value);
        }
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

    pub fn lines(&self) -> Vec<Value> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn dump(&self) -> String {
        self.lines()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Wait for a log line after the first `from` lines that `matches`; returns it and
    /// its index.
    pub fn wait_for(
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
    pub fn exited(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
            })
            .is_none_or(|state| state == 'Z')
    }

    /// The pid of the newest start of worker `id` logged after line `from`.
    pub fn worker_pid(&self, from: usize, id: &str) -> (usize, u32) {
        let (i, line) = self.wait_for(from, "worker started", |l| {
            l["message"] == "worker started" && field_is(l, "worker", id)
        });
        let pid = line["pid"].as_u64().expect("the start line has the pid");
        (i, u32::try_from(pid).expect("a pid fits in u32"))
    }
}

pub fn kill(signal: &str, pid: u32) {
    // kill(1) may fail when the process is already gone: that is fine here.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// The runtime directory the master handed its worker `pid`, from the worker's
/// environment.
pub fn run_dir_of(pid: u32) -> PathBuf {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read a worker's environ");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"IORELAYD_DIR="))
        .map(|b| PathBuf::from(String::from_utf8_lossy(b).into_owned()))
        .expect("a worker has its runtime directory")
}

/// Whether process `pid` is alive (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z')
}

/// Whether the tests run as root.
pub fn root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Daemon {
    /// SIGTERM the master and wait for its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        kill("TERM", self.child.id());
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait works") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit; log:\n{}", self.dump());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
