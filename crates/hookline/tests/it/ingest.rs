//! The receiving side end to end: `/in/{token}` on a real `hookline serve`, crash safety
//! of accepted requests, and `hookline listen` as a tunnel to a local app.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_signature::{Keyset, Message, Scheme, VerifyOptions};
use reqwest::Method;
use serde_json::json;

use crate::server::{Receiver, Server, TOKEN, TempDir, free_port, metric};

const OPENAI_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Creates a source of `source_type`; answers `(id, ingest URL)`.
async fn create_source(
    server: &Server,
    source_type: &str,
    config: serde_json::Value,
) -> (String, String) {
    let (status, source) = server
        .api(
            Method::POST,
            "/ingest/api/v1/source",
            Some(json!({"name": format!("{source_type} source"), "type": source_type, "config": config})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    (
        source["id"].as_str().unwrap().to_owned(),
        source["ingestUrl"].as_str().unwrap().to_owned(),
    )
}

/// An `open-ai` source that forwards to `{receiver_url}/forwarded`: its ingest URL.
async fn openai_source_forwarding_to(server: &Server, receiver_url: &str) -> String {
    let (source_id, ingest_url) =
        create_source(server, "open-ai", json!({"secret": OPENAI_SECRET})).await;
    let (status, endpoint) = server
        .api(
            Method::POST,
            &format!("/ingest/api/v1/source/{source_id}/endpoint"),
            Some(json!({"url": format!("{receiver_url}/forwarded")})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    ingest_url
}

/// Signs `body` as OpenAI does (Standard Webhooks) with a fresh webhook-id.
fn openai_headers(body: &[u8], id: &str) -> Vec<(&'static str, String)> {
    let keys = Keyset::new(Scheme::OpenAi, [OPENAI_SECRET]).unwrap();
    keys.sign(&Message {
        id,
        timestamp: chrono::Utc::now().timestamp(),
        body,
    })
    .unwrap()
}

/// Kills the server with SIGKILL right after a batch of accepted requests, while their
/// forwarding is still queued behind a slow endpoint, restarts it, and checks that every
/// accepted request is forwarded.
#[tokio::test]
async fn every_accepted_request_is_forwarded_after_a_sigkill() {
    const REQUESTS: usize = 400;
    let dir = TempDir::new("ingest-crash");
    let (receiver, receiver_url) = Receiver::start().await;
    *receiver.delay.lock().unwrap() = Duration::from_secs(1);
    let mut server = Server::start_process(&dir.0, &[]).await;
    let ingest_url = openai_source_forwarding_to(&server, &receiver_url).await;

    let client = reqwest::Client::new();
    let accepted = Arc::new(std::sync::Mutex::new(HashSet::<usize>::new()));
    let mut senders = Vec::new();
    for task in 0..16 {
        let (client, url, accepted) = (client.clone(), ingest_url.clone(), accepted.clone());
        senders.push(tokio::spawn(async move {
            for n in (task..REQUESTS).step_by(16) {
                let body = format!(r#"{{"type":"response.completed","data":{{"id":"resp_{n}"}}}}"#);
                let mut request = client.post(&url).body(body.clone());
                for (name, value) in openai_headers(body.as_bytes(), &format!("wh_{n}")) {
                    request = request.header(name, value);
                }
                let Ok(response) = request.send().await else {
                    return;
                };
                if response.status().is_success() {
                    let answer: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(answer["verdict"], "accepted", "{answer}");
                    accepted.lock().unwrap().insert(n);
                }
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    server.kill();
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(
        accepted.len(),
        REQUESTS,
        "every request was answered before the kill"
    );
    let forwarded_before = receiver.deliveries().len();
    assert!(
        forwarded_before + 100 < REQUESTS,
        "the kill should catch a backlog: {forwarded_before} of {REQUESTS} forwarded"
    );
    *receiver.delay.lock().unwrap() = Duration::ZERO;

    let _restarted = Server::start(&dir.0, &[]).await;
    let expected_body =
        |n: usize| format!(r#"{{"type":"response.completed","data":{{"id":"resp_{n}"}}}}"#);
    let deliveries = receiver
        .wait_until(Duration::from_secs(60), |deliveries| {
            let bodies: HashSet<&[u8]> = deliveries.iter().map(|d| d.body.as_slice()).collect();
            accepted
                .iter()
                .all(|n| bodies.contains(expected_body(*n).as_bytes()))
        })
        .await;
    let bodies: HashSet<Vec<u8>> = deliveries.iter().map(|d| d.body.clone()).collect();
    let missing: Vec<usize> = accepted
        .iter()
        .copied()
        .filter(|n| !bodies.contains(expected_body(*n).as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted requests never forwarded, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for delivery in &deliveries {
        assert_eq!(delivery.path, "/forwarded");
        assert!(delivery.headers.contains_key("webhook-signature"));
    }
}

/// The lines a child prints on its standard output, as they come.
fn lines_of(child: &mut Listener) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stdout = child.0.stdout.take().expect("a piped stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    lines_rx
}

/// A `hookline listen` child process, killed on drop.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Posts a GitHub-signed request; answers the status.
async fn post_github(
    ingest_url: &str,
    suffix: &str,
    secret: &str,
    body: &str,
    delivery: &str,
) -> u16 {
    let keys = Keyset::new(Scheme::Github, [secret]).unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{ingest_url}{suffix}"))
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .body(body.to_owned());
    for (name, value) in keys
        .sign(&Message {
            id: delivery,
            timestamp: 0,
            body: body.as_bytes(),
        })
        .unwrap()
    {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn listen_forwards_requests_unchanged_and_resumes_after_a_reconnect() {
    const SECRET: &str = "it's a secret to everybody";
    let dir = TempDir::new("listen");
    let port = free_port();
    let (receiver, receiver_url) = Receiver::start().await;
    let mut server = Server::start_on(&dir.0, port, &[]).await;
    let (source_id, ingest_url) = create_source(&server, "github", json!({"secret": SECRET})).await;
    // The local app answers 202 at its root: listen reports the local status as it is.
    receiver
        .statuses
        .lock()
        .unwrap()
        .insert("/local".into(), 202);
    let printed = dir.0.join("listen.out");

    let _listen = Listener(
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args([
                "listen",
                &source_id,
                "--forward-to",
                &format!("{receiver_url}/local"),
            ])
            .args(["--server", &server.url, "--token", TOKEN, "--after", "0"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&printed).expect("listen output file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hookline listen"),
    );

    let first = r#"{"action":"opened","issue":{"number":1},  "note":"spacing kept"}"#;
    assert_eq!(
        post_github(&ingest_url, "/gh/events?x=1", SECRET, first, "d-1").await,
        200
    );
    assert_eq!(
        post_github(&ingest_url, "/gh/events", "wrong secret", first, "d-bad").await,
        401
    );
    let got = receiver
        .wait_until(Duration::from_secs(20), |d| !d.is_empty())
        .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let local = &got[0];
    assert_eq!(local.method, "POST");
    assert_eq!(local.path, "/local/gh/events");
    assert_eq!(local.query.as_deref(), Some("x=1"));
    assert_eq!(local.body, first.as_bytes());
    assert_eq!(
        local.headers.get("x-github-delivery").map(String::as_str),
        Some("d-1")
    );
    assert_eq!(
        local.headers.get("x-github-event").map(String::as_str),
        Some("issues")
    );
    // The local app's own check of the provider's signature passes.
    let headers: Vec<(String, String)> = local.headers.clone().into_iter().collect();
    let keys = Keyset::new(Scheme::Github, [SECRET]).unwrap();
    keys.verify(&headers, &local.body, VerifyOptions::default())
        .expect("the provider's signature verifies at the local app");

    // The server goes away and comes back on the same port: listen reconnects and resumes
    // after the last request it forwarded.
    server.kill();
    let started = Instant::now();
    let _server = Server::start_on(&dir.0, port, &[]).await;
    let second = r#"{"action":"closed","issue":{"number":2}}"#;
    let third = r#"{"action":"reopened","issue":{"number":3}}"#;
    assert_eq!(
        post_github(&ingest_url, "", SECRET, second, "d-2").await,
        200
    );
    assert_eq!(
        post_github(&ingest_url, "", SECRET, third, "d-3").await,
        200
    );
    let got = receiver
        .wait_until(Duration::from_secs(30), |d| d.len() >= 3)
        .await;
    let bodies: Vec<&[u8]> = got.iter().map(|d| d.body.as_slice()).collect();
    assert_eq!(
        bodies,
        [first.as_bytes(), second.as_bytes(), third.as_bytes()],
        "in order, nothing lost, nothing repeated ({:?} after the restart)",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.deliveries().len(),
        3,
        "no repeats after the reconnect"
    );
    assert_eq!(got[1].path, "/local");
    assert_eq!(got[1].query, None);

    // One line per forwarded request: time, event type, method, local status, latency.
    let lines: Vec<String> = std::fs::read_to_string(&printed)
        .expect("listen output")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, status) in lines.iter().zip(["200", "202", "202"]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields[0].parse::<chrono::DateTime<chrono::Utc>>().is_ok(),
            "{line}"
        );
        assert!(fields[1].starts_with("issues"), "{line}");
        assert!(line.contains(&format!(" POST -> {status} ")), "{line}");
        let [.., latency, unit] = fields[..] else {
            panic!("{line}")
        };
        assert!(latency.parse::<u64>().is_ok() && unit == "ms", "{line}");
    }
}

/// Requests leave the request log once they are older than HOOKLINE_INGEST_LOG_RETENTION.
#[tokio::test]
async fn the_request_log_keeps_requests_for_the_retention_period() {
    let dir = TempDir::new("ingest-retention");
    let server = Server::start(&dir.0, &[("HOOKLINE_INGEST_LOG_RETENTION", "2")]).await;
    let (source_id, ingest_url) = create_source(&server, "generic-webhook", json!({})).await;
    let answer = reqwest::Client::new()
        .post(&ingest_url)
        .body(r#"{"type":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let log_path = format!("/ingest/api/v1/source/{source_id}/log");
    let (status, log) = server.api(Method::GET, &log_path, None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, log) = server.api(Method::GET, &log_path, None).await;
        if log["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still logged after 15 s: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `hookline tail --json` prints every logged request, refused ones with the reason.
#[tokio::test]
async fn tail_prints_each_request_with_its_verdict() {
    let dir = TempDir::new("tail");
    let server = Server::start(&dir.0, &[]).await;
    let (source_id, ingest_url) =
        create_source(&server, "open-ai", json!({"secret": OPENAI_SECRET})).await;
    let mut tail = Listener(
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(["tail", &source_id, "--json", "--after", "0"])
            .args(["--server", &server.url, "--token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hookline tail"),
    );
    let lines_rx = lines_of(&mut tail);

    let body = r#"{"type":"batch.completed","data":{"id":"batch_1"}}"#;
    let client = reqwest::Client::new();
    let mut good = client.post(&ingest_url).body(body);
    for (name, value) in openai_headers(body.as_bytes(), "wh_tail_1") {
        good = good.header(name, value);
    }
    assert_eq!(good.send().await.unwrap().status(), 200);
    let refused = client
        .post(format!("{ingest_url}/v1/hooks"))
        .header("webhook-id", "wh_tail_2")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let mut printed = Vec::new();
    for _ in 0..2 {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tail prints a line per request");
        printed.push(
            serde_json::from_str::<serde_json::Value>(&line).expect("one JSON object per line"),
        );
    }
    assert_eq!(printed[0]["verdict"], "accepted");
    assert_eq!(printed[0]["eventType"], "batch.completed");
    assert_eq!(printed[1]["verdict"], "rejected");
    assert_eq!(printed[1]["reasonCode"], "missing_header");
    assert_eq!(printed[1]["path"], "/v1/hooks");
    assert!(printed[0]["seq"].as_i64().unwrap() < printed[1]["seq"].as_i64().unwrap());
}

/// `hookline tail --app APP ARGS` against `server`, its standard output piped.
fn tail_app(server: &Server, app_id: &str, args: &[&str]) -> Listener {
    Listener(
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(["tail", "--app", app_id])
            .args(args)
            .args(["--server", &server.url, "--token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hookline tail --app"),
    )
}

/// `hookline tail --app` prints each delivery attempt of an application as it is made,
/// without colour codes when its output is not a terminal.
#[tokio::test]
async fn tail_app_prints_each_attempt() {
    let dir = TempDir::new("tail-app");
    let server = Server::start(&dir.0, &[]).await;
    let (_, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "tailed"})))
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let mut tail = tail_app(&server, &app_id, &[]);
    let lines_rx = lines_of(&mut tail);
    // Let the tail see the application without attempts first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(json!({"url": "http://127.0.0.1:9/closed"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, msg) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/msg"),
            Some(json!({"eventType": "t.t", "payload": {}})),
        )
        .await;
    assert_eq!(status, 202);
    let line = lines_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("tail prints a line per attempt");
    assert!(line.contains(msg["id"].as_str().unwrap()), "{line}");
    assert!(
        line.contains("fail") && line.contains("127.0.0.1:9/closed"),
        "{line}"
    );
    assert!(
        !line.contains('\x1b'),
        "no colour codes into a pipe: {line:?}"
    );

    // An application that does not exist: refused, and said so, not waited for.
    let refused = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(["tail", "--app", "no-such-app"])
        .args(["--server", &server.url, "--token", TOKEN])
        .output()
        .expect("run hookline tail --app");
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("404"), "{err}");
}

/// `tail --app` prints an attempt that started before another but ended after it (its id
/// sorts first, its row comes later), and prints nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_app_prints_a_slow_attempt_that_ends_after_a_quick_one() {
    let dir = TempDir::new("tail-app-order");
    let server = Server::start(&dir.0, &[]).await;
    let (receiver, receiver_url) = Receiver::start().await;
    let (_, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "tailed"})))
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(json!({"url": format!("{receiver_url}/hook")})),
        )
        .await;
    assert_eq!(status, 201);
    let mut tail = tail_app(&server, &app_id, &["--json"]);
    let lines_rx = lines_of(&mut tail);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let send = |name: &'static str| {
        let server = &server;
        let path = format!("/api/v1/app/{app_id}/msg");
        async move {
            let body = json!({"eventType": "t.t", "payload": {"name": name}});
            let (status, msg) = server.api(Method::POST, &path, Some(body)).await;
            assert_eq!(status, 202, "{msg}");
            msg["id"].as_str().unwrap().to_owned()
        }
    };
    *receiver.delay.lock().unwrap() = Duration::from_secs(3);
    let slow = send("slow").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    *receiver.delay.lock().unwrap() = Duration::ZERO;
    let quick = send("quick").await;
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while printed.len() < 2 && Instant::now() < deadline {
        // (The receiver answers on this runtime's other thread.)
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            let attempt: serde_json::Value = serde_json::from_str(&line).unwrap();
            printed.push(attempt["msgId"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(printed, [quick, slow], "the quick attempt ends first");
    // Nothing more: no attempt is printed twice.
    assert!(lines_rx.recv_timeout(Duration::from_millis(2500)).is_err());
}

/// `hookline listen --app` acts as a virtual endpoint: each new message of the application
/// reaches the local app signed with the listener's secret, across a server restart,
/// without gaps or repeats.
#[tokio::test]
async fn listen_app_posts_each_message_signed_and_resumes_after_a_reconnect() {
    use std::io::BufRead as _;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = TempDir::new("listen-app");
    let port = free_port();
    let (receiver, receiver_url) = Receiver::start().await;
    let mut server = Server::start_on(&dir.0, port, &[]).await;
    let (status, app) = server
        .api(
            Method::POST,
            "/api/v1/app",
            Some(json!({"name": "listened"})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();

    let mut listen = Listener(
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args(["listen", "--app", &app_id, "--secret", SECRET])
            .args(["--forward-to", &format!("{receiver_url}/local-app")])
            .args(["--server", &server.url, "--token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookline listen --app"),
    );
    let stderr = listen.0.stderr.take().unwrap();
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.starts_with("listening at") && connected_tx.send(()).is_err() {
                return;
            }
        }
    });
    connected_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("listen connects");

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(send_message(&server, &app_id, n).await);
    }
    receiver
        .wait_until(Duration::from_secs(20), |d| d.len() >= 3)
        .await;

    server.kill();
    let server = Server::start_on(&dir.0, port, &[]).await;
    // Created before listen is back (it reconnects with a backoff): it must resume from
    // its cursor to see them.
    for n in 3..5 {
        ids.push(send_message(&server, &app_id, n).await);
    }
    connected_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("listen reconnects");
    ids.push(send_message(&server, &app_id, 5).await);
    let got = receiver
        .wait_until(Duration::from_secs(20), |d| d.len() >= 6)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_ids: Vec<&str> = got
        .iter()
        .map(|d| d.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(got_ids, ids, "every message once, in order");
    assert_eq!(receiver.deliveries().len(), 6, "no repeats");
    let keys = Keyset::new(Scheme::Standard, [SECRET]).unwrap();
    for (n, delivery) in got.iter().enumerate() {
        assert_eq!(delivery.path, "/local-app");
        let payload: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(payload, json!({"n": n}));
        let headers: Vec<(String, String)> = delivery.headers.clone().into_iter().collect();
        keys.verify(&headers, &delivery.body, VerifyOptions::default())
            .expect("signed with the listener's secret");
    }
}

/// Creates a message `{"n": n}`; answers its id.
async fn send_message(server: &Server, app_id: &str, n: usize) -> String {
    let path = format!("/api/v1/app/{app_id}/msg");
    let body = json!({"eventType": "job.succeeded", "payload": {"n": n}});
    let (status, message) = server.api(Method::POST, &path, Some(body)).await;
    assert_eq!(status, 202, "{message}");
    message["id"].as_str().unwrap().to_owned()
}

/// Nodes keep the sources they read by token for a moment, yet a source changed through
/// the API takes effect with the next request on the node that changed it: a new secret
/// verifies and the old one no longer does, and a deleted source's URL answers 404. On
/// PostgreSQL, a second node, which kept the source too, takes a new secret within a few
/// seconds, and a deletion at once (its write finds no source).
#[tokio::test]
async fn a_changed_source_takes_effect_at_once_though_nodes_keep_sources() {
    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let dir = TempDir::new("source-change");
    let mut backends = vec![("sqlite", vec![Server::start(&dir.0, &[]).await])];
    if let Some(url) = crate::server::postgres_schema("source_change") {
        let env = [
            ("HOOKLINE_DATABASE_URL", url.as_str()),
            ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
        ];
        let first = Server::start(&dir.0, &env).await;
        let second = Server::start(&dir.0, &env).await;
        backends.push(("postgres, two nodes", vec![first, second]));
    }
    let client = reqwest::Client::new();
    let post = |url: String, secret: &'static str, id: String| {
        let client = client.clone();
        async move {
            let body = br#"{"type":"ping"}"#;
            let keys = Keyset::new(Scheme::Standard, [secret]).unwrap();
            let mut request = client.post(url).body(&body[..]);
            let signed = keys.sign(&Message {
                id: &id,
                timestamp: chrono::Utc::now().timestamp(),
                body,
            });
            for (name, value) in signed.unwrap() {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    for (backend, nodes) in &backends {
        let (id, url) = create_source(&nodes[0], "standard-webhooks", json!({"secret": OLD})).await;
        let token = url.split("/in/").nth(1).unwrap();
        let urls: Vec<String> = nodes
            .iter()
            .map(|node| format!("{}/in/{token}", node.url))
            .collect();
        // Every node reads the source, and keeps it.
        for (n, url) in urls.iter().enumerate() {
            let (status, body) = post(url.clone(), OLD, format!("msg_first{n}")).await;
            assert_eq!(status, 200, "{backend}: {body}");
        }
        let (status, changed) = nodes[0]
            .api(
                Method::PUT,
                &format!("/ingest/api/v1/source/{id}"),
                Some(json!({"name": "changed", "type": "standard-webhooks", "config": {"secret": NEW}})),
            )
            .await;
        assert_eq!(status, 200, "{backend}: {changed}");
        let (status, body) = post(urls[0].clone(), NEW, "msg_new".into()).await;
        assert_eq!(status, 200, "{backend}: the new secret at once: {body}");
        let (status, body) = post(urls[0].clone(), OLD, "msg_old".into()).await;
        assert_eq!(status, 401, "{backend}: the old secret no more: {body}");
        if let Some(other) = urls.get(1) {
            let started = Instant::now();
            for attempt in 0.. {
                let (status, _) = post(other.clone(), NEW, format!("msg_other{attempt}")).await;
                if status == 200 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{backend}: the other node still refuses the new secret"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let (status, deleted) = nodes[0]
            .api(Method::DELETE, &format!("/ingest/api/v1/source/{id}"), None)
            .await;
        assert_eq!(status, 204, "{backend}: {deleted}");
        for url in &urls {
            let (status, body) = post(url.clone(), NEW, "msg_gone".into()).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (404, Some("source_not_found")),
                "{backend}: {url}"
            );
        }
    }
    for (_, nodes) in backends {
        for node in nodes {
            node.stop().await.expect("the node stops cleanly");
        }
    }
}

/// A rotated-out ingest URL keeps working for a day by the node's clock, then answers 404:
/// the node runs in process on a clock the test moves, so the day passes without waiting.
#[tokio::test]
async fn a_rotated_ingest_url_works_until_its_grace_period_ends() {
    let dir = TempDir::new("token-grace");
    let clock = hookline_core::clock::ManualClock::starting_now();
    let options = hookline::Options {
        clock: clock.clone(),
        ..hookline::Options::default()
    };
    let server = Server::start_with(&dir.0, &[], options).await;
    let (source_id, old_url) = create_source(&server, "generic-webhook", json!({})).await;
    let (status, rotated) = server
        .api(
            Method::POST,
            &format!("/ingest/api/v1/source/{source_id}/token/rotate"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_url = rotated["ingestUrl"].as_str().unwrap().to_owned();
    assert_ne!(new_url, old_url);

    let client = reqwest::Client::new();
    let post = |url: String| {
        let client = client.clone();
        async move {
            let response = client.post(url).body(r#"{"n":1}"#).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    assert_eq!(
        post(old_url.clone()).await.0,
        200,
        "the old URL still works"
    );
    assert_eq!(post(new_url.clone()).await.0, 200);

    clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert_eq!(
        post(old_url.clone()).await.0,
        200,
        "a second before the day ends"
    );
    clock.advance(Duration::from_secs(2));
    let (status, body) = post(old_url).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("source_not_found"))
    );
    assert_eq!(post(new_url).await.0, 200);
    server.stop().await.expect("the node stops cleanly");
}

/// Providers' credentials never reach the request log: the bearer token a provider
/// authenticates with, a shared secret in `X-Webhook-Secret`, a token in the query, are
/// all shown redacted, whether the request was accepted or refused. The request still
/// verifies against the real credential.
#[tokio::test]
async fn the_request_log_shows_credentials_redacted() {
    let dir = TempDir::new("redaction");
    let server = Server::start(&dir.0, &[]).await;
    let (source_id, ingest_url) =
        create_source(&server, "bearer", json!({"token": "tok-4f9a2c"})).await;
    let client = reqwest::Client::new();
    for (token, status) in [("tok-4f9a2c", 200), ("tok-wrong", 401)] {
        let response = client
            .post(format!("{ingest_url}/hook?access_token={token}&n=1"))
            .bearer_auth(token)
            .header("x-webhook-secret", "hf-shared-secret")
            .body(r#"{"type":"run.done"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
    }
    let (status, log) = server
        .api(
            Method::GET,
            &format!("/ingest/api/v1/source/{source_id}/log"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let entries = log["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for entry in entries {
        assert_eq!(entry["headers"]["authorization"], "[redacted]", "{entry}");
        assert_eq!(
            entry["headers"]["x-webhook-secret"], "[redacted]",
            "{entry}"
        );
        assert_eq!(entry["query"], "access_token=%5Bredacted%5D&n=1", "{entry}");
        assert!(
            entry["headers"].get("x-request-id").is_none(),
            "the log keeps the provider's headers, not the id the server gave: {entry}"
        );
        let text = entry.to_string();
        for secret in ["tok-4f9a2c", "tok-wrong", "hf-shared-secret"] {
            assert!(!text.contains(secret), "{secret} is in the log: {text}");
        }
    }
    let verdicts: Vec<&str> = entries
        .iter()
        .map(|e| e["verdict"].as_str().unwrap())
        .collect();
    assert!(verdicts.contains(&"accepted") && verdicts.contains(&"rejected"));
}

/// A logged request is replayed to the forwarding endpoints it went to, one or a time
/// range; refused requests and duplicates are not, and say why.
#[tokio::test]
async fn logged_requests_are_replayed_one_or_by_time_range() {
    let dir = TempDir::new("ingest-replay");
    for (backend, server) in crate::server::nodes(&dir, "ingest_replay", &[]).await {
        let (receiver, receiver_url) = Receiver::start().await;
        let secret = "It's a Secret to Everybody";
        let (source_id, ingest_url) =
            create_source(&server, "github", json!({"secret": secret})).await;
        let (status, endpoint) = server
            .api(
                Method::POST,
                &format!("/ingest/api/v1/source/{source_id}/endpoint"),
                Some(json!({"url": format!("{receiver_url}/fwd")})),
            )
            .await;
        assert_eq!(status, 201, "{endpoint}");
        let started = chrono::Utc::now() - chrono::Duration::seconds(1);
        let body = r#"{"action":"opened","n":1}"#;
        assert_eq!(post_github(&ingest_url, "", secret, body, "d-1").await, 200);
        assert_eq!(post_github(&ingest_url, "", secret, body, "d-1").await, 200);
        assert_eq!(
            post_github(&ingest_url, "", "wrong", body, "d-2").await,
            401
        );
        receiver
            .wait_until(Duration::from_secs(10), |d| !d.is_empty())
            .await;

        let (status, log) = server
            .api(
                Method::GET,
                &format!("/ingest/api/v1/source/{source_id}/log?order=ascending"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        let entries = log["data"].as_array().unwrap();
        let verdicts: Vec<&str> = entries
            .iter()
            .map(|e| e["verdict"].as_str().unwrap())
            .collect();
        assert_eq!(verdicts, ["accepted", "duplicate", "rejected"], "{backend}");
        let id = |n: usize| entries[n]["id"].as_str().unwrap().to_owned();
        let replay = |request: String| {
            let path = format!("/ingest/api/v1/source/{source_id}/request/{request}/replay");
            let server = &server;
            async move { server.api(Method::POST, &path, None).await }
        };

        let (status, replayed) = replay(id(0)).await;
        assert_eq!(status, 202, "{replayed}");
        assert_eq!(replayed["msgId"], entries[0]["msgId"]);
        assert_eq!(replayed["deliveries"], 1);
        let deliveries = receiver
            .wait_until(Duration::from_secs(10), |d| d.len() >= 2)
            .await;
        assert_eq!(deliveries.len(), 2, "{backend}: replayed once");
        assert_eq!(deliveries[1].body, body.as_bytes());
        assert_eq!(
            deliveries[1].headers["webhook-id"], deliveries[0].headers["webhook-id"],
            "the same message, for the receiver's own dedupe"
        );

        for (n, words) in [(1, "replay the original"), (2, "only accepted requests")] {
            let (status, error) = replay(id(n)).await;
            assert_eq!(status, 409, "{error}");
            assert_eq!(error["code"], "conflict");
            assert!(error["detail"].as_str().unwrap().contains(words), "{error}");
        }
        let (status, error) = replay("ireq_missing".into()).await;
        assert_eq!(status, 404, "{error}");

        let range = |body: serde_json::Value| {
            let path = format!("/ingest/api/v1/source/{source_id}/replay");
            let server = &server;
            async move { server.api(Method::POST, &path, Some(body)).await }
        };
        let since = started.to_rfc3339();
        let (status, replayed) = range(json!({"since": since})).await;
        assert_eq!(status, 202, "{replayed}");
        assert_eq!(
            replayed,
            json!({"replayed": 1, "deliveries": 1, "skipped": 2, "done": true, "iterator": null}),
            "{backend}"
        );
        receiver
            .wait_until(Duration::from_secs(10), |d| d.len() >= 3)
            .await;
        assert_eq!(receiver.deliveries().len(), 3);
        let before = (started - chrono::Duration::hours(1)).to_rfc3339();
        let (status, replayed) = range(json!({"since": before, "until": since})).await;
        assert_eq!(status, 202, "{replayed}");
        assert_eq!(replayed["replayed"], 0, "nothing in that range");
        let (status, error) = range(json!({"since": since, "until": before})).await;
        assert_eq!(status, 422, "{error}");
        let (status, error) = range(json!({"until": since})).await;
        assert_eq!(status, 422, "{error}");

        // The forwarded messages, their attempts and recovery, through the sending API.
        let (_, source) = server
            .api(
                Method::GET,
                &format!("/ingest/api/v1/source/{source_id}"),
                None,
            )
            .await;
        let forwarding = source["forwardingAppId"].as_str().unwrap();
        let (status, messages) = server
            .api(Method::GET, &format!("/api/v1/app/{forwarding}/msg"), None)
            .await;
        assert_eq!(status, 200, "{messages}");
        assert_eq!(messages["data"][0]["id"], entries[0]["msgId"], "{backend}");
        let msg_id = entries[0]["msgId"].as_str().unwrap();
        let (status, attempts) = server
            .api(
                Method::GET,
                &format!("/api/v1/app/{forwarding}/attempt/msg/{msg_id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{attempts}");
        assert_eq!(attempts["data"].as_array().unwrap().len(), 3, "{attempts}");
        let endpoint_id = endpoint["id"].as_str().unwrap();
        let (status, recovered) = server
            .api(
                Method::POST,
                &format!("/api/v1/app/{forwarding}/endpoint/{endpoint_id}/recover"),
                Some(json!({"since": since})),
            )
            .await;
        assert_eq!(status, 202, "{recovered}");
        // Written to through its source only.
        let (status, error) = server
            .api(
                Method::PATCH,
                &format!("/api/v1/app/{forwarding}"),
                Some(json!({"name": "renamed"})),
            )
            .await;
        assert_eq!(status, 409, "{error}");
        assert!(
            error["detail"].as_str().unwrap().contains(&source_id),
            "{error}"
        );
        let (status, error) = server
            .api(
                Method::POST,
                &format!("/api/v1/app/{forwarding}/msg"),
                Some(json!({"eventType": "x.y", "payload": {}})),
            )
            .await;
        assert_eq!(
            status, 409,
            "no message without a received request: {error}"
        );
        let (status, apps) = server.api(Method::GET, "/api/v1/app", None).await;
        assert_eq!(status, 200);
        assert!(
            !apps.to_string().contains(forwarding),
            "not listed among the applications: {apps}"
        );
    }
}

/// A webhook received and forwarded goes to the worker of the node that received it,
/// leased as its forwarding message is created, without a claim; a duplicate forwards
/// nothing.
#[tokio::test]
async fn a_received_webhook_is_forwarded_by_its_node_without_a_claim() {
    let dir = TempDir::new("ingest-handoff");
    let (receiver, receiver_url) = Receiver::start().await;
    let server = Server::start_process(&dir.0, &[]).await;
    let ingest_url = openai_source_forwarding_to(&server, &receiver_url).await;

    let client = reqwest::Client::new();
    let post = |id: &'static str, verdict: &'static str| {
        let body = format!(r#"{{"type":"response.completed","data":{{"id":"{id}"}}}}"#);
        let mut request = client.post(&ingest_url).body(body.clone());
        for (name, value) in openai_headers(body.as_bytes(), &format!("wh_{id}")) {
            request = request.header(name, value);
        }
        async move {
            let answer: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            assert_eq!(answer["verdict"], verdict, "{answer}");
            body
        }
    };
    let counts = |metrics: &str| {
        [
            r#"hookline_handed_deliveries_total{fate="started"}"#,
            r#"hookline_claimed_deliveries_total{fate="started"}"#,
        ]
        .map(|series| metric(metrics, series))
    };
    // Once one forward has been delivered the worker is running (it takes deliveries
    // over before its first claim).
    post("resp_first", "accepted").await;
    receiver
        .wait_until(Duration::from_secs(10), |deliveries| !deliveries.is_empty())
        .await;
    let before = counts(&server.metrics().await);
    let body = post("resp_handoff", "accepted").await;
    post("resp_handoff", "duplicate").await;
    let forwarded = |deliveries: &[crate::server::Delivery]| {
        deliveries
            .iter()
            .filter(|d| d.body == body.as_bytes())
            .count()
    };
    receiver
        .wait_until(Duration::from_secs(10), |deliveries| {
            forwarded(deliveries) > 0
        })
        .await;
    // Time for a second forward, should the duplicate make one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(forwarded(&receiver.deliveries()), 1);
    let metrics = server.metrics().await;
    let [handed, claimed] = counts(&metrics);
    assert_eq!(
        [handed - before[0], claimed - before[1]],
        [1.0, 0.0],
        "handed over, not claimed: {metrics}"
    );
}
