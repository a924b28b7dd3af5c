//! Delivery attempts and deliveries: attempts by endpoint or by message, the messages an
//! endpoint was sent, the endpoints a message went to, expunging a response, resending.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use hookline_core::Code;
use hookline_core::id::{AttemptId, EndpointId, MessageId};
use hookline_core::model::{Attempt, Destination, Endpoint, MessageStatus, TriggerType};
use hookline_core::page::ListQuery;
use hookline_core::store::AttemptFilter;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::endpoint::{EndpointFields, endpoint_of};
use super::message::ListParams;
use super::message::payload_out;
use super::{ListResponse, app_for, time_query, yes};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Limit, Query, Timestamp};
use crate::openapi::Errors;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_by_endpoint))
        .routes(routes!(list_by_msg))
        .routes(routes!(list_attempted_messages))
        .routes(routes!(list_attempted_destinations))
        .routes(routes!(fetch))
        .routes(routes!(expunge))
        .routes(routes!(resend))
}

/// A delivery status given as its wire integer (`status=2`).
#[derive(Debug, Clone, Copy)]
struct Status(MessageStatus);

impl utoipa::PartialSchema for Status {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some([0, 1, 2, 3]))
            .description(Some("0 success, 1 pending, 2 fail, 3 sending"))
            .into()
    }
}

