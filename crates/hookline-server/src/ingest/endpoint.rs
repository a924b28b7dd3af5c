//! A source's forwarding endpoints: `/ingest/api/v1/source/{source_id}/endpoint/…`.
//!
//! They are the endpoints of the source's hidden application, so these routes are the
//! application endpoint routes of the sending API (`/api/v1/app/{app_id}/endpoint/…`)
//! under another path: each request is resolved to its source, rewritten onto the hidden
//! application and answered by the same handlers. One implementation serves both APIs.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::{Deserialize, Serialize};
use tower::ServiceExt as _;

use super::source::source_for;
use crate::AppState;
use crate::api;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ValidJson;
use crate::validate::{Validate, Violations};

pub fn router(state: &AppState) -> Router<AppState> {
    let endpoints = api::endpoint::router().with_state(state.clone());
    let forward = move |state: State<AppState>, caller: Caller, request: Request| {
        forward(endpoints.clone(), state, caller, request)
    };
    const ONE: &str = "/source/{source_id}/endpoint/{endpoint_id}";
    let mut router = Router::new().route(
        &format!("{ONE}/transformation"),
        get(get_transformation).patch(patch_transformation),
    );
    for path in ["/source/{source_id}/endpoint", ONE] {
        router = router.route(path, any(forward.clone()));
    }
    for sub in ["headers", "secret", "secret/rotate"] {
        router = router.route(&format!("{ONE}/{sub}"), any(forward.clone()));
    }
    router
}

/// Answers an endpoint request of a source with the application endpoint handlers.
async fn forward(
    endpoints: Router,
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    // `/ingest/api/v1/source/{source_id}/endpoint…` (the nest prefix is still there).
    let path = parts.uri.path().to_owned();
    let after_source = path
        .split_once("/source/")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let (source_key, rest) = after_source.split_once('/').unwrap_or((after_source, ""));
    let source_key = percent_decode(source_key);
    let source = source_for(&state, &caller, &source_key).await?;
    let query = parts
        .uri
        .query()
        .map(|query| format!("?{query}"))
        .unwrap_or_default();
    let rotating = rest.ends_with("/secret/rotate");
    let uri = format!("/app/{}/{rest}{query}", source.app_id)
        .parse::<Uri>()
        .map_err(|error| ApiError::Internal(format!("rewriting {path}: {error}")))?;
    // A fresh request: the outer route's path parameters must not reach the inner one.
    let mut inner = Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = uri;
    *inner.headers_mut() = std::mem::take(&mut parts.headers);
    inner.extensions_mut().insert(caller);
    let Ok(response) = endpoints.oneshot(inner).await;
    // The Ingest API answers a secret rotation with 204 and no body.
    if rotating && response.status() == StatusCode::OK {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(response)
}

/// Decodes `%XX` escapes of a path segment (uids are plain slugs, but clients may escape).
fn percent_decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| segment.to_owned())
}

// Transformations: payload transformations are not part of Hookline yet. Reading one says
// so; enabling one is refused rather than silently ignored.

#[derive(Debug, Serialize)]
pub struct IngestEndpointTransformationOut {
    pub code: Option<String>,
    pub enabled: bool,
    pub variables: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct IngestEndpointTransformationPatch {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub variables: Option<serde_json::Value>,
}

impl Validate for IngestEndpointTransformationPatch {
    fn validate(&self, _: &mut Violations) {}
}

async fn transformation_endpoint(
    state: &AppState,
    caller: &Caller,
    source_key: &str,
    endpoint_key: &str,
) -> Result<(), ApiError> {
    let source = source_for(state, caller, source_key).await?;
    state
        .store
        .get_endpoint(&source.app_id, endpoint_key)
        .await?;
    Ok(())
}

async fn get_transformation(
    State(state): State<AppState>,
    caller: Caller,
    Path((source_id, endpoint_id)): Path<(String, String)>,
) -> Result<axum::Json<IngestEndpointTransformationOut>, ApiError> {
    transformation_endpoint(&state, &caller, &source_id, &endpoint_id).await?;
    Ok(axum::Json(IngestEndpointTransformationOut {
        code: None,
        enabled: false,
        variables: None,
    }))
}

async fn patch_transformation(
    State(state): State<AppState>,
    caller: Caller,
    Path((source_id, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<IngestEndpointTransformationPatch>,
) -> Result<Response<Body>, ApiError> {
    transformation_endpoint(&state, &caller, &source_id, &endpoint_id).await?;
    if body.enabled == Some(true) || body.code.is_some() {
        return Err(ApiError::bad_request(
            "transformations_unsupported",
            "payload transformations are not supported by Hookline: requests are forwarded \
             byte for byte",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
