//! Starting worker processes: the master re-executes its own binary with the hidden
//! `__worker` command, handing over the public listener and one end of a control socket
//! pair as inherited file descriptors. Also the worker's side: taking those descriptors.
//!
//! The system calls go through `nix`. Three `unsafe` blocks remain, all about
//! descriptor inheritance, which has no safe interface: the child's `pre_exec` hook that
//! keeps the two descriptors open across `exec`, and the worker taking ownership of the
//! two descriptors it inherited.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A worker slot, 0-based: also the worker's node id on the bus. It travels as this type
/// everywhere in the daemon, and as its number only where it leaves it (the command
/// line, the bus, log fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

impl WorkerId {
    /// The slots of a daemon with `count` workers, in order.
    pub fn all(count: u32) -> impl Iterator<Item = WorkerId> {
        (0..count).map(WorkerId)
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a worker is told on its command line.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// Its slot.
    pub id: WorkerId,
    /// How many workers the master runs.
    pub workers: u32,
    /// The inherited public listener.
    pub listener_fd: RawFd,
    /// The inherited control socket.
    pub control_fd: RawFd,
    /// The workers' private runtime directory (see `rundir`): their Unix sockets are
    /// there.
    pub dir: std::path::PathBuf,
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
        // Kept out of argv, which every local user can read in /proc (the directory is
        // private anyway).
        .env(DIR_VAR, &args.dir)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, prctl; nix's wrappers neither allocate nor lock)
    // on the two descriptors, which stay open in the child until exec because `listener`
    // and `control` are borrowed for the whole of this function, spawn included.
    unsafe {
        cmd.pre_exec(move || {
            for fd in keep {
                let fd = BorrowedFd::borrow_raw(fd);
                let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
                fcntl(fd, FcntlArg::F_SETFD(flags - FdFlag::FD_CLOEXEC))?;
            }
            // A worker must not outlive its master.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
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
    // Close-on-exec again: nothing this worker might start inherits them.
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    fcntl(&control, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    listener.set_nonblocking(true)?;
    Ok((listener, control))
}

/// The environment variable that carries the runtime directory to a worker (not
/// `IORELAY_`-prefixed: it is no config key).
pub const DIR_VAR: &str = "IORELAYD_DIR";

/// Parse `__worker ID WORKERS LISTENER_FD CONTROL_FD` (and the runtime directory from
/// [`DIR_VAR`]).
pub fn parse(args: &[String]) -> Option<WorkerArgs> {
    match args {
        [id, workers, listener, control] => Some(WorkerArgs {
            id: WorkerId(id.parse().ok()?),
            workers: workers.parse().ok()?,
            listener_fd: listener.parse().ok()?,
            control_fd: control.parse().ok()?,
            dir: std::env::var_os(DIR_VAR)
                .filter(|d| !d.is_empty())
                .map(std::path::PathBuf::from)?,
        }),
        _ => None,
    }
}

/// The uid of the peer of a Unix stream, to refuse links from other users.
pub fn peer_uid(stream: &tokio::net::UnixStream) -> Option<u32> {
    stream.peer_cred().ok().map(|c| c.uid())
}

/// Our own uid.
pub fn own_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Send `signal` (a signal number such as `libc::SIGKILL`) to process `pid`. Best
/// effort: a process that is already gone is no error here, the master learns of its
/// exit from `wait`.
pub fn kill(pid: u32, signal: libc::c_int) {
    // Never 0 or negative: those address process groups, not one worker.
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    let Ok(signal) = Signal::try_from(signal) else {
        tracing::warn!(signal, "not a signal number: nothing sent");
        return;
    };
    if let Err(err) = nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        tracing::debug!(pid, %signal, error = %err, "kill failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::{AsFd, IntoRawFd};

    use nix::fcntl::OFlag;

    #[test]
    fn adopt_takes_the_descriptors_back_close_on_exec() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, mut other) = UnixStream::pair().unwrap();
        // As after exec: the inherited descriptors are not close-on-exec.
        fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        fcntl(&control, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        let (listener_fd, control_fd) = (listener.into_raw_fd(), control.into_raw_fd());
        let args = WorkerArgs {
            id: WorkerId(0),
            workers: 1,
            listener_fd,
            control_fd,
            dir: "/nonexistent".into(),
        };
        let (listener, control) = adopt(&args).unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let cloexec = |fd: std::os::fd::BorrowedFd<'_>| {
            FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap())
                .contains(FdFlag::FD_CLOEXEC)
        };
        assert!(cloexec(listener.as_fd()));
        assert!(cloexec(control.as_fd()));
        let fl = OFlag::from_bits_retain(fcntl(&listener, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        use std::io::{Read, Write};
        (&control).write_all(b"x").unwrap();
        let mut byte = [0];
        other.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn worker_ids_are_the_slots_in_order_and_print_as_their_number() {
        let ids: Vec<WorkerId> = WorkerId::all(3).collect();
        assert_eq!(ids, [WorkerId(0), WorkerId(1), WorkerId(2)]);
        assert_eq!(WorkerId::all(0).count(), 0);
        // On the command line, as the worker parses it back.
        assert_eq!(WorkerId(7).to_string(), "7");
    }

    #[test]
    fn kill_signals_one_process_and_ignores_the_rest() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        kill(child.id(), libc::SIGKILL);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Neither pid 0 (our process group) nor an out-of-range pid nor a bogus signal
        // number does anything.
        kill(0, libc::SIGCONT);
        kill(u32::MAX, libc::SIGCONT);
        kill(child.id(), -1);
    }
}
