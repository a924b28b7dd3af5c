//! `hookline serve` end to end: first start, graceful shutdown, crash safety, and what an
//! endpoint URL with credentials is sent.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::server::{Receiver, Server, TempDir, free_port, metric};

#[tokio::test]
async fn first_start_creates_the_database_and_prints_an_admin_token_once() {
    let dir = TempDir::new("first-start");
    let port = free_port();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .arg("serve")
            .current_dir(&dir.0)
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("HOOKLINE_DATABASE_URL")
            .env_remove("HOOKLINE_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let wait_health = || async {
        for _ in 0..400 {
            if client
                .get(format!("{url}/api/v1/health"))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not start");
    };

    let first = start();
    wait_health().await;
    assert!(
        dir.0.join("hookline.db").exists(),
        "./hookline.db is the default"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &first.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = first.wait_with_output().expect("first run output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let token = stderr
        .split_whitespace()
        .find(|word| word.starts_with("hlk_"))
        .unwrap_or_else(|| panic!("no admin token printed: {stderr}"))
        .to_owned();

    let second = start();
    wait_health().await;
    let apps = client
        .get(format!("{url}/api/v1/app"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        apps.status().as_u16(),
        200,
        "the printed token works after a restart"
    );
    let wrong = client
        .get(format!("{url}/api/v1/app"))
        .bearer_auth("hlk_not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(
        Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = second.wait_with_output().unwrap();
    assert!(output.status.success(), "SIGTERM is a clean exit");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("hlk_"),
        "the token is printed only once"
    );
}

/// Kills the server with SIGKILL while thousands of messages are in flight, restarts it
/// on the same database, and checks that every message accepted with a 2xx is delivered,
/// duplicates carrying the same webhook-id.
#[tokio::test]
async fn every_accepted_message_survives_a_sigkill() {
    const MESSAGES: usize = 3000;
    let dir = TempDir::new("crash");
    let (receiver, receiver_url) = Receiver::start().await;
    // Until the kill every answer takes a second (16 in flight), so most accepted messages
    // are still queued, and some in flight, when the server dies.
    *receiver.delay.lock().unwrap() = Duration::from_secs(1);
    let mut server =
        Server::start_process(&dir.0, &[("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1,1")]).await;
    let app_id = server
        .app_with_endpoint("crash", &format!("{receiver_url}/crash"))
        .await;

    // Send from 32 concurrent tasks; kill the server part way through.
    let accepted = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/app/{app_id}/msg", server.url);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (client, url, next, accepted) =
            (client.clone(), url.clone(), next.clone(), accepted.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seq >= MESSAGES {
                    return;
                }
                let response = client
                    .post(&url)
                    .bearer_auth(crate::server::TOKEN)
                    .json(&json!({"eventType": "crash.test", "payload": {"seq": seq}}))
                    .send()
                    .await;
                let Ok(response) = response else { continue };
                if response.status().is_success()
                    && let Ok(body) = response.json::<serde_json::Value>().await
                    && let Some(id) = body["id"].as_str()
                {
                    accepted.lock().unwrap().insert(id.to_owned(), seq);
                }
            }
        }));
    }
    let started = Instant::now();
    while accepted.lock().unwrap().len() < MESSAGES / 3
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kill_at = started.elapsed();
    server.kill();
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= MESSAGES / 3,
        "only {} accepted before the kill",
        accepted.len()
    );
    let delivered_before = receiver.deliveries().len();
    *receiver.delay.lock().unwrap() = Duration::ZERO;
    assert!(
        delivered_before + 200 < accepted.len(),
        "the kill should catch a backlog: {delivered_before} of {} delivered",
        accepted.len()
    );

    let restarted_at = Instant::now();
    let _restarted = Server::start(&dir.0, &[("HOOKLINE_RETRY_SCHEDULE", "1,1,1,1,1")]).await;
    let deliveries = receiver
        .wait_until(Duration::from_secs(90), |deliveries| {
            let ids: HashSet<&str> = deliveries
                .iter()
                .filter_map(|d| d.headers.get("webhook-id").map(String::as_str))
                .collect();
            accepted.keys().all(|id| ids.contains(id.as_str()))
        })
        .await;

    let mut seen: HashMap<String, usize> = HashMap::new();
    for delivery in &deliveries {
        assert_eq!(delivery.path, "/crash");
        let id = delivery
            .headers
            .get("webhook-id")
            .expect("webhook-id on every delivery")
            .clone();
        let payload: serde_json::Value = serde_json::from_slice(&delivery.body).expect("json body");
        if let Some(seq) = accepted.get(&id) {
            assert_eq!(
                payload["seq"],
                json!(seq),
                "webhook-id {id} carries its own message"
            );
        }
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = accepted
        .keys()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted messages never delivered, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "kill after {:?}, all delivered {:?} after the restart",
        kill_at,
        restarted_at.elapsed()
    );
    println!(
        "accepted {} of {MESSAGES}; {delivered_before} delivered before the kill; {} deliveries in all; {duplicates} duplicates (same webhook-id)",
        accepted.len(),
        deliveries.len()
    );
}

