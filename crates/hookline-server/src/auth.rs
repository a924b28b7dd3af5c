//! Who is calling: the `Authorization: Bearer <token>` of every API request.
//!
//! Tokens are never stored or compared in plain text. The configured admin token is
//! compared by SHA-256 in constant time; stored tokens are looked up by the hex SHA-256 of
//! the presented text, and refused once past their expiry on the server's clock. When a
//! JWT key is configured, Svix-style HS256 JWTs are accepted too ([`jwt`]). An admin
//! token may do anything; an app token (made by app-portal-access or a source's dashboard)
//! may only touch its own application and never org-level resources.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hookline_core::Code;
use hookline_core::id::AppId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Only this application's resources.
    App(AppId),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// Hex SHA-256 of the token: its identity in storage and in idempotency keys.
    pub token_hash: String,
}

impl Caller {
    /// Refuses app tokens: for org-level operations.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::App(_) => Err(ApiError::Forbidden(
                "this operation needs an admin token; app tokens cannot use it",
            )),
        }
    }

    /// Refuses app tokens of another application.
    pub fn require_app(&self, app: &AppId) -> Result<(), ApiError> {
        match &self.role {
            Role::App(own) if own != app => Err(ApiError::Forbidden(
                "this token is scoped to another application",
            )),
            _ => Ok(()),
        }
    }
}

/// The hex SHA-256 of a token: how tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticates the request's bearer token.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthenticated)?;
    let presented = Sha256::digest(token.as_bytes());
    let token_hash = hex::encode(presented);
    if let Some(admin) = &state.config.admin_token {
        let expected = Sha256::digest(admin.as_bytes());
        if bool::from(presented.as_slice().ct_eq(expected.as_slice())) {
            return Ok(Caller {
                role: Role::Admin,
                token_hash,
            });
        }
    }
    if let Some(secret) = &state.config.jwt_secret
        && jwt::looks_like(token)
    {
        let role = jwt::verify(token, secret.as_bytes(), state.clock.unix())
            .map_err(|refusal| ApiError::refused(Code::AuthenticationFailed, refusal))?;
        return Ok(Caller { role, token_hash });
    }
    // The store looks the hash up by equality: the hash of an unknown token reveals
    // nothing about the stored ones, so no constant-time compare is needed there.
    match state.store.find_token(&token_hash).await? {
        Some(stored) if stored.is_expired(state.clock.now()) => Err(ApiError::refused(
            Code::AuthenticationFailed,
            "this token has expired; ask for a new one",
        )),
        Some(stored) => Ok(Caller {
            role: stored.app_id.map_or(Role::Admin, Role::App),
            token_hash,
        }),
        None => Err(ApiError::Unauthenticated),
    }
}

/// Svix-style JWTs: HS256 with the configured key, as the open-source Svix server issues
/// them (`iss` `svix-server`, `sub` the organization for an admin token, or `org` the
/// organization and `sub` the application for an app token; `iat`, `exp`, `nbf`).
///
/// Only HS256 is accepted: the header's `alg` is never trusted to choose how to verify
/// (`none`, or an algorithm whose "key" an attacker knows, would let anyone mint
/// tokens). A token without `exp` does not expire, as with the Svix server; `exp` is
/// honoured to the second, `nbf` and `iat` with [`jwt::LEEWAY_SECS`] for the issuer's
/// clock.
pub mod jwt {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    use hookline_core::id::AppId;
    use serde::Deserialize;
    use sha2::Sha256;

    use super::Role;

    /// How far ahead of this server's clock the issuer's may be for `nbf` and `iat`.
    pub const LEEWAY_SECS: i64 = 60;

