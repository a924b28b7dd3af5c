//! Hookline's embedded storage: one SQLite file behind every role trait of
//! [`hookline_core::store`] (`ResourceStore`, `MessageStore`, `DeliveryQueue`,
//! `IngestStore`, `TokenStore`, `IdempotencyStore`), which together make a
//! [`Store`](hookline_core::Store). The SQL is in `queries`, one file per role.
//!
//! Durability without a throughput cap comes from group commit. Every write goes to one
//! writer thread, which takes all the writes waiting for it, runs each inside its own
//! savepoint of a single transaction, commits once (one fsync, `synchronous = FULL` in WAL
//! mode) and only then answers each caller. Under load a single fsync covers hundreds of
//! requests; an idle server answers a lone write after one commit. Reads use a small pool
//! of read-only connections, which WAL lets run beside the writer: lookups of one row by
//! key on the calling thread (handing them to another thread would cost more than they
//! do), longer reads on tokio's blocking threads. Claims keep the endpoint rows they read
//! (see `cache`): a fan-out's claims need the same endpoints over and over, and a commit
//! that changes any endpoint row makes every kept row stale. Copying the WAL back
//! into the database file (the checkpoint) is a thread of its own, so writes do not wait
//! behind it; only should it fall far behind does the writer checkpoint by itself. The
//! bundled SQLite is compiled (`LIBSQLITE3_FLAGS` in the workspace's `.cargo/config.toml`)
//! without memory statistics and with a page cache per connection: with either, the
//! writer and every reader would take one process-wide mutex on each allocation or page.
//!
//! The embedded store serves one process: opening it takes an exclusive lock on
//! `<file>.lock` (a second `hookline serve` on the same file is refused with a clear error)
//! and then releases every delivery lease, since whoever held them is gone. Deliveries that
//! a killed process had in flight are therefore retried at once rather than when their
//! leases would have expired. To run several nodes, use PostgreSQL.
//!
//! Migrations (`schema`) run in order, each in a transaction of its own, with foreign keys
//! off so that one may copy a table into a new shape and drop the old without its
//! children's rows going with it; each checks every reference (`foreign_key_check`)
//! before it commits.
//!
//! Secrets are sealed at rest by the [`Sealer`] the store is opened with
//! ([`SqliteStore::open_url_sealed`]): endpoint secrets and the secrets of source configs
//! are sealed as they are written and opened as they are read (`rows`), and
//! [`Reseal`] re-seals what is stored under the current key (`hookline rekey`).

mod cache;
mod queries;
mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use hookline_core::sealed::{Reseal, ResealBatch, Resealable, Sealer};
use hookline_core::store::{Migrations, schema_mismatch};
use hookline_core::{Code, Error, Result};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

/// How often the checkpointer copies committed pages from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages at which the writer checkpoints by itself, should the checkpointer fall
/// behind (a safety net: it stalls writes for as long as it takes).
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;
/// Bytes the WAL file is cut back to when it restarts, after growing under a burst.
const WAL_SIZE_LIMIT: u64 = 64 << 20;
/// How many queued writes one transaction takes at most.
const MAX_GROUP: usize = 1024;
/// Read connections kept open, and the most reads run at once: a read waits for a free
/// connection rather than opening (and parsing the schema of) a new one.
const READERS: usize = 8;

/// A write, run by the writer thread inside a savepoint. It returns the callback that
/// delivers its result once the transaction's fate is known.
type WriteJob = Box<dyn FnOnce(&Connection) -> Completion + Send>;
type Completion = Box<dyn FnOnce(bool) + Send>;

/// The SQLite store. Cheap to clone; all clones share the writer and the readers.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per pooled slot: at most this many reads run at once.
    read_slots: Arc<Semaphore>,
    /// Endpoint rows kept between claims.
    endpoints: Arc<cache::EndpointCache>,
    /// Seals secrets as they are written and opens them as they are read.
    sealer: Sealer,
    /// Dropped with the store, which stops the checkpointer.
    _checkpointer: mpsc::Sender<()>,
    /// Held for the life of the store (dropped last): one process per database file.
    _lock: std::fs::File,
}

