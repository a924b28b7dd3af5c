//! Operational events reach the operator's endpoint, signed: as messages of the
//! operational application, delivered by the engine like any other.

use std::time::Duration;

use hookline_core::model::{Application, Message, MessageStatus};
use hookline_core::page::{ListQuery, Order};
use hookline_core::store::{MessageFilter, MessageStore, ResourceStore};
use hookline_engine::{EngineConfig, OPERATIONAL_UID, OperationalEndpoint, provision};
use serde_json::Value;

use crate::support::{Receiver, Reply, World, config, eventually, secret, verify};

const WAIT: Duration = Duration::from_secs(10);

/// Sets up the operational application of `world` for `receiver`'s `/ops`, as a node does
/// at start, and the engine settings that send events there.
async fn with_operational(
    world: &World,
    receiver: &Receiver,
    secret: &str,
    schedule_ms: &[u64],
) -> EngineConfig {
    let endpoint = OperationalEndpoint {
        url: receiver.url("/ops"),
        secret: secret.to_owned(),
    };
    let operational = provision(world.store.as_ref(), &endpoint, None, world.clock.now())
        .await
        .expect("provision the operational endpoint");
    EngineConfig {
        operational: Some(operational),
        ..config(schedule_ms)
    }
}

/// The messages of the operational application, oldest first.
async fn events_stored(world: &World) -> Vec<Message> {
    let app: Application = world.store.get_app(OPERATIONAL_UID).await.unwrap();
    world
        .store
        .list_messages(
            &app.id,
            &MessageFilter::default(),
            &ListQuery::first(250, Order::Ascending),
        )
        .await
        .unwrap()
        .data
}

