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

/// Stop `public`, close the transports of every endpoint of `stack` and drain as `stop`
/// says; `hurry` resolving ends the wait early. How it went is logged.
pub async fn serve_out(
    public: &mut Serving,
    stack: &Stack,
    stop: Stop,
    hurry: impl Future<Output = ()>,
) {
    public.stop_accepting().await;
    tracing::info!(
        open = stack.open(),
        "shutting down: closing client transports"
    );
    stack.close_all();
    let Stop::Drain(timeout) = stop else {
        let drained = stack.open() == 0 && !public.busy();
        tracing::info!(drained, "shutting down: transports closed, not waiting");
        return;
    };
    let everyone_gone = async {
        tokio::join!(public.drained(), stack.until_idle());
    };
    tokio::select! {
        gone = tokio::time::timeout(timeout, everyone_gone) => {
            tracing::info!(drained = gone.is_ok(), timeout = ?timeout, "shutting down: drain finished");
        }
        () = hurry => {
            tracing::info!(open = stack.open(), "shutting down: drain cut short");
        }
    }
}
