//! `/in/{token}[/…]`: where providers' webhooks arrive.
//!
//! Each request is checked against its source's type on the exact bytes received, then
//! stored, accepted or not, in one transaction with the messages that forward it: the
//! answer comes after the commit and before any forwarding, so a slow destination never
//! slows the provider and nothing answered `200` can be lost.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::{DateTime, Utc};
use hookline_core::id::{IngestRequestId, MessageId};
use hookline_core::ingest::{IngestRequest, NewIngestRequest, Source, Verdict};
use hookline_core::memo::Memo;
use hookline_core::model::Message;
use hookline_core::store::NewMessage;
use serde_json::json;

use super::source_type::{Checked, Incoming, SourceType};
use crate::AppState;
use crate::error::{ApiError, http_error};

/// The event type of a forwarded request whose body names none.
pub const DEFAULT_EVENT_TYPE: &str = "ingest.request";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/in/{token}", any(receive))
        .route("/in/{token}/{*rest}", any(receive))
}

/// The request as received, before it is judged.
struct Received {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    /// The log record of this request with `verdict`.
    fn record(
        self,
        source: &Source,
        now: DateTime<Utc>,
        status: StatusCode,
        verdict: Verdict,
        reason: (&str, String),
    ) -> IngestRequest {
        IngestRequest {
            id: IngestRequestId::new_at(now),
            source_id: source.id.clone(),
            seq: 0,
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            body: self.body,
            verdict,
            status_code: status.as_u16() as i16,
            reason_code: reason.0.to_owned(),
            reason: reason.1,
            dedupe_key: None,
            event_type: None,
            msg_id: None,
            created_at: now,
        }
    }
}

/// Headers in arrival order, names in lowercase, values as text.
fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `(token, sub-path)` of `/in/{token}[/rest]`.
fn split_path(path: &str) -> (&str, String) {
    let rest = path.strip_prefix("/in/").unwrap_or_default();
    match rest.split_once('/') {
        Some((token, sub)) => (token, format!("/{sub}")),
        None => (rest, "/".to_owned()),
    }
}

