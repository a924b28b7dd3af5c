//! Health checks, open without a token: `/api/v1/health` and `/api/v1/health/ping` answer
//! 204 (GET and HEAD); `/healthz` answers 200 with a small JSON body for probes that
//! want one.

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(no_content))
        .route("/health/ping", get(no_content))
}

async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /healthz`: `{"status": "ok"}`.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}
