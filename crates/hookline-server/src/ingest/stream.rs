//! `GET /ingest/api/v1/source/{source_id}/stream`: a source's requests as they arrive, as
//! server-sent events. What `hookline listen` and `hookline tail` read.
//!
//! Each event is one logged request (`event: request`) whose SSE id is its `seq`, the
//! source's commit order. A client resumes after the last id it saw with `?after=SEQ` or
//! the `Last-Event-ID` header, and gets every later request exactly once, in order.
//! Without either it starts with the requests that arrive from now on.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use hookline_core::Store;
use hookline_core::id::SourceId;
use hookline_core::ingest::IngestRequest;
use hookline_core::page::{ListQuery, Order};
use serde::{Deserialize, Serialize};

use super::source::source_for;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::sse::{self, Feed};

pub fn router() -> Router<AppState> {
    Router::new().route("/source/{source_id}/stream", get(stream))
}

/// One streamed request, with the exact bytes of its body.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub verdict: String,
    pub status_code: i16,
    pub reason_code: String,
    pub reason: String,
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
            verdict: request.verdict.as_str().to_owned(),
            status_code: request.status_code,
            reason_code: request.reason_code,
            reason: request.reason,
            event_type: request.event_type,
            created_at: request.created_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    after: Option<i64>,
}

/// The `seq` a new stream starts after: the newest request's, so only new ones follow.
async fn latest_seq(state: &AppState, source: &SourceId) -> Result<i64, ApiError> {
    let query = ListQuery {
        limit: 1,
        cursor: None,
        order: Order::Descending,
    };
    let page = state.store.list_ingest_requests(source, &query).await?;
    Ok(page.data.first().map_or(0, |request| request.seq))
}

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
    };
    Ok(sse::stream(feed, Arc::clone(&state.ingested)))
}

/// A source's requests after `after`, in `seq` order.
struct RequestFeed {
    store: Arc<dyn Store>,
    source: SourceId,
    after: i64,
}

impl Feed for RequestFeed {
    async fn next(&mut self) -> Result<Vec<Event>, hookline_core::Error> {
        let requests = self
            .store
            .ingest_requests_after(&self.source, self.after, sse::BATCH)
            .await?;
        let mut events = Vec::with_capacity(requests.len());
        for request in requests {
            self.after = request.seq;
            let seq = request.seq;
            let data = serde_json::to_string(&StreamedRequest::from(request))
                .map_err(|error| hookline_core::Error::Storage(Box::new(error)))?;
            events.push(
                Event::default()
                    .event("request")
                    .id(seq.to_string())
                    .data(data),
            );
        }
        Ok(events)
    }
}
