//! The SQL is in one file per role trait; this one holds the helpers they share.

// Each role's SQL mirrors the SQLite store's statement for statement, except that a claim
// reads its jobs in the same statement that leases them. Writes of more than one statement
// run in a transaction; a write that queues due work announces it once it has committed
// (see `listen`).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::page::{ListQuery, Order, Page};
use hookline_core::{Error, Result};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::error::storage;
use crate::rows::{Columns, ms, read};

mod delivery;
mod idempotency;
mod ingest;
pub(crate) mod jobs;
pub(crate) mod messages;
mod resources;
mod tokens;

/// How many rows one statement of a purge deletes: a purge of millions of rows goes in
/// steps, each its own short transaction.
const PURGE_BATCH: i64 = 10_000;
/// First key of the advisory lock a node holds while it purges expired rows; the
/// second is the hash of the schema, so that schemas sharing a database do not wait on
/// each other.
const PURGE_LOCK: i32 = 0x686b_7072; // "hkpr"

/// A parameter of a query built at run time.
type Param = Box<dyn ToSql + Sync + Send>;

/// A query under construction: a `SELECT … WHERE` prefix and its parameters.
struct Select {
    sql: String,
    params: Vec<Param>,
}

impl Select {
    fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Adds `AND condition`, where the one `?` in `condition` stands for `value`.
    fn and(mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) -> Self {
        self.params.push(Box::new(value));
        let placeholder = format!("${}", self.params.len());
        self.sql.push_str(" AND ");
        self.sql.push_str(&condition.replacen('?', &placeholder, 1));
        self
    }

    fn and_channel(self, column: &str, channel: &Option<String>) -> Self {
        match channel {
            Some(channel) => self.and(&format!("? = ANY ({column})"), channel.clone()),
            None => self,
        }
    }

    fn and_in(self, column: &str, values: &Option<Vec<String>>) -> Self {
        match values {
            Some(values) => self.and(&format!("{column} = ANY (?)"), values.clone()),
            None => self,
        }
    }

    /// Keeps the rows whose message is on `channel` and of one of `event_types`, each
    /// when given: the filter of message and attempt lists.
    fn and_message_filter(
        self,
        channel: &Option<String>,
        event_types: &Option<Vec<String>>,
    ) -> Self {
        self.and_channel("message.channels", channel)
            .and_in("message.event_type", event_types)
    }

