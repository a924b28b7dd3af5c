//! The job tracker end to end: jobs registered through the API, provider webhooks signed
//! as the providers sign them arriving at real sources, polls answered by the provider
//! emulator, and the job events delivered to a real receiving endpoint, where each job
//! must show exactly one outcome. Storage scenarios run on SQLite and, when
//! HOOKLINE_TEST_POSTGRES_URL is set, on PostgreSQL.

use std::time::{Duration, Instant};

use hookline_signature::{Keyset, Message, Scheme};
use reqwest::Method;
use serde_json::{Value, json};

use crate::emulator::{Emulator, Scripted};
use crate::server::{Receiver, Server, TempDir, nodes, postgres_schema};

const OPENAI_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const REPLICATE_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

const TERMINAL: [&str; 4] = [
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.expired",
];

/// `env` as the pairs the node starters take.
fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// An application whose endpoint is a fresh receiver.
pub(crate) async fn app_with_receiver(server: &Server) -> (String, Receiver) {
    let (receiver, url) = Receiver::start().await;
    let (status, app) = server
        .api(Method::POST, "/api/v1/app", Some(json!({"name": "jobs"})))
        .await;
    assert_eq!(status, 201, "{app}");
    let app = app["id"].as_str().unwrap().to_owned();
    let (status, endpoint) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app}/endpoint"),
            Some(json!({"url": format!("{url}/events")})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    (app, receiver)
}

