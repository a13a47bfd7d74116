//! What the admin listener asks of the daemon behind it: a single process answers from
//! its own relay (`admin::Local`); a master asks its workers over their control channels.
//! A leaf of `http`: the admin routes and the server API import it.

use std::sync::Arc;

use serde_json::Value;

use crate::api::{Call, Reply};
use crate::engine::BoxFuture;

/// The daemon behind the admin routes.
pub trait Control: Send + Sync + 'static {
    /// Reload the config as SIGHUP does; resolves to the report as JSON (`ok`, `changed`,
    /// `restart_required`, `errors`).
    fn reload(&self) -> BoxFuture<'_, Value>;
    /// The Prometheus text exposition for the whole daemon.
    fn metrics(&self) -> BoxFuture<'_, String>;
    /// The status document.
    fn status(&self) -> BoxFuture<'_, Value>;
    /// A server API call, answered for the whole host.
    fn call(&self, call: Call) -> BoxFuture<'_, Reply>;
}

/// A reload request handed to the daemon's control loop.
pub type Reloader = Arc<dyn Fn() -> BoxFuture<'static, Value> + Send + Sync>;
