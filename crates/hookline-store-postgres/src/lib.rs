//! Hookline's shared storage: PostgreSQL behind every role trait of [`hookline_core::store`]
//! (`ResourceStore`, `MessageStore`, `DeliveryQueue`, `IngestStore`, `TokenStore`,
//! `IdempotencyStore`), which together make a [`Store`](hookline_core::Store), for
//! deployments where several nodes serve one queue. The SQL is in `queries`, one file per
//! role.
//!
//! The behaviour is the SQLite store's, query for query; what changes is how nodes share
//! the work. Each operation runs on a connection from a [`deadpool_postgres`] pool, in a
//! transaction when it writes more than one statement, and returns only after the commit.
//! Due deliveries are claimed with one `UPDATE … WHERE (msg_id, endpoint_id) IN (SELECT …
//! FOR UPDATE OF destination SKIP LOCKED) RETURNING …`: nodes claiming at the same moment
//! skip each other's rows instead of waiting on them or taking them twice, and a lease that
//! expires makes its delivery due again.
//!
//! An idle node learns of new work through `LISTEN/NOTIFY` rather than by polling: every
//! write that queues due work wakes this node's workers and, once it has committed,
//! notifies `hookline_due` for the others; [`PostgresStore::listen_due`] hands out
//! receivers of both, the notifications through one dedicated listening connection (see
//! the `listen` module for why the notification has a transaction of its own, and for
//! reconnects).
//!
//! Received requests are numbered per source in commit order: the number comes from a
//! counter on the source's row, which their group commit locks with its first statement
//! and writes back before it commits, so that the row lock orders the commits and a live
//! stream reading `seq > cursor` never skips one. A request's dedupe check runs once that
//! lock is held, so it finds any request with the same key that an earlier commit held.
//!
//! Migrations are the crate's own list, recorded in `hookline_migrations` and applied under
//! a transaction-scoped advisory lock, so nodes starting together do not race. A store can
//! live in a schema of its own ([`PostgresStore::connect_with_schema`]), which is how the
//! tests stay isolated on one database.
//!
//! Errors are classified in one place, the `error` module, by SQLSTATE and driver error
//! kind: a unique violation is a conflict, a lost connection is `Unavailable` (retry).
//!
//! Secrets are sealed at rest by the [`Sealer`] the store is opened with
//! ([`PostgresStore::connect_sealed`]), as in the embedded store: endpoint secrets and the
//! secrets of source configs are sealed as written and opened as read (`rows`), and
//! [`Reseal`] re-seals what is stored under the current key (`hookline rekey`, which may
//! run while nodes serve: each batch locks its rows).
//!
//! This crate knows nothing of HTTP or of the engine; it only stores.

mod error;
mod group;
mod listen;
mod queries;
mod rows;
mod schema;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use hookline_core::model::EndpointSecret;
use hookline_core::sealed::{Reseal, ResealBatch, Resealable, Sealer};
use hookline_core::store::{Migrations, schema_mismatch};
use hookline_core::{Error, Result};
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_postgres::types::Json;

use crate::listen::{Announcer, Listener};

/// How long to wait for the server to accept a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a free pooled connection before giving up as unavailable.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle time after which the listening connection's socket is probed, so that a peer that
/// vanished without closing is noticed.
const LISTEN_KEEPALIVE: Duration = Duration::from_secs(30);
/// The most connections the queue's pool takes of a node's: this node's claim loop (with
/// its next due time), outcome recorder, wake-ups and a release. It takes a quarter of
/// them, from one to this many, so that a node keeps to its `pool_size` (with at least
/// one connection for each pool).
const QUEUE_POOL_MOST: usize = 4;
/// The queue's connections' settings.
///
/// Their commits do not wait for the WAL flush: a lease, a release or a wake-up lost in a
/// crash loses nothing (the delivery is made again, at least once, or when its lease
/// ends; a woken node looks for all that is due), and the next commit that waits for the
/// flush flushes them with it. An outcome, which must be on disk, sets its transaction's
/// `synchronous_commit` back to the other connections' ([`Inner::durable_commit`]).
///
/// Their statements are planned as index lookups. Each of them finds its rows by key or
/// reads the head of the due index up to a limit, which index scans and nested loops do
/// at every size of the tables; but PostgreSQL keeps a prepared statement's generic plan
/// for as long as the connection lives, made when it was executed the fifth time and
/// priced on the tables' statistics then. Made while the tables were nearly empty, or
/// never analyzed (autovacuum off), a claim's plan joined the due rows to every message
/// and endpoint by hashing the whole tables, and the outcome's update scanned the whole
/// `destination` table, at every execution however large they grew. With those plans
/// ruled out, the generic plan is always taken (`plan_cache_mode`): the outcome's update
/// of failing endpoints was otherwise planned afresh at every execution, 122 µs of the
/// server's CPU each time, six times what it took to run.
const QUEUE_OPTIONS: &str = concat!(
    "-c synchronous_commit=off",
    " -c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off",
    " -c plan_cache_mode=force_generic_plan"
);
/// First key of the advisory lock that serialises migrations; the second is the schema's.
const MIGRATION_LOCK: i32 = 0x686b_6c6e; // "hkln"

