//! Sources and the log of the requests they receive: `impl IngestStore`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{
    IngestRequest, IngestedRequest, NewIngestRequest, RefusedTally, Source, Verdict,
    forwarding_failed, page_within_budget, within_budget,
};
use hookline_core::page::{ListQuery, Page};
use hookline_core::sealed::Sealer;
use hookline_core::store::IngestStore;
use hookline_core::{Error, Result};
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::delivery::leased_jobs;
use super::messages::insert_message;
use super::resources::{delete_app_rows, insert_app};
use super::{Select, all, changed, key_column, not_found, one};
use crate::SqliteStore;
use crate::cache::EndpointCache;
use crate::rows::{self, classify, json, map_json, millis};

/// The accepted request a new one with the same dedupe key repeats. It must search
/// `ingest_request_dedupe`: any plan that walks the source's whole log makes each
/// request slower than the last.
pub(crate) const DEDUPE_ORIGINAL: &str = "SELECT id FROM ingest_request
     WHERE source_id = ?1 AND dedupe_key = ?2 AND verdict = ?3 AND created_at >= ?4
     ORDER BY id LIMIT 1";

/// A source's values in column order (`rows::SOURCE_COLUMNS`), to bind to an insert or
/// an update; the secrets of its config sealed by `sealer`.
fn source_params(source: &Source, sealer: &Sealer) -> Vec<Value> {
    vec![
        source.id.as_str().to_owned().into(),
        source.uid.clone().into(),
        source.name.clone().into(),
        source.source_type.clone().into(),
        rows::config_json(sealer, &source.config).into(),
        map_json(&source.metadata).into(),
        source.app_id.as_str().to_owned().into(),
        source.token.clone().into(),
        source.previous_token.clone().into(),
        source.previous_token_expires_at.map(millis).into(),
        millis(source.created_at).into(),
        millis(source.updated_at).into(),
    ]
}

