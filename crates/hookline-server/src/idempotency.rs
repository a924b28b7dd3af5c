//! `idempotency-key` on POST: a retried request gets the first answer again, byte for byte,
//! instead of doing the work twice.
//!
//! The key of a record is the SHA-256 of the caller's token hash, the client's key and the
//! full request URI, so two callers, or two URLs, never share a record. Only 2xx answers
//! are recorded, for [`ApiConfig::idempotency_ttl`](crate::ApiConfig), and the pending
//! placeholder of a job submission while it calls its provider. A message create
//! commits its record in the same transaction as the message (see [`IdempotencyKey`]);
//! other POSTs are recorded by this middleware after the handler answers. Identical
//! requests that arrive while the first is still running wait for it on this node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hookline_core::model::{IdempotencyRecord, IdempotentResponse};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{Caller, authenticate};
use crate::error::ApiError;

/// The longest `idempotency-key` honoured; longer keys are ignored.
const MAX_KEY_LEN: usize = 256;

/// The idempotency record key of the current request, for handlers that commit the
/// record themselves (a request extension).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: String,
    ttl: std::time::Duration,
}

impl IdempotencyKey {
    /// The key the answer is stored under.
    pub fn stored_key(&self) -> &str {
        &self.key
    }

    /// The record answering this request with `status` and `body`, kept from `now`.
    pub fn record(
        &self,
        status: StatusCode,
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            key: self.key.clone(),
            response: IdempotentResponse {
                status: status.as_u16(),
                body,
            },
            expires_at: now
                + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(12)),
        }
    }

    /// The placeholder that holds this key for `lasts` while the request calls out
    /// ([`IdempotentResponse::pending`]).
    pub fn pending(&self, now: DateTime<Utc>, lasts: std::time::Duration) -> IdempotencyRecord {
        IdempotencyRecord {
            key: self.key.clone(),
            response: IdempotentResponse::pending(),
            expires_at: now + chrono::Duration::from_std(lasts).unwrap_or(chrono::Duration::MAX),
        }
    }
}

/// Marks a response whose idempotency record the handler already committed.
#[derive(Debug, Clone, Copy)]
pub struct Recorded;

/// Marks an answer that holds a secret (an issued token, a signing key). It is answered
/// but never kept for replay: idempotency records are stored as they are, for hours, and a
/// secret must not sit there (tokens themselves are stored hashed, keys sealed). A retry
/// with the same key is carried out again.
#[derive(Debug, Clone, Copy)]
pub struct HoldsSecret;

/// A JSON answer that holds a secret ([`HoldsSecret`]).
#[derive(Debug)]
pub struct SecretJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for SecretJson<T> {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self.0).into_response();
        response.extensions_mut().insert(HoldsSecret);
        response
    }
}

/// Requests with an idempotency key now running on this node.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Held while a request with a given key runs; identical requests wait for it.
struct InFlightGuard {
    map: Arc<InFlight>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl InFlight {
    async fn enter(self: &Arc<Self>, key: &str) -> InFlightGuard {
        let lock = {
            let mut map = self.0.lock().expect("in-flight map");
            Arc::clone(map.entry(key.to_owned()).or_default())
        };
        let held = Arc::clone(&lock).lock_owned().await;
        InFlightGuard {
            map: Arc::clone(self),
            key: key.to_owned(),
            lock,
            _held: held,
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().expect("in-flight map");
        // The map, this guard and its lock hold three references; more means a request
        // is waiting, and it will remove the entry when it is done.
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::ptr_eq(lock, &self.lock) && Arc::strong_count(lock) <= 3)
        {
            map.remove(&self.key);
        }
    }
}

/// The state of the middleware.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub state: AppState,
    pub in_flight: Arc<InFlight>,
}

