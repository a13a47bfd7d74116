//! systemd notifications (`sd_notify`): READY, RELOADING with MONOTONIC_USEC, STOPPING,
//! STATUS and the watchdog. Every call is a no-op without `NOTIFY_SOCKET`; failures are
//! logged, never fatal.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "sd_notify failed");
    }
}

/// Serving: `READY=1`, our pid and a status line.
pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// A reload began: `RELOADING=1` with the monotonic timestamp systemd expects.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(err) => tracing::warn!(error = %err, "cannot read the monotonic clock"),
    }
}

/// Shutdown began.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Just a status line.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A watchdog keep-alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog (half its timeout), when systemd enabled it for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}