/// The PostgreSQL store. Cheap to clone; all clones share the pool and the listener.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The delivery queue's connections (claims, outcomes, releases, wake-ups), made
    /// with settings of their own (see [`QUEUE_OPTIONS`]) and taken from the node's
    /// `pool_size` (see [`QUEUE_POOL_MOST`]).
    queue: Pool,
    /// `SET LOCAL synchronous_commit = …` to what the other connections have (the
    /// server's, database's or role's setting): the queue's transactions that must wait
    /// for the flush start with it.
    durable_commit: String,
    /// The schema given to [`PostgresStore::connect_with_schema`], if any.
    schema: Option<String>,
    /// The schema the tables live in, as `current_schema()` names it.
    current_schema: String,
    /// How the listening connection connects.
    listen_config: tokio_postgres::Config,
    /// Wakes this node's workers: fed by [`Inner::announcer`] and by the listener.
    due: broadcast::Sender<()>,
    announcer: Announcer,
    listener: Mutex<Option<Listener>>,
    /// Seals secrets as they are written and opens them as they are read.
    sealer: Sealer,
    /// Gather message creates, logged ingest requests and the job tracker's writes into
    /// group commits.
    creates: group::Committer<hookline_core::store::NewMessage>,
    ingests: group::Committer<hookline_core::ingest::NewIngestRequest>,
    jobs: group::Committer<queries::jobs::JobWrite>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection settings may hold a password; the pool's status is what helps.
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.current_schema)
            .field("pool", &self.inner.pool.status())
            .finish_non_exhaustive()
    }
}

