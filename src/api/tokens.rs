//! The server API's bearer tokens: `[api] tokens` and the lines of `[api] token_file`,
//! read when the config is loaded or reloaded (never per request), and checked in
//! constant time against the `Authorization: Bearer …` header.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Shortest token accepted: a guessable one is refused when the config is read.
pub const MIN_LEN: usize = 16;

/// The token the development profile configures, logged at start so that a checkout's
/// `iorelay status` and curl work out of the box. Never accepted in production.
pub const DEVELOPMENT: &str = "iorelay-development-token";

/// Why the tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token file could not be read.
    #[error("api.token_file: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token is not usable.
    #[error("{place}: {reason}")]
    Bad {
        /// Where it came from (`api.tokens[0]`, `/etc/iorelay/api-token line 3`).
        place: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The accepted tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    accepted: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} accepted)", self.accepted.len())
    }
}

impl Tokens {
    /// The inline tokens and those of `file` (one a line; blank lines and lines starting
    /// with `#` are skipped).
    pub fn load(inline: &[String], file: Option<&Path>) -> Result<Tokens, Error> {
        let mut accepted = Vec::new();
        for (i, token) in inline.iter().enumerate() {
            accepted.push(checked(token, || format!("api.tokens[{i}]"))?);
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let place = || format!("api.token_file {} line {}", path.display(), i + 1);
                accepted.push(checked(line, place)?);
            }
        }
        Ok(Tokens { accepted })
    }

    /// Whether no token is configured (the API then refuses every request).
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }

    /// Whether the development token is among them.
    pub fn has_development_token(&self) -> bool {
        self.accepted.iter().any(|t| t == DEVELOPMENT.as_bytes())
    }

    /// Whether an `Authorization` header value carries an accepted token. Every token is
    /// compared in full, whichever matches, so the time taken says nothing about them
    /// (beyond their lengths).
    pub fn admit(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization.and_then(bearer) else {
            return false;
        };
        let mut any = subtle::Choice::from(0);
        for token in &self.accepted {
            any |= token.as_slice().ct_eq(given);
        }
        any.into()
    }
}

/// The token of a `Bearer` credential (the scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn checked(token: &str, place: impl Fn() -> String) -> Result<Vec<u8>, Error> {
    let bad = |reason| Error::Bad {
        place: place(),
        reason,
    };
    if token.len() < MIN_LEN {
        return Err(bad("a token must have at least 16 characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "a token must be printable ASCII without spaces (it travels in an HTTP header)",
        ));
    }
    Ok(token.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef";
    const B: &str = "fedcba9876543210-second";

    #[test]
    fn only_a_listed_bearer_token_is_admitted() {
        let tokens = Tokens::load(&[A.to_owned(), B.to_owned()], None).unwrap();
        assert!(tokens.admit(Some(format!("Bearer {A}").as_bytes())));
        assert!(tokens.admit(Some(format!("bearer {B}").as_bytes())));
        assert!(tokens.admit(Some(format!("BEARER  {A} ").as_bytes())));
        for refused in [
            None,
            Some(String::new()),
            Some(A.to_owned()),
            Some(format!("Basic {A}")),
            Some(format!("Bearer {A}x")),
            Some(format!("Bearer {}", &A[..15])),
            Some("Bearer ".to_owned()),
            Some("Bear".to_owned()),
        ] {
            assert!(
                !tokens.admit(refused.as_deref().map(str::as_bytes)),
                "{refused:?}"
            );
        }
        assert!(!Tokens::default().admit(Some(format!("Bearer {A}").as_bytes())));
    }

    #[test]
    fn the_file_holds_one_token_a_line_with_comments() {
        let dir = std::env::temp_dir().join(format!("iorelay-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api-token");
        std::fs::write(&file, format!("# generated\n\n  {A}  \n{B}\n")).unwrap();
        let tokens = Tokens::load(&[], Some(&file)).unwrap();
        assert!(tokens.admit(Some(format!("Bearer {B}").as_bytes())));
        assert!(tokens.admit(Some(format!("Bearer {A}").as_bytes())));
        assert!(!tokens.has_development_token());

        std::fs::write(&file, "short\n").unwrap();
        let err = Tokens::load(&[], Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("16 characters"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let err = Tokens::load(&[], Some(&dir)).unwrap_err().to_string();
        assert!(err.starts_with("api.token_file: cannot read"), "{err}");
        let err = Tokens::load(&[format!("{A} {B}")], None).unwrap_err();
        assert!(err.to_string().starts_with("api.tokens[0]: "), "{err}");
    }

    #[test]
    fn the_development_token_is_recognised() {
        let tokens = Tokens::load(&[DEVELOPMENT.to_owned()], None).unwrap();
        assert!(tokens.has_development_token());
        assert!(!tokens.is_empty());
        assert!(Tokens::default().is_empty());
    }
}
