//! The delivery queue: the claim SQL, release, outcomes, next due: `impl DeliveryQueue`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hookline_core::id::{AppId, EndpointId, MessageId};
use hookline_core::metrics::QueueDepth;
use hookline_core::model::{
    Attempt, Destination, Endpoint, Message, MessageStatus, storable_headers,
};
use hookline_core::sealed::Sealer;
use hookline_core::store::{
    AttemptOutcome, DeliveryJob, DeliveryQueue, EndpointChange, NewMessage,
};
use hookline_core::{Error, Result};
use rusqlite::{Connection, params};

use super::messages::insert_message;
use super::{all, one};
use crate::SqliteStore;
use crate::cache::EndpointCache;
use crate::rows::{self, json, millis, time};

/// The jobs of the deliveries `message` leased as the writer created it, read on the
/// writer in the transaction that leased them: no claim, and no hop to a reader. A job
/// it cannot make (an endpoint whose secrets do not open) is left to its lease, rather
/// than failing the create.
pub(super) fn leased_jobs(
    conn: &Connection,
    leased: Vec<Destination>,
    message: Arc<Message>,
    cache: &EndpointCache,
    sealer: &Sealer,
) -> Vec<DeliveryJob> {
    if leased.is_empty() {
        return Vec::new();
    }
    load_jobs(conn, leased, Some(message), Keep::No(cache), sealer).unwrap_or_else(|error| {
        tracing::error!(%error, "leased deliveries could not be read; they are due again when their lease ends");
        Vec::new()
    })
}

