//! The SQL is in one file per role trait; this one holds the helpers they share.

use chrono::{DateTime, Utc};
use hookline_core::page::{ListQuery, Page};
use hookline_core::{Error, Result};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::SqliteStore;
use crate::rows::millis;

mod delivery;
mod idempotency;
mod ingest;
mod jobs;
mod messages;
mod resources;
mod tokens;

/// For the test in `lib.rs` that checks the dedupe check's query plan.
#[cfg(test)]
pub(crate) use ingest::DEDUPE_ORIGINAL;

/// How many rows one write of a purge deletes: a purge of millions of rows goes in steps,
/// so that other writes are not held up behind it.
const PURGE_BATCH: usize = 10_000;

impl SqliteStore {
    /// Deletes the rows of `table` whose `column` is before `before`, one batch per write
    /// until a batch comes up short; returns how many rows went.
    async fn purge(&self, table: &str, column: &str, before: DateTime<Utc>) -> Result<u64> {
        let delete = format!(
            "DELETE FROM {table} WHERE rowid IN (
                 SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)"
        );
        let before = millis(before);
        let mut purged = 0;
        loop {
            let delete = delete.clone();
            let deleted = self
                .write(move |conn| {
                    conn.prepare_cached(&delete)
                        .and_then(|mut s| s.execute(params![before, PURGE_BATCH as i64]))
                        .map_err(Error::storage)
                })
                .await?;
            purged += deleted as u64;
            if deleted < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }
}

/// A query under construction: a `SELECT … WHERE` prefix and its parameters.
struct Select {
    sql: String,
    params: Vec<Value>,
}

impl Select {
    fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    fn and(mut self, condition: &str, value: impl Into<Value>) -> Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
        self.params.push(value.into());
        self
    }

    fn and_channel(self, column: &str, channel: &Option<String>) -> Self {
        match channel {
            Some(channel) => self.and(
                &format!("EXISTS (SELECT 1 FROM json_each({column}) WHERE value = ?)"),
                channel.clone(),
            ),
            None => self,
        }
    }

    fn and_in(mut self, column: &str, values: &Option<Vec<String>>) -> Self {
        if let Some(values) = values {
            let marks = vec!["?"; values.len()].join(", ");
            self.sql.push_str(&format!(" AND {column} IN ({marks})"));
            self.params.extend(values.iter().cloned().map(Value::from));
        }
        self
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
    fn page<T>(
        mut self,
        conn: &Connection,
        key_column: &str,
        query: &ListQuery,
        map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        if let Some((bound, ascending)) = query.bound() {
            let op = if ascending { ">" } else { "<" };
            self = self.and(&format!("{key_column} {op} ?"), bound.to_owned());
        }
        let direction = match query.scan_order() {
            hookline_core::page::Order::Ascending => "ASC",
            hookline_core::page::Order::Descending => "DESC",
        };
        self.sql
            .push_str(&format!(" ORDER BY {key_column} {direction} LIMIT ?"));
        self.params.push(Value::from(query.limit as i64 + 1));
        let rows = all(conn, &self.sql, params_from_iter(self.params), map)?;
        Ok(Page::from_scan(rows, query, key))
    }
}

fn not_found<T>(what: &'static str) -> impl FnOnce(Option<T>) -> Result<T> {
    move |found| found.ok_or(Error::NotFound(what))
}

fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.query_row(params, map).optional())
        .map_err(Error::storage)
}

/// Every row `sql` returns, mapped.
fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql).map_err(Error::storage)?;
    statement
        .query_map(params, map)
        .map_err(Error::storage)?
        .collect::<rusqlite::Result<Vec<T>>>()
        .map_err(Error::storage)
}

fn changed(rows: usize, what: &'static str) -> Result<()> {
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
