//! Endpoints: `/api/v1/app/{app_id}/endpoint`, with their custom headers, signing secret,
//! statistics, recovery of failed deliveries and test messages.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, RawPathParams, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_core::Code;
use hookline_core::id::{EndpointId, MessageId, TaskId};
use hookline_core::model::{Application, Endpoint, EndpointSecret, Message};
use hookline_core::page::Order;
use hookline_core::patch::EndpointPatch;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::message::MessageOut;
use super::{ListResponse, app_for, list_query};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Limit, MaybeJson, Query, Timestamp, ValidJson};
use crate::idempotency::{IdempotencyKey, SecretJson};
use crate::ingest::source::source_for;
use crate::openapi::Errors;
use crate::validate::{self, Validate, Violations};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .nest("/app/{app_id}", shared_routes())
        .routes(routes!(rotate_secret))
        .routes(routes!(recover))
        .routes(routes!(send_example))
        .routes(routes!(stats))
}

/// The endpoint routes the sending API and the Ingest API share, each nests them under
/// its owner (`/app/{app_id}` or `/source/{source_id}`, see [`Owner`]).
pub fn shared_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch, upsert, patch, delete))
        .routes(routes!(get_headers, put_headers, patch_headers))
        .routes(routes!(get_secret))
}

/// The body of create (POST) and replace (PUT). PUT uses `secret` only when it creates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIn {
    pub url: String,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, alias = "rateLimit")]
    pub throttle_rate: Option<u16>,
    #[serde(default, alias = "filterTypes")]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub secret: Option<String>,
    /// Custom headers (the SDKs may send them with the endpoint).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

impl Validate for EndpointIn {
    fn validate(&self, v: &mut Violations) {
        validate::endpoint_url(v, "url", &self.url);
        validate::uid(v, "uid", self.uid.as_deref(), EndpointId::PREFIX);
        if let Some(description) = &self.description {
            validate::free_text(v, "description", description);
        }
        validate::throttle_rate(v, "throttleRate", self.throttle_rate);
        if let Some(types) = &self.event_types {
            validate::slug_list(v, "eventTypes", types, 1..=usize::MAX, 256);
        }
        if let Some(channels) = &self.channels {
            validate::slug_list(v, "channels", channels, 1..=10, 128);
        }
        if let Some(secret) = &self.secret {
            validate::secret(v, "secret", secret);
        }
        if let Some(headers) = &self.headers {
            validate::headers(v, "headers", headers);
        }
    }
}

