//! Per-endpoint rate limits and in-flight bounds.

use std::time::Duration;

use hookline_core::model::MessageStatus;
use hookline_engine::EngineConfig;

use crate::support::{Receiver, Reply, World, config, eventually};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_throttled_endpoint_gets_its_rate_while_others_go_at_full_speed() {
    let world = World::new().await;
    let throttled = Receiver::always(Reply::status(200)).await;
    let free = Receiver::always(Reply::status(200)).await;
    let slow_lane = world
        .endpoint(&throttled.url("/"), |endpoint| {
            endpoint.throttle_rate = Some(5)
        })
        .await;
    let fast_lane = world.endpoint(&free.url("/"), |_| {}).await;
    let mut messages = Vec::new();
    for n in 0..10 {
        messages.push(world.message(&format!(r#"{{"n":{n}}}"#)).await);
    }
    let engine = world.start(config(&[]));
    eventually("every delivery to succeed", WAIT, || async {
        for message in &messages {
            for endpoint in [&slow_lane, &fast_lane] {
                if world.destination(message, endpoint).await.status != MessageStatus::Success {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    engine.stop().await;

    let slow = throttled.received();
    let fast = free.received();
    assert_eq!(
        (slow.len(), fast.len()),
        (10, 10),
        "each delivered exactly once"
    );
    // Five a second, evenly spaced: ten deliveries span 1.8 s.
    let span = slow[9].at - slow[0].at;
    assert!(
        span >= Duration::from_millis(1500),
        "10 deliveries at 5/s took {span:?}"
    );
    assert!(
        fast[9].at < slow[9].at,
        "the unthrottled endpoint is not held back by the throttled one"
    );
}

#[tokio::test]
async fn requests_in_flight_to_one_endpoint_are_bounded() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(200).delay(Duration::from_millis(300))).await;
    let endpoint = world.endpoint(&receiver.url("/"), |_| {}).await;
    let mut messages = Vec::new();
    for n in 0..8 {
        messages.push(world.message(&format!(r#"{{"n":{n}}}"#)).await);
    }
    let engine = world.start(EngineConfig {
        max_in_flight_per_endpoint: 2,
        ..config(&[])
    });
    eventually("every delivery to succeed", WAIT, || async {
        for message in &messages {
            if world.destination(message, &endpoint).await.status != MessageStatus::Success {
                return None;
            }
        }
        Some(())
    })
    .await;
    engine.stop().await;

    assert_eq!(receiver.count(), 8);
    assert_eq!(receiver.most_in_flight(), 2, "two at a time, and busy");
}

#[tokio::test]
async fn claim_loops_side_by_side_stay_within_the_concurrency_and_deliver_each_once() {
    let world = World::new().await;
    let receiver = Receiver::always(Reply::status(200).delay(Duration::from_millis(50))).await;
    let mut endpoints = Vec::new();
    for n in 0..3 {
        endpoints.push(
            world
                .endpoint(&receiver.url(&format!("/{n}")), |_| {})
                .await,
        );
    }
    let mut messages = Vec::new();
    for n in 0..40 {
        messages.push(world.message(&format!(r#"{{"n":{n}}}"#)).await);
    }
    let engine = world.start(EngineConfig {
        claimers: 3,
        batch_size: 2,
        concurrency: 5,
        ..config(&[])
    });
    eventually("every delivery to succeed", WAIT, || async {
        for message in &messages {
            for endpoint in &endpoints {
                if world.destination(message, endpoint).await.status != MessageStatus::Success {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    engine.stop().await;

    let mut pairs: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|request| {
            let id = request.header("webhook-id").unwrap_or_default().to_owned();
            (id, request.path.clone())
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(receiver.count(), 120, "each message to each endpoint once");
    assert_eq!(pairs.len(), 120, "no pair delivered twice");
    assert_eq!(
        receiver.most_in_flight(),
        5,
        "the workers are shared, and all busy"
    );
}
