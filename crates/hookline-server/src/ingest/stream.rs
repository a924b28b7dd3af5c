//! `GET /ingest/api/v1/source/{source_id}/stream`: a source's requests as they arrive, as
//! server-sent events. What `hookline listen` and `hookline tail` read.
//!
//! Each event is one logged request (`event: request`) whose SSE id is its `seq`, the
//! source's commit order. A client resumes after the last id it saw with `?after=SEQ` or
//! the `Last-Event-ID` header, and gets every later request exactly once, in order.
//! Without either it starts with the requests that arrive from now on.
//!
//! Memory stays bounded whatever the bodies and however slow the client: the stream
//! reads the next requests only when the client has taken the last ones (it is pulled,
//! not pushed into a queue), and each read stops once its bodies reach
//! [`STREAM_BODY_BYTES`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use hookline_core::Store;
use hookline_core::id::SourceId;
use hookline_core::ingest::IngestRequest;
use hookline_core::page::{ListQuery, Order};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::source::source_for;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::openapi::Errors;
use crate::sse;

/// Bytes of bodies one read of a stream holds at most (one request at least).
pub const STREAM_BODY_BYTES: usize = 1 << 20;
/// How often a caught-up stream looks for news when nothing woke it (another node
/// stored them).
const POLL: Duration = Duration::from_millis(500);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// One streamed request, with the exact bytes of its body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamedRequest {
    pub id: String,
    pub seq: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    pub body: String,
    /// How many bytes the body had as received: more than `body` holds when the log
    /// keeps only its start (a refused request's).
    #[serde(default)]
    #[schema(required = true)]
    pub body_size: i64,
    /// Refused requests answered but not logged (over the cap) just before this one.
    #[serde(default)]
    #[schema(required = true)]
    pub dropped_before: i64,
    /// `accepted`, `duplicate` or `rejected`.
    pub verdict: String,
    pub status_code: i16,
    pub reason_code: String,
    pub reason: String,
    #[schema(required = true)]
    pub event_type: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<IngestRequest> for StreamedRequest {
    fn from(request: IngestRequest) -> Self {
        StreamedRequest {
            id: request.id.into_string(),
            seq: request.seq,
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: base64::engine::general_purpose::STANDARD.encode(&request.body),
            body_size: request.body_size,
            dropped_before: request.dropped_before,
            verdict: request.verdict.as_str().to_owned(),
            status_code: request.status_code,
            reason_code: request.reason_code,
            reason: request.reason,
            event_type: request.event_type,
            created_at: request.created_at,
        }
    }
}

/// One event of the stream as a client parses it: `event: request`, the request's `seq`
/// as its id, and the request as JSON in its data. The schema of the `text/event-stream`
/// answer (one event's, as OpenAPI 3.1 tools read it).
struct StreamedRequestEvent;

impl PartialSchema for StreamedRequestEvent {
    fn schema() -> RefOr<Schema> {
        let request = serde_json::to_value(StreamedRequest::schema()).expect("a schema serializes");
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The request, as JSON"))
            .content_media_type("application/json")
            // JSON Schema's `contentSchema`, which utoipa has no field for.
            .extensions(Some(Extensions::from_iter([("contentSchema", request)])));
        ObjectBuilder::new()
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["request"])),
            )
            .required("event")
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The request's `seq`: what `after` resumes after")),
            )
            .required("id")
            .property("data", data)
            .required("data")
            .into()
    }
}

impl ToSchema for StreamedRequestEvent {}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamParams {
    /// Resume after this `seq` (the id of the last event seen); wins over
    /// `Last-Event-ID`. Without either, the stream starts with the requests that arrive
    /// from now on.
    after: Option<i64>,
}

/// The `seq` a new stream starts after: the newest request's, so only new ones follow.
async fn latest_seq(state: &AppState, source: &SourceId) -> Result<i64, ApiError> {
    let query = ListQuery {
        limit: 1,
        cursor: None,
        order: Order::Descending,
    };
    // A budget of nothing still reads the one request.
    let page = state.store.list_ingest_requests(source, &query, 0).await?;
    Ok(page.data.first().map_or(0, |request| request.seq))
}

#[utoipa::path(get, path = "/source/{source_id}/stream", operation_id = "v1.ingest.request.stream", tag = "Ingest Request",
    params(
        StreamParams,
        ("Last-Event-ID" = Option<String>, Header, nullable = false,
            description = "Resume after this `seq`, as `after` does (ignored unless an integer)"),
    ),
    responses(
        (status = 200, description = "The source's requests as they are received, one `request` event each, in `seq` order; a comment every 15 s keeps the connection open",
            content_type = "text/event-stream", body = StreamedRequestEvent),
        Errors,
    ))]
async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(source_id): Path<String>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let source = source_for(&state, &caller, &source_id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok());
    let after = match params.after.or(last_event_id) {
        Some(after) => after,
        None => latest_seq(&state, &source.id).await?,
    };
    let feed = RequestFeed {
        store: Arc::clone(&state.store),
        source: source.id,
        after,
        pending: VecDeque::new(),
        news: Arc::clone(&state.ingested),
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        Some((Ok(feed.next_event().await), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A source's requests after `after`, in `seq` order, read a budget at a time as the
/// client takes them.
struct RequestFeed {
    store: Arc<dyn Store>,
    source: SourceId,
    after: i64,
    /// Read, not yet sent.
    pending: VecDeque<IngestRequest>,
    /// Notified when a request is stored on this node.
    news: Arc<tokio::sync::Notify>,
}

impl RequestFeed {
    /// The next request's event, once there is one.
    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(request) = self.pending.pop_front() {
                let seq = request.seq;
                match Event::default()
                    .event("request")
                    .id(seq.to_string())
                    .json_data(StreamedRequest::from(request))
                {
                    Ok(event) => return event,
                    Err(error) => {
                        tracing::warn!(%error, seq, "stream: a request could not be sent");
                        continue;
                    }
                }
            }
            // Created before reading, so news arriving in between is not missed.
            let notified = self.news.notified();
            match self
                .store
                .ingest_requests_after(&self.source, self.after, sse::BATCH, STREAM_BODY_BYTES)
                .await
            {
                Ok(requests) if !requests.is_empty() => {
                    self.after = requests.last().map_or(self.after, |last| last.seq);
                    self.pending.extend(requests);
                }
                Ok(_) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "stream: reading failed; retrying");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}
