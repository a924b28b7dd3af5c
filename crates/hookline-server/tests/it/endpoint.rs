//! `/api/v1/app/{app_id}/endpoint` and its sub-resources.

use axum::http::{Method, StatusCode};
use hookline_core::id::AppId;
use hookline_core::model::MessageStatus;
use serde_json::{Value, json};

use crate::{TestApp, assert_error, assert_invalid};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn create_generates_a_secret_and_returns_every_key() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let (status, out) = app
        .post(
            &format!("/api/v1/app/{app_id}/endpoint"),
            json!({"url": "https://example.com/hook"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert!(out["id"].as_str().unwrap().starts_with("ep_"));
    assert_eq!(out["url"], "https://example.com/hook");
    assert_eq!(out["description"], "");
    assert_eq!(out["disabled"], false);
    assert_eq!(out["eventTypes"], Value::Null);
    assert_eq!(out["channels"], Value::Null);
    assert_eq!(out["metadata"], json!({}));
    assert_eq!(out["throttleRate"], Value::Null);
    assert_eq!(out["rateLimit"], Value::Null);
    assert_eq!(out["uid"], Value::Null);

    let (status, secret) = app
        .get(&format!(
            "/api/v1/app/{app_id}/endpoint/{}/secret",
            out["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let key = secret["key"].as_str().unwrap();
    assert!(key.starts_with("whsec_") && key.len() == 38, "{key}");
}

#[tokio::test]
async fn supplied_secrets_must_be_usable() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/endpoint");
    for bad in [
        "whsec_short",
        "whsec_not*base64*at*all*at*all*at*all",
        "whpk_aGVsbG8=",
        " ",
    ] {
        let response = app
            .post(&uri, json!({"url": "https://e.com", "secret": bad}))
            .await;
        assert_invalid(&response, &["body", "secret"]);
    }
    let id = app
        .create_endpoint(&app_id, json!({"url": "https://e.com", "secret": SECRET}))
        .await;
    let (_, secret) = app.get(&format!("{uri}/{id}/secret")).await;
    assert_eq!(secret, json!({"key": SECRET}));
}

#[tokio::test]
async fn bad_endpoints_are_422() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/endpoint");
    let msg = assert_invalid(
        &app.post(&uri, json!({"url": "ftp://e.com"})).await,
        &["body", "url"],
    );
    assert_eq!(msg, "must be an http or https URL");
    assert_invalid(
        &app.post(&uri, json!({"url": "not a url"})).await,
        &["body", "url"],
    );
    assert_invalid(&app.post(&uri, json!({})).await, &["body", "url"]);
    assert_invalid(&app.post(&uri, json!({"url": 5})).await, &["body", "url"]);
    assert_invalid(
        &app.post(&uri, json!({"url": "https://e.com", "uid": "ep_x"}))
            .await,
        &["body", "uid"],
    );
    let channels: Vec<String> = (0..11).map(|n| format!("c{n}")).collect();
    assert_invalid(
        &app.post(&uri, json!({"url": "https://e.com", "channels": channels}))
            .await,
        &["body", "channels"],
    );
    assert_invalid(
        &app.post(&uri, json!({"url": "https://e.com", "eventTypes": []}))
            .await,
        &["body", "eventTypes"],
    );
    assert_invalid(
        &app.post(
            &uri,
            json!({"url": "https://e.com", "headers": {"Content-Type": "x"}}),
        )
        .await,
        &["body", "headers", "Content-Type"],
    );
}

#[tokio::test]
async fn event_types_must_exist_and_not_be_archived() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/endpoint");
    let msg = assert_invalid(
        &app.post(
            &uri,
            json!({"url": "https://e.com", "eventTypes": ["x.one", "x.two"]}),
        )
        .await,
        &["body", "eventTypes"],
    );
    assert_eq!(msg, "The following event types don't exist: x.one, x.two");
    app.create_event_type("x.one", None).await;
    app.create_event_type("x.old", None).await;
    app.call(Method::DELETE, "/api/v1/event-type/x.old", None)
        .await;
    assert_invalid(
        &app.post(
            &uri,
            json!({"url": "https://e.com", "eventTypes": ["x.old"]}),
        )
        .await,
        &["body", "eventTypes"],
    );
    let (status, out) = app
        .post(
            &uri,
            json!({"url": "https://e.com", "filterTypes": ["x.one"], "rateLimit": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(
        out["eventTypes"],
        json!(["x.one"]),
        "filterTypes is an alias"
    );
    assert_eq!(out["throttleRate"], 3);
}

#[tokio::test]
async fn get_by_uid_duplicates_and_404() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let uri = format!("/api/v1/app/{app_id}/endpoint");
    let id = app
        .create_endpoint(&app_id, json!({"url": "https://e.com", "uid": "main"}))
        .await;
    let (status, by_uid) = app.get(&format!("{uri}/main")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_uid["id"], id.as_str());
    assert_error(
        &app.post(&uri, json!({"url": "https://e.com", "uid": "main"}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let detail = assert_error(
        &app.get(&format!("{uri}/nope")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(detail, "endpoint not found");
    assert_error(
        &app.get(&format!("/api/v1/app/{}/endpoint/{id}", AppId::new()))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn list_is_newest_first() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let one = app
        .create_endpoint(&app_id, json!({"url": "https://one.example"}))
        .await;
    let two = app
        .create_endpoint(&app_id, json!({"url": "https://two.example"}))
        .await;
    // Ids sort by creation time, to the millisecond; within one, by their random part.
    let (first, second) = if one < two { (one, two) } else { (two, one) };
    let (_, page) = app.get(&format!("/api/v1/app/{app_id}/endpoint")).await;
    assert_eq!(page["data"][0]["id"], second.as_str());
    assert_eq!(page["data"][1]["id"], first.as_str());
    assert_eq!(page["done"], true);
    let (_, ascending) = app
        .get(&format!(
            "/api/v1/app/{app_id}/endpoint?order=ascending&limit=1"
        ))
        .await;
    assert_eq!(ascending["data"][0]["id"], first.as_str());
    assert_eq!(ascending["done"], false);
    assert_invalid(
        &app.get(&format!("/api/v1/app/{app_id}/endpoint?limit=300"))
            .await,
        &["query", "limit"],
    );
}

#[tokio::test]
async fn put_and_patch() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    app.create_event_type("k.one", None).await;
    let uri = format!("/api/v1/app/{app_id}/endpoint/hook");
    let (status, created) = app
        .call(
            Method::PUT,
            &uri,
            Some(json!({"url": "https://e.com", "uid": "hook", "channels": ["c"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, replaced) = app
        .call(
            Method::PUT,
            &uri,
            Some(json!({"url": "https://f.com", "uid": "hook", "eventTypes": ["k.one"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["channels"], Value::Null, "PUT replaces");
    assert_eq!(replaced["eventTypes"], json!(["k.one"]));

    let (status, patched) = app
        .call(
            Method::PATCH,
            &uri,
            Some(json!({"eventTypes": null, "disabled": true, "description": "main"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["eventTypes"], Value::Null);
    assert_eq!(patched["disabled"], true);
    assert_eq!(patched["url"], "https://f.com");
    assert_invalid(
        &app.call(Method::PATCH, &uri, Some(json!({"url": null})))
            .await,
        &["body", "url"],
    );
    assert_invalid(
        &app.call(Method::PATCH, &uri, Some(json!({"url": "gopher://x"})))
            .await,
        &["body", "url"],
    );
    assert_invalid(
        &app.call(Method::PATCH, &uri, Some(json!({"eventTypes": ["k.none"]})))
            .await,
        &["body", "eventTypes"],
    );

    assert_eq!(
        app.call(Method::DELETE, &uri, None).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_error(&app.get(&uri).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn headers_hide_sensitive_values_and_refuse_forbidden_names() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let id = app
        .create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/endpoint/{id}/headers");
    assert_eq!(
        app.get(&uri).await,
        (StatusCode::OK, json!({"headers": {}, "sensitive": []}))
    );
    let put = json!({"headers": {"X-Team": "core", "Authorization": "Bearer s3cret"}});
    assert_eq!(
        app.call(Method::PUT, &uri, Some(put)).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        app.get(&uri).await,
        (
            StatusCode::OK,
            json!({"headers": {"X-Team": "core"}, "sensitive": ["Authorization"]})
        )
    );
    let patch = json!({"headers": {"x-team": "infra", "X-New": "1", "Authorization": null}, "deleteHeaders": []});
    assert_eq!(
        app.call(Method::PATCH, &uri, Some(patch)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&uri).await,
        (
            StatusCode::OK,
            json!({"headers": {"X-New": "1", "x-team": "infra"}, "sensitive": []})
        )
    );
    let patch = json!({"headers": {}, "deleteHeaders": ["X-NEW"]});
    assert_eq!(
        app.call(Method::PATCH, &uri, Some(patch)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get(&uri).await.1["headers"], json!({"x-team": "infra"}));

    for (name, value) in [
        ("Content-Type", "x"),
        ("svix-id", "x"),
        ("X-Amz-Thing", "x"),
        ("Bad Name", "x"),
    ] {
        let response = app
            .call(Method::PUT, &uri, Some(json!({"headers": {name: value}})))
            .await;
        assert_invalid(&response, &["body", "headers", name]);
    }
    let response = app
        .call(Method::PATCH, &uri, Some(json!({"headers": {"Host": "x"}})))
        .await;
    assert_invalid(&response, &["body", "headers", "Host"]);
    assert_invalid(
        &app.call(Method::PUT, &uri, Some(json!({"headers": []})))
            .await,
        &["body", "headers"],
    );
}

#[tokio::test]
async fn rotation_keeps_old_secrets_for_the_grace_period() {
    let clock = hookline_core::clock::ManualClock::starting_now();
    let app = TestApp::with_clock(clock.clone()).await;
    let app_id = app.create_app("a").await;
    let id = app
        .create_endpoint(&app_id, json!({"url": "https://e.com", "secret": SECRET}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/endpoint/{id}/secret");
    let (status, rotated) = app.post(&format!("{uri}/rotate"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("whsec_") && new_key != SECRET);
    assert_eq!(
        app.get(&uri).await,
        (StatusCode::OK, json!({"key": new_key}))
    );

    let app_key = AppId::from_string(app_id.clone());
    let stored = app.store.get_endpoint(&app_key, &id).await.unwrap();
    assert_eq!(stored.secrets.len(), 2);
    assert_eq!(stored.secrets[1].key, SECRET);
    let grace = stored.secrets[1].expires_at.unwrap() - app.clock.now();
    assert_eq!(grace, chrono::Duration::hours(24), "a day by default");

    let chosen = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, rotated) = app
        .post(
            &format!("{uri}/rotate"),
            json!({"key": chosen, "gracePeriodSeconds": 60}),
        )
        .await;
    assert_eq!((status, rotated), (StatusCode::OK, json!({"key": chosen})));
    let stored = app.store.get_endpoint(&app_key, &id).await.unwrap();
    let grace = stored.secrets[1].expires_at.unwrap() - app.clock.now();
    assert_eq!(grace, chrono::Duration::seconds(60));
    assert_eq!(
        stored.secrets[2].expires_at.unwrap() - app.clock.now(),
        chrono::Duration::hours(24),
        "an earlier rotation keeps its own grace period"
    );

    assert_invalid(
        &app.post(&format!("{uri}/rotate"), json!({"key": "whsec_bad"}))
            .await,
        &["body", "key"],
    );
    assert_invalid(
        &app.post(
            &format!("{uri}/rotate"),
            json!({"gracePeriodSeconds": 604801}),
        )
        .await,
        &["body", "gracePeriodSeconds"],
    );

    // Two old secrets now; three more rotations are allowed, the next is refused.
    for _ in 0..3 {
        assert_eq!(
            app.post(&format!("{uri}/rotate"), json!({})).await.0,
            StatusCode::OK
        );
    }
    let detail = assert_error(
        &app.post(&format!("{uri}/rotate"), json!({})).await,
        StatusCode::BAD_REQUEST,
        "limit_reached",
    );
    assert!(detail.contains("at most 5"), "{detail}");
    // A refused rotation changes nothing.
    assert_eq!(
        app.store
            .get_endpoint(&app_key, &id)
            .await
            .unwrap()
            .secrets
            .len(),
        6
    );

    // A day and a second later every grace period has ended: the next rotation keeps
    // only the secret it replaces.
    clock.advance(std::time::Duration::from_secs(24 * 3600 + 1));
    assert_eq!(
        app.post(&format!("{uri}/rotate"), json!({})).await.0,
        StatusCode::OK
    );
    let stored = app.store.get_endpoint(&app_key, &id).await.unwrap();
    assert_eq!(stored.secrets.len(), 2, "expired secrets are dropped");
}

#[tokio::test]
async fn stats_count_deliveries_by_status() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let id = app
        .create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/endpoint/{id}/stats");
    let zero = json!({"success": 0, "pending": 0, "sending": 0, "fail": 0, "canceled": 0});
    assert_eq!(app.get(&uri).await, (StatusCode::OK, zero.clone()));
    app.send_message(&app_id, json!({"eventType": "a.b", "payload": {}}))
        .await;
    app.send_message(&app_id, json!({"eventType": "a.b", "payload": {}}))
        .await;
    let (_, stats) = app.get(&uri).await;
    assert_eq!(stats["sending"], 2, "{stats}");
    app.deliver_all(500).await;
    let (_, stats) = app.get(&uri).await;
    assert_eq!(
        stats,
        json!({"success": 0, "pending": 0, "sending": 0, "fail": 2, "canceled": 0})
    );
    let (_, old) = app
        .get(&format!(
            "{uri}?since=2020-01-01T00:00:00&until=2020-01-02T00:00:00Z"
        ))
        .await;
    assert_eq!(old, zero);
    assert_error(
        &app.get(&format!(
            "{uri}?since=2024-01-02T00:00:00Z&until=2024-01-01T00:00:00Z"
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_range",
    );
    assert_invalid(
        &app.get(&format!("{uri}?since=yesterday")).await,
        &["query", "since"],
    );
}

#[tokio::test]
async fn recover_requeues_failed_deliveries_before_answering() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let id = app
        .create_endpoint(&app_id, json!({"url": "https://e.com"}))
        .await;
    let msg = app
        .send_message(&app_id, json!({"eventType": "a.b", "payload": {}}))
        .await;
    app.deliver_all(500).await;
    let (app_key, msg_key) = (
        AppId::from_string(app_id.clone()),
        hookline_core::id::MessageId::from_string(msg),
    );
    let ep_key = hookline_core::id::EndpointId::from_string(id.clone());
    let destination = app
        .store
        .get_destination(&app_key, &msg_key, &ep_key)
        .await
        .unwrap();
    assert_eq!(destination.status, MessageStatus::Fail);

    let uri = format!("/api/v1/app/{app_id}/endpoint/{id}/recover");
    let (status, task) = app
        .post(&uri, json!({"since": "2020-01-02T03:04:05"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert!(task["id"].as_str().unwrap().starts_with("qtask_"));
    assert_eq!(task["status"], "finished");
    assert_eq!(task["task"], "endpoint.recover");
    assert!(task["updatedAt"].is_string());

    let destination = app
        .store
        .get_destination(&app_key, &msg_key, &ep_key)
        .await
        .unwrap();
    assert_eq!(destination.status, MessageStatus::Sending);
    assert_eq!(
        destination.trigger,
        hookline_core::model::TriggerType::Manual
    );

    assert_invalid(&app.post(&uri, json!({})).await, &["body", "since"]);
    assert_invalid(
        &app.post(&uri, json!({"since": "last week"})).await,
        &["body", "since"],
    );
    assert_invalid(
        &app.post(
            &uri,
            json!({"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"}),
        )
        .await,
        &["body", "until"],
    );
    assert_error(
        &app.post(
            &format!("/api/v1/app/{app_id}/endpoint/nope/recover"),
            json!({"since": "2024-01-01T00:00:00Z"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn send_example_goes_to_that_endpoint_only() {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let target = app
        .create_endpoint(&app_id, json!({"url": "https://target.example"}))
        .await;
    app.create_endpoint(&app_id, json!({"url": "https://other.example"}))
        .await;
    let uri = format!("/api/v1/app/{app_id}/endpoint/{target}/send-example");

    let (status, ping) = app.post(&uri, json!({"eventType": "svix.ping"})).await;
    assert_eq!(status, StatusCode::OK, "{ping}");
    assert_eq!(ping["eventType"], "svix.ping");
    assert_eq!(ping["payload"], json!({"success": true}));
    let (_, destinations) = app
        .get(&format!(
            "/api/v1/app/{app_id}/msg/{}/endpoint",
            ping["id"].as_str().unwrap()
        ))
        .await;
    let ids: Vec<&str> = destinations["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [target.as_str()]);

    app.create_event_type(
        "job.done",
        Some(json!({"1": {"examples": [{"job": 1}]}, "2": {"examples": [{"job": 2}]}})),
    )
    .await;
    let (status, example) = app.post(&uri, json!({"eventType": "job.done"})).await;
    assert_eq!(status, StatusCode::OK, "{example}");
    assert_eq!(example["payload"], json!({"job": 2}));

    app.create_event_type("job.plain", None).await;
    assert_error(
        &app.post(&uri, json!({"eventType": "job.plain"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_scheme",
    );
    assert_error(
        &app.post(&uri, json!({"eventType": "job.none"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_invalid(
        &app.post(&uri, json!({"eventType": "bad type"})).await,
        &["body", "eventType"],
    );
}

/// URL parsing drops line breaks and tabs; an endpoint URL holding them is refused rather
/// than stored as given.
#[tokio::test]
async fn control_characters_in_an_endpoint_url_are_refused() {
    let app = TestApp::new().await;
    let app_id = app.create_app("crlf").await;
    for url in [
        "https://a.example/x\r\nHost: evil",
        "https://a.example/\tx",
        "https://a.example/\u{7f}",
    ] {
        let answer = app
            .post(
                &format!("/api/v1/app/{app_id}/endpoint"),
                json!({"url": url}),
            )
            .await;
        let detail = assert_invalid(&answer, &["body", "url"]);
        assert!(detail.contains("control characters"), "{url:?}: {detail}");
    }
    let (status, list) = app.get(&format!("/api/v1/app/{app_id}/endpoint")).await;
    assert_eq!(
        (status, list["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}
