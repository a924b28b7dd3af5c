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

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        self.purge("idempotency", "key", "expires_at", now).await
    }
}

pub(super) async fn put_idempotent(
    db: &impl GenericClient,
    record: &IdempotencyRecord,
) -> Result<()> {
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