impl Validate for EndpointPatch {
    fn validate(&self, v: &mut Violations) {
        if let Some(url) = &self.url {
            validate::endpoint_url(v, "url", url);
        }
        if let Some(uid) = &self.uid {
            validate::uid(v, "uid", uid.as_deref(), EndpointId::PREFIX);
        }
        if let Some(description) = &self.description {
            validate::free_text(v, "description", description);
        }
        if let Some(rate) = self.throttle_rate {
            validate::throttle_rate(v, "throttleRate", rate);
        }
        if let Some(Some(types)) = &self.event_types {
            validate::slug_list(v, "eventTypes", types, 1..=usize::MAX, 256);
        }
        if let Some(Some(channels)) = &self.channels {
            validate::slug_list(v, "channels", channels, 1..=10, 128);
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOut {
    #[serde(flatten)]
    pub fields: EndpointFields,
    pub metadata: BTreeMap<String, String>,
}

/// What every answer that shows an endpoint says of it (`metadata` aside, which only
/// [`EndpointOut`] has, as in the open-source server).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointFields {
    pub id: EndpointId,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub disabled: bool,
    pub throttle_rate: Option<u16>,
    /// The old Svix name of `throttleRate`, for older clients.
    pub rate_limit: Option<u16>,
    pub event_types: Option<Vec<String>>,
    /// The open-source server's name of `eventTypes`, which the SDKs 1.x read.
    pub filter_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    /// Always 1, as the open-source server answers (the SDKs 1.x require it).
    pub version: u16,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for EndpointOut {
    fn from(mut endpoint: Endpoint) -> Self {
        let metadata = std::mem::take(&mut endpoint.metadata);
        EndpointOut {
            fields: endpoint.into(),
            metadata,
        }
    }
}

impl From<Endpoint> for EndpointFields {
    fn from(endpoint: Endpoint) -> Self {
        EndpointFields {
            id: endpoint.id,
            uid: endpoint.uid,
            url: endpoint.url,
            description: endpoint.description,
            disabled: endpoint.disabled,
            throttle_rate: endpoint.throttle_rate,
            rate_limit: endpoint.throttle_rate,
            filter_types: endpoint.event_types.clone(),
            event_types: endpoint.event_types,
            channels: endpoint.channels,
            version: 1,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

async fn check_event_types(state: &AppState, types: Option<&[String]>) -> Result<(), ApiError> {
    let mut missing = Vec::new();
    for name in types.unwrap_or_default() {
        match state.store.get_event_type(name).await {
            Ok(event_type) if !event_type.archived => {}
            Ok(_) | Err(hookline_core::Error::NotFound(_)) => missing.push(name.as_str()),
            Err(error) => return Err(error.into()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &["body", "eventTypes"],
            format!(
                "The following event types don't exist: {}",
                missing.join(", ")
            ),
        ))
    }
}

/// Who owns the endpoints a route serves: the application the path's `app_id` names (the
/// sending API), or the hidden application of the source the path's `source_id` names
/// (the Ingest API, whose forwarding endpoints these are). One set of handlers serves
/// both APIs.
///
/// Extracting it authenticates the caller; [`Owner::app`] looks the application up, which
/// handlers do after the body has been validated, so an invalid body is a 422 whether or
/// not the application exists.
#[derive(Debug)]
pub struct Owner {
    caller: Caller,
    key: OwnerKey,
}

#[derive(Debug)]
enum OwnerKey {
    App(String),
    Source(String),
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::Internal(rejection.body_text()))?;
        let param = |name: &str| {
            params
                .iter()
                .find_map(|(key, value)| (key == name).then(|| value.to_owned()))
        };
        let key = match (param("app_id"), param("source_id")) {
            (Some(app), _) => OwnerKey::App(app),
            (None, Some(source)) => OwnerKey::Source(source),
            (None, None) => {
                return Err(ApiError::Internal(
                    "an endpoint route names no owner".into(),
                ));
            }
        };
        Ok(Owner { caller, key })
    }
}

impl Owner {
    /// The owning application, if the caller may see it.
    pub async fn app(&self, state: &AppState) -> Result<Application, ApiError> {
        match &self.key {
            OwnerKey::App(key) => app_for(state, &self.caller, key).await,
            OwnerKey::Source(key) => {
                let source = source_for(state, &self.caller, key).await?;
                Ok(state.store.get_app(source.app_id.as_str()).await?)
            }
        }
    }
}

/// The endpoint `key` (an id or a uid) of `app`.
pub async fn endpoint_of(
    state: &AppState,
    app: &Application,
    key: &str,
) -> Result<Endpoint, ApiError> {
    Ok(state.store.get_endpoint(&app.id, key).await?)
}

fn new_endpoint(app: &Application, body: EndpointIn, now: DateTime<Utc>) -> Endpoint {
    Endpoint {
        id: EndpointId::new_at(now),
        app_id: app.id.clone(),
        uid: body.uid,
        url: body.url,
        description: body.description.unwrap_or_default(),
        disabled: body.disabled,
        throttle_rate: body.throttle_rate,
        event_types: body.event_types,
        channels: body.channels,
        metadata: body.metadata.unwrap_or_default(),
        headers: body.headers.unwrap_or_default(),
        secrets: vec![EndpointSecret {
            key: body
                .secret
                .unwrap_or_else(hookline_signature::generate_hmac_secret),
            expires_at: None,
        }],
        failing_since: None,
        created_at: now,
        updated_at: now,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
    /// `descending` (newest first) when absent.
    order: Option<Order>,
}

#[utoipa::path(get, path = "/endpoint", operation_id = "v1.endpoint.list", tag = "Endpoint",
    params(ListParams),
    responses((status = 200, description = "A page of endpoints, newest first unless `order` says otherwise", body = ListResponse<EndpointOut>), Errors))]
async fn list(
    State(state): State<AppState>,
    owner: Owner,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<EndpointOut>>, ApiError> {
    let app = owner.app(&state).await?;
    let order = params.order.unwrap_or(Order::Descending);
    let query = list_query(params.limit, params.iterator, order);
    let page = state.store.list_endpoints(&app.id, &query).await?;
    Ok(Json(ListResponse::from_page(page, EndpointOut::from)))
}

#[utoipa::path(post, path = "/endpoint", operation_id = "v1.endpoint.create", tag = "Endpoint",
    request_body = EndpointIn,
    responses((status = 201, description = "Created", body = EndpointOut), Errors))]
async fn create(
    State(state): State<AppState>,
    owner: Owner,
    ValidJson(body): ValidJson<EndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let app = owner.app(&state).await?;
    validate::https_only(state.config.https_only, "url", &body.url)?;
    check_event_types(&state, body.event_types.as_deref()).await?;
    let endpoint = new_endpoint(&app, body, state.clock.now());
    state.store.create_endpoint(&endpoint).await?;
    Ok((StatusCode::CREATED, Json(endpoint.into())))
}

#[utoipa::path(get, path = "/endpoint/{endpoint_id}", operation_id = "v1.endpoint.get", tag = "Endpoint",
    responses((status = 200, description = "The endpoint", body = EndpointOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
) -> Result<Json<EndpointOut>, ApiError> {
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    Ok(Json(endpoint.into()))
}

#[utoipa::path(put, path = "/endpoint/{endpoint_id}", operation_id = "v1.endpoint.update", tag = "Endpoint",
    request_body = EndpointIn,
    responses(
        (status = 200, description = "Replaced", body = EndpointOut),
        (status = 201, description = "Created", body = EndpointOut),
        Errors,
    ))]
async fn upsert(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<EndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let app = owner.app(&state).await?;
    validate::https_only(state.config.https_only, "url", &body.url)?;
    check_event_types(&state, body.event_types.as_deref()).await?;
    let mut endpoint = match state.store.get_endpoint(&app.id, &endpoint_id).await {
        Ok(endpoint) => endpoint,
        Err(hookline_core::Error::NotFound(_)) => {
            let endpoint = new_endpoint(&app, body, state.clock.now());
            state.store.create_endpoint(&endpoint).await?;
            return Ok((StatusCode::CREATED, Json(endpoint.into())));
        }
        Err(error) => return Err(error.into()),
    };
    endpoint.url = body.url;
    endpoint.uid = body.uid;
    endpoint.description = body.description.unwrap_or_default();
    endpoint.disabled = body.disabled;
    endpoint.throttle_rate = body.throttle_rate;
    endpoint.event_types = body.event_types;
    endpoint.channels = body.channels;
    endpoint.metadata = body.metadata.unwrap_or_default();
    if let Some(headers) = body.headers {
        endpoint.headers = headers;
    }
    endpoint.updated_at = state.clock.now();
    // PUT replaces every setting, `disabled` included.
    state.store.update_endpoint(&endpoint, true).await?;
    Ok((StatusCode::OK, Json(endpoint.into())))
}

#[utoipa::path(patch, path = "/endpoint/{endpoint_id}", operation_id = "v1.endpoint.patch", tag = "Endpoint",
    request_body = EndpointPatch,
    responses((status = 200, description = "Changed", body = EndpointOut), Errors))]
