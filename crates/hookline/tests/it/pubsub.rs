//! `google-pubsub` sources end to end: Cloud Pub/Sub pushes, their OIDC tokens signed with
//! the fixture keys and checked against a JWKS document served over loopback HTTP, through
//! the real `/in/{token}` route of a node on each backend, forwarded to a real receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hookline_signature::oidc::SigningKey;
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Receiver, Server, TempDir, nodes};

const AUDIENCE: &str = "hookline-e2e-pubsub";
const EMAIL: &str = "pubsub-push@hookline-e2e.iam.gserviceaccount.com";
const KID: &str = "google-e2e-1";

/// Google's key, and one that is not.
fn google_key() -> SigningKey {
    SigningKey::from_pkcs8(include_bytes!(
        "../../../hookline-signature/testdata/oidc-rsa-1.pk8"
    ))
    .unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_pkcs8(include_bytes!(
        "../../../hookline-signature/testdata/oidc-rsa-2.pk8"
    ))
    .unwrap()
}

/// A loopback HTTP server publishing Google's key set as `KID`, counting the fetches.
async fn serve_jwks() -> (Arc<AtomicUsize>, String) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let document = json!({ "keys": [google_key().jwk(KID)] }).to_string();
    let app = axum::Router::new().route(
        "/oauth2/v3/certs",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let document = document.clone();
            async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", "public, max-age=3600"),
                    ],
                    document,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/oauth2/v3/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fetches, url)
}

/// The claims of a push token issued `age` seconds ago and valid for an hour.
fn claims(age: i64) -> Value {
    let iat = chrono::Utc::now().timestamp() - age;
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "118131776591383417011",
        "sub": "118131776591383417011",
        "email": EMAIL,
        "email_verified": true,
        "iat": iat,
        "exp": iat + 3600,
    })
}

/// A wrapped push of `data` as message `id`, on its `attempt`th delivery.
fn push_body(id: &str, data: &str, attempt: u64) -> String {
    json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "attributes": { "type": "batch.succeeded", "origin": "vertex" },
            "messageId": id,
            "message_id": id,
            "publishTime": "2026-01-05T10:00:00.000Z",
            "publish_time": "2026-01-05T10:00:00.000Z",
        },
        "subscription": "projects/hookline-e2e/subscriptions/hookline",
        "deliveryAttempt": attempt,
    })
    .to_string()
}

