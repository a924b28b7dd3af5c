//! Health checks, open without a token: `/api/v1/health` and `/api/v1/health/ping` answer
//! 204 (GET and HEAD); `/healthz` answers 200 with a small JSON body for probes that
//! want one.

use axum::Json;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ping))
}

#[utoipa::path(get, path = "/health", operation_id = "v1.health.get", tag = "Health",
    security(()), responses((status = 204, description = "The server is up")))]
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[utoipa::path(get, path = "/health/ping", operation_id = "v1.health.ping", tag = "Health",
    security(()), responses((status = 204, description = "The server is up")))]
async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /healthz`: `{"status": "ok"}`.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}
