//! OpenID Connect ID tokens signed with RS256, as Google signs the push requests of Cloud
//! Pub/Sub: `Authorization: Bearer <JWT>`, checked against the issuer's public keys.
//!
//! A [`Jwks`] is the issuer's key set, parsed from its JWKS document
//! (`{"keys":[{"kty":"RSA","kid":…,"n":…,"e":…}]}`); fetching and caching the document is
//! the caller's business, since this crate does no I/O. An [`OidcRule`] says what a token
//! must claim (audience, issuer, service account email) and how much clock skew is
//! forgiven; [`OidcRule::verify`] checks a request's token against a key set and the clock,
//! and says precisely why a token is refused ([`TokenError`]). [`token_key_id`] reads the
//! `kid` a token names without checking anything, so a caller can tell whether its cached
//! key set is stale before it verifies.
//!
//! RSA is `ring`'s (PKCS#1 v1.5 with SHA-256, moduli of 2048 to 8192 bits), the same
//! library rustls already brings in; no JWT crate is involved, since RS256 with a fixed
//! algorithm is a few lines over it and every JWT crate would bring its own RSA.
//!
//! ```
//! use hookline_signature::oidc::{Jwks, OidcRule, SigningKey};
//! use serde_json::json;
//!
//! let key = SigningKey::from_pkcs8(include_bytes!("../testdata/oidc-rsa-1.pk8"))?;
//! let keys = Jwks::parse(json!({ "keys": [key.jwk("k1")] }).to_string().as_bytes())?;
//! let now = 1_700_000_000;
//! let token = key.sign("k1", &json!({
//!     "iss": "https://accounts.google.com", "aud": "https://hooks.example/in/t",
//!     "email": "push@p.iam.gserviceaccount.com", "email_verified": true,
//!     "iat": now, "exp": now + 3600,
//! }));
//! let rule = OidcRule::google("https://hooks.example/in/t", "push@p.iam.gserviceaccount.com");
//! let headers = [("authorization", format!("Bearer {token}"))];
//! let claims = rule.verify(&headers, &keys, now + 5)?;
//! assert_eq!(claims.email, "push@p.iam.gserviceaccount.com");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Map, Value};

use crate::Headers;

const AUTHORIZATION: &str = "authorization";

/// The issuers of Google's ID tokens: the documented one, and the bare host that tokens
/// minted by some Google services carry.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Where Google publishes the keys its ID tokens are signed with.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The clock skew forgiven on `exp`, `iat` and `nbf` when none is chosen.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// Longer bearer values are not read as tokens (Google's are about 1 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The public keys of an issuer, by key id: the RS256 keys of a JWKS document. Its
/// `Debug` form lists the key ids.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<RsaKey>,
}

#[derive(Clone, PartialEq, Eq)]
struct RsaKey {
    kid: String,
    /// Big-endian, without leading zeros, as `ring` takes them.
    n: Vec<u8>,
    e: Vec<u8>,
}

/// A JWKS document that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document is not JSON, or not an object with a `keys` array.
    #[error("the JWKS document is not a JSON object with a `keys` array: {0}")]
    NotAKeySet(String),
    /// An RSA key whose members cannot be read.
    #[error("key {index} of the JWKS document is malformed: {reason}")]
    MalformedKey {
        /// Position of the key in `keys`.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not one RS256 signing key with a `kid` in the document.
    #[error("the JWKS document holds no RSA signing key with a kid")]
    NoUsableKey,
}

