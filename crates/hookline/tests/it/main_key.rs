//! A main key's whole life through the API and the CLI, on every backend: secrets sealed
//! under key A, a restart with key B and A as previous (deliveries still signed with the
//! right secrets, a provider's signed request still verified), `hookline rekey`, a
//! restart with B alone, and no plaintext secret in the database at any point.

use std::process::Command;
use std::time::Duration;

use hookline_core::sealed::MainKey;
use hookline_signature::{Keyset, Message, Scheme, VerifyOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Receiver, Server, TempDir, postgres_schema};

const ENDPOINT_OLD: &str = "whsec_ZW5kcG9pbnQtb2xkLXNlY3JldC0xMjM0NTY=";
const ENDPOINT_NEW: &str = "whsec_ZW5kcG9pbnQtbmV3LXNlY3JldC02NTQzMjE=";
const FORWARD_SECRET: &str = "whsec_Zm9yd2FyZGluZy1zZWNyZXQtYWJjZGVmZ2g=";
const SOURCE_SECRET: &str = "whsec_c291cmNlLW9wZW5haS1zZWNyZXQtenl4dw==";
const ALL_SECRETS: [&str; 4] = [ENDPOINT_OLD, ENDPOINT_NEW, FORWARD_SECRET, SOURCE_SECRET];

/// Where a backend keeps its data, and how to read the stored secrets behind the
/// server's back.
enum Database {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Database {
    /// The node settings that point at it.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Database::Sqlite(_) => Vec::new(),
            Database::Postgres(url) => vec![
                ("HOOKLINE_DATABASE_URL", url.clone()),
                ("HOOKLINE_DATABASE_POOL_SIZE", "4".into()),
            ],
        }
    }

    /// Every stored `endpoint.secrets` and `source.config`, as text.
    fn stored(&self) -> Vec<String> {
        const SQL: &str = "SELECT secrets FROM endpoint UNION ALL SELECT config FROM source";
        match self {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open the file directly");
                let mut statement = conn.prepare(SQL).unwrap();
                statement
                    .query_map([], |row| row.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap()
            }
            Database::Postgres(url) => {
                let sql = "SELECT secrets::text FROM endpoint UNION ALL \
                           SELECT config::text FROM source";
                let out = Command::new("psql")
                    .args([url.as_str(), "-At", "-c", sql])
                    .output()
                    .expect("run psql");
                assert!(out.status.success(), "psql: {out:?}");
                String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect()
            }
        }
    }

    /// Asserts that no stored value holds a secret in plaintext, and that each is
    /// sealed under `key`.
    fn assert_sealed_under(&self, key: &MainKey) {
        let stored = self.stored();
        assert_eq!(stored.len(), 3, "two endpoints and a source: {stored:?}");
        let header = format!("sealed:v1:{}:", key.id());
        for value in &stored {
            for secret in ALL_SECRETS {
                assert!(!value.contains(secret), "plaintext {secret} in {value}");
            }
            assert!(
                value.contains(&header),
                "not sealed under {header}: {value}"
            );
        }
    }
}

