//! Answers kept for repeated idempotency keys: `impl IdempotencyStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::model::{IdempotencyRecord, IdempotentResponse};
use hookline_core::store::IdempotencyStore;
use hookline_core::{Error, Result};

use super::{execute, query_opt};
use crate::PostgresStore;
use crate::error::storage;
use crate::rows::{ms, read};

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn get_idempotent(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotentResponse>> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT status, body FROM idempotency WHERE key = $1 AND expires_at > $2",
            &[&key, &ms(now)],
        )
        .await
        .map_err(storage)?;
        row.map(|row| {
            read(&row, |c| {
                Ok(IdempotentResponse {
                    status: u16::try_from(c.take::<i32>()?).map_err(Error::storage)?,
                    body: c.take()?,
                })
            })
        })
        .transpose()
    }

    async fn put_idempotent(&self, record: &IdempotencyRecord) -> Result<()> {
        let db = self.client().await?;
        put_idempotent(&db, record).await
    }

    async fn claim_idempotent(&self, record: &IdempotencyRecord, now: DateTime<Utc>) -> Result<()> {
        let db = self.client().await?;
        claim_idempotent(&db, record, now, false).await
    }

    async fn release_pending(&self, key: &str) -> Result<()> {
        let db = self.client().await?;
        execute(
            &db,
            "DELETE FROM idempotency WHERE key = $1 AND status = $2",
            &[&key, &i32::from(IdempotentResponse::PENDING)],
        )
        .await
        .map_err(storage)?;
        Ok(())
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        self.purge("idempotency", "key", "expires_at", now).await
    }
}

async fn put_idempotent(db: &impl GenericClient, record: &IdempotencyRecord) -> Result<()> {
    execute(
        db,
        "INSERT INTO idempotency (key, status, body, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE
             SET status = excluded.status, body = excluded.body,
                 expires_at = excluded.expires_at",
        &[
            &record.key,
            &i32::from(record.response.status),
            &record.response.body,
            &ms(record.expires_at),
        ],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// Writes the record of a request that creates something, unless a live record of the
/// same key is there: then another request with that key was carried out first (on this
/// node or another), and this one must create nothing ([`Code::IdempotencyConflict`]; the
/// caller replays the first answer). A concurrent insert of the same key waits for the
/// first transaction to end. An expired record is replaced, and a
/// [pending](IdempotentResponse::PENDING) one when the request that claimed it answers
/// (`replaces_pending`).
pub(super) async fn claim_idempotent(
    db: &impl GenericClient,
    record: &IdempotencyRecord,
    now: DateTime<Utc>,
    replaces_pending: bool,
) -> Result<()> {
    let written = execute(
        db,
        "INSERT INTO idempotency (key, status, body, expires_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE
             SET status = excluded.status, body = excluded.body,
                 expires_at = excluded.expires_at
             WHERE idempotency.expires_at <= $5
                 OR ($7 AND idempotency.status = $6)",
        &[
            &record.key,
            &i32::from(record.response.status),
            &record.response.body,
            &ms(record.expires_at),
            &ms(now),
            &i32::from(IdempotentResponse::PENDING),
            &replaces_pending,
        ],
    )
    .await
    .map_err(storage)?;
    if written == 0 {
        return Err(Error::idempotency_conflict());
    }
    Ok(())
}
