//! The resource commands end to end: `hookline app|endpoint|msg|attempt|source|request`,
//! `hookline recover` and `hookline replay` against a real server, as tables and as JSON,
//! with exit codes that say what failed.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Receiver, TOKEN, TempDir};

/// Runs `hookline ARGS` against `url`; answers (exit code, stdout, stderr).
fn hookline(url: &str, args: &[&str]) -> (i32, String, String) {
    run(
        args,
        &[("HOOKLINE_SERVER", url), ("HOOKLINE_TOKEN", TOKEN)],
        "/nonexistent/cli.toml",
    )
}

/// Runs `hookline ARGS` with `env` and the profiles file `profiles`, nothing else of this
/// process's `HOOKLINE_*` variables.
fn run(args: &[&str], env: &[(&str, &str)], profiles: &str) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(args)
        .env_remove("HOOKLINE_SERVER")
        .env_remove("HOOKLINE_TOKEN")
        .env_remove("HOOKLINE_PROFILE")
        .env("HOOKLINE_CLI_CONFIG", profiles)
        .envs(env.iter().copied())
        .output()
        .expect("run hookline");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command that must succeed with `--json`; answers its JSON.
fn json(url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, out, err) = hookline(url, &args);
    assert_eq!(code, 0, "hookline {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs a command that must succeed; answers its standard output.
fn table(url: &str, args: &[&str]) -> String {
    let (code, out, err) = hookline(url, args);
    assert_eq!(code, 0, "hookline {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_commands_drive_the_api() {
    let dir = TempDir::new("resource-cli");
    for (backend, server) in crate::server::nodes(&dir, "resource_cli", &[]).await {
        let url = server.url.clone();
        let (receiver, receiver_url) = Receiver::start().await;
        let (status, _) = server
            .api(
                reqwest::Method::POST,
                "/api/v1/event-type",
                Some(serde_json::json!({"name": "invoice.paid", "description": "paid"})),
            )
            .await;
        assert_eq!(status, 201);
        tokio::task::block_in_place(|| {
            // Applications.
            let app = json(
                &url,
                &[
                    "app",
                    "create",
                    "--name",
                    "Acme",
                    "--uid",
                    "acme",
                    "--metadata",
                    r#"{"team":"billing"}"#,
                ],
            );
            assert_eq!(app["uid"], "acme", "{backend}");
            let listed = table(&url, &["app", "list"]);
            assert!(listed.starts_with("ID"), "{listed}");
            assert!(
                listed.contains("acme") && listed.contains("Acme"),
                "{listed}"
            );
            let renamed = table(&url, &["app", "update", "acme", "--name", "Acme Corp"]);
            assert!(renamed.contains("Acme Corp"), "{renamed}");

            // An endpoint nobody answers at, a message, its failed attempt.
            let endpoint = json(
                &url,
                &[
                    "endpoint",
                    "create",
                    "--app",
                    "acme",
                    "--url",
                    "http://127.0.0.1:9/closed",
                    "--event-types",
                    "invoice.paid",
                ],
            );
            let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
            assert_eq!(endpoint["eventTypes"], serde_json::json!(["invoice.paid"]));
            let msg = json(
                &url,
                &[
                    "msg",
                    "create",
                    "--app",
                    "acme",
                    "--event-type",
                    "invoice.paid",
                    "--payload",
                    r#"{"amount":5}"#,
                ],
            );
            let msg_id = msg["id"].as_str().unwrap().to_owned();
            let deadline = Instant::now() + Duration::from_secs(15);
            let failed = loop {
                let page = json(
                    &url,
                    &["attempt", "list", "--app", "acme", "--msg", &msg_id],
                );
                if let Some(attempt) = page["data"].as_array().and_then(|a| a.first()) {
                    break attempt.clone();
                }
                assert!(Instant::now() < deadline, "{backend}: no attempt was made");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert_eq!(failed["statusText"], "fail", "{failed}");
            let shown = table(
                &url,
                &[
                    "attempt",
                    "get",
                    failed["id"].as_str().unwrap(),
                    "--app",
                    "acme",
                    "--msg",
                    &msg_id,
                ],
            );
            assert!(shown.contains("http status"), "{shown}");
            let messages = table(
                &url,
                &[
                    "msg",
                    "list",
                    "--app",
                    "acme",
                    "--event-type",
                    "invoice.paid",
                ],
            );
            assert!(messages.contains(&msg_id), "{messages}");

            // Pointed at a receiver and resent, it is delivered.
            let fixed = json(
                &url,
                &[
                    "endpoint",
                    "update",
                    "--app",
                    "acme",
                    &endpoint_id,
                    "--url",
                    &format!("{receiver_url}/ok"),
                ],
            );
            assert!(fixed["url"].as_str().unwrap().ends_with("/ok"));
            let resent = table(
                &url,
                &[
                    "attempt",
                    "resend",
                    "--app",
                    "acme",
                    "--msg",
                    &msg_id,
                    "--endpoint",
                    &endpoint_id,
                ],
            );
            assert!(resent.contains("resending"), "{resent}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while receiver.deliveries().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(receiver.deliveries().len(), 1, "{backend}: resent once");

            // Recover over a range, with a progress line per endpoint (not a terminal).
            let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
            let (code, out, err) = hookline(&url, &["recover", "--app", "acme", "--since", &since]);
            assert_eq!(code, 0, "{err}");
            assert!(err.contains("1/1 recovered"), "{err}");
            assert!(out.contains("1 endpoint(s)"), "{out}");

            // A source, a refused request, and why.
            let source = json(
                &url,
                &[
                    "source",
                    "create",
                    "--name",
                    "gh",
                    "--type",
                    "github",
                    "--config",
                    r#"{"secret":"s3cret"}"#,
                ],
            );
            let source_id = source["id"].as_str().unwrap().to_owned();
            let ingest_url = source["ingestUrl"].as_str().unwrap().to_owned();
            let refused = tokio::runtime::Handle::current().block_on(async move {
                reqwest::Client::new()
                    .post(ingest_url)
                    .header("x-hub-signature-256", "sha256=00")
                    .body("{}")
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
            assert_eq!(refused, 401);
            let log = table(&url, &["request", "list", "--source", &source_id]);
            assert!(log.contains("rejected"), "{log}");
            let page = json(&url, &["request", "list", "--source", &source_id]);
            let request_id = page["data"][0]["id"].as_str().unwrap().to_owned();
            let shown = table(
                &url,
                &["request", "get", "--source", &source_id, &request_id],
            );
            assert!(
                shown.contains("why") && shown.contains("signature"),
                "{shown}"
            );
            let (code, _, err) = hookline(
                &url,
                &["request", "replay", "--source", &source_id, &request_id],
            );
            assert_eq!(code, 1, "a refused request is not replayed: {err}");
            assert!(err.contains("409") && err.contains("refused"), "{err}");
            let (code, out, err) =
                hookline(&url, &["replay", "--source", &source_id, "--since", &since]);
            assert_eq!(code, 0, "{err}");
            assert!(
                out.contains("replayed 0 request(s)") && out.contains("1 not replayed"),
                "{out}"
            );
            assert!(err.contains("20/20"), "{err}");

            // Exit codes: refused 1, usage 2, unreachable 3.
            let (code, _, err) = hookline(&url, &["app", "get", "nobody"]);
            assert_eq!(code, 1, "{err}");
            assert!(err.contains("404"), "{err}");
            let (code, _, err) = hookline(&url, &["endpoint", "list"]);
            assert_eq!(code, 2, "no --app: {err}");
            let (code, _, err) = hookline("http://127.0.0.1:9", &["app", "list"]);
            assert_eq!(code, 3, "{err}");

            // Deleting.
            let gone = table(&url, &["endpoint", "delete", "--app", "acme", &endpoint_id]);
            assert!(gone.contains("deleted"), "{gone}");
            table(&url, &["source", "delete", &source_id]);
            table(&url, &["app", "delete", "acme"]);
            let (code, _, _) = hookline(&url, &["app", "get", "acme"]);
            assert_eq!(code, 1, "deleted");
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_name_the_server_and_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("profile-cli");
    let server = crate::server::Server::start(&dir.0, &[]).await;
    let file = dir.0.join("config").join("cli.toml");
    let file = file.to_str().unwrap();
    tokio::task::block_in_place(|| {
        let (code, _, err) = run(&["app", "list"], &[], file);
        assert_eq!(code, 2, "no token anywhere: {err}");
        assert!(err.contains("a token is needed"), "{err}");

        let (code, _, err) = run(
            &[
                "profile",
                "set",
                "local",
                "--server",
                &server.url,
                "--token",
                TOKEN,
            ],
            &[],
            file,
        );
        assert_eq!(code, 0, "{err}");
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file holds tokens");
        let (code, _, err) = run(
            &[
                "profile",
                "set",
                "elsewhere",
                "--server",
                "http://127.0.0.1:9",
            ],
            &[],
            file,
        );
        assert_eq!(code, 0, "{err}");

        // The first profile became the default; the list hides tokens.
        let (code, out, _) = run(&["profile", "list"], &[], file);
        assert_eq!(code, 0);
        assert!(
            out.contains("* local") && out.contains("token set"),
            "{out}"
        );
        assert!(
            out.contains("  elsewhere") && out.contains("no token"),
            "{out}"
        );
        assert!(!out.contains(TOKEN), "{out}");

        // The default profile, a named one, and flags over profiles.
        let created = run(
            &["app", "create", "--name", "Acme", "--uid", "acme"],
            &[],
            file,
        );
        assert_eq!(created.0, 0, "{}", created.2);
        let (code, out, _) = run(&["app", "get", "acme", "--json"], &[], file);
        assert_eq!(code, 0);
        let app: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(app["uid"], "acme", "{out}");
        let (code, _, err) = run(&["app", "list", "--profile", "elsewhere"], &[], file);
        assert_eq!(code, 2, "the profile has no token: {err}");
        let (code, _, err) = run(
            &["app", "list", "--profile", "elsewhere", "--token", TOKEN],
            &[],
            file,
        );
        assert_eq!(code, 3, "its server does not answer: {err}");
        let (code, _, err) = run(
            &["app", "list", "--server", "http://127.0.0.1:9"],
            &[],
            file,
        );
        assert_eq!(code, 2, "the profile's token is not sent elsewhere: {err}");
        let (code, _, err) = run(&["app", "list", "--token", "wrong-token"], &[], file);
        assert_eq!(code, 1, "--token wins over the profile's: {err}");
        assert!(err.contains("401"), "{err}");
        let (code, _, err) = run(&["app", "list"], &[("HOOKLINE_PROFILE", "nobody")], file);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("no profile `nobody`"), "{err}");

        let (code, _, _) = run(&["profile", "remove", "local"], &[], file);
        assert_eq!(code, 0);
        let (code, _, err) = run(&["app", "list"], &[], file);
        assert_eq!(code, 2, "no default any more: {err}");
    });
}