/// The record key for a caller, a client key and a request URI.
fn record_key(token_hash: &str, client_key: &str, uri: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [token_hash, client_key, uri] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The answer to a request whose commit found its key taken (`error`, an
/// [`IdempotencyConflict`](hookline_core::Code::IdempotencyConflict)): a request with the
/// same key was carried out first, on this node or another, so it is answered as that one
/// was.
pub async fn replay_first(
    state: &AppState,
    key: &IdempotencyKey,
    error: hookline_core::Error,
) -> Result<Response, ApiError> {
    match state
        .store
        .get_idempotent(key.stored_key(), state.clock.now())
        .await?
    {
        Some(stored) => {
            let mut response = replay(stored);
            response.extensions_mut().insert(Recorded);
            Ok(response)
        }
        None => Err(error.into()),
    }
}

pub fn replay(stored: IdempotentResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let has_body = !stored.body.is_empty();
    let mut response = (status, Body::from(stored.body)).into_response();
    if has_body {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

/// Middleware: replays or records answers to POSTs that carry an `idempotency-key`.
pub async fn middleware(
    State(idempotency): State<Idempotency>,
    mut request: Request,
    next: Next,
) -> Response {
    let client_key = match request.headers().get("idempotency-key") {
        Some(value) if request.method() == Method::POST => value.to_str().unwrap_or_default(),
        _ => return next.run(request).await,
    };
    if client_key.is_empty() || client_key.len() > MAX_KEY_LEN {
        return next.run(request).await;
    }
    let state = &idempotency.state;
    // Only an authenticated caller has records; the handler answers the others with 401.
    let caller: Caller = match authenticate(request.headers(), state).await {
        Ok(caller) => caller,
        Err(_) => return next.run(request).await,
    };
    let key = record_key(&caller.token_hash, client_key, &request.uri().to_string());
    request.extensions_mut().insert(caller);

    let _running = idempotency.in_flight.enter(&key).await;
    match state.store.get_idempotent(&key, state.clock.now()).await {
        Ok(Some(stored)) => return replay(stored),
        Ok(None) => {}
        Err(error) => return ApiError::from(error).into_response(),
    }
    let idempotency_key = IdempotencyKey {
        key,
        ttl: state.config.idempotency_ttl,
    };
    request.extensions_mut().insert(idempotency_key.clone());
    let response = next.run(request).await;
    let extensions = response.extensions();
    let kept_elsewhere = extensions.get::<Recorded>().is_some();
    if !response.status().is_success()
        || kept_elsewhere
        || extensions.get::<HoldsSecret>().is_some()
    {
        return response;
    }

    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return crate::error::server_error(format!("cannot buffer a response: {error}"));
        }
    };
    let record = idempotency_key.record(parts.status, bytes.to_vec(), state.clock.now());
    if let Err(error) = state.store.put_idempotent(&record).await {
        // The work is done; failing the request now would invite a duplicate retry.
        tracing::warn!(error = %error, "cannot store an idempotency record");
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_separate_callers_keys_and_uris() {
        let base = record_key("t", "k", "/api/v1/app");
        assert_eq!(base.len(), 64);
        assert_ne!(base, record_key("t2", "k", "/api/v1/app"));
        assert_ne!(base, record_key("t", "k2", "/api/v1/app"));
        assert_ne!(base, record_key("t", "k", "/api/v1/app?x=1"));
        // Lengths are part of the hash, so parts cannot slide into each other.
        assert_ne!(record_key("ab", "c", "/"), record_key("a", "bc", "/"));
    }

    #[tokio::test]
    async fn in_flight_entries_are_removed_when_no_one_waits() {
        let in_flight = Arc::new(InFlight::default());
        {
            let _first = in_flight.enter("k").await;
            assert_eq!(in_flight.0.lock().unwrap().len(), 1);
        }
        assert!(in_flight.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_second_request_waits_for_the_first() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.enter("k").await;
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move {
                let _second = in_flight.enter("k").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
        assert!(in_flight.0.lock().unwrap().is_empty());
    }
}
