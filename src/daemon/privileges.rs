//! Dropping root: after the listeners are bound and before any relay code runs (and
//! before any other thread exists), switch to the configured user and group with the
//! supplementary groups cleared, and set `no_new_privs` so that nothing this process
//! executes can regain privileges. The order and the checks follow nginx: setgroups,
//! setgid, setuid, each failure fatal, then prove root cannot be regained.
//!
//! The system calls and the passwd/group lookups go through `nix`, whose lookups grow
//! their buffer on `ERANGE` (a user with a very long group or gecos entry is still
//! found) and tell "no such entry" apart from a failed lookup (an unreachable LDAP or
//! NSS service is reported as such, not as an unknown user). No `unsafe` here.

use nix::errno::Errno;
use nix::unistd::{self, Gid, Group, Uid, User};

use super::exit;

/// Why the process could not take on its configured identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Started as root without `server.user`: refusing to serve as root.
    #[error(
        "running as root without server.user: set server.user (and optionally server.group) to the account iorelay should run as"
    )]
    RootWithoutUser,
    /// The user does not exist.
    #[error("server.user: no such user {0:?}")]
    NoSuchUser(String),
    /// The group does not exist.
    #[error("server.group: no such group {0:?}")]
    NoSuchGroup(String),
    /// The user or group database could not be read (not the same as "no such entry").
    #[error("{key}: cannot look up {name:?}: {source}")]
    Lookup {
        /// The config key whose value was looked up (`server.user`, `server.group`).
        key: &'static str,
        /// The name looked up.
        name: String,
        /// The OS error.
        source: Errno,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// Which call.
        call: &'static str,
        /// The OS error.
        source: Errno,
    },
    /// After dropping, root could be regained or the ids are not what we set.
    #[error("privilege drop did not stick: {0}")]
    NotDropped(&'static str),
}

impl Error {
    /// The exit status this failure means (see [`exit`]). The config names no usable
    /// identity: 78, fatal. The user or group database could not be read (an unreachable
    /// LDAP or NSS service): 75, a temporary failure that a restart may well get past,
    /// and that the operator must not mistake for a bug (70). The switch itself failed or
    /// did not stick: 77, fatal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::RootWithoutUser | Error::NoSuchUser(_) | Error::NoSuchGroup(_) => exit::CONFIG,
            Error::Lookup { .. } => exit::TEMPFAIL,
            Error::Call { .. } | Error::NotDropped(_) => exit::NOPERM,
        }
    }
}

/// The identity to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The gid to run with (the group's, or the user's primary group).
    pub gid: u32,
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    unistd::geteuid().is_root()
}

/// Decide who to become: `Ok(None)` means stay as started (not root: a normal user runs
/// as itself). Root without `server.user` is refused: a relay never serves as root.
pub fn plan(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, Error> {
    let Some(user) = user else {
        return if is_root() {
            Err(Error::RootWithoutUser)
        } else {
            Ok(None)
        };
    };
    let account = lookup_user(user)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => account.gid,
    };
    if !is_root() {
        // Started as a normal user, it runs as that user (under systemd, `User=` did the
        // switching already).
        let me = unistd::getuid();
        if me != account.uid {
            tracing::info!(
                configured = user,
                uid = me.as_raw(),
                "not started as root: running as the starting user, server.user not applied"
            );
        }
        return Ok(None);
    }
    Ok(Some(Identity {
        user: user.to_owned(),
        uid: account.uid.as_raw(),
        gid: gid.as_raw(),
    }))
}

