//! Attempts, attempted messages and destinations, expunge and resend.

use axum::http::{Method, StatusCode};
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::model::{MessageStatus, TriggerType};
use serde_json::{Value, json};

use crate::{TestApp, assert_error, assert_invalid};

/// An app with two endpoints and one message delivered to both, which failed with 500.
struct Delivered {
    app: TestApp,
    app_id: String,
    ep: String,
    other_ep: String,
    msg: String,
    attempt: String,
}

async fn delivered() -> Delivered {
    let app = TestApp::new().await;
    let app_id = app.create_app("a").await;
    let ep = app
        .create_endpoint(
            &app_id,
            json!({"url": "https://one.example/hook", "uid": "one"}),
        )
        .await;
    let other_ep = app
        .create_endpoint(&app_id, json!({"url": "https://two.example/hook"}))
        .await;
    let msg = app
        .send_message(&app_id, json!({"eventType": "job.done", "eventId": "e1", "channels": ["jobs"], "payload": {"k": 1}}))
        .await;
    let attempts = app.deliver_all(500).await;
    assert_eq!(attempts.len(), 2);
    let (_, listed) = app
        .get(&format!("/api/v1/app/{app_id}/attempt/endpoint/{ep}"))
        .await;
    let attempt = listed["data"][0]["id"].as_str().unwrap().to_owned();
    Delivered {
        app,
        app_id,
        ep,
        other_ep,
        msg,
        attempt,
    }
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn attempts_by_endpoint_carry_every_required_key() {
    let Delivered {
        app,
        app_id,
        ep,
        msg,
        attempt,
        ..
    } = delivered().await;
    let uri = format!("/api/v1/app/{app_id}/attempt/endpoint/{ep}");
    let (status, page) = app
        .get(&format!("{uri}?expanded_statuses=true&with_msg=false"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let item = &page["data"][0];
    assert_eq!(
        item,
        &json!({
            "id": attempt,
            "msgId": msg,
            "endpointId": ep,
            "url": "https://one.example/hook",
            "response": "answer 500",
            "responseStatusCode": 500,
            "responseDurationMs": 12,
            "status": 2,
            "statusText": "fail",
            "triggerType": 0,
            "timestamp": item["timestamp"],
            "responseHeaders": item["responseHeaders"],
            "requestHeaders": item["requestHeaders"],
            "errorKind": null,
        })
    );
    assert!(item["responseHeaders"].is_array(), "{item}");
    assert!(item["requestHeaders"].is_array(), "{item}");
    assert!(page.as_object().unwrap().contains_key("iterator"));

    assert_eq!(
        app.get(&format!("{uri}?with_content=false")).await.1["data"][0]["response"],
        "{}"
    );
    assert_eq!(
        ids(&app.get(&format!("{uri}?status=2")).await.1),
        [attempt.as_str()]
    );
    assert!(ids(&app.get(&format!("{uri}?status=0")).await.1).is_empty());
    assert_eq!(
        ids(&app.get(&format!("{uri}?status_code_class=500")).await.1),
        [attempt.as_str()]
    );
    assert!(ids(&app.get(&format!("{uri}?status_code_class=200")).await.1).is_empty());
    assert_eq!(
        ids(&app
            .get(&format!("{uri}?channel=jobs&event_types=job.done"))
            .await
            .1),
        [attempt.as_str()]
    );
    assert!(ids(&app.get(&format!("{uri}?channel=other")).await.1).is_empty());
    assert!(ids(&app.get(&format!("{uri}?event_types=job.other")).await.1).is_empty());
    assert!(
        ids(&app
            .get(&format!("{uri}?after=2999-01-01T00:00:00Z"))
            .await
            .1)
        .is_empty()
    );
    assert_eq!(
        ids(&app
            .get(&format!("{uri}?before=2999-01-01T00:00:00Z"))
            .await
            .1)
        .len(),
        1
    );

    assert_invalid(
        &app.get(&format!("{uri}?status=9")).await,
        &["query", "status"],
    );
    assert_invalid(
        &app.get(&format!("{uri}?status_code_class=250")).await,
        &["query", "status_code_class"],
    );
    assert_invalid(
        &app.get(&format!("{uri}?limit=251")).await,
        &["query", "limit"],
    );
    assert_error(
        &app.get(&format!("/api/v1/app/{app_id}/attempt/endpoint/ep_nope"))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn attempts_by_message_filter_on_endpoint() {
    let Delivered {
        app,
        app_id,
        ep,
        other_ep,
        msg,
        attempt,
    } = delivered().await;
    let uri = format!("/api/v1/app/{app_id}/attempt/msg/{msg}");
    let (status, all) = app.get(&uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all).len(), 2);
    assert_eq!(
        ids(&app.get(&format!("{uri}?endpoint_id=one")).await.1),
        [attempt.as_str()]
    );
    assert_eq!(
        ids(&app.get(&format!("{uri}?endpoint_id={ep}")).await.1),
        [attempt.as_str()]
    );
    let (_, other) = app.get(&format!("{uri}?endpoint_id={other_ep}")).await;
    assert_eq!(other["data"][0]["endpointId"], other_ep.as_str());
    assert_ne!(other["data"][0]["id"], attempt.as_str());
    assert_eq!(
        ids(&app
            .get(&format!("/api/v1/app/{app_id}/attempt/msg/e1"))
            .await
            .1)
        .len(),
        2,
        "by eventId"
    );
    assert_error(
        &app.get(&format!("{uri}?endpoint_id=nope")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.get(&format!("/api/v1/app/{app_id}/attempt/msg/msg_nope"))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn attempted_messages_and_destinations() {
    let Delivered {
        app,
        app_id,
        ep,
        other_ep,
        msg,
        ..
    } = delivered().await;
    let (status, messages) = app
        .get(&format!("/api/v1/app/{app_id}/endpoint/{ep}/msg"))
        .await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let item = &messages["data"][0];
    assert_eq!(item["id"], msg.as_str());
    assert_eq!(item["payload"], json!({"k": 1}));
    assert_eq!(
        (item["status"].as_i64(), item["statusText"].as_str()),
        (Some(2), Some("fail"))
    );
    assert_eq!(item["nextAttempt"], Value::Null);
    assert_eq!(item["eventId"], "e1");
    assert!(
        ids(&app
            .get(&format!("/api/v1/app/{app_id}/endpoint/{ep}/msg?status=0"))
            .await
            .1)
        .is_empty()
    );
    let (_, hidden) = app
        .get(&format!(
            "/api/v1/app/{app_id}/endpoint/{ep}/msg?with_content=false"
        ))
        .await;
    assert_eq!(hidden["data"][0]["payload"], json!({}));

    let (status, destinations) = app
        .get(&format!("/api/v1/app/{app_id}/msg/{msg}/endpoint"))
        .await;
    assert_eq!(status, StatusCode::OK, "{destinations}");
    let mut newest_first = [other_ep.as_str(), ep.as_str()];
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        ids(&destinations),
        newest_first,
        "by endpoint id, newest first"
    );
    let one = &destinations["data"][newest_first.iter().position(|id| *id == ep).unwrap()];
    assert_eq!(one["uid"], "one");
    assert_eq!(one["url"], "https://one.example/hook");
    assert_eq!(one["description"], "");
    assert_eq!(one["statusText"], "fail");
    assert!(one.get("metadata").is_none());
    let (_, page) = app
        .get(&format!("/api/v1/app/{app_id}/msg/{msg}/endpoint?limit=1"))
        .await;
    assert_eq!(ids(&page), [newest_first[0]]);
    assert_eq!(page["done"], false);
}

#[tokio::test]
async fn get_and_expunge_an_attempt() {
    let Delivered {
        app,
        app_id,
        msg,
        attempt,
        ..
    } = delivered().await;
    let uri = format!("/api/v1/app/{app_id}/msg/{msg}/attempt/{attempt}");
    let (status, out) = app.get(&format!("{uri}?expanded_statuses=true")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["response"], "answer 500");
    assert_eq!(
        app.call(Method::DELETE, &format!("{uri}/content"), None)
            .await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(app.get(&uri).await.1["response"], "EXPUNGED");

    let other = app
        .send_message(&app_id, json!({"eventType": "x", "payload": {}}))
        .await;
    assert_error(
        &app.get(&format!(
            "/api/v1/app/{app_id}/msg/{other}/attempt/{attempt}"
        ))
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.get(&format!(
            "/api/v1/app/{app_id}/msg/{msg}/attempt/atmpt_nope"
        ))
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call(
            Method::DELETE,
            &format!("/api/v1/app/{app_id}/msg/{msg}/attempt/atmpt_nope/content"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn resend_queues_one_manual_attempt() {
    let Delivered {
        app,
        app_id,
        ep,
        msg,
        ..
    } = delivered().await;
    let uri = format!("/api/v1/app/{app_id}/msg/{msg}/endpoint/{ep}/resend");
    assert_eq!(
        app.call(Method::POST, &uri, None).await,
        (StatusCode::ACCEPTED, json!({}))
    );
    let destination = app
        .store
        .get_destination(
            &AppId::from_string(app_id.clone()),
            &MessageId::from_string(msg.clone()),
            &EndpointId::from_string(ep.clone()),
        )
        .await
        .unwrap();
    assert_eq!(destination.status, MessageStatus::Sending);
    assert_eq!(destination.trigger, TriggerType::Manual);
    app.deliver_all(200).await;
    let (_, attempts) = app
        .get(&format!("/api/v1/app/{app_id}/attempt/endpoint/{ep}"))
        .await;
    assert_eq!(attempts["data"][0]["triggerType"], 1);
    assert_eq!(attempts["data"][0]["statusText"], "success");

    let late = app
        .create_endpoint(&app_id, json!({"url": "https://late.example"}))
        .await;
    assert_error(
        &app.call(
            Method::POST,
            &format!("/api/v1/app/{app_id}/msg/{msg}/endpoint/{late}/resend"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call(
            Method::POST,
            &format!("/api/v1/app/{app_id}/msg/msg_nope/endpoint/{ep}/resend"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
