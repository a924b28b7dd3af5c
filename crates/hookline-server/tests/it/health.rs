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
