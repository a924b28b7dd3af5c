//! Authentication: app-portal-access hands out app-scoped tokens; logout revokes one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use hookline_core::id::AppId;
use hookline_core::model::Token;
use serde::{Deserialize, Serialize};

use super::application::{ApplicationIn, get_or_create};
use crate::AppState;
use crate::auth::{Caller, Role, token_hash};
use crate::error::ApiError;
use crate::extract::MaybeJson;
use crate::validate::{Validate, Violations};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/app-portal-access/{app_id}", post(app_portal_access))
        .route("/auth/logout", post(logout))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPortalAccessIn {
    /// Creates the application if the path names none.
    #[serde(default)]
    pub application: Option<ApplicationIn>,
}

impl Validate for AppPortalAccessIn {
    fn validate(&self, v: &mut Violations) {
        if let Some(app) = &self.application {
            v.nested("application", |v| app.validate(v));
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AppPortalAccessOut {
    pub url: String,
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
async fn app_portal_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    MaybeJson(body): MaybeJson<AppPortalAccessIn>,
) -> Result<Json<AppPortalAccessOut>, ApiError> {
    caller.require_admin()?;
    let (app, _) = get_or_create(&state, &app_id, body.application).await?;
    Ok(Json(issue_app_token(&state, app.id).await?))
}

/// Stores a new token scoped to `app` and returns it with a console link that carries it.
pub async fn issue_app_token(state: &AppState, app: AppId) -> Result<AppPortalAccessOut, ApiError> {
    let token = new_app_token();
    state
        .store
        .put_token(&Token {
            hash: token_hash(&token),
            app_id: Some(app),
            created_at: state.clock.now(),
        })
        .await?;
    let url = format!(
        "{}/console#token={token}",
        state.config.public_url.trim_end_matches('/')
    );
    Ok(AppPortalAccessOut { url, token })
}

/// Revokes the app token the request carries. Admin tokens cannot be logged out.
async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    if caller.role == Role::Admin {
        return Err(ApiError::Forbidden(
            "only app tokens can log out; admin tokens are managed by the operator",
        ));
    }
    state.store.delete_token(&caller.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
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
