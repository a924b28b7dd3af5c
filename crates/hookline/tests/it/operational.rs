//! Operational events and auto-disable through `hookline serve`'s own configuration:
//! `HOOKLINE_OPERATIONAL_URL`/`_SECRET` and `[delivery] disable_after` from a config file.

use std::time::Duration;

use hookline_signature::{Keyset, Scheme, VerifyOptions};
use reqwest::Method;
use serde_json::json;

use crate::server::{Delivery, Receiver, Server, TempDir};

const OPS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ops_events(receiver: &Receiver) -> Vec<(String, serde_json::Value)> {
    receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.path == "/ops")
        .map(|d: Delivery| {
            let headers: Vec<(String, String)> = d.headers.clone().into_iter().collect();
            Keyset::new(Scheme::Standard, [OPS_SECRET])
                .unwrap()
                .verify(&headers, &d.body, VerifyOptions::default())
                .expect("operational events are signed with the configured secret");
            let event: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
            (event["type"].as_str().unwrap().to_owned(), event)
        })
        .collect()
}

#[tokio::test]
async fn failing_exhausted_recovered_and_disabled_reach_the_operational_endpoint() {
    let dir = TempDir::new("operational");
    let (receiver, receiver_url) = Receiver::start().await;
    receiver
        .statuses
        .lock()
        .unwrap()
        .insert("/down".into(), 500);
    receiver
        .statuses
        .lock()
        .unwrap()
        .insert("/flaky".into(), 500);
    let config = dir.0.join("hookline.toml");
    std::fs::write(&config, "[delivery]\ndisable_after = 1\n").unwrap();
    let ops_url = format!("{receiver_url}/ops");
    let server = Server::start_with_args(
        &dir.0,
        &["--config", config.to_str().unwrap()],
        &[
            ("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1"),
            ("HOOKLINE_OPERATIONAL_URL", ops_url.as_str()),
            ("HOOKLINE_OPERATIONAL_SECRET", OPS_SECRET),
        ],
    )
    .await;
    let (status, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "ops"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let endpoint = |path: &str| json!({"url": format!("{receiver_url}{path}")});
    let (_, down) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(endpoint("/down")),
        )
        .await;
    let down_id = down["id"].as_str().unwrap().to_owned();
    let send = |event_type: &'static str| {
        let path = format!("/api/v1/app/{app_id}/msg");
        let server = &server;
        async move {
            let (status, msg) = server
                .api(
                    Method::POST,
                    &path,
                    Some(json!({"eventType": event_type, "payload": {}})),
                )
                .await;
            assert_eq!(status, 202, "{msg}");
            msg["id"].as_str().unwrap().to_owned()
        }
    };

    // Five failures: `failing` at the fourth, `exhausted` at the last.
    let first = send("a.first").await;
    let events = wait_for_events(&receiver, |events| {
        events
            .iter()
            .any(|(kind, _)| kind == "message.attempt.exhausted")
    })
    .await;
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["message.attempt.failing", "message.attempt.exhausted"]
    );
    assert_eq!(events[1].1["data"]["msgId"], json!(first));
    assert_eq!(events[1].1["data"]["endpointId"], json!(down_id));
    assert_eq!(
        events[1].1["data"]["lastAttempt"]["responseStatusCode"],
        500
    );

    // Still failing more than `disable_after` later: the next exhaustion disables it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send("a.second").await;
    let events = wait_for_events(&receiver, |events| {
        events.iter().any(|(kind, _)| kind == "endpoint.disabled")
    })
    .await;
    let disabled = events
        .iter()
        .find(|(kind, _)| kind == "endpoint.disabled")
        .unwrap();
    assert_eq!(disabled.1["data"]["endpointId"], json!(down_id));
    let (_, read) = server
        .api(
            Method::GET,
            &format!("/api/v1/app/{app_id}/endpoint/{down_id}"),
            None,
        )
        .await;
    assert_eq!(read["disabled"], true, "{read}");

    // A delivery that succeeds after the fourth failure is announced as recovered.
    let (_, flaky) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(endpoint("/flaky")),
        )
        .await;
    assert!(flaky["id"].is_string(), "{flaky}");
    send("a.third").await;
    receiver
        .wait_until(Duration::from_secs(20), |d| {
            d.iter().filter(|d| d.path == "/flaky").count() >= 4
        })
        .await;
    receiver
        .statuses
        .lock()
        .unwrap()
        .insert("/flaky".into(), 200);
    let events = wait_for_events(&receiver, |events| {
        events
            .iter()
            .any(|(kind, _)| kind == "message.attempt.recovered")
    })
    .await;
    assert!(
        events
            .iter()
            .any(|(kind, _)| kind == "message.attempt.recovered")
    );
}

