//! `GET /metrics`: the process's metrics ([`hookline_core::metrics`]) in the OpenMetrics
//! text format Prometheus scrapes, with the gauges read from the store at the moment.
//! Readable with the admin token or the metrics token (`HOOKLINE_METRICS_TOKEN`), which
//! opens nothing else.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookline_core::metrics::{Snapshot, metrics as registry};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::{Role, authenticate, bearer};
use crate::error::ApiError;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match answer(&state, &headers).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &AppState, headers: &HeaderMap) -> Result<Response, ApiError> {
    if !is_metrics_token(state, headers) {
        let caller = authenticate(headers, state).await?;
        if !matches!(caller.role, Role::Admin) {
            return Err(ApiError::Forbidden(
                "metrics need the admin token or the metrics token",
            ));
        }
    }
    let snapshot = Snapshot {
        queue: state.store.queue_depth(state.clock.now()).await?,
        pool: state.store.pool_status(),
        open_jobs: state.store.open_jobs().await?,
    };
    let text = registry().encode(&snapshot);
    let mut response = (StatusCode::OK, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// Whether the request carries the metrics token (compared by SHA-256 in constant time).
fn is_metrics_token(state: &AppState, headers: &HeaderMap) -> bool {
    let (Some(expected), Some(presented)) = (&state.config.metrics_token, bearer(headers)) else {
        return false;
    };
    let expected = Sha256::digest(expected.as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    bool::from(expected.as_slice().ct_eq(presented.as_slice()))
}
