//! `/in/{token}[/…]`: where providers' webhooks arrive.
//!
//! The route only reads the request and calls `hookline_receive::receive`, which judges it
//! on the exact bytes received; what the verdict says is stored, accepted or not, in one
//! transaction with the messages that forward it. The answer comes after the commit and
//! before any forwarding, so a slow destination never slows the provider and nothing
//! answered `200` can be lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::{DateTime, Utc};
use hookline_core::Code;
use hookline_core::Store;
use hookline_core::id::AppId;
use hookline_core::ingest::{IngestedRequest, Source, Verdict as Logged};
use hookline_core::memo::Memo;
use hookline_engine::Reservation;
use hookline_receive::SourceType;
use hookline_receive::pipeline::{self, Accepted, Keep, Received, Refusal, Verdict};
use serde_json::json;

use crate::AppState;
use crate::error::{self, ApiError, error_response};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/in/{token}", any(receive))
        .route("/in/{token}/{*rest}", any(receive))
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

/// Reads the request, has the pipeline judge it, stores what it says in one transaction,
/// and answers.
async fn receive_inner(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let (parts, body) = request.into_parts();
    let (token, path) = split_path(parts.uri.path());
    let Some(source) = state.sources.find(state.store.as_ref(), token, now).await? else {
        return Ok(source_not_found());
    };
    tracing::Span::current().record("source_id", source.id.as_str());
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
    let verdict = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            received.body = bytes.to_vec();
            judge(state, &source_type, &received, now.timestamp()).await
        }
        Err(error) if is_over_limit(&error) => Verdict::Refused(Refusal::too_large(limit)),
        // The client broke off or framed the body wrongly: not a body too large.
        Err(error) => Verdict::Refused(Refusal {
            code: Code::GenericError,
            reason: format!("the body could not be read: {error}"),
        }),
    };
    let status = match &verdict {
        Verdict::Refused(refusal) => error::status(refusal.code),
        Verdict::Challenge(_) | Verdict::Accepted(_) => StatusCode::OK,
    };
    let forward_to = match &verdict {
        Verdict::Accepted(accepted) => forward_app(state, &source, accepted, &source_type).await?,
        _ => None,
    };
    let mut record = verdict.record(
        &source,
        received,
        status.as_u16(),
        forward_to,
        &state.config.keep,
        now,
    );
    // The forwarding messages' deliveries go to this node's worker as they are created,
    // where it has room, as a create's do (`api::message`).
    let mut reserved: Option<Reservation> = None;
    for message in &mut record.messages {
        let Some(room) = state.reserve(&message.message.app_id) else {
            break;
        };
        message.lease = Some(room.lease());
        match &mut reserved {
            Some(reserved) => reserved.merge(room),
            None => reserved = Some(room),
        }
    }
    let store = Arc::clone(&state.store);
    let write = async move { store.ingest(record).await };
    let stored = match state.write_and_hand(reserved, write, |s| &s.leased).await {
        Ok(stored) => stored,
        // Deleted since it was found (on another node, or while this request was read).
        Err(hookline_core::Error::NotFound("source")) => return Ok(source_not_found()),
        Err(error) => return Err(error.into()),
    };
    hookline_core::metrics::metrics().record_inbound(&source.source_type, stored.verdict.as_str());
    note_dropped(&source, &stored, &state.config.keep);
    if stored.logged {
        state.ingested.notify_waiters();
    }
    Ok(match verdict {
        Verdict::Refused(refusal) => error_response(refusal.code, &refusal.reason),
        Verdict::Challenge(challenge) => {
            axum::Json(json!({ "challenge": challenge })).into_response()
        }
        Verdict::Accepted(accepted) => {
            if stored.queued > 0 {
                state.queued();
            } else if stored.verdict == Logged::Accepted {
                state.messages.notify_waiters();
            }
            // Duplicates too: the first may have been stored before a crash kept it from
            // the tracker, and the provider's retry is then all there is. The tracker
            // keeps every observation on the job's timeline and emits each event once.
            // Should the tracker fail, the provider is asked to try again.
            state
                .tracker
                .offer_webhook(&source.source_type, accepted.payload.as_bytes())
                .await?;
            axum::Json(json!({ "id": stored.id, "verdict": stored.verdict.as_str() }))
                .into_response()
        }
    })
}

fn source_not_found() -> Response {
    error_response(
        Code::SourceNotFound,
        "no source has this ingest token (it may have been rotated out)",
    )
}

