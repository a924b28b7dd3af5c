//! Sources and the log of the requests they receive: `impl IngestStore`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::Result;
use hookline_core::id::{AppId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{
    IngestRequest, IngestedRequest, NewIngestRequest, RefusedTally, Source, Verdict,
    page_within_budget, within_budget,
};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::IngestStore;
use tokio_postgres::types::Json;

use super::messages::insert_message;
use super::resources::{delete_app_rows, insert_app};
use super::{Select, changed, execute, found, key_column, notify_due, query_opt, query_rows};
use crate::PostgresStore;
use crate::error::{duplicate, storage};
use crate::rows::{self, ms, read};

/// First key of the advisory lock that makes the dedupe check of one source and dedupe
/// key wait for a request with the same key still in flight; the second is their hash.
const DEDUPE_LOCK: i32 = 0x686b_6464; // "hkdd"

/// Locks a source's row with `lock` (`FOR UPDATE`, `FOR KEY SHARE`) until the transaction
/// commits, and returns its hidden application's id; no row is a source not found.
async fn lock_source(tx: &impl GenericClient, id: &SourceId, lock: &str) -> Result<String> {
    let sql = format!("SELECT app_id FROM source WHERE id = $1 {lock}");
    let row = query_opt(tx, &sql, &[&id.as_str()])
        .await
        .map_err(storage)?;
    found(row, "source", |c| c.take::<String>())
}

#[async_trait]
impl IngestStore for PostgresStore {
    async fn create_source(&self, source: &Source) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        insert_app(&tx, &source.hidden_app()).await?;
        let config = rows::config(self.sealer(), &source.config);
        execute(
            &tx,
            "INSERT INTO source (id, uid, name, source_type, config, metadata, app_id, token,
                 previous_token, previous_token_expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &source.id.as_str(),
                &source.uid,
                &source.name,
                &source.source_type,
                &config,
                &Json(&source.metadata),
                &source.app_id.as_str(),
                &source.token,
                &source.previous_token,
                &source.previous_token_expires_at.map(ms),
                &ms(source.created_at),
                &ms(source.updated_at),
            ],
        )
        .await
        .map_err(duplicate("a source"))?;
        tx.commit().await.map_err(storage)
    }

    async fn source_of_app(&self, app: &AppId) -> Result<Option<SourceId>> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT id FROM source WHERE app_id = $1",
            &[&app.as_str()],
        )
        .await
        .map_err(storage)?;
        Ok(row.map(|row| SourceId::from_string(row.get(0))))
    }

    async fn get_source(&self, key: &str) -> Result<Source> {
        let db = self.client().await?;
        let column = key_column(SourceId::is_id(key), "uid");
        let sql = format!(
            "SELECT {} FROM source WHERE source.{column} = $1",
            rows::SOURCE_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&key]).await.map_err(storage)?;
        let stored = found(row, "source", rows::source)?;
        rows::open_source(self.sealer(), stored)
    }

    async fn find_source_by_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Source>> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM source
             WHERE source.token = $1
                OR (source.previous_token = $1
                    AND (source.previous_token_expires_at IS NULL
                         OR source.previous_token_expires_at > $2))
             ORDER BY source.token = $1 DESC LIMIT 1",
            rows::SOURCE_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&token, &ms(now)])
            .await
            .map_err(storage)?;
        row.map(|row| read(&row, rows::source))
            .transpose()?
            .map(|stored| rows::open_source(self.sealer(), stored))
            .transpose()
    }

    async fn list_sources(&self, query: &ListQuery) -> Result<Page<Source>> {
        let db = self.client().await?;
        let stored = Select::new(format!(
            "SELECT {} FROM source WHERE TRUE",
            rows::SOURCE_COLUMNS
        ))
        .page(&db, "source.id", query, rows::source, |source| {
            source.id.to_string()
        })
        .await?;
        let data = stored
            .data
            .into_iter()
            .map(|source| rows::open_source(self.sealer(), source))
            .collect::<Result<_>>()?;
        Ok(Page { data, ..stored })
    }

    async fn update_source(&self, source: &Source) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        let config = rows::config(self.sealer(), &source.config);
        let rows = execute(
            &tx,
            "UPDATE source SET uid = $2, name = $3, source_type = $4, config = $5,
                 metadata = $6, token = $7, previous_token = $8,
                 previous_token_expires_at = $9, updated_at = $10
             WHERE id = $1",
            &[
                &source.id.as_str(),
                &source.uid,
                &source.name,
                &source.source_type,
                &config,
                &Json(&source.metadata),
                &source.token,
                &source.previous_token,
                &source.previous_token_expires_at.map(ms),
                &ms(source.updated_at),
            ],
        )
        .await
        .map_err(duplicate("a source"))?;
        changed(rows, "source")?;
        // The hidden application keeps the source's name.
        execute(
            &tx,
            "UPDATE app SET name = $2, updated_at = $3
             WHERE id = (SELECT app_id FROM source WHERE id = $1)",
            &[
                &source.id.as_str(),
                &source.hidden_app().name,
                &ms(source.updated_at),
            ],
        )
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    async fn delete_source(&self, id: &SourceId) -> Result<()> {
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        // The source is locked first, as an ingest locks it before it touches the hidden
        // application: requests in flight finish first, later ones find no source.
        let app = lock_source(&tx, id, "FOR UPDATE").await?;
        execute(
            &tx,
            "DELETE FROM ingest_request WHERE source_id = $1",
            &[&id.as_str()],
        )
        .await
        .map_err(storage)?;
        execute(&tx, "DELETE FROM source WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(storage)?;
        delete_app_rows(&tx, &AppId::from_string(app)).await?;
        tx.commit().await.map_err(storage)
    }

    async fn ingest(&self, new: NewIngestRequest) -> Result<IngestedRequest> {
        let NewIngestRequest {
            mut request,
            dedupe_since,
            messages,
            refused_cap,
        } = new;
        let source = request.source_id.clone();
        let mut db = self.client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        let capped = match (request.verdict, refused_cap) {
            (Verdict::Rejected, Some(cap)) => Some(cap),
            _ => None,
        };
        if let Some(cap) = capped {
            // The source's count of refused requests is read and written under its row
            // lock, so that every node counts into one cap. Taken first, as below.
            let row = query_opt(
                &tx,
                "SELECT refused_window, refused_logged, refused_dropped FROM source
                 WHERE id = $1 FOR NO KEY UPDATE",
                &[&source.as_str()],
            )
            .await
            .map_err(storage)?;
            let mut tally = found(row, "source", |c| {
                Ok(RefusedTally {
                    window_start: c.take()?,
                    logged: c.take()?,
                    dropped: c.take()?,
                })
            })?;
            let logged = cap.count(&mut tally, request.created_at);
            execute(
                &tx,
                "UPDATE source SET refused_window = $2, refused_logged = $3,
                     refused_dropped = $4
                 WHERE id = $1",
                &[
                    &source.as_str(),
                    &tally.window_start,
                    &tally.logged,
                    &tally.dropped,
                ],
            )
            .await
            .map_err(storage)?;
            match logged {
                Some(dropped) => request.dropped_before = dropped,
                None => {
                    tx.commit().await.map_err(storage)?;
                    return Ok(IngestedRequest {
                        id: request.id,
                        seq: 0,
                        verdict: request.verdict,
                        original: None,
                        logged: false,
                        dropped: tally.dropped,
                    });
                }
            }
        } else {
            // Held to commit: a concurrent `delete_source` waits for this request, or this
            // request for it and then finds no source. Taken before anything else, the
            // order `delete_source` locks in, so that the two cannot deadlock.
            lock_source(&tx, &source, "FOR KEY SHARE").await?;
        }
        let original = match (request.verdict, &request.dedupe_key, dedupe_since) {
            (Verdict::Accepted, Some(key), Some(since)) => {
                // A request with the same key still in flight is waited for, then seen.
                execute(
                    &tx,
                    "SELECT pg_advisory_xact_lock($1, hashtext($2::text || ' ' || $3::text))",
                    &[&DEDUPE_LOCK, &source.as_str(), key],
                )
                .await
                .map_err(storage)?;
                let row = query_opt(
                    &tx,
                    "SELECT id FROM ingest_request
                     WHERE source_id = $1 AND dedupe_key = $2 AND verdict = $3
                       AND created_at >= $4
                     ORDER BY id LIMIT 1",
                    &[
                        &source.as_str(),
                        key,
                        &Verdict::Accepted.as_str(),
                        &ms(since),
                    ],
                )
                .await
                .map_err(storage)?;
                row.map(|row| read(&row, |c| c.take::<String>()))
                    .transpose()?
                    .map(IngestRequestId::from_string)
            }
            _ => None,
        };
        let mut queued = false;
        match &original {
            Some(original) => request.mark_duplicate_of(original),
            None if request.verdict == Verdict::Accepted => {
                for message in &messages {
                    queued |= !insert_message(&tx, message).await??.is_empty();
                }
            }
            None => {}
        }
        if queued {
            notify_due(&tx).await?;
        }
        // Last, so that the source's row lock (which orders its requests) is held for as
        // short a time as can be: a request numbered after another commits after it, and
        // a reader that sees one sees every request numbered before it.
        let seq = query_opt(
            &tx,
            "WITH numbered AS (
                 UPDATE source SET last_seq = last_seq + 1 WHERE id = $2 RETURNING last_seq)
             INSERT INTO ingest_request (id, source_id, seq, method, path, query, headers,
                 body, verdict, status_code, reason_code, reason, dedupe_key, event_type,
                 msg_id, created_at, body_size, dropped_before)
             SELECT $1, $2, numbered.last_seq, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                 $14, $15, $16, $17
             FROM numbered
             RETURNING seq",
            &[
                &request.id.as_str(),
                &source.as_str(),
                &request.method,
                &request.path,
                &request.query,
                &Json(&request.headers),
                &request.body,
                &request.verdict.as_str(),
                &request.status_code,
                &request.reason_code,
                &request.reason,
                &request.dedupe_key,
                &request.event_type,
                &request.msg_id.as_ref().map(MessageId::as_str),
                &ms(request.created_at),
                &request.body_size,
                &request.dropped_before,
            ],
        )
        .await
        .map_err(duplicate("a logged request"))?;
        // No row would mean the source is gone, which the lock taken above rules out.
        let seq: i64 = found(seq, "source", |c| c.take())?;
        tx.commit().await.map_err(storage)?;
        Ok(IngestedRequest {
            id: request.id,
            seq,
            verdict: request.verdict,
            original,
            logged: true,
            dropped: request.dropped_before,
        })
    }

    async fn get_ingest_request(
        &self,
        source: &SourceId,
        id: &IngestRequestId,
    ) -> Result<IngestRequest> {
        let db = self.client().await?;
        let sql = format!(
            "SELECT {} FROM ingest_request
             WHERE ingest_request.source_id = $1 AND ingest_request.id = $2",
            rows::INGEST_REQUEST_COLUMNS
        );
        let row = query_opt(&db, &sql, &[&source.as_str(), &id.as_str()])
            .await
            .map_err(storage)?;
        found(row, "ingest request", rows::ingest_request)
    }

    async fn list_ingest_requests(
        &self,
        source: &SourceId,
        query: &ListQuery,
        body_budget: usize,
    ) -> Result<Page<IngestRequest>> {
        let db = self.client().await?;
        // Sizes first (`octet_length` reads a stored body's size without loading it),
        // then only the bodies that fit the budget.
        let sizes = Select::new(
            "SELECT ingest_request.id, octet_length(ingest_request.body)::BIGINT
             FROM ingest_request WHERE TRUE",
        )
        .and("ingest_request.source_id = ?", source.to_string())
        .page(
            &db,
            "ingest_request.id",
            query,
            |c| Ok((c.take::<String>()?, c.take::<i64>()?)),
            |(id, _)| id.clone(),
        )
        .await?;
        let ids = page_within_budget(sizes, query, body_budget);
        let mut loaded = Vec::new();
        if !ids.data.is_empty() {
            let sql = format!(
                "SELECT {} FROM ingest_request
                 WHERE ingest_request.source_id = $1 AND ingest_request.id = ANY ($2)",
                rows::INGEST_REQUEST_COLUMNS
            );
            loaded = query_rows(&db, &sql, &[&source.as_str(), &ids.data])
                .await
                .map_err(storage)?
                .iter()
                .map(|row| read(row, rows::ingest_request))
                .collect::<Result<Vec<_>>>()?;
        }
        // In the page's order; a request purged in between is left out.
        loaded.sort_by_key(|request| ids.data.iter().position(|id| id == request.id.as_str()));
        Ok(Page {
            data: loaded,
            iterator: ids.iterator,
            prev_iterator: ids.prev_iterator,
            done: ids.done,
        })
    }

    async fn ingest_requests_after(
        &self,
        source: &SourceId,
        after: i64,
        limit: usize,
        body_budget: usize,
    ) -> Result<Vec<IngestRequest>> {
        let db = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Sizes first, then only the bodies that fit the budget. A reader that sees a
        // request sees every one numbered before it, so the second read finds the same.
        let sizes = query_rows(
            &db,
            "SELECT seq, octet_length(body)::BIGINT FROM ingest_request
             WHERE source_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&source.as_str(), &after, &limit],
        )
        .await
        .map_err(storage)?
        .iter()
        .map(|row| read(row, |c| Ok((c.take::<i64>()?, c.take::<i64>()?))))
        .collect::<Result<Vec<_>>>()?;
        let kept = within_budget(sizes.iter().map(|(_, size)| *size), body_budget);
        let Some((last, _)) = kept.checked_sub(1).map(|at| sizes[at]) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {} FROM ingest_request
             WHERE ingest_request.source_id = $1 AND ingest_request.seq > $2
               AND ingest_request.seq <= $3
             ORDER BY ingest_request.seq",
            rows::INGEST_REQUEST_COLUMNS
        );
        query_rows(&db, &sql, &[&source.as_str(), &after, &last])
            .await
            .map_err(storage)?
            .iter()
            .map(|row| read(row, rows::ingest_request))
            .collect()
    }

    async fn purge_ingest_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge("ingest_request", "id", "created_at", before)
            .await
    }
}
