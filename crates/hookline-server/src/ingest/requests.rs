//! One logged inbound request (`GET /ingest/api/v1/source/{source_id}/request/{request_id}`,
//! as the log shows it), and replays: of one
//! (`POST /ingest/api/v1/source/{source_id}/request/{request_id}/replay`) or of every one
//! received in a time range (`POST /ingest/api/v1/source/{source_id}/replay`).
//!
//! An accepted request was forwarded as a message of the source's hidden application;
//! replaying it queues that message again, one manual attempt to each forwarding endpoint
//! it went to, through the delivery engine as a resend does. Refused requests and
//! duplicates were never forwarded and are not replayed; nor is a request whose forwarded
//! payload has expired.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use hookline_core::Code;
use hookline_core::id::IngestRequestId;
use hookline_core::ingest::{IngestRequest, Source};
use hookline_core::model::TriggerType;
use hookline_core::page::{Cursor, ListQuery, Order};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::source::{IngestLogOut, source_for};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Timestamp, ValidJson};
use crate::openapi::Errors;
use crate::validate::{Validate, Violations};

/// Requests read per page of a range replay, and the most body bytes a page loads.
const PAGE: usize = 250;
/// The most requests one range replay call looks at; the answer's `iterator` goes on.
const MAX_PER_CALL: u64 = 1000;
const PAGE_BODY_BYTES: usize = 1 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fetch))
        .routes(routes!(replay_one))
        .routes(routes!(replay_range))
}

#[utoipa::path(get, path = "/source/{source_id}/request/{request_id}",
    operation_id = "v1.ingest.request.get", tag = "Ingest Request",
    responses((status = 200, description = "The request, as the log shows it", body = IngestLogOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path((source_id, request_id)): Path<(String, String)>,
) -> Result<Json<IngestLogOut>, ApiError> {
    let source = source_for(&state, &caller, &source_id).await?;
    let request = state
        .store
        .get_ingest_request(&source.id, &IngestRequestId::from_string(request_id))
        .await?;
    Ok(Json(request.into()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayOut {
    /// The forwarding message queued again.
    pub msg_id: String,
    /// How many forwarding endpoints it was queued to.
    pub deliveries: u64,
}

#[utoipa::path(post, path = "/source/{source_id}/request/{request_id}/replay",
    operation_id = "v1.ingest.request.replay", tag = "Ingest Request",
    responses((status = 202, description = "The forwarding message is queued again to the endpoints it went to", body = ReplayOut), Errors))]
async fn replay_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((source_id, request_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<ReplayOut>), ApiError> {
    caller.require_admin()?;
    let source = source_for(&state, &caller, &source_id).await?;
    let request = state
        .store
        .get_ingest_request(&source.id, &IngestRequestId::from_string(request_id))
        .await?;
    let Some(msg_id) = request.msg_id.clone() else {
        return Err(not_forwarded(&request));
    };
    let Some(deliveries) = replay(&state, &source, &request).await? else {
        return Err(ApiError::refused(
            Code::MissingPayload,
            "the forwarded payload has expired; the request cannot be replayed",
        ));
    };
    state.queued();
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayOut {
            msg_id: msg_id.into_string(),
            deliveries,
        }),
    ))
}

/// Why a logged request cannot be replayed: it was never forwarded.
fn not_forwarded(request: &IngestRequest) -> ApiError {
    let detail = match request.verdict.as_str() {
        "duplicate" => format!(
            "{} was not forwarded ({}); replay the original instead",
            request.id, request.reason
        ),
        _ => format!(
            "{} was refused ({}: {}), so it was never forwarded; only accepted requests \
             are replayed",
            request.id, request.reason_code, request.reason
        ),
    };
    hookline_core::Error::Conflict {
        code: Code::Conflict,
        detail,
    }
    .into()
}

