//! `GET /api/v1/app/{app_id}/msg/stream`: an application's messages as they are created,
//! as server-sent events (`event: message`, SSE id = the message id). What
//! `hookline listen --app` reads to act as a virtual endpoint on a developer's machine.
//!
//! Message ids sort by creation time, but a message is committed a moment after its id is
//! made, so a later id can become visible before an earlier one. The feed therefore
//! rereads a short window ([`SETTLE`]) behind the newest message it sent and skips what it
//! already sent: nothing committed within that window of its creation is missed. After a
//! reconnect (`?after=ID` or `Last-Event-ID`) the window may bring back messages the client
//! already has; clients drop repeated ids.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use hookline_core::Store;
use hookline_core::id::{AppId, MessageId};
use hookline_core::model::Message;
use hookline_core::page::{Cursor, ListQuery, Order};
use hookline_core::store::MessageFilter;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::app_for;
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::openapi::Errors;
use crate::sse::{self, Feed};

/// How far behind the newest sent message the feed rereads.
pub const SETTLE: Duration = Duration::from_secs(5);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// One streamed message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamedMessage {
    pub id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<Vec<String>>,
    /// The payload's exact JSON text; `null` once expunged.
    pub payload: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Message> for StreamedMessage {
    fn from(message: Message) -> Self {
        StreamedMessage {
            id: message.id.into_string(),
            event_type: message.event_type,
            event_id: message.event_id,
            channels: message.channels,
            payload: message.payload,
            created_at: message.created_at,
        }
    }
}

/// One event of the stream, for the document: `event: message`, the message's id as its
/// id, and a [`StreamedMessage`] as its data.
#[derive(Debug)]
pub struct MessageEvent;

impl PartialSchema for MessageEvent {
    fn schema() -> RefOr<Schema> {
        event_schema("message", "The message's id", StreamedMessage::schema())
    }
}

impl ToSchema for MessageEvent {}

/// The schema of one server-sent event named `event` whose data is JSON of the schema
/// `data`, as OpenAPI 3.1 describes the items of a `text/event-stream` (and
/// schemathesis checks them): an object of the SSE fields. `data` is inlined (in
/// `contentSchema`, which not every tool follows references through).
pub fn event_schema(event: &str, id: &str, data: RefOr<Schema>) -> RefOr<Schema> {
    let content = serde_json::to_value(data).expect("a schema serializes");
    ObjectBuilder::new()
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([event])),
        )
        .required("event")
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(id)),
        )
        .required("id")
        .property(
            "data",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("application/json")
                .extensions(Some([("contentSchema", content)].into_iter().collect())),
        )
        .required("data")
        .into()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamParams {
    /// Resumes after this message (its id or event id), as `Last-Event-ID` does; without
    /// either, the stream starts with the messages created from now on.
    after: Option<String>,
}

#[utoipa::path(get, path = "/app/{app_id}/msg/stream", operation_id = "v1.message.stream", tag = "Message",
    params(
        StreamParams,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The id of the last message received, to resume after it (`after` wins)"),
    ),
    responses(
        (status = 200, description = "The application's messages as they are created, as server-sent events; a comment every 15 s keeps the connection open",
            content_type = "text/event-stream", body = MessageEvent),
        Errors,
    ))]

async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let app = app_for(&state, &caller, &app_id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // Resume after a message the client saw, or start with what is created from now on.
    let after = params.after.or(last_event_id);
    let since = match &after {
        Some(after) => state.store.get_message(&app.id, after).await?.created_at,
        None => state.clock.now(),
    };
    let mut feed = MessageFeed {
        store: Arc::clone(&state.store),
        app: app.id,
        since,
        sent: HashSet::new(),
        sent_order: VecDeque::new(),
    };
    if after.is_none() {
        // A new stream: what the window already holds is the past, not news.
        feed.next().await?;
        feed.since = since;
    }
    Ok(sse::stream(feed, Arc::clone(&state.messages)))
}

/// An application's messages created at or after `since`, each once.
struct MessageFeed {
    store: Arc<dyn Store>,
    app: AppId,
    /// The creation time of the newest message sent (or where the stream started).
    since: DateTime<Utc>,
    /// Ids sent within the settle window behind `since`, oldest first in `sent_order`.
    sent: HashSet<MessageId>,
    sent_order: VecDeque<(DateTime<Utc>, MessageId)>,
}

impl MessageFeed {
    fn window_start(&self) -> DateTime<Utc> {
        self.since - chrono::Duration::from_std(SETTLE).unwrap_or_default()
    }

    fn forget_settled(&mut self) {
        let start = self.window_start();
        while let Some((created_at, _)) = self.sent_order.front() {
            if *created_at >= start {
                break;
            }
            if let Some((_, id)) = self.sent_order.pop_front() {
                self.sent.remove(&id);
            }
        }
    }
}

impl Feed for MessageFeed {
    async fn next(&mut self) -> Result<Vec<Event>, hookline_core::Error> {
        let mut cursor = MessageId::boundary(self.window_start()).into_string();
        let mut events = Vec::new();
        // Page through the window and past it; stop at a batch of news or the end.
        loop {
            let query = ListQuery {
                limit: sse::BATCH,
                cursor: Some(Cursor::After(cursor.clone())),
                order: Order::Ascending,
            };
            let page = self
                .store
                .list_messages(&self.app, &MessageFilter::default(), &query)
                .await?;
            let done = page.data.len() < sse::BATCH;
            for message in page.data {
                cursor = message.id.to_string();
                if self.sent.contains(&message.id) {
                    continue;
                }
                self.since = self.since.max(message.created_at);
                self.sent.insert(message.id.clone());
                self.sent_order
                    .push_back((message.created_at, message.id.clone()));
                let id = message.id.to_string();
                let data = serde_json::to_string(&StreamedMessage::from(message))
                    .map_err(|error| hookline_core::Error::Storage(Box::new(error)))?;
                events.push(Event::default().event("message").id(id).data(data));
            }
            if done || events.len() >= sse::BATCH {
                break;
            }
        }
        self.forget_settled();
        Ok(events)
    }
}
