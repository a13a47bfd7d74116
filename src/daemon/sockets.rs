//! The listening sockets: taken from systemd socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`) when the service was started by its socket unit, else
//! bound from the config. Binding happens before privileges are dropped, so that a
//! daemon started as root can listen on ports below 1024.

#![allow(unsafe_code)]

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

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

/// Bind a listening socket with `SO_REUSEPORT` (and `SO_REUSEADDR`), non-blocking.
fn listen_reuseport(addr: SocketAddr) -> Result<TcpListener, Error> {
    let fail = |source| Error::Bind { addr, source };
    let last = || std::io::Error::last_os_error();
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; the descriptor is owned by the listener below.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(fail(last()));
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; from here the listener closes it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: the option value points to a live c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(fail(last()));
        }
    }
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a valid sockaddr_in and its size is passed.
            unsafe {
                libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sin6` is a valid sockaddr_in6 and its size is passed.
            unsafe {
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        return Err(fail(last()));
    }
    // SAFETY: listen on our bound socket.
    if unsafe { libc::listen(fd, 1024) } < 0 {
        return Err(fail(last()));
    }
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
