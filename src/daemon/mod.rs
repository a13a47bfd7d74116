//! Process-level concerns, in execution phases (as pingora's server does): bind the
//! listeners or take them from systemd ([`sockets`]), drop root ([`privileges`]), then
//! serve — as one process ([`single`], `server.workers = 1`) or as a master ([`master`])
//! supervising worker processes ([`worker`], started by [`spawn`], tracked in
//! [`workers`], restarted by the [`restart`] policy, watched by the [`heartbeat`],
//! talking over [`control`]). [`bootstrap`] is how a process enters either role.
//! Signals become intents ([`signals`]); a reload is validated in one place ([`reload`]);
//! systemd hears READY, RELOADING, STOPPING, STATUS and WATCHDOG ([`notify`]); the
//! accept loop lives in [`listener`], the ordered shutdown in [`shutdown`]; what serves
//! clients is built in [`stack`]; [`memory`] gives freed memory back after a connection
//! peak; [`about`] holds the daemon's own facts for the status document. The only
//! modules with `unsafe` are `sockets` (adopting systemd's descriptors), `spawn`
//! (descriptor inheritance) and `memory` (`malloc_trim`): five blocks, none with a safe
//! wrapper in std or nix.
//!
//! This file is the map and the one error type of the layer, with the exit code each
//! error means ([`Error::exit_code`]).

pub mod about;
pub mod bootstrap;
pub mod control;
pub mod heartbeat;
pub mod listener;
pub mod master;
pub mod memory;
pub mod notify;
pub mod presence;
pub mod privileges;
pub mod reload;
pub mod restart;
pub mod rundir;
pub mod shutdown;
pub mod signals;
pub mod single;
pub mod sockets;
pub mod spawn;
pub mod stack;
pub mod worker;
pub mod workers;

pub use stack::{Stack, engine_settings};

/// The exit statuses of the daemon (sysexits.h), and which of them a supervisor must
/// not answer with a restart.
pub mod exit {
    /// EX_USAGE: a command line only the master may write (`__worker`).
    pub const USAGE: u8 = 64;
    /// EX_UNAVAILABLE: a listener could not be bound (documented in iorelay(8)).
    pub const UNAVAILABLE: u8 = 69;
    /// EX_SOFTWARE: anything else; restarting may well help.
    pub const SOFTWARE: u8 = 70;
    /// EX_TEMPFAIL: a service the daemon depends on failed for now (the user database
    /// could not be read); restarting may well help.
    pub const TEMPFAIL: u8 = 75;
    /// EX_NOPERM: the process could not take on its identity.
    pub const NOPERM: u8 = 77;
    /// EX_CONFIG: the configuration cannot work as written.
    pub const CONFIG: u8 = 78;

    /// Whether a process that exited with `code` would fail the same way when started
    /// again: the master does not respawn such a worker, and systemd's
    /// `RestartPreventExitStatus=77 78` does not restart such a daemon.
    pub fn is_fatal(code: i32) -> bool {
        code == i32::from(CONFIG) || code == i32::from(NOPERM)
    }
}