#[async_trait]
impl IngestStore for SqliteStore {
    async fn create_source(&self, source: &Source) -> Result<()> {
        let (app, values) = (source.hidden_app(), source_params(source, self.sealer()));
        self.write(move |conn| {
            insert_app(conn, &app)?;
            conn.prepare_cached(
                "INSERT INTO source (id, uid, name, source_type, config, metadata, app_id, token,
                     previous_token, previous_token_expires_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(|e| classify(e, "a source"))?;
            Ok(())
        })
        .await
    }

    async fn source_of_app(&self, app: &AppId) -> Result<Option<SourceId>> {
        let app = app.clone();
        self.lookup(move |conn| {
            one(
                conn,
                "SELECT id FROM source WHERE app_id = ?1",
                [app.as_str()],
                |row| row.get::<_, String>(0).map(SourceId::from_string),
            )
        })
        .await
    }

    async fn get_source(&self, key: &str) -> Result<Source> {
        let key = key.to_owned();
        let stored = self
            .lookup(move |conn| {
                let column = key_column(SourceId::is_id(&key), "uid");
                let sql = format!(
                    "SELECT {} FROM source WHERE {column} = ?1",
                    rows::SOURCE_COLUMNS
                );
                one(conn, &sql, [&key], rows::source).and_then(not_found("source"))
            })
            .await?;
        rows::open_source(self.sealer(), stored)
    }

    async fn find_source_by_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Source>> {
        let token = token.to_owned();
        self.lookup(move |conn| {
            // The current token first, then a rotated-out one still in its grace period:
            // two reads by index. One `OR` of the two, the current token ranked first,
            // would sort its matches in a temporary b-tree on every request.
            let current = format!(
                "SELECT {} FROM source WHERE token = ?1",
                rows::SOURCE_COLUMNS
            );
            if let Some(source) = one(conn, &current, [&token], rows::source)? {
                return Ok(Some(source));
            }
            let previous = format!(
                "SELECT {} FROM source
                 WHERE previous_token = ?1
                   AND (previous_token_expires_at IS NULL OR previous_token_expires_at > ?2)",
                rows::SOURCE_COLUMNS
            );
            one(conn, &previous, params![token, millis(now)], rows::source)
        })
        .await?
        .map(|stored| rows::open_source(self.sealer(), stored))
        .transpose()
    }

    async fn list_sources(&self, query: &ListQuery) -> Result<Page<Source>> {
        let query = query.clone();
        let stored = self
            .read(move |conn| {
                Select::new(format!(
                    "SELECT {} FROM source WHERE 1 = 1",
                    rows::SOURCE_COLUMNS
                ))
                .page(conn, "source.id", &query, rows::source, |source| {
                    source.id.to_string()
                })
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
        let (id, app) = (source.id.clone(), source.hidden_app());
        let values = source_params(source, self.sealer());
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE source SET uid = ?2, name = ?3, source_type = ?4, config = ?5,
                         metadata = ?6, token = ?8, previous_token = ?9,
                         previous_token_expires_at = ?10, updated_at = ?12
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params_from_iter(values)))
                .map_err(|e| classify(e, "a source"))?;
            changed(rows, "source")?;
            // The hidden application keeps the source's name.
            conn.prepare_cached(
                "UPDATE app SET name = ?2, updated_at = ?3
                 WHERE id = (SELECT app_id FROM source WHERE id = ?1)",
            )
            .and_then(|mut s| s.execute(params![id.as_str(), app.name, millis(app.updated_at)]))
            .map_err(Error::storage)?;
            Ok(())
        })
        .await
    }

    async fn delete_source(&self, id: &SourceId) -> Result<()> {
        let id = id.clone();
        self.write_endpoints(
            move |conn| {
                let app = one(
                    conn,
                    "SELECT app_id FROM source WHERE id = ?1",
                    [id.as_str()],
                    |row| row.get::<_, String>(0),
                )?
                .ok_or(Error::NotFound("source"))?;
                conn.execute(
                    "DELETE FROM ingest_request WHERE source_id = ?1",
                    [id.as_str()],
                )
                .map_err(Error::storage)?;
                conn.execute("DELETE FROM source WHERE id = ?1", [id.as_str()])
                    .map_err(Error::storage)?;
                delete_app_rows(conn, &AppId::from_string(app))
            },
            |_| true,
        )
        .await
    }

    async fn ingest(&self, new: NewIngestRequest) -> Result<IngestedRequest> {
        let cache = Arc::clone(&self.inner.endpoints);
        let generation = cache.generation();
        let sealer = self.sealer().clone();
        let ingested = self
            .write(move |conn| store_request(conn, new, &cache, &sealer))
            .await?;
        let endpoints = ingested.leased.iter().map(|job| &job.endpoint);
        self.inner.endpoints.put_committed(generation, endpoints);
        Ok(ingested)
    }

    async fn get_ingest_request(
        &self,
        source: &SourceId,
        id: &IngestRequestId,
    ) -> Result<IngestRequest> {
        let (source, id) = (source.clone(), id.clone());
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM ingest_request WHERE source_id = ?1 AND id = ?2",
                rows::INGEST_REQUEST_COLUMNS
            );
            one(
                conn,
                &sql,
                [source.as_str(), id.as_str()],
                rows::ingest_request,
            )
            .and_then(not_found("ingest request"))
        })
        .await
    }

    async fn list_ingest_requests(
        &self,
        source: &SourceId,
        query: &ListQuery,
        body_budget: usize,
    ) -> Result<Page<IngestRequest>> {
        let (source, query) = (source.clone(), query.clone());
        self.read(move |conn| {
            // Sizes first, then only the bodies that fit the budget.
            let sizes = Select::new(
                "SELECT ingest_request.id, length(ingest_request.body) FROM ingest_request
                 WHERE 1 = 1",
            )
            .and("ingest_request.source_id = ?", source.to_string())
            .page(
                conn,
                "ingest_request.id",
                &query,
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                |(id, _)| id.clone(),
            )?;
            let ids = page_within_budget(sizes, &query, body_budget);
            let mut loaded = Vec::new();
            if !ids.data.is_empty() {
                let marks = vec!["?"; ids.data.len()].join(", ");
                let sql = format!(
                    "SELECT {} FROM ingest_request WHERE source_id = ? AND id IN ({marks})",
                    rows::INGEST_REQUEST_COLUMNS
                );
                let values =
                    std::iter::once(source.as_str()).chain(ids.data.iter().map(String::as_str));
                loaded = all(conn, &sql, params_from_iter(values), rows::ingest_request)?;
            }
            // In the page's order; a request purged in between is left out.
            loaded.sort_by_key(|request| ids.data.iter().position(|id| id == request.id.as_str()));
            Ok(Page {
                data: loaded,
                iterator: ids.iterator,
                prev_iterator: ids.prev_iterator,
                done: ids.done,
            })
        })
        .await
    }

    async fn ingest_requests_after(
        &self,
        source: &SourceId,
        after: i64,
        limit: usize,
        body_budget: usize,
    ) -> Result<Vec<IngestRequest>> {
        let source = source.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // Sizes first, then only the bodies that fit the budget.
            let sizes = all(
                conn,
                "SELECT seq, length(body) FROM ingest_request
                 WHERE source_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                params![source.as_str(), after, limit],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )?;
            let kept = within_budget(sizes.iter().map(|(_, size)| *size), body_budget);
            let Some((last, _)) = kept.checked_sub(1).map(|at| sizes[at]) else {
                return Ok(Vec::new());
            };
            let sql = format!(
                "SELECT {} FROM ingest_request WHERE source_id = ?1 AND seq > ?2 AND seq <= ?3
                 ORDER BY seq",
                rows::INGEST_REQUEST_COLUMNS
            );
            all(
                conn,
                &sql,
                params![source.as_str(), after, last],
                rows::ingest_request,
            )
        })
        .await
    }

    async fn purge_ingest_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        self.purge("ingest_request", "created_at", before).await
    }
}

