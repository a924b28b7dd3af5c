//! A source's forwarding endpoints: `/ingest/api/v1/source/{source_id}/endpoint/…`.
//!
//! They are the endpoints of the source's hidden application, so these routes are served
//! by the sending API's endpoint handlers: their [`Owner`] extractor resolves
//! `{source_id}` to the hidden application. Only the answer to a secret rotation (204
//! here) and transformations (not supported) are the Ingest API's own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookline_core::Code;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::api::endpoint::{self, EndpointSecretRotateIn, Owner, endpoint_of};
use crate::error::ApiError;
use crate::extract::{MaybeJson, ValidJson};
use crate::openapi::Errors;
use crate::validate::{Validate, Violations};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .nest("/source/{source_id}", endpoint::shared_routes())
        .routes(routes!(rotate_secret))
        .routes(routes!(get_transformation, patch_transformation))
}

/// Rotates a forwarding endpoint's secret as the sending API does, but answers as the
/// Ingest API does: 204 without a body.
#[utoipa::path(post, path = "/source/{source_id}/endpoint/{endpoint_id}/secret/rotate",
    operation_id = "v1.ingest.endpoint.rotate-secret", tag = "Ingest Endpoint",
    request_body(content = Option<EndpointSecretRotateIn>, description = "Optional: an empty body generates the new secret"),
    responses((status = 204, description = "Rotated; the old secret keeps signing for the grace period"), Errors))]
async fn rotate_secret(
    state: State<AppState>,
    owner: Owner,
    path: Path<(String, String)>,
    body: MaybeJson<EndpointSecretRotateIn>,
) -> Result<StatusCode, ApiError> {
    let _new_key = endpoint::rotate_secret(state, owner, path, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

// Transformations: payload transformations are not part of Hookline yet. Reading one says
// so; enabling one is refused rather than silently ignored.

/// Always no code, not enabled, no variables.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestEndpointTransformationOut {
    #[schema(required = true)]
    pub code: Option<String>,
    pub enabled: bool,
    #[schema(required = true, value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub variables: Option<serde_json::Value>,
}

/// Only what changes nothing is accepted: `enabled: true` or any `code` is refused.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IngestEndpointTransformationPatch {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// An object of strings, as the contract says: anything else is a 422.
    #[serde(default)]
    pub variables: Option<std::collections::BTreeMap<String, String>>,
}

impl Validate for IngestEndpointTransformationPatch {
    fn validate(&self, _: &mut Violations) {}
}

#[utoipa::path(get, path = "/source/{source_id}/endpoint/{endpoint_id}/transformation",
    operation_id = "v1.ingest.endpoint.get-transformation", tag = "Ingest Endpoint",
    responses((status = 200, description = "The endpoint's transformation: none, as Hookline has none", body = IngestEndpointTransformationOut), Errors))]
async fn get_transformation(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
) -> Result<axum::Json<IngestEndpointTransformationOut>, ApiError> {
    let app = owner.app(&state).await?;
    endpoint_of(&state, &app, &endpoint_id).await?;
    Ok(axum::Json(IngestEndpointTransformationOut {
        code: None,
        enabled: false,
        variables: None,
    }))
}

#[utoipa::path(patch, path = "/source/{source_id}/endpoint/{endpoint_id}/transformation",
    operation_id = "v1.ingest.endpoint.set-transformation", tag = "Ingest Endpoint",
    request_body = IngestEndpointTransformationPatch,
    responses((status = 204, description = "Nothing to change: no transformation is enabled"), Errors))]
async fn patch_transformation(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<IngestEndpointTransformationPatch>,
) -> Result<StatusCode, ApiError> {
    let app = owner.app(&state).await?;
    endpoint_of(&state, &app, &endpoint_id).await?;
    if body.enabled == Some(true) || body.code.is_some() {
        return Err(ApiError::refused(
            Code::TransformationsUnsupported,
            "payload transformations are not supported by Hookline: requests are forwarded \
             byte for byte",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
