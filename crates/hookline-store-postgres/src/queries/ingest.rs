//! Sources and the log of the requests they receive: `impl IngestStore`.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use futures_util::future::join_all;
use hookline_core::id::{AppId, IngestRequestId, MessageId, SourceId};
use hookline_core::ingest::{
    IngestRequest, IngestedRequest, NewIngestRequest, RefusedTally, Source, Verdict,
    forwarding_failed, page_within_budget, within_budget,
};
use hookline_core::page::{ListQuery, Page};
use hookline_core::store::{IngestStore, NewMessage};
use hookline_core::{Error, Result};
use tokio_postgres::Statement;
use tokio_postgres::types::Json;

use super::messages::{Leased, insert_messages, leasing};
use super::resources::{delete_app_rows, insert_app};
use super::{Select, changed, execute, found, key_column, query_opt, query_rows};
use crate::PostgresStore;
use crate::error::{duplicate, storage};
use crate::group::{Grouped, Stored};
use crate::rows::{self, ms, read};

/// Locks a source's row with `lock` (`FOR UPDATE`) until the transaction
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
        let deleted = delete_app_rows(&tx, &AppId::from_string(app)).await?;
        tx.commit().await.map_err(storage)?;
        deleted.sweep(&db).await;
        Ok(())
    }

    async fn ingest(&self, new: NewIngestRequest) -> Result<IngestedRequest> {
        let leasing = leasing(&new.messages);
        let Ingested { request, leased } = self.ingests().submit(new).await?;
        Ok(IngestedRequest {
            leased: self.leased_jobs(leased, &leasing),
            ..request
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

/// Logged requests are group-committed ([`crate::group`]). A batch first locks the rows of
/// its sources (`FOR NO KEY UPDATE`, in id order) until it commits: that orders every
/// node's batches of a source, so that requests are numbered in commit order (a reader
/// that sees one sees every request numbered before it), a refused-request count is read
/// and written by one batch at a time, and a duplicate is looked for once the request it
/// duplicates, in flight in another batch, has committed or rolled back. A concurrent
/// `delete_source` (`FOR UPDATE`) waits for the batch, or the batch for it and then finds
/// no source. The lock reads the sources' counters (the last number given, the tally of
/// refused requests), and is sent together with one lookup of the requests that the
/// batch's first of each dedupe key repeat ([`find_repeated`]); every request's fate is
/// then decided in memory, in order of arrival ([`decide`]), so a batch holds its sources
/// for four round trips, its commit's included, however many requests it decides (one
/// more should a forwarded message not be stored). The batch numbers the requests it logs in
/// their order of arrival, as SQLite does, and writes them in one statement, sent with one
/// update of each source's counters ([`log_requests`]): a source's row is written once a
/// batch, not once a request (a new version of the row, and its WAL, each time). The
/// messages the batch's requests forward are written beside them, all in one go
/// ([`insert_messages`]); should one conflict (its `eventId` taken), the batch fails and
/// its requests are carried out one by one.
impl Grouped for NewIngestRequest {
    type Stored = Ingested;

    async fn store<'a>(tx: &'a Transaction<'a>, batch: &'a [&'a Self]) -> Result<Stored<Ingested>> {
        let mut sources: Vec<&str> = batch
            .iter()
            .map(|new| new.request.source_id.as_str())
            .collect();
        sources.sort_unstable();
        sources.dedup();
        // The sources' rows locked, with their counters, and the requests that the first
        // of each dedupe key repeat: two statements sent together, which run in the order
        // sent (both are prepared first, and `biased` polls the lock first, which sends
        // it), so the lookup reads what the batches before this one committed.
        let lock = tx.prepare_cached(LOCK_SOURCES).await.map_err(storage)?;
        let find = tx.prepare_cached(FIND_REPEATED).await.map_err(storage)?;
        let mut keys_seen = HashSet::new();
        let firsts: Vec<&NewIngestRequest> = batch
            .iter()
            .copied()
            .filter(|new| {
                dedupe_key(new)
                    .is_some_and(|key| keys_seen.insert((new.request.source_id.as_str(), key)))
            })
            .collect();
        let (locked, repeated) = tokio::join!(
            biased;
            async { tx.query(&lock, &[&sources]).await },
            find_repeated(tx, &find, &firsts)
        );
        let mut counters: HashMap<String, Counters> = locked
            .map_err(storage)?
            .iter()
            .map(|row| {
                read(row, |c| {
                    let source = c.take::<String>()?;
                    let last_seq = c.take()?;
                    let refused = RefusedTally {
                        window_start: c.take()?,
                        logged: c.take()?,
                        dropped: c.take()?,
                    };
                    Ok((source, Counters { last_seq, refused }))
                })
            })
            .collect::<Result<_>>()?;
        let repeated = repeated?;
        // Each request's fate, in the order of arrival: a refused one counted into its
        // source's cap, an accepted one marked a duplicate of the request its key's
        // first one repeats, or of that first one.
        let mut originals: HashMap<(&str, &str), IngestRequestId> = HashMap::new();
        let fates: Vec<Fate> = batch
            .iter()
            .map(|new| {
                let source = new.request.source_id.as_str();
                let Some(counters) = counters.get_mut(source) else {
                    return Fate::Answered(Err(Error::NotFound("source")));
                };
                let original = dedupe_key(new).map(|key| {
                    originals
                        .entry((source, key))
                        .or_insert_with(|| {
                            let id = &new.request.id;
                            repeated.get(id).unwrap_or(id).clone()
                        })
                        .clone()
                });
                decide(new, original, &mut counters.refused)
            })
            .collect();
        // The log and the forwarded messages, pipelined on the connection: the source's
        // row stays locked until the commit, and other batches of its requests wait.
        let messages: Vec<&NewMessage> = fates
            .iter()
            .zip(batch)
            .filter(|(fate, _)| matches!(fate, Fate::Logged { forwards: true, .. }))
            .flat_map(|(_, new)| &new.messages)
            .collect();
        let (seqs, inserted) = tokio::join!(
            log_requests(tx, &fates, &mut counters),
            insert_messages(tx, &messages)
        );
        let (seqs, inserted) = (seqs?, inserted?);
        let mut inserted = inserted.into_iter();
        let mut queued_any = false;
        let mut outcomes = Vec::with_capacity(batch.len());
        for ((fate, seq), new) in fates.into_iter().zip(seqs).zip(batch) {
            outcomes.push(match fate {
                Fate::Answered(answer) => answer.map(|request| Ingested {
                    request,
                    leased: Vec::new(),
                }),
                Fate::Logged {
                    mut request,
                    original,
                    forwards,
                } => {
                    request.seq = seq;
                    // Its messages' outcomes, in the order they were inserted.
                    let (mut leased, mut queued) = (Vec::new(), 0);
                    for _ in new.messages.iter().filter(|_| forwards) {
                        let one = inserted
                            .next()
                            .expect("one outcome per message")
                            .map_err(forwarding_failed)?;
                        queued += one.endpoints.len() - one.leased.len();
                        leased.extend(one.leased);
                    }
                    queued_any |= queued > 0;
                    Ok(Ingested {
                        request: IngestedRequest {
                            queued,
                            ..IngestedRequest::logged(&request, original)
                        },
                        leased,
                    })
                }
            });
        }
        Ok(Stored {
            answers: outcomes,
            queued: queued_any,
        })
    }
}

/// What [`NewIngestRequest`]'s group commit stored of one request: the answer, and the
/// deliveries its forwarding messages leased, whose jobs [`IngestStore::ingest`] makes.
#[derive(Debug)]
pub(crate) struct Ingested {
    request: IngestedRequest,
    leased: Vec<Leased>,
}

/// What becomes of one request of a batch.
enum Fate {
    /// Answered without a row in the log: a refused request over its source's cap, or a
    /// request whose source is gone.
    Answered(Result<IngestedRequest>),
    /// To be numbered and logged; `forwards` when the batch writes its messages.
    Logged {
        request: Box<IngestRequest>,
        original: Option<IngestRequestId>,
        forwards: bool,
    },
}

/// Decides the fate of one request of a batch whose source is locked: counts a refused
/// one into its source's `refused` tally, and marks an accepted one a duplicate of its
/// dedupe key's `original` (the request the batch's first of that key repeats, or that
/// first one: the log is written after every request has been decided, so the ones after
/// the first would not find it there).
fn decide(
    new: &NewIngestRequest,
    original: Option<IngestRequestId>,
    refused: &mut RefusedTally,
) -> Fate {
    let mut request = new.request.clone();
    if let (Verdict::Rejected, Some(cap)) = (request.verdict, new.refused_cap) {
        match cap.count(refused, request.created_at) {
            Some(dropped) => request.dropped_before = dropped,
            None => {
                return Fate::Answered(Ok(IngestedRequest::skipped(&request, refused.dropped)));
            }
        }
    }
    let repeats = original.filter(|original| *original != request.id);
    let forwards = match &repeats {
        Some(repeated) => {
            request.mark_duplicate_of(repeated);
            false
        }
        None => request.verdict == Verdict::Accepted && !new.messages.is_empty(),
    };
    Fate::Logged {
        request: Box::new(request),
        original: repeats,
        forwards,
    }
}

/// A locked source's counters: the last number given to a request of its log, and its
/// tally of refused requests.
struct Counters {
    last_seq: i64,
    refused: RefusedTally,
}

/// Numbers the requests of `fates` that are logged, each source's in the batch's order
/// after its locked `counters`, and writes them in one statement, sent with one update
/// of each source's counters (its refused requests' tally too). Each fate's number, 0
/// for those not logged.
async fn log_requests(
    tx: &Transaction<'_>,
    fates: &[Fate],
    counters: &mut HashMap<String, Counters>,
) -> Result<Vec<i64>> {
    let seqs: Vec<i64> = fates
        .iter()
        .map(|fate| match fate {
            Fate::Logged { request, .. } => {
                let counters = counters
                    .get_mut(request.source_id.as_str())
                    .expect("a logged request's source is locked");
                counters.last_seq += 1;
                counters.last_seq
            }
            Fate::Answered(_) => 0,
        })
        .collect();
    // The rows are locked: the updates and the insert go together.
    let updates = join_all(counters.iter().map(|(source, counters)| async move {
        execute(
            tx,
            "UPDATE source SET last_seq = $2, refused_window = $3, refused_logged = $4,
                 refused_dropped = $5
             WHERE id = $1",
            &[
                source,
                &counters.last_seq,
                &counters.refused.window_start,
                &counters.refused.logged,
                &counters.refused.dropped,
            ],
        )
        .await
    }));
    let (inserted, updated) = tokio::join!(insert_logged(tx, fates, &seqs), updates);
    inserted?;
    for updated in updated {
        updated.map_err(storage)?;
    }
    Ok(seqs)
}

/// Writes the requests of `fates` that are logged, numbered `seqs`, in one statement.
async fn insert_logged(tx: &Transaction<'_>, fates: &[Fate], seqs: &[i64]) -> Result<()> {
    let (requests, numbers): (Vec<&IngestRequest>, Vec<i64>) = fates
        .iter()
        .zip(seqs)
        .filter_map(|(fate, seq)| match fate {
            Fate::Logged { request, .. } => Some((&**request, *seq)),
            Fate::Answered(_) => None,
        })
        .unzip();
    let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    let sources: Vec<&str> = requests.iter().map(|r| r.source_id.as_str()).collect();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    let queries: Vec<&str> = requests.iter().map(|r| r.query.as_str()).collect();
    let headers = requests
        .iter()
        .map(|r| serde_json::to_string(&r.headers))
        .collect::<Result<Vec<String>, _>>()
        .map_err(Error::storage)?;
    let bodies: Vec<&[u8]> = requests.iter().map(|r| r.body.as_slice()).collect();
    let verdicts: Vec<&str> = requests.iter().map(|r| r.verdict.as_str()).collect();
    let codes: Vec<i16> = requests.iter().map(|r| r.status_code).collect();
    let reason_codes: Vec<&str> = requests.iter().map(|r| r.reason_code.as_str()).collect();
    let reasons: Vec<&str> = requests.iter().map(|r| r.reason.as_str()).collect();
    let dedupe_keys: Vec<Option<&str>> = requests.iter().map(|r| r.dedupe_key.as_deref()).collect();
    let event_types: Vec<Option<&str>> = requests.iter().map(|r| r.event_type.as_deref()).collect();
    let msg_ids: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.msg_id.as_ref().map(MessageId::as_str))
        .collect();
    let created: Vec<DateTime<Utc>> = requests.iter().map(|r| ms(r.created_at)).collect();
    let sizes: Vec<i64> = requests.iter().map(|r| r.body_size).collect();
    let dropped: Vec<i64> = requests.iter().map(|r| r.dropped_before).collect();
    if requests.is_empty() {
        return Ok(());
    }
    execute(
        tx,
        "INSERT INTO ingest_request (id, source_id, seq, method, path, query, headers, body,
             verdict, status_code, reason_code, reason, dedupe_key, event_type, msg_id,
             created_at, body_size, dropped_before)
         SELECT r.id, r.source_id, r.seq, r.method, r.path, r.query, r.headers::jsonb, r.body,
             r.verdict, r.status_code, r.reason_code, r.reason, r.dedupe_key, r.event_type,
             r.msg_id, r.created_at, r.body_size, r.dropped_before
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::bytea[], $9::text[], $10::smallint[], $11::text[],
             $12::text[], $13::text[], $14::text[], $15::text[], $16::timestamptz[],
             $17::bigint[], $18::bigint[])
             AS r (id, source_id, seq, method, path, query, headers, body, verdict,
                   status_code, reason_code, reason, dedupe_key, event_type, msg_id,
                   created_at, body_size, dropped_before)",
        &[
            &ids,
            &sources,
            &numbers,
            &methods,
            &paths,
            &queries,
            &headers,
            &bodies,
            &verdicts,
            &codes,
            &reason_codes,
            &reasons,
            &dedupe_keys,
            &event_types,
            &msg_ids,
            &created,
            &sizes,
            &dropped,
        ],
    )
    .await
    .map_err(duplicate("a logged request"))?;
    Ok(())
}