/// Logs a received request, `seq` included.
fn insert_ingest_request(conn: &Connection, request: &IngestRequest) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO ingest_request (id, source_id, seq, method, path, query, headers, body,
             verdict, status_code, reason_code, reason, dedupe_key, event_type, msg_id,
             created_at, body_size, dropped_before)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18)",
    )
    .and_then(|mut s| {
        s.execute(params![
            request.id.as_str(),
            request.source_id.as_str(),
            request.seq,
            request.method,
            request.path,
            request.query,
            json(&request.headers),
            request.body,
            request.verdict.as_str(),
            request.status_code,
            request.reason_code,
            request.reason,
            request.dedupe_key,
            request.event_type,
            request.msg_id.as_ref().map(MessageId::as_str),
            millis(request.created_at),
            request.body_size,
            request.dropped_before,
        ])
    })
    .map_err(|e| classify(e, "a logged request"))?;
    Ok(())
}

/// [`IngestStore::ingest`] on the writer: the request numbered and logged (or counted
/// against its source's cap of refused requests), a duplicate marked, and an accepted
/// one's forwarding messages created, with the jobs of the deliveries they leased.
fn store_request(
    conn: &Connection,
    new: NewIngestRequest,
    cache: &EndpointCache,
    sealer: &Sealer,
) -> Result<IngestedRequest> {
    let NewIngestRequest {
        mut request,
        dedupe_since,
        messages,
        refused_cap,
    } = new;
    let source_id = request.source_id.clone();
    let source = source_id.as_str();
    let mut tally = one(
        conn,
        "SELECT refused_window, refused_logged, refused_dropped FROM source
         WHERE id = ?1",
        [source],
        |row| {
            Ok(RefusedTally {
                window_start: row.get(0)?,
                logged: row.get(1)?,
                dropped: row.get(2)?,
            })
        },
    )?
    .ok_or(Error::NotFound("source"))?;
    // Refused requests count against the source's cap, kept in its row: the
    // writer runs one write at a time, so the count is exact.
    if let (Verdict::Rejected, Some(cap)) = (request.verdict, refused_cap) {
        let logged = cap.count(&mut tally, request.created_at);
        conn.prepare_cached(
            "UPDATE source SET refused_window = ?2, refused_logged = ?3,
                 refused_dropped = ?4
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                source,
                tally.window_start,
                tally.logged,
                tally.dropped
            ])
        })
        .map_err(Error::storage)?;
        match logged {
            Some(dropped) => request.dropped_before = dropped,
            None => {
                return Ok(IngestedRequest::skipped(&request, tally.dropped));
            }
        }
    }
    // The writer runs one write at a time, so no other request can slip in between
    // this check and the insert below.
    let original = match (request.verdict, &request.dedupe_key, dedupe_since) {
        (Verdict::Accepted, Some(key), Some(since)) => one(
            conn,
            DEDUPE_ORIGINAL,
            params![source, key, Verdict::Accepted.as_str(), millis(since)],
            |row| row.get::<_, String>(0),
        )?
        .map(IngestRequestId::from_string),
        _ => None,
    };
    let (mut leased, mut queued) = (Vec::new(), 0);
    match &original {
        Some(original) => request.mark_duplicate_of(original),
        None if request.verdict == Verdict::Accepted => {
            for message in messages {
                let inserted = insert_message(conn, &message).map_err(forwarding_failed)?;
                queued += inserted.endpoints.len() - inserted.leased.len();
                let message = Arc::new(message.message);
                let jobs = leased_jobs(conn, inserted.leased, message, cache, sealer);
                leased.extend(jobs);
            }
        }
        None => {}
    }
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE source SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
        )
        .and_then(|mut s| s.query_row([source], |row| row.get(0)))
        .map_err(Error::storage)?;
    request.seq = seq;
    insert_ingest_request(conn, &request)?;
    Ok(IngestedRequest {
        leased,
        queued,
        ..IngestedRequest::logged(&request, original)
    })
}