/// A fresh, empty directory for a unit test's database. Process ids come round again over
/// a long run, so whatever an earlier process of the same id left is removed first.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookline-sqlite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The six storage roles are implemented by topic in `queries/`.
impl hookline_core::Store for SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Migrations::Apply).await
    }

    /// Opens the database at `path`, doing `migrations` about pending migrations.
    pub async fn open_with(path: &Path, migrations: Migrations) -> Result<Self> {
        Self::open_sealed(path, migrations, Sealer::none()).await
    }

    /// [`SqliteStore::open_with`], with secrets sealed at rest by `sealer`.
    pub async fn open_sealed(path: &Path, migrations: Migrations, sealer: Sealer) -> Result<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, migrations, sealer))
            .await
            .map_err(Error::storage)?
    }

    /// Opens a `sqlite://PATH` URL (`sqlite:PATH` and a bare path work too) and applies
    /// migrations.
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open_url_with(url, Migrations::Apply).await
    }

    /// [`SqliteStore::open_url`], doing `migrations` about pending migrations.
    pub async fn open_url_with(url: &str, migrations: Migrations) -> Result<Self> {
        Self::open_url_sealed(url, migrations, Sealer::none()).await
    }

    /// [`SqliteStore::open_url_with`], with secrets sealed at rest by `sealer`.
    pub async fn open_url_sealed(
        url: &str,
        migrations: Migrations,
        sealer: Sealer,
    ) -> Result<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(Error::validation(
                &["database_url"],
                "sqlite URL has no path",
            ));
        }
        Self::open_sealed(Path::new(path), migrations, sealer).await
    }

    fn open_blocking(path: PathBuf, migrations: Migrations, sealer: Sealer) -> Result<Self> {
        let lock = lock_file(&path)?;
        let mut writer = Connection::open(&path).map_err(Error::storage)?;
        configure(&writer, false)?;
        migrate(&mut writer, migrations)?;
        // A claim moved each leased delivery's `next_attempt` to its lease's end: it is due
        // now, not when that lease would have run out.
        let released = writer
            .execute(
                "UPDATE destination SET lease_owner = NULL, lease_until = NULL,
                     next_attempt = MIN(next_attempt, ?1)
                 WHERE lease_until IS NOT NULL",
                [rows::millis(chrono::Utc::now())],
            )
            .map_err(Error::storage)?;
        if released > 0 {
            tracing::info!(
                released,
                "took over the delivery leases of a previous process"
            );
        }
        let readers = (0..READERS)
            .map(|_| open_reader(&path))
            .collect::<Result<Vec<_>>>()?;
        let checkpoints = Connection::open(&path).map_err(Error::storage)?;
        checkpoints
            .execute_batch("PRAGMA synchronous = FULL;")
            .map_err(Error::storage)?;
        let (checkpointer, stop) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("hookline-sqlite-checkpointer".into())
            .spawn(move || run_checkpointer(checkpoints, stop))
            .map_err(Error::storage)?;
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        thread::Builder::new()
            .name("hookline-sqlite-writer".into())
            .spawn(move || run_writer(writer, receiver))
            .map_err(Error::storage)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(sender)),
                readers: Mutex::new(readers),
                read_slots: Arc::new(Semaphore::new(READERS)),
                endpoints: Arc::default(),
                sealer,
                _checkpointer: checkpointer,
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What seals and opens this store's secrets.
    pub fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// Stops taking writes; the writer thread finishes what is queued, then exits.
    pub fn close(&self) {
        self.inner.writer.lock().expect("writer lock").take();
    }

    /// Runs `work` on the writer thread, inside the next group transaction, and answers
    /// once that transaction has committed.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_endpoints(work, |_| false).await
    }

    /// [`Self::write`] for work that may change endpoint rows: when `changed` says of its
    /// result that it did, the endpoint cache moves on once the change is committed
    /// (whether or not the caller is still waiting to hear of it).
    async fn write_endpoints<T, F>(&self, work: F, changed: fn(&T) -> bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let endpoints = Arc::clone(&self.inner.endpoints);
        let job: WriteJob = Box::new(move |conn| {
            let result = in_savepoint(conn, work);
            Box::new(move |committed| {
                let result = if committed {
                    if result.as_ref().is_ok_and(changed) {
                        endpoints.invalidate();
                    }
                    result
                } else {
                    result.and(Err(Error::Unavailable))
                };
                let _ = reply.send(result);
            })
        });
        let sender = self
            .inner
            .writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or(Error::Unavailable)?;
        sender.send(job).map_err(|_| Error::Unavailable)?;
        answer.await.map_err(|_| Error::Unavailable)?
    }

    /// Runs `work`, a lookup of one row by key, on a pooled read connection on the calling
    /// thread: it takes microseconds on a cached page, less than handing it to another
    /// thread would. Falls back to [`Self::read`] when every connection is busy, or when
    /// one must first be reopened (slow work that does not belong on an async thread).
    async fn lookup<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let Ok(slot) = self.inner.read_slots.try_acquire() else {
            return self.read(work).await;
        };
        let Some(conn) = self.inner.readers.lock().expect("reader lock").pop() else {
            drop(slot);
            return self.read(work).await;
        };
        let result = work(&conn);
        self.inner.readers.lock().expect("reader lock").push(conn);
        result
    }

    /// Runs `work` on a pooled read connection, off the async threads.
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let slot = Arc::clone(&inner.read_slots)
            .acquire_owned()
            .await
            .map_err(Error::storage)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let conn = inner.readers.lock().expect("reader lock").pop();
            // A connection lost to a panicking read is replaced.
            let conn = match conn {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = work(&conn);
            inner.readers.lock().expect("reader lock").push(conn);
            result
        })
        .await
        .map_err(Error::storage)?
    }
}

