//! A reload (SIGHUP or `POST /api/v1/reload`), the same for the single process and the
//! master: load and validate the config again; when valid, put it in force and say which
//! keys changed and which need a restart; when not, keep the old one. Either way the log
//! and the metrics hear the outcome, and systemd its READY=1 through [`settled`] once the
//! config is in force where it matters (in the master: once the workers confirmed it).
//! Also the admin API's way to ask for one.

use std::sync::Arc;

use super::notify;
use super::signals::{Intent, ReloadReport};
use crate::config::{self, Config, ConfigError, LoadOptions, diff};
use crate::http::control::Reloader;
use crate::telemetry::metrics::Metrics;

/// Why a reload was rejected; the previous configuration stays in force either way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config could not be read, or it is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// It is valid, but the relay cannot take it on.
    #[error(transparent)]
    Apply(#[from] crate::relay::Error),
    /// The server API's token file cannot be read, or holds an unusable token.
    #[error(transparent)]
    Tokens(#[from] crate::api::tokens::Error),
    /// The webhooks' secret file cannot be read.
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::Error),
}

impl Error {
    /// The problems, one line each, for the log and the report.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Error::Config(err) => err.lines(),
            Error::Apply(err) => vec![err.to_string()],
            Error::Tokens(err) => vec![err.to_string()],
            Error::Webhooks(err) => vec![err.to_string()],
        }
    }
}

/// Load the config again; when valid, `apply` puts it in force and `current` becomes it.
/// Says RELOADING=1 to systemd; the caller says READY=1 with [`settled`].
pub fn reload(
    options: &LoadOptions,
    current: &mut Config,
    metrics: &Metrics,
    apply: impl FnOnce(&Config) -> Result<(), Error>,
) -> ReloadReport {
    notify::reloading();
    let applied = config::load(options)
        .map_err(Error::from)
        .and_then(|loaded| {
            apply(&loaded.config)?;
            Ok(loaded.config)
        });
    let next = match applied {
        Ok(next) => next,
        Err(err) => {
            let errors = err.lines();
            metrics.reload_failures.inc();
            let file = options.describe();
            for line in &errors {
                tracing::error!(file = %file, problem = %line, "reload rejected, the previous configuration stays in force");
            }
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
    ReloadReport {
        ok: true,
        changed,
        restart_required,
        errors: Vec::new(),
    }
}

/// The reload is over: READY=1 again, with a STATUS saying how it went (`applied`: how
/// the workers took it, in the master).
pub fn settled(report: &ReloadReport, applied: Option<&str>) {
    if !report.ok {
        notify::ready(
            "serving; last reload rejected (invalid configuration), previous configuration in force",
        );
        return;
    }
    match applied {
        Some(how) => notify::ready(&format!("serving; configuration reloaded, {how}")),
        None => notify::ready("serving; configuration reloaded"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The built-in defaults and `vars`: no file.
    fn options(vars: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            file: None,
            env_name: None,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            search: Vec::new(),
        }
    }

    /// A config in force that differs from the defaults, to see whether it was replaced.
    fn in_force() -> Config {
        let mut config = Config::default();
        config.server.shutdown_timeout = Duration::from_secs(7);
        config
    }

    #[test]
    fn an_invalid_config_is_rejected_with_its_lines_and_the_old_one_stays() {
        let metrics = Metrics::new();
        let mut current = in_force();
        let options = options(&[("IORELAY_SERVER__SHUTDOWN_TIMEOUT", "banana")]);
        let report = reload(&options, &mut current, &metrics, |_| {
            panic!("an invalid config is never applied")
        });
        assert!(!report.ok);
        assert!(
            report.errors.iter().any(|l| l.contains("shutdown_timeout")),
            "{:?}",
            report.errors
        );
        assert_eq!(current, in_force());
        assert_eq!(metrics.reload_failures.get(), 1);
    }

    #[test]
    fn a_config_the_relay_refuses_is_rejected_with_its_reason() {
        let metrics = Metrics::new();
        let mut current = in_force();
        let refusal = || crate::relay::Error::Policy {
            namespace: "/chat".into(),
            source: regex::Error::Syntax("unclosed group".into()).into(),
        };
        let report = reload(&options(&[]), &mut current, &metrics, |_| {
            Err(refusal().into())
        });
        assert!(!report.ok);
        assert_eq!(report.errors, [refusal().to_string()]);
        assert_eq!(current, in_force());
        assert_eq!(metrics.reloads.get(), 0);
    }

    #[test]
    fn a_valid_config_is_put_in_force_and_its_changes_named() {
        let metrics = Metrics::new();
        let mut current = in_force();
        let report = reload(&options(&[]), &mut current, &metrics, |_| Ok(()));
        assert!(report.ok, "{:?}", report.errors);
        assert_eq!(current, Config::default());
        assert!(
            report
                .changed
                .iter()
                .any(|k| k == "server.shutdown_timeout"),
            "{:?}",
            report.changed
        );
        assert_eq!(metrics.reloads.get(), 1);
    }
}
