//! Hookline's HTTP API on axum: the sending API of the open-source Svix server ([`api`])
//! and the Svix Ingest API with the `/in/{token}` route providers post to ([`ingest`]), so
//! the official Svix SDKs work against Hookline with only the server URL changed.
//!
//! [`app`] builds the whole router, middleware included; the binary serves it and the
//! tests call it in process. Handlers are thin: extractors authenticate ([`auth`]) and
//! validate ([`extract`], [`validate`]); handlers call the domain (the rules of
//! `hookline-core`, the receiving pipeline of `hookline-receive`) and the [`Store`], and
//! convert models into `…Out` bodies; every failure becomes a JSON error, with its status
//! chosen by code, in one place ([`error`]). Every handler reads the time from
//! [`AppState::clock`]. This crate knows no SQL, no provider rules and no delivery:
//! writes that queue deliveries commit them through the store and wake the engine
//! through [`AppState::wake`].

pub mod api;
pub mod auth;
mod console;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod ingest;
pub mod listener;
mod metrics;
pub mod openapi;
pub mod sse;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Response};
use axum::middleware::{self, Next};
use axum::routing::get;
use hookline_core::{SharedClock, Store};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ErrorReport;
use crate::idempotency::{Idempotency, InFlight};

pub use hookline_receive::pipeline::Keep;

/// Settings of the API. Its `Debug` form never shows the admin token or the JWT key.
#[derive(Clone)]
pub struct ApiConfig {
    /// The admin token in plain text (`HOOKLINE_ADMIN_TOKEN`), if configured. Compared by
    /// SHA-256 in constant time. Admin tokens stored in the database work as well.
    pub admin_token: Option<String>,
    /// The server's public base URL, e.g. `http://127.0.0.1:8071`, for console links.
    pub public_url: String,
    /// The largest request body accepted; larger ones get 413.
    pub max_payload_bytes: usize,
    /// How long answers to POSTs with an `idempotency-key` are replayed.
    pub idempotency_ttl: Duration,
    /// The HS256 key of Svix-style JWT bearer tokens (`HOOKLINE_JWT_SECRET`), if they are
    /// accepted. Its bytes are the key, as the Svix server uses its `jwt_secret`.
    pub jwt_secret: Option<String>,
    /// Endpoint URLs must be `https://` (`HOOKLINE_HTTPS_ONLY`): creating or changing an
    /// endpoint to an `http://` URL is refused. The engine refuses to deliver to one too.
    pub https_only: bool,
    /// What the server keeps: how much of refused requests the log holds, and how long
    /// message payloads stay (a message's `payloadRetentionPeriod` overrides it).
    pub keep: Keep,
    /// Where Google publishes the keys of the tokens `google-pubsub` sources check
    /// (`HOOKLINE_GOOGLE_JWKS_URL`).
    pub google_jwks_url: String,
    /// Serve the console's files from this folder instead of the embedded ones
    /// (`HOOKLINE_CONSOLE_DIR`, for work on the console).
    pub console_dir: Option<std::path::PathBuf>,
    /// A bearer token that may read `/metrics` and nothing else (`HOOKLINE_METRICS_TOKEN`).
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("public_url", &self.public_url)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("https_only", &self.https_only)
            .field("keep", &self.keep)
            .field("google_jwks_url", &self.google_jwks_url)
            .field("console_dir", &self.console_dir)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            admin_token: None,
            public_url: "http://127.0.0.1:8071".to_owned(),
            max_payload_bytes: 1 << 20,
            idempotency_ttl: Duration::from_secs(12 * 3600),
            jwt_secret: None,
            https_only: false,
            keep: Keep::default(),
            google_jwks_url: hookline_signature::oidc::GOOGLE_JWKS_URL.to_owned(),
            console_dir: None,
            metrics_token: None,
        }
    }
}

