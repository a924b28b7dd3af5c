//! Sources: `/ingest/api/v1/source`, their ingest token, their request log, and the
//! consumer dashboard token. Managing sources is for admin tokens; a dashboard token (an
//! app token of the source's hidden application) may read its own source and log.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, IngestRequestId, SourceId};
use hookline_core::ingest::{IngestRequest, Source};
use hookline_core::page::Order;
use hookline_core::patch::SourcePatch;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::api::auth::{AppPortalAccessOut, issue_app_token, token_expiry, token_lifetime};
use crate::api::{ListResponse, list_query};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::{Limit, MaybeJson, Query, ValidJson};
use crate::idempotency::SecretJson;
use crate::openapi::Errors;
use crate::validate::{self, Validate, Violations};
use hookline_receive::SourceType;

/// Characters of an ingest token: 32 base62 characters, about 190 bits.
const TOKEN_LEN: usize = 32;

/// Bytes of bodies one page of a request log holds at most (unless its one request is
/// larger). Each body is up to the body limit and goes out twice (as text and base64),
/// so a page of 250 could take hundreds of megabytes; a page ends early instead, not
/// `done`, and its iterator continues after it.
pub const LOG_PAGE_BODY_BYTES: usize = 4 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch, upsert, patch, delete))
        .routes(routes!(rotate_token))
        .routes(routes!(dashboard))
        .routes(routes!(log))
}

/// A new ingest token.
pub fn new_token() -> String {
    hookline_core::id::random_base62(TOKEN_LEN)
}

/// The body of create (POST) and replace (PUT).
#[derive(Debug, Deserialize, ToSchema)]
pub struct IngestSourceIn {
    #[schema(min_length = 2, max_length = 256)]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 60, pattern = "^(?!src_)[a-zA-Z0-9_-]+$")]
    pub uid: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The provider, which says how requests are verified.
    #[serde(rename = "type")]
    #[schema(schema_with = source_types)]
    pub source_type: String,
    /// The type's secrets (or passwords, or tokens) and Hookline's own options
    /// (`toleranceSeconds`, `maxBodyBytes`, `dedupeWindowSeconds`, `forwardHeaders`,
    /// `forwardToApp`). Required by the types that verify requests.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// The schema of a source's `type`: one of the supported types' names.
fn source_types() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(SourceType::supported()))
}

/// Name 2..=256 characters; uid `^(?!src_)[a-zA-Z0-9_-]+$`, at most 60.
fn check_name_and_uid(v: &mut Violations, name: Option<&str>, uid: Option<&str>) {
    if let Some(name) = name {
        validate::name(v, "name", name);
        if !(2..=256).contains(&name.chars().count()) {
            v.add(&["name"], "must be 2 to 256 characters long");
        }
    }
    if let Some(uid) = uid {
        let slug = uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if uid.is_empty() || uid.len() > 60 || !slug {
            v.add(
                &["uid"],
                "must be 1 to 60 letters, digits, `-` and `_` characters",
            );
        } else if SourceId::is_id(uid) {
            v.add(
                &["uid"],
                format!("must not start with `{}`", SourceId::PREFIX),
            );
        }
    }
}

impl Validate for IngestSourceIn {
    fn validate(&self, v: &mut Violations) {
        check_name_and_uid(v, Some(&self.name), self.uid.as_deref());
    }
}

impl IngestSourceIn {
    /// The source type and configuration, checked.
    fn source_type(&self) -> Result<SourceType, ApiError> {
        SourceType::parse(&self.source_type, self.config.as_ref())
            .map_err(|error| ApiError::Invalid(vec![FieldError::value(error.loc, error.message)]))
    }
}

