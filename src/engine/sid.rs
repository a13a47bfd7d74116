//! Session and socket identifiers: 128 bits from the operating system's CSPRNG,
//! base64url-encoded (22 characters), so that ids are unguessable.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An Engine.IO session id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(Box<str>);

impl Sid {
    /// A fresh random id.
    pub fn random() -> Sid {
        Sid(random_id().into_boxed_str())
    }

    /// A fresh random id owned by worker `node`: its first character names the worker
    /// (so that any worker can route a request to the owner), the other 22 are random.
    pub fn random_for(node: Option<u32>) -> Sid {
        match node {
            Some(n) => Sid(format!("{}{}", node_char(n), random_id()).into_boxed_str()),
            None => Sid::random(),
        }
    }

    /// The worker that owns a client-supplied id in a multi-worker daemon (only ids of
    /// the `random_for` form: 23 characters).
    pub fn owner(sid: &str) -> Option<u32> {
        if sid.len() != 23 {
            return None;
        }
        let c = sid.bytes().next()?;
        NODE_CHARS.iter().position(|x| *x == c).map(|p| p as u32)
    }

    /// Wrap an id received from a client (only used for look-ups; never trusted).
    pub fn from_client(s: &str) -> Sid {
        Sid(s.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.0)
    }
}

/// The characters that name workers 0..64 at the front of a session id.
const NODE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn node_char(node: u32) -> char {
    NODE_CHARS[(node % 64) as usize] as char
}

/// 128 random bits as 22 base64url characters.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available on Linux");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_name_their_owner() {
        let s = Sid::random_for(Some(5));
        assert_eq!(s.as_str().len(), 23);
        assert_eq!(Sid::owner(s.as_str()), Some(5));
        assert_eq!(
            Sid::owner(Sid::random().as_str()),
            None,
            "22-character ids have no owner"
        );
        assert_eq!(Sid::owner("!bcdefghijklmnopqrstuvw"), None);
    }

    #[test]
    fn ids_are_long_and_distinct() {
        let a = Sid::random();
        let b = Sid::random();
        assert_eq!(a.as_str().len(), 22);
        assert_ne!(a, b);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
