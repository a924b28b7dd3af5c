//! A delivery as the endpoint sees it, and as the attempt log records it.

use std::time::Duration;

use chrono::Utc;
use hookline_core::model::{EndpointSecret, MessageStatus, TriggerType};
use hookline_engine::EngineConfig;

use crate::support::{Receiver, Reply, World, config, eventually, secret, verify};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn credentials_in_the_url_are_sent_as_basic_authorization() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(204)).await;
    let url = format!("http://hook%20bot:s3cr%40t@{}/auth?team=ml", receiver.addr);
    let endpoint = world.endpoint(&url, |_| {}).await;
    let message = world.message(r#"{"probe":true}"#).await;
    let engine = world.start(config(&[]));
    eventually("the delivery to succeed", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Success).then_some(())
    })
    .await;
    engine.stop().await;

    let requests = receiver.received();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/auth");
    // base64("hook bot:s3cr@t")
    assert_eq!(
        request.header("authorization"),
        Some("Basic aG9vayBib3Q6czNjckB0")
    );
    assert!(
        request
            .header("host")
            .is_some_and(|host| !host.contains('@')),
        "{:?}",
        request.header("host")
    );
}

#[tokio::test]
async fn delivers_the_exact_payload_signed_with_every_valid_key() {
    let world = World::new().await;
    let receiver = Receiver::always(
        Reply::status(200)
            .header("x-receiver", "yes")
            .body("thanks"),
    )
    .await;
    let (current, rotated) = (secret(), secret());
    let endpoint = world
        .endpoint(&receiver.url("/hooks/in"), |endpoint| {
            endpoint.secrets = vec![
                EndpointSecret {
                    key: current.clone(),
                    expires_at: None,
                },
                EndpointSecret {
                    key: rotated.clone(),
                    expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
                },
            ];
            endpoint
                .headers
                .insert("X-Team".into(), "ml-platform".into());
            endpoint
                .headers
                .insert("X-Api-Key".into(), "key-for-the-receiver".into());
        })
        .await;
    // Odd spacing and key order: the bytes must arrive exactly as stored.
    let payload = r#"{ "job":"42",  "ok" : true, "a": [1,2 ,3] }"#;
    let message = world.message(payload).await;
    let engine = world.start(config(&[]));

    let destination = eventually("the delivery to succeed", WAIT, || async {
        let destination = world.destination(&message, &endpoint).await;
        (destination.status == MessageStatus::Success).then_some(destination)
    })
    .await;
    engine.stop().await;

    assert_eq!(destination.attempts, 1);
    assert_eq!(destination.next_attempt, None);
    let requests = receiver.received();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hooks/in");
    assert_eq!(request.body, payload.as_bytes());
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("user-agent"),
        Some(concat!("Hookline/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(request.header("x-team"), Some("ml-platform"));
    assert_eq!(request.header("webhook-id"), Some(message.id.as_str()));
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!((Utc::now().timestamp() - timestamp).abs() < 30);
    let signatures = request.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(verify(&current, request), Ok(()));
    assert_eq!(verify(&rotated, request), Ok(()));
    assert!(
        verify(&secret(), request).is_err(),
        "another key does not verify"
    );

    let attempts = world.attempts(&message).await;
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.status, MessageStatus::Success);
    assert_eq!(attempt.response_status_code, 200);
    assert_eq!(attempt.response.as_deref(), Some("thanks"));
    assert!(
        attempt
            .response_headers
            .contains(&("x-receiver".into(), "yes".into())),
        "{:?}",
        attempt.response_headers
    );
    // The attempt records the headers as sent, the signature's as the receiver got them;
    // a credential's value is not kept.
    let sent = |name: &str| {
        attempt
            .request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    };
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-team",
    ] {
        assert_eq!(sent(name), request.header(name), "{name}");
    }
    assert_eq!(request.header("x-api-key"), Some("key-for-the-receiver"));
    assert_eq!(sent("x-api-key"), Some("[redacted]"));
    assert_eq!(attempt.error_kind, None);
    assert_eq!(attempt.trigger_type, TriggerType::Scheduled);
    assert_eq!(attempt.url, endpoint.url);
    assert!(attempt.response_duration_ms >= 0);
}

#[tokio::test]
async fn keeps_only_an_excerpt_of_a_large_answer() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(200).body(vec![b'x'; 1 << 20])).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[]));
    eventually("the delivery to succeed", WAIT, || async {
        (world.destination(&message, &endpoint).await.status == MessageStatus::Success)
            .then_some(())
    })
    .await;
    engine.stop().await;
    let attempts = world.attempts(&message).await;
    assert_eq!(
        attempts[0].response.as_deref(),
        Some("x".repeat(4096).as_str())
    );
}

#[tokio::test]
async fn a_notify_wakes_an_idle_engine_long_before_its_poll() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(204)).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let engine = world.start(EngineConfig {
        poll_interval: Duration::from_secs(60),
        ..config(&[])
    });
    // Let the engine find the queue empty and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let message = world.message(r#"{"n":1}"#).await;
    engine.wake.notify_one();
    eventually("the woken delivery", Duration::from_secs(5), || async {
        (world.destination(&message, &endpoint).await.status == MessageStatus::Success)
            .then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 1);
    engine.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_attempt_in_flight_finish_and_records_it() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(200).delay(Duration::from_millis(700))).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let message = world.message("{}").await;
    let engine = world.start(config(&[]));
    eventually("the request to arrive", WAIT, || async {
        (receiver.count() == 1).then_some(())
    })
    .await;
    engine.stop().await;
    // Recorded before `run` returned, although the answer came after the cancellation.
    let destination = world.destination(&message, &endpoint).await;
    assert_eq!(destination.status, MessageStatus::Success);
    assert_eq!(world.attempts(&message).await.len(), 1);
}