/// Has the pipeline judge `received`, with Google's key set for the types that check
/// tokens against it. Without a key set (it cannot be fetched) the request is refused as
/// `unavailable`, a 503 that Pub/Sub retries.
async fn judge(
    state: &AppState,
    source_type: &SourceType,
    received: &Received,
    now: i64,
) -> Verdict {
    if !source_type.needs_keys() {
        return pipeline::receive(source_type, &received.incoming(), None, now);
    }
    let kid = hookline_signature::oidc::token_key_id(&received.headers);
    match state.google_keys.for_kid(kid.as_deref()).await {
        Ok(keys) => pipeline::receive(source_type, &received.incoming(), Some(&keys), now),
        Err(unavailable) => Verdict::Refused(Refusal {
            code: Code::Unavailable,
            reason: unavailable.to_string(),
        }),
    }
}

/// Says in the server's log when a source's refused requests start going unlogged (once
/// per run of them, not once each: they come in floods) and when a logged one follows
/// skipped ones. The request log says it too, on that next entry (`droppedBefore`).
fn note_dropped(source: &Source, stored: &IngestedRequest, keep: &Keep) {
    let Some(cap) = keep.refused_cap else {
        return;
    };
    if !stored.logged && stored.dropped == 1 {
        tracing::warn!(
            source_id = %source.id,
            per_window = cap.per_window,
            window_secs = cap.window.as_secs(),
            "request log: this source's refused requests are over the cap; the next ones \
             are answered but not logged until the window ends"
        );
    } else if stored.logged && stored.dropped > 0 {
        tracing::warn!(
            source_id = %source.id,
            dropped = stored.dropped,
            "request log: refused requests over the cap were answered but not logged"
        );
    }
}

/// Whether reading a body failed because it is longer than the limit.
fn is_over_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The application named by the source's `forwardToApp`, if it still exists and the body
/// is a JSON object (the sending API's payloads are).
async fn forward_app(
    state: &AppState,
    source: &Source,
    accepted: &Accepted,
    source_type: &SourceType,
) -> Result<Option<AppId>, ApiError> {
    let Some(app_key) = &source_type.options().forward_to_app else {
        return Ok(None);
    };
    if accepted.forward_to_app.is_none() {
        tracing::warn!(source_id = %source.id, "body is not a JSON object; not sent to forwardToApp");
        return Ok(None);
    }
    match state.store.get_app(app_key).await {
        Ok(app) => Ok(Some(app.id)),
        Err(hookline_core::Error::NotFound(_)) => {
            tracing::warn!(source_id = %source.id, app = %app_key, "forwardToApp names no application");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// Sources found by their ingest tokens, kept for [`SOURCE_KEPT_FOR`] so that a request
/// does not read its source's row (a round trip to PostgreSQL) and open its sealed
/// secrets. This node's changes to a source forget every kept one at once; another
/// node's are seen within [`SOURCE_KEPT_FOR`]. Each request's write still finds its
/// source's row, so a source deleted meanwhile logs nothing more; a rotated-out token
/// is checked against its grace period at every request.
#[derive(Debug)]
pub struct Sources {
    kept: Memo<String, Kept>,
    /// Moved on by every change: a source read before it is not kept after it.
    generation: AtomicU64,
}

/// A source, when it was read and in which generation.
type Kept = (Instant, u64, Arc<Source>);

/// How long a source read by its token is kept.
pub const SOURCE_KEPT_FOR: Duration = Duration::from_secs(1);

impl Default for Sources {
    fn default() -> Self {
        Sources {
            kept: Memo::new(MAX_CACHED),
            generation: AtomicU64::new(0),
        }
    }
}

impl Sources {
    /// The source whose ingest URL `token` opens at `now`.
    pub async fn find(
        &self,
        store: &dyn Store,
        token: &str,
        now: DateTime<Utc>,
    ) -> hookline_core::Result<Option<Arc<Source>>> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((read_at, kept_in, source)) = self.kept.get(token)
            && kept_in == generation
            && read_at.elapsed() < SOURCE_KEPT_FOR
            && source.answers_to(token, now)
        {
            return Ok(Some(source));
        }
        let read_at = Instant::now();
        let Some(source) = store.find_source_by_token(token, now).await? else {
            return Ok(None);
        };
        let source = Arc::new(source);
        self.kept
            .insert(token.to_owned(), (read_at, generation, Arc::clone(&source)));
        Ok(Some(source))
    }

    /// Forgets every source kept, and any being read: one was changed or deleted.
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.kept.clear();
    }
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
