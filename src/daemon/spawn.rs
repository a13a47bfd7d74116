//! Starting worker processes: the master re-executes its own binary with the hidden
//! `__worker` command, handing over the public listener and one end of a control socket
//! pair as inherited file descriptors. Also the worker's side: taking those descriptors.
//!
//! One of the four modules in the crate with `unsafe` (descriptor inheritance; see
//! `daemon`).

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// What a worker is told on its command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// Its slot, 0-based; also its node id on the bus.
    pub id: u32,
    /// How many workers the master runs.
    pub workers: u32,
    /// The inherited public listener.
    pub listener_fd: RawFd,
    /// The inherited control socket.
    pub control_fd: RawFd,
    /// The host's bus name: workers find each other at abstract Unix addresses derived
    /// from it.
    pub bus: String,
}

/// Start a worker. `listener` and `control` stay open across `exec` in the child only.
pub fn worker(
    args: &WorkerArgs,
    listener: &std::net::TcpListener,
    control: &OwnedFd,
) -> std::io::Result<tokio::process::Child> {
    let keep = [listener.as_raw_fd(), control.as_raw_fd()];
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg("__worker")
        .arg(args.id.to_string())
        .arg(args.workers.to_string())
        .arg(keep[0].to_string())
        .arg(keep[1].to_string())
        // The bus name keys the workers' abstract sockets: kept out of argv, which every
        // local user can read in /proc.
        .env(BUS_VAR, &args.bus)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, prctl) on descriptors that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            for fd in keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // A worker must not outlive its master.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The worker's side: take the inherited descriptors (once, at start).
pub fn adopt(args: &WorkerArgs) -> std::io::Result<(std::net::TcpListener, UnixStream)> {
    // SAFETY: the master passed these descriptors to this process for exactly this use;
    // nothing else here owns them, and each is taken once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(args.listener_fd) };
    // SAFETY: as above.
    let control = unsafe { UnixStream::from_raw_fd(args.control_fd) };
    for fd in [args.listener_fd, args.control_fd] {
        // SAFETY: fcntl on a descriptor we own; marks it close-on-exec again.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    listener.set_nonblocking(true)?;
    Ok((listener, control))
}

/// The environment variable that carries the bus name to a worker (not `IORELAY_`-prefixed:
/// it is no config key).
pub const BUS_VAR: &str = "IORELAYD_BUS";

/// Parse `__worker ID WORKERS LISTENER_FD CONTROL_FD` (and the bus name from
/// [`BUS_VAR`]).
pub fn parse(args: &[String]) -> Option<WorkerArgs> {
    match args {
        [id, workers, listener, control] => Some(WorkerArgs {
            id: id.parse().ok()?,
            workers: workers.parse().ok()?,
            listener_fd: listener.parse().ok()?,
            control_fd: control.parse().ok()?,
            bus: std::env::var(BUS_VAR).ok().filter(|b| !b.is_empty())?,
        }),
        _ => None,
    }
}

/// The abstract Unix address worker `id` of bus `bus` listens on for peer links.
pub fn bus_address(bus: &str, id: u32) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(format!("iorelay-{bus}-{id}").as_bytes())
}

/// The uid of the peer of a Unix stream, to refuse links from other users.
pub fn peer_uid(stream: &tokio::net::UnixStream) -> Option<u32> {
    stream.peer_cred().ok().map(|c| c.uid())
}

/// Our own uid.
pub fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Send `signal` to process `pid`.
pub fn kill(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill with a positive pid and a valid signal number has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
}