/// A rotation's batch: the rows of `what` after `after`, read and re-sealed in one write
/// (so no other write of those rows comes between), the endpoint cache moved on when an
/// endpoint changed.
#[async_trait::async_trait]
impl Reseal for SqliteStore {
    async fn reseal(
        &self,
        what: Resealable,
        after: Option<String>,
        limit: usize,
    ) -> Result<ResealBatch> {
        let sealer = self.sealer().clone();
        let (select, update, reseal): (&str, &str, fn(&Sealer, &str) -> Result<Option<String>>) =
            match what {
                Resealable::Endpoints => (
                    "SELECT id, secrets FROM endpoint WHERE id > ?1 ORDER BY id LIMIT ?2",
                    "UPDATE endpoint SET secrets = ?2 WHERE id = ?1",
                    rows::resealed_secrets,
                ),
                Resealable::Sources => (
                    "SELECT id, config FROM source WHERE id > ?1 ORDER BY id LIMIT ?2",
                    "UPDATE source SET config = ?2 WHERE id = ?1",
                    rows::resealed_config,
                ),
            };
        let changed = |batch: &ResealBatch| batch.resealed > 0;
        self.write_endpoints(
            move |conn| {
                let stored: Vec<(String, String)> = {
                    let mut statement = conn.prepare(select).map_err(Error::storage)?;
                    statement
                        .query_map(
                            rusqlite::params![after.unwrap_or_default(), limit as i64],
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )
                        .map_err(Error::storage)?
                        .collect::<rusqlite::Result<_>>()
                        .map_err(Error::storage)?
                };
                let mut batch = ResealBatch {
                    read: stored.len(),
                    resealed: 0,
                    next: (stored.len() == limit)
                        .then(|| stored.last().map(|(id, _)| id.clone()))
                        .flatten(),
                };
                for (id, value) in stored {
                    let resealed = reseal(&sealer, &value).map_err(|error| {
                        Error::storage(std::io::Error::other(format!("{id}: {error}")))
                    })?;
                    if let Some(resealed) = resealed {
                        conn.execute(update, rusqlite::params![id, resealed])
                            .map_err(Error::storage)?;
                        batch.resealed += 1;
                    }
                }
                Ok(batch)
            },
            changed,
        )
        .await
    }
}

