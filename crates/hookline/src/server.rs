//! Running a node: the store, the delivery engine and the API, wired together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use hookline_core::id::random_base62;
use hookline_core::ingest::RefusedCap;
use hookline_core::model::Token;
use hookline_core::retry::RetryPolicy;
use hookline_core::sealed::{Reseal, ResealBatch, Resealable};
use hookline_core::store::{DeliveryQueue, Migrations};
use hookline_core::{SharedClock, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// What a run needs besides its configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Apply pending migrations at start (`hookline serve`), or refuse to start until
    /// `hookline migrate` has (`--no-migrate`).
    pub migrations: Migrations,
    /// Where the node reads the time: the system clock, or a test's.
    pub clock: SharedClock,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            migrations: Migrations::Apply,
            clock: hookline_core::clock::system(),
        }
    }
}

/// Applies the database's pending migrations; returns the database URL fit for a log.
pub async fn migrate(config: &Config) -> anyhow::Result<String> {
    open_store(config, Migrations::Apply).await?;
    Ok(without_password(&config.database_url))
}

/// Runs a Hookline node as `config` says until `shutdown` is cancelled: opens the store
/// (applying migrations unless `options` says not to), starts the delivery engine if the
/// node delivers, and serves the API on `listener` if it answers requests, else only
/// `/healthz` and `/metrics` (on `config.listen` when no listener is given; a worker that
/// cannot bind it delivers all the same). On shutdown it stops taking requests, lets
/// deliveries in flight finish, and returns.
///
/// `hookline serve` calls this; so do the end-to-end tests, on a listener of port 0.
pub async fn run(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, listener, shutdown, Options::default()).await
}

