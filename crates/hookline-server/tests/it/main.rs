//! The HTTP API driven in process (`tower::ServiceExt::oneshot`) against a real SQLite
//! store in a temporary directory.

mod application;
mod attempt;
mod auth;
mod endpoint;
mod errors;
mod event_type;
mod health;
mod idempotency;
mod message;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use hookline_core::id::AttemptId;
use hookline_core::model::{Attempt, MessageStatus};
use hookline_core::store::AttemptOutcome;
use hookline_core::{SharedClock, Store};
use hookline_server::{ApiConfig, AppState, app};
use hookline_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The admin token every test app is configured with.
pub const ADMIN: &str = "test-admin-token-0123456789";
/// The body limit of test apps: small, so 413 is cheap to reach.
pub const LIMIT: usize = 64 * 1024;

/// An API over a fresh database.
#[derive(Debug)]
pub struct TestApp {
    router: Router,
    pub store: Arc<dyn Store>,
    pub wake: Arc<tokio::sync::Notify>,
    pub clock: SharedClock,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// An API on the system clock.
    pub async fn new() -> Self {
        Self::with_clock(hookline_core::clock::system()).await
    }

    /// An API reading the time from `clock`.
    pub async fn with_clock(clock: SharedClock) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("hookline.db"))
            .await
            .expect("open store");
        let store: Arc<dyn Store> = Arc::new(store);
        let wake = Arc::new(tokio::sync::Notify::new());
        let state = AppState::new(
            Arc::clone(&store),
            Arc::clone(&wake),
            Arc::new(ApiConfig {
                admin_token: Some(ADMIN.to_owned()),
                public_url: "http://hookline.test:8071/".to_owned(),
                max_payload_bytes: LIMIT,
                idempotency_ttl: Duration::from_secs(12 * 3600),
                ..ApiConfig::default()
            }),
            Arc::clone(&clock),
        );
        TestApp {
            router: app(state),
            store,
            wake,
            clock,
            _dir: dir,
        }
    }

    /// Sends a raw request; answers status, headers and body bytes.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, body)
    }

    /// Sends a JSON request with `token`; answers status and JSON body (`Null` if empty).
    /// Every error body must be JSON; this checks it.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let (status, headers, bytes) = self.send(request).await;
        json_of(status, &headers, &bytes)
    }

    /// [`TestApp::call_as`] with the admin token.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(Some(ADMIN), method, uri, body).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(body)).await
    }

    /// Creates an application; answers its id.
    pub async fn create_app(&self, name: &str) -> String {
        let (status, app) = self.post("/api/v1/app", json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{app}");
        app["id"].as_str().expect("id").to_owned()
    }

    /// Creates an endpoint from `body`; answers its id.
    pub async fn create_endpoint(&self, app: &str, body: Value) -> String {
        let (status, endpoint) = self
            .post(&format!("/api/v1/app/{app}/endpoint"), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
        endpoint["id"].as_str().expect("id").to_owned()
    }

    /// Sends a message; answers its id.
    pub async fn send_message(&self, app: &str, body: Value) -> String {
        let (status, message) = self.post(&format!("/api/v1/app/{app}/msg"), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{message}");
        message["id"].as_str().expect("id").to_owned()
    }

    /// Creates an event type.
    pub async fn create_event_type(&self, name: &str, schemas: Option<Value>) {
        let mut body = json!({"name": name, "description": format!("{name} happened")});
        if let Some(schemas) = schemas {
            body["schemas"] = schemas;
        }
        let (status, out) = self.post("/api/v1/event-type", body).await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
    }

    /// Stands in for the delivery engine: makes one attempt of every due delivery, each
    /// answered with `status_code`; failures are final (no retry scheduled).
    pub async fn deliver_all(&self, status_code: i16) -> Vec<AttemptId> {
        let now = self.clock.now();
        let jobs = self
            .store
            .claim_due("test-worker", now, Duration::from_secs(60), 100)
            .await
            .expect("claim");
        let success = (200..300).contains(&status_code);
        let status = if success {
            MessageStatus::Success
        } else {
            MessageStatus::Fail
        };
        let outcomes: Vec<AttemptOutcome> = jobs
            .into_iter()
            .map(|job| AttemptOutcome {
                attempt: Attempt {
                    id: AttemptId::new_at(now),
                    app_id: job.destination.app_id.clone(),
                    msg_id: job.destination.msg_id.clone(),
                    endpoint_id: job.destination.endpoint_id.clone(),
                    url: job.endpoint.url.clone(),
                    status,
                    response_status_code: status_code,
                    response: Some(format!("answer {status_code}")),
                    response_headers: vec![],
                    request_headers: Vec::new(),
                    response_duration_ms: 12,
                    trigger_type: job.destination.trigger,
                    error_kind: None,
                    created_at: now,
                },
                status,
                next_attempt: None,
                attempts: job.destination.attempts + 1,
                disable_endpoint: false,
                endpoint_failing: None,
                messages: Vec::new(),
            })
            .collect();
        let ids = outcomes.iter().map(|o| o.attempt.id.clone()).collect();
        self.store
            .record_outcomes(outcomes.into())
            .await
            .expect("record outcomes");
        ids
    }
}

/// Parses a response body as JSON, insisting that errors are JSON.
pub fn json_of(status: StatusCode, headers: &HeaderMap, bytes: &Bytes) -> (StatusCode, Value) {
    if bytes.is_empty() {
        assert!(
            status.is_success(),
            "error {status} with an empty body: errors must be JSON"
        );
        return (status, Value::Null);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{status} answered with content-type {content_type:?}: {}",
        String::from_utf8_lossy(bytes)
    );
    let value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {bytes:?}"));
    (status, value)
}

/// Asserts a `{code, detail}` error and answers its detail.
pub fn assert_error(
    (status, body): &(StatusCode, Value),
    expected: StatusCode,
    code: &str,
) -> String {
    assert_eq!(*status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    body["detail"]
        .as_str()
        .expect("detail is a string")
        .to_owned()
}

/// Asserts a 422 whose first item is at `loc`; answers its `msg`.
pub fn assert_invalid((status, body): &(StatusCode, Value), loc: &[&str]) -> String {
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let first = &body["detail"][0];
    assert_eq!(first["loc"], json!(loc), "{body}");
    assert!(
        first["type"].as_str().unwrap().starts_with("value_error"),
        "{body}"
    );
    first["msg"].as_str().expect("msg").to_owned()
}