/// `serve --no-migrate` refuses a database that `hookline migrate` has not brought up to
/// date, and starts once it has; `--role worker` runs the delivery engine alone, serving
/// only `/healthz` and `/metrics`.
#[tokio::test]
async fn no_migrate_waits_for_hookline_migrate_and_role_flag_picks_the_work() {
    let dir = TempDir::new("no-migrate");
    let database = format!("sqlite://{}", dir.0.join("hookline.db").display());
    let hookline = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookline"));
        command
            .args(args)
            .current_dir(&dir.0)
            .env("HOOKLINE_DATABASE_URL", &database)
            .env("HOOKLINE_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("HOOKLINE_ADMIN_TOKEN", crate::server::TOKEN)
            .env("HOOKLINE_LOG_FORMAT", "text")
            .env("HOOKLINE_LOG_LEVEL", "info")
            .stdin(Stdio::null());
        command
    };

    let refused = hookline(&["serve", "--no-migrate"]).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("run `hookline migrate` first"), "{stderr}");

    let migrated = hookline(&["migrate"]).output().unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    // Ready once its log says it delivers (it fails the test otherwise).
    let worker = Server::start_worker(
        &dir.0,
        &["--no-migrate"],
        &[("HOOKLINE_DATABASE_URL", &database)],
        &dir.0.join("worker.log"),
    )
    .await;
    // It serves probes and its metrics, nothing of the API.
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", worker.url))
            .bearer_auth(crate::server::TOKEN)
            .send()
    };
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("hookline_deliveries{"), "{text}");
    let api = get("/api/v1/app").await.unwrap();
    assert_eq!(api.status(), 404);
    let anonymous = client.get(format!("{}/metrics", worker.url)).send().await;
    assert_eq!(anonymous.unwrap().status(), 401);
    drop(worker);

    let bad_role = hookline(&["serve", "--role", "chef"]).output().unwrap();
    assert_eq!(bad_role.status.code(), Some(2));
}

/// An endpoint created through the API with credentials in its URL is delivered to with
/// them as `Basic` authorization, not in the request line or `host`; the endpoint keeps its
/// URL as given.
#[tokio::test]
async fn credentials_in_an_endpoint_url_arrive_as_basic_authorization() {
    let dir = TempDir::new("url-credentials");
    let (receiver, receiver_url) = Receiver::start().await;
    let server = Server::start(&dir.0, &[]).await;
    let (status, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "creds"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let url = receiver_url.replace("http://", "http://ci%20bot:p%40ss@") + "/secured";
    let (status, endpoint) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/endpoint"),
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["url"], url);
    let (status, message) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app_id}/msg"),
            Some(json!({"eventType": "creds.test", "payload": {"ok": true}})),
        )
        .await;
    assert_eq!(status, 202, "{message}");

    let deliveries = receiver
        .wait_until(Duration::from_secs(10), |d| !d.is_empty())
        .await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let delivery = &deliveries[0];
    assert_eq!(delivery.path, "/secured");
    // base64("ci bot:p@ss")
    assert_eq!(
        delivery.headers.get("authorization").map(String::as_str),
        Some("Basic Y2kgYm90OnBAc3M=")
    );
    let host = &delivery.headers["host"];
    assert!(!host.contains('@'), "{host}");
}

