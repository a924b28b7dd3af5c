//! Hostile input, through the API, on every backend: what SQLite takes and PostgreSQL
//! cannot (NUL characters) behaves the same on both. The PostgreSQL half runs when
//! HOOKLINE_TEST_POSTGRES_URL is set (`.ci/run` sets it) and says so when skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Receiver, Server, TempDir};

/// A node on each backend (see [`crate::server::nodes`]).
async fn nodes(dir: &TempDir, name: &str) -> Vec<(&'static str, Server)> {
    crate::server::nodes(dir, name, &[]).await
}

/// A receiver that answers 200 with a body holding NUL bytes, counting the requests.
async fn nul_answering_receiver() -> (Arc<AtomicUsize>, String) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { (StatusCode::OK, "ok\0then\0more") }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (count, url)
}

async fn created(server: &Server, path: &str, body: Value) -> String {
    let (status, out) = server.api(Method::POST, path, Some(body)).await;
    assert!(status == 201 || status == 202, "{path}: {status} {out}");
    out["id"].as_str().unwrap().to_owned()
}

/// An endpoint answering with NUL bytes gets its attempts recorded (the NUL shown as
/// U+FFFD), once each; the endpoint beside it is not held back.
#[tokio::test]
async fn an_answer_holding_nul_bytes_is_recorded_once_on_every_backend() {
    let dir = TempDir::new("hostile-answer");
    for (backend, server) in nodes(&dir, "hostile_answer").await {
        let (nul_count, nul_url) = nul_answering_receiver().await;
        let (plain, plain_url) = Receiver::start().await;
        let app = created(&server, "/api/v1/app", json!({"name": "hostile"})).await;
        let endpoints = format!("/api/v1/app/{app}/endpoint");
        let nul_endpoint = created(&server, &endpoints, json!({"url": nul_url})).await;
        created(
            &server,
            &endpoints,
            json!({"url": format!("{plain_url}/ok")}),
        )
        .await;
        for n in 0..5 {
            let body = json!({"eventType": "job.done", "payload": {"n": n}});
            created(&server, &format!("/api/v1/app/{app}/msg"), body).await;
        }

        let attempts_path = format!("/api/v1/app/{app}/attempt/endpoint/{nul_endpoint}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let attempts = loop {
            let (status, page) = server.api(Method::GET, &attempts_path, None).await;
            assert_eq!(status, 200, "{backend}: {page}");
            let data = page["data"].as_array().cloned().unwrap_or_default();
            if data.len() >= 5 || Instant::now() > deadline {
                break data;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(attempts.len(), 5, "{backend}: every attempt is recorded");
        for attempt in &attempts {
            assert_eq!(attempt["status"], 0, "{backend}: {attempt}");
            assert_eq!(
                attempt["response"], "ok\u{FFFD}then\u{FFFD}more",
                "{backend}"
            );
        }
        plain
            .wait_until(Duration::from_secs(20), |d| d.len() >= 5)
            .await;
        // Recorded means never sent again: nothing more arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            nul_count.load(Ordering::SeqCst),
            5,
            "{backend}: no redelivery"
        );
        assert_eq!(plain.deliveries().len(), 5, "{backend}");
    }
}

/// `\u0000` in any string of a JSON body is refused with a 422 that says why, before
/// anything is written, on every backend.
#[tokio::test]
async fn nul_in_json_strings_is_refused_the_same_on_every_backend() {
    let dir = TempDir::new("hostile-json");
    for (backend, server) in nodes(&dir, "hostile_json").await {
        let app = created(&server, "/api/v1/app", json!({"name": "ok"})).await;
        let event_type = json!({"name": "job.done", "description": "done"});
        let (status, out) = server
            .api(Method::POST, "/api/v1/event-type", Some(event_type))
            .await;
        assert_eq!(status, 201, "{backend}: {out}");
        let cases = [
            (
                Method::POST,
                "/api/v1/app".to_owned(),
                json!({"name": "a\u{0}b"}),
            ),
            (
                Method::POST,
                format!("/api/v1/app/{app}/msg"),
                json!({"eventType": "job.done", "payload": {"text": "x\u{0}y"}}),
            ),
            (
                Method::PATCH,
                "/api/v1/event-type/job.done".to_owned(),
                json!({"description": "\u{0}"}),
            ),
            (
                Method::POST,
                "/ingest/api/v1/source".to_owned(),
                json!({"name": "s", "type": "generic-webhook", "metadata": {"k\u{0}": "v"}}),
            ),
            (
                Method::POST,
                "/api/v1/job".to_owned(),
                json!({"provider": "custom", "appId": app, "metadata": {"k": "\u{0}"}}),
            ),
            (
                Method::POST,
                "/ingest/api/v1/source/any/replay".to_owned(),
                json!({"since": "2026-01-01T00:00:00Z", "iterator": "ireq_\u{0}"}),
            ),
        ];
        for (method, path, body) in cases {
            let (status, out) = server.api(method.clone(), &path, Some(body)).await;
            assert_eq!(status, 422, "{backend}: {method} {path}: {out}");
            assert_eq!(out["detail"][0]["loc"], json!(["body"]), "{backend}: {out}");
            let msg = out["detail"][0]["msg"].as_str().unwrap_or_default();
            assert!(msg.contains("NUL"), "{backend}: {msg}");
        }
        let (_, apps) = server.api(Method::GET, "/api/v1/app", None).await;
        assert_eq!(
            apps["data"].as_array().map(Vec::len),
            Some(1),
            "{backend}: {apps}"
        );
        let (_, messages) = server
            .api(Method::GET, &format!("/api/v1/app/{app}/msg"), None)
            .await;
        assert_eq!(messages["data"], json!([]), "{backend}");
    }
}

/// An encoded NUL (`%00`) in a path id or a query filter is refused with a 422 naming the
/// part, before anything is looked up, on every backend (PostgreSQL cannot compare text
/// holding one); a JSON array where an object is expected is refused too.
#[tokio::test]
async fn nul_in_a_path_or_query_and_non_object_bodies_are_refused_on_every_backend() {
    let dir = TempDir::new("hostile-uri");
    for (backend, server) in nodes(&dir, "hostile_uri").await {
        let app = created(&server, "/api/v1/app", json!({"name": "ok"})).await;
        let cases = [
            (Method::GET, "/api/v1/app/app%00x".to_owned(), "path"),
            (
                Method::DELETE,
                format!("/api/v1/app/{app}/endpoint/ep%00"),
                "path",
            ),
            (Method::GET, "/api/v1/job?group=g%00".to_owned(), "query"),
            (
                Method::GET,
                format!("/api/v1/app/{app}/msg?event_types=a%00"),
                "query",
            ),
            (
                Method::GET,
                format!("/api/v1/app/{app}/attempt/endpoint/ep_x?channel=%00"),
                "query",
            ),
        ];
        for (method, path, part) in cases {
            let (status, out) = server.api(method.clone(), &path, None).await;
            assert_eq!(status, 422, "{backend}: {method} {path}: {out}");
            assert_eq!(out["detail"][0]["loc"], json!([part]), "{backend}: {out}");
        }
        let (status, out) = server
            .api(
                Method::POST,
                &format!("/api/v1/auth/app-portal-access/{app}"),
                Some(json!([null, null])),
            )
            .await;
        assert_eq!(status, 422, "{backend}: {out}");
        assert_eq!(
            out["detail"][0]["msg"], "must be a JSON object",
            "{backend}"
        );
        let (status, out) = server
            .api(Method::POST, "/api/v1/app", Some(json!(["named"])))
            .await;
        assert_eq!(status, 422, "{backend}: {out}");
        let (_, apps) = server.api(Method::GET, "/api/v1/app", None).await;
        assert_eq!(apps["data"].as_array().map(Vec::len), Some(1), "{backend}");
    }
}

/// A body holding a NUL byte posted to an ingest URL is refused with `body_has_nul`, and
/// logged as refused, on every backend.
#[tokio::test]
async fn nul_in_an_ingest_body_is_refused_and_logged_on_every_backend() {
    let dir = TempDir::new("hostile-ingest");
    for (backend, server) in nodes(&dir, "hostile_ingest").await {
        let (status, source) = server
            .api(
                Method::POST,
                "/ingest/api/v1/source",
                Some(json!({"name": "raw", "type": "generic-webhook"})),
            )
            .await;
        assert_eq!(status, 201, "{backend}: {source}");
        let ingest_url = source["ingestUrl"].as_str().unwrap();
        let response = reqwest::Client::new()
            .post(ingest_url)
            .body(b"{\"a\":\"x\0y\"}".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{backend}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "body_has_nul", "{backend}: {answer}");

        let log_path = format!(
            "/ingest/api/v1/source/{}/log",
            source["id"].as_str().unwrap()
        );
        let (status, log) = server.api(Method::GET, &log_path, None).await;
        assert_eq!(status, 200, "{backend}: {log}");
        let entry = &log["data"][0];
        assert_eq!(
            (entry["verdict"].as_str(), entry["reasonCode"].as_str()),
            (Some("rejected"), Some("body_has_nul")),
            "{backend}: {log}"
        );
        assert_eq!(
            entry["payloadBase64"], "eyJhIjoieAB5In0=",
            "{backend}: the exact bytes"
        );
    }
}

/// Where the contract expects an object, an array is refused with a 422 naming the field
/// (a transformation's `variables`, an object of strings).
#[tokio::test]
async fn an_array_where_an_object_is_expected_is_refused() {
    let dir = TempDir::new("hostile-shapes");
    let server = Server::start(&dir.0, &[]).await;
    let (status, source) = server
        .api(
            Method::POST,
            "/ingest/api/v1/source",
            Some(json!({"name": "shapes", "type": "generic-webhook"})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    let source = source["id"].as_str().unwrap();
    let endpoint = created(
        &server,
        &format!("/ingest/api/v1/source/{source}/endpoint"),
        json!({"url": "https://example.test/hook"}),
    )
    .await;
    let path = format!("/ingest/api/v1/source/{source}/endpoint/{endpoint}/transformation");
    let (status, out) = server
        .api(Method::PATCH, &path, Some(json!({"variables": ["a", "b"]})))
        .await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(
        out["detail"][0]["loc"],
        json!(["body", "variables"]),
        "{out}"
    );
    let (status, out) = server
        .api(
            Method::PATCH,
            &path,
            Some(json!({"variables": {"region": "eu"}})),
        )
        .await;
    assert_eq!(status, 204, "{out}");
}

/// A provider's id holding a NUL (`\u0000` in a Stripe event's `id`) is not trusted as a
/// dedupe key: the request is accepted and deduplicated by its body's hash, the same on
/// every backend (PostgreSQL cannot store the character).
#[tokio::test]
async fn a_provider_id_holding_nul_is_not_used_as_the_dedupe_key() {
    use hookline_signature::{Keyset, Message, Scheme};

    let dir = TempDir::new("hostile-dedupe");
    for (backend, server) in nodes(&dir, "hostile_dedupe").await {
        let secret = "whsec_stripe_test_secret";
        let (status, source) = server
            .api(
                Method::POST,
                "/ingest/api/v1/source",
                Some(json!({"name": "stripe", "type": "stripe", "config": {"secret": secret}})),
            )
            .await;
        assert_eq!(status, 201, "{backend}: {source}");
        let ingest_url = source["ingestUrl"].as_str().unwrap();
        let body = br#"{"id":"evt_\u0000x","type":"charge.succeeded"}"#;
        let keys = Keyset::new(Scheme::Stripe, [secret]).unwrap();
        let now = chrono::Utc::now().timestamp();
        let headers = keys
            .sign(&Message {
                id: "unused",
                timestamp: now,
                body,
            })
            .unwrap();
        for expected in ["accepted", "duplicate"] {
            let mut request = reqwest::Client::new().post(ingest_url).body(body.to_vec());
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200, "{backend}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["verdict"], expected, "{backend}: {answer}");
        }
    }
}

/// A message for an application that does not exist, named by an id (looked up by the
/// create itself, not before it) or by a uid, is refused with 404 `not_found` on every
/// backend, and leaves nothing behind; a create among them for an application that
/// exists goes through.
#[tokio::test]
async fn a_message_for_a_missing_application_is_not_found_on_every_backend() {
    let dir = TempDir::new("hostile-missing-app");
    for (backend, server) in nodes(&dir, "hostile_missing_app").await {
        let app = created(&server, "/api/v1/app", json!({"name": "ok"})).await;
        let message = json!({"eventType": "a.b", "payload": {"n": 1}, "eventId": "evt-1"});
        for key in ["app_2nKq0000000000000000000000", "app_", "no-such-uid"] {
            let path = format!("/api/v1/app/{key}/msg");
            let (status, out) = server.api(Method::POST, &path, Some(message.clone())).await;
            assert_eq!(status, 404, "{backend}: {path}: {out}");
            assert_eq!(out["code"], "not_found", "{backend}: {out}");
            assert_eq!(out["detail"], "application not found", "{backend}: {out}");
        }
        // With an idempotency key, twice: the second is not answered from a record.
        let missing = format!(
            "{}/api/v1/app/app_2nKq0000000000000000000000/msg",
            server.url
        );
        for attempt in 0..2 {
            let response = reqwest::Client::new()
                .post(&missing)
                .bearer_auth(crate::server::TOKEN)
                .header("idempotency-key", "missing-app-key")
                .json(&message)
                .send()
                .await
                .expect("create");
            assert_eq!(response.status(), 404, "{backend}: attempt {attempt}");
        }
        created(&server, &format!("/api/v1/app/{app}/msg"), message).await;
        let (_, apps) = server.api(Method::GET, "/api/v1/app", None).await;
        assert_eq!(apps["data"].as_array().map(Vec::len), Some(1), "{backend}");
        let (_, messages) = server
            .api(Method::GET, &format!("/api/v1/app/{app}/msg"), None)
            .await;
        assert_eq!(
            messages["data"].as_array().map(Vec::len),
            Some(1),
            "{backend}"
        );
    }
}