#[tokio::test]
async fn exhaustion_is_announced_signed() {
    let world = World::new().await;
    let failing = Receiver::always(Reply::status(500)).await;
    let operator = Receiver::always(Reply::status(204)).await;
    let ops_secret = secret();
    let endpoint = world.endpoint(&failing.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(with_operational(&world, &operator, &ops_secret, &[50]).await);

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
    let stored = events_stored(&world).await;
    assert_eq!(stored.len(), 1, "the event is a stored message");
    assert_eq!(event.header("webhook-id"), Some(stored[0].id.as_str()));
    assert_eq!(stored[0].event_type, "message.attempt.exhausted");
}

#[tokio::test]
async fn the_fourth_failure_and_the_recovery_are_announced() {
    let world = World::new().await;
    let flaky = Receiver::start(vec![Reply::status(500); 4], Reply::status(200)).await;
    let operator = Receiver::always(Reply::status(200)).await;
    let ops_secret = secret();
    let endpoint = world.endpoint(&flaky.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(with_operational(&world, &operator, &ops_secret, &[50; 6]).await);

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
    // Several deliveries may be in flight when the endpoint goes: it is announced once.
    for _ in 0..3 {
        world.message("{}").await;
    }
    let engine = world.start(with_operational(&world, &operator, &ops_secret, &[]).await);
    let events = eventually("the disabled event", WAIT, || async {
        let events = operator.received();
        (!events.is_empty()).then_some(events)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.stop().await;

    assert_eq!(operator.count(), 1, "announced once");
    assert_eq!(events_stored(&world).await.len(), 1);
    let body: Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(body["type"], "endpoint.disabled");
    assert_eq!(body["data"]["endpointId"], endpoint.id.as_str());
    assert_eq!(body["data"]["endpointUid"], endpoint.uid.clone().unwrap());
    assert!(body["data"]["failSince"].is_string());
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_the_operator_is_down() {
    let world = World::new().await;
    let failing = Receiver::always(Reply::status(500)).await;
    // The operator's endpoint fails twice, then takes the event: a retried delivery.
    let operator = Receiver::start(vec![Reply::status(500); 2], Reply::status(204)).await;
    let ops_secret = secret();
    world.endpoint(&failing.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(with_operational(&world, &operator, &ops_secret, &[50, 50]).await);

    let events = eventually("the event, third time lucky", WAIT, || async {
        let events = operator.received();
        (events.len() >= 3).then_some(events)
    })
    .await;
    engine.stop().await;

    let ids: Vec<Option<&str>> = events.iter().map(|e| e.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one event, retried: {ids:?}"
    );
    for event in &events {
        assert_eq!(verify(&ops_secret, event), Ok(()));
        let body: Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(body["type"], "message.attempt.exhausted");
        assert_eq!(body["data"]["msgId"], message.id.as_str());
    }
    let stored = events_stored(&world).await;
    let ops_endpoint = world
        .store
        .get_endpoint(&stored[0].app_id, OPERATIONAL_UID)
        .await
        .unwrap();
    let destination = world
        .store
        .get_destination(&stored[0].app_id, &stored[0].id, &ops_endpoint.id)
        .await
        .unwrap();
    assert_eq!(
        (destination.status, destination.attempts),
        (MessageStatus::Success, 3)
    );
}

#[tokio::test]
async fn a_failing_operator_endpoint_announces_nothing_about_itself() {
    let world = World::new().await;
    let failing = Receiver::always(Reply::status(500)).await;
    let operator = Receiver::always(Reply::status(500)).await;
    world.endpoint(&failing.url("/"), |_| {}).await;
    world.message("{}").await;
    let engine = world.start(with_operational(&world, &operator, &secret(), &[50]).await);

    eventually("the event's attempts", WAIT, || async {
        (operator.count() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.stop().await;

    // The event exhausted its own schedule, and that was not announced (to where?).
    assert_eq!(operator.count(), 2);
    let stored = events_stored(&world).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].event_type, "message.attempt.exhausted");
}

#[tokio::test]
async fn provisioning_is_idempotent_and_follows_the_configuration() {
    let world = World::new().await;
    let endpoint = OperationalEndpoint {
        url: "https://ops.example/a".into(),
        secret: secret(),
    };
    let now = world.clock.now();
    let first = provision(world.store.as_ref(), &endpoint, None, now)
        .await
        .unwrap();
    let again = provision(world.store.as_ref(), &endpoint, None, now)
        .await
        .unwrap();
    assert_eq!(first, again);
    let app = world.store.get_app(OPERATIONAL_UID).await.unwrap();
    assert_eq!(app.id, first.app_id);
    let endpoints = world
        .store
        .list_endpoints(&app.id, &ListQuery::first(10, Order::Ascending))
        .await
        .unwrap()
        .data;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].url, endpoint.url);
    assert_eq!(endpoints[0].secrets[0].key, endpoint.secret);

    // Disabled by the engine, it stays so across restarts of the same configuration...
    let mut disabled = endpoints[0].clone();
    disabled.disabled = true;
    world.store.update_endpoint(&disabled, true).await.unwrap();
    provision(world.store.as_ref(), &endpoint, None, now)
        .await
        .unwrap();
    let read = world
        .store
        .get_endpoint(&app.id, OPERATIONAL_UID)
        .await
        .unwrap();
    assert!(read.disabled);

    // ...and a new URL and secret are written, enabled.
    let moved = OperationalEndpoint {
        url: "https://ops.example/b".into(),
        secret: secret(),
    };
    let updated = provision(world.store.as_ref(), &moved, None, now)
        .await
        .unwrap();
    assert_eq!(updated.app_id, first.app_id);
    assert_eq!(updated.url, moved.url);
    let read = world
        .store
        .get_endpoint(&app.id, OPERATIONAL_UID)
        .await
        .unwrap();
    assert_eq!(
        (read.url.as_str(), read.disabled),
        (moved.url.as_str(), false)
    );
    assert_eq!(read.secrets.len(), 1);
    assert_eq!(read.secrets[0].key, moved.secret);

    let bad = OperationalEndpoint {
        url: "ftp://ops.example".into(),
        secret: secret(),
    };
    assert!(
        provision(world.store.as_ref(), &bad, None, now)
            .await
            .is_err()
    );
}
