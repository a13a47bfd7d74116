//! The private id (`pid`) that the CONNECT answer of a namespace with `recovery` carries,
//! and that the client sends back (`auth.pid`) to claim its socket after a drop.
//!
//! A pid is `<socket id>.<connect time, ms, base 10>.<tag>`: the tag is a truncated
//! HMAC-SHA256 of the namespace, the socket id and the time under a key that every
//! process of the host shares (the master makes it at start and hands it to each
//! worker). So any worker can tell which socket a pid names, and that it was minted
//! here, without asking anyone; the socket id alone (which other clients see in
//! `$members` and `meta`) claims nothing. A key made at start means a pid does not
//! outlive the daemon — neither does the state it would claim.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest pid looked at; anything longer is not one of ours.
pub const MAX_PID: usize = 160;

/// Bytes of the HMAC kept in the tag (128 bits).
const TAG_BYTES: usize = 16;

/// The host's pid key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Default for Key {
    /// A fresh random key (a single process's, or a master's).
    fn default() -> Key {
        Key::random()
    }
}

impl Key {
    /// A fresh random key.
    pub fn random() -> Key {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source is available on Linux");
        Key(bytes)
    }

    /// As text, for the master's first message to a worker.
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// From [`to_text`](Key::to_text)'s form.
    pub fn from_text(text: &str) -> Option<Key> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Key(bytes.try_into().ok()?))
    }

    fn tag(&self, nsp: &str, sid: &str, since_ms: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(nsp.as_bytes());
        mac.update(b"\0");
        mac.update(sid.as_bytes());
        mac.update(b"\0");
        mac.update(since_ms.to_string().as_bytes());
        mac
    }

    /// The pid of socket `sid` of `nsp`, connected at `since_ms`.
    pub fn mint(&self, nsp: &str, sid: &str, since_ms: u64) -> String {
        let digest = self.tag(nsp, sid, since_ms).finalize().into_bytes();
        format!(
            "{sid}.{since_ms}.{}",
            URL_SAFE_NO_PAD.encode(&digest[..TAG_BYTES])
        )
    }

    /// The socket a pid of `nsp` names, if this host minted it.
    pub fn open(&self, nsp: &str, pid: &str) -> Option<Claim> {
        if pid.len() > MAX_PID {
            return None;
        }
        let mut parts = pid.rsplitn(3, '.');
        let tag = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let since_ms: u64 = parts.next()?.parse().ok()?;
        let sid = parts.next()?;
        if sid.is_empty() || tag.len() != TAG_BYTES {
            return None;
        }
        self.tag(nsp, sid, since_ms)
            .verify_truncated_left(&tag)
            .ok()?;
        Some(Claim {
            sid: sid.to_owned(),
            since_ms,
        })
    }
}

/// What a valid pid says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The socket id.
    pub sid: String,
    /// When the socket connected, ms since the Unix epoch.
    pub since_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_pid_opens_to_its_socket_only_under_its_key_and_namespace() {
        let key = Key::random();
        let pid = key.mint("/chat", "AbC_d-1", 1_733_000_000_123);
        assert_eq!(
            key.open("/chat", &pid),
            Some(Claim {
                sid: "AbC_d-1".into(),
                since_ms: 1_733_000_000_123
            })
        );
        assert_eq!(key.open("/other", &pid), None);
        assert_eq!(Key::random().open("/chat", &pid), None);
        let forged = pid.replacen("AbC_d-1", "AbC_d-2", 1);
        assert_eq!(key.open("/chat", &forged), None);
        let later = pid.replacen("123", "124", 1);
        assert_eq!(key.open("/chat", &later), None);
    }

    #[test]
    fn garbage_is_no_claim() {
        let key = Key::random();
        for pid in [
            "",
            ".",
            "..",
            "a.b.c",
            "x.1.",
            &"x".repeat(MAX_PID + 1),
            "a.-1.AAAA",
        ] {
            assert_eq!(key.open("/", pid), None, "{pid:?}");
        }
    }

    #[test]
    fn the_key_travels_as_text() {
        let key = Key::random();
        assert_eq!(Key::from_text(&key.to_text()), Some(key));
        assert_eq!(Key::from_text("short"), None);
    }
}