/// Locks a batch's sources' rows until it commits, in id order, and reads their
/// counters: no other batch can move them meanwhile.
const LOCK_SOURCES: &str = "SELECT id, last_seq, refused_window, refused_logged, refused_dropped
     FROM source WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// The earliest accepted request of each (source, dedupe key) in its dedupe window.
const FIND_REPEATED: &str = "SELECT k.id, (SELECT r.id FROM ingest_request AS r
                   WHERE r.source_id = k.source_id AND r.dedupe_key = k.key
                     AND r.verdict = $5 AND r.created_at >= k.since
                   ORDER BY r.id LIMIT 1)
     FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
         AS k (id, source_id, key, since)";

/// The earlier accepted request each of `firsts` that looks for one repeats, by the ids
/// of those that repeat one: one run of `find` ([`FIND_REPEATED`]) for the batch.
async fn find_repeated(
    tx: &Transaction<'_>,
    find: &Statement,
    firsts: &[&NewIngestRequest],
) -> Result<HashMap<IngestRequestId, IngestRequestId>> {
    let looking: Vec<(&NewIngestRequest, &str, DateTime<Utc>)> = firsts
        .iter()
        .filter_map(|new| Some((*new, dedupe_key(new)?, ms(new.dedupe_since?))))
        .collect();
    if looking.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = looking
        .iter()
        .map(|(new, ..)| new.request.id.as_str())
        .collect();
    let sources: Vec<&str> = looking
        .iter()
        .map(|(new, ..)| new.request.source_id.as_str())
        .collect();
    let keys: Vec<&str> = looking.iter().map(|(_, key, _)| *key).collect();
    let since: Vec<DateTime<Utc>> = looking.iter().map(|(.., since)| *since).collect();
    let rows = tx
        .query(
            find,
            &[&ids, &sources, &keys, &since, &Verdict::Accepted.as_str()],
        )
        .await
        .map_err(storage)?;
    rows.iter()
        .filter_map(|row| {
            read(row, |c| {
                let id = c.take::<String>()?;
                Ok(c.take::<Option<String>>()?.map(|original| {
                    (
                        IngestRequestId::from_string(id),
                        IngestRequestId::from_string(original),
                    )
                }))
            })
            .transpose()
        })
        .collect()
}

/// The key an accepted request looks for an earlier one by, if it looks.
fn dedupe_key(new: &NewIngestRequest) -> Option<&str> {
    match (&new.request.dedupe_key, new.dedupe_since) {
        (Some(key), Some(_)) if new.request.verdict == Verdict::Accepted => Some(key),
        _ => None,
    }
}