    /// Whether a bearer token is shaped as a JWT (three dot-separated parts). Hookline's
    /// own tokens never contain a dot.
    pub fn looks_like(token: &str) -> bool {
        token.split('.').count() == 3
    }

    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        crit: Option<serde_json::Value>,
    }

    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        sub: Option<String>,
        /// The organization of an app token (Svix's custom claim).
        #[serde(default)]
        org: Option<String>,
        #[serde(default)]
        exp: Option<i64>,
        #[serde(default)]
        nbf: Option<i64>,
        #[serde(default)]
        iat: Option<i64>,
    }

    fn decode(part: &str, what: &str) -> Result<Vec<u8>, String> {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("the JWT's {what} is not base64url"))
    }

    /// Verifies `token` with `key` at `now` (Unix seconds); the role it grants, or why
    /// it is refused.
    pub fn verify(token: &str, key: &[u8], now: i64) -> Result<Role, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a JWT has three parts separated by dots".into());
        };
        let parsed: Header = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| "the JWT's header is not a JSON object with `alg`".to_owned())?;
        if parsed.alg != "HS256" {
            return Err(format!(
                "only HS256 JWTs are accepted, this one says {:?}",
                parsed.alg
            ));
        }
        if parsed.crit.is_some() {
            return Err("the JWT has critical header extensions, which are not supported".into());
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        // Constant time: `verify_slice` compares the whole tag whatever it holds.
        mac.verify_slice(&decode(signature, "signature")?)
            .map_err(|_| "the JWT's signature does not match the configured key".to_owned())?;
        let claims: Claims = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| "the JWT's claims are not a JSON object of the expected types")?;
        if claims.exp.is_some_and(|exp| now >= exp) {
            return Err("the JWT has expired (`exp`)".into());
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err("the JWT is not valid yet (`nbf`)".into());
        }
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err("the JWT was issued in the future (`iat`)".into());
        }
        let sub = claims.sub.filter(|sub| !sub.is_empty());
        match (claims.org, sub) {
            (None, Some(sub)) if sub.starts_with("org_") => Ok(Role::Admin),
            (Some(_), Some(sub)) if AppId::is_id(&sub) => Ok(Role::App(AppId::from_string(sub))),
            (None, _) => Err("the JWT's `sub` must be an organization id (`org_...`)".into()),
            (Some(_), _) => Err("the JWT's `sub` must be an application id (`app_...`)".into()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The idempotency middleware may have authenticated the request already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = authenticate(&parts.headers, state).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    mod jwts {
        use super::super::jwt::{LEEWAY_SECS, looks_like, verify};
        use super::*;
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::{Hmac, Mac};

        const KEY: &[u8] = b"a-jwt-key-of-at-least-32-characters";
        const NOW: i64 = 1_700_000_000;

        fn mint(header: &str, claims: serde_json::Value, key: &[u8]) -> String {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(input.as_bytes());
            let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            format!("{input}.{tag}")
        }

        fn hs256(claims: serde_json::Value) -> String {
            mint(r#"{"alg":"HS256","typ":"JWT"}"#, claims, KEY)
        }

        #[test]
        fn svix_org_and_app_tokens_are_admin_and_app() {
            let org = hs256(serde_json::json!({
                "iat": NOW - 10, "exp": NOW + 3600, "nbf": NOW - 10,
                "iss": "svix-server", "sub": "org_23rb8YdGqMT0qIzpgGwdXfHirMu",
            }));
            assert!(looks_like(&org));
            assert_eq!(verify(&org, KEY, NOW), Ok(Role::Admin));
            let app = AppId::new();
            let scoped = hs256(serde_json::json!({
                "exp": NOW + 3600, "sub": app.as_str(), "org": "org_1",
            }));
            assert_eq!(verify(&scoped, KEY, NOW), Ok(Role::App(app)));
            assert!(!looks_like("appsk_abc") && !looks_like("hlk_abc"));
        }

        #[test]
        fn times_are_honoured() {
            let expiring = hs256(serde_json::json!({"sub": "org_1", "exp": NOW}));
            assert!(verify(&expiring, KEY, NOW - 1).is_ok());
            assert!(verify(&expiring, KEY, NOW).unwrap_err().contains("expired"));
            let later = hs256(serde_json::json!({"sub": "org_1", "nbf": NOW + LEEWAY_SECS + 1}));
            assert!(
                verify(&later, KEY, NOW)
                    .unwrap_err()
                    .contains("not valid yet")
            );
            assert!(verify(&later, KEY, NOW + 1).is_ok(), "within the leeway");
            let future = hs256(serde_json::json!({"sub": "org_1", "iat": NOW + 3600}));
            assert!(verify(&future, KEY, NOW).unwrap_err().contains("iat"));
        }

        #[test]
        fn only_hs256_with_the_key_is_accepted() {
            let claims = serde_json::json!({"sub": "org_1", "exp": NOW + 60});
            let wrong_key = mint(r#"{"alg":"HS256"}"#, claims.clone(), b"another-key");
            assert!(
                verify(&wrong_key, KEY, NOW)
                    .unwrap_err()
                    .contains("signature")
            );
            for alg in ["none", "HS512", "hs256", "RS256"] {
                let token = mint(&format!(r#"{{"alg":"{alg}"}}"#), claims.clone(), KEY);
                assert!(
                    verify(&token, KEY, NOW).unwrap_err().contains("HS256"),
                    "{alg}"
                );
            }
            // `alg: none` with no signature at all.
            let unsigned = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            assert!(verify(&unsigned, KEY, NOW).is_err());
            let tampered = hs256(claims.clone()).replacen('.', ".e30", 1);
            assert!(verify(&tampered, KEY, NOW).is_err());
        }

        #[test]
        fn sub_must_name_an_organization_or_an_app() {
            for claims in [
                serde_json::json!({"exp": NOW + 60}),
                serde_json::json!({"sub": "someone"}),
                serde_json::json!({"sub": "org_1", "org": "org_1"}),
            ] {
                assert!(
                    verify(&hs256(claims.clone()), KEY, NOW).is_err(),
                    "{claims}"
                );
            }
        }
    }

    #[test]
    fn app_tokens_stay_in_their_app() {
        let own = AppId::new();
        let caller = Caller {
            role: Role::App(own.clone()),
            token_hash: String::new(),
        };
        assert!(caller.require_app(&own).is_ok());
        assert!(matches!(
            caller.require_app(&AppId::new()),
            Err(ApiError::Forbidden(_))
        ));
        assert!(caller.require_admin().is_err());
    }
}
