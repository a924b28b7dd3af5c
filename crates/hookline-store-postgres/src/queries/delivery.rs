//! The delivery queue: the claim SQL, release, outcomes, next due: `impl DeliveryQueue`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::metrics::QueueDepth;
use hookline_core::model::{Attempt, MessageStatus, storable_headers};
use hookline_core::store::{
    AttemptOutcome, DeliveryJob, DeliveryQueue, EndpointChange, NewMessage,
};
use hookline_core::{Error, Result};

use super::messages::insert_message;
use super::{execute, query_opt, query_rows};
use crate::PostgresStore;
use crate::error::storage;
use crate::rows::{self, code, ms, read};

/// The most deliveries one claim leases; a claim asked for more returns this many.
const CLAIM_MOST: i64 = 1000;

/// Inserts attempts given as arrays, leaving out those of messages deleted meanwhile.
const INSERT_ATTEMPTS: &str = "
    INSERT INTO attempt (id, app_id, msg_id, endpoint_id, url, status,
        response_status_code, response, response_headers, duration_ms, trigger_type,
        error_kind, created_at, request_headers)
    SELECT a.id, a.app_id, a.msg_id, a.endpoint_id, a.url, a.status, a.code, a.response,
        a.headers::jsonb, a.duration, a.trigger, a.error, a.created, a.sent::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::smallint[], $7::smallint[], $8::text[], $9::text[], $10::bigint[],
        $11::smallint[], $12::text[], $13::timestamptz[], $14::text[])
        AS a (id, app_id, msg_id, endpoint_id, url, status, code, response, headers,
              duration, trigger, error, created, sent)
    WHERE EXISTS (SELECT 1 FROM message WHERE message.id = a.msg_id)";

/// Moves deliveries given as arrays to their new status and next attempt.
const FINISH_DELIVERIES: &str = "
    UPDATE destination SET status = d.status, attempts = d.attempts,
        next_attempt = CASE WHEN requeued THEN next_attempt ELSE d.next END,
        trigger_type = CASE WHEN requeued THEN trigger_type ELSE 0 END,
        requeued = FALSE, lease_owner = NULL, lease_until = NULL, updated_at = d.updated
    FROM unnest($1::text[], $2::text[], $3::smallint[], $4::timestamptz[], $5::int[],
        $6::timestamptz[]) AS d (msg_id, endpoint_id, status, next, attempts, updated)
    WHERE destination.msg_id = d.msg_id AND destination.endpoint_id = d.endpoint_id";

/// Sets the failing state of endpoints given as arrays, writing only those it changes.
const SET_FAILING: &str = "
    UPDATE endpoint
    SET failing_since = CASE WHEN c.cleared THEN c.since
                             ELSE COALESCE(endpoint.failing_since, c.since) END
    FROM unnest($1::text[], $2::bool[], $3::timestamptz[]) AS c (id, cleared, since)
    WHERE endpoint.id = c.id
      AND endpoint.failing_since IS DISTINCT FROM
          (CASE WHEN c.cleared THEN c.since
                ELSE COALESCE(endpoint.failing_since, c.since) END)";

/// Gives back leased deliveries given as arrays, due again at `$3`.
const RELEASE: &str = "
    UPDATE destination SET lease_owner = NULL, lease_until = NULL, requeued = FALSE,
        next_attempt = $3
    FROM unnest($1::text[], $2::text[]) AS released (msg_id, endpoint_id)
    WHERE destination.msg_id = released.msg_id
      AND destination.endpoint_id = released.endpoint_id
      AND destination.next_attempt IS NOT NULL";