    /// Runs the query as one page of `query`, sorted and bounded on `key_column`.
    async fn page<T>(
        mut self,
        db: &impl GenericClient,
        key_column: &str,
        query: &ListQuery,
        read_row: impl Fn(&mut Columns<'_>) -> Result<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        if let Some((bound, ascending)) = query.bound() {
            let op = if ascending { ">" } else { "<" };
            self = self.and(&format!("{key_column} {op} ?"), bound.to_owned());
        }
        let direction = match query.scan_order() {
            Order::Ascending => "ASC",
            Order::Descending => "DESC",
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX - 1) + 1;
        self.params.push(Box::new(limit));
        self.sql.push_str(&format!(
            " ORDER BY {key_column} {direction} LIMIT ${}",
            self.params.len()
        ));
        let params: Vec<&(dyn ToSql + Sync)> = self
            .params
            .iter()
            .map(|param| param.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = query_rows(db, &self.sql, &params)
            .await
            .map_err(storage)?
            .iter()
            .map(|row| read(row, &read_row))
            .collect::<Result<Vec<T>>>()?;
        Ok(Page::from_scan(rows, query, key))
    }
}

async fn query_rows(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query(&statement, params).await
}

async fn query_opt(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.query_opt(&statement, params).await
}

async fn execute(
    db: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = db.prepare_cached(sql).await?;
    db.execute(&statement, params).await
}

/// How long a deletion waits for the transactions running when it committed (see
/// [`wait_for_running`]); one still running after this (of another application of the
/// database, most likely) is not waited for.
const RUNNING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until every transaction that has a transaction id now has ended, or
/// [`RUNNING_WAIT`] has passed (`false`). A deletion that no foreign key carries out (an
/// endpoint's deliveries) calls it after its commit, then deletes what writers that began
/// before the commit (and so did not see it) added meanwhile: each such writer had its
/// transaction id by then, as a message create writes the message before it reads the
/// endpoints. The wait takes an id of its own, newer than every one handed out so far,
/// and waits for the oldest running id to pass it (a snapshot's `xmax` would not do: it
/// is one past the newest *completed* id, and ids handed out after it are not counted).
async fn wait_for_running(db: &impl GenericClient) -> Result<bool> {
    let read = |sql: &'static str| async move {
        let row = query_opt(db, sql, &[]).await.map_err(storage)?;
        found(row, "snapshot", |c| c.take::<i64>())
    };
    let newest = read("SELECT pg_current_xact_id()::text::bigint").await?;
    let started = std::time::Instant::now();
    while read("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").await? < newest {
        if started.elapsed() >= RUNNING_WAIT {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(true)
}

/// Reads the one row of a lookup, or says which resource was not found.
fn found<T>(
    row: Option<Row>,
    what: &'static str,
    read_row: impl FnOnce(&mut Columns<'_>) -> Result<T>,
) -> Result<T> {
    match row {
        Some(row) => read(&row, read_row),
        None => Err(Error::NotFound(what)),
    }
}

fn changed(rows: u64, what: &'static str) -> Result<()> {
    if rows == 0 {
        Err(Error::NotFound(what))
    } else {
        Ok(())
    }
}

/// The column a key is looked up by, given whether it is an id (`AppId::is_id` and the
/// like: a uid never carries the id prefix).
fn key_column(is_id: bool, uid_column: &'static str) -> &'static str {
    if is_id { "id" } else { uid_column }
}

impl PostgresStore {
    /// Deletes the rows of `table` whose `column` is before `before`, batches of them
    /// chosen by their `key`, one batch per statement until a batch comes up short;
    /// returns how many rows went. One node purges at a time: the others find the lock
    /// taken and leave it to that one (and get 0).
    async fn purge(
        &self,
        table: &str,
        key: &str,
        column: &str,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        let delete = format!(
            "DELETE FROM {table} WHERE {key} IN (
                 SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)"
        );
        self.in_turn(&delete, before).await
    }

    /// Runs `statement` (parameters: `before`, then the batch size; it changes at most a
    /// batch of rows) until it changes fewer than a batch, holding the purge lock;
    /// returns how many rows it changed. While another node holds the lock, it does
    /// nothing and returns 0: the nodes take turns at periodic sweeps.
    pub(crate) async fn in_turn(&self, statement: &str, before: DateTime<Utc>) -> Result<u64> {
        let db = self.client().await?;
        let locked: bool = query_opt(
            &db,
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()::text))",
            &[&PURGE_LOCK],
        )
        .await
        .map_err(storage)?
        .is_some_and(|row| row.get(0));
        if !locked {
            return Ok(0);
        }
        let before = ms(before);
        let mut purged = 0;
        let result = loop {
            let deleted = execute(&db, statement, &[&before, &PURGE_BATCH])
                .await
                .map_err(storage);
            match deleted {
                Ok(deleted) if deleted == PURGE_BATCH as u64 => purged += deleted,
                Ok(deleted) => break Ok(purged + deleted),
                Err(error) => break Err(error),
            }
        };
        // A session lock outlives the statement: give it back before the connection is.
        execute(
            &db,
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()::text))",
            &[&PURGE_LOCK],
        )
        .await
        .map_err(storage)?;
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deadpool_postgres::{Manager, Pool};
    use tokio_postgres::NoTls;

    use super::wait_for_running;

    /// The case a snapshot's `xmax` misses: a writer that took its id after the newest
    /// commit and is still running.
    #[tokio::test]
    async fn the_wait_covers_a_writer_that_took_its_id_after_the_last_commit() {
        let Ok(url) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
            eprintln!("skipped: HOOKLINE_TEST_POSTGRES_URL is not set");
            return;
        };
        let config: tokio_postgres::Config = url.parse().unwrap();
        let connect = || async {
            let (client, connection) = config.connect(NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        };
        let (earlier, writer) = (connect().await, connect().await);
        earlier
            .batch_execute("BEGIN; SELECT pg_current_xact_id(); COMMIT")
            .await
            .unwrap();
        writer
            .batch_execute("BEGIN; SELECT pg_current_xact_id()")
            .await
            .unwrap();
        let pool = Pool::builder(Manager::new(config.clone(), NoTls))
            .max_size(1)
            .build()
            .unwrap();
        let waiting = tokio::spawn(async move {
            let db = pool.get().await.unwrap();
            wait_for_running(&db).await.unwrap()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the wait ended while the writer ran"
        );
        writer.batch_execute("COMMIT").await.unwrap();
        assert!(waiting.await.unwrap(), "the writer ended within the wait");
    }
}
