//! A real SQLite store, a real engine and real HTTP receivers on loopback.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hookline_core::SharedClock;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::{Application, Attempt, Destination, Endpoint, EndpointSecret, Message};
use hookline_core::page::{ListQuery, Order};
use hookline_core::retry::RetryPolicy;
use hookline_core::store::{AttemptFilter, NewMessage};
use hookline_core::store::{DeliveryQueue, MessageStore, ResourceStore};
use hookline_engine::{Engine, EngineConfig};
use hookline_signature::{Keyset, Scheme, VerifyOptions};
use hookline_store_sqlite::SqliteStore;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A fresh store in a temporary directory, with one application.
pub struct World {
    pub store: Arc<SqliteStore>,
    pub app: Application,
    /// The clock engines of this world read.
    pub clock: SharedClock,
    _dir: tempfile::TempDir,
}

impl World {
    /// A world on the system clock.
    pub async fn new() -> Self {
        Self::with_clock(hookline_core::clock::system()).await
    }

    /// A world whose engines read `clock`.
    pub async fn with_clock(clock: SharedClock) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("hookline.db"))
            .await
            .expect("open store");
        let app = new_app(&store, &clock, "test app", Some("app-uid".into())).await;
        World {
            store: Arc::new(store),
            app,
            clock,
            _dir: dir,
        }
    }

    /// Creates another application in this world's store (another tenant).
    pub async fn another_app(&self, name: &str) -> Application {
        new_app(&self.store, &self.clock, name, None).await
    }

    /// Creates an endpoint at `url` with one fresh secret, after `tweak`.
    pub async fn endpoint(&self, url: &str, tweak: impl FnOnce(&mut Endpoint)) -> Endpoint {
        self.endpoint_in(&self.app, url, tweak).await
    }

    /// Creates an endpoint of `app` at `url` with one fresh secret, after `tweak`.
    pub async fn endpoint_in(
        &self,
        app: &Application,
        url: &str,
        tweak: impl FnOnce(&mut Endpoint),
    ) -> Endpoint {
        let now = self.clock.now();
        let mut endpoint = Endpoint {
            id: EndpointId::new(),
            app_id: app.id.clone(),
            uid: Some(format!("ep-{:08x}", rand::random::<u32>())),
            url: url.to_owned(),
            description: String::new(),
            disabled: false,
            throttle_rate: None,
            event_types: None,
            channels: None,
            metadata: BTreeMap::new(),
            headers: BTreeMap::new(),
            secrets: vec![EndpointSecret {
                key: secret(),
                expires_at: None,
            }],
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        tweak(&mut endpoint);
        self.store
            .create_endpoint(&endpoint)
            .await
            .expect("create endpoint");
        endpoint
    }

    /// Creates `count` endpoints at `receiver`'s paths `/0`, `/1`, ….
    pub async fn endpoints(&self, receiver: &Receiver, count: usize) -> Vec<Endpoint> {
        let mut endpoints = Vec::with_capacity(count);
        for n in 0..count {
            endpoints.push(self.endpoint(&receiver.url(&format!("/{n}")), |_| {}).await);
        }
        endpoints
    }

    /// Queues `count` messages at once, with payloads `{"n":0}`, `{"n":1}`, ….
    pub async fn messages(&self, count: usize) -> Vec<Message> {
        let creates =
            (0..count).map(|n| async move { self.message(&format!(r#"{{"n":{n}}}"#)).await });
        futures_util::future::join_all(creates).await
    }

    /// Queues a message with this exact payload text to every endpoint.
    pub async fn message(&self, payload: &str) -> Message {
        self.message_in(&self.app, payload).await
    }

    /// Queues a message of `app` with this exact payload text to every endpoint of `app`.
    pub async fn message_in(&self, app: &Application, payload: &str) -> Message {
        let message = Message {
            id: MessageId::new(),
            app_id: app.id.clone(),
            event_id: Some(format!("evt-{}", rand::random::<u32>())),
            event_type: "job.succeeded".into(),
            payload: Some(payload.to_owned()),
            channels: None,
            headers: Default::default(),
            created_at: self.clock.now(),
        };
        self.store
            .create_message(NewMessage {
                message: message.clone(),
                only_endpoint: None,
                idempotency: None,
                payload_expires_at: None,
                lease: None,
            })
            .await
            .expect("create message");
        message
    }

    pub async fn destination(&self, msg: &Message, endpoint: &Endpoint) -> Destination {
        self.store
            .get_destination(&msg.app_id, &msg.id, &endpoint.id)
            .await
            .expect("destination")
    }

    pub async fn reload(&self, endpoint: &Endpoint) -> Endpoint {
        self.store
            .get_endpoint(&self.app.id, endpoint.id.as_str())
            .await
            .expect("endpoint")
    }

    /// Attempts of `msg`, oldest first.
    pub async fn attempts(&self, msg: &Message) -> Vec<Attempt> {
        let filter = AttemptFilter {
            msg_id: Some(msg.id.clone()),
            ..AttemptFilter::default()
        };
        self.store
            .list_attempts(
                &msg.app_id,
                &filter,
                &ListQuery::first(250, Order::Ascending),
            )
            .await
            .expect("attempts")
            .data
    }

    /// Starts an engine on this world's store.
    pub fn start(&self, config: EngineConfig) -> Running {
        self.start_on(self.store.clone(), config)
    }

    /// Starts an engine that takes its deliveries from `queue` (this world's store, as a
    /// fault-injecting wrapper sees it).
    pub fn start_on(&self, queue: Arc<dyn DeliveryQueue>, config: EngineConfig) -> Running {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let engine = Engine::new(queue, config, Arc::clone(&wake), Arc::clone(&self.clock));
        let handle = tokio::spawn(engine.run(shutdown.clone()));
        Running {
            wake,
            shutdown,
            handle,
        }
    }
}

/// Creates an application named `name` in `store`.
async fn new_app(
    store: &SqliteStore,
    clock: &SharedClock,
    name: &str,
    uid: Option<String>,
) -> Application {
    let now = clock.now();
    let app = Application {
        id: AppId::new(),
        uid,
        name: name.into(),
        throttle_rate: None,
        metadata: BTreeMap::new(),
        created_at: now,
        updated_at: now,
    };
    store.create_app(&app).await.expect("create app");
    app
}

/// A running engine.
pub struct Running {
    pub wake: Arc<Notify>,
    pub shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    /// Cancels and waits for the engine to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("engine stops in time")
            .expect("engine task");
    }
}

/// A fresh `whsec_` secret.
pub fn secret() -> String {
    hookline_signature::hmac_secret_from_bytes(&rand::random::<[u8; 24]>())
}

/// Settings for tests: loopback allowed, short timeout, fast retries, quick polling.
pub fn config(schedule_ms: &[u64]) -> EngineConfig {
    EngineConfig {
        attempt_timeout: Duration::from_secs(5),
        retry: RetryPolicy::new(
            schedule_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
        )
        .without_jitter(),
        allowed_subnets: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// Polls `probe` until it returns `Some`, or fails the test after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Verifies a Standard Webhooks request with `secret`.
pub fn verify(secret: &str, request: &Received) -> Result<(), hookline_signature::VerifyError> {
    let keys = Keyset::new(Scheme::Standard, [secret]).expect("secret");
    keys.verify(&request.headers, &request.body, VerifyOptions::default())
        .map(|_| ())
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: b"ok".to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug)]
struct ReceiverState {
    script: Mutex<VecDeque<Reply>>,
    otherwise: Reply,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// An HTTP server on 127.0.0.1 that answers with the scripted replies in turn, then with
/// a default one, and records every request.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start(script: Vec<Reply>, otherwise: Reply) -> Self {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.into()),
            otherwise,
            received: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { addr, state }
    }

    /// Answers every request with `reply`.
    pub async fn always(reply: Reply) -> Self {
        Self::start(Vec::new(), reply).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// The most requests this receiver was handling at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }
}

async fn answer(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    state.received.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
    });
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.otherwise.clone());
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = (
        StatusCode::from_u16(reply.status).expect("status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

/// How a [`Hostile`] receiver misbehaves once it has read a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Reads the request and never answers, holding the connection open.
    SlowHeaders,
    /// Answers `200` with a chunked body that never ends.
    EndlessBody,
    /// Sends part of the status line and headers, then resets the connection.
    ResetMidResponse,
    /// Answers `200` with a body of [`HUGE_BODY`] bytes.
    HugeBody,
    /// Speaks no TLS: answers a TLS client hello with plain-text garbage, then closes.
    TlsGarbage,
    /// Speaks no TLS: closes the connection as soon as it is accepted.
    TlsClose,
    /// Sends a status line, then header lines forever.
    EndlessHeaders,
    /// Answers `200` and then trickles its body, a byte at a time, never finishing.
    TrickleBody,
}

/// The body size of [`Misbehaviour::HugeBody`]: 100 MB.
pub const HUGE_BODY: usize = 100 * 1024 * 1024;

#[derive(Debug, Default)]
struct HostileState {
    connections: AtomicUsize,
    /// Body bytes written to the client, over all connections.
    written: AtomicUsize,
    /// When the last connection ended (the client went away, or we closed it).
    ended: Mutex<Option<Instant>>,
}

/// A raw TCP server on 127.0.0.1 that misbehaves in a way no well-behaved HTTP server
/// (axum included) can be made to: each connection gets the same [`Misbehaviour`].
#[derive(Debug, Clone)]
pub struct Hostile {
    pub addr: SocketAddr,
    state: Arc<HostileState>,
}

impl Hostile {
    pub async fn start(misbehaviour: Misbehaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(HostileState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    misbehave(stream, misbehaviour, &state).await;
                    *state.ended.lock().unwrap() = Some(Instant::now());
                });
            }
        });
        Hostile { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An `https` URL to this plain-TCP server.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Body bytes the client took before it went away.
    pub fn written(&self) -> usize {
        self.state.written.load(Ordering::SeqCst)
    }

    /// When the last connection ended, if one has.
    pub fn ended(&self) -> Option<Instant> {
        *self.state.ended.lock().unwrap()
    }
}

async fn misbehave(mut stream: tokio::net::TcpStream, how: Misbehaviour, state: &HostileState) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if how == Misbehaviour::TlsClose {
        return;
    }
    if how == Misbehaviour::TlsGarbage {
        // Whatever the client hello says, the answer is not TLS.
        let mut hello = [0u8; 512];
        let _ = stream.read(&mut hello).await;
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS\r\n")
            .await;
        return;
    }
    if !read_request(&mut stream).await {
        return;
    }
    match how {
        Misbehaviour::SlowHeaders => {
            // Hold the connection until the client gives up on it.
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        }
        Misbehaviour::ResetMidResponse => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/pl")
                .await;
            let _ = stream.flush().await;
            // Closing with a zero linger sends RST rather than FIN. (Deprecated because a
            // non-zero linger blocks the thread on drop; a zero one does not.)
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        Misbehaviour::EndlessBody => {
            let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return;
            }
            let chunk = format!("4000\r\n{}\r\n", "y".repeat(0x4000));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {
                state.written.fetch_add(0x4000, Ordering::SeqCst);
            }
        }
        Misbehaviour::HugeBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {HUGE_BODY}\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b'z'; 64 * 1024];
            let mut left = HUGE_BODY;
            while left > 0 {
                let n = left.min(block.len());
                if stream.write_all(&block[..n]).await.is_err() {
                    return;
                }
                state.written.fetch_add(n, Ordering::SeqCst);
                left -= n;
            }
            // All sent: wait for the client to close.
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        }
        Misbehaviour::EndlessHeaders => {
            if stream.write_all(b"HTTP/1.1 200 OK\r\n").await.is_err() {
                return;
            }
            let line = format!("x-padding: {}\r\n", "p".repeat(1000));
            while stream.write_all(line.as_bytes()).await.is_ok() {
                state.written.fetch_add(line.len(), Ordering::SeqCst);
            }
        }
        Misbehaviour::TrickleBody => {
            let head =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\n";
            if stream.write_all(head).await.is_err() {
                return;
            }
            loop {
                if stream.write_all(b"t").await.is_err() {
                    return;
                }
                state.written.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Misbehaviour::TlsGarbage | Misbehaviour::TlsClose => unreachable!("handled above"),
    }
}

/// Reads one request, head and `content-length` body; `false` if the client went away.
async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            return true;
        }
    }
}

/// This process's resident memory, in bytes (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}
