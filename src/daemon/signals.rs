//! Signals (and admin API requests) as one stream of intents. A signal-hook thread only
//! records which signal came and forwards it; the daemon's loop decides what to do
//! (nginx's "handlers set flags, the loop acts").

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

/// The outcome of a reload, for whoever asked through the API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Whether the new config is in force.
    pub ok: bool,
    /// Keys that changed and took effect.
    pub changed: Vec<String>,
    /// Keys that changed but need a restart.
    pub restart_required: Vec<String>,
    /// Why the config was rejected (one line per problem).
    pub errors: Vec<String>,
}

/// What an operator asked for.
#[derive(Debug)]
pub enum Intent {
    /// SIGHUP or `POST /api/v1/reload`: re-read and apply the config; the API waits for
    /// the report.
    Reload(Option<tokio::sync::oneshot::Sender<ReloadReport>>),
    /// SIGTERM: stop accepting, close clients' transports, wait for the drain.
    Drain,
    /// SIGINT: the same without waiting.
    Stop,
}

/// Start listening for SIGHUP, SIGTERM and SIGINT; their intents go to `tx`.
pub fn forward(tx: mpsc::UnboundedSender<Intent>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let intent = match signal {
                    SIGHUP => Intent::Reload(None),
                    SIGTERM => Intent::Drain,
                    _ => Intent::Stop,
                };
                if tx.send(intent).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