/// [`run`], with [`Options`] that a configuration file does not set.
pub async fn run_with(
    config: Config,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
    options: Options,
) -> anyhow::Result<()> {
    let Options { migrations, clock } = options;
    let Opened {
        store,
        due,
        claimers,
    } = open_store(&config, migrations).await?;
    if config.role.serves_api() {
        // A worker-only node answers only probes and metrics: it has no token to hand out.
        let configured = config.admin_token.is_some();
        ensure_admin_token(store.as_ref(), configured, clock.now()).await?;
    }

    let wake = Arc::new(tokio::sync::Notify::new());
    if let Some(mut due) = due {
        let wake = Arc::clone(&wake);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            while let Ok(()) | Err(RecvError::Lagged(_)) = due.recv().await {
                wake.notify_one();
            }
        });
    }

    // Operational events are messages of an application of their own, delivered by the
    // engine from the same durable outbox as any webhook: its endpoint follows the
    // configuration, set at every start (idempotent, so every node may).
    let operational = match &config.operational {
        Some(ops) => {
            let endpoint = hookline_engine::OperationalEndpoint {
                url: ops.url.clone(),
                secret: ops.secret.clone(),
            };
            let operational = hookline_engine::provision(
                store.as_ref(),
                &endpoint,
                Some(config.payload_retention),
                clock.now(),
            )
            .await
            .context("HOOKLINE_OPERATIONAL_URL / operational")?;
            Some(operational)
        }
        None => None,
    };

    let engine_config = hookline_engine::EngineConfig {
        attempt_timeout: config.delivery.attempt_timeout,
        retry: RetryPolicy::new(config.delivery.retry_schedule.clone()),
        allowed_subnets: config
            .delivery
            .allowed_subnets
            .iter()
            .map(|cidr| cidr.parse())
            .collect::<Result<_, _>>()
            .context("HOOKLINE_ALLOWED_SUBNETS / allowed_subnets")?,
        concurrency: config.delivery.concurrency,
        max_in_flight_per_endpoint: config.delivery.max_in_flight_per_endpoint,
        disable_after: config.delivery.disable_after,
        poll_interval: config.delivery.poll_interval,
        operational,
        node_id: config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", random_base62(8))),
        claimers,
        https_only: config.delivery.https_only,
        svix_headers: config.delivery.svix_headers,
        ..hookline_engine::EngineConfig::default()
    };
    engine_config
        .validate()
        .context("invalid delivery configuration")?;
    let node_id = engine_config.node_id.clone();
    let database = without_password(&config.database_url);
    let mut handoff = None;
    let engine_task = config.role.delivers().then(|| {
        let queue: Arc<dyn DeliveryQueue> = store.clone();
        let engine = hookline_engine::Engine::new(
            queue,
            engine_config,
            Arc::clone(&wake),
            Arc::clone(&clock),
        );
        handoff = Some(engine.handoff());
        tokio::spawn(engine.run(shutdown.clone()))
    });

    // The job tracker: every node registers and observes jobs; nodes that deliver poll.
    let tracker = Arc::new(hookline_engine::track::Tracker::new(
        store.clone(),
        store.clone(),
        hookline_engine::track::TrackConfig {
            access: config.jobs.access.clone(),
            request_timeout: config.jobs.request_timeout,
            concurrency: config.jobs.poll_concurrency,
            unmatched_retention: config.jobs.unmatched_retention,
            payload_retention: Some(config.payload_retention),
            node_id: node_id.clone(),
            ..hookline_engine::track::TrackConfig::default()
        },
        Arc::clone(&wake),
        Arc::clone(&clock),
    ));
    let tracker_task = config
        .role
        .delivers()
        .then(|| tokio::spawn(Arc::clone(&tracker).run(shutdown.clone())));

    tokio::spawn(sweep_expired(
        Arc::clone(&store),
        config.ingest.log_retention,
        config.payload_retention,
        Arc::clone(&clock),
        shutdown.clone(),
    ));

    {
        let state = hookline_server::AppState::new(
            store,
            wake,
            Arc::new(hookline_server::ApiConfig {
                admin_token: config.admin_token.clone(),
                public_url: config.public_url.clone(),
                max_payload_bytes: config.max_payload_bytes,
                idempotency_ttl: std::time::Duration::from_secs(12 * 3600),
                jwt_secret: config.jwt_secret.clone(),
                https_only: config.delivery.https_only,
                keep: hookline_server::Keep {
                    refused_body_bytes: config.ingest.refused_body_bytes,
                    refused_cap: Some(RefusedCap {
                        per_window: config.ingest.refused_per_minute,
                        window: Duration::from_secs(60),
                    }),
                    payload_retention: config.payload_retention,
                },
                google_jwks_url: config.ingest.google_jwks_url.clone(),
                console_dir: std::env::var_os("HOOKLINE_CONSOLE_DIR").map(Into::into),
                metrics_token: config.metrics_token.clone(),
            }),
            clock,
        )
        .with_tracker(tracker);
        let state = match handoff {
            Some(handoff) => state.with_handoff(handoff),
            None => state,
        };
        let listener = match listener {
            Some(listener) => Some(listener),
            None => match TcpListener::bind(config.listen).await {
                Ok(listener) => Some(listener),
                Err(error) if config.role.serves_api() => {
                    return Err(error)
                        .with_context(|| format!("cannot listen on {}", config.listen));
                }
                // A worker beside an API node on the same address still delivers; only its
                // probes and metrics are missing, which its log says.
                Err(error) => {
                    tracing::warn!(listen = %config.listen, %error, "cannot serve /healthz and /metrics");
                    None
                }
            },
        };
        match listener {
            Some(listener) => {
                let listen = listener
                    .local_addr()
                    .context("the listener has no address")?;
                let app = if config.role.serves_api() {
                    tracing::info!(%listen, %database, role = ?config.role, %node_id, "hookline serving");
                    hookline_server::app(state)
                } else {
                    tracing::info!(
                        %listen, %database, %node_id,
                        "hookline delivering (worker role: /healthz and /metrics only)"
                    );
                    hookline_server::operations(state)
                };
                let listener = hookline_server::listener::CheckedListener(listener);
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
                    .context("server failed")?;
            }
            None => {
                tracing::info!(%database, %node_id, "hookline delivering (worker role)");
                shutdown.cancelled().await;
            }
        }
    }
    shutdown.cancel();
    if let Some(engine_task) = engine_task {
        engine_task.await.context("delivery engine panicked")?;
    }
    if let Some(tracker_task) = tracker_task {
        tracker_task.await.context("job tracker panicked")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The store for `url`, and for PostgreSQL the stream of "new work is due" notifications
/// that wakes this node's engine when another node queues work.
struct Opened {
    store: Arc<dyn Store>,
    due: Option<tokio::sync::broadcast::Receiver<()>>,
    /// The engine's claim loops. SQLite: two, as a claim waits for a group commit that it
    /// shares with every other write. PostgreSQL: one per node, since the nodes already
    /// claim side by side and more claimers only contend for the same rows (measured:
    /// three nodes deliver about a fifth less with two each).
    claimers: usize,
}

async fn open_store(config: &Config, migrations: Migrations) -> anyhow::Result<Opened> {
    let (store, due, claimers) = match open_backend(config, migrations).await? {
        Backend::Postgres(store) => {
            let due = store.listen_due();
            (Arc::new(store) as Arc<dyn Store>, Some(due), 1)
        }
        Backend::Sqlite(store) => (Arc::new(store) as Arc<dyn Store>, None, 2),
    };
    Ok(Opened {
        store,
        due,
        claimers,
    })
}

/// The store `config` names, of its own type, opened with the main keys' sealer.
pub(crate) enum Backend {
    Sqlite(hookline_store_sqlite::SqliteStore),
    Postgres(hookline_store_postgres::PostgresStore),
}

pub(crate) async fn open_backend(
    config: &Config,
    migrations: Migrations,
) -> anyhow::Result<Backend> {
    let url = &config.database_url;
    let sealer = config.main_keys.sealer()?;
    if let Some(id) = sealer.current_key_id() {
        tracing::info!(main_key = id, "secrets are sealed at rest");
    }
    if url.starts_with("postgres") {
        let store = hookline_store_postgres::PostgresStore::connect_sealed(
            url,
            config.pool_size,
            migrations,
            sealer,
        )
        .await
        .context("cannot connect to PostgreSQL")?;
        return Ok(Backend::Postgres(store));
    }
    let store = hookline_store_sqlite::SqliteStore::open_url_sealed(url, migrations, sealer)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    Ok(Backend::Sqlite(store))
}

/// What `hookline rekey` did: rows read and rows re-sealed, of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rekeyed {
    pub endpoints_read: usize,
    pub endpoints_resealed: usize,
    pub sources_read: usize,
    pub sources_resealed: usize,
}