impl Validate for SourcePatch {
    fn validate(&self, v: &mut Violations) {
        check_name_and_uid(
            v,
            self.name.as_deref(),
            self.uid.clone().flatten().as_deref(),
        );
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSourceOut {
    pub id: SourceId,
    #[schema(required = true)]
    pub uid: Option<String>,
    pub name: String,
    /// Where the provider posts: `/in/` and the source's token.
    pub ingest_url: String,
    #[serde(rename = "type")]
    pub source_type: String,
    /// The configuration without its secrets.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub metadata: BTreeMap<String, String>,
    /// Hookline's own: the application whose messages forward the source's requests, and
    /// whose endpoints are its forwarding endpoints. The sending API lists, resends and
    /// recovers its messages like any other (it is not listed among the applications).
    pub forwarding_app_id: AppId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The URL providers post to.
pub fn ingest_url(state: &AppState, token: &str) -> String {
    format!(
        "{}/in/{token}",
        state.config.public_url.trim_end_matches('/')
    )
}

fn source_out(state: &AppState, source: Source) -> IngestSourceOut {
    // A stored configuration was valid when it was stored; show nothing rather than fail.
    let config = SourceType::parse(&source.source_type, Some(&source.config))
        .map(|parsed| parsed.config_out())
        .unwrap_or_else(|_| serde_json::json!({}));
    IngestSourceOut {
        ingest_url: ingest_url(state, &source.token),
        id: source.id,
        uid: source.uid,
        name: source.name,
        source_type: source.source_type,
        config,
        metadata: source.metadata,
        forwarding_app_id: source.app_id,
        created_at: source.created_at,
        updated_at: source.updated_at,
    }
}

/// The source a path names, if the caller may see it: admins see every source, a
/// dashboard token only the source whose hidden application it is scoped to.
pub async fn source_for(state: &AppState, caller: &Caller, key: &str) -> Result<Source, ApiError> {
    match state.store.get_source(key).await {
        Ok(source) => {
            caller.require_app(&source.app_id)?;
            Ok(source)
        }
        Err(hookline_core::Error::NotFound(_)) if matches!(caller.role, Role::App(_)) => Err(
            ApiError::Forbidden("this token is scoped to another source"),
        ),
        Err(error) => Err(error.into()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
    order: Option<Order>,
}

#[utoipa::path(get, path = "/source", operation_id = "v1.ingest.source.list", tag = "Ingest Source",
    params(ListParams),
    responses((status = 200, description = "A page of sources, oldest first unless `order` says otherwise", body = ListResponse<IngestSourceOut>), Errors))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<IngestSourceOut>>, ApiError> {
    caller.require_admin()?;
    let order = params.order.unwrap_or(Order::Ascending);
    let query = list_query(params.limit, params.iterator, order);
    let page = state.store.list_sources(&query).await?;
    Ok(Json(ListResponse::from_page(page, |source| {
        source_out(&state, source)
    })))
}

/// Checks a `forwardToApp` option: the application must exist when the source is saved.
async fn check_forward_app(state: &AppState, parsed: &SourceType) -> Result<(), ApiError> {
    let Some(app) = &parsed.options().forward_to_app else {
        return Ok(());
    };
    match state.store.get_app(app).await {
        Ok(_) => Ok(()),
        Err(hookline_core::Error::NotFound(_)) => Err(ApiError::invalid(
            &["body", "config", "forwardToApp"],
            format!("no application has the id or uid `{app}`"),
        )),
        Err(error) => Err(error.into()),
    }
}

fn new_source(body: IngestSourceIn, now: DateTime<Utc>) -> Source {
    Source {
        id: SourceId::new_at(now),
        uid: body.uid,
        name: body.name,
        source_type: body.source_type,
        config: body.config.unwrap_or_else(|| serde_json::json!({})),
        metadata: body.metadata.unwrap_or_default(),
        app_id: AppId::new_at(now),
        token: new_token(),
        previous_token: None,
        previous_token_expires_at: None,
        created_at: now,
        updated_at: now,
    }
}

#[utoipa::path(post, path = "/source", operation_id = "v1.ingest.source.create", tag = "Ingest Source",
    request_body = IngestSourceIn,
    responses((status = 201, description = "Created", body = IngestSourceOut), Errors))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<IngestSourceIn>,
) -> Result<(StatusCode, Json<IngestSourceOut>), ApiError> {
    caller.require_admin()?;
    check_forward_app(&state, &body.source_type()?).await?;
    let source = new_source(body, state.clock.now());
    state.store.create_source(&source).await?;
    Ok((StatusCode::CREATED, Json(source_out(&state, source))))
}

#[utoipa::path(get, path = "/source/{source_id}", operation_id = "v1.ingest.source.get", tag = "Ingest Source",
    responses((status = 200, description = "The source", body = IngestSourceOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
) -> Result<Json<IngestSourceOut>, ApiError> {
    let source = source_for(&state, &caller, &source_id).await?;
    Ok(Json(source_out(&state, source)))
}

#[utoipa::path(put, path = "/source/{source_id}", operation_id = "v1.ingest.source.update", tag = "Ingest Source",
    request_body = IngestSourceIn,
    responses(
        (status = 200, description = "Replaced", body = IngestSourceOut),
        (status = 201, description = "Created (a `source_id` that is not an id becomes its uid when the body gives none)", body = IngestSourceOut),
        Errors,
    ))]
async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
    ValidJson(body): ValidJson<IngestSourceIn>,
) -> Result<(StatusCode, Json<IngestSourceOut>), ApiError> {
    caller.require_admin()?;
    check_forward_app(&state, &body.source_type()?).await?;
    let mut source = match state.store.get_source(&source_id).await {
        Ok(source) => source,
        Err(hookline_core::Error::NotFound(_)) => {
            let mut body = body;
            if body.uid.is_none() && !SourceId::is_id(&source_id) {
                body.uid = Some(source_id);
            }
            let source = new_source(body, state.clock.now());
            state.store.create_source(&source).await?;
            return Ok((StatusCode::CREATED, Json(source_out(&state, source))));
        }
        Err(error) => return Err(error.into()),
    };
    source.name = body.name;
    source.uid = body.uid;
    source.metadata = body.metadata.unwrap_or_default();
    source.source_type = body.source_type;
    source.config = body.config.unwrap_or_else(|| serde_json::json!({}));
    source.updated_at = state.clock.now();
    state.store.update_source(&source).await?;
    state.sources.forget();
    Ok((StatusCode::OK, Json(source_out(&state, source))))
}