/// With `HOOKLINE_SVIX_HEADERS` a delivery is signed under the `svix-*` names the
/// open-source Svix server uses, and verifies as Svix signs; without it, under `webhook-*`.
#[tokio::test]
async fn svix_header_names_are_an_option() {
    for (svix, names) in [(true, "svix"), (false, "webhook")] {
        let dir = TempDir::new("svix-headers");
        let (receiver, receiver_url) = Receiver::start().await;
        let flag = if svix { "true" } else { "false" };
        let server = Server::start(&dir.0, &[("HOOKLINE_SVIX_HEADERS", flag)]).await;
        let (status, app) = server
            .api(Method::POST, "/api/v1/app", Some(json!({"name": "svix"})))
            .await;
        assert_eq!(status, 201, "{app}");
        let app_id = app["id"].as_str().unwrap().to_owned();
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (status, endpoint) = server
            .api(
                Method::POST,
                &format!("/api/v1/app/{app_id}/endpoint"),
                Some(json!({"url": format!("{receiver_url}/in"), "secret": secret})),
            )
            .await;
        assert_eq!(status, 201, "{endpoint}");
        let (status, message) = server
            .api(
                Method::POST,
                &format!("/api/v1/app/{app_id}/msg"),
                Some(json!({"eventType": "svix.test", "payload": {"ok": true}})),
            )
            .await;
        assert_eq!(status, 202, "{message}");
        let deliveries = receiver
            .wait_until(Duration::from_secs(10), |d| !d.is_empty())
            .await;
        let delivery = &deliveries[0];
        assert_eq!(
            delivery
                .headers
                .get(&format!("{names}-id"))
                .map(String::as_str),
            message["id"].as_str(),
            "{:?}",
            delivery.headers
        );
        let other = if svix { "webhook" } else { "svix" };
        assert!(!delivery.headers.contains_key(&format!("{other}-signature")));
        let scheme = if svix {
            hookline_signature::Scheme::Svix
        } else {
            hookline_signature::Scheme::Standard
        };
        let pairs: Vec<(String, String)> = delivery
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let verified = hookline_signature::verify(
            scheme,
            [secret],
            &pairs,
            &delivery.body,
            hookline_signature::VerifyOptions::default(),
        );
        assert!(verified.is_ok(), "{names}: {verified:?}");
    }
}