/// Re-seals every endpoint's secrets and every source's config under the current main key
/// (or writes them in plaintext when only previous keys are configured), `batch` rows at
/// a time, reading what the current key, a previous one, or no key (plaintext) wrote.
/// `progress` hears of each batch. Once it returns, the previous keys may be dropped.
///
/// The database must be migrated already. With SQLite, stop the server first (the file
/// serves one process); with PostgreSQL it may run while nodes serve, each batch being
/// one transaction that locks its rows, provided every node already has the new key.
pub async fn rekey(
    config: &Config,
    batch: usize,
    mut progress: impl FnMut(Resealable, &ResealBatch),
) -> anyhow::Result<Rekeyed> {
    let sealer = config.main_keys.sealer()?;
    if !sealer.has_keys() {
        anyhow::bail!(
            "no main key is configured: set HOOKLINE_MAIN_KEY (main_key) to the new key, and \
             HOOKLINE_PREVIOUS_MAIN_KEYS (previous_main_keys) to the keys it replaces"
        );
    }
    if batch == 0 {
        anyhow::bail!("the batch size must be at least 1");
    }
    let store: Box<dyn Reseal> = match open_backend(config, Migrations::Require).await? {
        Backend::Sqlite(store) => Box::new(store),
        Backend::Postgres(store) => Box::new(store),
    };
    let mut done = Rekeyed::default();
    for what in [Resealable::Endpoints, Resealable::Sources] {
        let mut after = None;
        loop {
            let step = store.reseal(what, after, batch).await.with_context(|| {
                format!(
                    "cannot re-seal {}",
                    match what {
                        Resealable::Endpoints => "endpoint secrets",
                        Resealable::Sources => "source configs",
                    }
                )
            })?;
            let (read, resealed) = match what {
                Resealable::Endpoints => (&mut done.endpoints_read, &mut done.endpoints_resealed),
                Resealable::Sources => (&mut done.sources_read, &mut done.sources_resealed),
            };
            *read += step.read;
            *resealed += step.resealed;
            progress(what, &step);
            match step.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(done)
}

/// Stores a freshly generated admin token on first start and prints it once.
async fn ensure_admin_token(
    store: &dyn Store,
    configured: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if configured || store.has_admin_token().await? {
        return Ok(());
    }
    let token = format!("hlk_{}", random_base62(40));
    // Hashed exactly as the API hashes the tokens it is shown.
    store
        .put_token(&Token {
            hash: hookline_server::auth::token_hash(&token),
            app_id: None,
            created_at: now,
            // The operator's token: it lasts until the operator replaces it.
            expires_at: None,
        })
        .await?;
    eprintln!(
        "\nhookline: admin token (shown once, stored hashed): {token}\n\
         use it as `Authorization: Bearer {token}`\n"
    );
    Ok(())
}

/// `url` fit for a log line: a password, in the user info or as a `password=` parameter,
/// becomes `***`.
pub(crate) fn without_password(url: &str) -> String {
    let mut url = url.to_owned();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let authority_end = url[start..]
            .find(['/', '?'])
            .map_or(url.len(), |i| start + i);
        if let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i)
            && let Some(colon) = url[start..at].find(':').map(|i| start + i)
        {
            url.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(query) = url.find('?') {
        let (base, params) = url.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        url = format!("{base}{}", params.join("&"));
    }
    url
}

/// Deletes what has expired, every minute (more often when a retention is shorter):
/// received requests older than `retention`, message payloads past their expiry, and
/// idempotency records past theirs. Every node runs it; the stores let one node at a
/// time do the work.
async fn sweep_expired(
    store: Arc<dyn Store>,
    retention: Duration,
    payload_retention: Duration,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    let every = (retention.min(payload_retention) / 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = clock.now();
        match store.purge_ingest_requests(now - retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "request log: removed requests past retention"),
            Err(error) => tracing::warn!(%error, "request log: retention sweep failed; retrying"),
        }
        match store.expire_payloads(now).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "messages: removed payloads past retention"),
            Err(error) => tracing::warn!(%error, "messages: payload sweep failed; retrying"),
        }
        match store.purge_idempotency(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "idempotency: removed expired records"),
            Err(error) => tracing::warn!(%error, "idempotency: sweep failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn logged_database_urls_hide_passwords() {
        let cases = [
            ("sqlite://hookline.db", "sqlite://hookline.db"),
            (
                "postgres://hook:s3cr@t@db.internal:5432/hookline",
                "postgres://hook:***@db.internal:5432/hookline",
            ),
            (
                "postgres://hook@db/hookline?sslmode=disable&password=s3cret",
                "postgres://hook@db/hookline?sslmode=disable&password=***",
            ),
            (
                "postgres://db/hookline?user=x&PASSWORD=p",
                "postgres://db/hookline?user=x&PASSWORD=***",
            ),
        ];
        for (url, logged) in cases {
            assert_eq!(without_password(url), logged, "{url}");
        }
    }
}
