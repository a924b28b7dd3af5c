//! Who is calling: the `Authorization: Bearer <token>` of every API request.
//!
//! Tokens are never stored or compared in plain text. The configured admin token is
//! compared by SHA-256 in constant time; stored tokens are looked up by the hex SHA-256 of
//! the presented text. An admin token may do anything; an app token (made by
//! app-portal-access) may only touch its own application and never org-level resources.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
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
fn bearer(headers: &HeaderMap) -> Option<&str> {
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
    // The store looks the hash up by equality: the hash of an unknown token reveals
    // nothing about the stored ones, so no constant-time compare is needed there.
    match state.store.find_token(&token_hash).await? {
        Some(stored) => Ok(Caller {
            role: stored.app_id.map_or(Role::Admin, Role::App),
            token_hash,
        }),
        None => Err(ApiError::Unauthenticated),
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