/// What every handler shares. Cloned for every request (by each extractor and layer that
/// holds it), so it is one pointer to [`Shared`]: one reference count to move, not one per
/// part.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    /// Notified after every write that queues deliveries, so the engine looks at once.
    /// Call [`AppState::queued`] rather than notifying it directly.
    pub wake: Arc<tokio::sync::Notify>,
    pub config: Arc<ApiConfig>,
    /// Notified after every request stored by `/in/…`, so live streams look at once.
    pub ingested: Arc<tokio::sync::Notify>,
    /// Notified after every message created, for live message streams.
    pub messages: Arc<tokio::sync::Notify>,
    /// Sources read by their ingest tokens, kept for a moment.
    pub sources: Arc<ingest::receive::Sources>,
    /// Parsed source types, by source.
    pub source_types: Arc<ingest::receive::SourceTypes>,
    /// Google's signing keys, fetched when a `google-pubsub` source first needs them.
    pub google_keys: Arc<ingest::keys::GoogleKeys>,
    /// Where every handler reads the time.
    pub clock: SharedClock,
    /// The job tracker: jobs are registered, observed and cancelled through it.
    pub tracker: Arc<hookline_engine::track::Tracker>,
    /// Which applications forward a source's requests, as far as asked.
    pub forwarding: Arc<api::ForwardingApps>,
    /// This node's delivery worker, when it has one: a message created here has its
    /// deliveries leased to it and handed over, without waiting for a claim.
    pub handoff: Option<Arc<hookline_engine::Handoff>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        wake: Arc<tokio::sync::Notify>,
        config: Arc<ApiConfig>,
        clock: SharedClock,
    ) -> Self {
        let tracker = Arc::new(hookline_engine::track::Tracker::new(
            store.clone(),
            store.clone(),
            hookline_engine::track::TrackConfig::default(),
            Arc::clone(&wake),
            Arc::clone(&clock),
        ));
        let google_keys = Arc::new(ingest::keys::GoogleKeys::new(&config.google_jwks_url));
        AppState(Arc::new(Shared {
            store,
            wake,
            config,
            ingested: Arc::default(),
            messages: Arc::default(),
            sources: Arc::default(),
            source_types: Arc::default(),
            google_keys,
            clock,
            tracker,
            forwarding: Arc::default(),
            handoff: None,
        }))
    }

    /// This state handing the deliveries of the messages it creates to `handoff`, the
    /// worker of this node.
    pub fn with_handoff(mut self, handoff: Arc<hookline_engine::Handoff>) -> Self {
        Arc::make_mut(&mut self.0).handoff = Some(handoff);
        self
    }

    /// This state with `tracker` (configured with the providers' access) in place of the
    /// default one, which can make no provider calls.
    pub fn with_tracker(mut self, tracker: Arc<hookline_engine::track::Tracker>) -> Self {
        Arc::make_mut(&mut self.0).tracker = tracker;
        self
    }

    /// Room in this node's worker for the deliveries of a message of `app` about to be
    /// created, if it has a worker that is not behind with the app's deliveries: the
    /// message is then created under its lease.
    pub fn reserve(&self, app: &hookline_core::id::AppId) -> Option<hookline_engine::Reservation> {
        self.handoff.as_ref()?.reserve(app)
    }

    /// Awaits `write`, a store call creating messages under the lease of `reserved`, and
    /// hands this node's worker the deliveries it leased (`leased` finds them in its
    /// answer). With a reservation the two run in a task of their own, so that a client
    /// going away mid-write cannot leave the leased deliveries waiting out their lease.
    pub async fn write_and_hand<T: Send + 'static>(
        &self,
        reserved: Option<hookline_engine::Reservation>,
        write: impl Future<Output = hookline_core::Result<T>> + Send + 'static,
        leased: fn(&T) -> &[hookline_core::store::DeliveryJob],
    ) -> hookline_core::Result<T> {
        let (Some(reserved), Some(handoff)) = (reserved, self.handoff.clone()) else {
            return write.await;
        };
        tokio::spawn(async move {
            let written = write.await?;
            handoff.hand(reserved, leased(&written));
            Ok(written)
        })
        .await
        .map_err(hookline_core::Error::storage)?
    }

    /// Tells the delivery engine and live message streams that messages or deliveries
    /// were just committed.
    pub fn queued(&self) {
        self.wake.notify_one();
        self.messages.notify_waiters();
    }
}

