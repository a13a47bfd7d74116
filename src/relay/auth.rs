//! Who connects: a namespace's `auth` compiled into a [`Gate`] that admits or refuses a
//! CONNECT, and the [`Identity`] an admitted socket keeps for its life.
//!
//! The credential is looked for in this order: a JWT in the CONNECT `auth.token`, in the
//! handshake's `Authorization: Bearer …`, in the `token_cookie`; else the `user_from`
//! cookie. A token that is present but does not verify is refused even where auth is not
//! `required` (a client that sends one expects it to count). Verification is
//! `jsonwebtoken`'s; this module only pins the algorithms (checked on the token's own
//! header first, so that `alg: none` and HS/RS confusion are refused as such), picks the
//! key, and turns claims into an identity. Keys were read at config load
//! ([`config::auth::load_keys`](crate::config::auth::load_keys)), never here.
//!
//! Room grants from a token are patterns of a deliberately small syntax: an exact room
//! name, or a prefix ending in `*` (`"team:*"`, and `"*"` for any room). No regex from a
//! token is ever compiled.

use std::collections::HashMap;
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, COOKIE, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::AuthConfig;
use crate::config::auth::{KeyError, load_keys};

/// Longest token looked at, in bytes; a longer one is malformed.
pub const MAX_TOKEN: usize = 8192;
/// Most room patterns (or rooms to join) a token may carry.
pub const MAX_CLAIM_ROOMS: usize = 256;
/// Longest display name kept, in characters.
pub const MAX_USER_CHARS: usize = 128;
/// Most bytes of `Cookie` headers kept from a handshake (RFC 6265 asks browsers for
/// 4096 bytes per cookie; a token cookie fits).
const MAX_COOKIE_BYTES: usize = 8 * 1024;

/// Why a CONNECT was refused: [`Reason::message`] goes to the client in the
/// CONNECT_ERROR, [`Reason::label`] is the `reason` of `iorelay_auth_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No credential where one is required.
    Missing,
    /// Not a JWT (shape, encoding, JSON, size), or `auth.token` not a string.
    Malformed,
    /// The signature does not verify with the configured key.
    Signature,
    /// `exp` passed (beyond the leeway).
    Expired,
    /// `nbf` not reached (beyond the leeway).
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    Issuer,
    /// `aud` missing or without the configured audience.
    Audience,
    /// The header's `alg` is not one the config allows (`none` included).
    Algorithm,
    /// No configured key has the token's `kid` (or it is of another family).
    Key,
    /// A claim of the wrong type (`exp` missing, rooms not a list of strings, …).
    Claims,
    /// The `user_from` cookie is present but not a usable name.
    Cookie,
}

impl Reason {
    /// The message of the CONNECT_ERROR.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Missing => "authentication required",
            Reason::Malformed => "malformed token",
            Reason::Signature => "invalid token signature",
            Reason::Expired => "token expired",
            Reason::NotYetValid => "token not yet valid",
            Reason::Issuer => "token issuer not accepted",
            Reason::Audience => "token audience not accepted",
            Reason::Algorithm => "token algorithm not allowed",
            Reason::Key => "unknown token key",
            Reason::Claims => "invalid token claims",
            Reason::Cookie => "invalid user cookie",
        }
    }

    /// The metric label: a fixed set.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Signature => "signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Issuer => "issuer",
            Reason::Audience => "audience",
            Reason::Algorithm => "algorithm",
            Reason::Key => "key",
            Reason::Claims => "claims",
            Reason::Cookie => "cookie",
        }
    }
}

/// What of the handshake request authentication may use, kept per connection.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `Cookie` header values, joined by `; ` (bounded).
    cookie: String,
    /// The `Authorization` header, when it is text.
    authorization: Option<String>,
}

