//! The ordered shutdown of a process that serves clients (the single process and each
//! worker; the master's side is stopping its workers, in `master`): stop accepting, tell
//! every client the server is going away, then — for a graceful stop — wait until their
//! transports have closed or the timeout passes. An impatient operator (SIGINT, a second
//! SIGTERM) cuts the wait short.

use std::future::Future;
use std::time::Duration;

use super::listener::Serving;
use super::stack::Stack;

/// How a stop goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Wait (at most this long) for clients to take their close and leave.
    Drain(Duration),
    /// Close the transports and go.
    Now,
}

/// Stop `public`, close `stack`'s transports and drain as `stop` says; `hurry` resolving
/// ends the wait early. Returns whether every client had gone.
pub async fn serve_out(
    public: &mut Serving,
    stack: &Stack,
    stop: Stop,
    hurry: impl Future<Output = ()>,
) -> bool {
    public.stop_accepting().await;
    tracing::info!(
        sessions = stack.engine.session_count(),
        "shutting down: closing client transports"
    );
    stack.close_all();
    let Stop::Drain(timeout) = stop else {
        return stack.open() == 0 && !public.busy();
    };
    let everyone_gone = async {
        tokio::join!(public.drained(), stack.engine.until_idle());
    };
    tokio::select! {
        gone = tokio::time::timeout(timeout, everyone_gone) => {
            let drained = gone.is_ok();
            tracing::info!(drained, timeout = ?timeout, "shutting down: drain finished");
            drained
        }
        () = hurry => {
            tracing::info!("shutting down: drain cut short");
            false
        }
    }
}