/// Pushes `body` with `token`; answers the status and the JSON answer.
async fn push(ingest_url: &str, token: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(ingest_url)
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("push");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a `google-pubsub` source through the API, with a forwarding endpoint at
/// `forward_to`; answers `(id, ingest URL)`.
async fn create_source(server: &Server, forward_to: &str) -> (String, String) {
    let (status, source) = server
        .api(
            Method::POST,
            "/ingest/api/v1/source",
            Some(json!({
                "name": "Vertex AI batch notifications",
                "type": "google-pubsub",
                "config": { "audience": AUDIENCE, "serviceAccountEmail": EMAIL },
            })),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    assert_eq!(
        source["config"],
        json!({ "audience": AUDIENCE, "serviceAccountEmail": EMAIL })
    );
    let id = source["id"].as_str().unwrap().to_owned();
    let (status, endpoint) = server
        .api(
            Method::POST,
            &format!("/ingest/api/v1/source/{id}/endpoint"),
            Some(json!({ "url": forward_to })),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    (id, source["ingestUrl"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn pubsub_pushes_are_verified_unwrapped_forwarded_and_deduplicated_on_every_backend() {
    let dir = TempDir::new("pubsub");
    let (fetches, jwks_url) = serve_jwks().await;
    let env = [("HOOKLINE_GOOGLE_JWKS_URL", jwks_url.as_str())];
    for (backend, server) in nodes(&dir, "pubsub", &env).await {
        let (receiver, receiver_url) = Receiver::start().await;
        let (source_id, ingest_url) =
            create_source(&server, &format!("{receiver_url}/vertex")).await;
        let data =
            r#"{"type":"batch.succeeded","name":"projects/p/locations/l/batchPredictionJobs/42"}"#;

        // A genuine push is accepted, and its message's data is what is forwarded.
        let token = google_key().sign(KID, &claims(5));
        let (status, answer) = push(&ingest_url, &token, push_body("1001", data, 1)).await;
        assert_eq!(
            (status, answer["verdict"].as_str()),
            (200, Some("accepted")),
            "{backend}: {answer}"
        );
        let forwarded = receiver
            .wait_until(Duration::from_secs(20), |d| !d.is_empty())
            .await;
        assert_eq!(forwarded.len(), 1, "{backend}: {forwarded:?}");
        assert_eq!(forwarded[0].path, "/vertex");
        assert_eq!(
            String::from_utf8_lossy(&forwarded[0].body),
            data,
            "{backend}: the decoded message.data is forwarded, not the envelope"
        );
        assert!(forwarded[0].headers.contains_key("webhook-signature"));

        // Pub/Sub redelivers the same message (another attempt, another token): it is
        // answered 200 (an ack) as a duplicate and not forwarded again.
        let token = google_key().sign(KID, &claims(0));
        let (status, answer) = push(&ingest_url, &token, push_body("1001", data, 2)).await;
        assert_eq!(
            (status, answer["verdict"].as_str()),
            (200, Some("duplicate")),
            "{backend}: {answer}"
        );

        // Tokens that do not verify are refused with a non-2xx (a nack) and the reason.
        let expired = google_key().sign(KID, &claims(3600 + 600));
        let (status, answer) = push(&ingest_url, &expired, push_body("1002", data, 1)).await;
        assert_eq!(status, 401, "{backend}: {answer}");
        assert_eq!(answer["code"], "timestamp_too_old", "{backend}: {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("the token expired ") && detail.ends_with(" s ago (leeway 60 s)"),
            "{backend}: {detail}"
        );

        let mut elsewhere = claims(0);
        elsewhere["aud"] = json!("https://elsewhere.example/push");
        let wrong_audience = google_key().sign(KID, &elsewhere);
        let (status, answer) = push(&ingest_url, &wrong_audience, push_body("1003", data, 1)).await;
        assert_eq!(status, 401, "{backend}: {answer}");
        assert_eq!(answer["code"], "invalid_credentials");
        assert_eq!(
            answer["detail"],
            format!(
                "the token's audience is \"https://elsewhere.example/push\", this source expects \"{AUDIENCE}\""
            )
        );

        let forged = other_key().sign(KID, &claims(0));
        let (status, answer) = push(&ingest_url, &forged, push_body("1004", data, 1)).await;
        assert_eq!(status, 401, "{backend}: {answer}");
        assert_eq!(answer["code"], "no_signature_matched");
        assert_eq!(
            answer["detail"],
            format!("the token's signature does not match the key \"{KID}\"")
        );

        // A token naming a key Google never published: the key set was fetched moments
        // ago, so it is not fetched again (at most once per 30 s).
        let fetched = fetches.load(Ordering::SeqCst);
        let unknown = other_key().sign("not-published", &claims(0));
        let (status, answer) = push(&ingest_url, &unknown, push_body("1005", data, 1)).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (401, Some("no_signature_matched"))
        );
        assert!(
            answer["detail"]
                .as_str()
                .unwrap()
                .starts_with("no key with kid \"not-published\" in the JWKS"),
            "{answer}"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), fetched, "{backend}");

        // A genuine token on a body that is not an envelope.
        let token = google_key().sign(KID, &claims(0));
        let (status, answer) = push(&ingest_url, &token, data.to_owned()).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("malformed_envelope")),
            "{backend}: {answer}"
        );

        // The log holds every push as received, with its verdict and reason.
        let (status, log) = server
            .api(
                Method::GET,
                &format!("/ingest/api/v1/source/{source_id}/log?order=ascending"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{backend}: {log}");
        let entries = log["data"].as_array().unwrap();
        let outcomes: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e["verdict"].as_str().unwrap(),
                    e["reasonCode"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                ("accepted", "accepted"),
                ("duplicate", "duplicate"),
                ("rejected", "timestamp_too_old"),
                ("rejected", "invalid_credentials"),
                ("rejected", "no_signature_matched"),
                ("rejected", "no_signature_matched"),
                ("rejected", "malformed_envelope"),
            ],
            "{backend}: {log}"
        );
        assert_eq!(entries[0]["eventType"], "batch.succeeded", "{backend}");
        assert_eq!(entries[0]["headers"]["authorization"], "[redacted]");
        assert!(
            entries[0]["payload"]
                .as_str()
                .unwrap()
                .contains("\"messageId\":\"1001\""),
            "the log keeps the envelope: {}",
            entries[0]["payload"]
        );

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            receiver.deliveries().len(),
            1,
            "{backend}: only the accepted push is forwarded, once"
        );
    }
    assert!(
        fetches.load(Ordering::SeqCst) >= 1,
        "the key set was fetched over HTTP"
    );
}

/// While Google's keys cannot be fetched, a push is answered 503 (Pub/Sub redelivers it)
/// with the reason, and logged.
#[tokio::test]
async fn a_push_is_answered_503_while_the_keys_cannot_be_fetched() {
    let dir = TempDir::new("pubsub-nokeys");
    // A port that refuses connections: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks_url = format!("http://{}/certs", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start(&dir.0, &[("HOOKLINE_GOOGLE_JWKS_URL", &jwks_url)]).await;
    let (receiver, receiver_url) = Receiver::start().await;
    let (source_id, ingest_url) = create_source(&server, &format!("{receiver_url}/x")).await;
    let token = google_key().sign(KID, &claims(0));
    let (status, answer) = push(&ingest_url, &token, push_body("2001", "{}", 1)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "unavailable");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "Google's signing keys could not be fetched from {jwks_url}: "
        )) && detail.ends_with("answered 503 so that Pub/Sub delivers the message again"),
        "{detail}"
    );
    let (_, log) = server
        .api(
            Method::GET,
            &format!("/ingest/api/v1/source/{source_id}/log"),
            None,
        )
        .await;
    assert_eq!(log["data"][0]["reasonCode"], "unavailable", "{log}");
    assert_eq!(log["data"][0]["status_code"], 503, "{log}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.deliveries().is_empty());
}