impl Credentials {
    /// Keeps the cookies and the authorization of a handshake; values that are not
    /// visible ASCII are dropped (they cannot carry a token or a cookie we read).
    pub fn from_headers(headers: &HeaderMap) -> Credentials {
        let mut cookie = String::new();
        for value in headers.get_all(COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            if cookie.len() + text.len() + 2 > MAX_COOKIE_BYTES {
                break;
            }
            if !cookie.is_empty() {
                cookie.push_str("; ");
            }
            cookie.push_str(text);
        }
        let authorization = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_TOKEN + 16)
            .map(str::to_owned);
        Credentials {
            cookie,
            authorization,
        }
    }

    /// The value of the first cookie named `name`, percent-decoded: `None` when absent or
    /// empty, `Some(Err(()))` when it does not decode to UTF-8 text.
    pub fn cookie(&self, name: &str) -> Option<Result<String, ()>> {
        let raw = self.cookie.split(';').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then_some(v.trim())
        })?;
        // RFC 6265 allows a value in double quotes.
        let raw = raw
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(raw);
        if raw.is_empty() {
            return None;
        }
        Some(
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| ()),
        )
    }

    /// The token of `Authorization: Bearer …`.
    fn bearer(&self) -> Option<&str> {
        let value = self.authorization.as_deref()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// One room pattern of a token: an exact name or a prefix (`"team:*"`, `"*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RoomPattern {
    Exact(Box<str>),
    Prefix(Box<str>),
}

/// The rooms a token lets its socket `$join` (with `join = "claims"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<RoomPattern>);

impl Grants {
    fn parse(patterns: Vec<String>) -> Grants {
        Grants(
            patterns
                .into_iter()
                .map(|p| match p.strip_suffix('*') {
                    Some(prefix) => RoomPattern::Prefix(prefix.into()),
                    None => RoomPattern::Exact(p.into()),
                })
                .collect(),
        )
    }

    /// Whether `room` matches one of the patterns.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| match p {
            RoomPattern::Exact(name) => **name == *room,
            RoomPattern::Prefix(prefix) => room.starts_with(&**prefix),
        })
    }
}

/// Who a socket is, for its whole life.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The display name, when a token or cookie gave one.
    pub user: Option<Arc<str>>,
    /// Whether a JWT was verified.
    pub verified: bool,
    /// The rooms the token lets it join.
    pub grants: Grants,
    /// Rooms to put it in at connect (the `join` claim), not yet checked as names.
    pub join: Vec<String>,
}

/// A namespace's `auth`, ready to admit connections.
pub struct Gate {
    required: bool,
    user_cookie: Option<String>,
    jwt: Option<Jwt>,
}

struct Jwt {
    keys: Vec<(Option<String>, DecodingKey)>,
    /// One validation per allowed algorithm (jsonwebtoken wants every algorithm of a
    /// validation to be of its key's family, and a JWKS mixes families).
    validations: Vec<Validation>,
    token_cookie: Option<String>,
    user_claim: Option<String>,
    rooms_claim: String,
    join_claim: String,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: a secret is among them.
        f.debug_struct("Gate")
            .field("required", &self.required)
            .field("user_cookie", &self.user_cookie)
            .field("jwt", &self.jwt.as_ref().map(|j| j.validations.len()))
            .finish()
    }
}

impl Gate {
    /// Compile `auth`, reading its keys.
    pub fn compile(auth: &AuthConfig) -> Result<Gate, KeyError> {
        let jwt = match &auth.jwt {
            None => None,
            Some(cfg) => {
                let keys = load_keys(cfg)?.keys;
                let mut validation = Validation::new(Algorithm::HS256);
                validation.leeway = cfg.leeway.as_secs();
                validation.validate_nbf = true;
                let mut required: HashSet<String> = HashSet::from(["exp".to_owned()]);
                if let Some(iss) = &cfg.issuer {
                    validation.set_issuer(&[iss]);
                    required.insert("iss".to_owned());
                }
                validation.validate_aud = cfg.audience.is_some();
                if let Some(aud) = &cfg.audience {
                    validation.set_audience(&[aud]);
                    required.insert("aud".to_owned());
                }
                validation.required_spec_claims = required;
                let validations = cfg
                    .algorithms
                    .iter()
                    .map(|alg| {
                        let mut v = validation.clone();
                        v.algorithms = vec![*alg];
                        v
                    })
                    .collect();
                Some(Jwt {
                    keys,
                    validations,
                    token_cookie: cfg.token_cookie.clone(),
                    user_claim: cfg.user_claim.clone(),
                    rooms_claim: cfg.rooms_claim.clone(),
                    join_claim: cfg.join_claim.clone(),
                })
            }
        };
        Ok(Gate {
            required: auth.required,
            user_cookie: auth.user_from.as_ref().map(|u| u.cookie.clone()),
            jwt,
        })
    }