/// The claim, one statement: lease the due rows no other claim holds (SKIP LOCKED passes
/// over rows another node is claiming this instant), then read each claimed delivery with
/// its message, endpoint and application, oldest due first. A leased row is due again
/// when its lease ends, should its attempt never be recorded: its `next_attempt` says so,
/// which also keeps the deliveries in flight out of the due rows every claim scans. The
/// claimed rows are joined by key (`FROM due`), and the literal `LIMIT` bounds the
/// planner's guess of how many there are (the statement's generic plan cannot know
/// `$4`). Run on the queue's connections, planned as index lookups (see
/// `QUEUE_OPTIONS`).
fn claim_sql() -> String {
    format!(
        "WITH claimed AS (
             UPDATE destination SET lease_owner = $1, lease_until = $2, status = $5,
                 requeued = FALSE, next_attempt = $2
             FROM (SELECT * FROM (
                 SELECT destination.msg_id, destination.endpoint_id,
                     destination.next_attempt AS due_at
                 FROM destination
                 JOIN endpoint ON endpoint.id = destination.endpoint_id
                 JOIN message ON message.id = destination.msg_id
                 WHERE destination.next_attempt <= $3
                   AND (destination.lease_until IS NULL OR destination.lease_until < $3)
                   AND NOT endpoint.disabled
                   AND message.payload IS NOT NULL
                   AND destination.app_id <> ALL($6::text[])
                 ORDER BY destination.next_attempt
                 LIMIT $4
                 FOR UPDATE OF destination SKIP LOCKED) AS locked
                 LIMIT {CLAIM_MOST}) AS due
             WHERE destination.msg_id = due.msg_id
               AND destination.endpoint_id = due.endpoint_id
             RETURNING destination.*, due.due_at)
         SELECT {}, {}, {}, app.uid, app.throttle_rate
         FROM claimed AS destination
         JOIN message ON message.id = destination.msg_id
         JOIN endpoint ON endpoint.id = destination.endpoint_id
         JOIN app ON app.id = destination.app_id
         ORDER BY destination.due_at",
        rows::DESTINATION_COLUMNS,
        rows::MESSAGE_COLUMNS,
        rows::ENDPOINT_COLUMNS
    )
}

