//! The listening sockets: taken from systemd socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`) when the service was started by its socket unit, else
//! bound from the config. Binding happens before privileges are dropped, so that a
//! daemon started as root can listen on ports below 1024.

#![allow(unsafe_code)]

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

/// The two listeners, not yet registered with any runtime.
#[derive(Debug)]
pub struct Bound {
    /// `/socket.io/`, health, static files.
    pub public: TcpListener,
    /// Health, readiness, metrics, the API.
    pub admin: TcpListener,
    /// Whether systemd handed us (at least) the public socket.
    pub activated: bool,
}

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding an address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The sockets systemd passed are unusable.
    #[error("socket activation: {0}")]
    Activation(String),
}

/// Take the listeners from systemd, or bind them as the config says.
pub fn bind(public: SocketAddr, admin: SocketAddr) -> Result<Bound, Error> {
    let passed = sd_notify::listen_fds_with_names()
        .map_err(|e| Error::Activation(e.to_string()))?
        .collect::<Vec<(RawFd, String)>>();
    if passed.is_empty() {
        return Ok(Bound {
            public: listen(public)?,
            admin: listen(admin)?,
            activated: false,
        });
    }
    // Named sockets (FileDescriptorName=public / admin) go where their name says;
    // unnamed ones are taken in order: public, then admin.
    let by_name = |wanted: &str, position: usize| {
        passed
            .iter()
            .find(|(_, name)| name == wanted)
            .or_else(|| {
                let named = passed.iter().any(|(_, n)| n == "public" || n == "admin");
                (!named).then(|| passed.get(position)).flatten()
            })
            .map(|(fd, _)| *fd)
    };
    let public_fd = by_name("public", 0)
        .ok_or_else(|| Error::Activation("no socket named \"public\" was passed".into()))?;
    let admin_fd = by_name("admin", 1);
    let public_listener = adopt(public_fd)?;
    let admin_listener = match admin_fd {
        Some(fd) => adopt(fd)?,
        None => listen(admin)?,
    };
    Ok(Bound {
        public: public_listener,
        admin: admin_listener,
        activated: true,
    })
}

fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(listener)
}

fn adopt(fd: RawFd) -> Result<TcpListener, Error> {
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID matched, checked by
    // sd_notify) and nothing else in the process owns it; we take ownership once.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Activation(format!("fd {fd} is not a listening TCP socket: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(listener)
}
