//! Failures the middleware and extractors answer: always JSON, always precise.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::{ADMIN, LIMIT, TestApp, assert_error, assert_invalid, json_of};

fn raw_post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let app = TestApp::new().await;
    let detail = assert_error(
        &app.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(detail, "no such route");
    assert_error(
        &app.call(Method::DELETE, "/api/v1/app", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn plain_text_rejections_become_json() {
    let app = TestApp::new().await;
    // A path segment that is not UTF-8: axum's own rejection, rewritten as JSON.
    let detail = assert_error(
        &app.get("/api/v1/app/%FF").await,
        StatusCode::BAD_REQUEST,
        "generic_error",
    );
    assert!(detail.contains("UTF-8"), "{detail}");
}

#[tokio::test]
async fn malformed_json_is_a_422_with_the_parse_error() {
    let app = TestApp::new().await;
    let (status, headers, bytes) = app.send(raw_post("/api/v1/app", r#"{"name": "x",}"#)).await;
    let (status, body) = json_of(status, &headers, &bytes);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["type"], "value_error.jsondecode");
    assert_eq!(body["detail"][0]["loc"], json!(["body"]));
    assert!(
        body["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("line 1 column 14"),
        "{body}"
    );

    let (status, headers, bytes) = app.send(raw_post("/api/v1/app", "")).await;
    let msg = assert_invalid(&json_of(status, &headers, &bytes), &["body"]);
    assert_eq!(msg, "a JSON body is required");
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let app = TestApp::new().await;
    let response = app.post("/api/v1/app", json!({"name": 5})).await;
    let msg = assert_invalid(&response, &["body", "name"]);
    assert!(
        msg.starts_with("invalid type: integer `5`, expected a string"),
        "{msg}"
    );
    let response = app.post("/api/v1/app", json!({"uid": "u"})).await;
    assert_invalid(&response, &["body", "name"]);
}

fn big_message(extra: usize) -> Vec<u8> {
    let filler = "x".repeat(LIMIT + extra);
    serde_json::to_vec(&json!({"eventType": "a.b", "payload": {"filler": filler}})).unwrap()
}

#[tokio::test]
async fn oversized_bodies_get_413_naming_the_limit() {
    let app = TestApp::new().await;
    let app_id = app.create_app("big").await;
    let uri = format!("/api/v1/app/{app_id}/msg");
    let expected = json!({
        "code": "payload_too_large",
        "detail": format!("request body is too large: the limit is {LIMIT} bytes"),
    });

    // Refused on its Content-Length, before the body is read.
    let body = big_message(1);
    let mut request = raw_post(&uri, body.clone());
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    let (status, headers, bytes) = app.send(request).await;
    assert_eq!(
        json_of(status, &headers, &bytes),
        (StatusCode::PAYLOAD_TOO_LARGE, expected.clone())
    );

    // Without a Content-Length (as a chunked upload): refused while reading.
    let (status, headers, bytes) = app.send(raw_post(&uri, big_message(1))).await;
    assert_eq!(
        json_of(status, &headers, &bytes),
        (StatusCode::PAYLOAD_TOO_LARGE, expected)
    );

    let (_, list) = app.get(&uri).await;
    assert_eq!(list["data"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_body_under_the_limit_is_accepted() {
    let app = TestApp::new().await;
    let app_id = app.create_app("fits").await;
    let filler = "x".repeat(LIMIT - 200);
    let (status, _) = app
        .post(
            &format!("/api/v1/app/{app_id}/msg"),
            json!({"eventType": "a.b", "payload": {"filler": filler}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn limit_above_250_is_refused() {
    let app = TestApp::new().await;
    let response = app.get("/api/v1/app?limit=251").await;
    let msg = assert_invalid(&response, &["query", "limit"]);
    assert_eq!(msg, "Given limit must not exceed 250");
    assert_invalid(&app.get("/api/v1/app?limit=abc").await, &["query", "limit"]);
    let (status, body): (StatusCode, Value) = app.get("/api/v1/app?limit=250").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
