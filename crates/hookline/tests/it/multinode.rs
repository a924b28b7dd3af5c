//! Several `hookline serve` nodes on one PostgreSQL database. Skipped, with a notice, when
//! HOOKLINE_TEST_POSTGRES_URL is not set; `.ci/run` sets it.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::server::{Delivery, Receiver, Server, TOKEN, TempDir, postgres_schema};

async fn start_nodes(dir: &TempDir, url: &str, count: usize) -> Vec<Server> {
    let mut nodes = Vec::new();
    for index in 0..count {
        let node_id = node_id(index);
        nodes.push(Server::start_process(&dir.0, &node_env(url, &node_id)).await);
    }
    nodes
}

/// The settings of a test node.
fn node_env<'a>(url: &'a str, node_id: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("HOOKLINE_DATABASE_URL", url),
        ("HOOKLINE_NODE_ID", node_id),
        ("HOOKLINE_ATTEMPT_TIMEOUT", "2"),
        // Tests run side by side; stay well under max_connections (100).
        ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
        ("HOOKLINE_RETRY_SCHEDULE", "1,1,1"),
    ]
}

/// The name of the node started `index`th, the owner of its delivery leases.
fn node_id(index: usize) -> String {
    format!("node-{index}")
}

/// The messages whose deliveries `owner` holds a lease on.
fn leased_by(url: &str, owner: &str) -> HashSet<String> {
    let output = Command::new("psql")
        .args([
            url,
            "-At",
            "-c",
            &format!("SELECT msg_id FROM destination WHERE lease_owner = '{owner}'"),
        ])
        .output()
        .expect("run psql");
    assert!(output.status.success(), "psql failed: {output:?}");
    String::from_utf8(output.stdout)
        .expect("psql output")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Sends `count` messages spread over the nodes' APIs; returns message id -> sequence.
async fn send(nodes: &[Server], app: &str, count: usize) -> HashMap<String, usize> {
    send_to(message_urls(nodes, app), count).await
}

fn message_urls(nodes: &[Server], app: &str) -> Vec<String> {
    nodes
        .iter()
        .map(|node| format!("{}/api/v1/app/{app}/msg", node.url))
        .collect()
}

/// Sends `count` messages round-robin to `urls` at concurrency 32. A 503 (the database
/// out of reach) is tried again, as the Svix SDKs do; only a 202 counts as accepted.
async fn send_to(urls: Vec<String>, count: usize) -> HashMap<String, usize> {
    let urls = Arc::new(urls);
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            let mut sent = HashMap::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= count {
                    return sent;
                }
                let mut tries = 0;
                let body = loop {
                    let response = client
                        .post(&urls[seq % urls.len()])
                        .bearer_auth(TOKEN)
                        .json(&json!({"eventType": "node.test", "payload": {"seq": seq}}))
                        .send()
                        .await
                        .expect("create reaches a live node");
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.expect("json");
                    tries += 1;
                    if status == 503 && tries < 20 {
                        tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                        continue;
                    }
                    assert_eq!(status, 202, "{body}");
                    break body;
                };
                sent.insert(body["id"].as_str().expect("id").to_owned(), seq);
            }
        }));
    }
    let mut all = HashMap::new();
    for sender in senders {
        all.extend(sender.await.expect("sender"));
    }
    all
}

/// How many of the `sent` messages (by id) are in none of the `deliveries`.
fn undelivered(sent: &HashMap<String, usize>, deliveries: &[Delivery]) -> usize {
    let delivered: HashSet<&str> = deliveries
        .iter()
        .filter_map(|d| d.headers.get("webhook-id").map(String::as_str))
        .collect();
    sent.keys()
        .filter(|id| !delivered.contains(id.as_str()))
        .count()
}