/// The server's request log names each request by its id and never writes an ingest
/// URL's token: the path is logged as `/in/[token]/…`.
#[tokio::test]
async fn request_logs_carry_the_request_id_and_hide_ingest_tokens() {
    let dir = TempDir::new("request-log");
    let log = dir.0.join("server.log");
    let server = Server::start_logging(&dir.0, &[("HOOKLINE_LOG_LEVEL", "info")], &log).await;
    let (status, source) = server
        .api(
            Method::POST,
            "/ingest/api/v1/source",
            Some(json!({"name": "logged", "type": "generic-webhook"})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    let ingest_url = source["ingestUrl"].as_str().unwrap().to_owned();
    let token = ingest_url.rsplit('/').next().unwrap().to_owned();
    let response = reqwest::Client::new()
        .post(format!("{ingest_url}/sub/path"))
        .header("x-request-id", "trace-me-4821")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap(),
        "trace-me-4821"
    );
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("trace-me-4821") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = text
        .lines()
        .find(|line| line.contains("trace-me-4821"))
        .unwrap_or_else(|| panic!("no log line names the request id: {text}"));
    assert!(line.contains("/in/[token]/sub/path"), "{line}");
    assert!(
        line.contains(source["id"].as_str().unwrap()),
        "the source is named: {line}"
    );
    assert!(
        !text.contains(&token),
        "the ingest token is in the log: {text}"
    );

    // A message create's log line names its application and the message made.
    let (_, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "logged"})))
        .await;
    let app_id = app["id"].as_str().unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/app/{app_id}/msg", server.url))
        .bearer_auth(crate::server::TOKEN)
        .header("x-request-id", "trace-msg-77")
        .json(&json!({"eventType": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let msg: serde_json::Value = response.json().await.unwrap();
    let mut line = String::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(found) = text.lines().find(|l| l.contains("trace-msg-77")) {
            line = found.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(line.contains(app_id), "{line}");
    assert!(line.contains(msg["id"].as_str().unwrap()), "{line}");
}

/// `GET /metrics` answers the admin token and the metrics token (which opens nothing
/// else), and counts what happened: attempts by outcome, claims and the deliveries they
/// started, create-to-delivery times, inbound requests by verdict, queue depth, open jobs,
/// memory.
#[tokio::test]
async fn metrics_count_deliveries_inbound_requests_and_jobs() {
    const METRICS_TOKEN: &str = "metrics-token-0123456789";
    let dir = TempDir::new("metrics");
    let env = [("HOOKLINE_METRICS_TOKEN", METRICS_TOKEN)];
    for (backend, server) in crate::server::nodes(&dir, "metrics", &env).await {
        let scrape = |token: &'static str| {
            let url = format!("{}/metrics", server.url);
            async move {
                let response = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let kind = response
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, kind, response.text().await.unwrap())
            }
        };
        // The value of the sample `series` (name and labels as printed), 0 when absent.
        let value = metric;
        let (status, _, before) = scrape(METRICS_TOKEN).await;
        assert_eq!(status, 200, "{backend}: {before}");
        let (status, kind, _) = scrape(crate::server::TOKEN).await;
        assert_eq!(status, 200, "the admin token reads them too");
        assert!(kind.unwrap().starts_with("application/openmetrics-text"));
        let (status, _, body) = scrape("not-a-token-at-all").await;
        assert_eq!(status, 401, "{body}");
        let answer = reqwest::Client::new()
            .get(format!("{}/api/v1/app", server.url))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "the metrics token opens nothing else");

        // A delivery that succeeds, a refused inbound request, an open job.
        let (receiver, receiver_url) = Receiver::start().await;
        let (_, app) = server
            .api(Method::POST, "/api/v1/app", Some(json!({"name": "m"})))
            .await;
        let app_id = app["id"].as_str().unwrap().to_owned();
        let (status, _) = server
            .api(
                Method::POST,
                &format!("/api/v1/app/{app_id}/endpoint"),
                Some(json!({"url": format!("{receiver_url}/m")})),
            )
            .await;
        assert_eq!(status, 201);
        let (status, _) = server
            .api(
                Method::POST,
                &format!("/api/v1/app/{app_id}/msg"),
                Some(json!({"eventType": "m.test", "payload": {"n": 1}})),
            )
            .await;
        assert_eq!(status, 202);
        receiver
            .wait_until(Duration::from_secs(10), |d| !d.is_empty())
            .await;
        let (_, source) = server
            .api(
                Method::POST,
                "/ingest/api/v1/source",
                Some(json!({"name": "gh", "type": "github", "config": {"secret": "s3cret"}})),
            )
            .await;
        let ingest = source["ingestUrl"].as_str().unwrap();
        let refused = reqwest::Client::new()
            .post(ingest)
            .header("x-hub-signature-256", "sha256=00")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let (status, _) = server
            .api(
                Method::POST,
                "/api/v1/job",
                Some(json!({"provider": "custom", "appId": app_id})),
            )
            .await;
        assert_eq!(status, 201);

        // The attempt is recorded just after the receiver answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        let success = r#"hookline_attempts_total{outcome="success",status_class="2xx"}"#;
        let mut after = String::new();
        while Instant::now() < deadline {
            after = scrape(METRICS_TOKEN).await.2;
            if value(&after, success) > value(&before, success) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for series in [
            success,
            "hookline_delivered_after_seconds_count",
            r#"hookline_inbound_requests_total{source_type="github",verdict="rejected"}"#,
        ] {
            assert!(
                value(&after, series) >= value(&before, series) + 1.0,
                "{backend}: {series} did not grow:\n{after}"
            );
        }
        // The delivery was started either by a claim or handed over as it was created
        // (once this node's worker is running, the latter).
        let started = |text: &str| {
            value(text, r#"hookline_claimed_deliveries_total{fate="started"}"#)
                + value(text, r#"hookline_handed_deliveries_total{fate="started"}"#)
        };
        assert!(
            started(&after) >= started(&before) + 1.0,
            "{backend}: no delivery started:\n{after}"
        );
        assert!(after.contains("hookline_claims_total"), "{after}");
        assert!(value(&after, "hookline_open_jobs") >= 1.0, "{after}");
        assert!(value(&after, "hookline_process_resident_memory_bytes") > 1e6);
        assert!(
            after.contains(r#"hookline_deliveries{state="due"}"#),
            "{after}"
        );
        if backend == "postgres" {
            assert!(
                value(&after, r#"hookline_db_pool_connections{state="max"}"#) >= 1.0,
                "{after}"
            );
        }
        assert!(after.ends_with("# EOF\n"));
    }
}

/// `GET /api/v1/openapi.json` answers without a token: an OpenAPI 3.1 document of the
/// sending, Ingest and job APIs whose operations are the routes the server answers.
#[tokio::test]
async fn the_api_document_describes_the_routes_served() {
    let dir = TempDir::new("openapi");
    let server = Server::start(&dir.0, &[]).await;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: serde_json::Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/app/{app_id}/msg", "post"),
        ("/api/v1/app/{app_id}/endpoint/{endpoint_id}", "patch"),
        ("/ingest/api/v1/source/{source_id}/endpoint", "get"),
        ("/ingest/api/v1/source/{source_id}/replay", "post"),
        ("/api/v1/job/{job_id}/cancel", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    // Every documented GET without path parameters is a route: none answers 404 or 405.
    let client = reqwest::Client::new();
    for (path, item) in paths {
        if item.get("get").is_none() || path.contains('{') {
            continue;
        }
        let status = client
            .get(format!("{}{path}", server.url))
            .bearer_auth(crate::server::TOKEN)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "GET {path}: {status}");
    }
}

/// `hookline serve` started under the usual low soft limit of open files (here 256) lifts
/// it to the hard limit: each delivery in flight holds a connection, and the default
/// concurrency alone is above 256.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_lifts_its_soft_limit_of_open_files_to_the_hard_one() {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .expect("ulimit -Hn");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_owned();
    if hard.parse::<u64>().is_ok_and(|hard| hard <= 256) {
        eprintln!("skipped: this machine's hard limit of open files is {hard}");
        return;
    }
    let dir = TempDir::new("open-files");
    let port = free_port();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" serve"])
        .arg(env!("CARGO_BIN_EXE_hookline"))
        .current_dir(&dir.0)
        .env("HOOKLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_DATABASE_URL", "sqlite://open-files.db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/api/v1/health");
    let mut healthy = false;
    for _ in 0..400 {
        if client.get(&health).send().await.is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(healthy, "the server did not start");
    let limits = limits.expect("the server's limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("an open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "{line}");
}

/// A fan-out wider than the worker goes to it whole: the deliveries that find no worker
/// free wait in the node's line, leased, and start as workers come free, each once and
/// none by a claim (a claim writes every row it takes again).
#[tokio::test]
async fn a_fan_out_wider_than_the_worker_waits_in_its_line_not_for_claims() {
    let dir = TempDir::new("line");
    let (receiver, receiver_url) = Receiver::start().await;
    let config = dir.0.join("hookline.toml");
    std::fs::write(&config, "[delivery]\nconcurrency = 16\n").unwrap();
    let server =
        Server::start_with_args(&dir.0, &["--config", config.to_str().unwrap()], &[]).await;
    let create = |app_id: String, n: u32| {
        let server = &server;
        async move {
            let path = format!("/api/v1/app/{app_id}/msg");
            let body = json!({"eventType": "line.test", "payload": {"n": n}});
            let (status, message) = server.api(Method::POST, &path, Some(body)).await;
            assert_eq!(status, 202, "{message}");
            message["id"].as_str().unwrap().to_owned()
        }
    };
    // Once a message has been delivered, the worker is running and takes deliveries over.
    let warm = server
        .app_with_endpoint("warm", &format!("{receiver_url}/warm"))
        .await;
    let id = create(warm, 0).await;
    receiver
        .wait_until(Duration::from_secs(10), |d| {
            d.iter().any(|d| d.headers.get("webhook-id") == Some(&id))
        })
        .await;

    let (_, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "wide"})))
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    const ENDPOINTS: usize = 30;
    for n in 0..ENDPOINTS {
        server
            .add_endpoint(&app_id, &format!("{receiver_url}/line/{n}"))
            .await;
    }
    // Slow answers keep the 16 workers busy while the rest wait.
    *receiver.delay.lock().unwrap() = Duration::from_millis(30);
    let counts = |metrics: &str| {
        [
            r#"hookline_handed_deliveries_total{fate="started"}"#,
            r#"hookline_claimed_deliveries_total{fate="started"}"#,
        ]
        .map(|series| metric(metrics, series))
    };
    let before = counts(&server.metrics().await);
    let (a, b, c) = tokio::join!(
        create(app_id.clone(), 1),
        create(app_id.clone(), 2),
        create(app_id.clone(), 3)
    );
    let ids = [a, b, c];
    let ours = |d: &crate::server::Delivery| {
        d.path.starts_with("/line/")
            && d.headers
                .get("webhook-id")
                .is_some_and(|id| ids.contains(id))
    };
    let deliveries = receiver
        .wait_until(Duration::from_secs(30), |d| {
            d.iter().filter(|d| ours(d)).count() >= 3 * ENDPOINTS
        })
        .await;
    let mut made: Vec<(String, String)> = deliveries
        .iter()
        .filter(|d| ours(d))
        .map(|d| (d.headers["webhook-id"].clone(), d.path.clone()))
        .collect();
    made.sort();
    let total = made.len();
    made.dedup();
    assert_eq!(made.len(), 3 * ENDPOINTS, "every delivery made");
    assert_eq!(total, made.len(), "none twice");
    let metrics = server.metrics().await;
    let [handed, claimed] = counts(&metrics);
    assert_eq!(
        [handed - before[0], claimed - before[1]],
        [(3 * ENDPOINTS) as f64, 0.0],
        "handed over, not claimed: {metrics}"
    );
}

