//! Applications: `/api/v1/app`. Listing, creating and changing applications is for admin
//! tokens; an app token may read its own.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use hookline_core::id::AppId;
use hookline_core::model::Application;
use hookline_core::page::Order;
use hookline_core::patch::ApplicationPatch;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ListResponse, app_for, list_query};
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationIn {
    pub name: String,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default, alias = "rateLimit")]
    pub throttle_rate: Option<u16>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Validate for ApplicationIn {
    fn validate(&self, v: &mut Violations) {
        validate::name(v, "name", &self.name);
        validate::uid(v, "uid", self.uid.as_deref(), AppId::PREFIX);
        validate::throttle_rate(v, "throttleRate", self.throttle_rate);
    }
}

impl ApplicationIn {
    /// A new application made from this body, created at `now`.
    pub fn into_application(self, now: DateTime<Utc>) -> Application {
        Application {
            id: AppId::new_at(now),
            uid: self.uid,
            name: self.name,
            throttle_rate: self.throttle_rate,
            metadata: self.metadata.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        }
    }
}

impl Validate for ApplicationPatch {
    fn validate(&self, v: &mut Violations) {
        if let Some(name) = &self.name {
            validate::name(v, "name", name);
        }
        if let Some(uid) = &self.uid {
            validate::uid(v, "uid", uid.as_deref(), AppId::PREFIX);
        }
        if let Some(rate) = self.throttle_rate {
            validate::throttle_rate(v, "throttleRate", rate);
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    pub id: AppId,
    pub uid: Option<String>,
    pub name: String,
    pub throttle_rate: Option<u16>,
    /// The old Svix name of `throttleRate`, for older clients.
    pub rate_limit: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Application> for ApplicationOut {
    fn from(app: Application) -> Self {
        ApplicationOut {
            id: app.id,
            uid: app.uid,
            name: app.name,
            throttle_rate: app.throttle_rate,
            rate_limit: app.throttle_rate,
            metadata: app.metadata,
            created_at: app.created_at,
            updated_at: app.updated_at,
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
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CreateParams {
    /// Answers the application whose `uid` the body names, when there is one, instead of
    /// creating another (200 instead of 201).
    #[serde(default)]
    get_if_exists: bool,
}

/// The application `key` names, created from `body` if there is none: for message create
/// and app-portal-access. A `key` that is not an id becomes the new application's uid
/// when the body gives none. Returns whether it was created.
pub async fn get_or_create(
    state: &AppState,
    key: &str,
    body: Option<ApplicationIn>,
) -> Result<(Application, bool), ApiError> {
    let store = state.store.as_ref();
    let missing = match store.get_app(key).await {
        Ok(app) => return Ok((app, false)),
        Err(hookline_core::Error::NotFound(what)) => what,
        Err(error) => return Err(error.into()),
    };
    let Some(mut body) = body else {
        return Err(hookline_core::Error::NotFound(missing).into());
    };
    if body.uid.is_none() && !AppId::is_id(key) {
        body.uid = Some(key.to_owned());
    }
    let app = body.into_application(state.clock.now());
    match store.create_app(&app).await {
        Ok(()) => Ok((app, true)),
        // Created by a concurrent request in the meantime.
        Err(hookline_core::Error::Conflict { .. }) => Ok((store.get_app(key).await?, false)),
        Err(error) => Err(error.into()),
    }
}

#[utoipa::path(get, path = "/app", operation_id = "v1.application.list", tag = "Application",
    params(ListParams),
    responses((status = 200, description = "A page of applications", body = ListResponse<ApplicationOut>), Errors))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<ApplicationOut>>, ApiError> {
    caller.require_admin()?;
    let order = params.order.unwrap_or(Order::Ascending);
    let query = list_query(params.limit, params.iterator, order);
    let page = state.store.list_apps(&query).await?;
    Ok(Json(ListResponse::from_page(page, ApplicationOut::from)))
}

#[utoipa::path(post, path = "/app", operation_id = "v1.application.create", tag = "Application",
    params(CreateParams), request_body = ApplicationIn,
    responses(
        (status = 201, description = "Created", body = ApplicationOut),
        (status = 200, description = "Already there (`get_if_exists`)", body = ApplicationOut),
        Errors,
    ))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<CreateParams>,
    ValidJson(body): ValidJson<ApplicationIn>,
) -> Result<(StatusCode, Json<ApplicationOut>), ApiError> {
    caller.require_admin()?;
    if params.get_if_exists
        && let Some(uid) = body.uid.clone()
    {
        let (app, created) = get_or_create(&state, &uid, Some(body)).await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return Ok((status, Json(app.into())));
    }
    let app = body.into_application(state.clock.now());
    state.store.create_app(&app).await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

#[utoipa::path(get, path = "/app/{app_id}", operation_id = "v1.application.get", tag = "Application",
    responses((status = 200, description = "The application", body = ApplicationOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<Json<ApplicationOut>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    Ok(Json(app.into()))
}

#[utoipa::path(put, path = "/app/{app_id}", operation_id = "v1.application.update", tag = "Application",
    request_body = ApplicationIn,
    responses(
        (status = 200, description = "Replaced", body = ApplicationOut),
        (status = 201, description = "Created", body = ApplicationOut),
        Errors,
    ))]
async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    ValidJson(body): ValidJson<ApplicationIn>,
) -> Result<(StatusCode, Json<ApplicationOut>), ApiError> {
    caller.require_admin()?;
    let mut app = match state.store.get_app(&app_id).await {
        Ok(app) => app,
        Err(hookline_core::Error::NotFound(_)) => {
            let app = body.into_application(state.clock.now());
            state.store.create_app(&app).await?;
            return Ok((StatusCode::CREATED, Json(app.into())));
        }
        Err(error) => return Err(error.into()),
    };
    super::not_forwarding(&state, &app.id).await?;
    app.name = body.name;
    app.uid = body.uid;
    app.throttle_rate = body.throttle_rate;
    app.metadata = body.metadata.unwrap_or_default();
    app.updated_at = state.clock.now();
    state.store.update_app(&app).await?;
    Ok((StatusCode::OK, Json(app.into())))
}

#[utoipa::path(patch, path = "/app/{app_id}", operation_id = "v1.application.patch", tag = "Application",
    request_body = ApplicationPatch,
    responses((status = 200, description = "Changed", body = ApplicationOut), Errors))]
async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    ValidJson(body): ValidJson<ApplicationPatch>,
) -> Result<Json<ApplicationOut>, ApiError> {
    caller.require_admin()?;
    let mut app = state.store.get_app(&app_id).await?;
    super::not_forwarding(&state, &app.id).await?;
    body.apply(&mut app, state.clock.now());
    state.store.update_app(&app).await?;
    Ok(Json(app.into()))
}

#[utoipa::path(delete, path = "/app/{app_id}", operation_id = "v1.application.delete", tag = "Application",
    responses((status = 204, description = "Deleted, with its endpoints and messages"), Errors))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let app = state.store.get_app(&app_id).await?;
    state.store.delete_app(&app.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