async fn source(server: &Server, source_type: &str, secret: &str) -> String {
    let (status, source) = server
        .api(
            Method::POST,
            "/ingest/api/v1/source",
            Some(json!({"name": source_type, "type": source_type, "config": {"secret": secret}})),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    source["ingestUrl"].as_str().unwrap().to_owned()
}

/// Posts `body` to `url` signed with `secret` under `scheme`, as webhook `id`.
async fn post_webhook(url: &str, scheme: Scheme, secret: &str, id: &str, body: &Value) -> u16 {
    let body = body.to_string();
    let headers = Keyset::new(scheme, [secret])
        .unwrap()
        .sign(&Message {
            id,
            timestamp: chrono::Utc::now().timestamp(),
            body: body.as_bytes(),
        })
        .unwrap();
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

pub(crate) async fn create_job(server: &Server, body: Value) -> Value {
    let (status, job) = server.api(Method::POST, "/api/v1/job", Some(body)).await;
    assert_eq!(status, 201, "{job}");
    job
}

pub(crate) async fn get_job(server: &Server, id: &str) -> Value {
    let (status, job) = server
        .api(Method::GET, &format!("/api/v1/job/{id}"), None)
        .await;
    assert_eq!(status, 200, "{job}");
    job
}

/// The events of `job` the receiver got, in arrival order, with their payloads.
fn events(receiver: &Receiver, job: &str) -> Vec<(String, Value)> {
    receiver
        .deliveries()
        .into_iter()
        .filter_map(|d| serde_json::from_slice::<Value>(&d.body).ok())
        .filter(|event| event["data"]["id"] == job)
        .map(|event| (event["type"].as_str().unwrap_or_default().to_owned(), event))
        .collect()
}

/// Waits for `job`'s outcome event, then long enough for a second one to show, and
/// returns its one outcome (failing on none or two).
pub(crate) async fn one_outcome(
    receiver: &Receiver,
    job: &str,
    within: Duration,
) -> (String, Value) {
    let ended = |events: &[(String, Value)]| {
        events
            .iter()
            .filter(|(kind, _)| TERMINAL.contains(&kind.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + within;
    while ended(&events(receiver, job)).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second outcome, were there one, would be delivered by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = events(receiver, job);
    let outcomes = ended(&events);
    let kinds: Vec<&String> = events.iter().map(|(kind, _)| kind).collect();
    assert_eq!(outcomes.len(), 1, "exactly one outcome of {job}: {kinds:?}");
    assert_eq!(
        events
            .iter()
            .filter(|(kind, _)| kind == "job.created")
            .count(),
        1,
        "{kinds:?}"
    );
    outcomes.into_iter().next().unwrap()
}

fn replicate_env(emulator: &Emulator) -> Vec<(String, String)> {
    emulator.env(
        "REPLICATE",
        "/v1",
        "HOOKLINE_REPLICATE_API_TOKEN",
        "r8-test-token",
    )
}

fn openai_env(emulator: &Emulator) -> Vec<(String, String)> {
    emulator.env("OPENAI", "/v1", "HOOKLINE_OPENAI_API_KEY", "sk-test-openai")
}

/// With no credential, a job registered with `poll: null` is tracked by webhook alone: the
/// thin OpenAI event decides, and its app hears of it once.
#[tokio::test]
async fn a_job_ends_by_webhook_alone() {
    let dir = TempDir::new("job-webhook-only");
    for (backend, server) in nodes(&dir, "job_webhook_only", &[]).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "open-ai", OPENAI_SECRET).await;
        // Polling needs a credential: refused with a clear error.
        let (status, error) = server
            .api(
                Method::POST,
                "/api/v1/job",
                Some(
                    json!({"provider": "openai_response", "providerJobId": "resp_1", "appId": app}),
                ),
            )
            .await;
        assert_eq!(status, 400, "{backend}: {error}");
        assert_eq!(error["code"], "provider_not_configured", "{error}");

        let job = create_job(
            &server,
            json!({"provider": "openai_response", "providerJobId": "resp_1", "appId": app,
                   "uid": "essay", "metadata": {"user": "u1"}, "poll": null}),
        )
        .await;
        let id = job["id"].as_str().unwrap();
        assert!(id.starts_with("job_"), "{job}");
        assert_eq!(job["status"], "queued");
        assert_eq!(job["poll"], Value::Null);

        let event = json!({"object": "event", "id": "evt_1", "type": "response.completed",
                           "created_at": 1750287018, "data": {"id": "resp_1"}});
        assert_eq!(
            post_webhook(&ingest, Scheme::OpenAi, OPENAI_SECRET, "wh_1", &event).await,
            200
        );
        let (kind, outcome) = one_outcome(&receiver, id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.succeeded", "{backend}");
        assert_eq!(outcome["data"]["metadata"], json!({"user": "u1"}));
        let job = get_job(&server, "essay").await;
        assert_eq!(job["status"], "succeeded");
        assert_eq!(job["timeline"][0]["source"], "webhook");
        assert_eq!(job["timeline"][0]["providerStatus"], "response.completed");
    }
}

/// The webhook never comes: polling finds the outcome, and `result` holds the provider's
/// final object.
#[tokio::test]
async fn a_lost_webhook_is_made_up_for_by_polling() {
    let dir = TempDir::new("job-polled");
    let emulator = Emulator::openai().await;
    for (backend, server) in nodes(&dir, "job_polled", &pairs(&openai_env(&emulator))).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let batch = format!("batch_{backend}");
        let path = format!("/v1/batches/{batch}");
        emulator.set(
            &path,
            json!({"id": batch, "object": "batch", "status": "in_progress",
                                   "request_counts": {"total": 10, "completed": 3, "failed": 0}}),
        );
        let job = create_job(
            &server,
            json!({"provider": "openai_batch", "providerJobId": batch, "appId": app,
                   "poll": {"after": 0, "interval": 1, "maxInterval": 2}}),
        )
        .await;
        let id = job["id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while events(&receiver, id)
            .iter()
            .all(|(kind, _)| kind != "job.running")
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        emulator.set(
            &path,
            json!({"id": batch, "object": "batch", "status": "completed",
                                   "output_file_id": "file-out",
                                   "request_counts": {"total": 10, "completed": 10, "failed": 0}}),
        );
        let (kind, outcome) = one_outcome(&receiver, id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.succeeded", "{backend}");
        assert_eq!(outcome["data"]["result"]["output_file_id"], "file-out");
        assert_eq!(outcome["data"]["progress"]["completed"], 10);
        let kinds: Vec<String> = events(&receiver, id).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds.iter().filter(|k| *k == "job.running").count(),
            1,
            "{kinds:?}"
        );
        let job = get_job(&server, id).await;
        assert!(
            job["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["source"] == "poll")
        );
        assert_eq!(job["providerStatus"], "completed");
    }
}

/// Replicate's webhook pushes the full prediction; sent twice (a retry with the same
/// webhook-id, and a second delivery with another), the job still ends once.
#[tokio::test]
async fn a_duplicated_webhook_ends_the_job_once() {
    let dir = TempDir::new("job-duplicated");
    for (backend, server) in nodes(&dir, "job_duplicated", &[]).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "replicate", REPLICATE_SECRET).await;
        let job = create_job(
            &server,
            json!({"provider": "replicate_prediction", "providerJobId": "p1", "appId": app,
                   "poll": null}),
        )
        .await;
        let id = job["id"].as_str().unwrap();
        let prediction = json!({"id": "p1", "status": "succeeded", "output": ["https://x/1.png"],
                                "logs": "done", "error": null});
        for webhook_id in ["msg_a", "msg_a", "msg_b"] {
            let status = post_webhook(
                &ingest,
                Scheme::Replicate,
                REPLICATE_SECRET,
                webhook_id,
                &prediction,
            )
            .await;
            assert_eq!(status, 200, "{backend}");
        }
        let (kind, outcome) = one_outcome(&receiver, id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.succeeded", "{backend}");
        assert_eq!(outcome["data"]["result"]["output"][0], "https://x/1.png");
        let job = get_job(&server, id).await;
        assert_eq!(
            job["timeline"].as_array().unwrap().len(),
            3,
            "every delivery is on the timeline: {job}"
        );
    }
}

/// The webhook comes before the job is registered: it is kept and applied at registration.
#[tokio::test]
async fn a_webhook_before_its_job_is_applied_at_registration() {
    let dir = TempDir::new("job-early");
    for (backend, server) in nodes(&dir, "job_early", &[]).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "replicate", REPLICATE_SECRET).await;
        let prediction = json!({"id": "early", "status": "failed", "error": "out of memory"});
        assert_eq!(
            post_webhook(
                &ingest,
                Scheme::Replicate,
                REPLICATE_SECRET,
                "msg_e",
                &prediction
            )
            .await,
            200
        );
        let job = create_job(
            &server,
            json!({"provider": "replicate_prediction", "providerJobId": "early", "appId": app,
                   "poll": null}),
        )
        .await;
        assert_eq!(job["status"], "failed", "{backend}: {job}");
        assert_eq!(job["error"], "out of memory");
        let (kind, _) = one_outcome(
            &receiver,
            job["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(kind, "job.failed");
    }
}

/// Polling saw the outcome first; the thin webhook that follows goes on the timeline and
/// emits nothing. And a thin webhook with a credential configured is completed by one
/// status call before the outcome, so `result` is the provider's object, not the event.
#[tokio::test]
async fn thin_webhooks_are_completed_by_a_status_call_and_late_ones_emit_nothing() {
    let dir = TempDir::new("job-thin");
    let emulator = Emulator::openai().await;
    for (backend, server) in nodes(&dir, "job_thin", &pairs(&openai_env(&emulator))).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "open-ai", OPENAI_SECRET).await;

        // A thin webhook, polling far off: one GET completes it.
        let response = format!("resp_thin_{backend}");
        let path = format!("/v1/responses/{response}");
        emulator.set(&path, json!({"id": response, "object": "response", "status": "completed",
                                   "output": [{"type": "message", "content": [{"type": "output_text", "text": "hello"}]}]}));
        let job = create_job(
            &server,
            json!({"provider": "openai_response", "providerJobId": response, "appId": app,
                   "poll": {"after": 3600}}),
        )
        .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let event = json!({"object": "event", "id": "evt_t", "type": "response.completed",
                           "created_at": 1, "data": {"id": response}});
        assert_eq!(
            post_webhook(
                &ingest,
                Scheme::OpenAi,
                OPENAI_SECRET,
                &format!("wh_{backend}"),
                &event
            )
            .await,
            200
        );
        let (kind, outcome) = one_outcome(&receiver, &id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.succeeded", "{backend}");
        assert_eq!(
            outcome["data"]["result"]["output"][0]["content"][0]["text"],
            "hello"
        );
        assert_eq!(emulator.calls_to(&path).len(), 1, "one status call");

        // Polling first, then the webhook.
        let batch = format!("batch_late_{backend}");
        let path = format!("/v1/batches/{batch}");
        emulator.set(
            &path,
            json!({"id": batch, "status": "failed", "errors": {"data": [{"code": "bad_file"}]}}),
        );
        let job = create_job(
            &server,
            json!({"provider": "openai_batch", "providerJobId": batch, "appId": app,
                   "poll": {"after": 0, "interval": 1}}),
        )
        .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let (kind, _) = one_outcome(&receiver, &id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.failed");
        let event = json!({"object": "event", "id": "evt_l", "type": "batch.completed",
                           "created_at": 1, "data": {"id": batch}});
        assert_eq!(
            post_webhook(
                &ingest,
                Scheme::OpenAi,
                OPENAI_SECRET,
                &format!("wl_{backend}"),
                &event
            )
            .await,
            200
        );
        let (kind, _) = one_outcome(&receiver, &id, Duration::from_secs(1)).await;
        assert_eq!(kind, "job.failed", "the late webhook changed nothing");
        let job = get_job(&server, &id).await;
        let timeline = job["timeline"].as_array().unwrap();
        assert_eq!(timeline.last().unwrap()["source"], "webhook", "{job}");
        assert_eq!(timeline.last().unwrap()["status"], "failed");
    }
}

/// 429 (with Retry-After) then 500 to the polls: the tracker waits as asked, backs off,
/// loses nothing, and keeps to the provider's budget of calls a second.
#[tokio::test]
async fn rate_limits_and_errors_back_off_and_the_budget_holds() {
    let dir = TempDir::new("job-backoff");
    let emulator = Emulator::anthropic().await;
    let mut env = emulator.env("ANTHROPIC", "", "HOOKLINE_ANTHROPIC_API_KEY", "sk-ant-test");
    env.retain(|(k, _)| k != "HOOKLINE_ANTHROPIC_REQUESTS_PER_SECOND");
    env.push(("HOOKLINE_ANTHROPIC_REQUESTS_PER_SECOND".into(), "4".into()));
    let server = Server::start(
        &dir.0,
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await;
    let (app, receiver) = app_with_receiver(&server).await;
    let path = "/v1/messages/batches/msgbatch_1";
    emulator.script(path, [Scripted::TooMany(Some(2)), Scripted::Broken]);
    emulator.set(path, json!({"id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
                              "request_counts": {"processing": 0, "succeeded": 5, "errored": 0, "canceled": 0, "expired": 0},
                              "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"}));
    // Many other jobs share the budget.
    for n in 0..12 {
        let other = format!("/v1/messages/batches/msgbatch_other{n}");
        emulator.set(
            &other,
            json!({"id": other, "processing_status": "in_progress"}),
        );
        create_job(
            &server,
            json!({"provider": "anthropic_message_batch",
            "providerJobId": format!("msgbatch_other{n}"), "appId": app,
            "poll": {"after": 0, "interval": 1, "maxInterval": 1}}),
        )
        .await;
    }
    let job = create_job(
        &server,
        json!({"provider": "anthropic_message_batch", "providerJobId": "msgbatch_1", "appId": app,
               "poll": {"after": 0, "interval": 1, "maxInterval": 4}}),
    )
    .await;
    let id = job["id"].as_str().unwrap();
    let (kind, outcome) = one_outcome(&receiver, id, Duration::from_secs(20)).await;
    assert_eq!(kind, "job.succeeded");
    assert_eq!(
        outcome["data"]["result"]["results_url"],
        "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"
    );
    let calls = emulator.calls_to(path);
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [429, 500, 200]
    );
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_millis(1950),
        "Retry-After: 2 was honoured: {waited:?}"
    );
    // The budget: no second of the run saw more than 4 calls (a little slack for timer
    // granularity), counted over every job.
    let all: Vec<Instant> = emulator.calls().into_iter().map(|c| c.at).collect();
    assert!(
        all.len() >= 10,
        "the other jobs were polled too: {}",
        all.len()
    );
    for (n, start) in all.iter().enumerate() {
        let within = all[n..]
            .iter()
            .take_while(|at| **at - *start < Duration::from_millis(950))
            .count();
        assert!(
            within <= 4,
            "{within} calls within a second: the budget is 4"
        );
    }
}

/// A job nobody reports on ends `expired` at its deadline, once.
#[tokio::test]
async fn a_job_past_its_deadline_expires() {
    let dir = TempDir::new("job-deadline");
    for (backend, server) in nodes(&dir, "job_deadline", &[]).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let deadline = chrono::Utc::now() + chrono::Duration::seconds(2);
        let job = create_job(
            &server,
            json!({"provider": "custom", "appId": app, "deadline": deadline.to_rfc3339()}),
        )
        .await;
        let id = job["id"].as_str().unwrap();
        let (kind, outcome) = one_outcome(&receiver, id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.expired", "{backend}");
        assert_eq!(outcome["data"]["status"], "expired");
        // Reports after the end change nothing.
        let (status, job) = server
            .api(
                Method::POST,
                &format!("/api/v1/job/{id}/status"),
                Some(json!({"status": "succeeded"})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(job["status"], "expired");
    }
}

/// Cancel asks the provider first, then the job ends `cancelled`; a second cancel is a
/// conflict.
#[tokio::test]
async fn a_cancelled_job_is_cancelled_at_its_provider() {
    let dir = TempDir::new("job-cancel");
    let emulator = Emulator::openai().await;
    for (backend, server) in nodes(&dir, "job_cancel", &pairs(&openai_env(&emulator))).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let batch = format!("batch_cancel_{backend}");
        emulator.set(
            &format!("/v1/batches/{batch}/cancel"),
            json!({"id": batch, "status": "cancelling"}),
        );
        let job = create_job(
            &server,
            json!({"provider": "openai_batch", "providerJobId": batch, "appId": app,
                   "poll": {"after": 3600}}),
        )
        .await;
        let id = job["id"].as_str().unwrap();
        let (status, cancelled) = server
            .api(Method::POST, &format!("/api/v1/job/{id}/cancel"), None)
            .await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(cancelled["providerStatus"], "cancelling");
        let posts = emulator.calls_to(&format!("/v1/batches/{batch}/cancel"));
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].method, "POST");
        let (kind, _) = one_outcome(&receiver, id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.cancelled", "{backend}");
        let (status, again) = server
            .api(Method::POST, &format!("/api/v1/job/{id}/cancel"), None)
            .await;
        assert_eq!(status, 409, "{again}");
    }
}

/// A group of 100 custom jobs reported by "workers" emits one `job_group.completed` when
/// its last job ends, with the counts per status.
#[tokio::test]
async fn a_group_of_custom_jobs_completes_once() {
    let dir = TempDir::new("job-group");
    for (backend, server) in nodes(&dir, "job_group", &[]).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let mut ids = Vec::new();
        for _ in 0..100 {
            let job = create_job(
                &server,
                json!({"provider": "custom", "appId": app, "group": "nightly"}),
            )
            .await;
            ids.push(job["id"].as_str().unwrap().to_owned());
        }
        let server = std::sync::Arc::new(server);
        let mut workers = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let (server, id) = (server.clone(), id.clone());
            let status = if n % 10 == 0 { "failed" } else { "succeeded" };
            workers.push(tokio::spawn(async move {
                let path = format!("/api/v1/job/{id}/status");
                let (code, _) = server
                    .api(
                        Method::POST,
                        &path,
                        Some(json!({"status": "running", "progress": {"done": 1}})),
                    )
                    .await;
                assert_eq!(code, 200);
                let (code, job) = server
                    .api(
                        Method::POST,
                        &path,
                        Some(json!({"status": status, "result": {"n": n}})),
                    )
                    .await;
                assert_eq!(code, 200, "{job}");
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        let group_events = || {
            receiver
                .deliveries()
                .into_iter()
                .filter_map(|d| serde_json::from_slice::<Value>(&d.body).ok())
                .filter(|e| e["type"] == "job_group.completed")
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while group_events().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let completed = group_events();
        assert_eq!(completed.len(), 1, "{backend}");
        assert_eq!(completed[0]["data"]["group"], "nightly");
        assert_eq!(
            completed[0]["data"]["counts"],
            json!({"failed": 10, "succeeded": 90})
        );
        let (_, listed) = server
            .api(
                Method::GET,
                &format!("/api/v1/job?appId={app}&group=nightly&status=failed&limit=250"),
                None,
            )
            .await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 10);
    }
}

/// `?wait=` answers within 100 ms of the change it waits for.
#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_status_changes() {
    let dir = TempDir::new("job-wait");
    for (backend, server) in nodes(&dir, "job_wait", &[]).await {
        let (app, _receiver) = app_with_receiver(&server).await;
        let job = create_job(&server, json!({"provider": "custom", "appId": app})).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let url = format!("{}/api/v1/job/{id}?wait=10&status=queued", server.url);
        let waiting = tokio::spawn(async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(crate::server::TOKEN)
                .send()
                .await
                .unwrap();
            let answered = Instant::now();
            (answered, response.json::<Value>().await.unwrap())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "{backend}: the wait ended before the change"
        );
        let (status, _) = server
            .api(
                Method::POST,
                &format!("/api/v1/job/{id}/status"),
                Some(json!({"status": "running"})),
            )
            .await;
        let changed = Instant::now();
        assert_eq!(status, 200);
        let (answered, job) = waiting.await.unwrap();
        assert_eq!(job["status"], "running");
        let lag = answered.saturating_duration_since(changed);
        assert!(
            lag < Duration::from_millis(100),
            "{backend}: answered {lag:?} after the change"
        );

        let (status, error) = server
            .api(Method::GET, &format!("/api/v1/job/{id}?wait=61"), None)
            .await;
        assert_eq!(status, 422, "{error}");
    }
}

/// Bad input gets precise errors and stores nothing.
#[tokio::test]
async fn malformed_jobs_are_refused_precisely() {
    let dir = TempDir::new("job-refused");
    for (backend, server) in nodes(&dir, "job_refused", &[]).await {
        let (app, _receiver) = app_with_receiver(&server).await;
        let cases = [
            (json!({"provider": "nope", "appId": app}), "provider"),
            (
                json!({"provider": "openai_batch", "appId": app, "poll": null}),
                "providerJobId",
            ),
            (
                json!({"provider": "openai_batch", "providerJobId": "../x", "appId": app, "poll": null}),
                "providerJobId",
            ),
            (
                json!({"provider": "openai_eval_run", "providerJobId": "evalrun_1", "appId": app, "poll": null}),
                "providerJobId",
            ),
            (
                json!({"provider": "custom", "providerJobId": "x", "appId": app}),
                "providerJobId",
            ),
            (
                json!({"provider": "custom", "appId": app, "uid": "job_x"}),
                "uid",
            ),
            (
                json!({"provider": "custom", "appId": app, "poll": {"interval": 0}}),
                "poll",
            ),
            (
                json!({"provider": "custom", "appId": app, "deadline": "2001-01-01T00:00:00Z"}),
                "deadline",
            ),
            (
                json!({"provider": "custom", "appId": app, "bogus": 1}),
                "bogus",
            ),
        ];
        for (body, field) in cases {
            let (status, error) = server
                .api(Method::POST, "/api/v1/job", Some(body.clone()))
                .await;
            assert_eq!(status, 422, "{backend} {body}: {error}");
            let locs = error["detail"].to_string();
            assert!(locs.contains(field), "{backend} {body}: {error}");
        }
        let (status, _) = server
            .api(
                Method::POST,
                "/api/v1/job",
                Some(json!({"provider": "custom", "appId": "app_missing"})),
            )
            .await;
        assert_eq!(status, 404);
        // NUL is refused in any string, as everywhere in the API, on both backends.
        let (status, error) = server
            .api(
                Method::POST,
                "/api/v1/job",
                Some(json!({"provider": "custom", "appId": app, "metadata": {"a": "x\u{0}y"}})),
            )
            .await;
        assert_eq!(status, 422, "{backend}: {error}");
        assert!(error.to_string().contains("NUL"), "{error}");
        let (_, listed) = server.api(Method::GET, "/api/v1/job", None).await;
        assert_eq!(
            listed["data"].as_array().unwrap().len(),
            0,
            "{backend}: refused jobs left nothing"
        );
    }
}

/// A node killed (SIGKILL) while a poll is in flight: after its restart the poll is made
/// again at once (the node gives back its own leases), nothing is lost and the job still
/// ends once.
#[tokio::test]
async fn a_poll_cut_off_by_sigkill_is_made_again_after_restart() {
    let dir = TempDir::new("job-sigkill");
    let emulator = Emulator::openai().await;
    let path = "/v1/batches/batch_kill";
    emulator.set(path, json!({"id": "batch_kill", "status": "in_progress"}));
    emulator.set_delay(Duration::from_secs(5));
    let mut env = openai_env(&emulator);
    env.push(("HOOKLINE_NODE_ID".into(), "node-k".into()));
    let env = pairs(&env);
    let mut server = Server::start_process(&dir.0, &env).await;
    let (app, receiver) = app_with_receiver(&server).await;
    let job = create_job(
        &server,
        json!({"provider": "openai_batch", "providerJobId": "batch_kill", "appId": app,
               "poll": {"after": 0, "interval": 1, "maxInterval": 1}}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    receiver
        .wait_until(Duration::from_secs(10), |d| !d.is_empty())
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while emulator.in_flight() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(emulator.in_flight(), 1, "a poll is in flight");
    server.kill();
    emulator.set(
        path,
        json!({"id": "batch_kill", "status": "completed", "output_file_id": "f"}),
    );
    emulator.set_delay(Duration::ZERO);
    let restarted = Instant::now();
    let server = Server::start_process(&dir.0, &env).await;
    let (kind, outcome) = one_outcome(&receiver, &id, Duration::from_secs(20)).await;
    assert_eq!(kind, "job.succeeded");
    assert_eq!(outcome["data"]["result"]["output_file_id"], "f");
    let last = emulator.calls_to(path).last().unwrap().at;
    assert!(
        last.duration_since(restarted) < Duration::from_secs(10),
        "polled again soon after the restart, not after the 2 min lease"
    );
    drop(server);
}

/// Two nodes on one PostgreSQL database poll the same 1,000 jobs: no job is ever polled by
/// both at once, every job is polled, and each ends once.
#[tokio::test]
async fn two_nodes_share_the_polls_of_a_thousand_jobs() {
    const JOBS: usize = 1000;
    let Some(url) = postgres_schema("job_two_nodes") else {
        return;
    };
    let dir = TempDir::new("job-two-nodes");
    let emulator = Emulator::openai().await;
    emulator.set_delay(Duration::from_millis(100));
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b"] {
        let mut env = openai_env(&emulator);
        env.push(("HOOKLINE_DATABASE_URL".into(), url.clone()));
        env.push(("HOOKLINE_DATABASE_POOL_SIZE".into(), "4".into()));
        env.push(("HOOKLINE_NODE_ID".into(), node.into()));
        nodes.push(std::sync::Arc::new(
            Server::start(&dir.0, &pairs(&env)).await,
        ));
    }
    let (app, receiver) = app_with_receiver(&nodes[0]).await;
    for n in 0..JOBS {
        emulator.set(
            &format!("/v1/batches/batch_{n}"),
            json!({"id": n, "status": "in_progress"}),
        );
    }
    let mut creators = Vec::new();
    for part in 0..8 {
        let (node, app) = (nodes[part % 2].clone(), app.clone());
        creators.push(tokio::spawn(async move {
            for n in (part..JOBS).step_by(8) {
                create_job(
                    &node,
                    json!({"provider": "openai_batch", "providerJobId": format!("batch_{n}"),
                    "appId": app, "poll": {"after": 0, "interval": 1, "maxInterval": 1}}),
                )
                .await;
            }
        }));
    }
    for creator in creators {
        creator.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let polled = |emulator: &Emulator| {
        emulator
            .calls()
            .into_iter()
            .map(|c| c.path)
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    while polled(&emulator) < JOBS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(polled(&emulator), JOBS, "every job was polled");
    for n in 0..JOBS {
        emulator.set(
            &format!("/v1/batches/batch_{n}"),
            json!({"id": n, "status": "completed"}),
        );
    }
    // Outcomes by job id: each of the JOBS jobs has exactly one.
    let ended = |deliveries: &[crate::server::Delivery]| {
        let mut outcomes = std::collections::HashMap::<String, usize>::new();
        for event in deliveries
            .iter()
            .filter_map(|d| serde_json::from_slice::<Value>(&d.body).ok())
            .filter(|e| TERMINAL.contains(&e["type"].as_str().unwrap_or_default()))
        {
            *outcomes
                .entry(event["data"]["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        outcomes
    };
    receiver
        .wait_until(Duration::from_secs(90), |d| ended(d).len() >= JOBS)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = ended(&receiver.deliveries());
    assert_eq!(outcomes.len(), JOBS, "every job ended");
    let twice: Vec<_> = outcomes.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "jobs with more than one outcome: {twice:?}"
    );
    assert_eq!(
        emulator.most_overlapping(),
        1,
        "a job was polled by two nodes at once"
    );
}

/// Runs `hookline job ARGS` against `server`; answers (exit code, stdout, stderr).
fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
        .arg("job")
        .args(args)
        .env("HOOKLINE_SERVER", &server.url)
        .env("HOOKLINE_TOKEN", crate::server::TOKEN)
        .output()
        .expect("run hookline job");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `hookline job create|get|list|cancel`, as a table and as JSON, with exit codes that
/// say what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_commands_drive_the_api() {
    let dir = TempDir::new("job-cli");
    let server = Server::start(&dir.0, &[]).await;
    let (app, receiver) = app_with_receiver(&server).await;
    let (code, out, err) = tokio::task::block_in_place(|| {
        cli(
            &server,
            &[
                "create",
                "--provider",
                "custom",
                "--app",
                &app,
                "--uid",
                "cli-job",
                "--group",
                "g1",
                "--metadata",
                r#"{"who":"cli"}"#,
                "--json",
            ],
        )
    });
    assert_eq!(code, 0, "{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["metadata"]["who"], "cli");
    assert!(
        err.contains("idempotency-key: cli-"),
        "the key is printed: {err}"
    );

    // Run again with the same key, the create registers nothing new.
    let keyed = |server: &Server| {
        cli(
            server,
            &[
                "create",
                "--provider",
                "custom",
                "--app",
                &app,
                "--uid",
                "cli-keyed",
                "--idempotency-key",
                "retry-1",
                "--json",
            ],
        )
    };
    let (code, first, err) = tokio::task::block_in_place(|| keyed(&server));
    assert_eq!(code, 0, "{err}");
    let (code, again, err) = tokio::task::block_in_place(|| keyed(&server));
    assert_eq!(code, 0, "the retry is answered as the first was: {err}");
    assert_eq!(first, again);

    let (code, out, _) =
        tokio::task::block_in_place(|| cli(&server, &["list", "--app", &app, "--group", "g1"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&id) && lines[1].contains("queued") && lines[1].contains("g1"),
        "{out}"
    );

    let (code, out, _) = tokio::task::block_in_place(|| cli(&server, &["cancel", "cli-job"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("status") && l.ends_with("cancelled")),
        "{out}"
    );
    let (kind, _) = one_outcome(&receiver, &id, Duration::from_secs(10)).await;
    assert_eq!(kind, "job.cancelled");

    let (code, out, _) = tokio::task::block_in_place(|| cli(&server, &["get", &id]));
    assert_eq!(code, 0);
    assert!(
        out.contains("SOURCE")
            && out
                .lines()
                .any(|l| l.contains("api") && l.ends_with("cancelled")),
        "{out}"
    );

    let (code, _, err) = tokio::task::block_in_place(|| cli(&server, &["cancel", &id]));
    assert_eq!(code, 1, "refused: {err}");
    assert!(err.contains("409") && err.contains("conflict"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| cli(&server, &["get", "job_missing"]));
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        cli(
            &server,
            &[
                "create",
                "--provider",
                "custom",
                "--app",
                &app,
                "--metadata",
                "[1]",
            ],
        )
    });
    assert_eq!(code, 2, "bad usage: {err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args([
                "job",
                "list",
                "--server",
                "http://127.0.0.1:9",
                "--token",
                "x",
            ])
            .output()
            .map(|o| {
                (
                    o.status.code().unwrap_or(-1),
                    (),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
            .unwrap()
    });
    assert_eq!(code, 3, "unreachable: {err}");
}

/// A job given its provider call: Hookline submits it with the configured token, fills in
/// the Replicate source's ingest URL as the webhook, tracks the id the answer names, and
/// the webhook that comes back ends it.
#[tokio::test]
async fn a_submitted_job_is_tracked_by_the_id_its_provider_gave() {
    let dir = TempDir::new("job-submit");
    let emulator = Emulator::replicate().await;
    let env = replicate_env(&emulator);
    for (backend, server) in nodes(&dir, "job_submit", &pairs(&env)).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "replicate", REPLICATE_SECRET).await;
        let prediction = format!("p_sub_{backend}");
        emulator.set(
            "/v1/predictions",
            json!({"id": prediction, "status": "starting",
            "urls": {"get": format!("https://api.replicate.com/v1/predictions/{prediction}")}}),
        );
        let job = create_job(
            &server,
            json!({"provider": "replicate_prediction", "appId": app,
                   "request": {"version": "abc123", "input": {"prompt": "a fox"}}}),
        )
        .await;
        assert_eq!(
            job["providerJobId"],
            prediction.as_str(),
            "{backend}: {job}"
        );
        assert_eq!(job["providerStatus"], "starting");
        let submitted = emulator.calls_to("/v1/predictions");
        let body: Value = serde_json::from_slice(&submitted.last().unwrap().body).unwrap();
        assert_eq!(
            body["webhook"],
            ingest.as_str(),
            "the source's ingest URL was filled in"
        );
        assert_eq!(body["input"]["prompt"], "a fox");

        let done = json!({"id": prediction, "status": "succeeded", "output": "fox.png"});
        assert_eq!(
            post_webhook(
                &ingest,
                Scheme::Replicate,
                REPLICATE_SECRET,
                &format!("m_{backend}"),
                &done
            )
            .await,
            200
        );
        let (kind, outcome) = one_outcome(
            &receiver,
            job["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(kind, "job.succeeded");
        assert_eq!(outcome["data"]["result"]["output"], "fox.png");

        // A provider that refuses the call: nothing is registered, and a retry with the
        // same idempotency key submits again.
        emulator.script("/v1/predictions", [Scripted::Broken]);
        let refused = json!({"provider": "replicate_prediction", "uid": format!("sub-{backend}"),
                             "appId": app, "request": {"version": "abc123"}});
        let key = format!("refused-{backend}");
        let (status, error) = post_keyed(&server, &key, &refused).await;
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(&error));
        let error: Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(error["code"], "provider_unavailable");
        let prediction = format!("p_retried_{backend}");
        emulator.set(
            "/v1/predictions",
            json!({"id": prediction, "status": "starting"}),
        );
        let (status, job) = post_keyed(&server, &key, &refused).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&job));
        let job: Value = serde_json::from_slice(&job).unwrap();
        assert_eq!(job["providerJobId"], prediction.as_str());

        // A uid taken already is a conflict found before anything is submitted.
        let submitted = emulator.calls_to("/v1/predictions").len();
        let (status, error) = post_keyed(&server, "uid-taken", &refused).await;
        assert_eq!(status, 409, "{}", String::from_utf8_lossy(&error));
        let error: Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(error["code"], "conflict", "{error}");
        assert_eq!(emulator.calls_to("/v1/predictions").len(), submitted);
    }
}

/// With a credential configured a thin webhook is completed by a status call; when that call
/// answers that the job has not ended yet, or keeps failing, the event's own word is the
/// outcome (a webhook-only job would otherwise wait for its deadline and expire).
#[tokio::test]
async fn a_thin_webhook_ends_its_job_when_status_calls_cannot_confirm_it() {
    let dir = TempDir::new("job-announced");
    let emulator = Emulator::openai().await;
    for (backend, server) in nodes(&dir, "job_announced", &pairs(&openai_env(&emulator))).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "open-ai", OPENAI_SECRET).await;
        let thin = |kind: &str, id: &str| {
            json!({"object": "event", "id": format!("evt_{id}"), "type": kind,
                   "created_at": 1, "data": {"id": id}})
        };

        // The provider does not show the end yet.
        let lagging = format!("resp_lag_{backend}");
        let path = format!("/v1/responses/{lagging}");
        emulator.set(
            &path,
            json!({"id": lagging, "object": "response", "status": "in_progress"}),
        );
        let job = create_job(
            &server,
            json!({"provider": "openai_response", "providerJobId": lagging, "appId": app,
                   "poll": null}),
        )
        .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let event = thin("response.completed", &lagging);
        let status = post_webhook(&ingest, Scheme::OpenAi, OPENAI_SECRET, &lagging, &event).await;
        assert_eq!(status, 200);
        let (kind, outcome) = one_outcome(&receiver, &id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.succeeded", "{backend}");
        assert_eq!(outcome["data"]["providerStatus"], "response.completed");
        assert_eq!(
            outcome["data"]["result"]["status"], "in_progress",
            "the provider's last answer"
        );
        let sources: Vec<(&str, &str)> = outcome["data"]["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["source"].as_str().unwrap(), e["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            sources,
            [
                ("webhook", "queued"),
                ("poll", "running"),
                ("webhook", "succeeded")
            ],
            "the poll's answer is on the timeline"
        );
        assert_eq!(emulator.calls_to(&path).len(), 1, "one status call");

        // The status calls fail: after three in a row since the webhook (the two failed
        // polls before it do not count), the event decides.
        let broken = format!("resp_broken_{backend}");
        let path = format!("/v1/responses/{broken}");
        emulator.script(&path, [Scripted::Broken; 5]);
        emulator.set(
            &path,
            json!({"id": broken, "object": "response", "status": "completed"}),
        );
        let job = create_job(
            &server,
            json!({"provider": "openai_response", "providerJobId": broken, "appId": app,
                   "poll": {"after": 0, "interval": 1, "maxInterval": 1}}),
        )
        .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(15);
        while emulator.calls_to(&path).len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            emulator.calls_to(&path).len(),
            2,
            "{backend}: two failed polls"
        );
        let event = thin("response.failed", &broken);
        let status = post_webhook(&ingest, Scheme::OpenAi, OPENAI_SECRET, &broken, &event).await;
        assert_eq!(status, 200);
        let (kind, _) = one_outcome(&receiver, &id, Duration::from_secs(15)).await;
        assert_eq!(kind, "job.failed", "{backend}");
        let calls = emulator.calls_to(&path);
        assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [500; 5]);
    }
}

/// Polling saw a prediction fail; Replicate's webhook that says it succeeded arrives after:
/// it goes on the timeline, changes nothing and emits nothing.
#[tokio::test]
async fn a_late_webhook_that_disagrees_changes_nothing() {
    let dir = TempDir::new("job-late");
    let emulator = Emulator::replicate().await;
    let env = replicate_env(&emulator);
    for (backend, server) in nodes(&dir, "job_late", &pairs(&env)).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let ingest = source(&server, "replicate", REPLICATE_SECRET).await;
        let prediction = format!("p_late_{backend}");
        emulator.set(
            &format!("/v1/predictions/{prediction}"),
            json!({"id": prediction, "status": "failed", "error": "out of memory"}),
        );
        let job = create_job(
            &server,
            json!({"provider": "replicate_prediction", "providerJobId": prediction,
                   "appId": app, "poll": {"after": 0, "interval": 1}}),
        )
        .await;
        let id = job["id"].as_str().unwrap().to_owned();
        let (kind, outcome) = one_outcome(&receiver, &id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.failed", "{backend}");
        assert_eq!(outcome["data"]["error"], "out of memory");

        let late = json!({"id": prediction, "status": "succeeded", "output": "x.png"});
        let status = post_webhook(
            &ingest,
            Scheme::Replicate,
            REPLICATE_SECRET,
            &prediction,
            &late,
        )
        .await;
        assert_eq!(status, 200);
        let (kind, _) = one_outcome(&receiver, &id, Duration::from_secs(1)).await;
        assert_eq!(
            kind, "job.failed",
            "{backend}: the late webhook emitted nothing"
        );
        let job = get_job(&server, &id).await;
        assert_eq!(job["status"], "failed");
        assert_eq!(
            job["result"]["status"], "failed",
            "the result is the poll's"
        );
        let last = job["timeline"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["source"], "webhook", "{job}");
        assert_eq!(last["providerStatus"], "succeeded");
        assert_eq!(last["status"], "failed");
    }
}

/// Posts a job with an `idempotency-key`; answers the status and the exact body.
async fn post_keyed(server: &Server, key: &str, body: &Value) -> (u16, Vec<u8>) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/job", server.url))
        .bearer_auth(crate::server::TOKEN)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// A submission the provider answers as running starts the job running (with its
/// `job.running` event), and its retry with the same idempotency key answers the same bytes
/// without submitting again.
#[tokio::test]
async fn a_submission_answered_running_runs_and_its_retry_submits_nothing() {
    let dir = TempDir::new("job-submit-retry");
    let emulator = Emulator::replicate().await;
    let env = replicate_env(&emulator);
    for (backend, server) in nodes(&dir, "job_submit_retry", &pairs(&env)).await {
        let (app, receiver) = app_with_receiver(&server).await;
        let prediction = format!("p_run_{backend}");
        emulator.set(
            "/v1/predictions",
            json!({"id": prediction, "status": "processing", "logs": "step 1"}),
        );
        let submitted_before = emulator.calls_to("/v1/predictions").len();
        let request = json!({"provider": "replicate_prediction", "appId": app, "poll": null,
                             "request": {"version": "abc123"}});
        let key = format!("submit-{backend}");
        let (status, first) = post_keyed(&server, &key, &request).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&first));
        let job: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(job["status"], "running", "{backend}: {job}");
        assert_eq!(job["timeline"][0]["source"], "api");
        assert_eq!(job["timeline"][0]["providerStatus"], "processing");
        let id = job["id"].as_str().unwrap().to_owned();
        receiver
            .wait_until(Duration::from_secs(10), |_| {
                events(&receiver, &id)
                    .iter()
                    .any(|(kind, _)| kind == "job.running")
            })
            .await;
        // Deliveries run side by side: their order is not the events' order.
        let mut kinds: Vec<String> = events(&receiver, &id).into_iter().map(|(k, _)| k).collect();
        kinds.sort();
        assert_eq!(kinds, ["job.created", "job.running"], "{backend}");

        let (status, again) = post_keyed(&server, &key, &request).await;
        assert_eq!(status, 201);
        assert_eq!(again, first, "{backend}: the retry answers the same bytes");
        assert_eq!(
            emulator.calls_to("/v1/predictions").len(),
            submitted_before + 1,
            "submitted once"
        );
    }
}

/// Two PostgreSQL nodes. Identical requests sent to both at once: a submission is made
/// once (the other node is told it is in progress, or replays it), and a registration is
/// answered with the same job by both, never with a conflict.
#[tokio::test]
async fn identical_requests_to_two_nodes_make_one_job() {
    let Some(url) = postgres_schema("job_two_keys") else {
        return;
    };
    let dir = TempDir::new("job-two-keys");
    let emulator = Emulator::replicate().await;
    emulator.set_delay(Duration::from_millis(300));
    let mut env = replicate_env(&emulator);
    env.push(("HOOKLINE_DATABASE_URL".into(), url));
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b"] {
        let mut env = env.clone();
        env.push(("HOOKLINE_NODE_ID".into(), node.into()));
        nodes.push(std::sync::Arc::new(
            Server::start(&dir.0, &pairs(&env)).await,
        ));
    }
    let (app, _receiver) = app_with_receiver(&nodes[0]).await;
    emulator.set(
        "/v1/predictions",
        json!({"id": "p_once", "status": "starting"}),
    );
    let both = |key: String, body: Value| {
        let (a, b) = (nodes[0].clone(), nodes[1].clone());
        let (key_b, body_b) = (key.clone(), body.clone());
        async move {
            let (first, second) =
                tokio::join!(post_keyed(&a, &key, &body), post_keyed(&b, &key_b, &body_b));
            [first, second]
        }
    };

    let submission = json!({"provider": "replicate_prediction", "appId": app, "poll": null,
                            "request": {"version": "abc123"}});
    let answers = both("submit-once".into(), submission.clone()).await;
    assert_eq!(
        emulator.calls_to("/v1/predictions").len(),
        1,
        "submitted once"
    );
    for (status, body) in &answers {
        let body = String::from_utf8_lossy(body);
        assert!(
            *status == 201 || (*status == 409 && body.contains("still being carried out")),
            "{status} {body}"
        );
    }
    let (status, replayed) = post_keyed(&nodes[1], "submit-once", &submission).await;
    assert_eq!(status, 201);
    let replayed: Value = serde_json::from_slice(&replayed).unwrap();
    assert_eq!(replayed["providerJobId"], "p_once");
    assert_eq!(
        emulator.calls_to("/v1/predictions").len(),
        1,
        "submitted once"
    );

    for n in 0..10 {
        let body = json!({"provider": "replicate_prediction", "providerJobId": format!("p_reg_{n}"),
                          "appId": app, "poll": null});
        let answers = both(format!("register-{n}"), body).await;
        let ids: Vec<Value> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, 201, "{}", String::from_utf8_lossy(body));
                serde_json::from_slice::<Value>(body).unwrap()["id"].clone()
            })
            .collect();
        assert_eq!(ids[0], ids[1], "one job for both");
    }
}

