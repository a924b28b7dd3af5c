//! `/api/v1/app/{app_id}/msg`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::{ADMIN, TestApp, assert_error, assert_invalid, json_of};

#[tokio::test]
async fn create_keeps_the_payload_text_exactly_and_wakes_the_engine() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    app.create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let raw = r#"{"eventType":"job.done","eventId":"evt-1","channels":["ch"],"payload":{"b": 1,  "a": [1.50, "é"]}}"#;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/app/{app_id}/msg"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(raw))
        .unwrap();
    let (status, headers, bytes) = app.send(request).await;
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert!(
        text.contains(r#""payload":{"b": 1,  "a": [1.50, "é"]}"#),
        "{text}"
    );
    let (_, out) = json_of(status, &headers, &bytes);
    assert!(out["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out["eventType"], "job.done");
    assert_eq!(out["eventId"], "evt-1");
    assert_eq!(out["channels"], json!(["ch"]));
    assert!(out["timestamp"].as_str().unwrap().ends_with('Z'));
    tokio::time::timeout(Duration::from_secs(1), app.wake.notified())
        .await
        .expect("the engine was woken");

    // Read back exactly as well, by id and by eventId.
    let request = Request::builder()
        .uri(format!("/api/v1/app/{app_id}/msg/evt-1"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (_, _, bytes) = app.send(request).await;
    assert!(String::from_utf8_lossy(&bytes).contains(r#""payload":{"b": 1,  "a": [1.50, "é"]}"#));
    let (status, by_id) = app
        .get(&format!(
            "/api/v1/app/{app_id}/msg/{}",
            out["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!((status, by_id), (StatusCode::OK, out));
}

#[tokio::test]
async fn bad_messages_are_422() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/msg");
    for payload in [json!([1]), json!("text"), json!(3), Value::Null] {
        let msg = assert_invalid(
            &app.post(&uri, json!({"eventType": "a.b", "payload": payload}))
                .await,
            &["body", "payload"],
        );
        assert_eq!(msg, "Payload must be an object.");
    }
    assert_invalid(
        &app.post(&uri, json!({"eventType": "a.b"})).await,
        &["body", "payload"],
    );
    assert_invalid(
        &app.post(&uri, json!({"payload": {}})).await,
        &["body", "eventType"],
    );
    assert_invalid(
        &app.post(&uri, json!({"eventType": "a b", "payload": {}}))
            .await,
        &["body", "eventType"],
    );
    assert_invalid(
        &app.post(&uri, json!({"eventType": 7, "payload": {}})).await,
        &["body", "eventType"],
    );
    assert_invalid(
        &app.post(
            &uri,
            json!({"eventType": "a", "payload": {}, "eventId": "msg_1"}),
        )
        .await,
        &["body", "eventId"],
    );
    let channels: Vec<String> = (0..6).map(|n| format!("c{n}")).collect();
    assert_invalid(
        &app.post(
            &uri,
            json!({"eventType": "a", "payload": {}, "channels": channels}),
        )
        .await,
        &["body", "channels"],
    );
    assert_invalid(
        &app.post(
            &uri,
            json!({"eventType": "a", "payload": {}, "channels": ["ok", 5]}),
        )
        .await,
        &["body", "channels", "[1]"],
    );
    assert_invalid(
        &app.post(
            &uri,
            json!({"eventType": "a", "payload": {}, "application": {"name": ""}}),
        )
        .await,
        &["body", "application", "name"],
    );
    assert_invalid(
        &app.post(
            &format!("{uri}?with_content=maybe"),
            json!({"eventType": "a", "payload": {}}),
        )
        .await,
        &["query", "with_content"],
    );
}

#[tokio::test]
async fn event_ids_are_unique_per_app() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let other = app.create_app("b").await;
    let body = json!({"eventType": "a", "eventId": "once", "payload": {}});
    app.send_message(&app_id, body.clone()).await;
    assert_error(
        &app.post(&format!("/api/v1/app/{app_id}/msg"), body.clone())
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    app.send_message(&other, body).await;
}

#[tokio::test]
async fn application_field_creates_the_app() {
    let app = TestApp::new().await;
    let body = json!({"eventType": "a", "payload": {"k": 1}, "application": {"name": "Lazy"}});
    let (status, out) = app.post("/api/v1/app/lazy-app/msg", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{out}");
    let (status, created) = app.get("/api/v1/app/lazy-app").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (created["name"].as_str(), created["uid"].as_str()),
        (Some("Lazy"), Some("lazy-app"))
    );
    // The second time the app exists and the field is ignored.
    assert_eq!(
        app.post("/api/v1/app/lazy-app/msg", body).await.0,
        StatusCode::ACCEPTED
    );
    let (_, apps) = app.get("/api/v1/app").await;
    assert_eq!(apps["data"].as_array().unwrap().len(), 1);

    let detail = assert_error(
        &app.post(
            "/api/v1/app/nobody/msg",
            json!({"eventType": "a", "payload": {}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(detail, "application not found");
}

#[tokio::test]
async fn with_content_false_hides_payloads() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let (status, out) = app
        .post(
            &format!("/api/v1/app/{app_id}/msg?with_content=false"),
            json!({"eventType": "a", "payload": {"k": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(out["payload"], json!({}));
    let id = out["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/app/{app_id}/msg/{id}?with_content=false"))
            .await
            .1["payload"],
        json!({})
    );
    assert_eq!(
        app.get(&format!("/api/v1/app/{app_id}/msg/{id}")).await.1["payload"],
        json!({"k": 1})
    );
    let (_, list) = app
        .get(&format!("/api/v1/app/{app_id}/msg?with_content=false"))
        .await;
    assert_eq!(list["data"][0]["payload"], json!({}));
}

#[tokio::test]
async fn list_filters_and_pages() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/msg");
    let a = app
        .send_message(
            &app_id,
            json!({"eventType": "t.a", "payload": {}, "channels": ["red"]}),
        )
        .await;
    let b = app
        .send_message(
            &app_id,
            json!({"eventType": "t.b", "payload": {}, "channels": ["blue"]}),
        )
        .await;
    let c = app
        .send_message(&app_id, json!({"eventType": "t.c", "payload": {}}))
        .await;
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first: ids sort by creation time to the millisecond, then by their random part.
    let newest_first = |of: &[&String]| -> Vec<String> {
        let mut of: Vec<String> = of.iter().map(|id| id.to_string()).collect();
        of.sort_unstable_by(|x, y| y.cmp(x));
        of
    };

    let (status, all) = app.get(&uri).await;
    assert_eq!(status, StatusCode::OK);
    let everything = newest_first(&[&a, &b, &c]);
    assert_eq!(ids(&all), everything);
    assert_eq!(all["done"], true);
    assert_eq!(
        ids(&app.get(&format!("{uri}?channel=red")).await.1),
        newest_first(&[&a])
    );
    assert_eq!(
        ids(&app.get(&format!("{uri}?event_types=t.a%2Ct.c")).await.1),
        newest_first(&[&a, &c])
    );
    assert_eq!(
        ids(&app
            .get(&format!("{uri}?event_types=t.a&event_types=t.b"))
            .await
            .1),
        newest_first(&[&a, &b])
    );

    let (_, first) = app.get(&format!("{uri}?limit=2")).await;
    assert_eq!(ids(&first), everything[..2]);
    assert_eq!(first["done"], false);
    let (_, second) = app
        .get(&format!(
            "{uri}?limit=2&iterator={}",
            first["iterator"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&second), everything[2..]);
    assert_eq!(second["done"], true);

    let future = "2999-01-01T00:00:00Z";
    let past = "2000-01-01T00:00:00";
    assert_eq!(
        ids(&app.get(&format!("{uri}?before={future}")).await.1).len(),
        3
    );
    assert!(ids(&app.get(&format!("{uri}?before={past}")).await.1).is_empty());
    assert!(ids(&app.get(&format!("{uri}?after={future}")).await.1).is_empty());
    assert_eq!(
        ids(&app.get(&format!("{uri}?after={past}")).await.1),
        everything
    );
    assert_invalid(
        &app.get(&format!("{uri}?after={past}&before={future}"))
            .await,
        &["query", "after"],
    );
    assert_invalid(
        &app.get(&format!("{uri}?limit=1000")).await,
        &["query", "limit"],
    );
    assert_invalid(
        &app.get(&format!("{uri}?before=not-a-time")).await,
        &["query", "before"],
    );
}

#[tokio::test]
async fn expunged_payloads_read_as_expired() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let ep = app
        .create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let id = app
        .send_message(&app_id, json!({"eventType": "a", "payload": {"secret": 1}}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/msg/{id}");
    assert_eq!(
        app.call(Method::DELETE, &format!("{uri}/content"), None)
            .await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(app.get(&uri).await.1["payload"], json!({"expired": true}));
    let detail = assert_error(
        &app.call(Method::POST, &format!("{uri}/endpoint/{ep}/resend"), None)
            .await,
        StatusCode::BAD_REQUEST,
        "missing_payload",
    );
    assert!(detail.contains("Payload is missing"), "{detail}");
    assert_error(
        &app.call(
            Method::DELETE,
            &format!("/api/v1/app/{app_id}/msg/msg_nope/content"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn unknown_messages_are_404() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let detail = assert_error(
        &app.get(&format!("/api/v1/app/{app_id}/msg/nope")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(detail, "message not found");
    assert_error(
        &app.get("/api/v1/app/nope/msg").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// A payload nested deeper than clients can read back is refused with the depth in the
/// message; one at the limit is accepted.
#[tokio::test]
async fn deeply_nested_payloads_are_refused() {
    let app = TestApp::new().await;
    let app_id = app.create_app("deep").await;
    // A payload `levels` deep: the object, then arrays.
    let nested = |levels: usize| {
        let inner = format!("{}1{}", "[".repeat(levels - 1), "]".repeat(levels - 1));
        format!(r#"{{"eventType": "deep.one", "payload": {{"a": {inner}}}}}"#)
    };
    let uri = format!("/api/v1/app/{app_id}/msg");
    let send = |body: String| {
        let request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        app.send(request)
    };
    let (status, headers, bytes) = send(nested(65)).await;
    let answer = json_of(status, &headers, &bytes);
    let detail = assert_invalid(&answer, &["body", "payload"]);
    assert!(detail.contains("at most 64"), "{detail}");
    let (status, headers, bytes) = send(nested(10_000)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json_of(status, &headers, &bytes).1["detail"].is_array());
    let (status, _, _) = send(nested(64)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_sources_forwarding_application_refuses_messages_every_time() {
    let app = TestApp::new().await;
    let (status, source) = app
        .post(
            "/ingest/api/v1/source",
            json!({"name": "OpenAI", "type": "open-ai", "config": {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{source}");
    let forwarding = source["forwardingAppId"].as_str().unwrap().to_owned();
    let visible = app.create_app("a").await;
    let message = json!({"eventType": "job.done", "payload": {}});
    // Asked twice each: the second answer comes from what the server remembers.
    for _ in 0..2 {
        let refused = app
            .post(&format!("/api/v1/app/{forwarding}/msg"), message.clone())
            .await;
        let detail = assert_error(&refused, StatusCode::CONFLICT, "conflict");
        assert!(detail.contains(source["id"].as_str().unwrap()), "{detail}");
        let (status, body) = app
            .post(&format!("/api/v1/app/{visible}/msg"), message.clone())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}
