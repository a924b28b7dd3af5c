//! Faults under load (issue 16): `hookline serve` killed with SIGKILL a hundred times on
//! SQLite and on a three-node PostgreSQL cluster, PostgreSQL connections terminated and
//! PostgreSQL restarted, and a SQLite disk that fills up. In each, a client creates
//! messages without pause, retrying connection errors and 5xx answers with the same
//! `idempotency-key` (as the Svix SDKs do), and only messages answered 202 count as
//! accepted; a loopback receiver records every delivery. The checks: every accepted
//! message is delivered at least once, a duplicate carries the `webhook-id` (and body) of
//! its message, and no create is ever answered with anything but 202 or a 503
//! `unavailable`. Each test prints its figures (`--no-capture` shows them); README
//! "Reliability" quotes them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::server::{Receiver, Server, TOKEN, TempDir, free_port, postgres_schema};

/// What the load client saw.
#[derive(Default)]
struct Seen {
    /// Message id -> (sequence number, when the 202 came).
    accepted: Mutex<HashMap<String, (usize, Instant)>>,
    /// Requests that got no answer: connection refused or cut.
    no_answer: AtomicUsize,
    /// 503 `unavailable` answers.
    unavailable: AtomicUsize,
    /// Any other answer but 202: status and body. Must stay empty.
    unexpected: Mutex<Vec<(u16, String)>>,
}

impl Seen {
    fn accepted(&self) -> HashMap<String, (usize, Instant)> {
        self.accepted.lock().unwrap().clone()
    }

    fn accepted_count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// The longest time between two 202s answered after `since`: the outage a client saw.
    fn longest_gap_after(&self, since: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .accepted
            .lock()
            .unwrap()
            .values()
            .map(|(_, at)| *at)
            .filter(|at| *at > since)
            .collect();
        times.sort();
        times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }

    /// The first 202 answered after `since`, and when.
    fn first_accepted_after(&self, since: Instant) -> Option<(String, Instant)> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, at))| *at > since)
            .min_by_key(|(_, (_, at))| *at)
            .map(|(id, (_, at))| (id.clone(), *at))
    }
}

/// A client creating messages continuously from `tasks` concurrent tasks.
struct Load {
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Posts to `urls` (message-create URLs, one per node) round-robin; a create that
    /// fails is tried again on the next node after a short backoff (20 ms doubling to
    /// 160 ms), with the same idempotency key, until it is answered 202. `padding` bytes
    /// are added to each payload.
    fn start(urls: Vec<String>, tasks: usize, padding: usize) -> Load {
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let urls = Arc::new(urls);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let pad = "x".repeat(padding);
        let tasks = (0..tasks)
            .map(|_| {
                let (seen, stop, next, urls, client, pad) = (
                    seen.clone(),
                    stop.clone(),
                    next.clone(),
                    urls.clone(),
                    client.clone(),
                    pad.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        create(&client, &urls, seq, &pad, &seen).await;
                    }
                })
            })
            .collect();
        Load { seen, stop, tasks }
    }

    /// Stops taking new sequence numbers; each task finishes the create it is on.
    async fn finish(self) -> Arc<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("the load's last creates are answered")
                .expect("load task");
        }
        self.seen
    }
}

