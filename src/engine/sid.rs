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
