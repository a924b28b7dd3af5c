//! Messages: `/api/v1/app/{app_id}/msg`. A message is accepted (202) once it and a
//! delivery for every matching endpoint are committed together; the payload is kept as
//! the exact JSON text received and given back unchanged.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use hookline_core::Code;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::Message;
use hookline_core::page::ListQuery;
use hookline_core::store::{MessageFilter, NewMessage};
use hookline_engine::Reservation;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::application::{ApplicationIn, get_or_create};
use super::{ListResponse, app_for, time_query, yes};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Limit, Query, Timestamp, ValidJson};
use crate::idempotency::{IdempotencyKey, Recorded};
use crate::openapi::Errors;
use crate::validate::{self, Validate, Violations};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(fetch))
        .routes(routes!(expunge))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageIn {
    pub event_type: String,
    /// A JSON object (also accepted as `data`), kept as the exact text received.
    #[serde(alias = "data")]
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Creates the application if the path names none.
    #[serde(default)]
    pub application: Option<ApplicationIn>,
    /// Days to keep the payload (5 to 90); the server's retention when absent. Then the
    /// payload is removed (as by expunge) and the message can no longer be resent.
    #[serde(default)]
    pub payload_retention_period: Option<i64>,
}

impl Validate for MessageIn {
    fn validate(&self, v: &mut Violations) {
        validate::slug(v, "eventType", &self.event_type, 256);
        if !self.payload.get().trim_start().starts_with('{') {
            v.add(&["payload"], "Payload must be an object.");
        } else {
            validate::json_depth(v, "payload", self.payload.get());
        }
        if let Some(event_id) = &self.event_id {
            validate::uid(v, "eventId", Some(event_id), MessageId::PREFIX);
        }
        if let Some(channels) = &self.channels {
            validate::slug_list(v, "channels", channels, 1..=5, 128);
        }
        if let Some(app) = &self.application {
            v.nested("application", |v| app.validate(v));
        }
        if let Some(days) = self.payload_retention_period
            && !(5..=90).contains(&days)
        {
            v.add(&["payloadRetentionPeriod"], "must be between 5 and 90 days");
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    pub id: MessageId,
    pub event_id: Option<String>,
    pub event_type: String,
    /// The payload as received; `{}` without `with_content`, `{"expired": true}` once
    /// expunged.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub channels: Option<Vec<String>>,
    pub timestamp: DateTime<Utc>,
}

/// The payload as the API shows it: `{}` when content is not asked for, and
/// `{"expired": true}` once expunged.
pub fn payload_out(message: &Message, with_content: bool) -> Result<Box<RawValue>, ApiError> {
    let text = match &message.payload {
        _ if !with_content => "{}".to_owned(),
        None => r#"{"expired":true}"#.to_owned(),
        Some(text) => text.clone(),
    };
    RawValue::from_string(text).map_err(|error| {
        ApiError::Internal(format!(
            "stored payload of {} is not JSON: {error}",
            message.id
        ))
    })
}

impl MessageOut {
    pub fn new(message: Message, with_content: bool) -> Result<Self, ApiError> {
        Ok(MessageOut {
            payload: payload_out(&message, with_content)?,
            id: message.id,
            event_id: message.event_id,
            event_type: message.event_type,
            channels: message.channels,
            timestamp: message.created_at,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
    /// Only the messages sent to this channel.
    channel: Option<String>,
    /// Only the messages created before this time (not with `after`).
    before: Option<Timestamp>,
    /// Only the messages created after this time (not with `before`).
    after: Option<Timestamp>,
    /// Gives the payloads (`{}` otherwise).
    #[serde(default = "yes")]
    #[param(default = true)]
    pub with_content: bool,
    /// Only the messages of these event types.
    event_types: Option<Vec<String>>,
}

impl ListParams {
    /// The page and the filter of a message list (`before`/`after` are message times).
    pub fn query(self) -> Result<(ListQuery, MessageFilter), ApiError> {
        let query = time_query(self.limit, self.iterator, self.before, self.after, |t| {
            MessageId::boundary(t).into_string()
        })?;
        let filter = MessageFilter {
            channel: self.channel,
            event_types: self.event_types,
        };
        Ok((query, filter))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentParams {
    /// Gives the payload (`{}` otherwise).
    #[serde(default = "yes")]
    #[param(default = true)]
    pub with_content: bool,
}

/// When the payload of a message created at `created_at` expires: after `days` if the
/// client asked for them, else after the server's retention.
pub fn payload_expiry(
    state: &AppState,
    created_at: DateTime<Utc>,
    days: Option<i64>,
) -> DateTime<Utc> {
    let retention = match days {
        Some(days) => chrono::Duration::days(days),
        None => chrono::Duration::from_std(state.config.keep.payload_retention)
            .unwrap_or(chrono::Duration::MAX),
    };
    created_at
        .checked_add_signed(retention)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Commits `message` with its deliveries (and the idempotency record, if the request has
/// a key) in one transaction, hands them to this node's worker or wakes the delivery
/// engine for them, and answers with `status`. The
/// payload is kept for the server's retention.
pub async fn accept(
    state: &AppState,
    message: Message,
    only_endpoint: Option<EndpointId>,
    status: StatusCode,
    with_content: bool,
    idempotency: Option<IdempotencyKey>,
) -> Result<Response, ApiError> {
    let expires_at = payload_expiry(state, message.created_at, None);
    accept_until(
        state,
        message,
        only_endpoint,
        status,
        with_content,
        idempotency,
        expires_at,
    )
    .await
}

/// [`accept`], with the payload kept until `payload_expires_at`.
async fn accept_until(
    state: &AppState,
    message: Message,
    only_endpoint: Option<EndpointId>,
    status: StatusCode,
    with_content: bool,
    idempotency: Option<IdempotencyKey>,
    payload_expires_at: DateTime<Utc>,
) -> Result<Response, ApiError> {
    let out = MessageOut::new(message.clone(), with_content)?;
    let body = serde_json::to_vec(&out)
        .map_err(|error| ApiError::Internal(format!("cannot serialize a message: {error}")))?;
    let record = idempotency
        .as_ref()
        .map(|key| key.record(status, body.clone(), message.created_at));
    // With room in this node's worker, the deliveries are leased to it as they are
    // created and start at once (or wait in its line); without, they are queued for a
    // claim.
    let reserved = state.reserve(&message.app_id);
    let new = NewMessage {
        message,
        only_endpoint,
        idempotency: record,
        payload_expires_at: Some(payload_expires_at),
        lease: reserved.as_ref().map(Reservation::lease),
    };
    let store = Arc::clone(&state.store);
    let write = async move { store.create_message(new).await };
    let created = match (
        state.write_and_hand(reserved, write, |c| &c.leased).await,
        &idempotency,
    ) {
        (Ok(created), _) => created,
        // A request with the same key was carried out first, on this node or another
        // (a client retrying after a node died mid-answer): answer as it was answered.
        (Err(error), Some(key)) if error.code() == Code::IdempotencyConflict => {
            return crate::idempotency::replay_first(state, key, error).await;
        }
        (Err(error), _) => return Err(error.into()),
    };
    if created.leased.len() == created.endpoints.len() {
        state.messages.notify_waiters();
    } else {
        state.queued();
    }
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if idempotency.is_some() {
        response.extensions_mut().insert(Recorded);
    }
    Ok(response)
}

#[utoipa::path(post, path = "/app/{app_id}/msg", operation_id = "v1.message.create", tag = "Message",
    params(ContentParams), request_body = MessageIn,
    responses((status = 202, description = "Accepted: stored with a delivery to every matching endpoint", body = MessageOut), Errors))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Query(params): Query<ContentParams>,
    idempotency: Option<Extension<IdempotencyKey>>,
    ValidJson(body): ValidJson<MessageIn>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    // An application named by its id is not looked up: the create itself fails with
    // `NotFound` if it does not exist, one round trip to the database fewer.
    let app_id = match body.application {
        None if AppId::is_id(&app_id) => AppId::from_string(app_id),
        application => get_or_create(&state, &app_id, application).await?.0.id,
    };
    super::not_forwarding(&state, &app_id).await?;
    let now = state.clock.now();
    let message = Message {
        id: MessageId::new_at(now),
        app_id,
        event_id: body.event_id,
        event_type: body.event_type,
        payload: Some(body.payload.get().to_owned()),
        channels: body.channels,
        headers: Default::default(),
        created_at: now,
    };
    let span = tracing::Span::current();
    span.record("app_id", message.app_id.as_str());
    span.record("msg_id", message.id.as_str());
    let idempotency = idempotency.map(|Extension(key)| key);
    let expires_at = payload_expiry(&state, now, body.payload_retention_period);
    accept_until(
        &state,
        message,
        None,
        StatusCode::ACCEPTED,
        params.with_content,
        idempotency,
        expires_at,
    )
    .await
}

#[utoipa::path(get, path = "/app/{app_id}/msg", operation_id = "v1.message.list", tag = "Message",
    params(ListParams),
    responses((status = 200, description = "A page of messages, newest first", body = ListResponse<MessageOut>), Errors))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Json<ListResponse<MessageOut>>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let with_content = params.with_content;
    let (query, filter) = params.query()?;
    let page = state.store.list_messages(&app.id, &filter, &query).await?;
    let list = ListResponse::try_from_page(page, |message| MessageOut::new(message, with_content))?;
    Ok(Json(list))
}

#[utoipa::path(get, path = "/app/{app_id}/msg/{msg_id}", operation_id = "v1.message.get", tag = "Message",
    params(ContentParams),
    responses((status = 200, description = "The message", body = MessageOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id)): Path<(String, String)>,
    Query(params): Query<ContentParams>,
) -> Result<Json<MessageOut>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    Ok(Json(MessageOut::new(message, params.with_content)?))
}

#[utoipa::path(delete, path = "/app/{app_id}/msg/{msg_id}/content", operation_id = "v1.message.expunge-content", tag = "Message",
    responses((status = 204, description = "The payload is removed (shown as `{\"expired\": true}` from now on)"), Errors))]
async fn expunge(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let app = app_for(&state, &caller, &app_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    state.store.expunge_message(&app.id, &message.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_body;

    #[test]
    fn payload_text_is_kept_exactly() {
        let body = br#"{"eventType": "a.b", "payload": {"b": 1,  "a": [1.50, "x"]}}"#;
        let message: MessageIn = parse_body(body).unwrap();
        assert_eq!(message.payload.get(), r#"{"b": 1,  "a": [1.50, "x"]}"#);
        let aliased: MessageIn = parse_body(br#"{"eventType": "a", "data": {}}"#).unwrap();
        assert_eq!(aliased.payload.get(), "{}");
    }

    #[test]
    fn payload_must_be_an_object() {
        for payload in ["[1]", "\"x\"", "1", "null"] {
            let body = format!(r#"{{"eventType": "a.b", "payload": {payload}}}"#);
            match parse_body::<MessageIn>(body.as_bytes()) {
                Err(ApiError::Invalid(errors)) => {
                    assert_eq!(errors[0].loc, ["body", "payload"], "{payload}")
                }
                other => panic!("{payload}: {other:?}"),
            }
        }
    }

    #[test]
    fn payload_out_shapes() {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut message = Message {
            id: MessageId::new(),
            app_id: hookline_core::id::AppId::new(),
            event_id: None,
            event_type: "a".into(),
            payload: Some(r#"{"k": 1}"#.into()),
            channels: None,
            headers: Default::default(),
            created_at: now,
        };
        assert_eq!(payload_out(&message, true).unwrap().get(), r#"{"k": 1}"#);
        assert_eq!(payload_out(&message, false).unwrap().get(), "{}");
        message.payload = None;
        assert_eq!(
            payload_out(&message, true).unwrap().get(),
            r#"{"expired":true}"#
        );
    }
}
