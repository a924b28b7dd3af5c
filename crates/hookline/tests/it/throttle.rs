//! Throttle rates hold in total, whatever the number of nodes (issue 16): an endpoint's
//! `throttleRate`, and an application's across all its endpoints. The multi-node tests need
//! PostgreSQL and are skipped, with a notice, when HOOKLINE_TEST_POSTGRES_URL is not set.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::server::{Receiver, Server, TempDir, postgres_schema};

/// The window rates are measured over.
const WINDOW: Duration = Duration::from_secs(3);
/// Longer than a worker's heartbeat interval (2 s): by then every node has counted the
/// others. Before that a node that joined late may not be counted yet, which the design
/// allows (see `hookline-engine`'s `ratelimit`).
const SETTLE: Duration = Duration::from_millis(2_500);

async fn start_nodes(dir: &TempDir, url: &str, count: usize) -> Vec<Server> {
    let mut nodes = Vec::new();
    for index in 0..count {
        let node_id = format!("node-{index}");
        let env = [
            ("HOOKLINE_DATABASE_URL", url),
            ("HOOKLINE_NODE_ID", node_id.as_str()),
            // Tests run side by side; stay well under max_connections (100).
            ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
        ];
        nodes.push(Server::start_process(&dir.0, &env).await);
    }
    nodes
}

async fn create(node: &Server, path: &str, body: Value) -> String {
    let (status, created) = node.api(Method::POST, path, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("id").to_owned()
}

/// Sends `count` messages, spread over the nodes' APIs.
async fn send(nodes: &[Server], app: &str, count: usize) {
    for seq in 0..count {
        let (status, body) = nodes[seq % nodes.len()]
            .api(
                Method::POST,
                &format!("/api/v1/app/{app}/msg"),
                Some(json!({"eventType": "rate.test", "payload": {"seq": seq}})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

/// Deliveries received over time: (when, how many so far), sampled every 20 ms until
/// `total` arrived (or a minute passed). The first sample is taken at once, before any
/// message is sent, so every delivery falls between two samples.
async fn sample(receiver: &Receiver, total: usize) -> Vec<(Instant, usize)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = Vec::new();
    loop {
        let received = receiver.received.lock().expect("lock").len();
        samples.push((Instant::now(), received));
        if received >= total || Instant::now() > deadline {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The most deliveries received within any `window`.
fn busiest(samples: &[(Instant, usize)], window: Duration) -> usize {
    let mut most = 0;
    let mut end = 0;
    for &(start, before) in samples {
        while end + 1 < samples.len() && samples[end + 1].0 <= start + window {
            end += 1;
        }
        most = most.max(samples[end].1.saturating_sub(before));
    }
    most
}

/// Checks that deliveries limited to `rate` a second in total, over `nodes` nodes, kept
/// to it: at most `rate * WINDOW` in any window, plus one delivery per node (each node's
/// bucket holds one token to start with) and one for the sampling; and that the limit
/// did not starve them either (at least half the rate at the busiest).
fn assert_rate(samples: &[(Instant, usize)], rate: usize, nodes: usize, total: usize) {
    let received = samples.last().map_or(0, |s| s.1);
    assert_eq!(received, total, "every delivery arrived");
    let most = busiest(samples, WINDOW);
    let allowed = rate * WINDOW.as_secs() as usize + nodes + 1;
    eprintln!(
        "throttle {rate}/s over {nodes} node(s): at most {most} deliveries in {WINDOW:?} \
         (allowed {allowed}); all {total} in {:?}",
        samples.last().unwrap().0 - samples[0].0
    );
    assert!(
        most <= allowed,
        "{most} deliveries in {WINDOW:?} at a throttle of {rate}/s over {nodes} nodes"
    );
    assert!(
        most * 2 >= rate * WINDOW.as_secs() as usize,
        "only {most} deliveries in {WINDOW:?} at a throttle of {rate}/s"
    );
}

#[tokio::test]
async fn an_endpoints_throttle_rate_holds_in_total_over_three_nodes() {
    const RATE: usize = 5;
    const MESSAGES: usize = 40;
    let Some(url) = postgres_schema("endpoint_rate") else {
        return;
    };
    let dir = TempDir::new("endpoint-rate");
    let (receiver, receiver_url) = Receiver::start().await;
    let nodes = start_nodes(&dir, &url, 3).await;
    tokio::time::sleep(SETTLE).await;
    let app = create(&nodes[0], "/api/v1/app", json!({"name": "rated"})).await;
    create(
        &nodes[1],
        &format!("/api/v1/app/{app}/endpoint"),
        json!({"url": format!("{receiver_url}/throttled"), "throttleRate": RATE}),
    )
    .await;
    let samples = tokio::join!(sample(&receiver, MESSAGES), send(&nodes, &app, MESSAGES)).0;
    assert_rate(&samples, RATE, nodes.len(), MESSAGES);
}

/// An app's `throttleRate` spread over its endpoints, none throttled itself, through the
/// API on `nodes` (PostgreSQL at `url`) or one node on SQLite.
async fn app_rate_holds_across_its_endpoints(name: &str, url: Option<&str>, count: usize) {
    const RATE: usize = 6;
    const ENDPOINTS: usize = 3;
    const MESSAGES: usize = 20;
    let dir = TempDir::new(name);
    let (receiver, receiver_url) = Receiver::start().await;
    let nodes = match url {
        Some(url) => start_nodes(&dir, url, count).await,
        None => vec![Server::start(&dir.0, &[]).await],
    };
    tokio::time::sleep(SETTLE).await;
    let app = create(
        &nodes[0],
        "/api/v1/app",
        json!({"name": "rated", "throttleRate": RATE}),
    )
    .await;
    let (status, read) = nodes[0]
        .api(Method::GET, &format!("/api/v1/app/{app}"), None)
        .await;
    assert_eq!((status, &read["throttleRate"]), (200, &json!(RATE)));
    for k in 0..ENDPOINTS {
        create(
            &nodes[k % nodes.len()],
            &format!("/api/v1/app/{app}/endpoint"),
            json!({"url": format!("{receiver_url}/ep{k}")}),
        )
        .await;
    }
    let total = MESSAGES * ENDPOINTS;
    let samples = tokio::join!(sample(&receiver, total), send(&nodes, &app, MESSAGES)).0;
    assert_rate(&samples, RATE, nodes.len(), total);
}

#[tokio::test]
async fn an_apps_throttle_rate_holds_across_its_endpoints_over_three_nodes() {
    let Some(url) = postgres_schema("app_rate") else {
        return;
    };
    app_rate_holds_across_its_endpoints("app-rate-nodes", Some(&url), 3).await;
}

#[tokio::test]
async fn an_apps_throttle_rate_holds_across_its_endpoints_on_one_node() {
    app_rate_holds_across_its_endpoints("app-rate-one", None, 1).await;
}