    /// Whether this gate looks at anything at all (most namespaces: no).
    pub fn is_open(&self) -> bool {
        !self.required && !self.reads_handshake()
    }

    /// Whether it reads the handshake's cookies or `Authorization` header.
    pub fn reads_handshake(&self) -> bool {
        self.user_cookie.is_some() || self.jwt.is_some()
    }

    /// Admit or refuse a CONNECT with this `auth` payload on a connection whose
    /// handshake brought `creds`.
    pub fn admit(&self, auth: &RawValue, creds: &Credentials) -> Result<Identity, Reason> {
        if let Some(jwt) = &self.jwt {
            if let Some(token) = jwt.find_token(auth, creds)? {
                return jwt.verify(&token);
            }
            if self.required {
                // Where tokens are verified, the credential is a token; a name cookie
                // anyone can set is not one.
                return Err(Reason::Missing);
            }
        }
        if let Some(name) = &self.user_cookie {
            match creds.cookie(name) {
                Some(Ok(value)) => {
                    let user = clean_name(&value).ok_or(Reason::Cookie)?;
                    return Ok(Identity {
                        user: Some(user),
                        ..Identity::default()
                    });
                }
                Some(Err(())) => return Err(Reason::Cookie),
                None => {}
            }
        }
        if self.required {
            Err(Reason::Missing)
        } else {
            Ok(Identity::default())
        }
    }
}

impl Jwt {
    /// The token, from `auth.token`, `Authorization: Bearer`, or the token cookie.
    fn find_token(&self, auth: &RawValue, creds: &Credentials) -> Result<Option<String>, Reason> {
        let fields: HashMap<String, &RawValue> =
            serde_json::from_str(auth.get()).unwrap_or_default();
        if let Some(raw) = fields.get("token") {
            let token: String = serde_json::from_str(raw.get()).map_err(|_| Reason::Malformed)?;
            return Ok(Some(token));
        }
        if let Some(token) = creds.bearer() {
            return Ok(Some(token.to_owned()));
        }
        match self.token_cookie.as_deref().and_then(|c| creds.cookie(c)) {
            Some(Ok(token)) => Ok(Some(token)),
            Some(Err(())) => Err(Reason::Malformed),
            None => Ok(None),
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, Reason> {
        if token.len() > MAX_TOKEN {
            return Err(Reason::Malformed);
        }
        let header = token_header(token)?;
        // Pinning on the token's own header first: `none` (which jsonwebtoken cannot
        // even parse) and HS/RS confusion are refused as what they are.
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Reason::Malformed)?;
        let validation = Algorithm::from_str(alg)
            .ok()
            .and_then(|alg| self.validations.iter().find(|v| v.algorithms == [alg]))
            .ok_or(Reason::Algorithm)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let key = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .or(if self.keys.len() == 1 && self.keys[0].0.is_none() {
                    self.keys.first()
                } else {
                    None
                }),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .map(|(_, key)| key)
        .ok_or(Reason::Key)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| reason_of(e.kind()))?;
        self.identity(&data.claims)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, Reason> {
        let user = match &self.user_claim {
            Some(claim) => claims.get(claim).and_then(Value::as_str),
            None => claims
                .get("name")
                .and_then(Value::as_str)
                .or_else(|| claims.get("sub").and_then(Value::as_str)),
        }
        .and_then(clean_name);
        Ok(Identity {
            user,
            verified: true,
            grants: Grants::parse(string_list(claims.get(&self.rooms_claim))?),
            join: string_list(claims.get(&self.join_claim))?,
        })
    }
}

/// The token's header as JSON, before anything is trusted.
fn token_header(token: &str) -> Result<Map<String, Value>, Reason> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Reason::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)
}

