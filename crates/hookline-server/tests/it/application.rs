//! `/api/v1/app`.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{TestApp, assert_error, assert_invalid};

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn create_returns_every_key() {
    let app = TestApp::new().await;
    let (status, out) = app
        .post(
            "/api/v1/app",
            json!({"name": "Acme", "uid": "acme", "metadata": {"tier": "gold"}, "rateLimit": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(
        keys(&out),
        [
            "createdAt",
            "id",
            "metadata",
            "name",
            "rateLimit",
            "throttleRate",
            "uid",
            "updatedAt"
        ]
    );
    assert!(out["id"].as_str().unwrap().starts_with("app_"));
    assert_eq!(out["name"], "Acme");
    assert_eq!(out["uid"], "acme");
    assert_eq!(out["metadata"], json!({"tier": "gold"}));
    assert_eq!(out["throttleRate"], 7);
    assert_eq!(out["rateLimit"], 7);
    assert!(out["createdAt"].as_str().unwrap().ends_with('Z'));

    let (status, plain) = app.post("/api/v1/app", json!({"name": "Plain"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(plain["uid"], Value::Null);
    assert_eq!(plain["throttleRate"], Value::Null);
    assert_eq!(plain["metadata"], json!({}));
}

#[tokio::test]
async fn uids_are_unique_and_get_if_exists_returns_the_existing_app() {
    let app = TestApp::new().await;
    let (_, first) = app
        .post("/api/v1/app", json!({"name": "A", "uid": "a"}))
        .await;
    let duplicate = app
        .post("/api/v1/app", json!({"name": "B", "uid": "a"}))
        .await;
    assert_error(&duplicate, StatusCode::CONFLICT, "conflict");

    let (status, existing) = app
        .post(
            "/api/v1/app?get_if_exists=true",
            json!({"name": "B", "uid": "a"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(existing, first, "returned unchanged");

    let (status, created) = app
        .post(
            "/api/v1/app?get_if_exists=true",
            json!({"name": "C", "uid": "c"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["uid"], "c");
}

#[tokio::test]
async fn bad_input_is_422_with_the_field() {
    let app = TestApp::new().await;
    let msg = assert_invalid(
        &app.post("/api/v1/app", json!({"name": "x", "uid": "app_123"}))
            .await,
        &["body", "uid"],
    );
    assert_eq!(msg, "must not start with `app_`");
    assert_invalid(
        &app.post("/api/v1/app", json!({"name": "x", "uid": "has space"}))
            .await,
        &["body", "uid"],
    );
    assert_invalid(
        &app.post("/api/v1/app", json!({"name": ""})).await,
        &["body", "name"],
    );
    assert_invalid(
        &app.post("/api/v1/app", json!({"name": "x", "throttleRate": 0}))
            .await,
        &["body", "throttleRate"],
    );
    assert_invalid(
        &app.post("/api/v1/app", json!({"name": "x", "throttleRate": 70000}))
            .await,
        &["body", "throttleRate"],
    );
    assert_invalid(
        &app.post("/api/v1/app", json!({"name": "x", "metadata": {"a": 1}}))
            .await,
        &["body", "metadata", "a"],
    );
}

#[tokio::test]
async fn get_by_id_or_uid_and_404() {
    let app = TestApp::new().await;
    let (_, created) = app
        .post("/api/v1/app", json!({"name": "A", "uid": "my-app"}))
        .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/app/{id}")).await,
        (StatusCode::OK, created.clone())
    );
    assert_eq!(
        app.get("/api/v1/app/my-app").await,
        (StatusCode::OK, created)
    );
    let detail = assert_error(
        &app.get("/api/v1/app/app_0000000000000000000000000000")
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(detail, "application not found");
    assert_error(
        &app.get("/api/v1/app/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn list_pages_forwards_and_backwards() {
    let app = TestApp::new().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_app(&format!("app {n}")).await);
    }
    // Ids sort by creation time, to the millisecond; within one, by their random part.
    ids.sort();
    let (status, page) = app.get("/api/v1/app?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let page_ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        page_ids,
        [ids[0].as_str(), ids[1].as_str()],
        "ascending by default"
    );
    assert_eq!(page["done"], false);
    assert_eq!(page["iterator"], ids[1].as_str());
    assert_eq!(page["prevIterator"], format!("-{}", ids[0]));

    let (_, next) = app
        .get(&format!("/api/v1/app?limit=2&iterator={}", ids[1]))
        .await;
    assert_eq!(next["data"][0]["id"], ids[2].as_str());
    let (_, last) = app
        .get(&format!("/api/v1/app?limit=2&iterator={}", ids[3]))
        .await;
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
    assert_eq!(last["done"], true);
    let (_, back) = app
        .get(&format!("/api/v1/app?limit=2&iterator=-{}", ids[4]))
        .await;
    let back_ids: Vec<&str> = back["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(back_ids, [ids[2].as_str(), ids[3].as_str()]);

    let (_, descending) = app
        .get("/api/v1/app?order=descending&limit=1&exclude_apps_with_no_endpoints=true")
        .await;
    assert_eq!(descending["data"][0]["id"], ids[4].as_str());

    let (_, empty) = app.get(&format!("/api/v1/app?iterator={}", ids[4])).await;
    assert_eq!(
        empty,
        json!({"data": [], "iterator": null, "prevIterator": null, "done": true})
    );
    assert_invalid(
        &app.get("/api/v1/app?order=sideways").await,
        &["query", "order"],
    );
}

#[tokio::test]
async fn put_creates_then_replaces() {
    let app = TestApp::new().await;
    let (status, created) = app
        .call(
            Method::PUT,
            "/api/v1/app/new-one",
            Some(json!({"name": "N", "uid": "new-one", "metadata": {"a": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, replaced) = app
        .call(
            Method::PUT,
            "/api/v1/app/new-one",
            Some(json!({"name": "M"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["name"], "M");
    assert_eq!(replaced["metadata"], json!({}), "omitted fields reset");
    assert_eq!(replaced["uid"], Value::Null);
    assert_eq!(replaced["createdAt"], created["createdAt"]);
}

#[tokio::test]
async fn patch_is_tri_state() {
    let app = TestApp::new().await;
    let (_, created) = app
        .post(
            "/api/v1/app",
            json!({"name": "P", "uid": "p", "throttleRate": 5, "metadata": {"k": "v"}}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let uri = format!("/api/v1/app/{id}");
    let (status, patched) = app
        .call(Method::PATCH, &uri, Some(json!({"uid": null})))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["uid"], Value::Null, "null clears");
    assert_eq!(patched["throttleRate"], 5, "absent keeps");
    assert_eq!(patched["metadata"], json!({"k": "v"}));
    let (_, patched) = app
        .call(
            Method::PATCH,
            &uri,
            Some(json!({"name": "Q", "rateLimit": null})),
        )
        .await;
    assert_eq!(patched["name"], "Q");
    assert_eq!(patched["throttleRate"], Value::Null);
    let response = app
        .call(Method::PATCH, &uri, Some(json!({"name": null})))
        .await;
    let msg = assert_invalid(&response, &["body", "name"]);
    assert!(msg.contains("not null"), "{msg}");
    assert_error(
        &app.call(Method::PATCH, "/api/v1/app/missing", Some(json!({})))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn delete_removes() {
    let app = TestApp::new().await;
    let id = app.create_app("doomed").await;
    let uri = format!("/api/v1/app/{id}");
    assert_eq!(
        app.call(Method::DELETE, &uri, None).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_error(&app.get(&uri).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &app.call(Method::DELETE, &uri, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