async fn patch(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<EndpointPatch>,
) -> Result<Json<EndpointOut>, ApiError> {
    let app = owner.app(&state).await?;
    if let Some(url) = &body.url {
        validate::https_only(state.config.https_only, "url", url)?;
    }
    let mut endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    if let Some(types) = &body.event_types {
        check_event_types(&state, types.as_deref()).await?;
    }
    let set_disabled = body.apply(&mut endpoint, state.clock.now());
    state.store.update_endpoint(&endpoint, set_disabled).await?;
    Ok(Json(endpoint.into()))
}

#[utoipa::path(delete, path = "/endpoint/{endpoint_id}", operation_id = "v1.endpoint.delete", tag = "Endpoint",
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    state.store.delete_endpoint(&app.id, &endpoint.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// Custom headers.

#[derive(Debug, Deserialize, ToSchema)]
pub struct EndpointHeadersIn {
    pub headers: BTreeMap<String, String>,
}

impl Validate for EndpointHeadersIn {
    fn validate(&self, v: &mut Violations) {
        validate::headers(v, "headers", &self.headers);
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHeadersPatchIn {
    /// A value sets the header; `null` removes it.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// Names to remove (the SDKs send this, as their map cannot hold `null`).
    #[serde(default)]
    pub delete_headers: Vec<String>,
}

impl Validate for EndpointHeadersPatchIn {
    fn validate(&self, v: &mut Violations) {
        for (name, value) in &self.headers {
            validate::header_name(v, "headers", name);
            if let Some(value) = value {
                validate::header_value(v, "headers", name, value);
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHeadersOut {
    /// Every header but the sensitive ones.
    pub headers: BTreeMap<String, String>,
    /// Names of headers whose values are not shown.
    pub sensitive: Vec<String>,
}

impl From<BTreeMap<String, String>> for EndpointHeadersOut {
    fn from(all: BTreeMap<String, String>) -> Self {
        let (sensitive, headers): (BTreeMap<_, _>, BTreeMap<_, _>) = all
            .into_iter()
            .partition(|(name, _)| hookline_core::model::is_credential_header(name));
        EndpointHeadersOut {
            headers,
            sensitive: sensitive.into_keys().collect(),
        }
    }
}

/// Header names are case-insensitive: setting `X-A` replaces `x-a`.
fn remove_header(headers: &mut BTreeMap<String, String>, name: &str) {
    headers.retain(|existing, _| !existing.eq_ignore_ascii_case(name));
}

#[utoipa::path(get, path = "/endpoint/{endpoint_id}/headers", operation_id = "v1.endpoint.get-headers",
    tag = "Endpoint",
    responses((status = 200, description = "The custom headers", body = EndpointHeadersOut), Errors))]
async fn get_headers(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
) -> Result<Json<EndpointHeadersOut>, ApiError> {
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    Ok(Json(endpoint.headers.into()))
}

#[utoipa::path(put, path = "/endpoint/{endpoint_id}/headers", operation_id = "v1.endpoint.update-headers",
    tag = "Endpoint", request_body = EndpointHeadersIn,
    responses((status = 204, description = "Replaced every custom header"), Errors))]
async fn put_headers(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<EndpointHeadersIn>,
) -> Result<StatusCode, ApiError> {
    let app = owner.app(&state).await?;
    let mut endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    endpoint.headers.clear();
    for (name, value) in body.headers {
        remove_header(&mut endpoint.headers, &name);
        endpoint.headers.insert(name, value);
    }
    endpoint.updated_at = state.clock.now();
    state.store.update_endpoint(&endpoint, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/endpoint/{endpoint_id}/headers", operation_id = "v1.endpoint.patch-headers",
    tag = "Endpoint", request_body = EndpointHeadersPatchIn,
    responses((status = 204, description = "Changed the headers named"), Errors))]
async fn patch_headers(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<EndpointHeadersPatchIn>,
) -> Result<StatusCode, ApiError> {
    let app = owner.app(&state).await?;
    let mut endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    for name in &body.delete_headers {
        remove_header(&mut endpoint.headers, name);
    }
    for (name, value) in body.headers {
        remove_header(&mut endpoint.headers, &name);
        if let Some(value) = value {
            endpoint.headers.insert(name, value);
        }
    }
    endpoint.updated_at = state.clock.now();
    state.store.update_endpoint(&endpoint, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

// The signing secret.

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointSecretOut {
    pub key: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSecretRotateIn {
    /// The new secret; generated when absent or `null`.
    #[serde(default)]
    pub key: Option<String>,
    /// How long the old secret keeps signing; 86400 when absent, at most 604800.
    #[serde(default)]
    pub grace_period_seconds: Option<u32>,
}

/// The longest grace period of a rotated-out secret: a week.
const MAX_GRACE_PERIOD_SECS: u32 = 604_800;
/// The grace period when none is given: a day.
const DEFAULT_GRACE_PERIOD_SECS: u32 = 86_400;

impl Validate for EndpointSecretRotateIn {
    fn validate(&self, v: &mut Violations) {
        if let Some(key) = &self.key {
            validate::secret(v, "key", key);
        }
        if self
            .grace_period_seconds
            .is_some_and(|secs| secs > MAX_GRACE_PERIOD_SECS)
        {
            v.add(
                &["gracePeriodSeconds"],
                format!("must be at most {MAX_GRACE_PERIOD_SECS}"),
            );
        }
    }
}

#[utoipa::path(get, path = "/endpoint/{endpoint_id}/secret", operation_id = "v1.endpoint.get-secret",
    tag = "Endpoint",
    responses((status = 200, description = "The current signing secret", body = EndpointSecretOut), Errors))]
async fn get_secret(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    Ok(Json(EndpointSecretOut {
        key: endpoint.current_secret().to_owned(),
    }))
}

/// Makes `key` the current secret; the old one keeps signing for the grace period. The
/// spec says 204, but the SDKs parse the new key from the body, so it is returned (200).
#[utoipa::path(post, path = "/app/{app_id}/endpoint/{endpoint_id}/secret/rotate", operation_id = "v1.endpoint.rotate-secret",
    tag = "Endpoint",
    request_body(content = Option<EndpointSecretRotateIn>, description = "Optional: no body takes the defaults"),
    responses((status = 200, description = "Rotated: the new secret", body = EndpointSecretOut), Errors))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    MaybeJson(body): MaybeJson<EndpointSecretRotateIn>,
) -> Result<SecretJson<EndpointSecretOut>, ApiError> {
    let app = owner.app(&state).await?;
    let mut endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let grace = body
        .grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_PERIOD_SECS);
    let key = body
        .key
        .unwrap_or_else(hookline_signature::generate_hmac_secret);
    let grace = std::time::Duration::from_secs(u64::from(grace));
    endpoint.rotate_secret(key.clone(), grace, state.clock.now())?;
    state.store.update_endpoint(&endpoint, false).await?;
    Ok(SecretJson(EndpointSecretOut { key }))
}

// Recovery, examples and statistics.

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecoverIn {
    pub since: Timestamp,
    /// Now when absent.
    #[serde(default)]
    pub until: Option<Timestamp>,
}

impl Validate for RecoverIn {
    fn validate(&self, v: &mut Violations) {
        if self.until.is_some_and(|until| until < self.since) {
            v.add(&["until"], "must not be before `since`");
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverOut {
    pub id: TaskId,
    /// Always `finished`: the deliveries are queued again before the answer.
    pub status: &'static str,
    /// Always `endpoint.recover`.
    pub task: &'static str,
    pub updated_at: DateTime<Utc>,
}

/// Queues one more attempt of every failed delivery to this endpoint in the window, in
/// the background.
#[utoipa::path(post, path = "/app/{app_id}/endpoint/{endpoint_id}/recover", operation_id = "v1.endpoint.recover", tag = "Endpoint",
    request_body = RecoverIn,
    responses((status = 202, description = "The failed deliveries are queued again", body = RecoverOut), Errors))]
async fn recover(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    ValidJson(body): ValidJson<RecoverIn>,
) -> Result<(StatusCode, Json<RecoverOut>), ApiError> {
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let now = state.clock.now();
    let task = TaskId::new_at(now);
    let until = body.until.map_or(now, |until| until.0);
    // The re-queueing is one statement: it is committed before the answer, so a node that
    // dies right after answering loses nothing, and any node may make the deliveries.
    let queued = state
        .store
        .recover(&app.id, &endpoint.id, body.since.0, until, now)
        .await?;
    tracing::info!(task = %task, endpoint = %endpoint.id, queued, "recover queued failed deliveries");
    state.queued();
    Ok((
        StatusCode::ACCEPTED,
        Json(RecoverOut {
            id: task,
            status: "finished",
            task: "endpoint.recover",
            updated_at: now,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventExampleIn {
    pub event_type: String,
}

impl Validate for EventExampleIn {
    fn validate(&self, v: &mut Violations) {
        validate::slug(v, "eventType", &self.event_type, 256);
    }
}

/// The example payload of an event type's newest schema version: its `examples[0]` or
/// `example`, if that is an object.
fn schema_example(schemas: Option<&serde_json::Value>) -> Option<String> {
    let versions = schemas?.as_object()?;
    let (_, schema) = versions
        .iter()
        .max_by_key(|(version, _)| version.parse::<u64>().unwrap_or(0))?;
    let example = schema
        .get("examples")
        .and_then(|examples| examples.get(0))
        .or_else(|| schema.get("example"))?;
    example.is_object().then(|| example.to_string())
}

/// Sends an example message of an event type to this endpoint only.
#[utoipa::path(post, path = "/app/{app_id}/endpoint/{endpoint_id}/send-example", operation_id = "v1.endpoint.send-example",
    tag = "Endpoint", request_body = EventExampleIn,
    responses((status = 200, description = "The example message, accepted for this endpoint only", body = MessageOut), Errors))]
async fn send_example(
    State(state): State<AppState>,
    caller: Caller,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    idempotency: Option<Extension<IdempotencyKey>>,
    ValidJson(body): ValidJson<EventExampleIn>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let payload = if body.event_type == "svix.ping" {
        r#"{"success":true}"#.to_owned()
    } else {
        let event_type = state.store.get_event_type(&body.event_type).await?;
        schema_example(event_type.schemas.as_ref()).ok_or_else(|| {
            ApiError::refused(
                Code::InvalidSchema,
                "Unable to generate example message from event-type schema",
            )
        })?
    };
    let now = state.clock.now();
    let message = Message {
        id: MessageId::new_at(now),
        app_id: app.id,
        event_id: None,
        event_type: body.event_type,
        payload: Some(payload),
        channels: None,
        headers: Default::default(),
        created_at: now,
    };
    super::message::accept(
        &state,
        message,
        Some(endpoint.id),
        StatusCode::OK,
        true,
        idempotency.map(|Extension(key)| key),
    )
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatsParams {
    /// 28 days before `until` when absent.
    since: Option<Timestamp>,
    /// Now when absent.
    until: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStatsOut {
    pub success: i64,
    pub pending: i64,
    pub sending: i64,
    pub fail: i64,
    /// Hookline never cancels a delivery; the SDKs require the key.
    pub canceled: i64,
}

/// The default window of statistics: the last 28 days.
const STATS_WINDOW_DAYS: i64 = 28;

#[utoipa::path(get, path = "/app/{app_id}/endpoint/{endpoint_id}/stats", operation_id = "v1.endpoint.get-stats", tag = "Endpoint",
    params(StatsParams),
    responses((status = 200, description = "Deliveries to the endpoint by status, in the window", body = EndpointStatsOut), Errors))]
async fn stats(
    State(state): State<AppState>,
    owner: Owner,
    Path((_, endpoint_id)): Path<(String, String)>,
    Query(params): Query<StatsParams>,
) -> Result<Json<EndpointStatsOut>, ApiError> {
    let app = owner.app(&state).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let until = params.until.map_or_else(|| state.clock.now(), |t| t.0);
    let since = params
        .since
        .map_or(until - chrono::Duration::days(STATS_WINDOW_DAYS), |t| t.0);
    if since > until {
        return Err(ApiError::refused(
            Code::InvalidRange,
            "`since` must not be after `until`",
        ));
    }
    let counts = state
        .store
        .endpoint_stats(&app.id, &endpoint.id, since, until)
        .await?;
    Ok(Json(EndpointStatsOut {
        success: counts.success,
        pending: counts.pending,
        sending: counts.sending,
        fail: counts.fail,
        canceled: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_secrets_are_usable() {
        let secret = hookline_signature::generate_hmac_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(secret.len(), "whsec_".len() + 32);
        assert!(validate::check_secret(&secret).is_ok());
    }

    #[test]
    fn sensitive_headers_are_hidden() {
        let mut all = BTreeMap::new();
        all.insert("Authorization".to_owned(), "Bearer x".to_owned());
        all.insert("X-Team".to_owned(), "a".to_owned());
        let out = EndpointHeadersOut::from(all);
        assert_eq!(out.sensitive, vec!["Authorization"]);
        assert_eq!(out.headers.len(), 1);
        assert_eq!(out.headers["X-Team"], "a");
    }

    #[test]
    fn examples_come_from_the_newest_schema() {
        let schemas = json!({
            "1": {"type": "object", "examples": [{"v": 1}]},
            "2": {"type": "object", "examples": [{"v": 2}]},
        });
        assert_eq!(schema_example(Some(&schemas)).unwrap(), r#"{"v":2}"#);
        let single = json!({"1": {"example": {"v": 1}}});
        assert_eq!(schema_example(Some(&single)).unwrap(), r#"{"v":1}"#);
        assert_eq!(
            schema_example(Some(&json!({"1": {"type": "object"}}))),
            None
        );
        assert_eq!(schema_example(Some(&json!({"1": {"examples": [3]}}))), None);
        assert_eq!(schema_example(None), None);
    }
}
