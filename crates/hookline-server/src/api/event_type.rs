//! Event types: `/api/v1/event-type`, keyed by name. Deleting archives unless `expunge`;
//! creating an archived name brings it back with the new fields. Reading is open to app
//! tokens, changing is for admin tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use hookline_core::model::EventType;
use hookline_core::page::Order;
use hookline_core::patch::EventTypePatch;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ListResponse, list_query};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Limit, Query, ValidJson};
use crate::openapi::Errors;
use crate::validate::{self, Validate, Violations};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch, upsert, patch, delete))
}

/// `schemas`: a map from version to a JSON Schema object.
fn check_schemas(v: &mut Violations, schemas: &serde_json::Value) {
    match schemas.as_object() {
        Some(versions) => {
            for (version, schema) in versions {
                if !schema.is_object() {
                    v.add(&["schemas", version], "a schema must be a JSON object");
                }
            }
        }
        None => v.add(
            &["schemas"],
            "must be an object of version to JSON Schema, e.g. {\"1\": {...}}",
        ),
    }
}

fn check_feature_flag(v: &mut Violations, flag: Option<&str>) {
    if let Some(flag) = flag {
        validate::slug(v, "featureFlag", flag, 256);
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeIn {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub deprecated: bool,
    /// JSON Schemas of the payload, by version: `{"1": {...}}`.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub schemas: Option<serde_json::Value>,
    #[serde(default)]
    pub feature_flag: Option<String>,
}

impl Validate for EventTypeIn {
    fn validate(&self, v: &mut Violations) {
        validate::slug(v, "name", &self.name, 256);
        validate::free_text(v, "description", &self.description);
        if let Some(schemas) = &self.schemas {
            check_schemas(v, schemas);
        }
        check_feature_flag(v, self.feature_flag.as_deref());
    }
}

/// The body of PUT: [`EventTypeIn`] without the name, which the path gives.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeUpdate {
    pub description: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub deprecated: bool,
    /// JSON Schemas of the payload, by version: `{"1": {...}}`.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub schemas: Option<serde_json::Value>,
    #[serde(default)]
    pub feature_flag: Option<String>,
}

impl Validate for EventTypeUpdate {
    fn validate(&self, v: &mut Violations) {
        validate::free_text(v, "description", &self.description);
        if let Some(schemas) = &self.schemas {
            check_schemas(v, schemas);
        }
        check_feature_flag(v, self.feature_flag.as_deref());
    }
}

impl Validate for EventTypePatch {
    fn validate(&self, v: &mut Violations) {
        if let Some(description) = &self.description {
            validate::free_text(v, "description", description);
        }
        if let Some(Some(schemas)) = &self.schemas {
            check_schemas(v, schemas);
        }
        if let Some(flag) = &self.feature_flag {
            check_feature_flag(v, flag.as_deref());
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    /// JSON Schemas of the payload, by version; only with `with_content` in a list.
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub schemas: Option<serde_json::Value>,
    pub feature_flag: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EventTypeOut {
    /// The event type as shown; `schemas` only when asked for.
    fn new(event_type: EventType, with_content: bool) -> Self {
        EventTypeOut {
            name: event_type.name,
            description: event_type.description,
            archived: event_type.archived,
            deprecated: event_type.deprecated,
            schemas: event_type.schemas.filter(|_| with_content),
            feature_flag: event_type.feature_flag,
            created_at: event_type.created_at,
            updated_at: event_type.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
    order: Option<Order>,
    /// Lists archived event types too.
    #[serde(default)]
    include_archived: bool,
    /// Gives each event type's `schemas` (`null` otherwise).
    #[serde(default)]
    with_content: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteParams {
    /// Deletes the event type for good instead of archiving it.
    #[serde(default)]
    expunge: bool,
}

#[utoipa::path(get, path = "/event-type", operation_id = "v1.event-type.list", tag = "Event Type",
    params(ListParams),
    responses((status = 200, description = "A page of event types", body = ListResponse<EventTypeOut>), Errors))]
async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<EventTypeOut>>, ApiError> {
    let order = params.order.unwrap_or(Order::Ascending);
    let query = list_query(params.limit, params.iterator, order);
    let page = state
        .store
        .list_event_types(&query, params.include_archived)
        .await?;
    Ok(Json(ListResponse::from_page(page, |event_type| {
        EventTypeOut::new(event_type, params.with_content)
    })))
}

#[utoipa::path(post, path = "/event-type", operation_id = "v1.event-type.create", tag = "Event Type",
    request_body = EventTypeIn,
    responses(
        (status = 201, description = "Created, or an archived one of this name brought back", body = EventTypeOut),
        Errors,
    ))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<EventTypeIn>,
) -> Result<(StatusCode, Json<EventTypeOut>), ApiError> {
    caller.require_admin()?;
    let now = state.clock.now();
    let mut event_type = EventType {
        name: body.name,
        description: body.description,
        archived: body.archived,
        deprecated: body.deprecated,
        schemas: body.schemas,
        feature_flag: body.feature_flag,
        created_at: now,
        updated_at: now,
    };
    let existing = match state.store.get_event_type(&event_type.name).await {
        Ok(existing) => Some(existing),
        Err(hookline_core::Error::NotFound(_)) => None,
        Err(error) => return Err(error.into()),
    };
    if event_type.revive(existing.as_ref())? {
        state.store.update_event_type(&event_type).await?;
    } else {
        state.store.create_event_type(&event_type).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(EventTypeOut::new(event_type, true)),
    ))
}

#[utoipa::path(get, path = "/event-type/{event_type_name}", operation_id = "v1.event-type.get", tag = "Event Type",
    responses((status = 200, description = "The event type", body = EventTypeOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<EventTypeOut>, ApiError> {
    let event_type = state.store.get_event_type(&name).await?;
    Ok(Json(EventTypeOut::new(event_type, true)))
}

#[utoipa::path(put, path = "/event-type/{event_type_name}", operation_id = "v1.event-type.update", tag = "Event Type",
    request_body = EventTypeUpdate,
    responses(
        (status = 200, description = "Replaced", body = EventTypeOut),
        (status = 201, description = "Created", body = EventTypeOut),
        Errors,
    ))]
async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<EventTypeUpdate>,
) -> Result<(StatusCode, Json<EventTypeOut>), ApiError> {
    caller.require_admin()?;
    let now = state.clock.now();
    let existing = match state.store.get_event_type(&name).await {
        Ok(existing) => Some(existing),
        Err(hookline_core::Error::NotFound(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let event_type = EventType {
        name,
        description: body.description,
        archived: body.archived,
        deprecated: body.deprecated,
        schemas: body.schemas,
        feature_flag: body.feature_flag,
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
    };
    let status = if existing.is_some() {
        state.store.update_event_type(&event_type).await?;
        StatusCode::OK
    } else {
        if !validate::is_slug(&event_type.name) || event_type.name.len() > 256 {
            return Err(ApiError::invalid(
                &["path", "event_type_name"],
                "must be 1 to 256 letters, digits, `-`, `_` or `.`",
            ));
        }
        state.store.create_event_type(&event_type).await?;
        StatusCode::CREATED
    };
    Ok((status, Json(EventTypeOut::new(event_type, true))))
}

#[utoipa::path(patch, path = "/event-type/{event_type_name}", operation_id = "v1.event-type.patch", tag = "Event Type",
    request_body = EventTypePatch,
    responses((status = 200, description = "Changed", body = EventTypeOut), Errors))]
async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<EventTypePatch>,
) -> Result<Json<EventTypeOut>, ApiError> {
    caller.require_admin()?;
    let mut event_type = state.store.get_event_type(&name).await?;
    body.apply(&mut event_type, state.clock.now());
    state.store.update_event_type(&event_type).await?;
    Ok(Json(EventTypeOut::new(event_type, true)))
}

#[utoipa::path(delete, path = "/event-type/{event_type_name}", operation_id = "v1.event-type.delete", tag = "Event Type",
    params(DeleteParams),
    responses((status = 204, description = "Archived, or deleted with `expunge`"), Errors))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let mut event_type = state.store.get_event_type(&name).await?;
    if params.expunge {
        state.store.delete_event_type(&name).await?;
    } else {
        event_type.archived = true;
        event_type.updated_at = state.clock.now();
        state.store.update_event_type(&event_type).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