/// The six storage roles are implemented by topic in `queries/`.
impl hookline_core::Store for PostgresStore {
    /// Both pools together: the node's `pool_size`.
    fn pool_status(&self) -> Option<hookline_core::metrics::PoolStatus> {
        let (main, queue) = (self.inner.pool.status(), self.inner.queue.status());
        Some(hookline_core::metrics::PoolStatus {
            in_use: (main.size - main.available + queue.size - queue.available) as u64,
            idle: (main.available + queue.available) as u64,
            max: (main.max_size + queue.max_size) as u64,
        })
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db?…`, or the
    /// key-value form) with at most `pool_size` connections, and applies migrations.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self> {
        Self::open(url, None, pool_size, Migrations::Apply, Sealer::none()).await
    }

    /// [`PostgresStore::connect`], doing `migrations` about pending migrations.
    pub async fn connect_with(url: &str, pool_size: usize, migrations: Migrations) -> Result<Self> {
        Self::open(url, None, pool_size, migrations, Sealer::none()).await
    }

    /// [`PostgresStore::connect_with`], with secrets sealed at rest by `sealer`.
    pub async fn connect_sealed(
        url: &str,
        pool_size: usize,
        migrations: Migrations,
        sealer: Sealer,
    ) -> Result<Self> {
        Self::open(url, None, pool_size, migrations, sealer).await
    }

    /// Like [`PostgresStore::connect`], with every connection's `search_path` set to
    /// `schema`, which is created if missing. The name must be a plain lowercase
    /// identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub async fn connect_with_schema(url: &str, schema: &str, pool_size: usize) -> Result<Self> {
        Self::connect_with_schema_sealed(url, schema, pool_size, Sealer::none()).await
    }

    /// [`PostgresStore::connect_with_schema`], with secrets sealed at rest by `sealer`.
    pub async fn connect_with_schema_sealed(
        url: &str,
        schema: &str,
        pool_size: usize,
        sealer: Sealer,
    ) -> Result<Self> {
        if !is_plain_identifier(schema) {
            return Err(Error::validation(
                &["schema"],
                "a schema name is lowercase letters, digits and underscores, not starting \
                 with a digit, at most 63 bytes",
            ));
        }
        Self::open(url, Some(schema), pool_size, Migrations::Apply, sealer).await
    }

    async fn open(
        url: &str,
        schema: Option<&str>,
        pool_size: usize,
        migrations: Migrations,
        sealer: Sealer,
    ) -> Result<Self> {
        if pool_size == 0 {
            return Err(Error::validation(&["pool_size"], "must be at least 1"));
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| {
            Error::validation(&["database_url"], format!("invalid postgres url: {error}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if let Some(schema) = schema {
            // A startup option, so it holds for every connection the pool ever opens.
            add_option(&mut config, &format!("-c search_path={schema}"));
        }
        let mut listen_config = config.clone();
        listen_config.keepalives_idle(LISTEN_KEEPALIVE);
        let mut queue_config = config.clone();
        add_option(&mut queue_config, QUEUE_OPTIONS);
        if config.get_application_name().is_none() {
            config.application_name("hookline");
            listen_config.application_name("hookline-listen");
            queue_config.application_name("hookline-queue");
        }

        let queue_size = (pool_size / 4).clamp(1, QUEUE_POOL_MOST);
        let pool = build_pool(config, pool_size.saturating_sub(queue_size).max(1))?;
        let queue = build_pool(queue_config, queue_size)?;
        let current_schema = migrate(&pool, schema, migrations).await?;
        let durable_commit = durable_commit(&pool).await?;
        let due = listen::channel();
        let announcer = Announcer::start(queue.clone(), due.clone());
        let creates = group::Committer::start(pool.clone(), announcer.clone());
        let ingests = group::Committer::start(pool.clone(), announcer.clone());
        let jobs = group::Committer::start(pool.clone(), announcer.clone());
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                queue,
                durable_commit,
                schema: schema.map(str::to_owned),
                current_schema,
                listen_config,
                due,
                announcer,
                listener: Mutex::new(None),
                sealer,
                creates,
                ingests,
                jobs,
            }),
        })
    }

    /// Applies the migrations that have not run yet. [`PostgresStore::connect`] already
    /// does; this is for tools that want to be explicit about it.
    pub async fn migrate(&self) -> Result<()> {
        migrate(
            &self.inner.pool,
            self.inner.schema.as_deref(),
            Migrations::Apply,
        )
        .await?;
        Ok(())
    }

    /// A receiver woken (with `()`) whenever due work has been committed, by this node or
    /// any other, and once after each (re)connection of the listener. Treat
    /// `RecvError::Lagged` as a wake-up too; `RecvError::Closed` comes only once every
    /// clone of the store is gone.
    ///
    /// The first call starts the listening task, so it must be made within a Tokio
    /// runtime.
    pub fn listen_due(&self) -> broadcast::Receiver<()> {
        let mut listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listener.get_or_insert_with(|| {
            Listener::spawn(
                self.inner.listen_config.clone(),
                self.inner.current_schema.clone(),
                self.inner.due.clone(),
            )
        });
        self.inner.due.subscribe()
    }

    /// Closes the pool: requests that wait for a connection, and all later ones, fail as
    /// unavailable. Connections in use finish their work.
    pub fn close(&self) {
        self.inner.pool.close();
        self.inner.queue.close();
        // Dropping the listener stops its task.
        let listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(listener);
    }

    /// What seals and opens this store's secrets.
    pub fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// Says that due work was committed (see [`Announcer::announce`]).
    fn announce_due(&self) {
        self.inner.announcer.announce();
    }

    fn creates(&self) -> &group::Committer<hookline_core::store::NewMessage> {
        &self.inner.creates
    }

    fn ingests(&self) -> &group::Committer<hookline_core::ingest::NewIngestRequest> {
        &self.inner.ingests
    }

    fn job_writes(&self) -> &group::Committer<queries::jobs::JobWrite> {
        &self.inner.jobs
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(error::pool)
    }

    /// Makes the commit of `tx`, on a connection of the queue's pool, wait for the flush
    /// as the other connections' commits do.
    async fn durable(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<()> {
        tx.batch_execute(&self.inner.durable_commit)
            .await
            .map_err(error::storage)
    }

    /// A connection of the queue's pool (see [`QUEUE_OPTIONS`]).
    async fn queue_client(&self) -> Result<deadpool_postgres::Object> {
        self.inner.queue.get().await.map_err(error::pool)
    }
}

/// The statement that makes a queue transaction's commit as durable as any other (see
/// [`Inner::durable_commit`]).
async fn durable_commit(pool: &Pool) -> Result<String> {
    let db = pool.get().await.map_err(error::pool)?;
    let setting: String = db
        .query_one("SELECT current_setting('synchronous_commit')", &[])
        .await
        .map_err(error::storage)?
        .get(0);
    Ok(format!(
        "SET LOCAL synchronous_commit = '{}'",
        setting.replace('\'', "''")
    ))
}

/// Appends a startup option (`-c name=value`) to those `config` has.
fn add_option(config: &mut tokio_postgres::Config, option: &str) {
    let options = match config.get_options() {
        Some(options) => format!("{options} {option}"),
        None => option.to_owned(),
    };
    config.options(options);
}

/// A pool of at most `size` connections made from `config`.
fn build_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection is checked for closure when taken from the pool; one that
            // broke since fails its query as `Unavailable` and is then discarded.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(Error::storage)
}

/// A rotation's batch: the rows of `what` after `after`, locked (`FOR UPDATE`), re-sealed
/// and committed in one transaction, so that no write of another node comes between the
/// read and the update of a row.
#[async_trait::async_trait]
impl Reseal for PostgresStore {
    async fn reseal(
        &self,
        what: Resealable,
        after: Option<String>,
        limit: usize,
    ) -> Result<ResealBatch> {
        let sealer = self.sealer();
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(error::storage)?;
        let (select, update) = match what {
            Resealable::Endpoints => (
                "SELECT id, secrets FROM endpoint WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
                "UPDATE endpoint SET secrets = $2 WHERE id = $1",
            ),
            Resealable::Sources => (
                "SELECT id, config FROM source WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
                "UPDATE source SET config = $2 WHERE id = $1",
            ),
        };
        let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
        let stored = tx
            .query(select, &[&after.unwrap_or_default(), &limit_param])
            .await
            .map_err(error::storage)?;
        let mut batch = ResealBatch {
            read: stored.len(),
            resealed: 0,
            next: None,
        };
        for row in &stored {
            let id: String = row.try_get(0).map_err(error::storage)?;
            let named =
                |error: Error| Error::storage(std::io::Error::other(format!("{id}: {error}")));
            let changed = match what {
                Resealable::Endpoints => {
                    let value: Json<Vec<EndpointSecret>> =
                        row.try_get(1).map_err(error::storage)?;
                    match rows::resealed_secrets(sealer, value.0).map_err(named)? {
                        Some(resealed) => tx.execute(update, &[&id, &resealed]).await,
                        None => Ok(0),
                    }
                }
                Resealable::Sources => {
                    let value: serde_json::Value = row.try_get(1).map_err(error::storage)?;
                    match rows::resealed_config(sealer, value).map_err(named)? {
                        Some(resealed) => tx.execute(update, &[&id, &resealed]).await,
                        None => Ok(0),
                    }
                }
            }
            .map_err(error::storage)?;
            batch.resealed += usize::try_from(changed).unwrap_or(0);
            if stored.len() == limit {
                batch.next = Some(id);
            }
        }
        tx.commit().await.map_err(error::storage)?;
        Ok(batch)
    }
}

/// `[a-z_][a-z0-9_]*`, short enough not to be truncated: safe to splice into SQL and into
/// a startup option without quoting.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Creates `schema` if given, applies the missing migrations, and returns the name of the
/// schema the tables live in. Everything happens in one transaction holding an advisory
/// lock keyed on the schema: concurrent callers wait, then find the work done.
async fn migrate(pool: &Pool, schema: Option<&str>, migrations: Migrations) -> Result<String> {
    let mut client = pool.get().await.map_err(error::pool)?;
    let tx = client.transaction().await.map_err(error::storage)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(coalesce($2::text, current_schema()::text, '')))",
        &[&MIGRATION_LOCK, &schema],
    )
    .await
    .map_err(error::storage)?;
    if let Some(schema) = schema {
        // `schema` is a plain identifier, checked by `connect_with_schema`.
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(error::storage)?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hookline_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(error::storage)?;
    let done: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM hookline_migrations",
            &[],
        )
        .await
        .map_err(error::storage)?
        .get(0);
    let done = usize::try_from(done).unwrap_or(0);
    let known = schema::MIGRATIONS.len();
    if done > known || (done < known && migrations == Migrations::Require) {
        return Err(schema_mismatch(done, known));
    }
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(done) {
        let version = i32::try_from(index + 1).expect("fewer than 2^31 migrations");
        tx.batch_execute(sql).await.map_err(error::storage)?;
        tx.execute(
            "INSERT INTO hookline_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(error::storage)?;
        tracing::info!(migration = version, schema, "applied postgres migration");
    }
    let current_schema: Option<String> = tx
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(error::storage)?
        .get(0);
    tx.commit().await.map_err(error::storage)?;
    current_schema.ok_or_else(|| {
        Error::validation(
            &["database_url"],
            "no schema of the search_path exists to hold hookline's tables",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(is_plain_identifier("hookline_t_12_3"));
        assert!(is_plain_identifier("_x"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier("1abc"));
        assert!(!is_plain_identifier("Public"));
        assert!(!is_plain_identifier("a; DROP TABLE app"));
        assert!(!is_plain_identifier(&"a".repeat(64)));
    }
}
