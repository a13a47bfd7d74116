//! Dropping root: after the listeners are bound and before any relay code runs (and
//! before any other thread exists), switch to the configured user and group with the
//! supplementary groups cleared, and set `no_new_privs` so that nothing this process
//! executes can regain privileges. The order and the checks follow nginx: setgroups,
//! setgid, setuid, each failure fatal, then prove root cannot be regained.
//!
//! This is one of the four modules in the crate with `unsafe` (libc calls; see `daemon`).

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};

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
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// Which call.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// After dropping, root could be regained or the ids are not what we set.
    #[error("privilege drop did not stick: {0}")]
    NotDropped(&'static str),
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
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
    let (uid, primary_gid) = lookup_user(user)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => primary_gid,
    };
    if !is_root() {
        // Started as a normal user, it runs as that user (under systemd, `User=` did the
        // switching already).
        // SAFETY: getuid has no preconditions and cannot fail.
        let me = unsafe { libc::getuid() };
        if me != uid {
            tracing::info!(
                configured = user,
                uid = me,
                "not started as root: running as the starting user, server.user not applied"
            );
        }
        return Ok(None);
    }
    Ok(Some(Identity {
        user: user.to_owned(),
        uid,
        gid,
    }))
}

/// Become `identity` (when given) and set `no_new_privs`. Call before any other thread
/// starts: `no_new_privs` is per thread and inherited only by threads created later.
pub fn apply(identity: Option<&Identity>) -> Result<(), Error> {
    if let Some(id) = identity {
        // SAFETY: an empty list with a null pointer is the documented way to clear the
        // supplementary groups.
        check("setgroups", unsafe { libc::setgroups(0, std::ptr::null()) })?;
        // SAFETY: plain syscall wrappers with integer arguments; glibc applies them to
        // every thread of the process.
        check("setgid", unsafe { libc::setgid(id.gid) })?;
        // SAFETY: as above.
        check("setuid", unsafe { libc::setuid(id.uid) })?;
        verify(id)?;
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes the value 1 and four unused zero arguments.
    check("prctl(PR_SET_NO_NEW_PRIVS)", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })?;
    Ok(())
}

fn verify(id: &Identity) -> Result<(), Error> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live u32 locals.
    check("getresuid", unsafe {
        libc::getresuid(&mut r, &mut e, &mut s)
    })?;
    if [r, e, s] != [id.uid; 3] {
        return Err(Error::NotDropped("a user id is not the configured user's"));
    }
    // SAFETY: as above.
    check("getresgid", unsafe {
        libc::getresgid(&mut r, &mut e, &mut s)
    })?;
    if [r, e, s] != [id.gid; 3] {
        return Err(Error::NotDropped(
            "a group id is not the configured group's",
        ));
    }
    // SAFETY: a null list with size 0 asks only for the count.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if groups > 1 {
        return Err(Error::NotDropped("supplementary groups remain"));
    }
    // SAFETY: setuid with an integer; it must fail now that we are not root.
    if id.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(Error::NotDropped("root could be regained"));
    }
    Ok(())
}

fn check(call: &'static str, rc: libc::c_int) -> Result<(), Error> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Call {
            call,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Size of the buffer for `getpwnam_r`/`getgrnam_r` string fields.
const LOOKUP_BUFFER: usize = 16 * 1024;

fn lookup_user(name: &str) -> Result<(u32, u32), Error> {
    let cname = CString::new(name).map_err(|_| Error::NoSuchUser(name.to_owned()))?;
    let mut buf = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: passwd is plain old data; zeroed is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the right type and `buf.len()` is the
    // buffer's true size; the call writes only within them.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(Error::NoSuchUser(name.to_owned()));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn lookup_group(name: &str) -> Result<u32, Error> {
    let cname = CString::new(name).map_err(|_| Error::NoSuchGroup(name.to_owned()))?;
    let mut buf = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: group is plain old data; zeroed is a valid (empty) value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(Error::NoSuchGroup(name.to_owned()));
    }
    Ok(grp.gr_gid)
}

/// The name of a user id, for log lines.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: as in `lookup_user`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_and_group_are_named() {
        let err = plan(Some("no-such-user-iorelay-test"), None).unwrap_err();
        assert!(err.to_string().contains("no-such-user-iorelay-test"));
        let err = plan(Some("root"), Some("no-such-group-iorelay-test")).unwrap_err();
        assert!(err.to_string().contains("server.group"));
    }

    #[test]
    fn root_resolves() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