#[utoipa::path(patch, path = "/source/{source_id}", operation_id = "v1.ingest.source.patch", tag = "Ingest Source",
    request_body = SourcePatch,
    responses((status = 200, description = "Changed", body = IngestSourceOut), Errors))]
async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
    ValidJson(body): ValidJson<SourcePatch>,
) -> Result<Json<IngestSourceOut>, ApiError> {
    caller.require_admin()?;
    let mut source = state.store.get_source(&source_id).await?;
    body.apply(&mut source, state.clock.now());
    state.store.update_source(&source).await?;
    state.sources.forget();
    Ok(Json(source_out(&state, source)))
}

#[utoipa::path(delete, path = "/source/{source_id}", operation_id = "v1.ingest.source.delete", tag = "Ingest Source",
    responses((status = 204, description = "Deleted, with its request log and its forwarding application (endpoints, messages)"), Errors))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let source = state.store.get_source(&source_id).await?;
    state.store.delete_source(&source.id).await?;
    state.sources.forget();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateTokenOut {
    pub ingest_url: String,
}

/// Gives the source a new ingest token. The old one keeps working for
/// [`Source::TOKEN_GRACE`].
#[utoipa::path(post, path = "/source/{source_id}/token/rotate", operation_id = "v1.ingest.source.rotate-token", tag = "Ingest Source",
    responses((status = 200, description = "The source's new ingest URL; the old one keeps working for a grace period", body = RotateTokenOut), Errors))]
