//! The security the design promises, end to end: app tokens expire when their issuer said
//! (on the node's clock, which the tests move), scoped tokens are refused on every route
//! outside their scope, Svix-style JWTs are checked, and an HTTPS-only node neither takes
//! nor delivers to `http://` endpoints. Cases that touch storage run on both backends
//! (PostgreSQL when HOOKLINE_TEST_POSTGRES_URL is set).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookline_core::clock::ManualClock;
use hookline_signature::hmac::{Algorithm, Encoding, HmacRule};
use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Receiver, Server, TOKEN, TempDir, postgres_schema};

/// The backends to run on: SQLite always, PostgreSQL (a fresh schema named after `name`)
/// when the test server is configured. Each entry is the extra environment of its nodes.
fn backends(name: &str) -> Vec<(&'static str, Vec<(String, String)>)> {
    let mut backends = vec![("sqlite", Vec::new())];
    if let Some(url) = postgres_schema(name) {
        backends.push((
            "postgres",
            vec![
                ("HOOKLINE_DATABASE_URL".to_owned(), url),
                ("HOOKLINE_DATABASE_POOL_SIZE".to_owned(), "4".to_owned()),
            ],
        ));
    }
    backends
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A request with `token` (none when `None`); the status and the JSON body (`Null` when
/// there is none). A body that does not end within two seconds (a live stream that was
/// let through) is not read.
async fn call(
    server: &Server,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = tokio::time::timeout(Duration::from_secs(2), response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_refused(answer: &(u16, Value), status: u16, code: &str, context: &str) {
    assert_eq!(answer.0, status, "{context}: {}", answer.1);
    assert_eq!(answer.1["code"], code, "{context}: {}", answer.1);
}

async fn admin(server: &Server, method: Method, path: &str, body: Value) -> Value {
    let (status, out) = call(server, Some(TOKEN), method.clone(), path, Some(&body)).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {out}"
    );
    out
}

// 1. Token expiry.

/// App-portal tokens and source dashboard tokens work until the `expiry` they were
/// issued with, 7 days when none was given, by the node's clock; then they are 401
/// `authentication_failed`. The admin token never expires.
#[tokio::test]
async fn app_and_dashboard_tokens_expire_on_the_servers_clock_on_every_backend() {
    let dir = TempDir::new("token-expiry");
    for (backend, env) in backends("token_expiry") {
        let clock = ManualClock::starting_now();
        let options = hookline::Options {
            clock: clock.clone(),
            ..hookline::Options::default()
        };
        let server = Server::start_with(&dir.0, &pairs(&env), options).await;
        let access = "/api/v1/auth/app-portal-access/customer";
        let hour = admin(
            &server,
            Method::POST,
            access,
            json!({"application": {"name": "Customer"}, "expiry": 3600}),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let week = admin(&server, Method::POST, access, json!({})).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let source = admin(
            &server,
            Method::POST,
            "/ingest/api/v1/source",
            json!({"name": "hooks", "type": "generic-webhook"}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let dashboard = format!("/ingest/api/v1/source/{source}/dashboard");
        let two_hours =
            admin(&server, Method::POST, &dashboard, json!({"expiry": 7200})).await["token"]
                .as_str()
                .unwrap()
                .to_owned();
        let dashboard_week = admin(&server, Method::POST, &dashboard, json!({})).await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        for path in [access, dashboard.as_str()] {
            for expiry in [0, 3599, 604_801] {
                let answer = call(
                    &server,
                    Some(TOKEN),
                    Method::POST,
                    path,
                    Some(&json!({"expiry": expiry})),
                )
                .await;
                assert_eq!(answer.0, 422, "{backend}: {path} expiry {expiry}");
                assert_eq!(answer.1["detail"][0]["loc"], json!(["body", "expiry"]));
            }
        }

        let app_path = "/api/v1/app/customer";
        let source_path = format!("/ingest/api/v1/source/{source}");
        // The token's own routes: answered while it lives, refused once it has expired.
        let works = |token: String, path: String| {
            let server = &server;
            async move {
                let answer = call(server, Some(&token), Method::GET, &path, None).await;
                assert_eq!(answer.0, 200, "{backend}: {path}: {}", answer.1);
            }
        };
        let expired = |token: String, path: String, when: &'static str| {
            let server = &server;
            async move {
                let answer = call(server, Some(&token), Method::GET, &path, None).await;
                assert_refused(
                    &answer,
                    401,
                    "authentication_failed",
                    &format!("{backend}: {when}"),
                );
                assert!(
                    answer.1["detail"].as_str().unwrap().contains("expired"),
                    "{backend}: {}",
                    answer.1
                );
            }
        };

        clock.advance(Duration::from_secs(3599));
        works(hour.clone(), app_path.into()).await;
        clock.advance(Duration::from_secs(1));
        expired(hour.clone(), app_path.into(), "an hour on").await;
        works(week.clone(), app_path.into()).await;
        works(two_hours.clone(), source_path.clone()).await;
        clock.advance(Duration::from_secs(3600));
        expired(two_hours, source_path.clone(), "two hours on").await;
        works(dashboard_week.clone(), source_path.clone()).await;
        clock.advance(Duration::from_secs(604_800 - 7200 - 1));
        works(week.clone(), app_path.into()).await;
        works(dashboard_week.clone(), source_path.clone()).await;
        clock.advance(Duration::from_secs(1));
        expired(week, app_path.into(), "a week on").await;
        expired(dashboard_week, source_path.clone(), "a week on").await;
        let answer = call(&server, Some(TOKEN), Method::GET, app_path, None).await;
        assert_eq!(answer.0, 200, "{backend}: the admin token does not expire");
        server.stop().await.expect("the node stops cleanly");
    }
}

// 2. Scoped tokens on every route.

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Admin tokens only.
    Admin,
    /// Any token of the application the path names.
    App,
    /// Any token of the source the path names (a dashboard token of it).
    Source,
}

/// The ids a route's path is written with.
struct Ids {
    app: String,
    endpoint: String,
    msg: String,
    attempt: String,
    source: String,
    source_endpoint: String,
}

impl Ids {
    fn path(&self, template: &str) -> String {
        template
            .replace("{app}", &self.app)
            .replace("{ep}", &self.endpoint)
            .replace("{msg}", &self.msg)
            .replace("{atmpt}", &self.attempt)
            .replace("{src}", &self.source)
            .replace("{sep}", &self.source_endpoint)
    }
}

/// Every route of `/api/v1` and `/ingest/api/v1` that needs a token, but logout (which
/// ends the walk's token), each with a valid body: what a scoped token may not do is
/// refused whatever the body.
fn routes() -> Vec<(Method, &'static str, Option<Value>, Scope)> {
    use Method as M;
    use Scope::*;
    let endpoint = json!({"url": "https://walk.example/hook"});
    let headers = json!({"headers": {"x-walk": "1"}});
    let event_type = json!({"name": "walk.made", "description": "d"});
    let source = json!({"name": "walked", "type": "generic-webhook"});
    vec![
        (M::GET, "/api/v1/app", None, Admin),
        (M::POST, "/api/v1/app", Some(json!({"name": "walk"})), Admin),
        (M::GET, "/api/v1/app/{app}", None, App),
        (
            M::PUT,
            "/api/v1/app/{app}",
            Some(json!({"name": "w"})),
            Admin,
        ),
        (
            M::PATCH,
            "/api/v1/app/{app}",
            Some(json!({"name": "w"})),
            Admin,
        ),
        (M::DELETE, "/api/v1/app/{app}", None, Admin),
        (M::GET, "/api/v1/app/{app}/endpoint", None, App),
        (
            M::POST,
            "/api/v1/app/{app}/endpoint",
            Some(endpoint.clone()),
            App,
        ),
        (M::GET, "/api/v1/app/{app}/endpoint/{ep}", None, App),
        (
            M::PUT,
            "/api/v1/app/{app}/endpoint/{ep}",
            Some(endpoint.clone()),
            App,
        ),
        (
            M::PATCH,
            "/api/v1/app/{app}/endpoint/{ep}",
            Some(json!({})),
            App,
        ),
        (M::DELETE, "/api/v1/app/{app}/endpoint/{ep}", None, App),
        (M::GET, "/api/v1/app/{app}/endpoint/{ep}/headers", None, App),
        (
            M::PUT,
            "/api/v1/app/{app}/endpoint/{ep}/headers",
            Some(headers.clone()),
            App,
        ),
        (
            M::PATCH,
            "/api/v1/app/{app}/endpoint/{ep}/headers",
            Some(headers.clone()),
            App,
        ),
        (M::GET, "/api/v1/app/{app}/endpoint/{ep}/secret", None, App),
        (
            M::POST,
            "/api/v1/app/{app}/endpoint/{ep}/secret/rotate",
            Some(json!({})),
            App,
        ),
        (
            M::POST,
            "/api/v1/app/{app}/endpoint/{ep}/recover",
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
            App,
        ),
        (
            M::POST,
            "/api/v1/app/{app}/endpoint/{ep}/send-example",
            Some(json!({"eventType": "svix.ping"})),
            Admin,
        ),
        (M::GET, "/api/v1/app/{app}/endpoint/{ep}/stats", None, App),
        (
            M::POST,
            "/api/v1/event-type",
            Some(event_type.clone()),
            Admin,
        ),
        (
            M::PUT,
            "/api/v1/event-type/job.done",
            Some(json!({"description": "d"})),
            Admin,
        ),
        (
            M::PATCH,
            "/api/v1/event-type/job.done",
            Some(json!({"description": "d"})),
            Admin,
        ),
        (M::DELETE, "/api/v1/event-type/job.done", None, Admin),
        (M::GET, "/api/v1/app/{app}/msg", None, App),
        (
            M::POST,
            "/api/v1/app/{app}/msg",
            Some(json!({"eventType": "job.done", "payload": {}})),
            Admin,
        ),
        (M::GET, "/api/v1/app/{app}/msg/{msg}", None, App),
        (
            M::DELETE,
            "/api/v1/app/{app}/msg/{msg}/content",
            None,
            Admin,
        ),
        (M::GET, "/api/v1/app/{app}/msg/stream", None, App),
        (M::GET, "/api/v1/app/{app}/attempt/endpoint/{ep}", None, App),
        (M::GET, "/api/v1/app/{app}/attempt/msg/{msg}", None, App),
        (M::GET, "/api/v1/app/{app}/endpoint/{ep}/msg", None, App),
        (M::GET, "/api/v1/app/{app}/msg/{msg}/endpoint", None, App),
        (
            M::GET,
            "/api/v1/app/{app}/msg/{msg}/attempt/{atmpt}",
            None,
            App,
        ),
        (
            M::DELETE,
            "/api/v1/app/{app}/msg/{msg}/attempt/{atmpt}/content",
            None,
            Admin,
        ),
        (
            M::POST,
            "/api/v1/app/{app}/msg/{msg}/endpoint/{ep}/resend",
            None,
            App,
        ),
        (
            M::POST,
            "/api/v1/auth/app-portal-access/{app}",
            Some(json!({})),
            Admin,
        ),
        (M::GET, "/ingest/api/v1/source", None, Admin),
        (
            M::POST,
            "/ingest/api/v1/source",
            Some(source.clone()),
            Admin,
        ),
        (M::GET, "/ingest/api/v1/source/{src}", None, Source),
        (
            M::PUT,
            "/ingest/api/v1/source/{src}",
            Some(source.clone()),
            Admin,
        ),
        (
            M::PATCH,
            "/ingest/api/v1/source/{src}",
            Some(json!({"name": "ww"})),
            Admin,
        ),
        (M::DELETE, "/ingest/api/v1/source/{src}", None, Admin),
        (
            M::POST,
            "/ingest/api/v1/source/{src}/token/rotate",
            None,
            Admin,
        ),
        (
            M::POST,
            "/ingest/api/v1/source/{src}/dashboard",
            Some(json!({})),
            Admin,
        ),
        (M::GET, "/ingest/api/v1/source/{src}/log", None, Source),
        (M::GET, "/ingest/api/v1/source/{src}/stream", None, Source),
        (M::GET, "/ingest/api/v1/source/{src}/endpoint", None, Source),
        (
            M::POST,
            "/ingest/api/v1/source/{src}/endpoint",
            Some(endpoint.clone()),
            Source,
        ),
        (
            M::GET,
            "/ingest/api/v1/source/{src}/endpoint/{sep}",
            None,
            Source,
        ),
        (
            M::PUT,
            "/ingest/api/v1/source/{src}/endpoint/{sep}",
            Some(endpoint),
            Source,
        ),
        (
            M::PATCH,
            "/ingest/api/v1/source/{src}/endpoint/{sep}",
            Some(json!({})),
            Source,
        ),
        (
            M::DELETE,
            "/ingest/api/v1/source/{src}/endpoint/{sep}",
            None,
            Source,
        ),
        (
            M::GET,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/headers",
            None,
            Source,
        ),
        (
            M::PUT,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/headers",
            Some(headers.clone()),
            Source,
        ),
        (
            M::PATCH,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/headers",
            Some(headers),
            Source,
        ),
        (
            M::GET,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/secret",
            None,
            Source,
        ),
        (
            M::POST,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/secret/rotate",
            Some(json!({})),
            Source,
        ),
        (
            M::GET,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/transformation",
            None,
            Source,
        ),
        (
            M::PATCH,
            "/ingest/api/v1/source/{src}/endpoint/{sep}/transformation",
            Some(json!({"enabled": false})),
            Source,
        ),
    ]
}

/// An application with an endpoint, a message and its attempt; a source with an endpoint.
async fn tenant(server: &Server, name: &str, receiver_url: &str) -> Ids {
    let app = admin(server, Method::POST, "/api/v1/app", json!({"name": name})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = json!({"url": format!("{receiver_url}/{name}")});
    let endpoint = admin(
        server,
        Method::POST,
        &format!("/api/v1/app/{app}/endpoint"),
        url.clone(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let msg = admin(
        server,
        Method::POST,
        &format!("/api/v1/app/{app}/msg"),
        json!({"eventType": "job.done", "payload": {"tenant": name}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attempts = format!("/api/v1/app/{app}/attempt/msg/{msg}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let attempt = loop {
        let page = admin(server, Method::GET, &attempts, Value::Null).await;
        if let Some(id) = page["data"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "{name}: no attempt was made");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let source = admin(
        server,
        Method::POST,
        "/ingest/api/v1/source",
        json!({"name": format!("{name}-source"), "type": "generic-webhook"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source_endpoint = admin(
        server,
        Method::POST,
        &format!("/ingest/api/v1/source/{source}/endpoint"),
        url,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Ids {
        app,
        endpoint,
        msg,
        attempt,
        source,
        source_endpoint,
    }
}

/// Walks every route with an app-portal token and a source dashboard token: each is
/// refused (403 `forbidden`) on every admin-only route, on every route of another
/// application, and on every route of a source that is not its own, while the routes
/// of its own scope answer it.
#[tokio::test]
async fn scoped_tokens_are_refused_on_every_route_outside_their_scope() {
    let dir = TempDir::new("scope-walk");
    let server = Server::start(&dir.0, &[]).await;
    let (_receiver, receiver_url) = Receiver::start().await;
    admin(
        &server,
        Method::POST,
        "/api/v1/event-type",
        json!({"name": "job.done", "description": "done"}),
    )
    .await;
    let own = tenant(&server, "own", &receiver_url).await;
    let other = tenant(&server, "other", &receiver_url).await;
    let app_token = admin(
        &server,
        Method::POST,
        &format!("/api/v1/auth/app-portal-access/{}", own.app),
        json!({}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dashboard_token = admin(
        &server,
        Method::POST,
        &format!("/ingest/api/v1/source/{}/dashboard", own.source),
        json!({}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Each token's own scope answers it: the walk below is not refusing a dead token.
    for path in [
        format!("/api/v1/app/{}", own.app),
        format!("/api/v1/app/{}/endpoint/{}", own.app, own.endpoint),
        format!(
            "/api/v1/app/{}/msg/{}/attempt/{}",
            own.app, own.msg, own.attempt
        ),
        "/api/v1/event-type".to_owned(),
        "/api/v1/event-type/job.done".to_owned(),
    ] {
        let answer = call(&server, Some(&app_token), Method::GET, &path, None).await;
        assert_eq!(answer.0, 200, "app token, own {path}: {}", answer.1);
    }
    for path in [
        format!("/ingest/api/v1/source/{}", own.source),
        format!("/ingest/api/v1/source/{}/log", own.source),
        format!(
            "/ingest/api/v1/source/{}/endpoint/{}",
            own.source, own.source_endpoint
        ),
    ] {
        let answer = call(&server, Some(&dashboard_token), Method::GET, &path, None).await;
        assert_eq!(answer.0, 200, "dashboard token, own {path}: {}", answer.1);
    }

    let mut walked = 0;
    for (who, token) in [
        ("app token", &app_token),
        ("dashboard token", &dashboard_token),
    ] {
        let dashboard = who == "dashboard token";
        for (method, template, body, scope) in routes() {
            // Admin-only routes are refused even on the token's own resources; scoped
            // routes on another tenant's. An app token has no source of its own, and a
            // dashboard token's application is its source's hidden one, so the regular
            // application of its own tenant is another's to it.
            let targets: Vec<&Ids> = match (scope, dashboard) {
                (Scope::Admin, _) => vec![&own],
                (Scope::App, false) => vec![&other],
                (Scope::App, true) => vec![&own, &other],
                (Scope::Source, false) => vec![&own, &other],
                (Scope::Source, true) => vec![&other],
            };
            for ids in targets {
                let path = ids.path(template);
                let answer = call(&server, Some(token), method.clone(), &path, body.as_ref()).await;
                assert_refused(
                    &answer,
                    403,
                    "forbidden",
                    &format!("{who}: {method} {path} ({scope:?})"),
                );
                walked += 1;
            }
        }
    }
    assert!(walked > 100, "walked {walked} route and token pairs");

    // Nothing of the other tenant changed: its endpoint, message and source are intact.
    for path in [
        format!("/api/v1/app/{}/endpoint/{}", other.app, other.endpoint),
        format!("/api/v1/app/{}/msg/{}", other.app, other.msg),
        format!(
            "/ingest/api/v1/source/{}/endpoint/{}",
            other.source, other.source_endpoint
        ),
    ] {
        let answer = call(&server, Some(TOKEN), Method::GET, &path, None).await;
        assert_eq!(answer.0, 200, "{path}: {}", answer.1);
    }
}

// 3. Svix-style JWTs.

const JWT_KEY: &str = "a-jwt-key-of-at-least-32-characters!";

/// A JWT with `header` and `claims`, signed HS256 with `key` (by the HMAC of
/// hookline-signature, not by the code under test).
fn jwt(header: Value, claims: Value, key: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rule = HmacRule::new("x", Algorithm::Sha256, Encoding::Base64, None, [key]).unwrap();
    let padded = base64::engine::general_purpose::STANDARD
        .decode(rule.sign(input.as_bytes()))
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(padded))
}

/// With `HOOKLINE_JWT_SECRET` set, a JWT as the Svix server issues it works (an
/// organization's as an admin, an application's scoped to it); expired, not yet valid,
/// wrongly signed and `alg: none` ones are 401. Without the setting no JWT works.
#[tokio::test]
async fn svix_jwts_work_with_the_configured_key_and_nothing_else_does() {
    let dir = TempDir::new("jwt");
    let clock = ManualClock::starting_now();
    let options = hookline::Options {
        clock: clock.clone(),
        ..hookline::Options::default()
    };
    let server = Server::start_with(&dir.0, &[("HOOKLINE_JWT_SECRET", JWT_KEY)], options).await;
    let now = hookline_core::Clock::unix(clock.as_ref());
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let org = |claims: Value| {
        let mut all = json!({
            "iat": now, "exp": now + 3600, "nbf": now,
            "iss": "svix-server", "sub": "org_23rb8YdGqMT0qIzpgGwdXfHirMu",
        });
        all.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        all
    };

    let valid = jwt(hs256.clone(), org(json!({})), JWT_KEY);
    let (status, created) = call(
        &server,
        Some(&valid),
        Method::POST,
        "/api/v1/app",
        Some(&json!({"name": "by jwt"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let app = created["id"].as_str().unwrap();
    let scoped = jwt(
        hs256.clone(),
        json!({"iat": now, "exp": now + 3600, "iss": "svix-server", "sub": app, "org": "org_1"}),
        JWT_KEY,
    );
    let answer = call(
        &server,
        Some(&scoped),
        Method::GET,
        &format!("/api/v1/app/{app}"),
        None,
    )
    .await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    let answer = call(&server, Some(&scoped), Method::GET, "/api/v1/app", None).await;
    assert_refused(&answer, 403, "forbidden", "an app's JWT is not an admin");
    let answer = call(
        &server,
        Some(&scoped),
        Method::POST,
        "/api/v1/auth/logout",
        None,
    )
    .await;
    assert_refused(&answer, 403, "forbidden", "a JWT cannot be logged out");

    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
        URL_SAFE_NO_PAD.encode(org(json!({})).to_string())
    );
    let refused = [
        (
            "expired",
            jwt(hs256.clone(), org(json!({"exp": now - 1})), JWT_KEY),
        ),
        (
            "expiring now",
            jwt(hs256.clone(), org(json!({"exp": now})), JWT_KEY),
        ),
        (
            "not yet valid",
            jwt(hs256.clone(), org(json!({"nbf": now + 3600})), JWT_KEY),
        ),
        (
            "wrong key",
            jwt(
                hs256.clone(),
                org(json!({})),
                "another-key-of-at-least-32-chars",
            ),
        ),
        ("alg none", unsigned),
        (
            "alg none, signed",
            jwt(json!({"alg": "none"}), org(json!({})), JWT_KEY),
        ),
        (
            "alg HS512",
            jwt(json!({"alg": "HS512"}), org(json!({})), JWT_KEY),
        ),
        (
            "sub not an org",
            jwt(hs256.clone(), org(json!({"sub": "user_1"})), JWT_KEY),
        ),
    ];
    for (case, token) in &refused {
        let answer = call(&server, Some(token), Method::GET, "/api/v1/app", None).await;
        assert_refused(&answer, 401, "authentication_failed", case);
    }
    // The valid token expires on the node's clock too.
    clock.advance(Duration::from_secs(3600));
    let answer = call(&server, Some(&valid), Method::GET, "/api/v1/app", None).await;
    assert_refused(&answer, 401, "authentication_failed", "an hour on");
    server.stop().await.expect("the node stops cleanly");

    let plain = Server::start(&dir.0, &[]).await;
    let valid = jwt(hs256, org(json!({"exp": now + 7200})), JWT_KEY);
    let answer = call(&plain, Some(&valid), Method::GET, "/api/v1/app", None).await;
    assert_refused(&answer, 401, "authentication_failed", "no key configured");
}

// 4. HTTPS only.

/// With `HOOKLINE_HTTPS_ONLY`, creating or changing an endpoint (of an application or a
/// source) to an `http://` URL is a 422 that names the setting, and an `http://` endpoint
/// made before the setting was turned on gets failed attempts that say why, not
/// deliveries.
#[tokio::test]
async fn https_only_refuses_http_endpoints_and_deliveries_to_them_on_every_backend() {
    let dir = TempDir::new("https-only");
    for (backend, env) in backends("https_only") {
        let (receiver, receiver_url) = Receiver::start().await;
        let server = Server::start(&dir.0, &pairs(&env)).await;
        let app = admin(
            &server,
            Method::POST,
            "/api/v1/app",
            json!({"name": "plain"}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let endpoints = format!("/api/v1/app/{app}/endpoint");
        let plain = json!({"url": format!("{receiver_url}/plain")});
        let endpoint = admin(&server, Method::POST, &endpoints, plain.clone()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        server.stop().await.expect("the node stops cleanly");

        let mut strict_env = pairs(&env);
        strict_env.push(("HOOKLINE_HTTPS_ONLY", "true"));
        let server = Server::start(&dir.0, &strict_env).await;
        let source = admin(
            &server,
            Method::POST,
            "/ingest/api/v1/source",
            json!({"name": "strict", "type": "generic-webhook"}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let one = format!("{endpoints}/{endpoint}");
        for (method, path, body) in [
            (Method::POST, endpoints.clone(), plain.clone()),
            (Method::PUT, one.clone(), plain.clone()),
            (Method::PUT, format!("{endpoints}/new-one"), plain.clone()),
            (Method::PATCH, one.clone(), plain.clone()),
            (
                Method::POST,
                format!("/ingest/api/v1/source/{source}/endpoint"),
                json!({"url": "http://forward.example/in"}),
            ),
        ] {
            let (status, out) =
                call(&server, Some(TOKEN), method.clone(), &path, Some(&body)).await;
            assert_eq!(status, 422, "{backend}: {method} {path}: {out}");
            assert_eq!(out["detail"][0]["loc"], json!(["body", "url"]), "{out}");
            let msg = out["detail"][0]["msg"].as_str().unwrap();
            assert!(msg.contains("HOOKLINE_HTTPS_ONLY"), "{backend}: {msg}");
        }
        let secure = json!({"url": "https://secure.example/hook"});
        let (status, out) = call(
            &server,
            Some(TOKEN),
            Method::PATCH,
            &one,
            Some(&json!({"description": "kept"})),
        )
        .await;
        assert_eq!(
            status, 200,
            "{backend}: a change that leaves the URL alone: {out}"
        );
        let other_app =
            admin(&server, Method::POST, "/api/v1/app", json!({"name": "tls"})).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
        admin(
            &server,
            Method::POST,
            &format!("/api/v1/app/{other_app}/endpoint"),
            secure,
        )
        .await;

        // The endpoint from before: its delivery fails at once, saying why.
        let msg = admin(
            &server,
            Method::POST,
            &format!("/api/v1/app/{app}/msg"),
            json!({"eventType": "job.done", "payload": {"n": 1}}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let attempts = format!("/api/v1/app/{app}/attempt/msg/{msg}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let attempt = loop {
            let page = admin(&server, Method::GET, &attempts, Value::Null).await;
            if page["data"][0].is_object() {
                break page["data"][0].clone();
            }
            assert!(Instant::now() < deadline, "{backend}: no attempt was made");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(attempt["status"], 2, "{backend}: failed: {attempt}");
        assert_eq!(attempt["responseStatusCode"], 0, "{backend}: {attempt}");
        let response = attempt["response"].as_str().unwrap_or_default();
        assert!(
            response.contains("HTTPS only") && response.contains("HOOKLINE_HTTPS_ONLY"),
            "{backend}: {response}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            receiver.deliveries().is_empty(),
            "{backend}: nothing was sent in clear text"
        );
        server.stop().await.expect("the node stops cleanly");
    }
}
