//! Answers kept for repeated idempotency keys: `impl IdempotencyStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::model::{IdempotencyRecord, IdempotentResponse};
use hookline_core::store::IdempotencyStore;
use hookline_core::{Error, Result};
use rusqlite::{Connection, params};

use super::one;
use crate::SqliteStore;
use crate::rows::millis;

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn get_idempotent(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentResponse>> {
        let key = key.to_owned();
        self.lookup(move |conn| {
            one(
                conn,
                "SELECT status, body FROM idempotency WHERE key = ?1 AND expires_at > ?2",
                params![key, millis(now)],
                |row| {
                    Ok(IdempotentResponse {
                        status: row.get(0)?,
                        body: row.get(1)?,
                    })
                },
            )
        })
        .await
    }

    async fn put_idempotent(&self, record: &IdempotencyRecord) -> Result<()> {
        let record = record.clone();
        self.write(move |conn| put_idempotent(conn, &record)).await
    }

    async fn claim_idempotent(&self, record: &IdempotencyRecord, now: DateTime<Utc>) -> Result<()> {
        let record = record.clone();
        self.write(move |conn| claim_idempotent(conn, &record, now, false))
            .await
    }

    async fn release_pending(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM idempotency WHERE key = ?1 AND status = ?2")
                .and_then(|mut s| s.execute(params![key, IdempotentResponse::PENDING]))
                .map(drop)
                .map_err(Error::storage)
        })
        .await
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        self.purge("idempotency", "expires_at", now).await
    }
}

fn put_idempotent(conn: &Connection, record: &IdempotencyRecord) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, status, body, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record.key,
            record.response.status,
            record.response.body,
            millis(record.expires_at),
        ])
    })
    .map_err(Error::storage)?;
    Ok(())
}

/// Writes the record of a request that creates something, unless a live record of the
/// same key is there: then another request with that key was carried out first, and this
/// one must create nothing ([`Code::IdempotencyConflict`]; the caller replays the first
/// answer). An expired record is replaced, and a [pending](IdempotentResponse::PENDING)
/// one when the request that claimed it answers (`replaces_pending`).
pub(super) fn claim_idempotent(
    conn: &Connection,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
    replaces_pending: bool,
) -> Result<()> {
    let written = conn
        .prepare_cached(
            "INSERT INTO idempotency (key, status, body, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE
                 SET status = excluded.status, body = excluded.body,
                     expires_at = excluded.expires_at
                 WHERE idempotency.expires_at <= ?5
                     OR (?7 AND idempotency.status = ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.key,
                record.response.status,
                record.response.body,
                millis(record.expires_at),
                millis(now),
                IdempotentResponse::PENDING,
                replaces_pending,
            ])
        })
        .map_err(Error::storage)?;
    if written == 0 {
        return Err(Error::idempotency_conflict());
    }
    Ok(())
}