impl Jwks {
    /// Parses a JWKS document. Keys that cannot sign RS256 tokens (another `kty`, an `alg`
    /// other than `RS256`, a `use` other than `sig`, or no `kid`) are passed over; an RSA
    /// key whose `n` or `e` is not base64url is an error, and so is a document with no
    /// usable key at all.
    pub fn parse(document: &[u8]) -> Result<Jwks, JwksError> {
        let value: Value = serde_json::from_slice(document)
            .map_err(|error| JwksError::NotAKeySet(error.to_string()))?;
        let Some(entries) = value.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NotAKeySet("no `keys` array".to_owned()));
        };
        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let text = |name: &str| entry.get(name).and_then(Value::as_str);
            let usable = text("kty") == Some("RSA")
                && text("alg").is_none_or(|alg| alg == "RS256")
                && text("use").is_none_or(|usage| usage == "sig");
            let Some(kid) = text("kid").filter(|kid| usable && !kid.is_empty()) else {
                continue;
            };
            let component = |name: &str, missing: &'static str, invalid: &'static str| {
                let encoded = text(name).ok_or(JwksError::MalformedKey {
                    index,
                    reason: missing,
                })?;
                let decoded = URL_SAFE_NO_PAD
                    .decode(encoded.trim_end_matches('='))
                    .ok()
                    .map(|bytes| without_leading_zeros(&bytes).to_vec())
                    .filter(|bytes| !bytes.is_empty());
                decoded.ok_or(JwksError::MalformedKey {
                    index,
                    reason: invalid,
                })
            };
            keys.push(RsaKey {
                kid: kid.to_owned(),
                n: component("n", "no modulus `n`", "`n` is not base64url")?,
                e: component("e", "no exponent `e`", "`e` is not base64url")?,
            });
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Jwks { keys })
    }

    /// The key ids, in the document's order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| key.kid.as_str())
    }

    /// Whether a key has id `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (only the empty default does).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn find(&self, kid: &str) -> Option<&RsaKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("kids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// What a token must claim to be accepted: its audience, one of its issuers, and a
/// verified email, with a leeway for clock skew on its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcRule {
    audience: String,
    email: String,
    issuers: &'static [&'static str],
    leeway: Duration,
}

/// The claims of a token that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The `kid` of the key that signed it.
    pub kid: String,
    pub issuer: String,
    pub audience: String,
    pub email: String,
    /// `sub`, the account's unique id, when present.
    pub subject: Option<String>,
    /// `iat` and `exp`, Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
}

/// A token that does not verify, and exactly why. [`TokenError::code`] gives the stable
/// code of each, from the same vocabulary as [`crate::VerifyError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Authorization` header.
    #[error("missing header authorization: an OIDC bearer token is required")]
    MissingHeader,
    /// `Authorization` holds another scheme than `Bearer`.
    #[error("malformed header authorization: expected `Bearer <token>`")]
    NotBearer,
    /// The bearer token is not a JWT (three base64url parts, a JSON header and payload).
    #[error("the bearer token is not a well-formed JWT: {0}")]
    Malformed(Cow<'static, str>),
    /// The token's header names another algorithm than RS256 (`none` and HS256 included).
    #[error("the token's alg is {0:?}; only RS256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The token's header names no `kid`, so no key can be chosen.
    #[error("the token's header names no kid")]
    MissingKeyId,
    /// The key set has no key of the token's `kid`.
    #[error("no key with kid {kid:?} in the JWKS (it holds {})", describe_kids(.known))]
    UnknownKey {
        /// The `kid` the token names.
        kid: String,
        /// The key ids the set holds.
        known: Vec<String>,
    },
    /// The signature does not verify with the key the token names.
    #[error("the token's signature does not match the key {kid:?}")]
    BadSignature {
        /// The `kid` of the key tried.
        kid: String,
    },
    /// `exp`, `iat` or `nbf` is absent where required, or not a number.
    #[error("the token's {claim} claim is {problem}")]
    InvalidTime {
        /// The claim's name.
        claim: &'static str,
        /// `missing` or `not a number`.
        problem: &'static str,
    },
    /// `exp` has passed, beyond the leeway.
    #[error("the token expired {ago_secs} s ago (leeway {leeway_secs} s)")]
    Expired {
        /// Seconds since `exp`.
        ago_secs: u64,
        /// The leeway that applied.
        leeway_secs: u64,
    },
    /// `iat` or `nbf` is ahead of the clock, beyond the leeway.
    #[error(
        "the token's {claim} is {ahead_secs} s in the future (leeway {leeway_secs} s); \
         check this server's clock"
    )]
    NotYetValid {
        /// `iat` or `nbf`.
        claim: &'static str,
        /// How far ahead of the clock it is.
        ahead_secs: u64,
        /// The leeway that applied.
        leeway_secs: u64,
    },
    /// `aud` is not the configured audience.
    #[error("the token's audience is {got}, this source expects {expected:?}")]
    WrongAudience {
        /// The audience received, as JSON (`"…"`, a list, or `none`).
        got: String,
        expected: String,
    },
    /// `iss` is not one of the issuer's names.
    #[error("the token's issuer is {got}, expected {}", .expected.join(" or "))]
    WrongIssuer {
        /// The issuer received, quoted, or `none`.
        got: String,
        expected: &'static [&'static str],
    },
    /// `email` is not the configured service account.
    #[error("the token's email is {got}, this source expects {expected:?}")]
    WrongEmail {
        /// The email received, quoted, or `none`.
        got: String,
        expected: String,
    },
    /// `email_verified` is not true.
    #[error("the token's email {email:?} is not verified (email_verified is not true)")]
    EmailUnverified {
        /// The email claimed.
        email: String,
    },
}