async fn setup(nodes: &[Server], receiver_url: &str, endpoints: usize) -> String {
    let (status, app) = nodes[0]
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "nodes"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app = app["id"].as_str().unwrap().to_owned();
    for k in 0..endpoints {
        let (status, body) = nodes[k % nodes.len()]
            .api(
                Method::POST,
                &format!("/api/v1/app/{app}/endpoint"),
                Some(json!({"url": format!("{receiver_url}/ep{k}")})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    app
}

/// (webhook-id, path) -> how many times it arrived.
fn counts(receiver: &Receiver) -> HashMap<(String, String), usize> {
    let mut counts = HashMap::new();
    for delivery in receiver.deliveries() {
        let id = delivery
            .headers
            .get("webhook-id")
            .expect("webhook-id")
            .clone();
        *counts.entry((id, delivery.path.clone())).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn three_nodes_deliver_every_message_once_to_each_endpoint() {
    const MESSAGES: usize = 10_000;
    const ENDPOINTS: usize = 2;
    let Some(url) = postgres_schema("three") else {
        return;
    };
    let dir = TempDir::new("three-nodes");
    let (receiver, receiver_url) = Receiver::start().await;
    let nodes = start_nodes(&dir, &url, 3).await;
    let app = setup(&nodes, &receiver_url, ENDPOINTS).await;
    let sent = send(&nodes, &app, MESSAGES).await;
    assert_eq!(sent.len(), MESSAGES);

    receiver
        .wait_until(Duration::from_secs(120), |d| {
            d.len() >= MESSAGES * ENDPOINTS
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show now
    let counts = counts(&receiver);
    for id in sent.keys() {
        for k in 0..ENDPOINTS {
            let n = counts
                .get(&(id.clone(), format!("/ep{k}")))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "message {id} reached /ep{k} {n} times");
        }
    }
    assert_eq!(counts.len(), MESSAGES * ENDPOINTS);
}

#[tokio::test]
async fn a_node_killed_mid_run_loses_nothing() {
    const MESSAGES: usize = 3_000;
    let Some(url) = postgres_schema("kill") else {
        return;
    };
    let dir = TempDir::new("kill-node");
    let (receiver, receiver_url) = Receiver::start().await;
    // While messages are sent, every answer takes a second (16 in flight per node), so a
    // backlog is queued and some deliveries are in flight when a node is killed.
    *receiver.delay.lock().unwrap() = Duration::from_secs(1);
    let mut nodes = start_nodes(&dir, &url, 3).await;
    let app = setup(&nodes, &receiver_url, 1).await;
    let sent = send(&nodes, &app, MESSAGES).await;
    nodes[2].kill();
    let delivered_at_kill = receiver.deliveries().len();
    // Its leases stay until they expire (attempt timeout + margin): read them now.
    let held_by_killed = leased_by(&url, &node_id(2));
    assert!(
        !held_by_killed.is_empty(),
        "the killed node held no leases: the kill did not come mid-delivery"
    );
    *receiver.delay.lock().unwrap() = Duration::ZERO;
    assert!(
        delivered_at_kill < MESSAGES / 2,
        "the kill must come mid-run, not after {delivered_at_kill} deliveries"
    );

    let deliveries = receiver
        .wait_until(Duration::from_secs(120), |d| undelivered(&sent, d) == 0)
        .await;
    let counts = counts(&receiver);
    let missing = sent
        .keys()
        .filter(|id| !counts.contains_key(&((*id).clone(), "/ep0".into())))
        .count();
    assert_eq!(
        missing, 0,
        "every accepted message is delivered after a node dies"
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    // Only deliveries the killed node held can repeat: with its one endpoint taking 16 at a
    // time, far fewer than 256.
    assert!(duplicates <= 256, "{duplicates} duplicates");
    for ((id, _), n) in &counts {
        assert!(
            *n == 1 || held_by_killed.contains(id),
            "{id} was delivered {n} times, yet the killed node held no lease on it"
        );
    }
    for delivery in &deliveries {
        let id = &delivery.headers["webhook-id"];
        let payload: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(
            payload["seq"],
            json!(sent[id]),
            "a duplicate carries its own webhook-id"
        );
    }
    println!(
        "{} deliveries before the kill, {} in all, {duplicates} duplicates, {} leases held by \
         the killed node",
        delivered_at_kill,
        deliveries.len(),
        held_by_killed.len()
    );
}

/// Roles split the work: an api node takes messages but never delivers, a worker node
/// delivers but serves no API (only its probes and metrics). A worker that has gone idle starts work created through
/// the api node at once: woken by LISTEN/NOTIFY, not by its next poll, a minute away here.
#[tokio::test]
async fn api_and_worker_roles_split_the_work_and_notify_wakes_the_worker() {
    let Some(url) = postgres_schema("roles") else {
        return;
    };
    let dir = TempDir::new("roles");
    let (receiver, receiver_url) = Receiver::start().await;
    let config = dir.0.join("slow-poll.toml");
    std::fs::write(&config, "[delivery]\npoll_interval = 60\n").unwrap();
    let config = config.to_str().unwrap();
    let api = Server::start_with_args(
        &dir.0,
        &["--role", "api", "--config", config],
        &node_env(&url, &node_id(0)),
    )
    .await;
    let nodes = [api];
    let app = setup(&nodes, &receiver_url, 1).await;
    let before = send(&nodes, &app, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.deliveries().is_empty(),
        "an api node does not deliver"
    );

    let worker = Server::start_worker(
        &dir.0,
        &["--config", config],
        &node_env(&url, &node_id(1)),
        &dir.0.join("worker.log"),
    )
    .await;
    let got = receiver
        .wait_until(Duration::from_secs(15), |d| !d.is_empty())
        .await;
    assert_eq!(
        got.iter()
            .map(|d| &d.headers["webhook-id"])
            .collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the worker delivers what waited for it"
    );
    let health = reqwest::get(format!("{}/api/v1/health", worker.url)).await;
    assert_eq!(health.unwrap().status(), 404, "a worker node serves no API");

    // Long enough for the worker to find nothing more to do and go to sleep.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = send(&nodes, &app, 3).await;
    let deliveries = receiver
        .wait_until(Duration::from_secs(15), |d| d.len() > sent.len())
        .await;
    assert_eq!(
        undelivered(&sent, &deliveries),
        0,
        "delivered well before the worker's next poll"
    );
}

#[tokio::test]
async fn lost_database_connections_are_retried_without_losing_messages() {
    const MESSAGES: usize = 3_000;
    let Some(url) = postgres_schema("terminate") else {
        return;
    };
    let admin_url = std::env::var("HOOKLINE_TEST_POSTGRES_URL").unwrap();
    let schema = format!("hookline_node_terminate_{}", std::process::id());
    let dir = TempDir::new("terminate");
    let (receiver, receiver_url) = Receiver::start().await;
    *receiver.delay.lock().unwrap() = Duration::from_millis(20);
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for index in 0..2 {
        let node_id = node_id(index);
        let log = dir.0.join(format!("{node_id}.log"));
        nodes.push(Server::start_logging(&dir.0, &node_env(&url, &node_id), &log).await);
        logs.push(log);
    }
    let app = setup(&nodes, &receiver_url, 1).await;
    // Messages are being created, and delivered, while the connections are cut.
    let sending = tokio::spawn(send_to(message_urls(&nodes, &app), MESSAGES));

    // Cut every connection of both nodes, twice.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let terminated = Command::new("psql")
            .args([
                admin_url.as_str(),
                "-tAc",
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = '{schema}'"
                ),
            ])
            .output()
            .expect("run psql");
        let count: usize = String::from_utf8_lossy(&terminated.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(
            count > 0,
            "no connections of the nodes were found to terminate"
        );
    }
    assert!(
        !sending.is_finished(),
        "the connections must be cut while messages are still being sent"
    );
    let sent = sending.await.expect("sender");
    assert_eq!(sent.len(), MESSAGES, "every create is accepted in the end");
    let deliveries = receiver
        .wait_until(Duration::from_secs(120), |d| undelivered(&sent, d) == 0)
        .await;
    assert_eq!(
        undelivered(&sent, &deliveries),
        0,
        "every accepted message is delivered although the database connections dropped"
    );
    for node in &mut nodes {
        assert!(node.is_running(), "a lost connection must not crash a node");
    }
    // The API answers again on every node.
    for node in &nodes {
        let (status, _) = node.api(Method::GET, "/api/v1/app", None).await;
        assert_eq!(status, 200);
    }
    // Each node said what happened and that it reconnects with a backoff.
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("node log");
        assert!(
            text.lines()
                .any(|line| line.contains("reconnecting") && line.contains("backoff")),
            "{} does not log the reconnection:\n{text}",
            log.display()
        );
    }
}