/// Become `identity` (when given) and set `no_new_privs`. Call before any other thread
/// starts: `no_new_privs` is per thread and inherited only by threads created later.
pub fn apply(identity: Option<&Identity>) -> Result<(), Error> {
    if let Some(id) = identity {
        // Groups first: once the uid is dropped we may no longer change them. glibc
        // applies each of these to every thread of the process.
        unistd::setgroups(&[]).map_err(call("setgroups"))?;
        unistd::setgid(Gid::from_raw(id.gid)).map_err(call("setgid"))?;
        unistd::setuid(Uid::from_raw(id.uid)).map_err(call("setuid"))?;
        verify(id)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(call("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(())
}

/// Check, after the fact, that the drop took: every uid and gid (real, effective,
/// saved) is the configured one, no supplementary group is left, and root cannot be
/// taken back.
fn verify(id: &Identity) -> Result<(), Error> {
    let uids = unistd::getresuid().map_err(call("getresuid"))?;
    if [uids.real, uids.effective, uids.saved] != [Uid::from_raw(id.uid); 3] {
        return Err(Error::NotDropped("a user id is not the configured user's"));
    }
    let gids = unistd::getresgid().map_err(call("getresgid"))?;
    if [gids.real, gids.effective, gids.saved] != [Gid::from_raw(id.gid); 3] {
        return Err(Error::NotDropped(
            "a group id is not the configured group's",
        ));
    }
    // Some systems list the effective gid among the supplementary groups: that one is
    // ours anyway.
    let groups = unistd::getgroups().map_err(call("getgroups"))?;
    if groups.iter().any(|g| g.as_raw() != id.gid) {
        return Err(Error::NotDropped("supplementary groups remain"));
    }
    if id.uid != 0 && unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(Error::NotDropped("root could be regained"));
    }
    Ok(())
}

/// Wrap a failed call's errno with the call's name.
fn call(call: &'static str) -> impl Fn(Errno) -> Error {
    move |source| Error::Call { call, source }
}

fn lookup_user(name: &str) -> Result<User, Error> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(Error::NoSuchUser(name.to_owned())),
        Err(source) => Err(Error::Lookup {
            key: "server.user",
            name: name.to_owned(),
            source,
        }),
    }
}

fn lookup_group(name: &str) -> Result<Gid, Error> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => Err(Error::NoSuchGroup(name.to_owned())),
        Err(source) => Err(Error::Lookup {
            key: "server.group",
            name: name.to_owned(),
            source,
        }),
    }
}

/// The name of a user id, for log lines.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_group_are_named() {
        let err = plan(Some("no-such-user-iorelay-test"), None).unwrap_err();
        assert!(matches!(err, Error::NoSuchUser(_)), "{err:?}");
        assert!(err.to_string().contains("no-such-user-iorelay-test"));
        let err = plan(Some("root"), Some("no-such-group-iorelay-test")).unwrap_err();
        assert!(matches!(err, Error::NoSuchGroup(_)), "{err:?}");
        assert!(err.to_string().contains("server.group"));
    }

    #[test]
    fn a_name_with_a_nul_is_no_user() {
        let err = plan(Some("ro\0ot"), None).unwrap_err();
        assert!(matches!(err, Error::NoSuchUser(_)), "{err:?}");
    }

    #[test]
    fn root_resolves() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid.as_raw(), root.gid.as_raw()), (0, 0));
        assert_eq!(lookup_group("root").unwrap().as_raw(), 0);
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn lookup_failures_are_not_unknown_users() {
        let err = Error::Lookup {
            key: "server.user",
            name: "relay".into(),
            source: Errno::ERANGE,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("server.user: cannot look up \"relay\""),
            "{text}"
        );
        assert!(!text.contains("no such user"), "{text}");
    }

    /// Each error says once which exit status it means: the config names no usable
    /// identity (78, fatal), the user database could not be read (75, worth a restart),
    /// the switch itself failed (77, fatal).
    #[test]
    fn each_error_has_its_exit_code() {
        use crate::daemon::exit;
        let config = [
            Error::RootWithoutUser,
            Error::NoSuchUser("relay".into()),
            Error::NoSuchGroup("relay".into()),
        ];
        for err in config {
            assert_eq!(err.exit_code(), exit::CONFIG, "{err}");
        }
        let lookup = Error::Lookup {
            key: "server.group",
            name: "relay".into(),
            source: Errno::EIO,
        };
        assert_eq!(lookup.exit_code(), exit::TEMPFAIL);
        assert!(!exit::is_fatal(lookup.exit_code().into()));
        let refused = [
            Error::Call {
                call: "setgroups",
                source: Errno::EPERM,
            },
            Error::Call {
                call: "setuid",
                source: Errno::EAGAIN,
            },
            Error::NotDropped("root could be regained"),
        ];
        for err in refused {
            assert_eq!(err.exit_code(), exit::NOPERM, "{err}");
        }
    }
}