/// A Gemini batch tracked by webhook alone, its end announced by a Pub/Sub push: the
/// unwrapped message reaches the job tracker and the job's app hears of it once.
#[tokio::test]
async fn a_gemini_batch_ends_by_pubsub_push() {
    let dir = TempDir::new("pubsub-job");
    let (_, jwks_url) = serve_jwks().await;
    let env = [("HOOKLINE_GOOGLE_JWKS_URL", jwks_url.as_str())];
    for (backend, server) in nodes(&dir, "pubsub_job", &env).await {
        let (receiver, receiver_url) = Receiver::start().await;
        let (_, ingest_url) = create_source(&server, &format!("{receiver_url}/vertex")).await;
        let (app, events) = crate::jobs::app_with_receiver(&server).await;
        let job = crate::jobs::create_job(
            &server,
            json!({"provider": "gemini_batch", "providerJobId": "batches/b77", "appId": app, "poll": null}),
        )
        .await;
        let data = r#"{"type":"batch.succeeded","data":{"id":"batches/b77","output_file_uri":"gs://out/b77"}}"#;
        for attempt in [1, 2] {
            let token = google_key().sign(KID, &claims(0));
            let (status, answer) =
                push(&ingest_url, &token, push_body("2001", data, attempt)).await;
            assert_eq!(status, 200, "{backend}: {answer}");
        }
        let id = job["id"].as_str().unwrap();
        let (kind, outcome) = crate::jobs::one_outcome(&events, id, Duration::from_secs(10)).await;
        assert_eq!(kind, "job.succeeded", "{backend}");
        assert_eq!(
            outcome["data"]["result"]["data"]["output_file_uri"],
            "gs://out/b77"
        );
        assert_eq!(receiver.deliveries().len(), 1, "forwarded once");
    }
}