/// Takes the exclusive lock that makes this process the database file's only user.
fn lock_file(path: &Path) -> Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::storage)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Setup {
            code: Code::DatabaseInUse,
            detail: format!(
                "{} is in use by another hookline process; the embedded store serves one \
                 process (use PostgreSQL for several nodes)",
                path.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(Error::storage(error)),
    }
}

fn open_reader(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let reader = Connection::open_with_flags(path, flags).map_err(Error::storage)?;
    configure(&reader, true)?;
    Ok(reader)
}

fn configure(conn: &Connection, read_only: bool) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(Error::storage)?;
    let pragmas = if read_only {
        "PRAGMA foreign_keys = ON;".to_owned()
    } else {
        // FULL: a commit is on disk before any caller hears of it. temp_store: the
        // savepoint of each write in a group keeps its undo pages in memory, not in a
        // temporary file written and closed for every write.
        format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}; PRAGMA temp_store = MEMORY;
             PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        )
    };
    conn.execute_batch(&pragmas).map_err(Error::storage)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &mut Connection, migrations: Migrations) -> Result<()> {
    let done: usize = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(Error::storage)?;
    let known = schema::MIGRATIONS.len();
    if done > known || (done < known && migrations == Migrations::Require) {
        return Err(schema_mismatch(done, known));
    }
    if done == known {
        return Ok(());
    }
    // Off while migrating (it cannot change inside a transaction): a migration that copies
    // a table must be able to drop the old one without its children's rows going with it.
    // Each migration checks every reference before it commits instead.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(Error::storage)?;
    let migrated = apply_migrations(conn, done);
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .map_err(Error::storage)?;
    migrated
}

fn apply_migrations(conn: &mut Connection, done: usize) -> Result<()> {
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction().map_err(Error::storage)?;
        tx.execute_batch(sql).map_err(Error::storage)?;
        let broken = tx
            .prepare("PRAGMA foreign_key_check")
            .and_then(|mut s| s.exists([]))
            .map_err(Error::storage)?;
        if broken {
            return Err(Error::storage(std::io::Error::other(format!(
                "migration {} would leave rows referring to rows that do not exist",
                index + 1
            ))));
        }
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(Error::storage)?;
        tx.commit().map_err(Error::storage)?;
        tracing::info!(migration = index + 1, "applied sqlite migration");
    }
    Ok(())
}

/// Runs one write in a savepoint, so that its failure undoes only its own changes.
fn in_savepoint<T>(conn: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // Cached: every write of every group opens and releases one.
    let run = |sql| {
        conn.prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(Error::storage)
    };
    run("SAVEPOINT job")?;
    let result = work(conn);
    if result.is_err() {
        run("ROLLBACK TO job")?;
    }
    run("RELEASE job")?;
    result
}

/// The checkpointer thread: every [`CHECKPOINT_EVERY`], copy what the WAL holds into the
/// database file without blocking the writer or the readers (a passive checkpoint), so
/// the WAL stays short and restarts from its beginning. Stops when the store is dropped.
fn run_checkpointer(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "sqlite checkpoint failed; the writer will checkpoint");
        }
    }
    tracing::debug!("sqlite checkpointer stopped");
}

