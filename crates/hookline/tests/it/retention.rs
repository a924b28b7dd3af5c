//! What a node keeps, end to end: refused requests cut and capped per source (on every
//! backend, and across two nodes sharing PostgreSQL), request log pages bounded in bytes,
//! and message payloads removed when their retention ends. Nodes run on a clock the test
//! moves, so minutes and days pass without waiting.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hookline_core::Clock as _;
use hookline_core::clock::ManualClock;
use hookline_signature::{Keyset, Message, Scheme};
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Receiver, Server, TempDir, postgres_schema};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn on(clock: &Arc<ManualClock>) -> hookline::Options {
    hookline::Options {
        clock: clock.clone(),
        ..hookline::Options::default()
    }
}

/// Creates a source; answers `(id, ingest URL)`.
async fn source(server: &Server, source_type: &str, config: Value) -> (String, String) {
    let (status, source) = server
        .api(
            Method::POST,
            "/ingest/api/v1/source",
            Some(json!({"name": "provider", "type": source_type, "config": config})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    (
        source["id"].as_str().unwrap().to_owned(),
        source["ingestUrl"].as_str().unwrap().to_owned(),
    )
}

/// Every entry of a source's log, newest first, walking its pages; each page is checked
/// against `check`.
async fn whole_log(server: &Server, source: &str, check: impl Fn(&Value)) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut path = format!("/ingest/api/v1/source/{source}/log?limit=250");
    loop {
        let (status, page) = server.api(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        check(&page);
        entries.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["done"] == json!(true) {
            return entries;
        }
        let iterator = page["iterator"].as_str().unwrap();
        path = format!("/ingest/api/v1/source/{source}/log?limit=250&iterator={iterator}");
    }
}

/// Unsigned requests to a signed source are refused: the log keeps the start of each
/// body and at most `HOOKLINE_INGEST_REFUSED_PER_MINUTE` of them a minute, counted in the
/// database, so two nodes sharing PostgreSQL keep that many in all, not each. Those over
/// the cap are still answered with their refusal, and the next minute's first entry says
/// how many were skipped. Accepted requests are never cut or skipped.
#[tokio::test]
async fn refused_requests_are_cut_and_capped_per_source_on_every_backend() {
    let dir = TempDir::new("refused-cap");
    // The middle of a minute, so that the test's requests all fall in one.
    let start = chrono::Utc::now();
    let minute = chrono::DateTime::from_timestamp(start.timestamp() / 60 * 60 + 30, 0).unwrap();
    let clock = ManualClock::new(minute);
    let limits = [
        ("HOOKLINE_INGEST_REFUSED_PER_MINUTE", "3"),
        ("HOOKLINE_INGEST_REFUSED_BODY_BYTES", "64"),
    ];
    let mut backends: Vec<(&str, Vec<Server>)> = vec![(
        "sqlite",
        vec![Server::start_with(&dir.0, &limits, on(&clock)).await],
    )];
    if let Some(url) = postgres_schema("refused_cap") {
        let mut env = limits.to_vec();
        env.extend([
            ("HOOKLINE_DATABASE_URL", url.as_str()),
            ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
        ]);
        let first = Server::start_with(&dir.0, &env, on(&clock)).await;
        let second = Server::start_with(&dir.0, &env, on(&clock)).await;
        backends.push(("postgres, two nodes", vec![first, second]));
    }
    let client = reqwest::Client::new();
    for (backend, nodes) in &backends {
        clock.set(minute);
        let (id, url) = source(&nodes[0], "standard-webhooks", json!({"secret": SECRET})).await;
        let token_path = url.split("/in/").nth(1).unwrap().to_owned();
        let big = format!(r#"{{"type":"a","pad":"{}"}}"#, "x".repeat(10_000));
        for n in 0..10 {
            let node = &nodes[n % nodes.len()];
            let response = client
                .post(format!("{}/in/{token_path}", node.url))
                .body(big.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{backend}: every one is answered");
        }
        let signed = |body: &str| {
            let keys = Keyset::new(Scheme::Standard, [SECRET]).unwrap();
            keys.sign(&Message {
                id: "msg_accepted",
                timestamp: clock.now().timestamp(),
                body: body.as_bytes(),
            })
            .unwrap()
        };
        let mut accepted = client.post(&url).body(big.clone());
        for (name, value) in signed(&big) {
            accepted = accepted.header(name, value);
        }
        assert_eq!(accepted.send().await.unwrap().status(), 200, "{backend}");

        let log = whole_log(&nodes[0], &id, |_| {}).await;
        let refused: Vec<&Value> = log.iter().filter(|e| e["verdict"] == "rejected").collect();
        assert_eq!(
            refused.len(),
            3,
            "{backend}: three a minute in all: {log:?}"
        );
        for entry in &refused {
            let kept = base64::engine::general_purpose::STANDARD
                .decode(entry["payloadBase64"].as_str().unwrap())
                .unwrap();
            assert_eq!(
                kept,
                &big.as_bytes()[..64],
                "{backend}: the start of the body"
            );
            assert_eq!(entry["bodySize"], big.len(), "{backend}");
            assert_eq!(entry["bodyTruncated"], true, "{backend}");
        }
        let whole = log.iter().find(|e| e["verdict"] == "accepted").unwrap();
        assert_eq!(
            whole["payload"].as_str().unwrap(),
            big,
            "{backend}: kept whole"
        );
        assert_eq!(whole["bodyTruncated"], false, "{backend}");

        clock.advance(Duration::from_secs(60));
        let response = client.post(&url).body("{}").send().await.unwrap();
        assert_eq!(response.status(), 401, "{backend}");
        let (_, page) = nodes[0]
            .api(
                Method::GET,
                &format!("/ingest/api/v1/source/{id}/log?limit=1"),
                None,
            )
            .await;
        assert_eq!(
            page["data"][0]["droppedBefore"], 7,
            "{backend}: the next minute's first says how many were skipped: {page}"
        );
        assert_eq!(page["data"][0]["bodyTruncated"], false, "{backend}");
    }
}

/// A page of the request log holds at most `LOG_PAGE_BODY_BYTES` of bodies, however
/// large the `limit`, and paging on returns every entry exactly once.
#[tokio::test]
async fn log_pages_of_big_bodies_stay_within_their_budget() {
    const REQUESTS: usize = 12;
    let budget = hookline_server::ingest::source::LOG_PAGE_BODY_BYTES;
    let dir = TempDir::new("log-budget");
    let mut backends = vec![("sqlite", Server::start(&dir.0, &[]).await)];
    if let Some(url) = postgres_schema("log_budget") {
        let env = [
            ("HOOKLINE_DATABASE_URL", url.as_str()),
            ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
        ];
        backends.push(("postgres", Server::start(&dir.0, &env).await));
    }
    let client = reqwest::Client::new();
    for (backend, server) in &backends {
        let (id, url) = source(server, "generic-webhook", json!({})).await;
        let mut sent = HashSet::new();
        for n in 0..REQUESTS {
            let body = format!(r#"{{"n":{n},"pad":"{}"}}"#, "y".repeat(900_000));
            let response = client.post(&url).body(body).send().await.unwrap();
            assert_eq!(response.status(), 200, "{backend}");
            let answer: Value = response.json().await.unwrap();
            sent.insert(answer["id"].as_str().unwrap().to_owned());
        }
        let pages = std::sync::Mutex::new(0);
        let log = whole_log(server, &id, |page| {
            *pages.lock().unwrap() += 1;
            let bodies: usize = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["bodySize"].as_u64().unwrap() as usize)
                .sum();
            assert!(bodies <= budget, "{backend}: a page of {bodies} bytes");
        })
        .await;
        let ids: Vec<String> = log
            .iter()
            .map(|entry| entry["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), REQUESTS, "{backend}: each once");
        assert_eq!(
            ids.iter().cloned().collect::<HashSet<_>>(),
            sent,
            "{backend}"
        );
        let pages = *pages.lock().unwrap();
        assert!(
            pages > REQUESTS * 900_000 / budget,
            "{backend}: {pages} pages"
        );
    }
}

/// Waits until `check` holds of what `path` answers, or fails after 20 seconds.
async fn eventually(server: &Server, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = server.api(Method::GET, path, None).await;
        if check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: still {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A message's payload is removed once its `payloadRetentionPeriod` (or the server's
/// retention) has passed by the node's clock; the message then shows `{"expired": true}`
/// and a resend answers `missing_payload`.
#[tokio::test]
async fn an_expired_payload_is_gone_and_cannot_be_resent() {
    let dir = TempDir::new("payload-retention");
    let clock = ManualClock::starting_now();
    let (receiver, receiver_url) = Receiver::start().await;
    let env = [
        ("HOOKLINE_PAYLOAD_RETENTION", "604800"),
        // A short log retention makes the sweep run every second.
        ("HOOKLINE_INGEST_LOG_RETENTION", "2"),
    ];
    let server = Server::start_with(&dir.0, &env, on(&clock)).await;
    let (status, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "Acme"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app = app["id"].as_str().unwrap().to_owned();
    let (status, endpoint) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app}/endpoint"),
            Some(json!({"url": format!("{receiver_url}/hook")})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();
    let messages = format!("/api/v1/app/{app}/msg");
    let create = |retention: Option<i64>| {
        let mut body = json!({"eventType": "job.done", "payload": {"job": 1}});
        if let Some(days) = retention {
            body["payloadRetentionPeriod"] = json!(days);
        }
        server.api(Method::POST, &messages, Some(body))
    };
    let (status, short) = create(Some(5)).await;
    assert_eq!(status, 202, "{short}");
    let (status, default) = create(None).await;
    assert_eq!(status, 202, "{default}");
    let short = short["id"].as_str().unwrap().to_owned();
    let default = default["id"].as_str().unwrap().to_owned();
    receiver
        .wait_until(Duration::from_secs(20), |deliveries| deliveries.len() >= 2)
        .await;

    let expired = |body: &Value| body["payload"] == json!({"expired": true});
    let kept = |body: &Value| body["payload"] == json!({"job": 1});
    let short_path = format!("/api/v1/app/{app}/msg/{short}");
    let default_path = format!("/api/v1/app/{app}/msg/{default}");
    clock.advance(Duration::from_secs(4 * 86_400));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        kept(&server.api(Method::GET, &short_path, None).await.1),
        "day 4: kept"
    );

    clock.advance(Duration::from_secs(86_400 + 1));
    eventually(&server, &short_path, expired).await;
    assert!(
        kept(&server.api(Method::GET, &default_path, None).await.1),
        "the server's retention (7 days) is longer"
    );
    let (status, refused) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app}/msg/{short}/endpoint/{endpoint}/resend"),
            None,
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("missing_payload")),
        "{refused}"
    );

    clock.advance(Duration::from_secs(2 * 86_400));
    eventually(&server, &default_path, expired).await;
}
