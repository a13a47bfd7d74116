//! The `iorelay` binary: parse the command line, load the config, run. Startup errors map
//! to sysexits codes (78 = configuration error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use iorelay::config::{self, LoadOptions};
use iorelay::daemon::{privileges, sockets};

/// sysexits EX_CONFIG.
const EX_CONFIG: u8 = 78;
/// sysexits EX_SOFTWARE.
const EX_SOFTWARE: u8 = 70;
/// sysexits EX_UNAVAILABLE (a listener could not be bound, …).
const EX_UNAVAILABLE: u8 = 69;
/// sysexits EX_NOPERM (the privilege drop failed).
const EX_NOPERM: u8 = 77;

/// A hardened real-time relay for unmodified socket.io clients.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file [default: /etc/iorelay/iorelay.toml if it exists, else config/default.toml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Environment profile: development, test or production [default: $IORELAY_ENV or development]
    #[arg(long = "env", global = true, value_name = "NAME")]
    env_name: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config and print the effective result (secrets redacted); exit 78 when
    /// it is invalid.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = LoadOptions::from_process(cli.config.clone(), cli.env_name.clone());
    let loaded = match config::load(&opts) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("iorelay: invalid configuration:");
            for line in err.lines() {
                eprintln!("  {line}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            print!("{}", config::validate::render(&loaded.config));
            let sources: Vec<String> = loaded
                .sources
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            eprintln!(
                "iorelay: configuration ok (environment {}, files: {})",
                loaded.environment.name(),
                if sources.is_empty() {
                    "none".to_owned()
                } else {
                    sources.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        None => run(loaded, opts),
    }
}

fn run(loaded: config::Loaded, options: LoadOptions) -> ExitCode {
    let log = iorelay::telemetry::init(&loaded.config.log);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        environment = loaded.environment.name(),
        files = ?loaded.sources,
        "starting"
    );
    // Phase 1, still single-threaded and possibly root: bind, then drop privileges.
    let server = &loaded.config.server;
    let bound = match sockets::bind(server.listen, server.admin_listen) {
        Ok(b) => b,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let identity = match privileges::plan(server.user.as_deref(), server.group.as_deref()) {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(err) = privileges::apply(identity.as_ref()) {
        tracing::error!(error = %err, "cannot drop privileges");
        return ExitCode::from(EX_NOPERM);
    }
    if let Some(id) = &identity {
        tracing::info!(user = %id.user, uid = id.uid, gid = id.gid, "dropped privileges");
    }
    // Phase 2: the runtime. One thread per process: a worker serves its connections in
    // arrival order, like the reference server, with no cross-thread hand-offs on the
    // fan-out path; more cores are used by more worker processes (`server.workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    match runtime.block_on(iorelay::daemon::run(bound, loaded, options, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}