fn describe_kids(kids: &[String]) -> String {
    if kids.is_empty() {
        return "no key".to_owned();
    }
    kids.iter()
        .map(|kid| format!("{kid:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl TokenError {
    /// A stable, machine-readable code for this failure: `missing_header`,
    /// `malformed_header`, `no_signature_matched`, `invalid_timestamp`,
    /// `timestamp_too_old`, `timestamp_too_new` or `invalid_credentials`.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::MissingHeader => "missing_header",
            TokenError::NotBearer
            | TokenError::Malformed(_)
            | TokenError::UnsupportedAlgorithm(_)
            | TokenError::MissingKeyId => "malformed_header",
            TokenError::UnknownKey { .. } | TokenError::BadSignature { .. } => {
                "no_signature_matched"
            }
            TokenError::InvalidTime { .. } => "invalid_timestamp",
            TokenError::Expired { .. } => "timestamp_too_old",
            TokenError::NotYetValid { .. } => "timestamp_too_new",
            TokenError::WrongAudience { .. }
            | TokenError::WrongIssuer { .. }
            | TokenError::WrongEmail { .. }
            | TokenError::EmailUnverified { .. } => "invalid_credentials",
        }
    }

    fn malformed(reason: impl Into<Cow<'static, str>>) -> Self {
        TokenError::Malformed(reason.into())
    }
}

/// A bearer token split and decoded, not yet verified.
struct Parsed<'t> {
    /// `header.payload`, the signed bytes.
    signed: &'t str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signature: Vec<u8>,
}

/// The token of `Authorization: Bearer <token>`.
fn bearer<H: Headers + ?Sized>(headers: &H) -> Result<&str, TokenError> {
    let value = headers
        .header(AUTHORIZATION)
        .ok_or(TokenError::MissingHeader)?;
    value
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(TokenError::NotBearer)
}

fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::malformed(format!(
            "it is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::malformed(
            "expected three base64url parts separated by `.`",
        ));
    };
    let object = |part: &str, name: &'static str| -> Result<Map<String, Value>, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::malformed(format!("its {name} is not base64url")))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(TokenError::malformed(format!(
                "its {name} is not a JSON object"
            ))),
        }
    };
    let header_map = object(header, "header")?;
    let claims = object(payload, "payload")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::malformed("its signature is not base64url"))?;
    Ok(Parsed {
        signed: &token[..header.len() + 1 + payload.len()],
        header: header_map,
        claims,
        signature,
    })
}

