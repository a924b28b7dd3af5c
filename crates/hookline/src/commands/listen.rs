//! `hookline listen` and `hookline tail`: follow a source's requests (or, with `--app`, an
//! application's messages) live from a Hookline server over its server-sent event streams.
//!
//! `listen` is a self-hosted tunnel: each accepted request is posted again to a local URL
//! with its method, path suffix, query, headers and body unchanged, so the local app's own
//! signature check passes; with `--app` it acts as a virtual endpoint, posting each new
//! message signed with a local secret. `tail` prints requests. All reconnect with backoff,
//! resume after the last event seen and drop repeats, so a dropped connection loses and
//! repeats nothing.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use hookline_server::api::stream::StreamedMessage;
use hookline_server::ingest::stream::StreamedRequest;
use hookline_signature::{Keyset, Scheme};
use reqwest::StatusCode;

use super::profile::Target;

/// Where the server is, how to authenticate, and where to start.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    target: Target,
    /// Start after this request (its `seq`) or message (its id) instead of with new ones.
    #[arg(long)]
    after: Option<String>,
}

/// [`ServerArgs`] with the server and token found.
#[derive(Debug)]
struct Remote {
    server: String,
    token: String,
    after: Option<String>,
}

impl ServerArgs {
    fn resolve(&self) -> anyhow::Result<Remote> {
        let server = self.target.resolve()?;
        Ok(Remote {
            server: server.url,
            token: server.token,
            after: self.after.clone(),
        })
    }
}

/// Forward a source's requests, byte for byte, to a local URL as they arrive.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline listen src_2yZwUhtgs5Ai8T9yRQJXA --forward-to http://localhost:3000/webhooks --token hlk_…
  HOOKLINE_SERVER=https://hooks.example.com hookline listen openai-prod --forward-to http://localhost:3000

  hookline listen --app app_2yZwUhtgs5Ai8T9yRQJXA --forward-to http://localhost:3000/webhooks \
      --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

A request that arrived at /in/TOKEN/sub/path?x=1 is posted to FORWARD_TO/sub/path?x=1.
Only accepted requests are forwarded (not rejected ones, not duplicates).
With --app, each new message of the application is posted as an endpoint would receive it:
its payload, signed (Standard Webhooks) with --secret, webhook-id = the message id.
One line per request: time, event type, local status, latency.")]
pub struct ListenArgs {
    /// The source: its id or uid.
    #[arg(required_unless_present = "app")]
    source: Option<String>,
    /// Listen to this application's messages instead (id or uid), as a virtual endpoint.
    #[arg(long, conflicts_with = "source")]
    app: Option<String>,
    /// With --app: the whsec_ secret that signs what is posted locally; generated and
    /// printed when absent.
    #[arg(long, requires = "app")]
    secret: Option<String>,
    /// The local URL to post each request to.
    #[arg(long)]
    forward_to: String,
    #[command(flatten)]
    server: ServerArgs,
    /// Seconds to wait for the local app's answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Print a source's requests, or an application's delivery attempts, as they happen.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline tail openai-prod --token hlk_…
  hookline tail src_2yZwUhtgs5Ai8T9yRQJXA --json --after 0   # everything logged, then follow
  hookline tail --app acme                                   # delivery attempts

One line per request: time, verdict, method and path, event type, and why it was refused.
With --app, one line per attempt: time, outcome, HTTP status, duration, message, endpoint.
On a terminal the verdicts and outcomes are coloured (unless NO_COLOR is set).")]
pub struct TailArgs {
    /// The source: its id or uid.
    #[arg(required_unless_present = "app")]
    source: Option<String>,
    /// Follow this application's delivery attempts instead (id or uid).
    #[arg(long, conflicts_with = "source")]
    app: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    /// One JSON object per line, with headers and the base64 body.
    #[arg(long)]
    json: bool,
}

pub fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let target = reqwest::Url::parse(&args.forward_to)
        .with_context(|| format!("invalid --forward-to URL {:?}", args.forward_to))?;
    if !matches!(target.scheme(), "http" | "https") {
        bail!("--forward-to must be http or https");
    }
    let local = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(args.timeout))
        .build()
        .context("cannot build the HTTP client")?;
    let remote = args.server.resolve()?;
    let runtime = runtime()?;
    if let Some(app) = &args.app {
        let secret = match &args.secret {
            Some(secret) => secret.clone(),
            None => {
                let secret = hookline_signature::generate_hmac_secret();
                eprintln!("signing with {secret} (pass --secret to choose it)");
                secret
            }
        };
        let keys = Keyset::new(Scheme::Standard, [&secret]).context("unusable --secret")?;
        let path = format!("/api/v1/app/{app}/msg/stream");
        return runtime.block_on(follow(&path, "message", &remote, |message| {
            let (local, target, keys) = (local.clone(), target.clone(), keys.clone());
            async move { forward_message(&local, &target, &keys, message).await }
        }));
    }
    let source = args.source.as_deref().unwrap_or_default();
    let path = format!("/ingest/api/v1/source/{source}/stream");
    runtime.block_on(follow(&path, "request", &remote, |request| {
        let local = local.clone();
        let target = target.clone();
        async move { forward(&local, &target, request).await }
    }))
}

pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let colour = Colour::for_stdout(json);
    let remote = args.server.resolve()?;
    if let Some(app) = &args.app {
        return runtime()?.block_on(tail_attempts(app, &remote, json, colour));
    }
    let source = args.source.as_deref().unwrap_or_default();
    let path = format!("/ingest/api/v1/source/{source}/stream");
    runtime()?.block_on(follow(
        &path,
        "request",
        &remote,
        |request: StreamedRequest| async move {
            if json {
                println!("{}", serde_json::to_string(&request).unwrap_or_default());
            } else {
                let reason = if request.reason.is_empty() {
                    String::new()
                } else {
                    format!("  {}: {}", request.reason_code, request.reason)
                };
                println!(
                    "{}  {}  {} {}  {}{reason}",
                    request.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    colour.paint(&request.verdict, 9),
                    request.method,
                    request.path,
                    request.event_type.as_deref().unwrap_or("-"),
                );
            }
        },
    ))
}

/// Whether lines are coloured: on a terminal, unless `NO_COLOR` is set or JSON is asked for.
#[derive(Debug, Clone, Copy)]
struct Colour(bool);

impl Colour {
    fn for_stdout(json: bool) -> Self {
        use std::io::IsTerminal as _;
        Colour(!json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    /// `word` padded to `width`, green for a success, red for a refusal or failure,
    /// yellow for the rest.
    fn paint(self, word: &str, width: usize) -> String {
        let padded = format!("{word:<width$}");
        if !self.0 {
            return padded;
        }
        let code = match word {
            "accepted" | "success" => 32,
            "rejected" | "fail" => 31,
            _ => 33,
        };
        format!("\x1b[{code}m{padded}\x1b[0m")
    }
}

/// How often `tail --app` looks for new attempts.
const ATTEMPT_POLL: Duration = Duration::from_secs(1);
/// How long `tail --app` remembers an attempt id that is no longer among the newest
/// listed.
const TAIL_MEMORY: Duration = Duration::from_secs(600);

/// Prints each new delivery attempt of `app`, to every endpoint, oldest first: the
/// attempts lists of the application's endpoints, looked at every second (with `--after`,
/// the attempts already made are printed first). Attempt ids sort by when an attempt
/// started, and a slow one is listed after quicker ones that started later: the ids
/// printed are remembered for [`TAIL_MEMORY`], not only the newest.
async fn tail_attempts(
    app: &str,
    server: &Remote,
    json: bool,
    colour: Colour,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let base = format!(
        "{}/api/v1/app/{}",
        server.server.trim_end_matches('/'),
        super::api::encode(app)
    );
    let get = |url: String| {
        let request = client.get(url).bearer_auth(&server.token);
        async move {
            let response = request.send().await.map_err(|e| (None, e.to_string()))?;
            let status = response.status();
            let value: serde_json::Value =
                response.json().await.map_err(|e| (None, e.to_string()))?;
            if status.is_success() {
                Ok(value)
            } else {
                Err((Some(status), format!("{status}: {}", value["detail"])))
            }
        }
    };
    // The attempts printed (or passed over at the start), by endpoint, with when they
    // were first seen; an endpoint is absent until it is first looked at.
    let mut seen: HashMap<String, HashMap<String, Instant>> = HashMap::new();
    let print_existing = server.after.is_some();
    eprintln!("following the delivery attempts of {app}");
    loop {
        let endpoints = match get(format!("{base}/endpoint?limit=250")).await {
            Ok(page) => page["data"].as_array().cloned().unwrap_or_default(),
            // Refused (no such application, a token that cannot see it): waiting will not
            // change that.
            Err((Some(status), error)) if status.is_client_error() => {
                eprintln!("error: cannot follow {app}: {error}");
                return Ok(ExitCode::FAILURE);
            }
            Err((_, error)) => {
                eprintln!("cannot list the endpoints: {error}");
                tokio::time::sleep(ATTEMPT_POLL).await;
                continue;
            }
        };
        for endpoint in endpoints {
            let (Some(id), Some(url)) = (endpoint["id"].as_str(), endpoint["url"].as_str()) else {
                continue;
            };
            let page = match get(format!("{base}/attempt/endpoint/{id}?limit=250")).await {
                Ok(page) => page,
                Err((_, error)) => {
                    eprintln!("cannot list the attempts to {id}: {error}");
                    continue;
                }
            };
            let attempts = page["data"].as_array().cloned().unwrap_or_default();
            let first_look = !seen.contains_key(id);
            let known = seen.entry(id.to_owned()).or_default();
            let now = Instant::now();
            // Every id listed is (re)marked now; one is forgotten once it has left the
            // list for a while, so it cannot come back as new.
            let new: Vec<&serde_json::Value> = attempts
                .iter()
                .filter(|a| {
                    let attempt = a["id"].as_str().unwrap_or_default();
                    known.insert(attempt.to_owned(), now).is_none()
                        && (!first_look || print_existing)
                })
                .collect();
            known.retain(|_, at| now.duration_since(*at) < TAIL_MEMORY);
            if !first_look && new.len() == attempts.len() && page["done"] == false {
                eprintln!(
                    "more than {} attempts to {id} in a second: some are not shown",
                    attempts.len()
                );
            }
            for attempt in new.iter().rev() {
                if json {
                    println!("{attempt}");
                } else {
                    println!(
                        "{}  {}  {:>3}  {:>6} ms  {}  {url}",
                        attempt["timestamp"].as_str().unwrap_or_default(),
                        colour.paint(attempt["statusText"].as_str().unwrap_or("?"), 7),
                        attempt["responseStatusCode"],
                        attempt["responseDurationMs"],
                        attempt["msgId"].as_str().unwrap_or_default(),
                    );
                }
            }
        }
        tokio::time::sleep(ATTEMPT_POLL).await;
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Posts one accepted request to the local app and prints a line about it.
async fn forward(local: &reqwest::Client, target: &reqwest::Url, request: StreamedRequest) {
    if request.verdict != "accepted" || request.reason_code == "challenge" {
        return;
    }
    let event_type = request.event_type.as_deref().unwrap_or("-").to_owned();
    let time = request.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let outcome = post_local(local, target, &request).await;
    match outcome {
        Ok((status, latency)) => println!(
            "{time}  {event_type}  {} -> {status}  {} ms",
            request.method,
            latency.as_millis()
        ),
        Err(error) => println!(
            "{time}  {event_type}  {} -> failed: {error:#}",
            request.method
        ),
    }
}

/// Posts one message to the local app, signed as a delivery, and prints a line about it.
async fn forward_message(
    local: &reqwest::Client,
    target: &reqwest::Url,
    keys: &Keyset,
    message: StreamedMessage,
) {
    let time = message.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let Some(payload) = message.payload else {
        println!(
            "{time}  {}  skipped: the payload was expunged",
            message.event_type
        );
        return;
    };
    let signed = keys.sign(&hookline_signature::Message {
        id: &message.id,
        timestamp: chrono::Utc::now().timestamp(),
        body: payload.as_bytes(),
    });
    let signed = match signed {
        Ok(signed) => signed,
        Err(error) => {
            println!("{time}  {}  not sent: {error}", message.event_type);
            return;
        }
    };
    let mut request = local
        .post(target.clone())
        .header("content-type", "application/json")
        .body(payload);
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let started = Instant::now();
    match request.send().await {
        Ok(response) => println!(
            "{time}  {}  POST -> {}  {} ms",
            message.event_type,
            response.status(),
            started.elapsed().as_millis()
        ),
        Err(error) => println!("{time}  {}  POST -> failed: {error:#}", message.event_type),
    }
}

async fn post_local(
    local: &reqwest::Client,
    target: &reqwest::Url,
    request: &StreamedRequest,
) -> anyhow::Result<(StatusCode, Duration)> {
    let body = base64::engine::general_purpose::STANDARD
        .decode(&request.body)
        .context("the server sent a body that is not base64")?;
    let mut url = target.clone();
    if request.path != "/" {
        let joined = format!("{}{}", url.path().trim_end_matches('/'), request.path);
        url.set_path(&joined);
    }
    if !request.query.is_empty() {
        url.set_query(Some(&request.query));
    }
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .context("the request had an invalid method")?;
    let mut builder = local.request(method, url);
    for (name, value) in &request.headers {
        if !hookline_core::model::FRAMING_HEADERS.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let started = Instant::now();
    let response = builder.body(body).send().await?;
    Ok((response.status(), started.elapsed()))
}

/// An event of a stream: where it puts the cursor.
trait Streamed: serde::de::DeserializeOwned {
    /// The value to resume after (`?after=`), also the identity of the event.
    fn cursor(&self) -> String;
}

impl Streamed for StreamedRequest {
    fn cursor(&self) -> String {
        self.seq.to_string()
    }
}

impl Streamed for StreamedMessage {
    fn cursor(&self) -> String {
        self.id.clone()
    }
}

/// Events remembered to drop repeats after a reconnect.
const REMEMBERED: usize = 10_000;

/// Reads the stream at `path` on the server, calling `each` for every event named `kind`
/// in order, reconnecting with backoff after the last one seen and dropping repeats.
/// Returns only on an error that retrying cannot fix (unknown source, refused token).
async fn follow<T, F, Fut>(
    path: &str,
    kind: &str,
    server: &Remote,
    mut each: F,
) -> anyhow::Result<ExitCode>
where
    T: Streamed,
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let base = server.server.trim_end_matches('/');
    let url = format!("{base}{path}");
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let mut seen = Seen::default();
    let mut cursor = server.after.clone();
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut request = client.get(&url).bearer_auth(&server.token);
        if let Some(after) = &cursor {
            request = request.query(&[("after", after)]);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                eprintln!("listening at {url}");
                backoff = Duration::from_millis(250);
                let mut handle = |event: T| {
                    let key = event.cursor();
                    cursor = Some(key.clone());
                    seen.first_time(key).then(|| each(event))
                };
                if let Err(error) = read_events(response, kind, &mut handle).await {
                    eprintln!("stream interrupted: {error:#}; reconnecting");
                }
            }
            Ok(response) if is_permanent(response.status()) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                bail!("the server refused the stream ({status}): {body}");
            }
            Ok(response) => eprintln!("the server answered {}; retrying", response.status()),
            Err(error) => eprintln!("cannot reach {base}: {error}; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The last [`REMEMBERED`] event keys.
#[derive(Default)]
struct Seen {
    keys: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Seen {
    /// Whether `key` is new; remembers it.
    fn first_time(&mut self, key: String) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        true
    }
}

/// Whether retrying cannot help: a wrong token, source or URL.
fn is_permanent(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

/// Parses server-sent events from `response` until it ends, handing each event named
/// `kind` to `handle`, which answers the work to await for it, if any.
async fn read_events<T, H, Fut>(
    mut response: reqwest::Response,
    kind: &str,
    handle: &mut H,
) -> anyhow::Result<()>
where
    T: Streamed,
    H: FnMut(T) -> Option<Fut>,
    Fut: std::future::Future<Output = ()>,
{
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.extend_from_slice(&chunk);
        // Events end with a blank line.
        while let Some(end) = find_event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&event[..end.0]);
            let mut data = String::new();
            let mut name = "message";
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                } else if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim();
                }
            }
            if name != kind || data.is_empty() {
                continue;
            }
            let event: T =
                serde_json::from_str(&data).context("the server sent an unreadable event")?;
            if let Some(work) = handle(event) {
                work.await;
            }
        }
    }
    Ok(())
}

/// `(end of the event's text, end including the blank line)` of the first complete event.
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_the_first_blank_line() {
        assert_eq!(find_event_end(b"data: x\n\ndata: y\n\n"), Some((7, 9)));
        assert_eq!(find_event_end(b"data: x\r\n\r\n"), Some((7, 11)));
        assert_eq!(find_event_end(b"data: x\n"), None);
    }

    #[test]
    fn only_wrong_credentials_and_names_stop_the_retries() {
        assert!(is_permanent(StatusCode::UNAUTHORIZED));
        assert!(is_permanent(StatusCode::NOT_FOUND));
        assert!(!is_permanent(StatusCode::BAD_GATEWAY));
        assert!(!is_permanent(StatusCode::SERVICE_UNAVAILABLE));
    }
}
