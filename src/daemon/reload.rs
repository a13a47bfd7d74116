//! A reload (SIGHUP or `POST /api/v1/reload`), the same for the single process and the
//! master: load and validate the config again; when valid, put it in force and say which
//! keys changed and which need a restart; when not, keep the old one. Either way the log,
//! the metrics and systemd hear the outcome. Also the admin API's way to ask for one.

use std::sync::Arc;

use super::signals::{Intent, ReloadReport};
use super::{Error, notify};
use crate::config::{self, Config, LoadOptions, diff};
use crate::http::control::Reloader;
use crate::telemetry::metrics::Metrics;

/// Load the config again; when valid, `apply` puts it in force and `current` becomes it.
pub fn reload(
    options: &LoadOptions,
    current: &mut Config,
    metrics: &Metrics,
    apply: impl FnOnce(&Config) -> Result<(), Error>,
) -> ReloadReport {
    notify::reloading();
    let applied = config::load(options)
        .map_err(|err| err.lines())
        .and_then(|loaded| {
            apply(&loaded.config).map_err(|e| vec![e.to_string()])?;
            Ok(loaded.config)
        });
    let next = match applied {
        Ok(next) => next,
        Err(errors) => {
            metrics.reload_failures.inc();
            let file = options.describe();
            for line in &errors {
                tracing::error!(file = %file, problem = %line, "reload rejected, the previous configuration stays in force");
            }
            notify::ready(
                "serving; last reload rejected (invalid configuration), previous configuration in force",
            );
            return ReloadReport {
                ok: false,
                errors,
                ..ReloadReport::default()
            };
        }
    };
    let (restart_required, changed): (Vec<String>, Vec<String>) =
        diff::changed_keys(current, &next)
            .into_iter()
            .partition(|k| diff::needs_restart(k));
    for key in &restart_required {
        tracing::warn!(key = %key, "changed, but takes effect only after a restart");
    }
    tracing::info!(changed = ?changed, "configuration reloaded");
    metrics.reloads.inc();
    *current = next;
    notify::ready("serving; configuration reloaded");
    ReloadReport {
        ok: true,
        changed,
        restart_required,
        errors: Vec::new(),
    }
}

/// The answer to a reload asked for while the daemon shuts down.
pub fn refused() -> ReloadReport {
    ReloadReport {
        errors: vec!["shutting down".into()],
        ..ReloadReport::default()
    }
}

/// A reloader that asks the control loop through `intents` and waits for its report.
pub fn reloader(intents: tokio::sync::mpsc::UnboundedSender<Intent>) -> Reloader {
    Arc::new(move || {
        let intents = intents.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let report = if intents.send(Intent::Reload(Some(tx))).is_err() {
                refused()
            } else {
                rx.await.unwrap_or_else(|_| refused())
            };
            serde_json::to_value(report).expect("a reload report always serializes")
        })
    })
}
