//! Signals as a stream of intents. A signal-hook thread only records which signal came
//! and forwards it; the daemon's loop decides what to do (nginx's "handlers set flags,
//! the loop acts").

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// SIGHUP: re-read and apply the config.
    Reload,
    /// SIGTERM: stop accepting, close clients' transports, wait for the drain.
    Drain,
    /// SIGINT: the same without waiting.
    Stop,
}

/// Start listening for SIGHUP, SIGTERM and SIGINT; intents arrive on the receiver.
pub fn intents() -> std::io::Result<mpsc::UnboundedReceiver<Intent>> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let intent = match signal {
                    SIGHUP => Intent::Reload,
                    SIGTERM => Intent::Drain,
                    _ => Intent::Stop,
                };
                if tx.send(intent).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