/// A claim that must be a list of strings (absent: empty), bounded.
fn string_list(claim: Option<&Value>) -> Result<Vec<String>, Reason> {
    let Some(value) = claim else {
        return Ok(Vec::new());
    };
    let list = value.as_array().ok_or(Reason::Claims)?;
    if list.len() > MAX_CLAIM_ROOMS {
        return Err(Reason::Claims);
    }
    list.iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or(Reason::Claims))
        .collect()
}

fn reason_of(kind: &ErrorKind) -> Reason {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => Reason::Signature,
        ErrorKind::ExpiredSignature => Reason::Expired,
        ErrorKind::ImmatureSignature => Reason::NotYetValid,
        ErrorKind::InvalidIssuer => Reason::Issuer,
        ErrorKind::InvalidAudience => Reason::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Reason::Algorithm,
        // The `kid` named a key of another family (a mixed JWKS).
        ErrorKind::InvalidKeyFormat => Reason::Key,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Reason::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Reason::Audience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => Reason::Claims,
        _ => Reason::Malformed,
    }
}

/// A display name: trimmed, bounded, without control characters; none when empty.
pub fn clean_name(value: &str) -> Option<Arc<str>> {
    let trimmed: String = value
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_CHARS)
        .collect();
    (!trimmed.is_empty()).then(|| Arc::from(trimmed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use hyper::header::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    use super::*;
    use crate::config::{JwtConfig, UserFrom};

    const SECRET: &str = "a-test-secret-that-is-32-bytes!!";

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name)
    }

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(fixture(name)).unwrap()
    }

    fn gate(jwt: JwtConfig) -> Gate {
        Gate::compile(&AuthConfig {
            jwt: Some(jwt),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn hs_gate() -> Gate {
        gate(JwtConfig {
            secret: Some(SECRET.to_owned()),
            ..JwtConfig::default()
        })
    }

    fn now() -> i64 {
        i64::try_from(get_current_timestamp()).unwrap()
    }

    /// Claims valid for an hour, plus `extra`.
    fn claims(extra: Value) -> Value {
        let mut c = json!({ "sub": "u1", "exp": now() + 3600 });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    fn hs256(claims: &Value) -> String {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn auth(token: &str) -> Box<RawValue> {
        RawValue::from_string(json!({ "token": token }).to_string()).unwrap()
    }

    fn no_auth() -> Box<RawValue> {
        RawValue::from_string("{}".to_owned()).unwrap()
    }

    fn admit(gate: &Gate, token: &str) -> Result<Identity, Reason> {
        gate.admit(&auth(token), &Credentials::default())
    }

    fn creds(headers: &[(&'static str, &str)]) -> Credentials {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        Credentials::from_headers(&map)
    }

    /// `header.payload.signature` with a header of our own making.
    fn with_header(header: &Value, token: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.splitn(2, '.');
        let _ = parts.next();
        format!(
            "{}.{}",
            b64.encode(header.to_string()),
            parts.next().unwrap()
        )
    }

    #[test]
    fn a_valid_hs256_token_gives_the_user_and_the_rooms() {
        let g = hs_gate();
        let id = admit(
            &g,
            &hs256(&claims(
                json!({ "name": " Ann ", "rooms": ["team:*", "lobby"], "join": ["lobby"] }),
            )),
        )
        .unwrap();
        assert!(id.verified);
        assert_eq!(id.user.as_deref(), Some("Ann"));
        assert!(id.grants.allows("team:red"));
        assert!(id.grants.allows("lobby"));
        assert!(!id.grants.allows("lobby2"));
        assert!(!id.grants.allows("other"));
        assert_eq!(id.join, ["lobby"]);
        // No `name`: the subject.
        let id = admit(&g, &hs256(&claims(json!({})))).unwrap();
        assert_eq!(id.user.as_deref(), Some("u1"));
        // A configured claim.
        let g = gate(JwtConfig {
            secret: Some(SECRET.to_owned()),
            user_claim: Some("nick".to_owned()),
            ..JwtConfig::default()
        });
        let id = admit(&g, &hs256(&claims(json!({ "nick": "Bo", "name": "x" })))).unwrap();
        assert_eq!(id.user.as_deref(), Some("Bo"));
    }

    #[test]
    fn hs384_and_hs512_when_allowed() {
        let g = gate(JwtConfig {
            secret: Some("s".repeat(64)),
            algorithms: vec![Algorithm::HS384, Algorithm::HS512],
            ..JwtConfig::default()
        });
        let key = EncodingKey::from_secret("s".repeat(64).as_bytes());
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = encode(&Header::new(alg), &claims(json!({})), &key).unwrap();
            assert!(admit(&g, &token).is_ok(), "{alg:?}");
        }
        let token = encode(&Header::new(Algorithm::HS256), &claims(json!({})), &key).unwrap();
        assert_eq!(admit(&g, &token).unwrap_err(), Reason::Algorithm);
    }

    #[test]
    fn each_public_key_family_verifies() {
        let cases = [
            (
                Algorithm::RS256,
                "rsa",
                EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap(),
            ),
            (
                Algorithm::PS256,
                "rsa",
                EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap(),
            ),
            (
                Algorithm::ES256,
                "ec",
                EncodingKey::from_ec_pem(&pem("ec-private.pem")).unwrap(),
            ),
            (
                Algorithm::EdDSA,
                "ed",
                EncodingKey::from_ed_pem(&pem("ed-private.pem")).unwrap(),
            ),
        ];
        for (alg, name, key) in cases {
            let g = gate(JwtConfig {
                algorithms: vec![alg],
                public_key_file: Some(fixture(&format!("{name}-public.pem"))),
                ..JwtConfig::default()
            });
            let token = encode(&Header::new(alg), &claims(json!({ "name": "K" })), &key).unwrap();
            assert_eq!(
                admit(&g, &token).unwrap().user.as_deref(),
                Some("K"),
                "{alg:?}"
            );
            // The same claims signed by another key of the family do not verify.
            let forged = encode(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            assert_eq!(
                admit(&g, &forged).unwrap_err(),
                Reason::Algorithm,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn jwks_picks_the_key_by_kid() {
        let g = gate(JwtConfig {
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            jwks_file: Some(fixture("jwks.json")),
            ..JwtConfig::default()
        });
        let key = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".to_owned());
        assert!(admit(&g, &encode(&header, &claims(json!({})), &key).unwrap()).is_ok());
        header.kid = Some("ec-1".to_owned());
        assert_eq!(
            admit(&g, &encode(&header, &claims(json!({})), &key).unwrap()).unwrap_err(),
            Reason::Key
        );
        // The set mixes families: an ES256 token picks the EC key by its kid.
        let mut es = Header::new(Algorithm::ES256);
        es.kid = Some("ec-1".to_owned());
        let ec_key = EncodingKey::from_ec_pem(&pem("ec-private.pem")).unwrap();
        assert!(admit(&g, &encode(&es, &claims(json!({})), &ec_key).unwrap()).is_ok());
        header.kid = Some("nobody".to_owned());
        assert_eq!(
            admit(&g, &encode(&header, &claims(json!({})), &key).unwrap()).unwrap_err(),
            Reason::Key
        );
        header.kid = None;
        assert_eq!(
            admit(&g, &encode(&header, &claims(json!({})), &key).unwrap()).unwrap_err(),
            Reason::Key
        );
    }

    #[test]
    fn forged_and_tampered_tokens_fail_the_signature() {
        let g = hs_gate();
        let forged = encode(
            &Header::default(),
            &claims(json!({})),
            &EncodingKey::from_secret(b"another-secret-of-32-bytes-long!"),
        )
        .unwrap();
        assert_eq!(admit(&g, &forged).unwrap_err(), Reason::Signature);
        let token = hs256(&claims(json!({ "name": "Ann" })));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let payload = b64.encode(claims(json!({ "name": "Mallory" })).to_string());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(admit(&g, &tampered).unwrap_err(), Reason::Signature);
        // Even an expired forged token is a bad signature first.
        let old = encode(
            &Header::default(),
            &json!({ "exp": now() - 3600 }),
            &EncodingKey::from_secret(b"another-secret-of-32-bytes-long!"),
        )
        .unwrap();
        assert_eq!(admit(&g, &old).unwrap_err(), Reason::Signature);
    }

    #[test]
    fn alg_none_and_key_confusion_are_the_algorithm() {
        let g = hs_gate();
        let token = hs256(&claims(json!({})));
        let none = with_header(&json!({ "alg": "none", "typ": "JWT" }), &token);
        let none = format!("{}.", none.rsplit_once('.').unwrap().0);
        assert_eq!(admit(&g, &none).unwrap_err(), Reason::Algorithm);
        let none_name = with_header(&json!({ "alg": "None" }), &token);
        assert_eq!(admit(&g, &none_name).unwrap_err(), Reason::Algorithm);
        let no_alg = with_header(&json!({ "typ": "JWT" }), &token);
        assert_eq!(admit(&g, &no_alg).unwrap_err(), Reason::Malformed);
        // An HS256 token "signed" with the RSA public key against an RS256 gate.
        let rs = gate(JwtConfig {
            algorithms: vec![Algorithm::RS256],
            public_key_file: Some(fixture("rsa-public.pem")),
            ..JwtConfig::default()
        });
        let confused = encode(
            &Header::default(),
            &claims(json!({})),
            &EncodingKey::from_secret(&pem("rsa-public.pem")),
        )
        .unwrap();
        assert_eq!(admit(&rs, &confused).unwrap_err(), Reason::Algorithm);
        // An RS256 token against the HS256 gate.
        let rs_token = encode(
            &Header::new(Algorithm::RS256),
            &claims(json!({})),
            &EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap(),
        )
        .unwrap();
        assert_eq!(admit(&g, &rs_token).unwrap_err(), Reason::Algorithm);
    }

    #[test]
    fn malformed_tokens() {
        let g = hs_gate();
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.x",
            "e30.e30.",
            "bm90IGpzb24.e30.x",
        ] {
            assert_eq!(admit(&g, bad).unwrap_err(), Reason::Malformed, "{bad:?}");
        }
        let valid_header = hs256(&claims(json!({})));
        let head = valid_header.split('.').next().unwrap();
        assert_eq!(
            admit(&g, &format!("{head}.!!!.x")).unwrap_err(),
            Reason::Malformed
        );
        let long = format!("{}{}", hs256(&claims(json!({}))), "A".repeat(MAX_TOKEN));
        assert_eq!(admit(&g, &long).unwrap_err(), Reason::Malformed);
        let not_a_string = RawValue::from_string(r#"{"token":42}"#.to_owned()).unwrap();
        assert_eq!(
            g.admit(&not_a_string, &Credentials::default()).unwrap_err(),
            Reason::Malformed
        );
    }

    #[test]
    fn exp_and_nbf_with_leeway() {
        let g = gate(JwtConfig {
            secret: Some(SECRET.to_owned()),
            leeway: Duration::from_secs(30),
            ..JwtConfig::default()
        });
        let t = now();
        let expired = hs256(&json!({ "exp": t - 60 }));
        assert_eq!(admit(&g, &expired).unwrap_err(), Reason::Expired);
        assert!(
            admit(&g, &hs256(&json!({ "exp": t - 10 }))).is_ok(),
            "within leeway"
        );
        let early = hs256(&json!({ "exp": t + 3600, "nbf": t + 60 }));
        assert_eq!(admit(&g, &early).unwrap_err(), Reason::NotYetValid);
        assert!(
            admit(&g, &hs256(&json!({ "exp": t + 3600, "nbf": t + 10 }))).is_ok(),
            "within leeway"
        );
        assert_eq!(
            admit(&g, &hs256(&json!({ "sub": "x" }))).unwrap_err(),
            Reason::Claims,
            "no exp"
        );
        assert_eq!(
            admit(&g, &hs256(&json!({ "exp": "soon" }))).unwrap_err(),
            Reason::Claims
        );
    }

    #[test]
    fn issuer_and_audience() {
        let g = gate(JwtConfig {
            secret: Some(SECRET.to_owned()),
            issuer: Some("https://idp.example".to_owned()),
            audience: Some("iorelay".to_owned()),
            ..JwtConfig::default()
        });
        let good = json!({ "iss": "https://idp.example", "aud": ["x", "iorelay"] });
        assert!(admit(&g, &hs256(&claims(good))).is_ok());
        let cases = [
            (
                json!({ "iss": "https://evil.example", "aud": "iorelay" }),
                Reason::Issuer,
            ),
            (json!({ "aud": "iorelay" }), Reason::Issuer),
            (
                json!({ "iss": "https://idp.example", "aud": "other" }),
                Reason::Audience,
            ),
            (json!({ "iss": "https://idp.example" }), Reason::Audience),
        ];
        for (extra, reason) in cases {
            assert_eq!(
                admit(&g, &hs256(&claims(extra.clone()))).unwrap_err(),
                reason,
                "{extra}"
            );
        }
        // Without an audience configured, a token's `aud` is not held against it.
        assert!(admit(&hs_gate(), &hs256(&claims(json!({ "aud": "anyone" })))).is_ok());
    }

    #[test]
    fn room_claims_must_be_lists_of_strings() {
        let g = hs_gate();
        for bad in [
            json!({ "rooms": "lobby" }),
            json!({ "rooms": [1] }),
            json!({ "join": {"a": 1} }),
        ] {
            assert_eq!(
                admit(&g, &hs256(&claims(bad.clone()))).unwrap_err(),
                Reason::Claims,
                "{bad}"
            );
        }
        let many: Vec<String> = (0..=MAX_CLAIM_ROOMS).map(|i| format!("r{i}")).collect();
        assert_eq!(
            admit(&g, &hs256(&claims(json!({ "rooms": many })))).unwrap_err(),
            Reason::Claims
        );
        let any = admit(&g, &hs256(&claims(json!({ "rooms": ["*"] })))).unwrap();
        assert!(any.grants.allows("whatever"));
        assert!(!Identity::default().grants.allows("whatever"));
    }

    #[test]
    fn the_token_from_the_bearer_header_or_the_cookie() {
        let g = gate(JwtConfig {
            secret: Some(SECRET.to_owned()),
            token_cookie: Some("io_token".to_owned()),
            ..JwtConfig::default()
        });
        let token = hs256(&claims(json!({ "name": "Cy" })));
        let bearer = creds(&[("authorization", &format!("Bearer {token}"))]);
        assert_eq!(
            g.admit(&no_auth(), &bearer).unwrap().user.as_deref(),
            Some("Cy")
        );
        let cookie = creds(&[("cookie", &format!("a=b; io_token={token}; c=d"))]);
        assert_eq!(
            g.admit(&no_auth(), &cookie).unwrap().user.as_deref(),
            Some("Cy")
        );
        let basic = creds(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(
            !g.admit(&no_auth(), &basic).unwrap().verified,
            "not a bearer token"
        );
        let bad = creds(&[("cookie", "io_token=%FF%FE")]);
        assert_eq!(g.admit(&no_auth(), &bad).unwrap_err(), Reason::Malformed);
        // auth.token wins over the header.
        let forged = creds(&[("authorization", "Bearer x.y.z")]);
        assert!(g.admit(&auth(&token), &forged).is_ok());
    }

    #[test]
    fn user_from_cookie_and_required() {
        let g = Gate::compile(&AuthConfig {
            required: true,
            user_from: Some(UserFrom {
                cookie: "nickname".to_owned(),
            }),
            jwt: None,
        })
        .unwrap();
        let c = creds(&[("cookie", "theme=dark; nickname=Ren%C3%A9%20K; x")]);
        assert_eq!(
            g.admit(&no_auth(), &c).unwrap().user.as_deref(),
            Some("René K")
        );
        let quoted = creds(&[("cookie", "nickname=\"Zoe\"")]);
        assert_eq!(
            g.admit(&no_auth(), &quoted).unwrap().user.as_deref(),
            Some("Zoe")
        );
        for garbage in ["nickname=%FF", "nickname=%20%20", "nickname=%0A"] {
            assert_eq!(
                g.admit(&no_auth(), &creds(&[("cookie", garbage)]))
                    .unwrap_err(),
                Reason::Cookie,
                "{garbage}"
            );
        }
        for missing in ["", "nickname=", "other=1", "=; ;;nickname"] {
            assert_eq!(
                g.admit(&no_auth(), &creds(&[("cookie", missing)]))
                    .unwrap_err(),
                Reason::Missing,
                "{missing:?}"
            );
        }
        assert_eq!(
            g.admit(&no_auth(), &Credentials::default()).unwrap_err(),
            Reason::Missing
        );
        // Two Cookie headers are read as one list.
        let two = creds(&[("cookie", "a=1"), ("cookie", "nickname=Two")]);
        assert_eq!(
            g.admit(&no_auth(), &two).unwrap().user.as_deref(),
            Some("Two")
        );
        // Not required: no cookie is no user, not a refusal.
        let optional = Gate::compile(&AuthConfig {
            user_from: Some(UserFrom {
                cookie: "nickname".to_owned(),
            }),
            ..AuthConfig::default()
        })
        .unwrap();
        assert!(
            optional
                .admit(&no_auth(), &Credentials::default())
                .unwrap()
                .user
                .is_none()
        );
        assert!(Gate::compile(&AuthConfig::default()).unwrap().is_open());
    }

    #[test]
    fn required_jwt_refuses_a_connection_without_a_token() {
        let g = Gate::compile(&AuthConfig {
            required: true,
            jwt: Some(JwtConfig {
                secret: Some(SECRET.to_owned()),
                ..JwtConfig::default()
            }),
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(
            g.admit(&no_auth(), &Credentials::default()).unwrap_err(),
            Reason::Missing
        );
        assert!(admit(&g, &hs256(&claims(json!({})))).is_ok());
        // With a token required, the name cookie is no credential.
        let both = Gate::compile(&AuthConfig {
            required: true,
            user_from: Some(UserFrom {
                cookie: "nickname".to_owned(),
            }),
            jwt: Some(JwtConfig {
                secret: Some(SECRET.to_owned()),
                ..JwtConfig::default()
            }),
        })
        .unwrap();
        let cookie = creds(&[("cookie", "nickname=Eve")]);
        assert_eq!(
            both.admit(&no_auth(), &cookie).unwrap_err(),
            Reason::Missing
        );
        let id = both
            .admit(&auth(&hs256(&claims(json!({ "name": "Ann" })))), &cookie)
            .unwrap();
        assert_eq!(id.user.as_deref(), Some("Ann"), "the token's user wins");
        // Not required: no token is fine, a bad one is not.
        let h = hs_gate();
        assert!(
            !h.admit(&no_auth(), &Credentials::default())
                .unwrap()
                .verified
        );
        assert_eq!(admit(&h, "x.y.z").unwrap_err(), Reason::Malformed);
    }

    #[test]
    fn reasons_are_a_small_fixed_set() {
        let all = [
            Reason::Missing,
            Reason::Malformed,
            Reason::Signature,
            Reason::Expired,
            Reason::NotYetValid,
            Reason::Issuer,
            Reason::Audience,
            Reason::Algorithm,
            Reason::Key,
            Reason::Claims,
            Reason::Cookie,
        ];
        let labels: HashSet<&str> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), all.len());
        assert!(all.iter().all(|r| !r.message().is_empty()));
    }
}
