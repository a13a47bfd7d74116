//! The workers' private directory: where their Unix sockets (sibling bus links, forwarded
//! requests) live. Abstract socket names are visible to every local user in
//! `/proc/net/unix` and free for anyone to bind first, so a local user could squat a
//! restarting worker's name; a path under a directory that only the daemon's user can
//! enter cannot be taken by anyone else (issue 13, item 5).
//!
//! The master creates the directory after dropping privileges (so it belongs to the
//! workers' user), fresh and with a random name (`mkdir` fails on anything already
//! there, a symlink included), mode 0700, and removes it when it stops. Candidates, in
//! order: systemd's `RUNTIME_DIRECTORY`, `XDG_RUNTIME_DIR`, the temporary directory; the
//! first one where the directory can be made is used.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory, removed (with what is in it) when dropped.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Make a fresh private directory in the first usable candidate place.
    pub fn create() -> io::Result<RunDir> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no place for a runtime directory");
        for base in candidates() {
            match RunDir::create_in(&base) {
                Ok(dir) => return Ok(dir),
                Err(err) => {
                    tracing::debug!(base = %base.display(), error = %err, "no runtime directory here");
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// Make a fresh private directory under `base`.
    pub fn create_in(base: &Path) -> io::Result<RunDir> {
        let path = base.join(format!("iorelay-{}", crate::engine::sid::random_id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = RunDir { path };
        // The umask may only have narrowed it; say exactly 0700 anyway, then check what
        // was made is what we meant.
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))?;
        let meta = std::fs::symlink_metadata(&dir.path)?;
        if !meta.is_dir()
            || meta.uid() != nix::unistd::getuid().as_raw()
            || meta.mode() & 0o077 != 0
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the runtime directory is not private to this user",
            ));
        }
        Ok(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Where the directory may go, best first.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    // systemd passes a colon-separated list (one per RuntimeDirectory= name).
    if let Ok(list) = std::env::var("RUNTIME_DIRECTORY")
        && let Some(first) = list.split(':').find(|p| !p.is_empty())
    {
        out.push(PathBuf::from(first));
    }
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(xdg));
    }
    out.push(std::env::temp_dir());
    out
}

/// The socket path of a worker's service in `dir`: `bus` (sibling links) or `http`
/// (forwarded requests).
pub fn socket_path(dir: &Path, service: &str, id: u32) -> PathBuf {
    dir.join(format!("{service}-{id}"))
}

/// Listen at `path`, replacing the socket file a dead predecessor left there (only the
/// directory's owner can have put anything there).
pub fn listen_at(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dir_is_fresh_private_and_removed_on_drop() {
        let base = std::env::temp_dir();
        let a = RunDir::create_in(&base).unwrap();
        let b = RunDir::create_in(&base).unwrap();
        assert_ne!(a.path(), b.path());
        let meta = std::fs::symlink_metadata(a.path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
        let path = a.path().to_owned();
        std::fs::write(path.join("x"), b"x").unwrap();
        drop(a);
        assert!(!path.exists());
        // A base that does not exist gives an error, not a directory somewhere else.
        assert!(RunDir::create_in(&b.path().join("missing")).is_err());
    }

    #[test]
    fn listening_replaces_a_stale_socket_but_not_a_directory() {
        let dir = RunDir::create_in(&std::env::temp_dir()).unwrap();
        let path = socket_path(dir.path(), "bus", 1);
        assert_eq!(path, dir.path().join("bus-1"));
        let first = listen_at(&path).unwrap();
        drop(first);
        // The dead predecessor's file is still there: replaced, and the new one answers.
        assert!(path.exists());
        let second = listen_at(&path).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(second);
        // A directory in its place is not removed: the worker cannot listen.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(listen_at(&path).is_err());
        assert!(path.is_dir());
    }
}
