//! Authentication: app-portal-access hands out app-scoped tokens, each expiring when its
//! issuer asked (7 days unless told); logout revokes one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookline_core::id::AppId;
use hookline_core::model::Token;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::application::{ApplicationIn, get_or_create};
use crate::AppState;
use crate::auth::{Caller, Role, token_hash};
use crate::error::ApiError;
use crate::extract::MaybeJson;
use crate::idempotency::SecretJson;
use crate::openapi::Errors;
use crate::validate::{Validate, Violations};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(app_portal_access))
        .routes(routes!(logout))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPortalAccessIn {
    /// Creates the application if the path names none.
    #[serde(default)]
    pub application: Option<ApplicationIn>,
    /// Seconds the token is valid for: 1 hour to 7 days, 7 days when absent or `null`.
    /// The open-source server's contract has no such field, but the Svix SDKs send it
    /// (some with 604800 always), with this range and default.
    #[serde(default)]
    pub expiry: Option<u64>,
}

impl Validate for AppPortalAccessIn {
    fn validate(&self, v: &mut Violations) {
        if let Some(app) = &self.application {
            v.nested("application", |v| app.validate(v));
        }
        token_expiry(v, self.expiry);
    }
}

/// The shortest lifetime a caller may ask for an app token: an hour.
pub const MIN_TOKEN_EXPIRY_SECS: u64 = 3600;
/// The longest, and the default: 7 days, as the Svix contracts say for both
/// app-portal-access and a source's dashboard.
pub const MAX_TOKEN_EXPIRY_SECS: u64 = 604_800;

/// Checks an `expiry` field against the range the Svix contracts give.
pub fn token_expiry(v: &mut Violations, expiry: Option<u64>) {
    if expiry.is_some_and(|secs| !(MIN_TOKEN_EXPIRY_SECS..=MAX_TOKEN_EXPIRY_SECS).contains(&secs)) {
        v.add(
            &["expiry"],
            format!("must be between {MIN_TOKEN_EXPIRY_SECS} and {MAX_TOKEN_EXPIRY_SECS} seconds"),
        );
    }
}

/// The lifetime of a new app token: `expiry` seconds, or the default.
pub fn token_lifetime(expiry: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(expiry.unwrap_or(MAX_TOKEN_EXPIRY_SECS))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppPortalAccessOut {
    /// The console, signed in with the token and open at the application.
    pub url: String,
    /// A token for this application only.
    pub token: String,
}

/// The prefix of app-scoped tokens.
pub const APP_TOKEN_PREFIX: &str = "appsk_";

/// A new app token: the prefix and 43 random base62 characters (256 bits). Base62 has no
/// `.`, so the Svix SDKs never mistake a token's tail for a region.
fn new_app_token() -> String {
    format!("{APP_TOKEN_PREFIX}{}", hookline_core::id::random_base62(43))
}

/// Issues a token scoped to one application and a console link that carries it.
#[utoipa::path(post, path = "/auth/app-portal-access/{app_id}", operation_id = "v1.authentication.app-portal-access", tag = "Authentication",
    request_body(content = Option<AppPortalAccessIn>, description = "Optional: no body takes the defaults"),
    responses((status = 200, description = "A new app token", body = AppPortalAccessOut), Errors))]
async fn app_portal_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    MaybeJson(body): MaybeJson<AppPortalAccessIn>,
) -> Result<SecretJson<AppPortalAccessOut>, ApiError> {
    caller.require_admin()?;
    let lifetime = token_lifetime(body.expiry);
    let (app, _) = get_or_create(&state, &app_id, body.application).await?;
    let opens = format!("app={}", app.id);
    Ok(SecretJson(
        issue_app_token(&state, app.id, lifetime, &opens).await?,
    ))
}

/// Stores a new token scoped to `app`, working for `lifetime` from now on the server's
/// clock, and returns it with a console link that carries it.
pub async fn issue_app_token(
    state: &AppState,
    app: AppId,
    lifetime: std::time::Duration,
    opens: &str,
) -> Result<AppPortalAccessOut, ApiError> {
    let token = new_app_token();
    let now = state.clock.now();
    let lifetime = chrono::Duration::from_std(lifetime)
        .map_err(|_| ApiError::Internal("a token lifetime out of range".into()))?;
    state
        .store
        .put_token(&Token {
            hash: token_hash(&token),
            app_id: Some(app),
            created_at: now,
            expires_at: Some(now + lifetime),
        })
        .await?;
    // The console signs in with the token and opens what `opens` names (`app=…` or
    // `source=…`), taking both out of the address bar.
    let url = format!(
        "{}/console#token={token}&{opens}",
        state.config.public_url.trim_end_matches('/')
    );
    Ok(AppPortalAccessOut { url, token })
}

/// Revokes the app token the request carries. Admin tokens cannot be logged out.
#[utoipa::path(post, path = "/auth/logout", operation_id = "v1.authentication.logout", tag = "Authentication",
    responses((status = 204, description = "The token no longer works"), Errors))]
async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    if caller.role == Role::Admin {
        return Err(ApiError::Forbidden(
            "only app tokens can log out; admin tokens are managed by the operator",
        ));
    }
    match state.store.delete_token(&caller.token_hash).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        // An app token that authenticated but is not stored is a JWT: nothing here can
        // revoke it.
        Err(hookline_core::Error::NotFound(_)) => Err(ApiError::Forbidden(
            "a JWT cannot be logged out: it works until its `exp`",
        )),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_tokens_are_long_and_dotless() {
        let token = new_app_token();
        assert!(token.starts_with(APP_TOKEN_PREFIX));
        assert_eq!(token.len(), APP_TOKEN_PREFIX.len() + 43);
        assert!(
            token[APP_TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_ne!(token, new_app_token());
    }
}
