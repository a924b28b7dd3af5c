//! `/api/v1/event-type`.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{TestApp, assert_error, assert_invalid};

#[tokio::test]
async fn create_get_and_conflict() {
    let app = TestApp::new().await;
    let schemas = json!({"1": {"type": "object", "examples": [{"id": 1}]}});
    let (status, out) = app
        .post(
            "/api/v1/event-type",
            json!({"name": "job.succeeded", "description": "done", "schemas": schemas}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(out["name"], "job.succeeded");
    assert_eq!(out["description"], "done");
    assert_eq!(out["archived"], false);
    assert_eq!(out["deprecated"], false);
    assert_eq!(out["featureFlag"], Value::Null);
    assert_eq!(out["schemas"], schemas);
    assert!(out["createdAt"].is_string() && out["updatedAt"].is_string());

    assert_eq!(
        app.get("/api/v1/event-type/job.succeeded").await,
        (StatusCode::OK, out)
    );
    let detail = assert_error(
        &app.post(
            "/api/v1/event-type",
            json!({"name": "job.succeeded", "description": "again"}),
        )
        .await,
        StatusCode::CONFLICT,
        "event_type_exists",
    );
    assert!(detail.contains("already exists"), "{detail}");
    assert_error(
        &app.get("/api/v1/event-type/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn bad_event_types_are_422() {
    let app = TestApp::new().await;
    assert_invalid(
        &app.post(
            "/api/v1/event-type",
            json!({"name": "has space", "description": "d"}),
        )
        .await,
        &["body", "name"],
    );
    assert_invalid(
        &app.post("/api/v1/event-type", json!({"name": "a.b"})).await,
        &["body", "description"],
    );
    assert_invalid(
        &app.post(
            "/api/v1/event-type",
            json!({"name": "a.b", "description": "d", "schemas": [1]}),
        )
        .await,
        &["body", "schemas"],
    );
    assert_invalid(
        &app.post(
            "/api/v1/event-type",
            json!({"name": "a.b", "description": "d", "schemas": {"1": 5}}),
        )
        .await,
        &["body", "schemas", "1"],
    );
    assert_invalid(
        &app.post(
            "/api/v1/event-type",
            json!({"name": "a.b", "description": 5}),
        )
        .await,
        &["body", "description"],
    );
}

#[tokio::test]
async fn delete_archives_and_create_unarchives() {
    let app = TestApp::new().await;
    app.create_event_type("a.one", None).await;
    app.create_event_type("a.two", Some(json!({"1": {"type": "object"}})))
        .await;
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/event-type/a.one", None)
            .await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let (_, archived) = app.get("/api/v1/event-type/a.one").await;
    assert_eq!(archived["archived"], true, "archived types stay readable");

    let (_, listed) = app.get("/api/v1/event-type").await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.two"]);
    assert_eq!(
        listed["data"][0]["schemas"],
        Value::Null,
        "no schemas without with_content"
    );
    let (_, listed) = app
        .get("/api/v1/event-type?include_archived=true&with_content=true")
        .await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.one", "a.two"]);
    assert_eq!(
        listed["data"][1]["schemas"],
        json!({"1": {"type": "object"}})
    );
    let (_, descending) = app
        .get("/api/v1/event-type?include_archived=true&order=descending&limit=1")
        .await;
    assert_eq!(descending["data"][0]["name"], "a.two");
    assert_eq!(descending["iterator"], "a.two");
    assert_eq!(descending["done"], false);

    let (status, revived) = app
        .post(
            "/api/v1/event-type",
            json!({"name": "a.one", "description": "back"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{revived}");
    assert_eq!(revived["archived"], false);
    assert_eq!(revived["description"], "back");

    assert_eq!(
        app.call(
            Method::DELETE,
            "/api/v1/event-type/a.one?expunge=true",
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.get("/api/v1/event-type/a.one").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call(Method::DELETE, "/api/v1/event-type/a.one", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn put_upserts_and_patch_is_tri_state() {
    let app = TestApp::new().await;
    let (status, created) = app
        .call(
            Method::PUT,
            "/api/v1/event-type/b.new",
            Some(json!({"description": "d", "featureFlag": "beta"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "b.new");
    assert_eq!(created["featureFlag"], "beta");
    let (status, updated) = app
        .call(
            Method::PUT,
            "/api/v1/event-type/b.new",
            Some(json!({"description": "e", "deprecated": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["featureFlag"], Value::Null, "PUT replaces");
    assert_eq!(updated["deprecated"], true);
    assert_eq!(updated["createdAt"], created["createdAt"]);
    assert_invalid(
        &app.call(
            Method::PUT,
            "/api/v1/event-type/b.bad%20name",
            Some(json!({"description": "d"})),
        )
        .await,
        &["path", "event_type_name"],
    );

    let (status, patched) = app
        .call(
            Method::PATCH,
            "/api/v1/event-type/b.new",
            Some(json!({"schemas": {"1": {"type": "object"}}, "archived": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["archived"], true);
    assert_eq!(patched["description"], "e", "absent keeps");
    let (_, patched) = app
        .call(
            Method::PATCH,
            "/api/v1/event-type/b.new",
            Some(json!({"schemas": null, "archived": false})),
        )
        .await;
    assert_eq!(patched["schemas"], Value::Null);
    assert_eq!(patched["archived"], false);
    assert_invalid(
        &app.call(
            Method::PATCH,
            "/api/v1/event-type/b.new",
            Some(json!({"description": null})),
        )
        .await,
        &["body", "description"],
    );
    assert_error(
        &app.call(Method::PATCH, "/api/v1/event-type/b.none", Some(json!({})))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