/// The writer thread: group the waiting writes into one transaction, commit, answer.
fn run_writer(conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(%error, "sqlite begin failed");
            continue;
        }
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&conn)).collect();
        let committed = match conn.execute_batch("COMMIT") {
            Ok(()) => {
                hookline_core::metrics::metrics().record_commit_batch(completions.len());
                true
            }
            Err(error) => {
                tracing::error!(%error, "sqlite commit failed; the batch is rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                false
            }
        };
        for complete in completions {
            complete(committed);
        }
    }
    tracing::debug!("sqlite writer stopped");
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;

    #[test]
    fn sqlite_is_built_without_shared_mutexes_on_allocations_and_pages() {
        // `LIBSQLITE3_FLAGS` in the workspace's `.cargo/config.toml`: should the build
        // lose it, the writer and the readers contend on process-wide mutexes again.
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options
                .iter()
                .any(|option| option == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_write_in_a_group_does_not_undo_the_others() {
        let dir = crate::test_dir("group");
        let store = SqliteStore::open(&dir.join("group.db")).await.unwrap();
        let insert = |id: &'static str| {
            let store = store.clone();
            async move {
                store
                    .write(move |conn| {
                        conn.execute(
                            "INSERT INTO token (hash, app_id, created_at) VALUES (?1, NULL, 0)",
                            [id],
                        )
                        .map_err(Error::storage)
                    })
                    .await
            }
        };
        let (a, b, c) = tokio::join!(insert("a"), insert("a"), insert("c"));
        assert_eq!(
            [a.is_ok(), b.is_ok(), c.is_ok()]
                .iter()
                .filter(|ok| **ok)
                .count(),
            2,
            "exactly one duplicate fails"
        );
        let count: i64 = store
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM token", [], |row| row.get(0))
                    .map_err(Error::storage)
            })
            .await
            .unwrap();
        assert_eq!(count, 2);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A database made by an earlier release (three migrations) gets the later ones when
    /// opened, the idempotency sweep's index among them.
    #[tokio::test]
    async fn a_database_of_an_earlier_release_is_brought_up_to_date() {
        let dir = crate::test_dir("up");
        let path = dir.join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &schema::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let (version, indexed): (usize, bool) = store
            .read(|conn| {
                let version = conn.query_row("PRAGMA user_version", [], |row| row.get(0));
                let indexed = conn
                    .prepare("SELECT 1 FROM sqlite_master WHERE name = 'idempotency_expires'")
                    .and_then(|mut s| s.exists([]));
                Ok((
                    version.map_err(Error::storage)?,
                    indexed.map_err(Error::storage)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(version, schema::MIGRATIONS.len());
        assert!(indexed, "the sweep's index is created on upgrade");
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The migration that copies `message` and `destination` keeps every row of them and of
    /// the tables that refer to them (dropping the old `message` must not cascade to its
    /// deliveries and attempts), and the `eventId` rule still holds on the copy; so does the
    /// later one that copies `attempt`, whose rows still go with their message.
    #[tokio::test]
    async fn copying_messages_and_deliveries_keeps_every_row() {
        let dir = crate::test_dir("copy");
        let path = dir.join("old.db");
        // The database as it was before the migration that copies both tables.
        let before = schema::MIGRATIONS
            .iter()
            .position(|sql| sql.contains("CREATE TABLE destination_keyed"))
            .expect("the migration that keys destinations");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
            for sql in &schema::MIGRATIONS[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", before).unwrap();
            conn.execute_batch(
                "INSERT INTO app VALUES ('app_1', NULL, 'Acme', NULL, '{}', 1, 1);
                 INSERT INTO endpoint (id, app_id, url, description, disabled, metadata,
                     headers, secrets, created_at, updated_at)
                 VALUES ('ep_1', 'app_1', 'https://example.com', '', 0, '{}', '{}', '[]', 1, 1);
                 INSERT INTO message (id, app_id, event_id, event_type, payload, created_at)
                 VALUES ('msg_1', 'app_1', 'evt_1', 'a.b', '{}', 1),
                        ('msg_2', 'app_1', NULL, 'a.b', '{}', 2),
                        ('msg_3', 'app_1', NULL, 'a.b', NULL, 3);
                 INSERT INTO destination (msg_id, endpoint_id, app_id, status, next_attempt,
                     attempts, trigger_type, msg_created_at, updated_at, requeued)
                 VALUES ('msg_1', 'ep_1', 'app_1', 0, NULL, 1, 0, 1, 1, 0),
                        ('msg_2', 'ep_1', 'app_1', 3, 50, 0, 0, 2, 2, 1);
                 INSERT INTO attempt (id, app_id, msg_id, endpoint_id, url, status,
                     response_status_code, response_headers, duration_ms, trigger_type,
                     created_at)
                 VALUES ('atmpt_1', 'app_1', 'msg_1', 'ep_1', 'https://example.com', 0, 200,
                     '[]', 3, 0, 1);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let (counts, due, keyed, foreign_keys) = store
            .read(|conn| {
                let count = |table: &str| {
                    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                        row.get::<_, i64>(0)
                    })
                };
                let counts = [count("message"), count("destination"), count("attempt")]
                    .into_iter()
                    .collect::<rusqlite::Result<Vec<_>>>();
                let due = conn.query_row(
                    "SELECT next_attempt, requeued FROM destination WHERE msg_id = 'msg_2'",
                    [],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                );
                let keyed = conn.query_row(
                    "SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_master
                     WHERE name = 'destination'",
                    [],
                    |row| row.get::<_, bool>(0),
                );
                let foreign_keys =
                    conn.query_row("PRAGMA foreign_keys", [], |row| row.get::<_, bool>(0));
                Ok((
                    counts.map_err(Error::storage)?,
                    due.map_err(Error::storage)?,
                    keyed.map_err(Error::storage)?,
                    foreign_keys.map_err(Error::storage)?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(counts, [3, 2, 1], "messages, deliveries and attempts kept");
        assert_eq!(due, (50, 1), "a delivery's queue state is copied as it was");
        assert!(keyed, "deliveries are keyed by message and endpoint");
        assert!(foreign_keys, "readers still enforce foreign keys");
        let duplicate = store
            .write(|conn| {
                conn.execute(
                    "INSERT INTO message (id, app_id, event_id, event_type, created_at)
                     VALUES ('msg_4', 'app_1', 'evt_1', 'a.b', 4)",
                    [],
                )
                .map_err(|error| rows::classify(error, "message"))
            })
            .await;
        assert!(
            matches!(duplicate, Err(Error::Conflict { .. })),
            "an eventId is still unique in its app: {duplicate:?}"
        );
        let cascaded = store
            .write(|conn| {
                conn.execute("DELETE FROM message WHERE id = 'msg_1'", [])
                    .and_then(|_| {
                        conn.query_row("SELECT count(*) FROM attempt", [], |row| {
                            row.get::<_, i64>(0)
                        })
                    })
                    .map_err(Error::storage)
            })
            .await
            .unwrap();
        assert_eq!(
            cascaded, 0,
            "the writer enforces foreign keys after migrating"
        );
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn the_dedupe_check_searches_its_index_not_the_whole_log() {
        let dir = crate::test_dir("plan");
        let store = SqliteStore::open(&dir.join("plan.db")).await.unwrap();
        let plan: Vec<String> = store
            .read(|conn| {
                let sql = format!("EXPLAIN QUERY PLAN {}", crate::queries::DEDUPE_ORIGINAL);
                let mut statement = conn.prepare(&sql).map_err(Error::storage)?;
                statement
                    .query_map(params!["src_a", "key", "accepted", 0], |row| row.get(3))
                    .map_err(Error::storage)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(Error::storage)
            })
            .await
            .unwrap();
        assert_eq!(
            plan,
            [
                "SEARCH ingest_request USING INDEX ingest_request_dedupe (source_id=? AND dedupe_key=?)"
            ]
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_second_opener_is_refused_until_the_first_is_gone() {
        let dir = crate::test_dir("lock");
        let path = dir.join("locked.db");
        let first = SqliteStore::open(&path).await.unwrap();
        match SqliteStore::open(&path).await {
            Err(Error::Setup { code, .. }) => assert_eq!(code, Code::DatabaseInUse),
            other => panic!("expected database_in_use, got {other:?}"),
        }
        first.close();
        drop(first);
        SqliteStore::open(&path)
            .await
            .expect("free again once the first store is dropped");
        std::fs::remove_dir_all(dir).ok();
    }
}
