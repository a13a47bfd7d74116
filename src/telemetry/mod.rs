//! Tracing setup: human-readable lines or JSON lines on stderr, filtered by the config's
//! `log.level` unless `RUST_LOG` is set (the level follows reloads; the format needs a
//! restart); the metrics ([`metrics`]), whose names all live there; and the merge of
//! several processes' expositions into one ([`exposition`]).

pub mod exposition;
pub mod metrics;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Why a new log level was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `log.level` is not a valid filter.
    #[error("log.level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The installed subscriber is gone.
    #[error("cannot change the log filter: {0}")]
    Reload(#[from] reload::Error),
}

/// Changes the log filter of the installed subscriber.
#[derive(Debug, Clone)]
pub struct LogHandle {
    /// `None` when `RUST_LOG` decides, or when another subscriber was installed first.
    filter: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogHandle {
    /// Apply a new `log.level`. Ignored when `RUST_LOG` is set (it wins).
    pub fn set_level(&self, level: &str) -> Result<(), Error> {
        let Some(handle) = &self.filter else {
            return Ok(());
        };
        handle.reload(EnvFilter::try_new(level)?)?;
        Ok(())
    }
}

/// Install the global subscriber. Later calls are ignored.
pub fn init(log: &LogConfig) -> LogHandle {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_decides = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::env::var_os("NO_COLOR").is_none() && is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    LogHandle {
        filter: (installed && !env_decides).then_some(handle),
    }
}

fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