async fn rotate_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
) -> Result<Json<RotateTokenOut>, ApiError> {
    caller.require_admin()?;
    let mut source = state.store.get_source(&source_id).await?;
    source.rotate_token(new_token(), state.clock.now());
    state.store.update_source(&source).await?;
    state.sources.forget();
    Ok(Json(RotateTokenOut {
        ingest_url: ingest_url(&state, &source.token),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardIn {
    /// Seconds the token is valid for: 1 hour to 7 days, 7 days when absent or `null`
    /// (the Ingest contract's range and default).
    #[serde(default)]
    #[schema(minimum = 3600, maximum = 604_800)]
    pub expiry: Option<u64>,
    /// Accepted for the Ingest contract, but not enforced: the token may always manage
    /// the source's endpoints.
    #[serde(default)]
    pub read_only: Option<bool>,
}

impl Validate for DashboardIn {
    fn validate(&self, v: &mut Violations) {
        token_expiry(v, self.expiry);
    }
}

/// A token scoped to the source (an app token of its hidden application): it reads the
/// source and its log, and manages its endpoints, until its expiry.
#[utoipa::path(post, path = "/source/{source_id}/dashboard", operation_id = "v1.ingest.source.dashboard", tag = "Ingest Source",
    request_body(content = Option<DashboardIn>, description = "Optional: an empty body takes the defaults"),
    responses((status = 200, description = "A token scoped to the source, and a console link that carries it", body = AppPortalAccessOut), Errors))]
async fn dashboard(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
    MaybeJson(body): MaybeJson<DashboardIn>,
) -> Result<SecretJson<AppPortalAccessOut>, ApiError> {
    caller.require_admin()?;
    let source = state.store.get_source(&source_id).await?;
    let lifetime = token_lifetime(body.expiry);
    Ok(SecretJson(
        issue_app_token(
            &state,
            source.app_id,
            lifetime,
            &format!("source={}", source.id),
        )
        .await?,
    ))
}

// The request log.

/// One logged request: the fields of the Svix Ingest log, then Hookline's own.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestLogOut {
    pub id: IngestRequestId,
    pub source_id: SourceId,
    pub status_code: i16,
    /// Why the request was refused; empty when it was accepted.
    pub error_text: String,
    /// Headers as received (a repeated header's values joined by `, `).
    pub headers: BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced); `payloadBase64` has the exact bytes.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(rename = "payloadBase64")]
    pub payload_base64: String,
    /// `accepted` (forwarded), `duplicate` (already accepted inside the dedupe window:
    /// not forwarded) or `rejected` (refused: never forwarded).
    pub verdict: &'static str,
    #[serde(rename = "reasonCode")]
    pub reason_code: String,
    pub method: String,
    pub path: String,
    pub query: String,
    #[serde(rename = "eventType")]
    #[schema(required = true)]
    pub event_type: Option<String>,
    /// The forwarding message of an accepted request.
    #[serde(rename = "msgId")]
    #[schema(required = true)]
    pub msg_id: Option<String>,
    /// How many bytes the body had as received.
    #[serde(rename = "bodySize")]
    pub body_size: i64,
    /// Whether the log keeps only the start of the body (a refused request's).
    #[serde(rename = "bodyTruncated")]
    pub body_truncated: bool,
    /// Refused requests of the source answered but not logged (over the cap per window)
    /// just before this one.
    #[serde(rename = "droppedBefore")]
    pub dropped_before: i64,
}

/// Headers as a map; repeated names are joined with `, ` as HTTP allows.
pub fn header_map(headers: &[(String, String)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.clone())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    map
}

impl From<IngestRequest> for IngestLogOut {
    fn from(request: IngestRequest) -> Self {
        IngestLogOut {
            body_truncated: request.body_size > request.body.len() as i64,
            body_size: request.body_size,
            dropped_before: request.dropped_before,
            id: request.id,
            source_id: request.source_id,
            status_code: request.status_code,
            error_text: request.reason,
            headers: header_map(&request.headers),
            payload: String::from_utf8_lossy(&request.body).into_owned(),
            created_at: request.created_at,
            updated_at: request.created_at,
            payload_base64: base64::engine::general_purpose::STANDARD.encode(&request.body),
            verdict: request.verdict.as_str(),
            reason_code: request.reason_code,
            method: request.method,
            path: request.path,
            query: request.query,
            event_type: request.event_type,
            msg_id: request.msg_id.map(|id| id.into_string()),
        }
    }
}

#[utoipa::path(get, path = "/source/{source_id}/log", operation_id = "v1.ingest.request.list", tag = "Ingest Request",
    params(ListParams),
    responses((status = 200, description = "A page of the source's received requests, newest first unless `order` says otherwise. A page ends early (not `done`) once its bodies reach 4 MiB", body = ListResponse<IngestLogOut>), Errors))]
async fn log(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<IngestLogOut>>, ApiError> {
    let source = source_for(&state, &caller, &source_id).await?;
    let order = params.order.unwrap_or(Order::Descending);
    let query = list_query(params.limit, params.iterator, order);
    let page = state
        .store
        .list_ingest_requests(&source.id, &query, LOG_PAGE_BODY_BYTES)
        .await?;
    Ok(Json(ListResponse::from_page(page, IngestLogOut::from)))
}
