//! The `iorelay` binary, as a table of contents: parse the command line, load the config,
//! then run the daemon (`daemon::bootstrap`), a worker (`__worker`, started by the
//! master), `check-config`, or an ops subcommand against a running daemon (`ops`). Every
//! failure becomes a sysexits code: 78 for a configuration error (see `daemon::exit`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use iorelay::config::{self, LoadOptions};
use iorelay::daemon::{bootstrap, exit};
use iorelay::ops::{self, Call, Printed};

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
    /// Show a running daemon's state (through its admin listener).
    Status(OpsArgs),
    /// Make a running daemon reload its config, as SIGHUP does, and show the outcome.
    Reload(OpsArgs),
    /// List a running daemon's rooms with their member counts.
    Rooms {
        #[command(flatten)]
        ops: OpsArgs,
        /// Only this namespace (for example "/chat").
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
}

/// How to reach a running daemon.
#[derive(Debug, clap::Args)]
struct OpsArgs {
    /// The daemon's admin listener [default: server.admin_listen from the config]
    #[arg(long, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
    /// Print the daemon's JSON answer as is.
    #[arg(long)]
    json: bool,
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
        Some(Command::Status(args)) => ops_command(&loaded, &args, &Call::Status),
        Some(Command::Reload(args)) => ops_command(&loaded, &args, &Call::Reload),
        Some(Command::Rooms {
            ops: args,
            namespace,
        }) => ops_command(&loaded, &args, &Call::Rooms { namespace }),
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

/// Ask the running daemon, print its answer; exit 0 when it said yes.
fn ops_command(loaded: &config::Loaded, args: &OpsArgs, call: &Call) -> ExitCode {
    let addr = args.admin.unwrap_or(loaded.config.server.admin_listen);
    let answer = match ops::request(addr, call.method(), &call.path()) {
        Ok(a) => a,
        Err(err) => {
            eprintln!("iorelay: {err}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    match call.render(&answer) {
        _ if args.json => println!("{}", answer.body),
        Printed::Out(text) => print!("{text}"),
        Printed::Err(text) => eprint!("{text}"),
    }
    if (200..300).contains(&answer.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
