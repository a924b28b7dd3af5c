//! Hookline nodes and a loopback receiver for end-to-end tests. A node runs in this
//! process through `hookline::run`, the entry point `hookline serve` uses, unless a test
//! must kill it (SIGKILL) or read its log: then it is a `hookline serve` process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hookline-it-{name}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running node.
pub struct Server {
    pub url: String,
    run: Run,
}

/// How a node runs.
enum Run {
    /// A `hookline serve` process.
    Process(Child),
    /// `hookline::run` on a runtime of its own, in a thread of this process, as
    /// `hookline serve` runs it: a test that blocks its own thread does not stall it.
    InProcess {
        shutdown: CancellationToken,
        done: Option<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>,
    },
}

/// The settings every test node gets, as `HOOKLINE_*` variables: a SQLite file in `dir`,
/// the test token, loopback deliveries allowed, quiet logs.
fn base_env(dir: &Path, port: u16) -> Vec<(String, String)> {
    [
        ("HOOKLINE_LISTEN", format!("127.0.0.1:{port}")),
        (
            "HOOKLINE_DATABASE_URL",
            format!("sqlite://{}", dir.join("hookline.db").display()),
        ),
        ("HOOKLINE_ADMIN_TOKEN", TOKEN.to_owned()),
        ("HOOKLINE_ALLOWED_SUBNETS", "127.0.0.0/8".to_owned()),
        ("HOOKLINE_LOG_LEVEL", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

impl Server {
    /// Runs a node in this process in `dir`, with the test token and loopback deliveries
    /// allowed, `extra` read as `HOOKLINE_*` variables over those.
    pub async fn start(dir: &Path, extra: &[(&str, &str)]) -> Server {
        Server::start_with(dir, extra, hookline::Options::default()).await
    }

    /// [`Server::start`] with run options: a test's clock, for one.
    pub async fn start_with(
        dir: &Path,
        extra: &[(&str, &str)],
        options: hookline::Options,
    ) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("addr").port();
        let mut env: HashMap<String, String> = base_env(dir, port).into_iter().collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let config = hookline::config::Config::load(None, &env).expect("test configuration");
        let shutdown = CancellationToken::new();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let stop = shutdown.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("node runtime");
            let outcome = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                hookline::run_with(config, Some(listener), stop, options).await
            });
            // Every task of the node (and with them the store and its file lock) is gone
            // before the node is reported stopped, so a restart finds the file free.
            drop(runtime);
            let _ = done_tx.send(outcome);
        });
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            run: Run::InProcess {
                shutdown,
                done: Some(done),
            },
        };
        server.wait_healthy().await;
        server
    }

    /// A `hookline serve` process, for tests that kill it.
    pub async fn start_process(dir: &Path, extra: &[(&str, &str)]) -> Server {
        Server::start_on(dir, free_port(), extra).await
    }

    /// Stops an in-process node as a signal stops `hookline serve`, and returns what
    /// `hookline::run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let Run::InProcess { shutdown, done } = &mut self.run else {
            panic!("stop() is for nodes run in process");
        };
        shutdown.cancel();
        let done = done.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(20), done)
            .await
            .expect("the node stops in time")
            .expect("the node's thread reports how it ended")
    }

    /// Whether a process node is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.run {
            Run::Process(child) => child.try_wait().expect("poll node").is_none(),
            Run::InProcess { done, .. } => {
                done.as_mut().is_some_and(|done| done.try_recv().is_err())
            }
        }
    }

    /// [`Server::start`] with extra command-line arguments after `serve`.
    pub async fn start_with_args(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Server {
        Server::launch(dir, free_port(), args, extra, Stdio::inherit()).await
    }

    /// [`Server::start`] on a given port (to restart a server where clients expect it).
    pub async fn start_on(dir: &Path, port: u16, extra: &[(&str, &str)]) -> Server {
        Server::launch(dir, port, &[], extra, Stdio::inherit()).await
    }

    /// [`Server::start`] with the server's log (stderr) written to `log`.
    pub async fn start_logging(dir: &Path, extra: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("create log file");
        Server::launch(dir, free_port(), &[], extra, Stdio::from(file)).await
    }

    async fn launch(
        dir: &Path,
        port: u16,
        args: &[&str],
        extra: &[(&str, &str)],
        stderr: Stdio,
    ) -> Server {
        let child = Server::command(dir, port, args, extra, stderr)
            .spawn()
            .expect("spawn hookline serve");
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            run: Run::Process(child),
        };
        server.wait_healthy().await;
        server
    }

    /// A `--role worker` node, which serves no API (only `/healthz` and `/metrics`): its
    /// log (at `info`) goes to `log`, and it is ready once the log says it delivers.
    pub async fn start_worker(
        dir: &Path,
        args: &[&str],
        extra: &[(&str, &str)],
        log: &Path,
    ) -> Server {
        let file = std::fs::File::create(log).expect("create log file");
        let args: Vec<&str> = ["--role", "worker"].iter().chain(args).copied().collect();
        let port = free_port();
        let mut command = Server::command(dir, port, &args, extra, file.into());
        let child = command
            .env("HOOKLINE_LOG_LEVEL", "info")
            .spawn()
            .expect("spawn hookline serve --role worker");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("hookline delivering")
        {
            assert!(Instant::now() < deadline, "the worker did not start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Server {
            // Where it would serve the API, were it not a worker.
            url: format!("http://127.0.0.1:{port}"),
            run: Run::Process(child),
        }
    }

    fn command(
        dir: &Path,
        port: u16,
        args: &[&str],
        extra: &[(&str, &str)],
        stderr: Stdio,
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookline"));
        command
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .envs(base_env(dir, port))
            .stdout(Stdio::null())
            .stderr(stderr);
        for (name, value) in extra {
            command.env(name, value);
        }
        command
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Run::InProcess {
                done: Some(done), ..
            } = &mut self.run
                && let Ok(outcome) = done.try_recv()
            {
                panic!("the node stopped before it was healthy: {outcome:?}");
            }
            if let Ok(response) = client
                .get(format!("{}/api/v1/health", self.url))
                .send()
                .await
                && response.status().as_u16() == 204
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("hookline serve did not become healthy at {}", self.url);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let Run::Process(child) = &mut self.run else {
            panic!("only a node started as a process can be killed");
        };
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// Creates an application named `name` with one endpoint at `url`: the app's id.
    pub async fn app_with_endpoint(&self, name: &str, url: &str) -> String {
        let (status, app) = self
            .api(
                reqwest::Method::POST,
                "/api/v1/app",
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{app}");
        let app_id = app["id"].as_str().expect("app id").to_owned();
        self.add_endpoint(&app_id, url).await;
        app_id
    }

    /// Adds an endpoint at `url` to the application `app_id`: the endpoint as answered.
    pub async fn add_endpoint(&self, app_id: &str, url: &str) -> serde_json::Value {
        let (status, endpoint) = self
            .api(
                reqwest::Method::POST,
                &format!("/api/v1/app/{app_id}/endpoint"),
                Some(serde_json::json!({"url": url})),
            )
            .await;
        assert_eq!(status, 201, "{endpoint}");
        endpoint
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = reqwest::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("metrics request");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics body")
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::Client::new();
        let mut request = client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("api body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// The value of the metric line `series` (name and labels as printed) in `text`, 0 if
/// absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a metric's value"))
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Run::InProcess { shutdown, .. } => shutdown.cancel(),
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// A loopback HTTP receiver recording every request; answers 200 unless told otherwise
/// for a path.
#[derive(Clone, Default)]
pub struct Receiver {
    pub received: Arc<Mutex<Vec<Delivery>>>,
    pub statuses: Arc<Mutex<HashMap<String, u16>>>,
    /// How long each answer takes: a slow receiver lets a backlog build up.
    pub delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/{*path}", any(record))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for the deliveries so far.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            let deliveries = self.deliveries();
            if done(&deliveries) || Instant::now() > deadline {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(
    State(receiver): State<Receiver>,
    method: Method,
    UrlPath(path): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path = format!("/{path}");
    let delay = *receiver.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = receiver
        .statuses
        .lock()
        .expect("lock")
        .get(&path)
        .copied()
        .unwrap_or(200);
    receiver.received.lock().expect("lock").push(Delivery {
        method: method.to_string(),
        path,
        query,
        headers,
        body: body.to_vec(),
    });
    StatusCode::from_u16(status).expect("valid status")
}

/// A node on each backend, with `extra` read as `HOOKLINE_*` variables: SQLite in `dir`,
/// and PostgreSQL in a fresh schema named after `name` when the test server is configured
/// (HOOKLINE_TEST_POSTGRES_URL; skipped with a notice otherwise).
pub async fn nodes(
    dir: &TempDir,
    name: &str,
    extra: &[(&str, &str)],
) -> Vec<(&'static str, Server)> {
    let mut nodes = vec![("sqlite", Server::start(&dir.0, extra).await)];
    if let Some(url) = postgres_schema(name) {
        let mut env = vec![
            ("HOOKLINE_DATABASE_URL", url.as_str()),
            ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
        ];
        env.extend_from_slice(extra);
        nodes.push(("postgres", Server::start(&dir.0, &env).await));
    }
    nodes
}

/// A fresh schema on the test server, and a database URL whose connections use it.
pub fn postgres_schema(name: &str) -> Option<String> {
    let Ok(url) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: HOOKLINE_TEST_POSTGRES_URL not set");
        return None;
    };
    let schema = format!("hookline_node_{name}_{}", std::process::id());
    let created = Command::new("psql")
        .args([
            url.as_str(),
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        ])
        .status()
        .expect("run psql");
    assert!(created.success(), "psql could not create schema {schema}");
    let separator = if url.contains('?') { '&' } else { '?' };
    // The application name lets a test find (and terminate) exactly these connections.
    Some(format!(
        "{url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"
    ))
}
