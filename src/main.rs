//! The `iorelay` binary, as a table of contents: parse the command line, load the config,
//! then run the daemon (`daemon::bootstrap`), a worker (`__worker`, started by the
//! master), `check-config`, or an ops subcommand against a running daemon (`ops`). Every
//! failure becomes a sysexits code: 78 for a configuration error (see `daemon::exit`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use iorelay::config::{self, LoadOptions};
use iorelay::daemon::{bootstrap, exit};
use iorelay::ops;

/// What `--help` says of the environment variables.
const ENVIRONMENT: &str = "Environment:
  IORELAY_ENV                 the profile, as --env
  IORELAY_<SECTION>__<KEY>    a config key, over the files: IORELAY_SERVER__LISTEN=0.0.0.0:3000,
                              IORELAY_SERVER__WORKERS=4 (an unknown key is an error)
  IORELAY_TOKEN               the server API token of status, reload, rooms, sockets, emit, disconnect
  Other IORELAY_* variables (without a double underscore) are ignored.";

/// A hardened real-time relay for unmodified socket.io clients.
#[derive(Debug, Parser)]
#[command(version, about, after_help = ENVIRONMENT)]
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
    /// Talk to a running daemon through its admin listener.
    #[command(flatten)]
    Ops(Box<ops::commands::Command>),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__worker") {
        return exit_with(bootstrap::worker(&argv[2..]), "worker cannot serve");
    }
    let cli = Cli::parse();
    let opts = LoadOptions::from_process(cli.config.clone(), cli.env_name.clone());
    let loaded = match config::load(&opts) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("iorelay: invalid configuration:");
            for line in err.lines() {
                eprintln!("  {line}");
            }
            return ExitCode::from(exit::CONFIG);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            // The files the daemon cannot start without (read, not only named).
            let files = iorelay::cluster::redis::tls::check(&loaded.config.cluster);
            if !files.is_empty() {
                eprintln!("iorelay: invalid configuration:");
                for (key, reason) in files {
                    eprintln!("  {key}: {reason}");
                }
                return ExitCode::from(exit::CONFIG);
            }
            print!("{}", config::validate::render(&loaded.config));
            let files: Vec<String> = loaded
                .sources
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let files = if files.is_empty() {
                "none".to_owned()
            } else {
                files.join(", ")
            };
            let env = loaded.environment.name();
            eprintln!("iorelay: configuration ok (environment {env}, files: {files})");
            ExitCode::SUCCESS
        }
        Some(Command::Ops(command)) => ops::commands::run(&loaded, *command),
        None => exit_with(bootstrap::daemon(loaded, opts), "cannot start"),
    }
}

/// The exit status of a daemon or worker run; a failure is logged first (a worker's
/// fatal exit was logged by the master when it happened).
fn exit_with(result: Result<(), iorelay::daemon::Error>, what: &str) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    if matches!(err, iorelay::daemon::Error::WorkerFatal(_)) {
        // Already said.
    } else if tracing::dispatcher::has_been_set() {
        tracing::error!(error = %err, "{what}");
    } else {
        eprintln!("iorelay: {what}: {err}");
    }
    ExitCode::from(err.exit_code())
}
