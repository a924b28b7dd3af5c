//! Tokens: admin, app-scoped, missing and wrong; app-portal-access and logout.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hookline_core::model::Token;
use serde_json::{Value, json};

use crate::{ADMIN, TestApp, assert_error, json_of};

/// Creates an app with uid `uid` and an app token for it.
async fn app_token(app: &TestApp, uid: &str) -> (String, String) {
    let (status, access) = app
        .post(
            &format!("/api/v1/auth/app-portal-access/{uid}"),
            json!({"application": {"name": uid}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{access}");
    let (_, out) = app.get(&format!("/api/v1/app/{uid}")).await;
    (
        out["id"].as_str().unwrap().to_owned(),
        access["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_401() {
    let app = TestApp::new().await;
    let expected =
        json!({"code": "authentication_failed", "detail": "invalid or missing bearer token"});
    assert_eq!(
        app.call_as(None, Method::GET, "/api/v1/app", None).await,
        (StatusCode::UNAUTHORIZED, expected.clone())
    );
    assert_eq!(
        app.call_as(Some("not-the-token"), Method::GET, "/api/v1/app", None)
            .await,
        (StatusCode::UNAUTHORIZED, expected.clone())
    );
    let basic = Request::builder()
        .uri("/api/v1/app")
        .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, bytes) = app.send(basic).await;
    assert_eq!(
        json_of(status, &headers, &bytes),
        (StatusCode::UNAUTHORIZED, expected.clone())
    );
    // Authentication comes before reading the body.
    assert_eq!(
        app.call_as(None, Method::POST, "/api/v1/app", Some(json!({"name": 1})))
            .await,
        (StatusCode::UNAUTHORIZED, expected)
    );
}

#[tokio::test]
async fn stored_admin_tokens_work() {
    let app = TestApp::new().await;
    app.store
        .put_token(&Token {
            hash: hookline_server::auth::token_hash("hlk_stored-admin"),
            app_id: None,
            created_at: app.clock.now(),
            expires_at: None,
        })
        .await
        .unwrap();
    let (status, _) = app
        .call_as(Some("hlk_stored-admin"), Method::GET, "/api/v1/app", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn app_portal_access_issues_an_app_token_and_creates_the_app() {
    let app = TestApp::new().await;
    let (status, access) = app
        .post(
            "/api/v1/auth/app-portal-access/customer-1",
            json!({"application": {"name": "Customer 1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{access}");
    let token = access["token"].as_str().unwrap();
    assert!(token.starts_with("appsk_"), "{token}");
    let (status, created) = app.get("/api/v1/app/customer-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        access["url"],
        format!(
            "http://hookline.test:8071/console#token={token}&app={}",
            created["id"].as_str().unwrap()
        ),
        "the console link names the application it opens"
    );
    assert_eq!(created["name"], "Customer 1");
    assert_eq!(created["uid"], "customer-1", "the path names the new app");

    // Without a body, and with `{}`, for an app that exists.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/app-portal-access/customer-1")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, bytes) = app.send(request).await;
    assert_eq!(json_of(status, &headers, &bytes).0, StatusCode::OK);
    assert_eq!(
        app.post("/api/v1/auth/app-portal-access/customer-1", json!({}))
            .await
            .0,
        StatusCode::OK
    );

    assert_error(
        &app.post("/api/v1/auth/app-portal-access/nobody", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn app_tokens_only_touch_their_own_app() {
    let app = TestApp::new().await;
    let (own, token) = app_token(&app, "own").await;
    let (other, _) = app_token(&app, "other").await;
    let token = Some(token.as_str());
    let forbidden = |response: (StatusCode, Value)| {
        assert_error(&response, StatusCode::FORBIDDEN, "forbidden");
    };

    let (status, out) = app
        .call_as(token, Method::GET, &format!("/api/v1/app/{own}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (status, _) = app
        .call_as(token, Method::GET, "/api/v1/app/own", None)
        .await;
    assert_eq!(status, StatusCode::OK, "by uid too");
    let (status, endpoint) = app
        .call_as(
            token,
            Method::POST,
            &format!("/api/v1/app/{own}/endpoint"),
            Some(json!({"url": "https://own.example/hook"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let (status, _) = app
        .call_as(
            token,
            Method::GET,
            &format!("/api/v1/app/{own}/endpoint"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call_as(token, Method::GET, "/api/v1/event-type", None)
        .await;
    assert_eq!(status, StatusCode::OK, "event types are readable");

    // Another app's resources, whether or not they exist.
    forbidden(
        app.call_as(token, Method::GET, &format!("/api/v1/app/{other}"), None)
            .await,
    );
    forbidden(
        app.call_as(token, Method::GET, "/api/v1/app/other/endpoint", None)
            .await,
    );
    forbidden(
        app.call_as(token, Method::GET, "/api/v1/app/no-such-app/msg", None)
            .await,
    );
    // Org-level operations.
    forbidden(app.call_as(token, Method::GET, "/api/v1/app", None).await);
    forbidden(
        app.call_as(
            token,
            Method::POST,
            "/api/v1/app",
            Some(json!({"name": "x"})),
        )
        .await,
    );
    forbidden(
        app.call_as(token, Method::DELETE, &format!("/api/v1/app/{own}"), None)
            .await,
    );
    forbidden(
        app.call_as(
            token,
            Method::POST,
            "/api/v1/event-type",
            Some(json!({"name": "a.b", "description": "d"})),
        )
        .await,
    );
    forbidden(
        app.call_as(
            token,
            Method::POST,
            &format!("/api/v1/app/{own}/msg"),
            Some(json!({"eventType": "a", "payload": {}})),
        )
        .await,
    );
    forbidden(
        app.call_as(
            token,
            Method::POST,
            "/api/v1/auth/app-portal-access/own",
            Some(json!({})),
        )
        .await,
    );
}

#[tokio::test]
async fn logout_revokes_app_tokens_only() {
    let app = TestApp::new().await;
    let (own, token) = app_token(&app, "leaving").await;
    let uri = format!("/api/v1/app/{own}");
    assert_eq!(
        app.call_as(Some(&token), Method::GET, &uri, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.call_as(Some(&token), Method::POST, "/api/v1/auth/logout", None)
            .await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_error(
        &app.call_as(Some(&token), Method::GET, &uri, None).await,
        StatusCode::UNAUTHORIZED,
        "authentication_failed",
    );
    assert_error(
        &app.call(Method::POST, "/api/v1/auth/logout", None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &app.call_as(None, Method::POST, "/api/v1/auth/logout", None)
            .await,
        StatusCode::UNAUTHORIZED,
        "authentication_failed",
    );
}
