//! `[namespaces."/name".auth]`: who may connect to a namespace, and where a connection's
//! identity comes from (a JWT, a cookie of the handshake).
//!
//! This module owns the shape of those keys, their checks, and reading the key material
//! they name ([`load_keys`]): keys are read when a config is loaded or reloaded, so that a
//! missing or unreadable key file is a config error naming the key, never a surprise per
//! connection. Verifying tokens and admitting connections is the relay's
//! (`relay::auth`); nothing here sees a token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

/// Largest key file read (a PEM key or a JWKS document).
pub const MAX_KEY_FILE: u64 = 1_000_000;

/// `[namespaces."/name".auth]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Refuse a connection that brings no accepted credential (a valid JWT when `jwt` is
    /// set, else the `user_from` cookie). Default `false`.
    pub required: bool,
    /// Take the display name from a cookie of the handshake request:
    /// `user_from = { cookie = "nickname" }`. A verified JWT's user wins over it; it wins
    /// over the CONNECT `auth` payload's `user_field`. Default: none.
    pub user_from: Option<UserFrom>,
    /// Verify JSON Web Tokens. Default: none (no token is looked at).
    pub jwt: Option<JwtConfig>,
}

/// Where the display name comes from when no JWT gives one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFrom {
    /// Name of the cookie holding the display name (percent-decoded). No default.
    pub cookie: String,
}