/// Creates message `seq`, retrying until it is answered 202.
async fn create(client: &reqwest::Client, urls: &[String], seq: usize, pad: &str, seen: &Seen) {
    let key = format!("fault-{seq}-{}", std::process::id());
    let mut backoff = Duration::from_millis(20);
    for attempt in 0.. {
        let url = &urls[(seq + attempt) % urls.len()];
        let response = client
            .post(url)
            .bearer_auth(TOKEN)
            .header("idempotency-key", &key)
            .json(&json!({"eventType": "fault.test", "payload": {"seq": seq, "pad": pad}}))
            .send()
            .await;
        match response {
            Err(_) => {
                seen.no_answer.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if status == 202
                    && let Some(id) = body["id"].as_str()
                {
                    let now = Instant::now();
                    seen.accepted
                        .lock()
                        .unwrap()
                        .insert(id.to_owned(), (seq, now));
                    return;
                }
                if status == 503 && body["code"] == "unavailable" {
                    seen.unavailable.fetch_add(1, Ordering::Relaxed);
                } else {
                    seen.unexpected.lock().unwrap().push((status, text));
                    if status < 500 {
                        return; // Not worth retrying: the test fails on it.
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(160));
    }
}

/// What the deliveries showed.
struct Outcome {
    accepted: usize,
    deliveries: usize,
    duplicates: usize,
    /// Messages delivered that no client was answered 202 for: a create whose answer was
    /// cut, retried with the same idempotency key, that made a second message.
    second_messages: usize,
    /// From the end of the load until every accepted message had arrived.
    drain: Duration,
}

/// Waits (up to `timeout`) until every accepted message has arrived, then checks the
/// deliveries: none missing, each carries its message's `webhook-id` and payload, and a
/// message delivered that was never answered 202 is a second message of a create that
/// was (counted in [`Outcome::second_messages`]), not anything else.
async fn check_deliveries(seen: &Seen, receiver: &Receiver, timeout: Duration) -> Outcome {
    let unexpected = seen.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "{} creates answered neither 202 nor 503 unavailable, e.g. {:?}",
        unexpected.len(),
        unexpected.first()
    );
    let accepted = seen.accepted();
    let started = Instant::now();
    let deliveries = receiver
        .wait_until(timeout, |deliveries| {
            let ids: HashSet<&str> = deliveries
                .iter()
                .filter_map(|d| d.headers.get("webhook-id").map(String::as_str))
                .collect();
            accepted.keys().all(|id| ids.contains(id.as_str()))
        })
        .await;
    let drain = started.elapsed();
    let accepted_seqs: HashSet<usize> = accepted.values().map(|(seq, _)| *seq).collect();
    let mut bodies: HashMap<&str, &[u8]> = HashMap::new();
    let mut second_messages = HashSet::new();
    for delivery in &deliveries {
        let id = delivery
            .headers
            .get("webhook-id")
            .expect("webhook-id on every delivery");
        let payload: serde_json::Value = serde_json::from_slice(&delivery.body).expect("json");
        match accepted.get(id) {
            Some((seq, _)) => assert_eq!(payload["seq"], json!(seq), "{id} carries its message"),
            None => {
                let seq = payload["seq"].as_u64().expect("seq") as usize;
                assert!(
                    accepted_seqs.contains(&seq),
                    "{id} (seq {seq}) was delivered, but no create of it was ever accepted"
                );
                second_messages.insert(id);
            }
        }
        let first = bodies.entry(id).or_insert(&delivery.body);
        assert_eq!(
            *first,
            &delivery.body[..],
            "a duplicate of {id} is unchanged"
        );
    }
    let missing: Vec<&String> = accepted
        .keys()
        .filter(|id| !bodies.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted messages never delivered, e.g. {:?}",
        missing.len(),
        accepted.len(),
        missing.first()
    );
    Outcome {
        accepted: accepted.len(),
        deliveries: deliveries.len(),
        duplicates: deliveries.len() - bodies.len(),
        second_messages: second_messages.len(),
        drain,
    }
}

/// An application with one endpoint at `receiver_url`; returns the message-create path.
async fn setup(node: &Server, receiver_url: &str) -> String {
    let (status, app) = node
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "faults"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app = app["id"].as_str().unwrap().to_owned();
    let (status, endpoint) = node
        .api(
            Method::POST,
            &format!("/api/v1/app/{app}/endpoint"),
            Some(json!({"url": format!("{receiver_url}/faults")})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    format!("/api/v1/app/{app}/msg")
}

/// How long the `kill`th node lives before it is killed: 150 to 450 ms.
fn uptime(kill: usize) -> Duration {
    Duration::from_millis(150 + (kill as u64 * 7919) % 301)
}

/// What a run of kills showed.
struct Kills {
    /// Kills after which the client had been answered 202 since the previous one.
    under_load: usize,
    /// Longest time from SIGKILL to the new process answering its health check.
    slowest_restart: Duration,
    /// Deliveries the receiver got while the kills went on.
    delivered: usize,
}

/// Kills `kills` times, rotating over `nodes`: each lives [`uptime`], is killed with
/// SIGKILL, and is started again on its port with `env(index)`.
async fn kill_loop(
    dir: &Path,
    nodes: &mut [Server],
    ports: &[u16],
    env: impl Fn(usize) -> Vec<(&'static str, String)>,
    kills: usize,
    seen: &Seen,
    receiver: &Receiver,
) -> Kills {
    let mut under_load = 0;
    let mut slowest_restart = Duration::ZERO;
    let mut accepted_before = seen.accepted_count();
    for kill in 0..kills {
        tokio::time::sleep(uptime(kill)).await;
        let index = kill % nodes.len();
        nodes[index].kill();
        let accepted = seen.accepted_count();
        if accepted > accepted_before {
            under_load += 1;
        }
        accepted_before = accepted;
        let killed_at = Instant::now();
        let env = env(index);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes[index] = Server::start_on(dir, ports[index], &env).await;
        slowest_restart = slowest_restart.max(killed_at.elapsed());
    }
    Kills {
        under_load,
        slowest_restart,
        delivered: receiver.deliveries().len(),
    }
}

const KILLS: usize = 100;
/// Concurrent creates of the load in the kill and PostgreSQL tests.
const LOAD_TASKS: usize = 8;

#[tokio::test]
async fn sqlite_a_hundred_sigkills_under_load_lose_nothing() {
    let dir = TempDir::new("faults-sqlite-kills");
    let (receiver, receiver_url) = Receiver::start().await;
    let env = |_| {
        vec![
            ("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1,1".to_owned()),
            ("HOOKLINE_ATTEMPT_TIMEOUT", "2".to_owned()),
        ]
    };
    let port = free_port();
    let first: Vec<(&str, String)> = env(0);
    let first: Vec<(&str, &str)> = first.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut nodes = vec![Server::start_on(&dir.0, port, &first).await];
    let path = setup(&nodes[0], &receiver_url).await;
    let load = Load::start(vec![format!("{}{path}", nodes[0].url)], LOAD_TASKS, 0);
    let started = Instant::now();
    let kills = kill_loop(
        &dir.0,
        &mut nodes,
        &[port],
        env,
        KILLS,
        &load.seen,
        &receiver,
    )
    .await;
    let seen = load.finish().await;
    let loaded_for = started.elapsed();
    let outcome = check_deliveries(&seen, &receiver, Duration::from_secs(60)).await;
    assert!(
        kills.under_load >= KILLS * 9 / 10,
        "only {} of {KILLS} kills came while creates were being accepted",
        kills.under_load
    );
    assert!(
        outcome.accepted >= 1000,
        "too little load: {}",
        outcome.accepted
    );
    assert_eq!(
        outcome.second_messages, 0,
        "on one node a retried create is answered from its idempotency record"
    );
    println!(
        "sqlite: {KILLS} SIGKILLs in {loaded_for:?} ({} under load, slowest restart {:?}); \
         {} accepted, {} creates unanswered (connection cut or refused), {} answered 503; \
         {} delivered during the kills, {} deliveries in all, {} duplicates (same \
         webhook-id), 0 lost; drained {:?} after the load",
        kills.under_load,
        kills.slowest_restart,
        outcome.accepted,
        seen.no_answer.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed),
        kills.delivered,
        outcome.deliveries,
        outcome.duplicates,
        outcome.drain
    );
}

#[tokio::test]
async fn postgres_a_hundred_sigkills_over_three_nodes_lose_nothing() {
    let Some(url) = postgres_schema("faultkills") else {
        return;
    };
    let dir = TempDir::new("faults-pg-kills");
    let (receiver, receiver_url) = Receiver::start().await;
    let env = |index: usize| {
        vec![
            ("HOOKLINE_DATABASE_URL", url.clone()),
            ("HOOKLINE_NODE_ID", format!("fault-node-{index}")),
            ("HOOKLINE_ATTEMPT_TIMEOUT", "1".to_owned()),
            ("HOOKLINE_DATABASE_POOL_SIZE", "4".to_owned()),
            ("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1,1".to_owned()),
        ]
    };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        let env = env(index);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(Server::start_on(&dir.0, *port, &env).await);
    }
    let path = setup(&nodes[0], &receiver_url).await;
    let urls = nodes.iter().map(|n| format!("{}{path}", n.url)).collect();
    let load = Load::start(urls, LOAD_TASKS, 0);
    let started = Instant::now();
    let kills = kill_loop(
        &dir.0, &mut nodes, &ports, env, KILLS, &load.seen, &receiver,
    )
    .await;
    let seen = load.finish().await;
    let loaded_for = started.elapsed();
    // A killed node's leases run out after the attempt timeout and the 30 s lease margin.
    let outcome = check_deliveries(&seen, &receiver, Duration::from_secs(90)).await;
    assert!(
        kills.under_load >= KILLS * 9 / 10,
        "only {} of {KILLS} kills came while creates were being accepted",
        kills.under_load
    );
    assert!(
        outcome.accepted >= 1000,
        "too little load: {}",
        outcome.accepted
    );
    for node in &mut nodes {
        assert!(node.is_running());
    }
    // A create whose answer a kill cut, retried on another node with the same key, is
    // answered as the first was (its idempotency record is claimed in the message's
    // transaction): never a second message.
    assert_eq!(outcome.second_messages, 0);
    println!(
        "postgres, 3 nodes: {KILLS} SIGKILLs in {loaded_for:?} ({} under load, slowest \
         restart {:?}); {} accepted, {} creates unanswered (connection cut or refused), {} \
         answered 503; {} delivered during the kills, {} deliveries in all, {} duplicates \
         (same webhook-id), {} second messages of retried creates, 0 lost; drained {:?} \
         after the load",
        kills.under_load,
        kills.slowest_restart,
        outcome.accepted,
        seen.no_answer.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed),
        kills.delivered,
        outcome.deliveries,
        outcome.duplicates,
        outcome.second_messages,
        outcome.drain
    );
}

/// Whether this process runs as root (mounting and `runuser` need it).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A PostgreSQL cluster of this test's own, on a free port, so that restarting it
/// disturbs no other test that shares the machine's server. Stopped on drop.
struct PrivatePostgres {
    root: TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// `None` (with a notice) when this is not root or PostgreSQL's binaries are absent.
    fn start() -> Option<PrivatePostgres> {
        if std::env::var("HOOKLINE_TEST_POSTGRES_URL").is_err() {
            eprintln!("skipped: HOOKLINE_TEST_POSTGRES_URL not set");
            return None;
        }
        let versions = std::fs::read_dir("/usr/lib/postgresql").ok();
        let bin = versions
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max();
        let (Some(bin), true) = (bin, is_root()) else {
            eprintln!("skipped: needs root and /usr/lib/postgresql/*/bin/pg_ctl");
            return None;
        };
        let root = TempDir::new("faults-pg");
        let chown = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&root.0)
            .status()
            .expect("chown");
        assert!(chown.success());
        let pg = PrivatePostgres {
            root,
            bin,
            port: free_port(),
        };
        pg.run("initdb", &["-A", "trust", "-U", "postgres", "--no-sync"]);
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            pg.port,
            pg.root.0.display()
        );
        let log = pg.root.0.join("log");
        pg.run(
            "pg_ctl",
            &["start", "-w", "-l", log.to_str().unwrap(), "-o", &options],
        );
        Some(pg)
    }

    /// Runs a PostgreSQL program on the cluster's data directory as user postgres. Its
    /// output goes to the cluster's log, not to a pipe: a server that `pg_ctl` starts
    /// would hold a pipe open for as long as it runs.
    fn run(&self, program: &str, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.0.join("programs.log"))
            .expect("log file");
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .arg("-D")
            .arg(self.root.0.join("data"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .status()
            .expect("run a postgres program");
        assert!(status.success(), "{program} {args:?} failed: {status}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one statement; returns its output.
    fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([self.url().as_str(), "-tAc", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.root.0.join("data"))
            .args(["stop", "-m", "immediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// From `since` to the first 202 answered after it, and to the arrival of the first
/// message accepted after it.
async fn recovery(seen: &Seen, receiver: &Receiver, since: Instant) -> (Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (id, accepted_at) = loop {
        if let Some(first) = seen.first_accepted_after(since) {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "no create accepted after {since:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let deliveries = receiver
        .wait_until(Duration::from_secs(30), |deliveries| {
            deliveries
                .iter()
                .any(|d| d.headers.get("webhook-id") == Some(&id))
        })
        .await;
    assert!(
        deliveries
            .iter()
            .any(|d| d.headers.get("webhook-id") == Some(&id)),
        "{id}, accepted after the fault, was not delivered"
    );
    (accepted_at - since, since.elapsed())
}

/// Longest allowed from PostgreSQL being reachable again to the next create accepted,
/// and to that message being delivered.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn postgres_terminated_connections_and_a_restart_recover_within_seconds() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let url = pg.url();
    let dir = TempDir::new("faults-pg-restart");
    let (receiver, receiver_url) = Receiver::start().await;
    let mut nodes = Vec::new();
    for index in 0..2 {
        let node_id = format!("restart-node-{index}");
        nodes.push(
            Server::start_process(
                &dir.0,
                &[
                    ("HOOKLINE_DATABASE_URL", url.as_str()),
                    ("HOOKLINE_NODE_ID", node_id.as_str()),
                    ("HOOKLINE_ATTEMPT_TIMEOUT", "2"),
                    ("HOOKLINE_DATABASE_POOL_SIZE", "4"),
                    ("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1,1"),
                ],
            )
            .await,
        );
    }
    let path = setup(&nodes[0], &receiver_url).await;
    let urls = nodes.iter().map(|n| format!("{}{path}", n.url)).collect();
    let load = Load::start(urls, LOAD_TASKS, 0);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every connection of the nodes cut at once.
    let terminated: usize = pg
        .psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .parse()
        .expect("a count");
    let cut_at = Instant::now();
    assert!(terminated > 0, "no connections to terminate");
    let (terminate_create, terminate_delivery) = recovery(&load.seen, &receiver, cut_at).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A restart: sessions end, and nothing connects until the server is back.
    let restart_began = Instant::now();
    let log = pg.root.0.join("log");
    pg.run(
        "pg_ctl",
        &["restart", "-w", "-m", "fast", "-l", log.to_str().unwrap()],
    );
    let back_at = Instant::now();
    let down = back_at - restart_began;
    let (restart_create, restart_delivery) = recovery(&load.seen, &receiver, back_at).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = load.finish().await;
    let longest_gap = seen.longest_gap_after(cut_at);
    let outcome = check_deliveries(&seen, &receiver, Duration::from_secs(60)).await;
    for node in &mut nodes {
        assert!(node.is_running(), "a database fault must not crash a node");
    }
    for (what, took) in [
        ("create after the terminate", terminate_create),
        ("delivery after the terminate", terminate_delivery),
        ("create after the restart", restart_create),
        ("delivery after the restart", restart_delivery),
    ] {
        assert!(took <= RECOVERY_BOUND, "{what} took {took:?}");
    }
    println!(
        "postgres faults, 2 nodes: {terminated} connections terminated -> next create \
         accepted after {terminate_create:?}, delivered after {terminate_delivery:?}; \
         restart took {down:?} -> from PostgreSQL back to the next create accepted \
         {restart_create:?}, delivered {restart_delivery:?}; longest time without a 202 \
         {longest_gap:?}; {} accepted, {} creates \
         unanswered, {} answered 503, {} deliveries, {} duplicates, {} second messages of \
         retried creates, 0 lost",
        outcome.accepted,
        seen.no_answer.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed),
        outcome.deliveries,
        outcome.duplicates,
        outcome.second_messages
    );
}

/// A small tmpfs mounted for the life of the guard.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !mounted.status.success() {
            eprintln!(
                "skipped: mounting a tmpfs was refused: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            return None;
        }
        Some(Mount(dir.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the filesystem at `path` but for `leave` bytes: writes until a write fails for
/// want of space, then gives `leave` bytes back. Returns the filler's size.
fn fill(path: &Path, leave: u64) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xA5u8; 16 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(28), "ENOSPC expected: {error}");
                break;
            }
        }
    }
    let size = written.saturating_sub(leave);
    file.set_len(size).expect("give space back");
    size
}

#[tokio::test]
async fn sqlite_disk_full_answers_503_and_recovers_without_loss() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = TempDir::new("faults-disk-full");
    // Once the space returns, the server needs room for its WAL's high-water mark (up to
    // 64 MiB under load, before the writer checkpoints by itself) beside the database: with
    // less, the WAL can fill the disk again before a checkpoint restarts it, and the
    // checkpoint then cannot grow the database file to empty it. 128 MiB leaves room.
    let Some(mount) = Mount::tmpfs(&dir.0.join("fs"), "128m") else {
        return;
    };
    let database = mount.0.join("hookline.db");
    let database_url = format!("sqlite://{}", database.display());
    let (receiver, receiver_url) = Receiver::start().await;
    let mut node = Server::start_process(
        &dir.0,
        &[
            ("HOOKLINE_DATABASE_URL", database_url.as_str()),
            ("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1,1"),
        ],
    )
    .await;
    let path = setup(&node, &receiver_url).await;
    // The disk is full but for 512 KiB; 1 KiB payloads soon take that.
    let filler = mount.0.join("filler");
    let filled = fill(&filler, 512 << 10);
    let load = Load::start(vec![format!("{}{path}", node.url)], 4, 1024);
    let full_at = Instant::now();
    let deadline = full_at + Duration::from_secs(20);
    while load.seen.unavailable.load(Ordering::Relaxed) < 50 {
        assert!(
            Instant::now() < deadline,
            "no 503 after the disk filled: {} accepted, unexpected answers {:?}",
            load.seen.accepted_count(),
            load.seen.unexpected.lock().unwrap().first()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_503 = full_at.elapsed();
    // Stay full for a while: every create is refused cleanly, the node keeps running.
    let accepted_full = load.seen.accepted_count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.is_running(), "a full disk must not crash the node");
    let accepted_while_full = load.seen.accepted_count() - accepted_full;
    let unavailable_full = load.seen.unavailable.load(Ordering::Relaxed);

    std::fs::remove_file(&filler).expect("free the space");
    let freed_at = Instant::now();
    let deadline = freed_at + Duration::from_secs(10);
    let recovered = loop {
        if let Some((_, at)) = load.seen.first_accepted_after(freed_at) {
            break at - freed_at;
        }
        assert!(
            Instant::now() < deadline,
            "no create accepted once space returned"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = load.finish().await;
    let outcome = check_deliveries(&seen, &receiver, Duration::from_secs(60)).await;
    assert!(node.is_running(), "the node survived the full disk");
    assert_eq!(outcome.second_messages, 0);

    // The file is sound, read back after the node is gone.
    node.kill();
    let check = Command::new("sqlite3")
        .arg(&database)
        .arg("PRAGMA integrity_check")
        .output()
        .expect("run sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "integrity_check: {check:?}"
    );
    println!(
        "sqlite disk full (128 MiB tmpfs, {filled} filler bytes): 50 503s within \
         {first_503:?} of the disk filling; {} answered 503 unavailable (0 of any other \
         error), {accepted_while_full} accepted in the next second; space freed -> next create \
         accepted after {recovered:?}; {} \
         accepted in all, {} deliveries, {} duplicates, 0 lost; integrity_check ok",
        unavailable_full, outcome.accepted, outcome.deliveries, outcome.duplicates
    );
}