/// Queues the forwarding message of an accepted `request` again to every forwarding
/// endpoint it went to; returns how many, or `None` when its payload has expired.
async fn replay(
    state: &AppState,
    source: &Source,
    request: &IngestRequest,
) -> Result<Option<u64>, ApiError> {
    let msg_id = request.msg_id.as_ref().expect("an accepted request");
    let message = state
        .store
        .get_message(&source.app_id, msg_id.as_str())
        .await?;
    if message.payload.is_none() {
        return Ok(None);
    }
    let now = state.clock.now();
    let mut deliveries = 0;
    let mut query = ListQuery::first(ListQuery::MAX_LIMIT, Order::Descending);
    loop {
        let page = state
            .store
            .list_destinations(&source.app_id, &message.id, &query)
            .await?;
        for (destination, _) in &page.data {
            state
                .store
                .requeue(
                    &source.app_id,
                    &message.id,
                    &destination.endpoint_id,
                    TriggerType::Manual,
                    now,
                )
                .await?;
            deliveries += 1;
        }
        match page.iterator {
            Some(next) if !page.done => query.cursor = Some(Cursor::After(next)),
            _ => break,
        }
    }
    Ok(Some(deliveries))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRangeIn {
    pub since: Timestamp,
    /// Now when not given.
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// Go on after this request (the `iterator` of an answer that was not `done`).
    #[serde(default)]
    pub iterator: Option<String>,
}

impl Validate for ReplayRangeIn {
    fn validate(&self, v: &mut Violations) {
        if let Some(until) = &self.until
            && until.0 < self.since.0
        {
            v.add(&["until"], "must not be before since");
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRangeOut {
    /// Accepted requests whose forwarding message was queued again.
    pub replayed: u64,
    /// Deliveries queued, over every forwarding endpoint.
    pub deliveries: u64,
    /// Requests of the range not replayed: refused, duplicates, or their payload expired.
    pub skipped: u64,
    /// Whether the range is done; if not, `iterator` is where the next call goes on.
    pub done: bool,
    #[schema(required = true)]
    pub iterator: Option<String>,
}

#[utoipa::path(post, path = "/source/{source_id}/replay",
    operation_id = "v1.ingest.request.replay-range", tag = "Ingest Request",
    request_body = ReplayRangeIn,
    responses((status = 202, description = "The accepted requests received from `since` to `until` are queued again, up to 1000 requests a call", body = ReplayRangeOut), Errors))]
async fn replay_range(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
    ValidJson(body): ValidJson<ReplayRangeIn>,
) -> Result<(StatusCode, Json<ReplayRangeOut>), ApiError> {
    caller.require_admin()?;
    let source = source_for(&state, &caller, &source_id).await?;
    let until: DateTime<Utc> = body.until.map_or_else(|| state.clock.now(), |t| t.0);
    let mut out = ReplayRangeOut {
        replayed: 0,
        deliveries: 0,
        skipped: 0,
        done: true,
        iterator: None,
    };
    let mut query = ListQuery {
        limit: PAGE,
        cursor: Some(Cursor::After(body.iterator.unwrap_or_else(|| {
            IngestRequestId::boundary(body.since.0).into_string()
        }))),
        order: Order::Ascending,
    };
    'pages: loop {
        let page = state
            .store
            .list_ingest_requests(&source.id, &query, PAGE_BODY_BYTES)
            .await?;
        for request in &page.data {
            if request.created_at > until {
                break 'pages;
            }
            if out.replayed + out.skipped == MAX_PER_CALL {
                out.done = false;
                break 'pages;
            }
            out.iterator = Some(request.id.to_string());
            if request.msg_id.is_none() {
                out.skipped += 1;
                continue;
            }
            match replay(&state, &source, request).await? {
                Some(deliveries) => {
                    out.replayed += 1;
                    out.deliveries += deliveries;
                }
                None => out.skipped += 1,
            }
        }
        match (page.done, page.data.last()) {
            (false, Some(last)) => query.cursor = Some(Cursor::After(last.id.to_string())),
            _ => break,
        }
    }
    if out.done {
        out.iterator = None;
    }
    state.queued();
    Ok((StatusCode::ACCEPTED, Json(out)))
}