/// `[namespaces."/name".auth.jwt]`: how tokens are verified and what their claims mean.
/// Exactly one of `secret`, `secret_file`, `public_key_file`, `jwks_file` names the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Accepted signature algorithms: `HS256`/`HS384`/`HS512` with a secret; one family
    /// of `RS*`/`PS*`, `ES256`/`ES384` or `EdDSA` with a public key; any of those with a
    /// JWKS. A token whose header names another one is refused. Default `["HS256"]`.
    pub algorithms: Vec<Algorithm>,
    /// The HMAC secret, at least as long as the hash (32 bytes for HS256). Default: none.
    pub secret: Option<String>,
    /// A file holding the HMAC secret (one trailing newline ignored). Default: none.
    pub secret_file: Option<PathBuf>,
    /// A PEM public key (RSA, EC or Ed25519). Default: none.
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document; a token's `kid` picks the key. Default: none.
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`. Default `"30s"`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// When set, the `iss` claim must be present and equal. Default: none.
    pub issuer: Option<String>,
    /// When set, the `aud` claim must be present and contain it. Default: none.
    pub audience: Option<String>,
    /// Cookie of the handshake request that may carry the token (for pages). Default: none.
    pub token_cookie: Option<String>,
    /// Claim holding the display name. Default: none, meaning `name`, else `sub`.
    pub user_claim: Option<String>,
    /// Claim listing the rooms the socket may `$join` (with `join = "claims"`): exact
    /// names, or prefixes ending in `*` (`"team:*"`; `"*"` is any room). Default `"rooms"`.
    pub rooms_claim: String,
    /// Claim listing rooms the socket is put in when it connects. Default `"join"`.
    pub join_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithms: vec![Algorithm::HS256],
            secret: None,
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            leeway: Duration::from_secs(30),
            issuer: None,
            audience: None,
            token_cookie: None,
            user_claim: None,
            rooms_claim: "rooms".to_owned(),
            join_claim: "join".to_owned(),
        }
    }
}

/// The verification keys of one `jwt` table, read from the config or its files.
#[derive(Clone)]
pub struct Keys {
    /// Each key with its JWKS `kid` (none for a secret or a PEM file).
    pub keys: Vec<(Option<String>, DecodingKey)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (a secret is in here).
        f.debug_struct("Keys")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A key that cannot be used: which key of the `jwt` table, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The key's name inside the `jwt` table (`secret_file`, `public_key_file`, …).
    pub key: &'static str,
    /// Why, with the file's path where there is one.
    pub reason: String,
}

/// The algorithm families: which key kind verifies which algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// HMAC with a shared secret.
    Hmac,
    /// RSA PKCS#1 v1.5 and PSS.
    Rsa,
    /// ECDSA.
    Ec,
    /// Ed25519.
    Ed,
}

/// The family of `alg`.
pub fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
    }
}

/// Shortest HMAC secret for `alg`: the hash's output size (RFC 7518 §3.2).
fn min_secret(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Reads the key material `jwt` names. Run at load and reload, never per connection.
pub fn load_keys(jwt: &JwtConfig) -> Result<Keys, KeyError> {
    let first = jwt.algorithms.first().copied().unwrap_or(Algorithm::HS256);
    let keys = if let Some(secret) = &jwt.secret {
        vec![(
            None,
            hmac_key("secret", secret.as_bytes(), &jwt.algorithms)?,
        )]
    } else if let Some(path) = &jwt.secret_file {
        let text = read("secret_file", path)?;
        let secret = text.strip_suffix(b"\n").unwrap_or(&text);
        let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
        vec![(None, hmac_key("secret_file", secret, &jwt.algorithms)?)]
    } else if let Some(path) = &jwt.public_key_file {
        let pem = read("public_key_file", path)?;
        let key = match family(first) {
            Family::Rsa => DecodingKey::from_rsa_pem(&pem),
            Family::Ec => DecodingKey::from_ec_pem(&pem),
            Family::Ed => DecodingKey::from_ed_pem(&pem),
            Family::Hmac => {
                return Err(KeyError {
                    key: "public_key_file",
                    reason: "HS* algorithms need `secret` or `secret_file`".to_owned(),
                });
            }
        }
        .map_err(|e| KeyError {
            key: "public_key_file",
            reason: format!(
                "{}: not a PEM public key for {first:?}: {e}",
                path.display()
            ),
        })?;
        vec![(None, key)]
    } else if let Some(path) = &jwt.jwks_file {
        let text = read("jwks_file", path)?;
        let set: JwkSet = serde_json::from_slice(&text).map_err(|e| KeyError {
            key: "jwks_file",
            reason: format!("{}: not a JWKS document: {e}", path.display()),
        })?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError {
                key: "jwks_file",
                reason: format!("{}: key {i} is not usable: {e}", path.display()),
            })?;
            keys.push((jwk.common.key_id.clone(), key));
        }
        if keys.is_empty() {
            return Err(KeyError {
                key: "jwks_file",
                reason: format!("{}: the key set is empty", path.display()),
            });
        }
        keys
    } else {
        return Err(KeyError {
            key: "secret",
            reason: "one of secret, secret_file, public_key_file, jwks_file is needed".to_owned(),
        });
    };
    Ok(Keys { keys })
}

fn hmac_key(key: &'static str, secret: &[u8], algs: &[Algorithm]) -> Result<DecodingKey, KeyError> {
    let needed = algs.iter().map(|a| min_secret(*a)).max().unwrap_or(32);
    if secret.len() < needed {
        return Err(KeyError {
            key,
            reason: format!("the secret must be at least {needed} bytes for the algorithms given"),
        });
    }
    Ok(DecodingKey::from_secret(secret))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let fail = |e: std::io::Error| KeyError {
        key,
        reason: format!("{}: {e}", path.display()),
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut data = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut data)
        .map_err(fail)?;
    if data.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError {
            key,
            reason: format!("{}: larger than {MAX_KEY_FILE} bytes", path.display()),
        });
    }
    Ok(data)
}

/// Whether `name` is a cookie name (an RFC 6265 token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A problem found by [`check`]: the dotted key and the reason (`validate` turns these
/// into its own problems, so that this module does not import it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, as in the file.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Checks `[namespaces."/name".auth]` (`key` is `namespaces./name.auth`); `claims_join`
/// says whether the namespace's `join` is `"claims"`, which needs a `jwt` table.
pub fn check(key: &str, auth: &AuthConfig, claims_join: bool, out: &mut Vec<Problem>) {
    if let Some(from) = &auth.user_from {
        if !is_cookie_name(&from.cookie) {
            out.push(Problem::new(
                format!("{key}.user_from.cookie"),
                "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
            ));
        }
    }
    if auth.required && auth.jwt.is_none() && auth.user_from.is_none() {
        out.push(Problem::new(
            format!("{key}.required"),
            "needs `jwt` or `user_from` to say what a credential is",
        ));
    }
    if claims_join && auth.jwt.is_none() {
        let ns_key = key.strip_suffix(".auth").unwrap_or(key);
        out.push(Problem::new(
            format!("{ns_key}.join"),
            "\"claims\" needs an `auth.jwt` table to take the rooms from",
        ));
    }
    let Some(jwt) = &auth.jwt else { return };
    let key = format!("{key}.jwt");
    check_jwt(&key, jwt, out);
}

fn check_jwt(key: &str, jwt: &JwtConfig, out: &mut Vec<Problem>) {
    let named = [
        jwt.secret.is_some(),
        jwt.secret_file.is_some(),
        jwt.public_key_file.is_some(),
        jwt.jwks_file.is_some(),
    ];
    let sources = named.iter().filter(|n| **n).count();
    if sources != 1 {
        out.push(Problem::new(
            key,
            "needs exactly one of secret, secret_file, public_key_file, jwks_file",
        ));
    }
    let Some(first) = jwt.algorithms.first() else {
        out.push(Problem::new(
            format!("{key}.algorithms"),
            "must name at least one algorithm",
        ));
        return;
    };
    let fam = family(*first);
    let hmac_key = jwt.secret.is_some() || jwt.secret_file.is_some();
    if jwt.jwks_file.is_some() && sources == 1 {
        // A key set holds keys of several families; each token's `kid` picks one.
        if jwt.algorithms.iter().any(|a| family(*a) == Family::Hmac) {
            out.push(Problem::new(
                format!("{key}.algorithms"),
                "HS256/HS384/HS512 need `secret` or `secret_file`, not a JWKS",
            ));
            return;
        }
    } else if jwt.algorithms.iter().any(|a| family(*a) != fam) {
        out.push(Problem::new(
            format!("{key}.algorithms"),
            "must all be of one family (HS*, RS*/PS*, ES*, EdDSA): one key verifies them",
        ));
        return;
    }
    if sources == 1 && hmac_key != (fam == Family::Hmac) {
        out.push(Problem::new(
            format!("{key}.algorithms"),
            if hmac_key {
                "a secret verifies HS256/HS384/HS512 only"
            } else {
                "HS256/HS384/HS512 need `secret` or `secret_file`, not a public key"
            },
        ));
        return;
    }
    for (name, value) in [
        ("rooms_claim", Some(&jwt.rooms_claim)),
        ("join_claim", Some(&jwt.join_claim)),
        ("user_claim", jwt.user_claim.as_ref()),
    ] {
        if value.is_some_and(String::is_empty) {
            out.push(Problem::new(format!("{key}.{name}"), "must not be empty"));
        }
    }
    if let Some(cookie) = &jwt.token_cookie {
        if !is_cookie_name(cookie) {
            out.push(Problem::new(
                format!("{key}.token_cookie"),
                "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
            ));
        }
    }
    if jwt.leeway > Duration::from_secs(3600) {
        out.push(Problem::new(format!("{key}.leeway"), "must be at most 1h"));
    }
    if sources == 1 {
        if let Err(e) = load_keys(jwt) {
            out.push(Problem::new(format!("{key}.{}", e.key), e.reason));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn problems(auth: &AuthConfig, claims_join: bool) -> Vec<String> {
        let mut out = Vec::new();
        check("namespaces./x.auth", auth, claims_join, &mut out);
        out.into_iter().map(|p| p.key).collect()
    }

    fn hs(secret: &str) -> JwtConfig {
        JwtConfig {
            secret: Some(secret.to_owned()),
            ..JwtConfig::default()
        }
    }

    #[test]
    fn no_auth_is_fine_and_required_needs_a_credential() {
        assert!(problems(&AuthConfig::default(), false).is_empty());
        let required = AuthConfig {
            required: true,
            ..AuthConfig::default()
        };
        assert_eq!(problems(&required, false), ["namespaces./x.auth.required"]);
        assert_eq!(
            problems(&AuthConfig::default(), true),
            ["namespaces./x.join"]
        );
    }

    #[test]
    fn secrets_must_be_as_long_as_the_hash() {
        let auth = |jwt| AuthConfig {
            jwt: Some(jwt),
            ..AuthConfig::default()
        };
        assert_eq!(
            problems(&auth(hs("short")), false),
            ["namespaces./x.auth.jwt.secret"]
        );
        assert!(problems(&auth(hs(&"k".repeat(32))), false).is_empty());
        let mut hs512 = hs(&"k".repeat(32));
        hs512.algorithms = vec![Algorithm::HS512];
        assert_eq!(
            problems(&auth(hs512), false),
            ["namespaces./x.auth.jwt.secret"]
        );
    }

    #[test]
    fn one_key_source_of_the_right_family() {
        let auth = |jwt| AuthConfig {
            jwt: Some(jwt),
            ..AuthConfig::default()
        };
        let none = JwtConfig::default();
        assert_eq!(problems(&auth(none), false), ["namespaces./x.auth.jwt"]);
        let mut two = hs(&"k".repeat(32));
        two.jwks_file = Some("/nonexistent".into());
        assert_eq!(problems(&auth(two), false), ["namespaces./x.auth.jwt"]);
        let mut mixed = hs(&"k".repeat(32));
        mixed.algorithms = vec![Algorithm::HS256, Algorithm::RS256];
        assert_eq!(
            problems(&auth(mixed), false),
            ["namespaces./x.auth.jwt.algorithms"]
        );
        let mut confused = hs(&"k".repeat(32));
        confused.algorithms = vec![Algorithm::RS256];
        assert_eq!(
            problems(&auth(confused), false),
            ["namespaces./x.auth.jwt.algorithms"]
        );
        let jwks = JwtConfig {
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::HS256],
            jwks_file: Some("/nonexistent".into()),
            ..JwtConfig::default()
        };
        assert_eq!(
            problems(&auth(jwks), false),
            ["namespaces./x.auth.jwt.algorithms"]
        );
        let mut no_algs = hs(&"k".repeat(32));
        no_algs.algorithms = vec![];
        assert_eq!(
            problems(&auth(no_algs), false),
            ["namespaces./x.auth.jwt.algorithms"]
        );
    }

    #[test]
    fn a_missing_key_file_names_the_key_and_the_path() {
        let jwt = JwtConfig {
            algorithms: vec![Algorithm::RS256],
            public_key_file: Some("/nonexistent/key.pem".into()),
            ..JwtConfig::default()
        };
        let err = load_keys(&jwt).unwrap_err();
        assert_eq!(err.key, "public_key_file");
        assert!(
            err.reason.contains("/nonexistent/key.pem"),
            "{}",
            err.reason
        );
        let mut out = Vec::new();
        check(
            "namespaces./x.auth",
            &AuthConfig {
                jwt: Some(jwt),
                ..AuthConfig::default()
            },
            false,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, "namespaces./x.auth.jwt.public_key_file");
    }

    #[test]
    fn secret_file_drops_one_newline_and_garbage_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("iorelay-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{}\n", "s".repeat(32))).unwrap();
        let jwt = JwtConfig {
            secret_file: Some(secret),
            ..JwtConfig::default()
        };
        assert_eq!(load_keys(&jwt).unwrap().keys.len(), 1);
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        for (alg, field) in [
            (Algorithm::RS256, "public_key_file"),
            (Algorithm::ES256, "public_key_file"),
            (Algorithm::EdDSA, "public_key_file"),
        ] {
            let jwt = JwtConfig {
                algorithms: vec![alg],
                public_key_file: Some(garbage.clone()),
                ..JwtConfig::default()
            };
            assert_eq!(load_keys(&jwt).unwrap_err().key, field);
        }
        let jwt = JwtConfig {
            algorithms: vec![Algorithm::RS256],
            jwks_file: Some(garbage.clone()),
            ..JwtConfig::default()
        };
        assert_eq!(load_keys(&jwt).unwrap_err().key, "jwks_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_tables_parse_and_the_secret_is_redacted() {
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0123-s3cr3t-s3cr3t-01";
        let text = format!(
            r#"
            [namespaces."/x"]
            join = "claims"
            [namespaces."/x".auth]
            required = true
            user_from = {{ cookie = "nickname" }}
            [namespaces."/x".auth.jwt]
            algorithms = ["HS256", "HS384"]
            secret = "{secret}"
            leeway = "5s"
            issuer = "https://idp.example"
            token_cookie = "io_token"
            "#
        );
        let config: crate::config::Config = toml::from_str(&text).unwrap();
        let ns = &config.namespaces["/x"];
        assert_eq!(ns.join, crate::config::JoinPolicy::Claims);
        let jwt = ns.auth.jwt.as_ref().unwrap();
        assert_eq!(jwt.algorithms, [Algorithm::HS256, Algorithm::HS384]);
        assert_eq!(jwt.leeway, Duration::from_secs(5));
        assert_eq!(jwt.rooms_claim, "rooms");
        assert_eq!(
            ns.auth.user_from.as_ref().map(|u| u.cookie.as_str()),
            Some("nickname")
        );
        let mut secret_is_long_enough = Vec::new();
        check(
            "namespaces./x.auth",
            &ns.auth,
            true,
            &mut secret_is_long_enough,
        );
        assert!(
            secret_is_long_enough.is_empty(),
            "{secret_is_long_enough:?}"
        );
        let printed = crate::config::validate::render(&config);
        assert!(!printed.contains(secret), "{printed}");
        assert!(
            printed.contains(crate::config::validate::REDACTED),
            "{printed}"
        );
        assert!(printed.contains("io_token"), "{printed}");
        let unknown = text.replace("leeway", "leway");
        assert!(toml::from_str::<crate::config::Config>(&unknown).is_err());
    }

    #[test]
    fn cookie_names_are_tokens() {
        assert!(is_cookie_name("nickname"));
        assert!(is_cookie_name("io-token_1"));
        assert!(!is_cookie_name(""));
        assert!(!is_cookie_name("a b"));
        assert!(!is_cookie_name("a=b"));
        assert!(!is_cookie_name("a;b"));
    }
}