/// A message's deliveries go to the worker of the node that created it, leased in the
/// create's own transaction, without a claim; a node killed with such a delivery in
/// flight makes it again once restarted under its name (not a lease later).
#[tokio::test]
async fn a_node_delivers_what_it_creates_without_a_claim_and_after_a_kill() {
    let dir = TempDir::new("handoff");
    let (receiver, receiver_url) = Receiver::start().await;
    let env = [("HOOKLINE_NODE_ID", "handoff-node")];
    let mut server = Server::start_process(&dir.0, &env).await;
    let app_id = server
        .app_with_endpoint("handoff", &format!("{receiver_url}/handoff"))
        .await;
    async fn create(server: &Server, app_id: &str, n: u32) -> String {
        let path = format!("/api/v1/app/{app_id}/msg");
        let body = json!({"eventType": "handoff.test", "payload": {"n": n}});
        let (status, message) = server.api(Method::POST, &path, Some(body)).await;
        assert_eq!(status, 202, "{message}");
        message["id"].as_str().unwrap().to_owned()
    }
    let delivered = |id: String| {
        move |deliveries: &[crate::server::Delivery]| {
            deliveries
                .iter()
                .any(|d| d.headers.get("webhook-id") == Some(&id))
        }
    };

    // Once one message has been delivered the worker is running (it takes deliveries
    // over before its first claim); from then on what this node creates is handed over.
    let counts = |metrics: &str| {
        [
            r#"hookline_handed_deliveries_total{fate="started"}"#,
            r#"hookline_claimed_deliveries_total{fate="started"}"#,
        ]
        .map(|series| metric(metrics, series))
    };
    for n in 0..2 {
        let before = counts(&server.metrics().await);
        let id = create(&server, &app_id, n).await;
        let deliveries = receiver
            .wait_until(Duration::from_secs(10), delivered(id.clone()))
            .await;
        assert!(delivered(id)(&deliveries), "message {n} was delivered");
        let metrics = server.metrics().await;
        let [handed, claimed] = counts(&metrics);
        if n == 1 {
            assert_eq!(
                [handed - before[0], claimed - before[1]],
                [1.0, 0.0],
                "handed over, not claimed: {metrics}"
            );
        }
    }

    // The second delivery hangs at the receiver when the node is killed; restarted
    // under its name, the node ends its old leases and makes it again at once, where
    // the lease alone would hold it for the attempt timeout and its margin (45 s).
    *receiver.delay.lock().unwrap() = Duration::from_secs(3600);
    let second = create(&server, &app_id, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    *receiver.delay.lock().unwrap() = Duration::ZERO;
    let restarted_at = Instant::now();
    let _restarted = Server::start_process(&dir.0, &env).await;
    let deliveries = receiver
        .wait_until(Duration::from_secs(10), delivered(second.clone()))
        .await;
    assert!(
        delivered(second)(&deliveries),
        "the delivery in flight at the kill is made again after the restart"
    );
    assert!(restarted_at.elapsed() < Duration::from_secs(15));
}
