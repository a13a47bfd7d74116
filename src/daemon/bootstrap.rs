//! How a process enters its role. The daemon: bind the listeners (or take them from
//! systemd) and drop privileges while still single-threaded and possibly root, then build
//! the runtime and serve as one process or as a master. A worker (the hidden `__worker`
//! command the master runs): take the inherited descriptors, read its config from the
//! master, restrict privileges, then serve. Every failure is an [`Error`], whose
//! [`exit_code`](Error::exit_code) the binary exits with.

use std::io::Read;
use std::os::unix::net::UnixStream;

use super::control::ToWorker;
use super::{Error, master, privileges, single, sockets, spawn, worker};
use crate::cluster::NodeId;
use crate::config::{Config, LoadOptions, Loaded};
use crate::relay::recovery::Key;

/// Why a worker did not get its config from the master's first control message.
#[derive(Debug, thiserror::Error)]
pub enum FirstMessage {
    /// The channel failed, or the master closed it before the message was complete.
    #[error("cannot read the first message: {0}")]
    Read(std::io::Error),
    /// It is not a control message this worker understands (another version's?).
    #[error("the first message is unreadable: {0}")]
    Unreadable(serde_json::Error),
    /// It is a control message, but not the config, key and node id (or the key is
    /// malformed, or the node id empty).
    #[error("the first message is not the config")]
    NotConfig,
}

/// Run the daemon with `loaded`, until it is told to stop.
pub fn daemon(loaded: Loaded, options: LoadOptions) -> Result<(), Error> {
    let log = crate::telemetry::init(&loaded.config.log);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        environment = loaded.environment.name(),
        files = ?loaded.sources,
        "starting"
    );
    // Phase 1, still single-threaded and possibly root: bind, then drop privileges.
    let server = &loaded.config.server;
    let workers = server.workers.resolve();
    let bound = sockets::bind(server.listen, server.admin_listen, workers)?;
    let identity = privileges::plan(server.user.as_deref(), server.group.as_deref())
        .map_err(Error::Identity)?;
    privileges::apply(identity.as_ref()).map_err(Error::Privileges)?;
    if let Some(id) = &identity {
        tracing::info!(user = %id.user, uid = id.uid, gid = id.gid, "dropped privileges");
    }
    // Phase 2: the runtime.
    let runtime = runtime()?;
    if workers > 1 {
        let count = u32::try_from(workers).unwrap_or(u32::MAX);
        runtime.block_on(master::run(bound, loaded, options, count))
    } else {
        runtime.block_on(single::run(bound, loaded, options, log))
    }
}

/// Run a worker process, started by the master with `__worker ID WORKERS LFD CFD`
/// (`argv` is what follows `__worker`).
pub fn worker(argv: &[String]) -> Result<(), Error> {
    let args = spawn::parse(argv).ok_or(Error::NotAWorker)?;
    let (listener, control) = spawn::adopt(&args).map_err(Error::Inherited)?;
    let (config, key, node) = first_config(&control)?;
    let log = crate::telemetry::init(&config.log);
    privileges::apply(None).map_err(Error::Privileges)?;
    let runtime = runtime()?;
    let first = worker::First { config, key, node };
    runtime.block_on(worker::run(args, listener, control, first, log))
}

/// The config, pid key and node id the master sends first. Read before anything else,
/// byte by byte, so that nothing the master sent after it (a reload) is read ahead and
/// lost.
fn first_config(control: &UnixStream) -> Result<(Config, Key, NodeId), FirstMessage> {
    let line = read_line_unbuffered(control).map_err(FirstMessage::Read)?;
    match serde_json::from_str(&line).map_err(FirstMessage::Unreadable)? {
        ToWorker::Start { config, key, node } => {
            let key = Key::from_text(&key).ok_or(FirstMessage::NotConfig)?;
            // Every process of the host must publish as the same node.
            if node.is_empty() {
                return Err(FirstMessage::NotConfig);
            }
            let node = NodeId(node);
            Ok((*config, key, node))
        }
        _ => Err(FirstMessage::NotConfig),
    }
}

/// One line from a stream without reading past its end.
fn read_line_unbuffered(mut stream: &UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            if line.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8(line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The async runtime: one thread per process. A worker serves its connections in arrival
/// order, like the reference server, with no cross-thread hand-offs on the fan-out path;
/// more cores are used by more worker processes (`server.workers`).
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_one_line_and_leaves_the_rest() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"first\nsecond\n").unwrap();
        assert_eq!(read_line_unbuffered(&b).unwrap(), "first");
        drop(a);
        assert_eq!(read_line_unbuffered(&b).unwrap(), "second");
        assert!(read_line_unbuffered(&b).is_err(), "end of stream, no line");
    }

    #[test]
    fn the_first_message_must_be_the_config() {
        let first = |bytes: &[u8]| {
            let (mut a, b) = UnixStream::pair().unwrap();
            a.write_all(bytes).unwrap();
            drop(a);
            first_config(&b)
        };
        let key = Key::random();
        let start = crate::daemon::control::encode(&ToWorker::Start {
            config: Box::default(),
            key: key.to_text(),
            node: "n1".to_owned(),
        });
        assert_eq!(
            first(start.as_bytes()).unwrap(),
            (Config::default(), key, NodeId("n1".to_owned()))
        );
        let reload = crate::daemon::control::encode(&ToWorker::Config(Box::default()));
        assert!(matches!(
            first(reload.as_bytes()),
            Err(FirstMessage::NotConfig)
        ));
        let ping = crate::daemon::control::encode(&ToWorker::Ping(1));
        assert!(matches!(
            first(ping.as_bytes()),
            Err(FirstMessage::NotConfig)
        ));
        assert!(matches!(
            first(b"{\"nonsense\n"),
            Err(FirstMessage::Unreadable(_))
        ));
        assert!(matches!(first(b""), Err(FirstMessage::Read(_))));
        // Each is a restartable failure of the worker, not a configuration error.
        let err = Error::from(FirstMessage::NotConfig);
        assert_eq!(
            err.to_string(),
            "control channel: the first message is not the config"
        );
        assert_eq!(err.exit_code(), crate::daemon::exit::SOFTWARE);
    }
}