async fn receive(State(state): State<AppState>, request: Request) -> Response {
    match receive_inner(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn receive_inner(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let now = hookline_core::now();
    let (parts, body) = request.into_parts();
    let (token, path) = split_path(parts.uri.path());
    let Some(source) = state.store.find_source_by_token(token, now).await? else {
        return Ok(http_error(
            StatusCode::NOT_FOUND,
            "source_not_found",
            "no source has this ingest token (it may have been rotated out)",
        ));
    };
    let source_type = state.source_types.get(&source)?;
    let limit = source_type
        .options()
        .max_body_bytes
        .unwrap_or(state.config.max_payload_bytes);
    let mut received = Received {
        method: parts.method.as_str().to_owned(),
        path,
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: header_list(&parts.headers),
        body: Vec::new(),
    };
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => received.body = bytes.to_vec(),
        Err(_) => {
            let detail = format!("the body is larger than this source's limit of {limit} bytes");
            let status = StatusCode::PAYLOAD_TOO_LARGE;
            let reason = ("payload_too_large", detail.clone());
            let record = received.record(&source, now, status, Verdict::Rejected, reason);
            store(state, record, None, Vec::new()).await?;
            return Ok(http_error(status, "payload_too_large", &detail));
        }
    }
    let checked = source_type.check(
        &Incoming {
            method: &received.method,
            headers: &received.headers,
            body: &received.body,
        },
        now.timestamp(),
    );
    let checked = match checked {
        Ok(checked) => checked,
        Err(refusal) => {
            let status = StatusCode::UNAUTHORIZED;
            let detail = refusal.reason.clone();
            let reason = (refusal.code, refusal.reason);
            let record = received.record(&source, now, status, Verdict::Rejected, reason);
            store(state, record, None, Vec::new()).await?;
            return Ok(http_error(status, refusal.code, &detail));
        }
    };
    if let Some(challenge) = checked.challenge.clone() {
        // Slack's URL verification: answered, logged, not forwarded.
        let reason = ("challenge", "answered Slack's url_verification".to_owned());
        let record = received.record(&source, now, StatusCode::OK, Verdict::Accepted, reason);
        store(state, record, None, Vec::new()).await?;
        return Ok(axum::Json(json!({ "challenge": challenge })).into_response());
    }
    let Ok(payload) = String::from_utf8(received.body.clone()) else {
        let status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        let detail = "the body is not valid UTF-8; Hookline forwards text bodies only";
        let reason = ("body_not_utf8", detail.to_owned());
        let record = received.record(&source, now, status, Verdict::Rejected, reason);
        store(state, record, None, Vec::new()).await?;
        return Ok(http_error(status, "body_not_utf8", detail));
    };
    let messages = forwards(
        state,
        &source,
        &source_type,
        &received,
        &checked,
        payload,
        now,
    )
    .await?;
    let Checked {
        dedupe_key,
        event_type,
        ..
    } = checked;
    let mut record = received.record(
        &source,
        now,
        StatusCode::OK,
        Verdict::Accepted,
        ("accepted", String::new()),
    );
    record.dedupe_key = Some(dedupe_key);
    record.event_type = event_type;
    record.msg_id = messages.first().map(|new| new.message.id.clone());
    let window = source_type.options().dedupe_window;
    let dedupe_since = (!window.is_zero()).then(|| now - chrono_duration(window));
    let stored = store(state, record, dedupe_since, messages).await?;
    if stored.verdict == Verdict::Accepted {
        state.queued();
    }
    Ok(axum::Json(json!({ "id": stored.id, "verdict": stored.verdict.as_str() })).into_response())
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Stores the request with its forwarding messages and tells live streams.
async fn store(
    state: &AppState,
    request: IngestRequest,
    dedupe_since: Option<DateTime<Utc>>,
    messages: Vec<NewMessage>,
) -> Result<hookline_core::ingest::IngestedRequest, ApiError> {
    let stored = state
        .store
        .ingest(NewIngestRequest {
            request,
            dedupe_since,
            messages,
        })
        .await?;
    state.ingested.notify_waiters();
    Ok(stored)
}

/// The messages that forward an accepted request: one to the source's own endpoints, and
/// one into the `forwardToApp` application when the source names one and the body is a
/// JSON object (the sending API's payloads are).
async fn forwards(
    state: &AppState,
    source: &Source,
    source_type: &SourceType,
    received: &Received,
    checked: &Checked,
    payload: String,
    now: DateTime<Utc>,
) -> Result<Vec<NewMessage>, ApiError> {
    let options = source_type.options();
    let headers = received
        .headers
        .iter()
        .filter(|(name, _)| {
            name == header::CONTENT_TYPE.as_str() || options.forward_headers.contains(name)
        })
        .cloned()
        .collect();
    let event_type = checked
        .event_type
        .clone()
        .unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_owned());
    let mut messages = Vec::with_capacity(2);
    if let Some(app_key) = &options.forward_to_app {
        match state.store.get_app(app_key).await {
            Ok(app) if payload.trim_start().starts_with('{') => messages.push(NewMessage {
                message: Message {
                    id: MessageId::new_at(now),
                    app_id: app.id,
                    event_id: None,
                    event_type: event_type.clone(),
                    payload: Some(payload.clone()),
                    channels: None,
                    headers: Default::default(),
                    created_at: now,
                },
                only_endpoint: None,
                idempotency: None,
            }),
            Ok(_) => {
                tracing::warn!(source_id = %source.id, "body is not a JSON object; not sent to forwardToApp")
            }
            Err(hookline_core::Error::NotFound(_)) => {
                tracing::warn!(source_id = %source.id, app = %app_key, "forwardToApp names no application")
            }
            Err(error) => return Err(error.into()),
        }
    }
    messages.insert(
        0,
        NewMessage {
            message: Message {
                id: MessageId::new_at(now),
                app_id: source.app_id.clone(),
                event_id: None,
                event_type,
                payload: Some(payload),
                channels: None,
                headers,
                created_at: now,
            },
            only_endpoint: None,
            idempotency: None,
        },
    );
    Ok(messages)
}

/// Parsed source types, so a request does not decode its source's secrets again. Entries
/// are keyed by source id and replaced when the source's `updated_at` changes.
#[derive(Debug)]
pub struct SourceTypes(Memo<String, Parsed>);

/// A source's parsed type and the `updated_at` of the source it was parsed from.
type Parsed = (DateTime<Utc>, Arc<SourceType>);

/// Most sources kept parsed.
const MAX_CACHED: usize = 4096;

impl Default for SourceTypes {
    fn default() -> Self {
        SourceTypes(Memo::new(MAX_CACHED))
    }
}

impl SourceTypes {
    /// The parsed type of `source`.
    pub fn get(&self, source: &Source) -> Result<Arc<SourceType>, ApiError> {
        if let Some((updated_at, parsed)) = self.0.get(source.id.as_str())
            && updated_at == source.updated_at
        {
            return Ok(parsed);
        }
        let parsed =
            SourceType::parse(&source.source_type, Some(&source.config)).map_err(|error| {
                ApiError::Internal(format!(
                    "stored configuration of source {} is invalid: {}",
                    source.id, error.message
                ))
            })?;
        let parsed = Arc::new(parsed);
        self.0.insert(
            source.id.to_string(),
            (source.updated_at, Arc::clone(&parsed)),
        );
        Ok(parsed)
    }
}
