//! A local emulator of the AI providers' APIs (the real ones cannot be reached here): a
//! real HTTP server answering each path with the status object a test set for it, as the
//! provider documents it, after any scripted 429s and 500s. It checks the credential the
//! provider expects and records every call, with how many overlapped per path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A scripted answer, given before the path's object.
#[derive(Debug, Clone, Copy)]
pub enum Scripted {
    /// 429 with this `Retry-After` (seconds), if any.
    TooMany(Option<u64>),
    /// 500.
    Broken,
}

/// One call the emulator got.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub at: Instant,
    pub body: Vec<u8>,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    objects: HashMap<String, Value>,
    script: HashMap<String, VecDeque<Scripted>>,
    calls: Vec<Call>,
    in_flight: HashMap<String, usize>,
    most_in_flight: HashMap<String, usize>,
    delay: Duration,
}

#[derive(Clone)]
pub struct Emulator {
    /// `http://127.0.0.1:port`: the base URL is this plus the provider's prefix.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    /// The header and value every call must carry.
    auth: Arc<(String, String)>,
}

impl Emulator {
    /// Starts an emulator expecting `auth_header: auth_value` on every call.
    pub async fn start(auth_header: &str, auth_value: &str) -> Emulator {
        let emulator = Emulator {
            url: String::new(),
            inner: Arc::default(),
            auth: Arc::new((auth_header.to_owned(), auth_value.to_owned())),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(emulator.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Emulator { url, ..emulator }
    }

    /// OpenAI's API: Bearer key, base `/v1`.
    pub async fn openai() -> Emulator {
        Emulator::start("authorization", "Bearer sk-test-openai").await
    }

    /// Replicate's API: Bearer token, base `/v1`.
    pub async fn replicate() -> Emulator {
        Emulator::start("authorization", "Bearer r8-test-token").await
    }

    /// Anthropic's API: `x-api-key`, base without a prefix.
    pub async fn anthropic() -> Emulator {
        Emulator::start("x-api-key", "sk-ant-test").await
    }

    /// The node settings that point `family` (OPENAI, REPLICATE, …) at this emulator.
    pub fn env(
        &self,
        family: &str,
        prefix: &str,
        credential_var: &str,
        credential: &str,
    ) -> Vec<(String, String)> {
        vec![
            (
                format!("HOOKLINE_{family}_BASE_URL"),
                format!("{}{prefix}", self.url),
            ),
            (credential_var.to_owned(), credential.to_owned()),
            (
                format!("HOOKLINE_{family}_REQUESTS_PER_SECOND"),
                "1000".to_owned(),
            ),
        ]
    }

    /// What `path` answers from now on (after its script).
    pub fn set(&self, path: &str, object: Value) {
        self.inner
            .lock()
            .unwrap()
            .objects
            .insert(path.to_owned(), object);
    }

    /// Answers to give `path` before its object, in order.
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Scripted>) {
        self.inner
            .lock()
            .unwrap()
            .script
            .entry(path.to_owned())
            .or_default()
            .extend(answers);
    }

    /// How long every answer takes.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The calls to `path` so far.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// The most calls to one path that were in flight at once, over every path.
    pub fn most_overlapping(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.most_in_flight.values().copied().max().unwrap_or(0)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().unwrap().in_flight.values().sum()
    }
}

async fn answer(
    State(emulator): State<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let delay = {
        let mut inner = emulator.inner.lock().unwrap();
        let count = inner.in_flight.entry(path.clone()).or_default();
        *count += 1;
        let now = *count;
        let most = inner.most_in_flight.entry(path.clone()).or_default();
        *most = (*most).max(now);
        inner.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (auth_header, auth_value) = &*emulator.auth;
    let authorized = headers
        .get(auth_header.as_str())
        .is_some_and(|v| v.as_bytes() == auth_value.as_bytes());
    let mut inner = emulator.inner.lock().unwrap();
    *inner.in_flight.get_mut(&path).unwrap() -= 1;
    let response: (StatusCode, Vec<(String, String)>, String) = if !authorized {
        (
            StatusCode::UNAUTHORIZED,
            vec![],
            r#"{"error":{"message":"bad key"}}"#.into(),
        )
    } else if let Some(scripted) = inner.script.get_mut(&path).and_then(VecDeque::pop_front) {
        match scripted {
            Scripted::TooMany(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                after
                    .map(|secs| vec![("retry-after".to_owned(), secs.to_string())])
                    .unwrap_or_default(),
                r#"{"error":{"message":"rate limited"}}"#.into(),
            ),
            Scripted::Broken => (
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![],
                r#"{"error":{"message":"server error"}}"#.into(),
            ),
        }
    } else {
        match inner.objects.get(&path) {
            Some(object) => (StatusCode::OK, vec![], object.to_string()),
            None => (
                StatusCode::NOT_FOUND,
                vec![],
                r#"{"error":{"message":"no such object"}}"#.into(),
            ),
        }
    };
    inner.calls.push(Call {
        method: method.to_string(),
        path,
        at: Instant::now(),
        body: body.to_vec(),
        status: response.0.as_u16(),
    });
    let mut out = (response.0, response.2).into_response();
    out.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (name, value) in response.1 {
        out.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    out
}