/// The `kid` the request's bearer token names, if it has a readable one. Nothing is
/// verified: it tells a caller which key it will need, so that it can fetch a key set
/// that holds it before calling [`OidcRule::verify`].
pub fn token_key_id<H: Headers + ?Sized>(headers: &H) -> Option<String> {
    let parsed = parse(bearer(headers).ok()?).ok()?;
    parsed
        .header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl OidcRule {
    /// Google's ID tokens for `audience`, sent by the service account `email`, with the
    /// [`DEFAULT_LEEWAY`]. The audience is compared exactly, the email without regard to
    /// ASCII case.
    pub fn google(audience: impl Into<String>, email: impl Into<String>) -> Self {
        OidcRule {
            audience: audience.into(),
            email: email.into(),
            issuers: &GOOGLE_ISSUERS,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// The same rule with another leeway on `exp`, `iat` and `nbf`. A zero leeway still
    /// checks them: an expired token is never accepted.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    /// Checks the request's `Authorization: Bearer` token at `now` (Unix seconds): its
    /// header (`alg` RS256, a `kid`), its signature with the key of that `kid` in `keys`,
    /// then its claims: `iss`, `aud`, `email` and `email_verified`, `exp`, `iat` and `nbf`.
    pub fn verify<H: Headers + ?Sized>(
        &self,
        headers: &H,
        keys: &Jwks,
        now: i64,
    ) -> Result<Claims, TokenError> {
        let parsed = parse(bearer(headers)?)?;
        match parsed.header.get("alg") {
            Some(Value::String(alg)) if alg == "RS256" => {}
            Some(Value::String(alg)) => return Err(TokenError::UnsupportedAlgorithm(alg.clone())),
            Some(other) => return Err(TokenError::UnsupportedAlgorithm(other.to_string())),
            None => return Err(TokenError::malformed("its header names no alg")),
        }
        let kid = parsed
            .header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|kid| !kid.is_empty())
            .ok_or(TokenError::MissingKeyId)?;
        let key = keys.find(kid).ok_or_else(|| TokenError::UnknownKey {
            kid: kid.to_owned(),
            known: keys.key_ids().map(str::to_owned).collect(),
        })?;
        ring::signature::RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            parsed.signed.as_bytes(),
            &parsed.signature,
        )
        .map_err(|_| TokenError::BadSignature {
            kid: kid.to_owned(),
        })?;
        self.check_claims(kid, &parsed.claims, now)
    }

    fn check_claims(
        &self,
        kid: &str,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<Claims, TokenError> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let shown = |name: &str| claims.get(name).map_or("none".to_owned(), Value::to_string);

        let issuer = text("iss")
            .filter(|iss| self.issuers.contains(iss))
            .ok_or_else(|| TokenError::WrongIssuer {
                got: shown("iss"),
                expected: self.issuers,
            })?;
        let audience_matches = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_matches {
            return Err(TokenError::WrongAudience {
                got: shown("aud"),
                expected: self.audience.clone(),
            });
        }
        let email = text("email")
            .filter(|email| email.eq_ignore_ascii_case(&self.email))
            .ok_or_else(|| TokenError::WrongEmail {
                got: shown("email"),
                expected: self.email.clone(),
            })?;
        // Some Google services have written the flag as the string "true".
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => *verified,
            Some(Value::String(verified)) => verified == "true",
            _ => false,
        };
        if !verified {
            return Err(TokenError::EmailUnverified {
                email: email.to_owned(),
            });
        }

        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let leeway_secs = self.leeway.as_secs();
        let expires_at = time(claims, "exp")?.ok_or(TokenError::InvalidTime {
            claim: "exp",
            problem: "missing",
        })?;
        if now > expires_at.saturating_add(leeway) {
            return Err(TokenError::Expired {
                ago_secs: now.abs_diff(expires_at),
                leeway_secs,
            });
        }
        let issued_at = time(claims, "iat")?.ok_or(TokenError::InvalidTime {
            claim: "iat",
            problem: "missing",
        })?;
        for (claim, at) in [("iat", Some(issued_at)), ("nbf", time(claims, "nbf")?)] {
            if let Some(at) = at
                && at > now.saturating_add(leeway)
            {
                return Err(TokenError::NotYetValid {
                    claim,
                    ahead_secs: at.abs_diff(now),
                    leeway_secs,
                });
            }
        }
        Ok(Claims {
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
            audience: self.audience.clone(),
            email: email.to_owned(),
            subject: text("sub").map(str::to_owned),
            issued_at,
            expires_at,
        })
    }
}