impl ToSchema for Status {}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(deserializer)?;
        MessageStatus::from_code(code).map(Status).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{code}` is not a message status (0 success, 1 pending, 2 fail, 3 sending)"
            ))
        })
    }
}

/// A class of HTTP status codes given as its lowest code (`status_code_class=500`).
#[derive(Debug, Clone, Copy)]
struct StatusCodeClass(i16);

impl utoipa::PartialSchema for StatusCodeClass {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some([0, 100, 200, 300, 400, 500]))
            .description(Some(
                "Attempts whose status code is in this class (0: no answer came)",
            ))
            .into()
    }
}

impl ToSchema for StatusCodeClass {}

impl<'de> Deserialize<'de> for StatusCodeClass {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match i16::deserialize(deserializer)? {
            class @ (0 | 100 | 200 | 300 | 400 | 500) => Ok(StatusCodeClass(class)),
            other => Err(serde::de::Error::custom(format!(
                "`{other}` is not a status code class (0, 100, 200, 300, 400 or 500)"
            ))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttemptOut {
    pub id: AttemptId,
    pub msg_id: MessageId,
    pub endpoint_id: EndpointId,
    pub url: String,
    /// The endpoint's answer: `"{}"` when content is not asked for, `"EXPUNGED"` once
    /// removed.
    pub response: String,
    pub response_status_code: i16,
    pub response_duration_ms: i64,
    /// 0 success, 1 pending, 2 fail, 3 sending.
    pub status: i64,
    pub status_text: &'static str,
    /// 0 scheduled, 1 manual.
    pub trigger_type: i64,
    pub timestamp: DateTime<Utc>,
    /// Hookline's own: the answer's headers, `[name, value]` pairs (empty without
    /// content).
    pub response_headers: Vec<(String, String)>,
    /// Hookline's own: the request's headers as sent, the signature's among them
    /// (credentials' values `[redacted]`; empty without content or when nothing was sent).
    pub request_headers: Vec<(String, String)>,
    /// Hookline's own: why no answer came (`timeout`, `connection_refused`, `tls`, …),
    /// `null` when one did.
    pub error_kind: Option<&'static str>,
}

impl MessageAttemptOut {
    fn new(attempt: Attempt, with_content: bool) -> Self {
        let response = match attempt.response {
            _ if !with_content => "{}".to_owned(),
            None => "EXPUNGED".to_owned(),
            Some(response) => response,
        };
        MessageAttemptOut {
            id: attempt.id,
            msg_id: attempt.msg_id,
            endpoint_id: attempt.endpoint_id,
            url: attempt.url,
            response,
            response_status_code: attempt.response_status_code,
            response_duration_ms: attempt.response_duration_ms,
            status: attempt.status.code(),
            status_text: attempt.status.text(),
            trigger_type: attempt.trigger_type.code(),
            timestamp: attempt.created_at,
            response_headers: if with_content {
                attempt.response_headers
            } else {
                Vec::new()
            },
            request_headers: if with_content {
                attempt.request_headers
            } else {
                Vec::new()
            },
            error_kind: attempt.error_kind.map(|kind| kind.as_str()),
        }
    }
}

/// A message with its delivery to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMessageOut {
    pub id: MessageId,
    pub event_id: Option<String>,
    pub event_type: String,
    /// `{}` when content is not asked for, `{"expired": true}` once removed.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub channels: Option<Vec<String>>,
    pub timestamp: DateTime<Utc>,
    /// 0 success, 1 pending, 2 fail, 3 sending.
    pub status: i64,
    pub status_text: &'static str,
    pub next_attempt: Option<DateTime<Utc>>,
}

/// An endpoint with its delivery of one message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEndpointOut {
    #[serde(flatten)]
    pub endpoint: EndpointFields,
    /// 0 success, 1 pending, 2 fail, 3 sending.
    pub status: i64,
    pub status_text: &'static str,
    pub next_attempt: Option<DateTime<Utc>>,
}

impl From<(Destination, Endpoint)> for MessageEndpointOut {
    fn from((destination, endpoint): (Destination, Endpoint)) -> Self {
        MessageEndpointOut {
            endpoint: endpoint.into(),
            status: destination.status.code(),
            status_text: destination.status.text(),
            next_attempt: destination.next_attempt,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AttemptListParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
    #[param(inline)]
    status: Option<Status>,
    #[param(inline)]
    status_code_class: Option<StatusCodeClass>,
    channel: Option<String>,
    before: Option<Timestamp>,
    after: Option<Timestamp>,
    /// Whether to include the endpoint's answer (`response`, `responseHeaders`).
    #[serde(default = "yes")]
    #[param(default = true)]
    with_content: bool,
    event_types: Option<Vec<String>>,
    /// Only on the by-message list: attempts to this endpoint (id or uid).
    #[param(ignore)]
    endpoint_id: Option<String>,
}

impl AttemptListParams {
    fn query(&mut self) -> Result<ListQuery, ApiError> {
        time_query(
            self.limit,
            self.iterator.take(),
            self.before,
            self.after,
            |t| AttemptId::boundary(t).into_string(),
        )
    }

    fn filter(&mut self) -> AttemptFilter {
        AttemptFilter {
            status: self.status.map(|s| s.0),
            status_code_class: self.status_code_class.map(|c| c.0),
            channel: self.channel.take(),
            event_types: self.event_types.take(),
            ..AttemptFilter::default()
        }
    }
}

async fn list_attempts(
    state: &AppState,
    app: &hookline_core::id::AppId,
    filter: AttemptFilter,
    query: ListQuery,
    with_content: bool,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let page = state.store.list_attempts(app, &filter, &query).await?;
    Ok(Json(ListResponse::from_page(page, |attempt| {
        MessageAttemptOut::new(attempt, with_content)
    })))
}

#[utoipa::path(get, path = "/app/{app_id}/attempt/endpoint/{endpoint_id}",
    operation_id = "v1.message-attempt.list-by-endpoint", tag = "Message Attempt",
    params(AttemptListParams),
    responses((status = 200, description = "A page of the endpoint's attempts, newest first", body = ListResponse<MessageAttemptOut>), Errors))]
async fn list_by_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Query(mut params): Query<AttemptListParams>,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let query = params.query()?;
    let filter = AttemptFilter {
        endpoint_id: Some(endpoint.id),
        ..params.filter()
    };
    list_attempts(&state, &app.id, filter, query, params.with_content).await
}

#[utoipa::path(get, path = "/app/{app_id}/attempt/msg/{msg_id}",
    operation_id = "v1.message-attempt.list-by-msg", tag = "Message Attempt",
    params(
        AttemptListParams,
        ("endpoint_id" = Option<String>, Query, description = "Only the attempts to this endpoint (id or uid)"),
    ),
    responses((status = 200, description = "A page of the message's attempts, newest first", body = ListResponse<MessageAttemptOut>), Errors))]
async fn list_by_msg(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id)): Path<(String, String)>,
    Query(mut params): Query<AttemptListParams>,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    let endpoint_id = match &params.endpoint_id {
        Some(key) => Some(state.store.get_endpoint(&app.id, key).await?.id),
        None => None,
    };
    let query = params.query()?;
    let filter = AttemptFilter {
        msg_id: Some(message.id),
        endpoint_id,
        ..params.filter()
    };
    list_attempts(&state, &app.id, filter, query, params.with_content).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatusParam {
    #[param(inline)]
    status: Option<Status>,
}

#[utoipa::path(get, path = "/app/{app_id}/endpoint/{endpoint_id}/msg",
    operation_id = "v1.message-attempt.list-attempted-messages", tag = "Message Attempt",
    params(ListParams, StatusParam),
    responses((status = 200, description = "A page of the messages sent to the endpoint, newest first, with their delivery to it", body = ListResponse<EndpointMessageOut>), Errors))]
async fn list_attempted_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    Query(params): Query<ListParams>,
    Query(StatusParam { status }): Query<StatusParam>,
) -> Result<Json<ListResponse<EndpointMessageOut>>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let with_content = params.with_content;
    let (query, filter) = params.query()?;
    let status = status.map(|status| status.0);
    let page = state
        .store
        .list_endpoint_messages(&app.id, &endpoint.id, status, &filter, &query)
        .await?;
    let list = ListResponse::try_from_page(page, |(message, destination)| {
        Ok(EndpointMessageOut {
            payload: payload_out(&message, with_content)?,
            id: message.id,
            event_id: message.event_id,
            event_type: message.event_type,
            channels: message.channels,
            timestamp: message.created_at,
            status: destination.status.code(),
            status_text: destination.status.text(),
            next_attempt: destination.next_attempt,
        })
    })?;
    Ok(Json(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DestinationParams {
    #[serde(default)]
    limit: Limit,
    iterator: Option<String>,
}

#[utoipa::path(get, path = "/app/{app_id}/msg/{msg_id}/endpoint",
    operation_id = "v1.message-attempt.list-attempted-destinations", tag = "Message Attempt",
    params(DestinationParams),
    responses((status = 200, description = "A page of the endpoints the message is sent to, with its delivery to each", body = ListResponse<MessageEndpointOut>), Errors))]
async fn list_attempted_destinations(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id)): Path<(String, String)>,
    Query(params): Query<DestinationParams>,
) -> Result<Json<ListResponse<MessageEndpointOut>>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    let query = super::list_query(
        params.limit,
        params.iterator,
        hookline_core::page::Order::Descending,
    );
    let page = state
        .store
        .list_destinations(&app.id, &message.id, &query)
        .await?;
    Ok(Json(ListResponse::from_page(
        page,
        MessageEndpointOut::from,
    )))
}

#[utoipa::path(get, path = "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
    operation_id = "v1.message-attempt.get", tag = "Message Attempt",
    responses((status = 200, description = "The attempt, with the endpoint's answer", body = MessageAttemptOut), Errors))]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id, attempt_id)): Path<(String, String, String)>,
) -> Result<Json<MessageAttemptOut>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    let attempt = state
        .store
        .get_attempt(&app.id, &message.id, &AttemptId::from_string(attempt_id))
        .await?;
    Ok(Json(MessageAttemptOut::new(attempt, true)))
}

#[utoipa::path(delete, path = "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
    operation_id = "v1.message-attempt.expunge-content", tag = "Message Attempt",
    responses((status = 204, description = "The endpoint's answer is removed"), Errors))]
async fn expunge(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id, attempt_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let app = app_for(&state, &caller, &app_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    state
        .store
        .expunge_attempt(&app.id, &message.id, &AttemptId::from_string(attempt_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues one manual attempt of a message to an endpoint it was sent to.
#[utoipa::path(post, path = "/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    operation_id = "v1.message-attempt.resend", tag = "Message Attempt",
    responses((status = 202, description = "An attempt is queued; the body is an empty object", body = Object), Errors))]
async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    Path((app_id, msg_id, endpoint_id)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let endpoint = endpoint_of(&state, &app, &endpoint_id).await?;
    let message = state.store.get_message(&app.id, &msg_id).await?;
    if message.payload.is_none() {
        return Err(ApiError::refused(
            Code::MissingPayload,
            "Unable to resend message. Payload is missing (probably expired).",
        ));
    }
    state
        .store
        .requeue(
            &app.id,
            &message.id,
            &endpoint.id,
            TriggerType::Manual,
            state.clock.now(),
        )
        .await?;
    state.queued();
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}