/// Two PostgreSQL nodes: a long poll on one answers soon after a change made on the other.
#[tokio::test]
async fn a_long_poll_sees_a_change_made_on_another_node() {
    let Some(url) = postgres_schema("job_wait_nodes") else {
        return;
    };
    let dir = TempDir::new("job-wait-nodes");
    let mut nodes = Vec::new();
    for node in ["node-a", "node-b"] {
        let env = [
            ("HOOKLINE_DATABASE_URL", url.as_str()),
            ("HOOKLINE_NODE_ID", node),
        ];
        nodes.push(Server::start(&dir.0, &env).await);
    }
    let (app, _receiver) = app_with_receiver(&nodes[0]).await;
    let job = create_job(&nodes[0], json!({"provider": "custom", "appId": app})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let url = format!("{}/api/v1/job/{id}?wait=10&status=queued", nodes[1].url);
    let waiting = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(crate::server::TOKEN)
            .send()
            .await
            .unwrap();
        let answered = Instant::now();
        (answered, response.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the wait ended before the change");
    let (status, _) = nodes[0]
        .api(
            Method::POST,
            &format!("/api/v1/job/{id}/status"),
            Some(json!({"status": "running"})),
        )
        .await;
    let changed = Instant::now();
    assert_eq!(status, 200);
    let (answered, job) = waiting.await.unwrap();
    assert_eq!(job["status"], "running");
    let lag = answered.saturating_duration_since(changed);
    assert!(
        lag < Duration::from_millis(400),
        "answered {lag:?} after the change on the other node"
    );
}

/// Two PostgreSQL nodes share a provider's budget of 4 calls a second: together they never
/// make more.
#[tokio::test]
async fn two_nodes_keep_to_one_budget() {
    let Some(url) = postgres_schema("job_budget_nodes") else {
        return;
    };
    let dir = TempDir::new("job-budget-nodes");
    let emulator = Emulator::anthropic().await;
    let mut env = emulator.env("ANTHROPIC", "", "HOOKLINE_ANTHROPIC_API_KEY", "sk-ant-test");
    env.retain(|(k, _)| k != "HOOKLINE_ANTHROPIC_REQUESTS_PER_SECOND");
    env.push(("HOOKLINE_ANTHROPIC_REQUESTS_PER_SECOND".into(), "4".into()));
    env.push(("HOOKLINE_DATABASE_URL".into(), url));
    let node = |name: &str| {
        let mut env = env.clone();
        env.push(("HOOKLINE_NODE_ID".into(), name.into()));
        env
    };
    let first_node = Server::start(&dir.0, &pairs(&node("node-a"))).await;
    let (app, _receiver) = app_with_receiver(&first_node).await;
    for n in 0..16 {
        let batch = format!("msgbatch_b{n}");
        emulator.set(
            &format!("/v1/messages/batches/{batch}"),
            json!({"id": batch, "processing_status": "in_progress"}),
        );
        create_job(
            &first_node,
            json!({"provider": "anthropic_message_batch", "providerJobId": batch, "appId": app,
                   "poll": {"after": 0, "interval": 1, "maxInterval": 1}}),
        )
        .await;
    }
    // A second node joins while the first is busy polling at the whole budget.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let joined = Instant::now();
    let _second_node = Server::start(&dir.0, &pairs(&node("node-b"))).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all: Vec<Instant> = emulator.calls().into_iter().map(|c| c.at).collect();
    let offsets = || {
        all.iter()
            .map(|at| at.saturating_duration_since(joined).as_millis() as i64)
            .collect::<Vec<_>>()
    };
    // Once both poll (the second from 3 s after it started, the first at half its pace
    // from its next heartbeat), the budget is used in full, not only kept: the first
    // alone would make 2 calls a second.
    let late = all
        .iter()
        .filter(|at| at.saturating_duration_since(joined) >= Duration::from_secs(4))
        .count();
    assert!(late >= 13, "{late} calls in the last 4 s: {:?}", offsets());
    // 950 ms, not 1 s: the calls are timed where the emulator receives them, a few
    // milliseconds off when they were started.
    for (n, start) in all.iter().enumerate() {
        let within = all[n..]
            .iter()
            .take_while(|at| **at - *start < Duration::from_millis(950))
            .count();
        assert!(
            within <= 4,
            "{within} calls within a second: the budget is 4. Calls, in ms from the join: {:?}",
            offsets()
        );
    }
}

/// The sum of the series `name` in `server`'s `/metrics`.
async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(crate::server::TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.parse::<f64>().unwrap())
        .sum()
}

/// With every poll slot taken and more polls due, each poll that ends frees one slot; the
/// tracker claims once a quarter of them are free (or shortly after the first), not once
/// for every slot as it frees.
#[tokio::test]
async fn a_busy_tracker_claims_its_polls_in_batches() {
    const JOBS: usize = 600;
    let dir = TempDir::new("job-poll-batches");
    let emulator = Emulator::openai().await;
    emulator.set_delay(Duration::from_millis(50));
    let env = openai_env(&emulator);
    // An API node: it registers the jobs and polls none of them.
    let mut api_env = env.clone();
    api_env.push(("HOOKLINE_ROLE".into(), "api".into()));
    let registrar = Server::start(&dir.0, &pairs(&api_env)).await;
    let (app, _receiver) = app_with_receiver(&registrar).await;
    for n in 0..JOBS {
        emulator.set(
            &format!("/v1/batches/batch_{n}"),
            json!({"id": n, "status": "in_progress"}),
        );
    }
    // Registered on a node that polls nothing: the next finds all of them due at once,
    // more than its 32 slots.
    let registrar = std::sync::Arc::new(registrar);
    let mut creators = Vec::new();
    for part in 0..8 {
        let (server, app) = (registrar.clone(), app.clone());
        creators.push(tokio::spawn(async move {
            for n in (part..JOBS).step_by(8) {
                create_job(
                    &server,
                    json!({"provider": "openai_batch", "providerJobId": format!("batch_{n}"),
                    "appId": app, "poll": {"after": 1, "interval": 600}}),
                )
                .await;
            }
        }));
    }
    for creator in creators {
        creator.await.unwrap();
    }
    let registrar = std::sync::Arc::into_inner(registrar).unwrap();
    registrar.stop().await.unwrap();
    assert!(emulator.calls().is_empty(), "the API node polled nothing");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = Server::start_process(&dir.0, &pairs(&env)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while emulator.calls().len() < JOBS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(emulator.calls().len(), JOBS, "every job was polled once");
    let claims = metric(&server, "hookline_poll_claims_total").await;
    let claimed = metric(&server, "hookline_claimed_polls_total").await;
    assert_eq!(claimed as usize, JOBS, "every poll was claimed once");
    // 32 slots: a quarter is 8 a claim, and looks that found nothing count as claims too.
    // Claiming for each slot as it freed made 2.2 a claim.
    assert!(
        claimed / claims >= 4.0,
        "{claims} claims for {claimed} polls"
    );
}