/// The whole HTTP API: `/api/v1/…`, `/ingest/api/v1/…`, `/in/…`, `/healthz`, `/console`, and the
/// middleware (request logging, panic recovery, body limit, JSON errors, idempotency).
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_payload_bytes;
    let idempotency = Idempotency {
        state: state.clone(),
        in_flight: Arc::new(InFlight::default()),
    };
    let (documented, document) = OpenApiRouter::with_openapi(openapi::base())
        .nest("/api/v1", api::router())
        .nest("/ingest/api/v1", ingest::router())
        .split_for_parts();
    let document = openapi::Document::new(&openapi::finish(document));
    let routes = Router::new()
        .merge(documented)
        .route(
            "/api/v1/openapi.json",
            get(openapi::serve).with_state(document),
        )
        .route("/healthz", get(api::health::healthz))
        .route("/metrics", get(metrics::metrics))
        .merge(console::router())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            idempotency,
            idempotency::middleware,
        ))
        .layer(middleware::from_fn(extract::refuse_nul_in_uri))
        // tower-http enforces the limit; axum's own default must not cap it lower.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(middleware::from_fn_with_state(limit, error::json_errors));
    // `/in/…` takes any method and path, limits bodies per source, and logs what it
    // refuses itself, so it stays outside the API's body limit and error middleware.
    served(Router::new().merge(routes).merge(ingest::receive::router())).with_state(state)
}

/// What a worker node (`--role worker`) serves: `/healthz` for probes and `/metrics`
/// (its deliveries and polls are counted where they happen), nothing of the API.
pub fn operations(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(api::health::healthz))
        .route("/metrics", get(metrics::metrics))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed);
    served(routes).with_state(state)
}

/// `routes` with what every answer goes through: panic recovery, the request log and the
/// request id.
fn served(routes: Router<AppState>) -> Router<AppState> {
    routes
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(middleware::from_fn(request_id))
}

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id, as [`request_id`] chose it.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Middleware: gives every request an id, the one the client sent (`x-request-id`, or
/// the `svix-req-id` the Svix SDKs send) when it is usable, else a new one; the request
/// log line carries it, and so does the response, in `x-request-id`. The request's own
/// headers are left as they came: `/in/…` stores them as the provider sent them.
async fn request_id(mut request: Request, next: Next) -> axum::response::Response {
    let given = [REQUEST_ID, "svix-req-id"].iter().find_map(|name| {
        request
            .headers()
            .get(*name)
            .filter(|value| {
                let bytes = value.as_bytes();
                !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
            })
            .cloned()
    });
    let id = given.unwrap_or_else(|| {
        let id = format!("req_{}", hookline_core::id::random_base62(20));
        HeaderValue::from_str(&id).expect("base62 is a valid header value")
    });
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

fn request_span(request: &Request) -> Span {
    let path = request.uri().path();
    // An ingest URL's token is a credential: it is not written to logs.
    let path = match path.strip_prefix("/in/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, sub)) => format!("/in/[token]/{sub}"),
            None => "/in/[token]".to_owned(),
        },
        None => path.to_owned(),
    };
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.0.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %path,
        request_id = %request_id,
        app_id = tracing::field::Empty,
        msg_id = tracing::field::Empty,
        endpoint_id = tracing::field::Empty,
        source_id = tracing::field::Empty,
        job_id = tracing::field::Empty,
    );
    // The ids the path names (or uids); handlers record those they learn (a created
    // message's id, the source an ingest token belongs to) with `Span::current()`.
    // Not for `/in/…`: anyone may post there, under any path.
    let segments: Vec<&str> = if path.starts_with("/in/") {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    for pair in segments.windows(2) {
        let field = match pair[0] {
            "app" => "app_id",
            "msg" => "msg_id",
            "endpoint" => "endpoint_id",
            "source" => "source_id",
            "job" => "job_id",
            _ => continue,
        };
        if !pair[1].is_empty() {
            span.record(field, pair[1]);
        }
    }
    span
}

/// Logs each answer once, with the cause of a server error when there is one.
fn log_response<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    match response.extensions().get::<ErrorReport>() {
        Some(report) => tracing::error!(status, latency_ms, error = %report.0, "request failed"),
        None => tracing::info!(status, latency_ms, "request finished"),
    }
}