/// Whether [`load_jobs`] keeps the endpoint rows it reads in the cache.
enum Keep<'a> {
    /// A reader's rows, which are committed.
    Yes(&'a EndpointCache),
    /// The writer's, which its batch may yet roll back: only rows kept are taken (the
    /// caller keeps the rest once the batch has committed: `EndpointCache::put_committed`).
    No(&'a EndpointCache),
}

/// The jobs of claimed deliveries (or of deliveries leased as their message was created).
/// Deliveries of one message (a fan-out) share one read of it; deliveries to one endpoint
/// share its row, which later claims take from the endpoint cache while it stays
/// unchanged. Endpoints are opened by `sealer` as read, so the cache keeps them ready to
/// sign with. A message in `known` is not read again, only its application's uid and rate.
fn load_jobs(
    conn: &Connection,
    claimed: Vec<Destination>,
    known: Option<Arc<Message>>,
    keep: Keep<'_>,
    sealer: &Sealer,
) -> Result<Vec<DeliveryJob>> {
    let (Keep::Yes(cache) | Keep::No(cache)) = keep;
    let generation = cache.generation();
    let message_sql = format!(
        "SELECT {}, app.uid, app.throttle_rate FROM message JOIN app ON app.id = message.app_id
         WHERE message.id = ?1",
        rows::MESSAGE_COLUMNS,
    );
    let endpoint_sql = format!(
        "SELECT {} FROM endpoint WHERE id = ?1",
        rows::ENDPOINT_COLUMNS
    );
    type WithApp = (Arc<Message>, Option<String>, Option<u16>);
    let mut messages: HashMap<MessageId, WithApp> = HashMap::new();
    if let Some(message) = known {
        let app = one(
            conn,
            "SELECT uid, throttle_rate FROM app WHERE id = ?1",
            [message.app_id.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let Some((app_uid, app_rate)) = app else {
            return Ok(Vec::new()); // Deleted since, with its messages.
        };
        messages.insert(message.id.clone(), (message, app_uid, app_rate));
    }
    let mut endpoints: HashMap<EndpointId, Arc<Endpoint>> = HashMap::new();
    let mut jobs = Vec::with_capacity(claimed.len());
    for destination in claimed {
        if !messages.contains_key(&destination.msg_id) {
            let found = one(conn, &message_sql, [destination.msg_id.as_str()], |row| {
                Ok((
                    rows::message_at(row, 0)?,
                    row.get::<_, Option<String>>(8)?,
                    row.get::<_, Option<u16>>(9)?,
                ))
            })?;
            let Some((message, app_uid, app_rate)) = found else {
                continue; // Deleted since the claim.
            };
            messages.insert(
                destination.msg_id.clone(),
                (Arc::new(message), app_uid, app_rate),
            );
        }
        if !endpoints.contains_key(&destination.endpoint_id) {
            let id = &destination.endpoint_id;
            let endpoint = match cache.get(generation, id) {
                Some(endpoint) => endpoint,
                None => {
                    let Some(endpoint) = one(conn, &endpoint_sql, [id.as_str()], rows::endpoint)?
                    else {
                        continue;
                    };
                    let endpoint = Arc::new(rows::open_endpoint(sealer, endpoint)?);
                    if let Keep::Yes(_) = keep {
                        cache.put(generation, &endpoint);
                    }
                    endpoint
                }
            };
            endpoints.insert(id.clone(), endpoint);
        }
        let (message, app_uid, app_throttle_rate) = &messages[&destination.msg_id];
        jobs.push(DeliveryJob {
            endpoint: Arc::clone(&endpoints[&destination.endpoint_id]),
            message: Arc::clone(message),
            app_uid: app_uid.clone(),
            app_throttle_rate: *app_throttle_rate,
            destination,
        });
    }
    Ok(jobs)
}

/// Inserts one attempt row.
fn insert_attempt(conn: &Connection, attempt: &Attempt) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO attempt (id, app_id, msg_id, endpoint_id, url, status,
             response_status_code, response, response_headers, duration_ms, trigger_type,
             error_kind, created_at, request_headers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .and_then(|mut s| {
        s.execute(params![
            attempt.id.as_str(),
            attempt.app_id.as_str(),
            attempt.msg_id.as_str(),
            attempt.endpoint_id.as_str(),
            attempt.url,
            attempt.status.code(),
            attempt.response_status_code,
            attempt.storable_response().as_deref(),
            json(&storable_headers(&attempt.response_headers)),
            attempt.response_duration_ms,
            attempt.trigger_type.code(),
            attempt.error_kind.map(|kind| kind.as_str()),
            millis(attempt.created_at),
            json(&storable_headers(&attempt.request_headers)),
        ])
    })
    .map_err(Error::storage)?;
    Ok(())
}

/// Records `outcomes` in order with the messages they carry, then changes each endpoint
/// as [`EndpointChange::fold`] says; whether any endpoint row changed. It all runs in one
/// savepoint: should a message not go in, the outcomes are not recorded either.
fn record_outcomes(conn: &Connection, outcomes: &[AttemptOutcome]) -> Result<bool> {
    for outcome in outcomes {
        record_outcome(conn, outcome)?;
        for new in &outcome.messages {
            insert_outcome_message(conn, new)?;
        }
    }
    let mut changed = false;
    for change in EndpointChange::fold(outcomes) {
        changed |= apply_endpoint_change(conn, &change)?;
    }
    Ok(changed)
}

/// Creates a message an outcome gives rise to, with its deliveries, unless its
/// application was deleted meanwhile: an event for nobody is dropped, as an attempt of a
/// deleted message is, rather than holding back the outcome that caused it.
fn insert_outcome_message(conn: &Connection, new: &NewMessage) -> Result<()> {
    let app_exists = conn
        .prepare_cached("SELECT 1 FROM app WHERE id = ?1")
        .and_then(|mut s| s.exists([new.message.app_id.as_str()]))
        .map_err(Error::storage)?;
    if app_exists {
        insert_message(conn, new)?;
    }
    Ok(())
}

/// Writes one endpoint's change; whether its row changed.
fn apply_endpoint_change(conn: &Connection, change: &EndpointChange<'_>) -> Result<bool> {
    let endpoint = change.endpoint.as_str();
    let mut changed = false;
    if let Some(at) = change.disabled_at {
        let rows = conn
            .prepare_cached("UPDATE endpoint SET disabled = 1, updated_at = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![endpoint, millis(at)]))
            .map_err(Error::storage)?;
        changed |= rows > 0;
    }
    if change.cleared || change.failing_from.is_some() {
        // Written only when it changes: most batches are successes on an endpoint that is
        // not failing, and a write would move the endpoint cache on for nothing.
        let rows = conn
            .prepare_cached(
                "UPDATE endpoint
                 SET failing_since = CASE WHEN ?2 THEN ?3 ELSE COALESCE(failing_since, ?3) END
                 WHERE id = ?1 AND failing_since IS NOT
                     (CASE WHEN ?2 THEN ?3 ELSE COALESCE(failing_since, ?3) END)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    endpoint,
                    change.cleared,
                    change.failing_from.map(millis)
                ])
            })
            .map_err(Error::storage)?;
        changed |= rows > 0;
    }
    Ok(changed)
}

/// Records one attempt and the delivery's new state.
fn record_outcome(conn: &Connection, outcome: &AttemptOutcome) -> Result<()> {
    let attempt = &outcome.attempt;
    // A message deleted while its attempt was in flight leaves nothing to record. Checked
    // first so that the insert is a single-row one, which SQLite runs without a
    // statement journal.
    let exists = conn
        .prepare_cached("SELECT 1 FROM message WHERE id = ?1")
        .and_then(|mut s| s.exists([attempt.msg_id.as_str()]))
        .map_err(Error::storage)?;
    if exists {
        insert_attempt(conn, attempt)?;
    }
    conn.prepare_cached(
        "UPDATE destination SET status = ?3, attempts = ?5,
             next_attempt = CASE WHEN requeued = 1 THEN next_attempt ELSE ?4 END,
             trigger_type = CASE WHEN requeued = 1 THEN trigger_type ELSE 0 END,
             requeued = 0, lease_owner = NULL, lease_until = NULL, updated_at = ?6
         WHERE msg_id = ?1 AND endpoint_id = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            attempt.msg_id.as_str(),
            attempt.endpoint_id.as_str(),
            outcome.status.code(),
            outcome.next_attempt.map(millis),
            outcome.attempts,
            millis(attempt.created_at),
        ])
    })
    .map_err(Error::storage)?;
    Ok(())
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    async fn claim_due_skipping(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
        skip_apps: &[AppId],
    ) -> Result<Vec<DeliveryJob>> {
        let owner = owner.to_owned();
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let skip: Vec<&str> = skip_apps.iter().map(AppId::as_str).collect();
        let skip = serde_json::to_string(&skip).map_err(Error::storage)?;
        let claimed = self
            .write(move |conn| {
                // The due rows, oldest first, then their lease: one writer, so nothing
                // comes between the two. A leased row is due again when its lease ends,
                // should its attempt never be recorded: `next_attempt` says so, which also
                // keeps the deliveries in flight out of the due rows every claim scans.
                let due: Vec<(String, String)> = all(
                    conn,
                    "SELECT destination.msg_id, destination.endpoint_id FROM destination
                     JOIN endpoint ON endpoint.id = destination.endpoint_id
                     JOIN message ON message.id = destination.msg_id
                     WHERE destination.next_attempt <= ?1
                       AND (destination.lease_until IS NULL OR destination.lease_until < ?1)
                       AND endpoint.disabled = 0
                       AND message.payload IS NOT NULL
                       AND destination.app_id NOT IN (SELECT value FROM json_each(?3))
                     ORDER BY destination.next_attempt
                     LIMIT ?2",
                    params![millis(now), limit as i64, skip],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
                if due.is_empty() {
                    return Ok(Vec::new());
                }
                let keys = serde_json::to_string(&due).map_err(Error::storage)?;
                let mut leased = all(
                    conn,
                    "UPDATE destination SET lease_owner = ?1, lease_until = ?2, status = ?3,
                         requeued = 0, next_attempt = ?2
                     WHERE (msg_id, endpoint_id) IN
                         (SELECT value ->> 0, value ->> 1 FROM json_each(?4))
                     RETURNING app_id, msg_id, endpoint_id, status, next_attempt, attempts,
                         trigger_type, updated_at",
                    params![
                        owner,
                        millis(lease_until),
                        MessageStatus::Sending.code(),
                        keys,
                    ],
                    |row| rows::destination_at(row, 0),
                )?;
                let order: HashMap<(&str, &str), usize> = due
                    .iter()
                    .enumerate()
                    .map(|(at, (msg, endpoint))| ((msg.as_str(), endpoint.as_str()), at))
                    .collect();
                leased.sort_by_key(|leased| {
                    order
                        .get(&(leased.msg_id.as_str(), leased.endpoint_id.as_str()))
                        .copied()
                });
                Ok(leased)
            })
            .await?;
        // The claim is committed; reading the jobs needs no writer time.
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let cache = Arc::clone(&self.inner.endpoints);
        let sealer = self.sealer().clone();
        self.read(move |conn| load_jobs(conn, claimed, None, Keep::Yes(&cache), &sealer))
            .await
    }

    async fn release(
        &self,
        deliveries: Vec<(MessageId, EndpointId)>,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        self.write(move |conn| {
            let mut release = conn
                .prepare_cached(
                    "UPDATE destination SET lease_owner = NULL, lease_until = NULL, requeued = 0,
                         next_attempt = ?3
                     WHERE msg_id = ?1 AND endpoint_id = ?2 AND next_attempt IS NOT NULL",
                )
                .map_err(Error::storage)?;
            for (msg, endpoint) in &deliveries {
                release
                    .execute(params![msg.as_str(), endpoint.as_str(), millis(retry_at)])
                    .map_err(Error::storage)?;
            }
            Ok(())
        })
        .await
    }

    async fn record_outcomes(&self, outcomes: Arc<[AttemptOutcome]>) -> Result<()> {
        self.write_endpoints(
            move |conn| record_outcomes(conn, &outcomes),
            |changed| *changed,
        )
        .await
        .map(drop)
    }

    async fn release_owned(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        let now = millis(Utc::now());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE destination SET lease_owner = NULL, lease_until = NULL,
                     next_attempt = MIN(next_attempt, ?2)
                 WHERE lease_owner = ?1",
            )
            .and_then(|mut s| s.execute(params![owner.as_str(), now]))
            .map(|rows| rows as u64)
            .map_err(Error::storage)
        })
        .await
    }

    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let now = millis(now);
        self.read(move |conn| {
            let due: Option<Option<i64>> = one(
                conn,
                "SELECT destination.next_attempt FROM destination
                 JOIN endpoint ON endpoint.id = destination.endpoint_id
                 JOIN message ON message.id = destination.msg_id
                 WHERE destination.next_attempt IS NOT NULL
                   AND (destination.lease_until IS NULL OR destination.lease_until < ?1)
                   AND endpoint.disabled = 0
                   AND message.payload IS NOT NULL
                 ORDER BY destination.next_attempt LIMIT 1",
                [now],
                |row| row.get(0),
            )?;
            Ok(due.flatten().map(time))
        })
        .await
    }

    async fn queue_depth(&self, now: DateTime<Utc>) -> Result<QueueDepth> {
        let now = millis(now);
        self.read(move |conn| {
            let depth = one(
                conn,
                "SELECT
                     COUNT(*) FILTER (WHERE next_attempt <= ?1
                         AND (lease_until IS NULL OR lease_until < ?1)),
                     COUNT(*) FILTER (WHERE lease_until >= ?1),
                     COUNT(*) FILTER (WHERE next_attempt > ?1
                         AND (lease_until IS NULL OR lease_until < ?1))
                 FROM destination WHERE next_attempt IS NOT NULL",
                [now],
                |row| {
                    Ok(QueueDepth {
                        due: row.get(0)?,
                        leased: row.get(1)?,
                        scheduled: row.get(2)?,
                    })
                },
            )?;
            Ok(depth.unwrap_or_default())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hookline_core::id::{AppId, AttemptId};
    use hookline_core::model::{Application, TriggerType};
    use hookline_core::store::{MessageStore, NewMessage, ResourceStore};

    use super::*;

    /// An application with one endpoint and one message for it, created at `at`.
    async fn one_delivery(
        store: &SqliteStore,
        at: DateTime<Utc>,
    ) -> (Application, Endpoint, Message) {
        let app = Application {
            id: AppId::new_at(at),
            uid: None,
            name: "Acme".into(),
            throttle_rate: None,
            metadata: BTreeMap::new(),
            created_at: at,
            updated_at: at,
        };
        store.create_app(&app).await.unwrap();
        let endpoint = hookline_core::conformance::endpoint(&app.id, None, None);
        store.create_endpoint(&endpoint).await.unwrap();
        let message = Message {
            id: MessageId::new_at(at),
            app_id: app.id.clone(),
            event_id: None,
            event_type: "a.b".into(),
            payload: Some("{}".into()),
            channels: None,
            headers: BTreeMap::new(),
            created_at: at,
        };
        store
            .create_message(NewMessage {
                message: message.clone(),
                only_endpoint: None,
                idempotency: None,
                payload_expires_at: None,
                lease: None,
            })
            .await
            .unwrap();
        (app, endpoint, message)
    }

    /// Opening the file releases the leases a killed process held, and their deliveries
    /// are due at once, not when those leases would have ended.
    #[tokio::test]
    async fn deliveries_a_dead_process_held_are_due_when_the_file_is_opened_again() {
        let dir = crate::test_dir("reopen");
        let path = dir.join("reopen.db");
        let store = SqliteStore::open(&path).await.unwrap();
        one_delivery(&store, Utc::now()).await;
        let hour = Duration::from_secs(3600);
        let claimed = store
            .claim_due_skipping("dead", Utc::now(), hour, 10, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        drop(store);

        let store = SqliteStore::open(&path).await.unwrap();
        let claimed = store
            .claim_due_skipping("next", Utc::now(), hour, 10, &[])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "due at once after the reopening");
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The endpoint cache moves on when a batch says it changed an endpoint row: it must
    /// say so whenever a row ends up different, and need not when none does.
    #[tokio::test]
    async fn a_batch_says_whether_it_changed_an_endpoint_row() {
        let dir = crate::test_dir("outcomes");
        let store = SqliteStore::open(&dir.join("outcomes.db")).await.unwrap();
        let at = |secs: i64| DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        let (app, endpoint, message) = one_delivery(&store, at(0)).await;
        let outcome = |secs, failing: Option<bool>, disable| AttemptOutcome {
            attempt: Attempt {
                id: AttemptId::new(),
                app_id: app.id.clone(),
                msg_id: message.id.clone(),
                endpoint_id: endpoint.id.clone(),
                url: endpoint.url.clone(),
                status: MessageStatus::Fail,
                response_status_code: 500,
                response: None,
                response_headers: Vec::new(),
                request_headers: Vec::new(),
                response_duration_ms: 1,
                trigger_type: TriggerType::Scheduled,
                error_kind: None,
                created_at: at(secs),
            },
            status: MessageStatus::Fail,
            next_attempt: None,
            attempts: 1,
            disable_endpoint: disable,
            endpoint_failing: failing,
            messages: Vec::new(),
        };
        let record = |batch: Vec<AttemptOutcome>| {
            let store = store.clone();
            async move {
                store
                    .write(move |conn| record_outcomes(conn, &batch))
                    .await
                    .unwrap()
            }
        };
        let failing_since = || async {
            let read = store.get_endpoint(&app.id, endpoint.id.as_str()).await;
            read.unwrap().failing_since
        };

        assert!(
            !record(vec![outcome(1, Some(false), false)]).await,
            "not failing"
        );
        assert!(!record(vec![outcome(2, None, false)]).await);
        let exhausted = vec![outcome(3, Some(true), false), outcome(4, Some(true), false)];
        assert!(record(exhausted).await);
        assert_eq!(failing_since().await, Some(at(3)));
        assert!(
            !record(vec![outcome(5, Some(true), false)]).await,
            "already failing"
        );
        let recovered_and_failed = vec![
            outcome(6, Some(false), false),
            outcome(7, Some(true), false),
        ];
        assert!(record(recovered_and_failed).await);
        assert_eq!(failing_since().await, Some(at(7)));
        assert!(record(vec![outcome(8, Some(false), false)]).await);
        assert_eq!(failing_since().await, None);
        let failed_and_recovered = vec![
            outcome(9, Some(true), false),
            outcome(10, Some(false), false),
        ];
        assert!(!record(failed_and_recovered).await, "ends as it began");
        assert!(record(vec![outcome(11, None, true)]).await, "disabled");
        std::fs::remove_dir_all(dir).ok();
    }
}