/// Why the daemon, or one of its workers, cannot start or keep serving. Each variant
/// says what failed; [`Error::exit_code`] classifies it once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listeners could not be bound or taken from systemd.
    #[error(transparent)]
    Bind(#[from] sockets::Error),
    /// `server.user`/`server.group` name no usable identity, or it could not be looked
    /// up.
    #[error(transparent)]
    Identity(privileges::Error),
    /// The identity could not be taken on (or restricted, in a worker).
    #[error("cannot drop privileges: {0}")]
    Privileges(privileges::Error),
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// Binding succeeded but returned no public listener.
    #[error("no public listener was bound")]
    NoPublicListener,
    /// A bound listener could not be registered with the runtime.
    #[error("cannot use the listening socket: {0}")]
    Listener(std::io::Error),
    /// The relay could not be built from the config.
    #[error(transparent)]
    Relay(#[from] crate::relay::Error),
    /// The server API's tokens could not be read (`api.token_file`) or are unusable.
    #[error(transparent)]
    ApiTokens(#[from] crate::api::tokens::Error),
    /// The webhooks' secret file could not be read.
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::Error),
    /// The cluster's Redis client could not be made (`cluster.url`, `password_file`).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::redis::Error),
    /// The master could not create a worker's control socket pair.
    #[error("cannot create a worker's control channel: {0}")]
    ControlChannel(std::io::Error),
    /// The master could not start a worker process.
    #[error("cannot start a worker process: {0}")]
    Spawn(std::io::Error),
    /// `__worker` was run by hand, not by the master.
    #[error("__worker is started by the master process only")]
    NotAWorker,
    /// A worker could not take the descriptors its master handed over.
    #[error("inherited sockets unusable: {0}")]
    Inherited(std::io::Error),
    /// A worker's control channel failed.
    #[error("control channel: {0}")]
    Control(std::io::Error),
    /// A worker's control channel did not start with the config.
    #[error("control channel: {0}")]
    FirstMessage(#[from] bootstrap::FirstMessage),
    /// The master could not make the workers' private runtime directory.
    #[error("cannot create the runtime directory for the workers' sockets: {0}")]
    RunDir(std::io::Error),
    /// A worker could not listen for its siblings' bus links.
    #[error("cannot listen for links from sibling workers: {0}")]
    Link(std::io::Error),
    /// A worker exited with a code that restarting cannot fix; the daemon exits with it.
    #[error("a worker exited with status {0}")]
    WorkerFatal(u8),
}

impl Error {
    /// The process exit status this error means (see [`exit`]): configuration 78,
    /// permission 77, binding 69, an identity problem as [`privileges::Error::exit_code`]
    /// says, a fatal worker's own code, everything else 70 (worth a restart).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Identity(err) | Error::Privileges(err) => err.exit_code(),
            Error::Relay(_) | Error::ApiTokens(_) | Error::Webhooks(_) | Error::Cluster(_) => {
                exit::CONFIG
            }
            Error::Bind(_) => exit::UNAVAILABLE,
            Error::NotAWorker => exit::USAGE,
            Error::WorkerFatal(code) => *code,
            Error::Runtime(_)
            | Error::Signals(_)
            | Error::NoPublicListener
            | Error::Listener(_)
            | Error::ControlChannel(_)
            | Error::Spawn(_)
            | Error::Inherited(_)
            | Error::Control(_)
            | Error::FirstMessage(_)
            | Error::RunDir(_)
            | Error::Link(_) => exit::SOFTWARE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::AddrInUse)
    }

    #[test]
    fn only_configuration_and_permission_are_fatal() {
        let restartable = [
            Error::Runtime(io()),
            Error::Signals(io()),
            Error::NoPublicListener,
            Error::Listener(io()),
            Error::ControlChannel(io()),
            Error::Spawn(io()),
            Error::Inherited(io()),
            Error::Control(io()),
            Error::Link(io()),
            Error::FirstMessage(bootstrap::FirstMessage::NotConfig),
        ];
        for err in restartable {
            assert_eq!(err.exit_code(), exit::SOFTWARE, "{err}");
            assert!(!exit::is_fatal(err.exit_code().into()), "{err}");
        }
        let config = Error::Identity(privileges::Error::RootWithoutUser);
        assert_eq!(config.exit_code(), exit::CONFIG);
        let perm = Error::Privileges(privileges::Error::NotDropped("root could be regained"));
        assert_eq!(perm.exit_code(), exit::NOPERM);
        // A user database that cannot be read is no configuration error: restarted.
        let lookup = Error::Identity(privileges::Error::Lookup {
            key: "server.user",
            name: "relay".into(),
            source: nix::errno::Errno::EIO,
        });
        assert_eq!(lookup.exit_code(), exit::TEMPFAIL);
        assert!(!exit::is_fatal(lookup.exit_code().into()));
        assert!(exit::is_fatal(config.exit_code().into()));
        assert!(exit::is_fatal(perm.exit_code().into()));
        assert_eq!(Error::WorkerFatal(78).exit_code(), 78);
        assert!(!exit::is_fatal(0) && !exit::is_fatal(1) && !exit::is_fatal(137));
    }
}
