//! `hookline serve`: the API and the delivery engine in one process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hookline_core::Store;
use hookline_core::id::random_base62;
use hookline_core::model::Token;
use hookline_core::retry::RetryPolicy;
use hookline_core::store::Migrations;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Role};

/// Run Hookline: the Svix-compatible API and the delivery engine.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hookline serve                                  # SQLite at ./hookline.db, 127.0.0.1:8071
  hookline serve --config hookline.toml
  HOOKLINE_LISTEN=0.0.0.0:8071 HOOKLINE_ALLOWED_SUBNETS=10.0.0.0/8 hookline serve
  hookline migrate && hookline serve --no-migrate --role worker   # a delivery-only node

Settings come from config.default.toml, then --config, then HOOKLINE_* variables.")]
pub struct Args {
    /// A TOML file overriding the defaults (see config.default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// What this node does: `api`, `worker`, or `all` (also `both`; wins over HOOKLINE_ROLE).
    #[arg(long, value_parser = ["api", "worker", "all", "both"])]
    role: Option<String>,
    /// Do not apply pending migrations; refuse to start until `hookline migrate` has.
    #[arg(long)]
    no_migrate: bool,
}

/// Apply the database migrations and exit.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  HOOKLINE_DATABASE_URL=sqlite://hookline.db hookline migrate")]
pub struct MigrateArgs {
    /// A TOML file overriding the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn load(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = std::env::vars().collect();
    Config::load(file, &env)
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = load(args.config.as_deref())?;
    runtime()?.block_on(async {
        open_store(&config, Migrations::Apply).await?;
        println!(
            "migrations applied to {}",
            without_password(&config.database_url)
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = load(args.config.as_deref())?;
    if let Some(role) = &args.role {
        config.role = Role::parse(role)?;
    }
    let migrations = if args.no_migrate {
        Migrations::Require
    } else {
        Migrations::Apply
    };
    init_logging(&config);
    runtime()?.block_on(serve(config, migrations))?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
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
    let url = &config.database_url;
    if url.starts_with("postgres") {
        let store =
            hookline_store_postgres::PostgresStore::connect_with(url, config.pool_size, migrations)
                .await
                .context("cannot connect to PostgreSQL")?;
        let due = store.listen_due();
        return Ok(Opened {
            store: Arc::new(store),
            due: Some(due),
            claimers: 1,
        });
    }
    let store = hookline_store_sqlite::SqliteStore::open_url_with(url, migrations)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    Ok(Opened {
        store: Arc::new(store),
        due: None,
        claimers: 2,
    })
}

/// Stores a freshly generated admin token on first start and prints it once.
async fn ensure_admin_token(store: &dyn Store, configured: bool) -> anyhow::Result<()> {
    if configured || store.has_admin_token().await? {
        return Ok(());
    }
    let token = format!("hlk_{}", random_base62(40));
    // Hashed exactly as the API hashes the tokens it is shown.
    store
        .put_token(&Token {
            hash: hookline_server::auth::token_hash(&token),
            app_id: None,
            created_at: hookline_core::now(),
        })
        .await?;
    eprintln!(
        "\nhookline: admin token (shown once, stored hashed): {token}\n\
         use it as `Authorization: Bearer {token}`\n"
    );
    Ok(())
}

async fn serve(config: Config, migrations: Migrations) -> anyhow::Result<()> {
    let Opened {
        store,
        due,
        claimers,
    } = open_store(&config, migrations).await?;
    if config.role.serves_api() {
        // A worker-only node answers no requests: it has no token to hand out.
        ensure_admin_token(store.as_ref(), config.admin_token.is_some()).await?;
    }

    let wake = Arc::new(tokio::sync::Notify::new());
    let shutdown = CancellationToken::new();
    if let Some(mut due) = due {
        let wake = Arc::clone(&wake);
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            while let Ok(()) | Err(RecvError::Lagged(_)) = due.recv().await {
                wake.notify_one();
            }
        });
    }

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
        operational: config
            .operational
            .as_ref()
            .map(|ops| hookline_engine::OperationalEndpoint {
                url: ops.url.clone(),
                secret: ops.secret.clone(),
            }),
        node_id: config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", random_base62(8))),
        claimers,
        ..hookline_engine::EngineConfig::default()
    };
    engine_config
        .validate()
        .context("invalid delivery configuration")?;
    let node_id = engine_config.node_id.clone();
    let database = without_password(&config.database_url);
    let engine_task = config.role.delivers().then(|| {
        let engine =
            hookline_engine::Engine::new(Arc::clone(&store), engine_config, Arc::clone(&wake));
        tokio::spawn(engine.run(shutdown.clone()))
    });

    tokio::spawn(sweep_expired(
        Arc::clone(&store),
        config.ingest.log_retention,
        shutdown.clone(),
    ));

    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests, finishing deliveries in flight");
        signal_shutdown.cancel();
    });

    if config.role.serves_api() {
        let state = hookline_server::AppState::new(
            store,
            wake,
            Arc::new(hookline_server::ApiConfig {
                admin_token: config.admin_token.clone(),
                public_url: config.public_url.clone(),
                max_payload_bytes: config.max_payload_bytes,
                idempotency_ttl: std::time::Duration::from_secs(12 * 3600),
            }),
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(listen = %config.listen, %database, role = ?config.role, %node_id, "hookline serving");
        axum::serve(listener, hookline_server::app(state))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("server failed")?;
    } else {
        tracing::info!(%database, %node_id, "hookline delivering (worker role)");
        shutdown.cancelled().await;
    }
    shutdown.cancel();
    if let Some(engine_task) = engine_task {
        engine_task.await.context("delivery engine panicked")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `url` fit for a log line: a password, in the user info or as a `password=` parameter,
/// becomes `***`.
fn without_password(url: &str) -> String {
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

/// Deletes what has expired, every minute (more often when the request log's retention is
/// shorter): received requests older than `retention`, and idempotency records past their
/// expiry. Every node runs it; the stores let one node at a time do the work.
async fn sweep_expired(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    let every = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = hookline_core::now();
        match store.purge_ingest_requests(now - retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "request log: removed requests past retention"),
            Err(error) => tracing::warn!(%error, "request log: retention sweep failed; retrying"),
        }
        match store.purge_idempotency(now).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "idempotency: removed expired records"),
            Err(error) => tracing::warn!(%error, "idempotency: sweep failed; retrying"),
        }
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
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
