//! The listening sockets: taken from systemd socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`) when the service was started by its socket unit, else
//! bound from the config. Binding happens before privileges are dropped, so that a
//! daemon started as root can listen on ports below 1024.
//!
//! `SO_REUSEPORT` sockets are built with `socket2`. The one `unsafe` left takes
//! ownership of a descriptor systemd passed: there is no safe way to adopt an inherited
//! descriptor.

#![allow(unsafe_code)]

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// The listeners, not yet registered with any runtime.
#[derive(Debug)]
pub struct Bound {
    /// `/socket.io/`, health, static files: one socket, or (for several workers, when
    /// not socket-activated) one `SO_REUSEPORT` socket per worker on the same address, so
    /// that the kernel spreads connections evenly instead of waking whichever worker is
    /// quickest.
    pub public: Vec<TcpListener>,
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

/// Take the listeners from systemd, or bind them as the config says (`workers`
/// public sockets when more than one).
pub fn bind(public: SocketAddr, admin: SocketAddr, workers: usize) -> Result<Bound, Error> {
    let passed = sd_notify::listen_fds_with_names()
        .map_err(|e| Error::Activation(e.to_string()))?
        .collect::<Vec<(RawFd, String)>>();
    if passed.is_empty() {
        let public = if workers > 1 {
            let first = listen_reuseport(public)?;
            let addr = first.local_addr().map_err(|source| Error::Bind {
                addr: public,
                source,
            })?;
            let mut group = vec![first];
            for _ in 1..workers {
                group.push(listen_reuseport(addr)?);
            }
            group
        } else {
            vec![listen(public)?]
        };
        return Ok(Bound {
            public,
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
        public: vec![public_listener],
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

/// Bind a listening socket with `SO_REUSEPORT` (and `SO_REUSEADDR`, as std's own
/// `TcpListener::bind` sets it), non-blocking and close-on-exec.
fn listen_reuseport(addr: SocketAddr) -> Result<TcpListener, Error> {
    let fail = |source| Error::Bind { addr, source };
    // socket2 creates the socket with SOCK_CLOEXEC: a worker inherits only the
    // descriptors `spawn` hands over on purpose.
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_reuse_port(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// The accept queue of each `SO_REUSEPORT` socket (the kernel caps it at
/// `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

    fn flags(listener: &TcpListener) -> (FdFlag, OFlag) {
        let fd = FdFlag::from_bits_truncate(fcntl(listener, FcntlArg::F_GETFD).unwrap());
        let fl = OFlag::from_bits_truncate(fcntl(listener, FcntlArg::F_GETFL).unwrap());
        (fd, fl)
    }

    #[test]
    fn one_reuseport_socket_per_worker_on_one_port() {
        let bound = bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            3,
        )
        .unwrap();
        assert!(!bound.activated);
        assert_eq!(bound.public.len(), 3);
        let port = bound.public[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for listener in &bound.public {
            assert_eq!(listener.local_addr().unwrap().port(), port);
            let (fd, fl) = flags(listener);
            assert!(fd.contains(FdFlag::FD_CLOEXEC));
            assert!(fl.contains(OFlag::O_NONBLOCK));
        }
        // Listening for real: a connection is accepted by one of the group.
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn a_taken_port_without_reuseport_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = listen_reuseport(addr).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn ipv6_reuseport() {
        // Skipped where the host has no IPv6 loopback.
        let Ok(first) = listen_reuseport("[::1]:0".parse().unwrap()) else {
            return;
        };
        let addr = first.local_addr().unwrap();
        let second = listen_reuseport(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }

    #[test]
    fn single_worker_binds_plainly() {
        let bound = bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            1,
        )
        .unwrap();
        assert_eq!(bound.public.len(), 1);
        assert!(flags(&bound.admin).1.contains(OFlag::O_NONBLOCK));
    }
}
