//! Operational events reach the operator's endpoint, signed.

use std::time::Duration;

use hookline_core::model::MessageStatus;
use hookline_engine::{EngineConfig, OperationalEndpoint};
use serde_json::Value;

use crate::support::{Receiver, Reply, World, config, eventually, secret, verify};

const WAIT: Duration = Duration::from_secs(10);

fn with_operational(receiver: &Receiver, secret: &str, schedule_ms: &[u64]) -> EngineConfig {
    EngineConfig {
        operational: Some(OperationalEndpoint {
            url: receiver.url("/ops"),
            secret: secret.to_owned(),
        }),
        ..config(schedule_ms)
    }
}

#[tokio::test]
async fn exhaustion_is_announced_signed() {
    let world = World::new().await;
    let failing = Receiver::always(Reply::status(500)).await;
    let operator = Receiver::always(Reply::status(204)).await;
    let ops_secret = secret();
    let endpoint = world.endpoint(&failing.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(with_operational(&operator, &ops_secret, &[50]));

    let events = eventually("the exhausted event", WAIT, || async {
        let events = operator.received();
        (!events.is_empty()).then_some(events)
    })
    .await;
    engine.stop().await;

    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.path, "/ops");
    assert_eq!(verify(&ops_secret, event), Ok(()));
    assert!(verify(&endpoint.secrets[0].key, event).is_err());
    let body: Value = serde_json::from_slice(&event.body).unwrap();
    let attempts = world.attempts(&message).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(body["type"], "message.attempt.exhausted");
    assert!(body["timestamp"].is_string());
    let data = &body["data"];
    assert_eq!(data["appId"], world.app.id.as_str());
    assert_eq!(data["appUid"], "app-uid");
    assert_eq!(data["endpointId"], endpoint.id.as_str());
    assert_eq!(data["msgId"], message.id.as_str());
    assert_eq!(data["msgEventId"], message.event_id.clone().unwrap());
    assert_eq!(data["lastAttempt"]["id"], attempts[1].id.as_str());
    assert_eq!(data["lastAttempt"]["responseStatusCode"], 500);
    assert_ne!(
        event.header("webhook-id"),
        Some(message.id.as_str()),
        "an operational event is a message of its own"
    );
    let destination = world.destination(&message, &endpoint).await;
    assert_eq!(destination.status, MessageStatus::Fail);
}

#[tokio::test]
async fn the_fourth_failure_and_the_recovery_are_announced() {
    let world = World::new().await;
    let flaky = Receiver::start(vec![Reply::status(500); 4], Reply::status(200)).await;
    let operator = Receiver::always(Reply::status(200)).await;
    let ops_secret = secret();
    let endpoint = world.endpoint(&flaky.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(with_operational(&operator, &ops_secret, &[50; 6]));

    let events = eventually("two events", WAIT, || async {
        let events = operator.received();
        (events.len() >= 2).then_some(events)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.stop().await;

    let kinds: Vec<String> = events
        .iter()
        .map(|event| {
            assert_eq!(verify(&ops_secret, event), Ok(()));
            let body: Value = serde_json::from_slice(&event.body).unwrap();
            body["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["message.attempt.failing", "message.attempt.recovered"]
    );
    assert_eq!(operator.count(), 2, "nothing else was announced");
    let destination = world.destination(&message, &endpoint).await;
    assert_eq!(
        (destination.status, destination.attempts),
        (MessageStatus::Success, 5)
    );
}

#[tokio::test]
async fn a_gone_endpoint_is_announced_disabled() {
    let world = World::new().await;
    let gone = Receiver::always(Reply::status(410)).await;
    let operator = Receiver::always(Reply::status(200)).await;
    let ops_secret = secret();
    let endpoint = world.endpoint(&gone.url("/"), |_| {}).await;
    world.message("{}").await;
    let engine = world.start(with_operational(&operator, &ops_secret, &[]));
    let events = eventually("the disabled event", WAIT, || async {
        let events = operator.received();
        (!events.is_empty()).then_some(events)
    })
    .await;
    engine.stop().await;

    let body: Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["data"]["endpointId"], endpoint.id.as_str());
    assert_eq!(body["data"]["endpointUid"], endpoint.uid.clone().unwrap());
    assert!(body["data"]["failSince"].is_string());
}
