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
/// sysexits EX_USAGE.
const EX_USAGE: u8 = 64;
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
        return worker_main(&argv[2..]);
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
        Some(Command::Status(ops)) => ops_command(&loaded, &ops, "GET", "/api/v1/status"),
        Some(Command::Reload(ops)) => ops_command(&loaded, &ops, "POST", "/api/v1/reload"),
        Some(Command::Rooms { ops, namespace }) => {
            let path = match namespace {
                Some(n) => format!("/api/v1/rooms?namespace={}", percent_encode(&n)),
                None => "/api/v1/rooms".to_owned(),
            };
            ops_command(&loaded, &ops, "GET", &path)
        }
        None => run(loaded, opts),
    }
}

/// Ask the running daemon, print its answer; exit 0 when it said yes.
fn ops_command(loaded: &config::Loaded, args: &OpsArgs, method: &str, path: &str) -> ExitCode {
    let addr = args.admin.unwrap_or(loaded.config.server.admin_listen);
    let answer = match iorelay::ops::request(addr, method, path) {
        Ok(a) => a,
        Err(err) => {
            eprintln!("iorelay: {err}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    if args.json {
        println!("{}", answer.body);
    } else if path.starts_with("/api/v1/status") {
        print!("{}", iorelay::ops::render_status(&answer.body));
    } else if path.starts_with("/api/v1/rooms") && answer.status == 200 {
        print!("{}", iorelay::ops::render_rooms(&answer.body));
    } else if path.starts_with("/api/v1/reload") {
        let body = &answer.body;
        if body["ok"] == serde_json::Value::Bool(true) {
            println!("reloaded; changed: {}", body["changed"]);
            if body["restart_required"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                println!(
                    "needs a restart to take effect: {}",
                    body["restart_required"]
                );
            }
        } else {
            eprintln!("reload rejected; the previous configuration stays in force:");
            for e in body["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", e.as_str().unwrap_or_default());
            }
        }
    } else {
        println!("{}", answer.body);
    }
    if (200..300).contains(&answer.status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
    let workers = server.workers.resolve();
    let bound = match sockets::bind(server.listen, server.admin_listen, workers) {
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
    let Some(runtime) = runtime() else {
        return ExitCode::from(EX_SOFTWARE);
    };
    let result = if workers > 1 {
        let count = u32::try_from(workers).unwrap_or(u32::MAX);
        runtime.block_on(iorelay::daemon::master::run(bound, loaded, options, count))
    } else {
        runtime.block_on(iorelay::daemon::run(bound, loaded, options, log))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(iorelay::daemon::Error::WorkerFatal(code)) => {
            ExitCode::from(u8::try_from(code).unwrap_or(EX_SOFTWARE))
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// A worker process, started by the master with `__worker ID WORKERS LFD CFD`.
fn worker_main(argv: &[String]) -> ExitCode {
    let Some(args) = iorelay::daemon::spawn::parse(argv) else {
        eprintln!("iorelay: __worker is started by the master process only");
        return ExitCode::from(EX_USAGE);
    };
    let (listener, control) = match iorelay::daemon::spawn::adopt(&args) {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!(
                "iorelay: worker {}: inherited sockets unusable: {err}",
                args.id
            );
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    // The first control message is the config; read it before anything else, byte by
    // byte, so that nothing the master sent after it (a reload) is read ahead and lost.
    let first = read_line_unbuffered(&control);
    let config = match first.ok().and_then(|l| serde_json::from_str(&l).ok()) {
        Some(iorelay::daemon::control::ToWorker::Config(config)) => *config,
        _ => {
            eprintln!("iorelay: worker {}: no config from the master", args.id);
            return ExitCode::from(EX_CONFIG);
        }
    };
    let log = iorelay::telemetry::init(&config.log);
    if let Err(err) = privileges::apply(None) {
        tracing::error!(worker = args.id, error = %err, "cannot restrict privileges");
        return ExitCode::from(EX_NOPERM);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::from(EX_SOFTWARE);
    };
    let id = args.id;
    match runtime.block_on(iorelay::daemon::worker::run(
        args, listener, control, config, log,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(worker = id, error = %err, "worker cannot serve");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// One line from a stream without reading past its end.
fn read_line_unbuffered(mut stream: &std::os::unix::net::UnixStream) -> std::io::Result<String> {
    use std::io::Read;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The async runtime: one thread per process (see `run`).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            None
        }
    }
}