/// Inserts the attempts of `outcomes` in one statement. An attempt of a message deleted
/// meanwhile (with its app) is dropped, not an error.
async fn insert_attempts(db: &impl GenericClient, outcomes: &[&AttemptOutcome]) -> Result<()> {
    let attempts = || outcomes.iter().map(|outcome| &outcome.attempt);
    let ids: Vec<&str> = attempts().map(|a| a.id.as_str()).collect();
    let apps: Vec<&str> = attempts().map(|a| a.app_id.as_str()).collect();
    let msgs: Vec<&str> = attempts().map(|a| a.msg_id.as_str()).collect();
    let endpoints: Vec<&str> = attempts().map(|a| a.endpoint_id.as_str()).collect();
    let urls: Vec<&str> = attempts().map(|a| a.url.as_str()).collect();
    let statuses: Vec<i16> = attempts().map(|a| code(a.status.code())).collect();
    let codes: Vec<i16> = attempts().map(|a| a.response_status_code).collect();
    let responses: Vec<Option<Cow<'_, str>>> = attempts().map(Attempt::storable_response).collect();
    let responses: Vec<Option<&str>> = responses.iter().map(Option::as_deref).collect();
    let json_of = |headers: &[(String, String)]| serde_json::to_string(&storable_headers(headers));
    let headers = attempts()
        .map(|a| json_of(&a.response_headers))
        .collect::<Result<Vec<String>, _>>()
        .map_err(Error::storage)?;
    let sent = attempts()
        .map(|a| json_of(&a.request_headers))
        .collect::<Result<Vec<String>, _>>()
        .map_err(Error::storage)?;
    let durations: Vec<i64> = attempts().map(|a| a.response_duration_ms).collect();
    let triggers: Vec<i16> = attempts().map(|a| code(a.trigger_type.code())).collect();
    let errors: Vec<Option<&str>> = attempts()
        .map(|a| a.error_kind.map(|kind| kind.as_str()))
        .collect();
    let created: Vec<DateTime<Utc>> = attempts().map(|a| ms(a.created_at)).collect();
    execute(
        db,
        INSERT_ATTEMPTS,
        &[
            &ids, &apps, &msgs, &endpoints, &urls, &statuses, &codes, &responses, &headers,
            &durations, &triggers, &errors, &created, &sent,
        ],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// Moves each delivery of `outcomes` to its new status and next attempt, releasing its
/// lease, in one statement. A resend that arrived during the attempt (`requeued`) keeps
/// the next attempt it asked for.
async fn finish_deliveries(db: &impl GenericClient, outcomes: &[&AttemptOutcome]) -> Result<()> {
    let msgs: Vec<&str> = outcomes.iter().map(|o| o.attempt.msg_id.as_str()).collect();
    let endpoints: Vec<&str> = outcomes
        .iter()
        .map(|o| o.attempt.endpoint_id.as_str())
        .collect();
    let statuses: Vec<i16> = outcomes.iter().map(|o| code(o.status.code())).collect();
    let next: Vec<Option<DateTime<Utc>>> =
        outcomes.iter().map(|o| o.next_attempt.map(ms)).collect();
    let attempts: Vec<i32> = outcomes
        .iter()
        .map(|o| i32::try_from(o.attempts).unwrap_or(i32::MAX))
        .collect();
    let updated: Vec<DateTime<Utc>> = outcomes.iter().map(|o| ms(o.attempt.created_at)).collect();
    execute(
        db,
        FINISH_DELIVERIES,
        &[&msgs, &endpoints, &statuses, &next, &attempts, &updated],
    )
    .await
    .map_err(storage)?;
    Ok(())
}

/// Writes what a batch does to its endpoints (see [`EndpointChange::fold`], which gives
/// them in id order, the order their rows are locked in): a disabling each (rare), and the
/// failing state of them all in one statement, which writes (and locks) only the rows
/// whose state changes: most batches are successes on endpoints that are not failing.
async fn apply_endpoint_changes(
    db: &impl GenericClient,
    changes: &[EndpointChange<'_>],
) -> Result<()> {
    for change in changes {
        if let Some(at) = change.disabled_at {
            execute(
                db,
                "UPDATE endpoint SET disabled = TRUE, updated_at = $2 WHERE id = $1",
                &[&change.endpoint.as_str(), &ms(at)],
            )
            .await
            .map_err(storage)?;
        }
    }
    let failing = || {
        changes
            .iter()
            .filter(|change| change.cleared || change.failing_from.is_some())
    };
    let ids: Vec<&str> = failing().map(|change| change.endpoint.as_str()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let cleared: Vec<bool> = failing().map(|change| change.cleared).collect();
    let since: Vec<Option<DateTime<Utc>>> = failing()
        .map(|change| change.failing_from.map(ms))
        .collect();
    execute(db, SET_FAILING, &[&ids, &cleared, &since])
        .await
        .map_err(storage)?;
    Ok(())
}

/// Creates a message an outcome gives rise to, with its deliveries, unless its
/// application was deleted meanwhile: an event for nobody is dropped, as an attempt of a
/// deleted message is, rather than holding back the outcome that caused it. Whether it
/// queued a delivery.
async fn insert_outcome_message(db: &impl GenericClient, new: &NewMessage) -> Result<bool> {
    let app = query_opt(
        db,
        "SELECT 1 FROM app WHERE id = $1",
        &[&new.message.app_id.as_str()],
    )
    .await
    .map_err(storage)?;
    if app.is_none() {
        return Ok(false);
    }
    Ok(!insert_message(db, new).await??.endpoints.is_empty())
}

#[async_trait]
impl DeliveryQueue for PostgresStore {
    /// A claim costs a round trip, a scan of the due rows and a transaction, and every
    /// commit that queues deliveries wakes every node's claim loops. Spaced 5 ms, one node
    /// at 1 KiB took 6.0-7.0k creates/s at 111-127 µs of PostgreSQL CPU each, against
    /// 5.3-5.5k and 160 µs claiming at every wake-up, and three nodes 3.9k against 2.9k;
    /// the median from create to delivery grew by about 1 ms.
    fn claim_spacing(&self) -> Duration {
        Duration::from_millis(5)
    }

    async fn claim_due_skipping(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        skip_apps: &[AppId],
    ) -> Result<Vec<DeliveryJob>> {
        let db = self.queue_client().await?;
        let skip: Vec<&str> = skip_apps.iter().map(AppId::as_str).collect();
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX).min(CLAIM_MOST);
        let sql = claim_sql();
        let claimed = query_rows(
            &db,
            &sql,
            &[
                &owner,
                &ms(lease_until),
                &ms(now),
                &limit,
                &code(MessageStatus::Sending.code()),
                &skip,
            ],
        )
        .await
        .map_err(storage)?;
        claimed
            .iter()
            .map(|row| {
                read(row, |columns| {
                    Ok(DeliveryJob {
                        destination: rows::destination(columns)?,
                        message: Arc::new(rows::message(columns)?),
                        endpoint: Arc::new(rows::open_endpoint(
                            self.sealer(),
                            rows::endpoint(columns)?,
                        )?),
                        app_uid: columns.take()?,
                        app_throttle_rate: columns
                            .take::<Option<i32>>()?
                            .map(u16::try_from)
                            .transpose()
                            .map_err(Error::storage)?,
                    })
                })
            })
            .collect()
    }

    async fn release(
        &self,
        deliveries: Vec<(MessageId, EndpointId)>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let (msgs, endpoints): (Vec<&str>, Vec<&str>) = deliveries
            .iter()
            .map(|(msg, endpoint)| (msg.as_str(), endpoint.as_str()))
            .unzip();
        let db = self.queue_client().await?;
        execute(&db, RELEASE, &[&msgs, &endpoints, &ms(retry_at)])
            .await
            .map_err(storage)?;
        self.announce_due();
        Ok(())
    }

    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // A batch is three statements whatever its size (attempts, deliveries, then one per
        // endpoint whose state changes), not three round trips per outcome; only the rare
        // outcome that carries an operational event adds a few for its message. Deliveries go
        // in key order and endpoints one by one in id order, so that two batches tend to
        // lock shared rows in the same order; should they deadlock all the same,
        // PostgreSQL aborts one and the recorder tries it again.
        let mut by_delivery: Vec<&AttemptOutcome> = outcomes.iter().collect();
        by_delivery.sort_by_key(|outcome| (&outcome.attempt.msg_id, &outcome.attempt.endpoint_id));
        let mut db = self.queue_client().await?;
        let tx = db.transaction().await.map_err(storage)?;
        // The queue's connections do not wait for the flush; an outcome does.
        self.durable(&tx).await?;
        insert_attempts(&tx, &by_delivery).await?;
        finish_deliveries(&tx, &by_delivery).await?;
        let mut queued = false;
        for new in outcomes.iter().flat_map(|outcome| &outcome.messages) {
            queued |= insert_outcome_message(&tx, new).await?;
        }
        apply_endpoint_changes(&tx, &EndpointChange::fold(&outcomes)).await?;
        tx.commit().await.map_err(storage)?;
        if queued
            || outcomes
                .iter()
                .any(|outcome| outcome.next_attempt.is_some())
        {
            self.announce_due();
        }
        Ok(())
    }

    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let db = self.queue_client().await?;
        let row = query_opt(
            &db,
            "SELECT destination.next_attempt FROM destination
             JOIN endpoint ON endpoint.id = destination.endpoint_id
             JOIN message ON message.id = destination.msg_id
             WHERE destination.next_attempt IS NOT NULL
               AND (destination.lease_until IS NULL OR destination.lease_until < $1)
               AND NOT endpoint.disabled
               AND message.payload IS NOT NULL
             ORDER BY destination.next_attempt LIMIT 1",
            &[&ms(now)],
        )
        .await
        .map_err(storage)?;
        row.map(|row| read(&row, |c| c.take())).transpose()
    }

    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<QueueDepth> {
        let db = self.client().await?;
        let row = query_opt(
            &db,
            "SELECT
                 COUNT(*) FILTER (WHERE next_attempt <= $1
                     AND (lease_until IS NULL OR lease_until < $1)),
                 COUNT(*) FILTER (WHERE lease_until >= $1),
                 COUNT(*) FILTER (WHERE next_attempt > $1
                     AND (lease_until IS NULL OR lease_until < $1))
             FROM destination WHERE next_attempt IS NOT NULL",
            &[&ms(now)],
        )
        .await
        .map_err(storage)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(row.map_or_else(QueueDepth::default, |row| QueueDepth {
            due: count(row.get(0)),
            leased: count(row.get(1)),
            scheduled: count(row.get(2)),
        }))
    }

    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<usize> {
        let db = self.client().await?;
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        // The upsert's row is not visible to the count of the same statement (one
        // snapshot), hence the others plus one. Rows long dead are swept by whoever beats,
        // so that node ids that never come back (one per process start) do not pile up.
        let row = query_opt(
            &db,
            "WITH beat AS (
                 INSERT INTO worker_node (id, last_seen) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen
                 RETURNING id),
             swept AS (
                 DELETE FROM worker_node
                 WHERE last_seen < now() - 100 * $2::bigint * INTERVAL '1 millisecond'
                   AND id <> $1
                 RETURNING id)
             SELECT count(*) + 1 FROM worker_node
             WHERE id <> $1 AND last_seen >= now() - $2::bigint * INTERVAL '1 millisecond'",
            &[&node, &ttl],
        )
        .await
        .map_err(storage)?;
        let live: i64 = match row {
            Some(row) => read(&row, |c| c.take())?,
            None => 1,
        };
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    async fn release_owned(&self, owner: &str) -> Result<u64> {
        let db = self.client().await?;
        let released = execute(
            &db,
            "UPDATE destination SET lease_owner = NULL, lease_until = NULL,
                 next_attempt = CASE WHEN next_attempt > now() THEN now() ELSE next_attempt END
             WHERE lease_owner = $1",
            &[&owner],
        )
        .await
        .map_err(storage)?;
        if released > 0 {
            self.announce_due();
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plans PostgreSQL keeps for the queue's statements on the queue's connections
    /// are index lookups, even when made on empty tables that were never analyzed (as
    /// a prepared statement's generic plan is: made at its first execution there, then
    /// kept): no table is read whole or hashed at every execution.
    #[tokio::test]
    async fn the_queue_statements_plans_made_on_empty_tables_read_by_index() {
        let Ok(url) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
            eprintln!("skipped: HOOKLINE_TEST_POSTGRES_URL is not set");
            return;
        };
        let schema = format!("hookline_t_{}_queue_plans", std::process::id());
        let store = PostgresStore::connect_with_schema(&url, &schema, 2)
            .await
            .unwrap();
        let statements = [
            ("claim", claim_sql(), "('n', now(), now(), 10, 1, '{}')"),
            (
                "insert_attempts",
                INSERT_ATTEMPTS.to_owned(),
                "('{a}', '{a}', '{m}', '{e}', '{u}', '{1}', '{200}', '{r}', '{\"[]\"}', \
                 '{1}', '{0}', '{NULL}', '{2026-01-01}', '{\"[]\"}')",
            ),
            (
                "finish_deliveries",
                FINISH_DELIVERIES.to_owned(),
                "('{m}', '{e}', '{0}', '{NULL}', '{1}', '{2026-01-01}')",
            ),
            (
                "set_failing",
                SET_FAILING.to_owned(),
                "('{e}', '{true}', '{NULL}')",
            ),
            ("release", RELEASE.to_owned(), "('{m}', '{e}', now())"),
        ];
        let mut db = store.queue_client().await.unwrap();
        let tx = db.transaction().await.unwrap();
        // The queue's connections take the generic plan at once (`QUEUE_OPTIONS`).
        let mode: String = tx
            .query_one("SELECT current_setting('plan_cache_mode')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "force_generic_plan");
        let mut whole_reads = Vec::new();
        for (name, sql, arguments) in &statements {
            tx.batch_execute(&format!("PREPARE {name} AS {sql}"))
                .await
                .unwrap();
            let plan: Vec<String> = tx
                .query(&format!("EXPLAIN EXECUTE {name} {arguments}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            let plan = plan.join("\n");
            if plan.contains("Seq Scan") || plan.contains("Hash") {
                whole_reads.push(format!("{name}:\n{plan}"));
            }
        }
        tx.rollback().await.unwrap();
        // A prepared statement outlives the transaction, and this connection goes back to
        // the pool.
        for (name, _, _) in &statements {
            db.batch_execute(&format!("DEALLOCATE {name}"))
                .await
                .unwrap();
        }
        drop(db);

        let mut db = store.queue_client().await.unwrap();
        let tx = db.transaction().await.unwrap();
        let before: String = tx
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .unwrap()
            .get(0);
        store.durable(&tx).await.unwrap();
        let after: String = tx
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .unwrap()
            .get(0);
        tx.rollback().await.unwrap();
        let main: String = store
            .client()
            .await
            .unwrap()
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .unwrap()
            .get(0);
        drop(db);
        store.close();
        let admin = PostgresStore::connect(&url, 1).await.unwrap();
        admin
            .client()
            .await
            .unwrap()
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();

        assert!(whole_reads.is_empty(), "{}", whole_reads.join("\n\n"));
        assert_eq!(before, "off", "a queue connection's commits do not wait");
        assert_eq!(after, main, "an outcome's commit waits as any other's");
    }
}
