//! `idempotency-key` on POST.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hookline_core::model::Token;
use serde_json::{Value, json};

use crate::{ADMIN, TestApp, json_of};

fn post(uri: &str, token: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

async fn count(app: &TestApp, uri: &str) -> usize {
    let (_, page) = app.get(uri).await;
    page["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_retried_message_create_is_replayed_not_duplicated() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    app.create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/msg");
    let body = json!({"eventType": "a", "payload": {"n": 1}});

    let (status, _, first) = app.send(post(&uri, ADMIN, Some("key-1"), &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, headers, second) = app.send(post(&uri, ADMIN, Some("key-1"), &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first, second, "the same bytes");
    assert_eq!(
        json_of(status, &headers, &second).1["payload"],
        json!({"n": 1})
    );
    assert_eq!(count(&app, &uri).await, 1);

    // Another key, another URL or no key: new messages.
    app.send(post(&uri, ADMIN, Some("key-2"), &body)).await;
    app.send(post(
        &format!("{uri}?with_content=false"),
        ADMIN,
        Some("key-1"),
        &body,
    ))
    .await;
    app.send(post(&uri, ADMIN, None, &body)).await;
    app.send(post(&uri, ADMIN, None, &body)).await;
    assert_eq!(count(&app, &uri).await, 5);
}

#[tokio::test]
async fn records_belong_to_one_token() {
    let app = TestApp::new().await;
    app.store
        .put_token(&Token {
            hash: hookline_server::auth::token_hash("second-admin"),
            app_id: None,
            created_at: app.clock.now(),
            expires_at: None,
        })
        .await
        .unwrap();
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/msg");
    let body = json!({"eventType": "a", "payload": {}});
    let (_, _, first) = app.send(post(&uri, ADMIN, Some("shared"), &body)).await;
    let (_, _, second) = app
        .send(post(&uri, "second-admin", Some("shared"), &body))
        .await;
    assert_ne!(first, second);
    assert_eq!(count(&app, &uri).await, 2);
}

#[tokio::test]
async fn failures_are_not_recorded() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/endpoint");
    let (status, _, _) = app
        .send(post(&uri, ADMIN, Some("k"), &json!({"url": "ftp://x"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let good = json!({"url": "https://x.example"});
    let (status, _, first) = app.send(post(&uri, ADMIN, Some("k"), &good)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, again) = app.send(post(&uri, ADMIN, Some("k"), &good)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "replayed with the first status"
    );
    assert_eq!(first, again);
    assert_eq!(count(&app, &uri).await, 1);

    // Unauthenticated requests are never replayed.
    let (status, _, _) = app.send(post(&uri, "wrong", Some("k"), &good)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn concurrent_duplicates_run_once() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/msg");
    let body = json!({"eventType": "a", "payload": {}});
    let (one, two, three) = tokio::join!(
        app.send(post(&uri, ADMIN, Some("race"), &body)),
        app.send(post(&uri, ADMIN, Some("race"), &body)),
        app.send(post(&uri, ADMIN, Some("race"), &body)),
    );
    assert_eq!(one.0, StatusCode::ACCEPTED);
    assert_eq!(one.2, two.2);
    assert_eq!(one.2, three.2);
    assert_eq!(count(&app, &uri).await, 1);
}

#[tokio::test]
async fn bodiless_posts_replay_too() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let ep = app
        .create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let msg = app
        .send_message(&app_id, json!({"eventType": "a", "payload": {}}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/msg/{msg}/endpoint/{ep}/resend");
    for _ in 0..2 {
        let request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header("idempotency-key", "auto_1234")
            .body(Body::empty())
            .unwrap();
        let (status, headers, bytes) = app.send(request).await;
        assert_eq!(
            json_of(status, &headers, &bytes),
            (StatusCode::ACCEPTED, json!({}))
        );
    }
}

/// Answers that hold a secret (an issued app token, a rotated signing key) are never kept
/// for replay: idempotency records are stored as they are, and tokens are stored only
/// hashed, keys sealed. A retry with the same key is carried out again.
#[tokio::test]
async fn answers_holding_a_secret_are_not_kept_for_replay() {
    let app = TestApp::new().await;
    let app_id = app.create_app("secrets").await;
    let endpoint = app
        .create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let cases = [
        (
            format!("/api/v1/auth/app-portal-access/{app_id}"),
            json!({}),
            "token",
        ),
        (
            format!("/api/v1/app/{app_id}/endpoint/{endpoint}/secret/rotate"),
            json!({}),
            "key",
        ),
    ];
    for (uri, body, field) in cases {
        let mut secrets = Vec::new();
        for _ in 0..2 {
            let (status, headers, bytes) =
                app.send(post(&uri, ADMIN, Some("same-key"), &body)).await;
            let (_, out) = json_of(status, &headers, &bytes);
            assert!(status.is_success(), "{uri}: {out}");
            secrets.push(out[field].as_str().unwrap().to_owned());
        }
        assert_ne!(
            secrets[0], secrets[1],
            "{uri}: not replayed from a stored answer"
        );
    }
}