/// A NumericDate claim, in whole Unix seconds; `None` when absent.
fn time(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<i64>, TokenError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let not_a_number = TokenError::InvalidTime {
        claim,
        problem: "not a number",
    };
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| {
                // RFC 7519 allows fractions; anything beyond i64 is not a time.
                number
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 9.0e18)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(not_a_number),
        _ => Err(not_a_number),
    }
}

/// An RSA private key that signs RS256 tokens as an issuer would: for tests of receivers
/// and for tools that stand in for one. Its `Debug` form shows only the modulus size.
pub struct SigningKey {
    pair: RsaKeyPair,
}

/// A private key that `ring` does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RSA private key in PKCS#8 DER that ring accepts: {0}")]
pub struct KeyRejected(String);

impl SigningKey {
    /// A key from its PKCS#8 DER encoding (`openssl genpkey -algorithm RSA -outform DER`).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyRejected> {
        RsaKeyPair::from_pkcs8(der)
            .map(|pair| SigningKey { pair })
            .map_err(|error| KeyRejected(error.to_string()))
    }

    /// The public key as a JWK of a JWKS document, with id `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = self.pair.public().into();
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n),
            "e": URL_SAFE_NO_PAD.encode(public.e),
        })
    }

    /// A JWT with header `{"alg":"RS256","kid":kid,"typ":"JWT"}` and these claims, signed.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let header = serde_json::json!({ "alg": "RS256", "kid": kid, "typ": "JWT" });
        self.sign_raw(&header, claims)
    }

    /// A JWT with exactly this header and these claims, signed with RS256 whatever the
    /// header says (tests use it to make tokens that must be refused).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .expect("a buffer of the modulus' length takes an RS256 signature");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("modulus_bits", &(self.pair.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A change to a token's claims.
    type Change = fn(&mut Value);
    /// Headers, the code they are refused with, and part of the reason.
    type Case = (Vec<(&'static str, String)>, &'static str, &'static str);

    const NOW: i64 = 1_700_000_000;
    const AUDIENCE: &str = "https://hooks.example.com/in/tok_1";
    const EMAIL: &str = "pubsub-push@project.iam.gserviceaccount.com";

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(include_bytes!("../testdata/oidc-rsa-1.pk8")).unwrap()
    }

    fn other_key() -> SigningKey {
        SigningKey::from_pkcs8(include_bytes!("../testdata/oidc-rsa-2.pk8")).unwrap()
    }

    /// The JWKS Google would publish: the fixture's key as `k1`, another as `k0`.
    fn keys() -> Jwks {
        let document = json!({ "keys": [other_key().jwk("k0"), key().jwk("k1")] });
        Jwks::parse(document.to_string().as_bytes()).unwrap()
    }

    /// The claims of a Pub/Sub push token issued at `NOW`.
    fn claims() -> Value {
        json!({
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": EMAIL,
            "email_verified": true,
            "iat": NOW,
            "exp": NOW + 3600,
        })
    }

    fn rule() -> OidcRule {
        OidcRule::google(AUDIENCE, EMAIL)
    }

    fn verify(token: &str, now: i64) -> Result<Claims, TokenError> {
        rule().verify(
            &[("Authorization", format!("Bearer {token}"))],
            &keys(),
            now,
        )
    }

    fn with(change: impl FnOnce(&mut Value)) -> String {
        let mut claims = claims();
        change(&mut claims);
        key().sign("k1", &claims)
    }

    #[test]
    fn a_genuine_token_verifies_and_yields_its_claims() {
        let token = key().sign("k1", &claims());
        let verified = verify(&token, NOW + 10).unwrap();
        assert_eq!(
            verified,
            Claims {
                kid: "k1".into(),
                issuer: "https://accounts.google.com".into(),
                audience: AUDIENCE.into(),
                email: EMAIL.into(),
                subject: Some("1234567890".into()),
                issued_at: NOW,
                expires_at: NOW + 3600,
            }
        );
        // The bare issuer, an audience list, a string flag and an upper-case email pass.
        let token = with(|c| {
            c["iss"] = json!("accounts.google.com");
            c["aud"] = json!(["other", AUDIENCE]);
            c["email_verified"] = json!("true");
            c["email"] = json!(EMAIL.to_uppercase());
        });
        verify(&token, NOW).unwrap();
        // `bearer` in any case, surrounding spaces.
        let headers = [("authorization", format!("  bearer   {token} "))];
        rule().verify(&headers, &keys(), NOW).unwrap();
        assert_eq!(token_key_id(&headers).as_deref(), Some("k1"));
    }

    #[test]
    fn expiry_and_issue_time_are_checked_with_the_leeway() {
        let token = key().sign("k1", &claims());
        // exp + 60 s passes, one more second does not.
        verify(&token, NOW + 3600 + 60).unwrap();
        let error = verify(&token, NOW + 3600 + 412).unwrap_err();
        assert_eq!(
            error,
            TokenError::Expired {
                ago_secs: 412,
                leeway_secs: 60
            }
        );
        assert_eq!(error.code(), "timestamp_too_old");
        assert_eq!(
            error.to_string(),
            "the token expired 412 s ago (leeway 60 s)"
        );

        let error = verify(&token, NOW - 61).unwrap_err();
        assert_eq!(error.code(), "timestamp_too_new");
        assert!(
            error.to_string().contains("iat is 61 s in the future"),
            "{error}"
        );
        verify(&token, NOW - 60).unwrap();

        // A zero leeway still refuses an expired token.
        let strict = rule().leeway(Duration::ZERO);
        let headers = [("authorization", format!("Bearer {token}"))];
        strict.verify(&headers, &keys(), NOW + 3600).unwrap();
        let error = strict.verify(&headers, &keys(), NOW + 3601).unwrap_err();
        assert_eq!(error.code(), "timestamp_too_old");

        let not_before = with(|c| c["nbf"] = json!(NOW + 600));
        let error = verify(&not_before, NOW).unwrap_err();
        assert!(error.to_string().contains("nbf is 600 s"), "{error}");

        for (claim, value, problem) in [
            ("exp", Value::Null, "not a number"),
            ("exp", json!("soon"), "not a number"),
            ("iat", json!([1]), "not a number"),
        ] {
            let token = with(|c| c[claim] = value);
            let error = verify(&token, NOW).unwrap_err();
            assert_eq!(error, TokenError::InvalidTime { claim, problem });
            assert_eq!(error.code(), "invalid_timestamp");
        }
        let token = with(|c| {
            c.as_object_mut().unwrap().remove("exp");
        });
        assert_eq!(
            verify(&token, NOW).unwrap_err().to_string(),
            "the token's exp claim is missing"
        );
        let fractional = with(|c| c["exp"] = json!(NOW as f64 + 0.5));
        verify(&fractional, NOW).unwrap();
    }

    #[test]
    fn each_claim_is_refused_with_what_was_expected() {
        let cases: [(Change, &str); 6] = [
            (
                |c| c["aud"] = json!("https://elsewhere.example/push"),
                "the token's audience is \"https://elsewhere.example/push\", this source expects \"https://hooks.example.com/in/tok_1\"",
            ),
            (
                |c| {
                    c.as_object_mut().unwrap().remove("aud");
                },
                "the token's audience is none, this source expects",
            ),
            (
                |c| c["iss"] = json!("https://evil.example"),
                "the token's issuer is \"https://evil.example\", expected https://accounts.google.com or accounts.google.com",
            ),
            (
                |c| c["email"] = json!("someone@else.iam.gserviceaccount.com"),
                "the token's email is \"someone@else.iam.gserviceaccount.com\", this source expects \"pubsub-push@project.iam.gserviceaccount.com\"",
            ),
            (
                |c| c["email_verified"] = json!(false),
                "the token's email \"pubsub-push@project.iam.gserviceaccount.com\" is not verified",
            ),
            (
                |c| {
                    c.as_object_mut().unwrap().remove("email_verified");
                },
                "is not verified",
            ),
        ];
        for (change, reason) in cases {
            let token = with(change);
            let error = verify(&token, NOW).unwrap_err();
            assert_eq!(error.code(), "invalid_credentials", "{error}");
            assert!(error.to_string().contains(reason), "{error} lacks {reason}");
        }
    }

    #[test]
    fn the_signature_must_be_the_named_keys() {
        // Signed by another key under the name k1.
        let forged = other_key().sign("k1", &claims());
        let error = verify(&forged, NOW).unwrap_err();
        assert_eq!(error, TokenError::BadSignature { kid: "k1".into() });
        assert_eq!(error.code(), "no_signature_matched");
        assert_eq!(
            error.to_string(),
            "the token's signature does not match the key \"k1\""
        );

        let unknown = key().sign("k9", &claims());
        let error = verify(&unknown, NOW).unwrap_err();
        assert_eq!(error.code(), "no_signature_matched");
        assert_eq!(
            error.to_string(),
            "no key with kid \"k9\" in the JWKS (it holds \"k0\", \"k1\")"
        );
        let error = rule()
            .verify(
                &[("authorization", format!("Bearer {unknown}"))],
                &Jwks::default(),
                NOW,
            )
            .unwrap_err();
        assert!(error.to_string().ends_with("(it holds no key)"), "{error}");

        // A payload changed after signing: the audience swapped in by hand.
        let token = key().sign("k1", &with_audience("https://elsewhere.example"));
        let genuine = key().sign("k1", &claims());
        let (head, rest) = genuine.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged_payload = token.split('.').nth(1).unwrap();
        let tampered = format!("{head}.{forged_payload}.{signature}");
        assert_eq!(
            verify(&tampered, NOW).unwrap_err(),
            TokenError::BadSignature { kid: "k1".into() }
        );
        // A signature cut short by a byte.
        let mut short = URL_SAFE_NO_PAD.decode(signature).unwrap();
        short.pop();
        let cut = format!(
            "{head}.{}.{}",
            rest.split_once('.').unwrap().0,
            URL_SAFE_NO_PAD.encode(short)
        );
        assert_eq!(
            verify(&cut, NOW).unwrap_err().code(),
            "no_signature_matched"
        );
    }

    fn with_audience(audience: &str) -> Value {
        let mut claims = claims();
        claims["aud"] = json!(audience);
        claims
    }

    #[test]
    fn only_rs256_with_a_kid_is_accepted() {
        for alg in ["HS256", "none", "RS512", "rs256"] {
            let token = key().sign_raw(&json!({"alg": alg, "kid": "k1"}), &claims());
            let error = verify(&token, NOW).unwrap_err();
            assert_eq!(error, TokenError::UnsupportedAlgorithm(alg.into()));
            assert_eq!(error.code(), "malformed_header");
        }
        // `alg: none` with no signature at all.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(
            verify(&unsigned, NOW).unwrap_err(),
            TokenError::UnsupportedAlgorithm("none".into())
        );
        let token = key().sign_raw(&json!({"alg": "RS256"}), &claims());
        assert_eq!(verify(&token, NOW).unwrap_err(), TokenError::MissingKeyId);
        let token = key().sign_raw(&json!({"kid": "k1"}), &claims());
        assert!(
            verify(&token, NOW)
                .unwrap_err()
                .to_string()
                .contains("names no alg")
        );
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let token = key().sign("k1", &claims());
        let cases: [Case; 8] = [
            (vec![], "missing_header", "missing header authorization"),
            (
                vec![("authorization", format!("Basic {token}"))],
                "malformed_header",
                "expected `Bearer <token>`",
            ),
            (
                vec![("authorization", "Bearer".to_owned())],
                "malformed_header",
                "expected `Bearer <token>`",
            ),
            (
                vec![("authorization", "Bearer a.b".to_owned())],
                "malformed_header",
                "three base64url parts",
            ),
            (
                vec![("authorization", "Bearer a.b.c.d".to_owned())],
                "malformed_header",
                "three base64url parts",
            ),
            (
                vec![("authorization", "Bearer !!.e30.AA".to_owned())],
                "malformed_header",
                "header is not base64url",
            ),
            (
                vec![("authorization", "Bearer e30.WzFd.AA".to_owned())],
                "malformed_header",
                "payload is not a JSON object",
            ),
            (
                vec![("authorization", format!("Bearer {}", "a".repeat(20_000)))],
                "malformed_header",
                "longer than",
            ),
        ];
        for (headers, code, reason) in cases {
            let error = rule().verify(&headers, &keys(), NOW).unwrap_err();
            assert_eq!(error.code(), code, "{headers:?}: {error}");
            assert!(error.to_string().contains(reason), "{error} lacks {reason}");
            assert_eq!(token_key_id(&headers), None);
        }
    }

    #[test]
    fn key_sets_take_rs256_keys_and_refuse_unusable_documents() {
        let jwk = key().jwk("k1");
        let document = json!({ "keys": [
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": jwk["n"], "e": jwk["e"]},
            // Google's own shape: no `use` sometimes, `alg` RS256.
            {"kty": "RSA", "kid": "k1", "alg": "RS256", "n": jwk["n"], "e": jwk["e"]},
        ]});
        let keys = Jwks::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(keys.key_ids().collect::<Vec<_>>(), ["k1"]);
        assert!(keys.contains("k1") && !keys.contains("ps"));
        assert_eq!(format!("{keys:?}"), r#"Jwks { kids: ["k1"] }"#);

        // A modulus with a leading zero byte (as some encoders write it) is the same key.
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key().pair.public().into();
        let mut padded = vec![0];
        padded.extend(&public.n);
        let document = json!({ "keys": [{
            "kty": "RSA", "kid": "k1", "n": URL_SAFE_NO_PAD.encode(padded), "e": jwk["e"],
        }]});
        let keys = Jwks::parse(document.to_string().as_bytes()).unwrap();
        let token = key().sign("k1", &claims());
        rule()
            .verify(&[("authorization", format!("Bearer {token}"))], &keys, NOW)
            .unwrap();

        for (document, error) in [
            ("not json", "not a JSON object with a `keys` array"),
            (r#"{"keys": {}}"#, "no `keys` array"),
            (r#"{"keys": []}"#, "no RSA signing key"),
            (
                r#"{"keys": [{"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}]}"#,
                "key 0 of the JWKS document is malformed: `n` is not base64url",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "kid": "a", "n": "AQAB"}]}"#,
                "no exponent `e`",
            ),
        ] {
            let refused = Jwks::parse(document.as_bytes()).unwrap_err();
            assert!(refused.to_string().contains(error), "{document}: {refused}");
        }
    }

    #[test]
    fn the_fixture_keys_are_distinct_2048_bit_keys() {
        assert_eq!(
            format!("{:?}", key()),
            "SigningKey { modulus_bits: 2048, .. }"
        );
        assert_ne!(key().jwk("k")["n"], other_key().jwk("k")["n"]);
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
    }
}