/// Runs `hookline rekey` against `database` with `keys`; answers its exit code and output.
fn rekey(dir: &TempDir, database: &Database, keys: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookline"));
    command
        .args(["rekey", "--batch", "1"])
        .current_dir(&dir.0)
        .env(
            "HOOKLINE_DATABASE_URL",
            format!("sqlite://{}", dir.0.join("hookline.db").display()),
        )
        .env("HOOKLINE_LOG_LEVEL", "warn");
    for (name, value) in database.env() {
        command.env(name, value);
    }
    for (name, value) in keys {
        command.env(name, value);
    }
    let out = command.output().expect("run hookline rekey");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Starts a node on `database` with `keys`.
async fn node(dir: &TempDir, database: &Database, keys: &[(&str, &str)]) -> Server {
    let env = database.env();
    let mut extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.extend_from_slice(keys);
    Server::start(&dir.0, &extra).await
}

async fn created(server: &Server, path: &str, body: Value) -> Value {
    let (status, out) = server.api(Method::POST, path, Some(body)).await;
    assert!(status == 201 || status == 202, "{path}: {status} {out}");
    out
}

/// What the first node made, for the later ones to check.
struct Made {
    app: String,
    endpoint: String,
    source: String,
    /// `/in/{token}`: each node listens on a port of its own.
    ingest_path: String,
}

/// Creates an application with an endpoint whose secret was rotated (the old one in its
/// grace period), and an OpenAI source forwarding to a second endpoint.
async fn make(server: &Server, receiver_url: &str) -> Made {
    let app = created(server, "/api/v1/app", json!({"name": "sealed"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoint = created(
        server,
        &format!("/api/v1/app/{app}/endpoint"),
        json!({"url": format!("{receiver_url}/direct"), "secret": ENDPOINT_OLD}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, out) = server
        .api(
            Method::POST,
            &format!("/api/v1/app/{app}/endpoint/{endpoint}/secret/rotate"),
            Some(json!({"key": ENDPOINT_NEW})),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {out}");
    let source = created(
        server,
        "/ingest/api/v1/source",
        json!({"name": "OpenAI", "type": "open-ai", "config": {"secret": SOURCE_SECRET}}),
    )
    .await;
    let (source, ingest_url) = (
        source["id"].as_str().unwrap().to_owned(),
        source["ingestUrl"].as_str().unwrap().to_owned(),
    );
    created(
        server,
        &format!("/ingest/api/v1/source/{source}/endpoint"),
        json!({"url": format!("{receiver_url}/forwarded"), "secret": FORWARD_SECRET}),
    )
    .await;
    Made {
        app,
        endpoint,
        source,
        ingest_path: ingest_url[ingest_url.find("/in/").expect("an /in/ URL")..].to_owned(),
    }
}

/// Sends a message and a signed provider request through `server`, and checks that both
/// arrive signed with the right secrets and that the API still shows them.
async fn check_round(server: &Server, receiver: &Receiver, made: &Made, round: usize) {
    let (status, secret) = server
        .api(
            Method::GET,
            &format!("/api/v1/app/{}/endpoint/{}/secret", made.app, made.endpoint),
            None,
        )
        .await;
    assert_eq!((status, secret["key"].as_str()), (200, Some(ENDPOINT_NEW)));

    created(
        server,
        &format!("/api/v1/app/{}/msg", made.app),
        json!({"eventType": "job.done", "payload": {"round": round}}),
    )
    .await;
    let body = format!(r#"{{"type":"response.completed","data":{{"round":{round}}}}}"#);
    let signed = Keyset::new(Scheme::OpenAi, [SOURCE_SECRET])
        .unwrap()
        .sign(&Message {
            id: &format!("wh_{round}"),
            timestamp: chrono::Utc::now().timestamp(),
            body: body.as_bytes(),
        })
        .unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{}{}", server.url, made.ingest_path))
        .body(body.clone());
    for (name, value) in signed {
        request = request.header(name, value);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["verdict"], "accepted", "round {round}: {answer}");

    let payload = format!(r#"{{"round":{round}}}"#);
    let deliveries = receiver
        .wait_until(Duration::from_secs(20), |got| {
            let has =
                |path: &str, body: &[u8]| got.iter().any(|d| d.path == path && d.body == body);
            has("/direct", payload.as_bytes()) && has("/forwarded", body.as_bytes())
        })
        .await;
    let find = |path: &str, body: &[u8]| {
        deliveries
            .iter()
            .find(|d| d.path == path && d.body == body)
            .unwrap_or_else(|| panic!("round {round}: nothing at {path}"))
            .clone()
    };
    let direct = find("/direct", payload.as_bytes());
    let headers: Vec<(String, String)> = direct.headers.clone().into_iter().collect();
    // Signed with the new secret and, in its grace period, the old one.
    for secret in [ENDPOINT_NEW, ENDPOINT_OLD] {
        Keyset::new(Scheme::Standard, [secret])
            .unwrap()
            .verify(&headers, &direct.body, VerifyOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: not signed with {secret}: {e}"));
    }
    let forwarded = find("/forwarded", body.as_bytes());
    let headers: Vec<(String, String)> = forwarded.headers.clone().into_iter().collect();
    Keyset::new(Scheme::Standard, [FORWARD_SECRET])
        .unwrap()
        .verify(&headers, &forwarded.body, VerifyOptions::default())
        .unwrap_or_else(|e| panic!("round {round}: forwarded unsigned: {e}"));
    let (status, source) = server
        .api(
            Method::GET,
            &format!("/ingest/api/v1/source/{}", made.source),
            None,
        )
        .await;
    assert_eq!(status, 200, "{source}");
}

async fn rotate_through_the_api_and_cli(dir: TempDir, database: Database) {
    let (receiver, receiver_url) = Receiver::start().await;
    let (key_a, a) = MainKey::generate();
    let (key_b, b) = MainKey::generate();

    // Key A.
    let server = node(&dir, &database, &[("HOOKLINE_MAIN_KEY", &a)]).await;
    let made = make(&server, &receiver_url).await;
    check_round(&server, &receiver, &made, 1).await;
    server.stop().await.unwrap();
    database.assert_sealed_under(&key_a);

    // Key B, with A still reading.
    let rotating = [
        ("HOOKLINE_MAIN_KEY", b.as_str()),
        ("HOOKLINE_PREVIOUS_MAIN_KEYS", &a),
    ];
    let server = node(&dir, &database, &rotating).await;
    check_round(&server, &receiver, &made, 2).await;
    server.stop().await.unwrap();

    // B alone cannot re-seal what A sealed: a setup error naming the key.
    let (code, out) = rekey(&dir, &database, &[("HOOKLINE_MAIN_KEY", &b)]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(key_a.id()) && out.contains("HOOKLINE_PREVIOUS_MAIN_KEYS"),
        "{out}"
    );
    let (code, out) = rekey(&dir, &database, &[("HOOKLINE_MAIN_KEY", "not-a-key")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("HOOKLINE_MAIN_KEY") && out.contains("32 random bytes"),
        "{out}"
    );

    let (code, out) = rekey(&dir, &database, &rotating);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("endpoints: 1 read"), "batches of one: {out}");
    assert!(
        out.contains(&format!(
            "rekey done under main key {}: 2 of 2 endpoints and 1 of 1 sources re-sealed",
            key_b.id()
        )),
        "{out}"
    );
    database.assert_sealed_under(&key_b);

    // B alone reads everything.
    let server = node(&dir, &database, &[("HOOKLINE_MAIN_KEY", &b)]).await;
    check_round(&server, &receiver, &made, 3).await;
    server.stop().await.unwrap();
    database.assert_sealed_under(&key_b);
}

#[tokio::test]
async fn a_main_key_rotation_keeps_every_secret_working_on_sqlite() {
    let dir = TempDir::new("main-key");
    let file = dir.0.join("hookline.db");
    rotate_through_the_api_and_cli(dir, Database::Sqlite(file)).await;
}

#[tokio::test]
async fn a_main_key_rotation_keeps_every_secret_working_on_postgres() {
    let Some(url) = postgres_schema("main_key") else {
        return;
    };
    rotate_through_the_api_and_cli(TempDir::new("main-key-pg"), Database::Postgres(url)).await;
}