async fn wait_for_events(
    receiver: &Receiver,
    done: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = ops_events(receiver);
        if done(&events) {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "operational events so far: {:?}",
            events.iter().map(|(kind, _)| kind).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 16: an operational event is committed with the attempt that caused it. A node
/// SIGKILLed right after recording an exhausting attempt, while the operator's endpoint
/// was still refusing the event, sends the same event once it is back: the in-memory queue
/// this replaced lost it with the process.
#[tokio::test]
async fn an_exhausted_event_survives_a_sigkill() {
    let dir = TempDir::new("operational-crash");
    let (receiver, receiver_url) = Receiver::start().await;
    for path in ["/down", "/ops"] {
        receiver.statuses.lock().unwrap().insert(path.into(), 500);
    }
    let ops_url = format!("{receiver_url}/ops");
    let env = [
        ("HOOKLINE_RETRY_SCHEDULE", "1,1"),
        ("HOOKLINE_OPERATIONAL_URL", ops_url.as_str()),
        ("HOOKLINE_OPERATIONAL_SECRET", OPS_SECRET),
    ];
    let mut server = Server::start_process(&dir.0, &env).await;
    let (status, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "crash"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (status, endpoint) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(json!({"url": format!("{receiver_url}/down")})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let (status, msg) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/msg"),
            Some(json!({"eventType": "a.b", "payload": {}})),
        )
        .await;
    assert_eq!(status, 202, "{msg}");
    let msg_id = msg["id"].as_str().unwrap().to_owned();

    // The third attempt exhausts the schedule; the operator refuses the event it causes.
    let attempts_path = format!("/api/v1/app/{app_id}/attempt/msg/{msg_id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, attempts) = server.api(Method::GET, &attempts_path, None).await;
        let recorded = attempts["data"].as_array().map_or(0, Vec::len);
        let refused = ops_events(&receiver);
        if recorded == 3 && !refused.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "attempts recorded: {recorded}, operational events refused: {}",
            refused.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long enough for the refusal to be recorded (so the event's next try is not held by
    // a lease after the restart), short of that next try, a second later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let refused = ops_events(&receiver);
    assert_eq!(refused.len(), 1, "the operator refused the event once");
    assert_eq!(refused[0].0, "message.attempt.exhausted");
    let refused_id = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.path == "/ops")
        .and_then(|d| d.headers.get("webhook-id").cloned())
        .expect("a webhook-id");

    receiver.statuses.lock().unwrap().insert("/ops".into(), 200);
    let _server = Server::start_process(&dir.0, &env).await;
    let events = wait_for_events(&receiver, |events| events.len() >= 2).await;
    let (kind, event) = &events[1];
    assert_eq!(kind, "message.attempt.exhausted");
    assert_eq!(event["data"]["msgId"], json!(msg_id));
    assert_eq!(event["data"]["lastAttempt"]["responseStatusCode"], 500);
    let delivered = receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.path == "/ops")
        .nth(1)
        .unwrap();
    assert_eq!(
        delivered.headers.get("webhook-id"),
        Some(&refused_id),
        "the same event, tried again"
    );
    assert_eq!(
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.path == "/down")
            .count(),
        3,
        "the exhausted message itself is not tried again"
    );
}
