//! Health checks need no token.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::TestApp;

#[tokio::test]
async fn health_answers_204_to_get_and_head_without_a_token() {
    let app = TestApp::new().await;
    for path in ["/api/v1/health", "/api/v1/health/ping"] {
        for method in [Method::GET, Method::HEAD] {
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let (status, _, body) = app.send(request).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{method} {path}");
            assert!(body.is_empty());
        }
    }
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::new().await;
    assert_eq!(
        app.call_as(None, Method::GET, "/healthz", None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
}

/// Every answer carries `x-request-id`: the client's own when it sent a usable one (or the
/// Svix SDKs' `svix-req-id`), else a new one per request.
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::new().await;
    let request_id = |request: Request<Body>| async {
        let (_, headers, _) = app.send(request).await;
        headers
            .get("x-request-id")
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let get = |name: Option<(&str, &str)>| {
        let mut request = Request::builder().uri("/api/v1/app");
        if let Some((name, value)) = name {
            request = request.header(name, value);
        }
        request.body(Body::empty()).unwrap()
    };
    let first = request_id(get(None)).await.expect("a generated id");
    let second = request_id(get(None)).await.expect("a generated id");
    assert!(
        first.starts_with("req_") && first != second,
        "{first} {second}"
    );
    assert_eq!(
        request_id(get(Some(("x-request-id", "client-7f3a"))))
            .await
            .as_deref(),
        Some("client-7f3a")
    );
    assert_eq!(
        request_id(get(Some(("svix-req-id", "12345"))))
            .await
            .as_deref(),
        Some("12345")
    );
    let too_long = "x".repeat(200);
    let replaced = request_id(get(Some(("x-request-id", &too_long))))
        .await
        .unwrap();
    assert!(replaced.starts_with("req_"), "{replaced}");
}
